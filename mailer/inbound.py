"""What reading one inbound message did (`mailer bounces ingest`, `mailer unsubscribes
ingest`): one line per outcome, and a summary, on the command's output."""

from __future__ import annotations

from dataclasses import dataclass

# A message larger than this is not a bounce or an unsubscribe request (only its size is read).
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
STATUSES = ("applied", "duplicate", "unmatched", "ignored")


@dataclass(frozen=True)
class Outcome:
    status: str  # one of STATUSES
    detail: str
