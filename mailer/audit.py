"""The audit log: who did what, to what, and when (sends, tests, edits, list changes, logins).

Entries are written in the same transaction as the change they describe, so the log never
claims something that was rolled back and never misses something that happened. Subscribers
are named by id (``subscriber:123``), never by address: erasing a subscriber must not leave
their address behind in the log. The console shows the current address next to the id while
the subscriber still exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.models import AuditEntry

MAX_DETAIL = 2000


def subscriber_target(subscriber_id: int) -> str:
    return f"subscriber:{subscriber_id}"


def edition_target(day: object, kind: str = "daily") -> str:
    """How the log names an edition: "edition:2026-12-05", "edition:weekly:2026-12-05"."""
    return f"edition:{day}" if kind == "daily" else f"edition:{kind}:{day}"


def record(session: Session, actor: str, action: str, target: str = "", detail: str = "", *,
           at: datetime | None = None) -> AuditEntry:
    """Add one entry to the caller's transaction."""
    entry = AuditEntry(actor=actor[:320], action=action[:60], target=target[:300],
                       detail=detail[:MAX_DETAIL])
    if at is not None:
        entry.created_at = at
    session.add(entry)
    return entry


def recent(session: Session, *, limit: int = 50, offset: int = 0, actor: str = "",
           action: str = "", target: str = "") -> tuple[list[AuditEntry], int]:
    """A page of entries, newest first, and the total that match the filters."""
    query = select(AuditEntry)
    count = select(func.count()).select_from(AuditEntry)
    for column, value in ((AuditEntry.actor, actor), (AuditEntry.action, action),
                          (AuditEntry.target, target)):
        if value:
            query = query.where(column == value)
            count = count.where(column == value)
    rows = session.scalars(query.order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())
                           .offset(offset).limit(limit))
    return list(rows), session.scalar(count) or 0


def actions(session: Session) -> Sequence[str]:
    """Every action name in the log (for the console's filter)."""
    return list(session.scalars(select(AuditEntry.action).distinct().order_by(AuditEntry.action)))
