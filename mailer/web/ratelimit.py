"""Rate limits kept in the database, so every web process (and every machine) shares them.

An in-memory counter would let a bot multiply its allowance by the number of waitress threads
or processes behind the load balancer; the `rate_events` table is the one place they all see.
Each hit is one row; counting the rows of a key inside a sliding window is an index range scan
on (key, at). Rows older than the longest window are deleted as the key is touched again, and
`purge` clears everything stale (the scheduler or a cron job may call it; nothing depends on it).

Keys for addresses use a hash of the address, so the table never holds an address in clear.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from mailer.models import RateEvent
from mailer.subscribers import email_hash

#: Rows older than this are never needed by any limit below.
RETENTION = timedelta(days=2)


@dataclass(frozen=True)
class Limit:
    """At most `count` hits per `seconds` for one key."""

    count: int
    seconds: int

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.seconds)


def ip_key(scope: str, address: str) -> str:
    return f"{scope}:ip:{address}"[:400]


def address_key(scope: str, email: str) -> str:
    return f"{scope}:addr:{email_hash(email)}"


def hit(session: Session, key: str, limits: list[Limit] | tuple[Limit, ...], *,
        now: datetime) -> bool:
    """Count one hit against `key`; False (and nothing recorded) when any limit is reached.

    Refused hits are not recorded, so a client that keeps hammering is let in again as soon as
    its older hits leave the window rather than being locked out for ever. On PostgreSQL a
    transaction-scoped advisory lock per key makes the count-then-insert exact across
    processes; SQLite's BEGIN IMMEDIATE (see `mailer.db`) already serialises writers.
    """
    if not limits:
        return True
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        lock_id = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
    longest = max(limit.seconds for limit in limits)
    session.execute(
        delete(RateEvent).where(RateEvent.key == key,
                                RateEvent.at < now - timedelta(seconds=longest))
    )
    for limit in limits:
        used = session.scalar(
            select(func.count()).select_from(RateEvent)
            .where(RateEvent.key == key, RateEvent.at > now - limit.window)
        ) or 0
        if used >= limit.count:
            return False
    session.add(RateEvent(key=key, at=now))
    session.flush()
    return True


def purge(session: Session, now: datetime, older_than: timedelta = RETENTION) -> int:
    """Delete rows no limit can still count; returns how many went."""
    result = session.execute(delete(RateEvent).where(RateEvent.at < now - older_than))
    return int(getattr(result, "rowcount", 0) or 0)
