"""Named locks with a lease, in the database: one run per edition whoever triggers it.

A lock row carries its holder ("host:pid:nonce") and a lease. A holder that stops renewing
loses the lock when the lease runs out; a holder on this machine whose process is gone loses it
at once, so a rerun after a crash or kill -9 does not have to wait out the lease.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mailer.clock import Clock
from mailer.db import rowcount
from mailer.models import RunLock

HOSTNAME = socket.gethostname()


def holder_id(tag: str = "") -> str:
    return f"{HOSTNAME}:{os.getpid()}:{uuid.uuid4().hex[:8]}{(':' + tag) if tag else ''}"


def holder_alive(holder: str) -> bool:
    """False only when we can prove the holder is gone (same host, no such process)."""
    parts = holder.split(":")
    if len(parts) < 2 or parts[0] != HOSTNAME:
        return True
    try:
        pid = int(parts[1])
    except ValueError:
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) still answers kill(0).
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


class LeaseLock:
    """A lease lock that renews itself from a background thread while held."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock, name: str,
                 lease_seconds: int = 60, holder: str | None = None) -> None:
        self.sessions = sessions
        self.clock = clock
        self.name = name
        self.lease = timedelta(seconds=lease_seconds)
        self.holder = holder or holder_id()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = threading.Event()

    def current_holder(self) -> str | None:
        with self.sessions() as session:
            row = session.get(RunLock, self.name)
            return row.holder if row else None

    def try_acquire(self) -> bool:
        now = self.clock.now()
        with self.sessions.begin() as session:
            row = session.get(RunLock, self.name, with_for_update=True)
            if row is None:
                session.add(RunLock(name=self.name, holder=self.holder,
                                    lease_until=now + self.lease, acquired_at=now))
                try:
                    session.flush()
                except IntegrityError:
                    return False
            elif row.holder == self.holder or row.lease_until < now or not holder_alive(
                row.holder
            ):
                result = session.execute(
                    update(RunLock)
                    .where(RunLock.name == self.name, RunLock.holder == row.holder)
                    .values(holder=self.holder, lease_until=now + self.lease, acquired_at=now)
                )
                if rowcount(result) != 1:
                    return False
            else:
                return False
        self._start_renewal()
        return True

    def renew(self) -> bool:
        now = self.clock.now()
        with self.sessions.begin() as session:
            result = session.execute(
                update(RunLock).where(RunLock.name == self.name, RunLock.holder == self.holder)
                .values(lease_until=now + self.lease)
            )
            ok = rowcount(result) == 1
        if not ok:
            self.lost.set()
        return ok

    def _start_renewal(self) -> None:
        if self._thread is not None:
            return
        interval = max(1.0, self.lease.total_seconds() / 3)

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    if not self.renew():
                        return
                except Exception:  # noqa: BLE001 - a DB hiccup must not kill the holder
                    continue

        self._thread = threading.Thread(target=loop, name=f"lease:{self.name}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self.sessions.begin() as session:
            session.execute(
                delete(RunLock).where(RunLock.name == self.name, RunLock.holder == self.holder)
            )

    def __enter__(self) -> LeaseLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
