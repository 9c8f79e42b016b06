"""What the inbound-mail commands (`mailer bounces ingest`, `mailer unsubscribes ingest`)
share: reading one message, and what reading it did (one line per outcome, and a summary, on
the command's output)."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from email.message import Message

from mailer.mime import part_text as decode_part

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
    # Lazy: every CLI command imports this module, and events imports SQLAlchemy.
    from mailer.feedback.events import digest  # noqa: PLC0415

    return squash(message.get("Message-ID", "")) or digest(raw.decode("utf-8", "replace"))


def part_text(part: Message, *, limit: int | None = MAX_TEXT, charset: str = "") -> str:
    """A stranger's text part as text, at most `limit` characters: see `mime.part_text`."""
    return decode_part(part, limit=limit, charset=charset)
