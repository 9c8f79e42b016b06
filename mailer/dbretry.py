"""Riding out a database restart: which errors are one, and retrying work through them.

A PostgreSQL restart (or a failover) cuts every connection and refuses new ones for a few
seconds; SQLite answers "database is locked" when another process keeps the write lock past
the busy timeout. Neither is a reason to stop a send halfway and make someone run it again: the
send waits, reconnects and goes on. `is_outage` tells such an error from one that says the work
itself is wrong (those are raised at once), and `OutageRetry` runs a unit of work again, with
backoff, until the database answers or `db_outage_grace` has passed; then `DatabaseOutage`,
one line, exit status 75.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from mailer.errors import DatabaseOutage, one_line

log = logging.getLogger("mailer.db")

T = TypeVar("T")

# Waits between attempts: doubling from the first, never longer than the cap, with jitter so
# that the workers of a send do not all knock at the same instant when the server comes back.
FIRST_WAIT_SECONDS = 0.2
MAX_WAIT_SECONDS = 2.0
# After an outage ends, other threads still holding a connection from before it meet its error
# on their next use: within this many seconds that is the same outage, ridden out quietly.
AFTERSHOCK_SECONDS = 10.0


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says the database is not there for now (a lost or refused connection,
    a server shutting down or starting up, SQLite's write lock held past the busy timeout)
    rather than that the statement or the data is wrong.

    Takes SQLAlchemy's wrapped errors and the drivers' own (the ledger's hot paths call the
    driver directly). Every PostgreSQL OperationalError counts (connection failures, 57P01
    admin shutdown, 57P03 cannot connect now; also deadlocks and cancelled statements, which
    are as safe to run again); SQLite's OperationalError covers missing tables and full disks
    too, so only its busy and locked errors do.
    """
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        if exc.orig is None:  # (not an outage: nothing below matches None)
            return False
        exc = exc.orig
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc)
        return "database is locked" in text or "database is busy" in text \
            or "database table is locked" in text
    # (psycopg is imported only when PostgreSQL is used: no error of its can exist before)
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.OperationalError
                                              | psycopg.InterfaceError)


def outage_reason(exc: BaseException) -> str:
    """What the driver said, on one line (SQLAlchemy's text adds the statement and a URL)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    return one_line(orig if orig is not None else exc)


class OutageRetry:
    """Runs units of database work, each again from the start while the database is out,
    for up to `grace` seconds from the start of the outage.

    A unit must be safe to run twice: a transaction (the database rolls it back when its
    connection dies) whose writes are guarded so that a second run changes nothing if the
    first one's commit went through unseen (outcomes are guarded by the claim, a claim takes
    only rows that are due). One instance per process, shared by its threads: an outage is one
    warning when it begins and one line when it ends, whichever thread meets it, and every
    thread gives up at the same moment. Both lines are warnings so that the default log level
    shows the end of what it showed the start of.
    """

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.outages = 0  # how many began, ever: the dispatcher checks for orphaned claims
        self._lock = threading.Lock()
        self._since: float | None = None  # (monotonic) when the current outage began
        self._ended_at = float("-inf")  # (monotonic) when the last one ended
        self._quiet = False  # the current outage is the last one's aftershock: no log lines

    def run(self, work: Callable[[], T]) -> T:
        """`work()`, retried through an outage; DatabaseOutage once the grace has passed."""
        try:
            result = work()
        except Exception as exc:
            if not is_outage(exc):
                raise
            return self._ride_out(work, exc)
        if self._since is not None:
            self._ended()
        return result

    def _ride_out(self, work: Callable[[], T], exc: Exception) -> T:
        started = self._began(exc)
        wait = FIRST_WAIT_SECONDS
        while True:
            left = started + self.grace - time.monotonic()
            if left <= 0:
                raise DatabaseOutage(f"database unavailable for more than {self.grace:g} s: "
                                     f"{outage_reason(exc)}") from None
            time.sleep(min(left, random.uniform(wait / 2, wait)))
            wait = min(wait * 2, MAX_WAIT_SECONDS)
            try:
                result = work()
            except Exception as again:
                if not is_outage(again):
                    raise
                exc = again
                continue
            self._ended()
            return result

    def _began(self, exc: BaseException) -> float:
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()
                self.outages += 1
                self._quiet = self._since - self._ended_at < AFTERSHOCK_SECONDS
                if not self._quiet:
                    log.warning("database unavailable (%s); retrying for up to %g s",
                                outage_reason(exc), self.grace)
            return self._since

    def _ended(self) -> None:
        with self._lock:
            if self._since is not None:
                self._ended_at = time.monotonic()
                if not self._quiet:
                    log.warning("database back after %.1f s", self._ended_at - self._since)
                self._since = None


@contextmanager
def outage_as_error(hint: str) -> Iterator[None]:
    """Turn an outage met outside any retry (the steps before a send's dispatch) into
    `DatabaseOutage`: one line and exit status 75 instead of a traceback."""
    try:
        yield
    except Exception as exc:
        if not is_outage(exc):
            raise
        raise DatabaseOutage(f"database unavailable: {outage_reason(exc)}; {hint}") from None
