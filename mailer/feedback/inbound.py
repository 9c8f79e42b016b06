"""What the inbound-mail commands (`mailer bounces ingest`, `mailer unsubscribes ingest`)
share: reading one message, and what reading it did (one line per outcome, and a summary, on
the command's output)."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from email.message import Message

# A message larger than this is not a bounce or an unsubscribe request (only its size is read).
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
# Text read from one message (a status code, a token): the rest is not what we look for.
MAX_TEXT = 64 * 1024
STATUSES = ("applied", "duplicate", "unmatched", "ignored")


@dataclass(frozen=True)
class Outcome:
    status: str  # one of STATUSES
    detail: str


class Unreadable(ValueError):
    """Not a message to read (the reason says why)."""


def parse(raw: bytes) -> Message:
    """The message, or Unreadable when it is too large to be one we look for."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise Unreadable(f"larger than {MAX_MESSAGE_BYTES // (1024 * 1024)} MB")
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def squash(value: object) -> str:
    """A header value (or any text) on one line, its runs of white space made one space."""
    return " ".join(str(value or "").split())


def message_key(message: Message, raw: bytes) -> str:
    """The message's own Message-ID, or a hash of it: applying it twice changes nothing."""
    # (imported here: every CLI command imports this module, and this one imports SQLAlchemy)
    from mailer.feedback.events import digest

    return squash(message.get("Message-ID", "")) or digest(raw.decode("utf-8", "replace"))


def part_text(part: Message) -> str:
    """A text part decoded by its charset (UTF-8 when it names none we know), at most
    MAX_TEXT characters."""
    data = (part.get_payload(decode=True) or b"")[:MAX_TEXT * 4]
    try:
        text = data.decode(part.get_content_charset() or "utf-8", "replace")
    except LookupError:
        text = data.decode("utf-8", "replace")
    return text[:MAX_TEXT]
