"""Fingerprints that tell one click's source from another's for two days, and then never.

A fingerprint is a hash of the client's address and user agent with a salt made at random
for each day (UTC) and shared by the web processes through the `meta` table. After 48 hours
the salt is deleted and the fingerprints made with it are cleared from the clicks
(`mailer.clicks.retention`): from then on nobody, us included, can recompute or compare them.
The address itself is never stored. If the database cannot be reached, a process uses a salt
of its own for the day: its fingerprints then match only its own, which costs some filtering
precision and nothing else.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from datetime import date, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mailer.models import Meta

PREFIX = "click-salt:"
KEEP_DAYS = 2  # the salt of today and yesterday: 48 hours at most


def fingerprint(salt: bytes, address: str, user_agent: str) -> str:
    digest = hashlib.sha256(salt + address.encode() + b"\0" + user_agent.encode("utf-8", "replace"))
    return digest.hexdigest()[:32]


class DailySalts:
    """Today's salt, from memory after the first use of the day."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._salts: dict[date, bytes] = {}
        self._lock = threading.Lock()

    def for_day(self, day: date) -> bytes:
        with self._lock:
            salt = self._salts.get(day)
        if salt is not None:
            return salt
        shared = self._shared(day)
        if shared is None:  # not kept: the shared salt is asked for again next time
            return secrets.token_bytes(16)
        with self._lock:
            self._salts = {d: s for d, s in self._salts.items() if d >= day - timedelta(1)}
            return self._salts.setdefault(day, shared)

    def _shared(self, day: date) -> bytes | None:
        key = f"{PREFIX}{day.isoformat()}"
        for _ in range(3):
            try:
                with self._sessions.begin() as session:
                    row = session.get(Meta, key)
                    if row is not None:
                        return bytes.fromhex(row.value)
                    session.add(Meta(key=key, value=secrets.token_hex(16)))
            except IntegrityError:  # another process made it first: read theirs
                continue
            except SQLAlchemyError:
                return None
        return None


def purge_salts(session: Session, today: date) -> int:
    """Delete the salts older than `KEEP_DAYS` (so their fingerprints can never be remade)."""
    keep = {f"{PREFIX}{(today - timedelta(days=n)).isoformat()}" for n in range(KEEP_DAYS)}
    old = [key for key in session.scalars(select(Meta.key).where(Meta.key.like(f"{PREFIX}%")))
           if key not in keep]
    if old:
        session.execute(delete(Meta).where(Meta.key.in_(old)))
    return len(old)
