"""The per-recipient slots of one rendered edition, named so that no input can forge one.

An edition is rendered once with slots where each reader's own values go (greeting,
unsubscribe link, preferences link), and filled per recipient later, by us or by a provider's
substitution. Everything around the slots comes partly from untrusted input: feed titles,
links, excerpts, image URLs. If that text could contain a slot, a feed post linking to
``https://evil.example/?u=<slot>`` would receive every reader's unsubscribe and preferences
tokens.

Filtering the slot syntax out of the input is not enough (nested or escaped forms survive a
filter), so the slots' names carry a random key made when the edition is rendered, after its
content is fixed, and kept with the edition. No feed, form or name can contain a name it has
never seen; the key never leaves the system in a reader's copy (every copy is filled) and the
web archive is rendered without slots. Providers that substitute (SendGrid, Mailgun) are given
variable names derived from the same key, so their syntax is not live for untrusted text
either.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from functools import cached_property

#: The fields a slot is filled from, in `Outgoing.fields` and `MessageTemplate.fields`.
GREETING, UNSUBSCRIBE_URL, PREFERENCES_URL = "greeting", "unsubscribe_url", "preferences_url"
#: The reader's suffix of every tracked link in a per-reader edition (`mailer.clicks.tokens`);
#: "" for everyone in other editions, which carry no such slot.
CLICK = "click"
FIELDS = (GREETING, UNSUBSCRIBE_URL, PREFERENCES_URL, CLICK)
_KEY_RE = re.compile(r"[0-9a-f]{32}")
#: A slot of any edition: what a filled message must not contain.
ANY_SLOT_RE = re.compile(r"%%(?:GREETING|UNSUBSCRIBE_URL|PREFERENCES_URL|CLICK)_[0-9a-f]{32}%%")


@dataclass(frozen=True)
class Placeholders:
    """Slot names for one rendered edition: ``%%UNSUBSCRIBE_URL_<key>%%`` and the like.

    The characters are ones HTML escaping, MJML and quoted-printable encoding leave alone, so a
    slot arrives in the stored bodies exactly as written.
    """

    key: str

    def __post_init__(self) -> None:
        if not _KEY_RE.fullmatch(self.key):
            raise ValueError("a placeholder key is 32 lowercase hex digits")

    @classmethod
    def new(cls) -> Placeholders:
        """A fresh key: 128 random bits, made after the content it will sit in is fixed."""
        return cls(secrets.token_hex(16))

    def slot(self, field: str) -> str:
        """The slot for `field` (one of `FIELDS`)."""
        if field not in FIELDS:
            raise KeyError(field)
        return f"%%{field.upper()}_{self.key}%%"

    @property
    def greeting(self) -> str:
        return self.slot(GREETING)

    @property
    def unsubscribe_url(self) -> str:
        return self.slot(UNSUBSCRIBE_URL)

    @property
    def preferences_url(self) -> str:
        return self.slot(PREFERENCES_URL)

    @property
    def click(self) -> str:
        return self.slot(CLICK)

    @cached_property
    def fields(self) -> dict[str, str]:
        """Slot -> the field that fills it."""
        return {self.slot(field): field for field in FIELDS}

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        """Matches any of the slots (a capturing group, for `re.split`)."""
        return re.compile("(" + "|".join(re.escape(s) for s in self.fields) + ")")

    def provider_variable(self, field: str) -> str:
        """A name for a provider's own substitution variable, keyed like the slots, so text
        from a feed cannot name it (Mailgun's ``%recipient.NAME%``)."""
        return f"{field}_{self.key}"

    def fill(self, body: str, values: dict[str, str]) -> str:
        """Fill the slots with `values` (by field name) as they are: for previews and
        finished bodies; the caller escapes values for HTML when the body is HTML."""
        return self.pattern.sub(lambda m: values[self.fields[m.group(0)]], body)

    def left_in(self, body: str) -> list[str]:
        """The slots still present in `body` (a filled message must have none)."""
        return [slot for slot in self.fields if slot in body]
