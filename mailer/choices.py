"""Readers' choices: how often (daily or the weekly digest) and which sections.

One place says what a valid choice is, for every door (the sign-up form, the preferences and
unsubscribe pages, `mailer subscribers add`, CSV imports): section names are matched to the
configured `sections` without regard to case, an unknown one is refused by name, and choosing
every section is stored as "all" (an empty list), so a section added to the configuration
later reaches the readers who wanted everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mailer.errors import MailerError
from mailer.models import DAILY, FREQUENCIES


class InvalidChoice(MailerError):
    """A frequency or section that is not on offer; the message names it."""


def parse_frequency(raw: str) -> str:
    value = (raw or "").strip().lower() or DAILY
    if value not in FREQUENCIES:
        raise InvalidChoice(f"unknown frequency {raw!r} (daily or weekly)")
    return value


def parse_sections(raw: str | Iterable[str], configured: Sequence[str]) -> list[str]:
    """Section names from `raw` ("News;Comment" or a list), in the configured order and
    spelling; [] for all of them (or none given)."""
    names = raw.split(";") if isinstance(raw, str) else list(raw)
    wanted = [name.strip() for name in names if name and name.strip()]
    by_key = {name.casefold(): name for name in configured}
    unknown = [name for name in wanted if name.casefold() not in by_key]
    if unknown:
        offered = ", ".join(configured) or "none are configured"
        raise InvalidChoice(f"unknown section {unknown[0]!r} (sections: {offered})")
    chosen = {name.casefold() for name in wanted}
    if not chosen or chosen == set(by_key):
        return []
    return [name for name in configured if name.casefold() in chosen]


def joined(sections: Sequence[str]) -> str:
    """How chosen sections are stored (`Subscriber.sections`): ";"-joined, "" for all."""
    return ";".join(sections)


def split(stored: str) -> list[str]:
    """The chosen sections of a stored value; [] for all."""
    return [name for name in stored.split(";") if name]


def describe(frequency: str, sections: Sequence[str]) -> str:
    """'daily, all sections' / 'weekly, News and Comment': for histories and pages."""
    if not sections:
        what = "all sections"
    elif len(sections) == 1:
        what = sections[0]
    else:
        what = ", ".join(sections[:-1]) + " and " + sections[-1]
    return f"{frequency}, {what}"
