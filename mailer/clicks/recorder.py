"""Counting off the request path: clicks are buffered in memory and written ten times a
second by one thread per web process (short flushes: the thread shares the interpreter lock
with the request threads).

A redirect never waits for the database: `record` appends to a bounded buffer and returns.
The flusher turns each buffered hit into a `Click` (fingerprint made with the day's salt,
then the address and user agent are dropped), applies the scanner rules and commits. When
the database is away the hits stay buffered (up to `MAX_BUFFER`) and are written when it is
back. What a crash or a kill loses is what was buffered, a fraction of a second of clicks:
docs/privacy.md and docs/clicks.md say so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mailer.clicks.classify import Classifier, apply_rules, first_verdict
from mailer.clicks.fingerprint import DailySalts, fingerprint
from mailer.models import BURST, HUMAN, TRAPPED, Click, Edition

log = logging.getLogger(__name__)

#: The table itself: a Core INSERT of many rows, without the ORM's per-object work.
_CLICKS = cast(Table, Click.__table__)
FLUSH_SECONDS = 0.1
HOUSEKEEPING_SECONDS = 3600.0
MAX_BUFFER = 100_000
#: Clicks worked on between two turns given to the redirects: the flusher's Python work holds
#: the interpreter lock, and a redirect waiting behind a whole batch of it is the slow tail.
YIELD_EVERY = 64


@dataclass(frozen=True)
class Hit:
    """One followed link as the redirect saw it. The address and user agent live only here,
    in memory, until the flush makes a fingerprint of them."""

    edition_id: int
    position: int
    at: datetime
    address: str
    user_agent: str
    delivery_id: int | None = None
    prefetch: bool = False
    trap: bool = False
    test_group: int = 0  # a subject test's group (`mailer.subject_test`), 0 outside one


def _insert_clicks(session: Session, rows: list[tuple[int, int, datetime, str, str,
                                                     int | None, int]]) -> None:
    """One driver-level executemany of (edition, position, at, verdict, fingerprint,
    delivery, test group) rows. SQLAlchemy's Core INSERT processes every parameter of every row in
    Python, on the thread that shares the interpreter lock with the redirects; here only
    `at` is converted: on SQLite into the text the column type writes (`sqlite_utc`, cheaper
    than the type's own processor), elsewhere by the type's processor."""
    connection = session.connection()
    dialect = connection.dialect
    to_db = (sqlite_utc if dialect.name == "sqlite"
             else _CLICKS.c.at.type.dialect_impl(dialect).bind_processor(dialect))
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    columns = ("edition_id", "position", "at", "verdict", "fingerprint", "delivery_id",
               "test_group")
    sql = (f"INSERT INTO {_CLICKS.name} ({', '.join(columns)}) "
           f"VALUES ({', '.join([mark] * len(columns))})")
    written: list[tuple[object, ...]] = list(rows) if to_db is None else [
        (e, p, to_db(at), v, f, d, g) for e, p, at, v, f, d, g in rows]
    connection.exec_driver_sql(sql, written)


def sqlite_utc(at: datetime) -> str:
    """`at` as the UTC column type stores it in SQLite ("2026-12-04 07:20:11.228090", always
    with microseconds; tests/test_clicks.py compares it with the type's own processor)."""
    return at.astimezone(UTC).isoformat(" ", "microseconds")[:26]


class ClickRecorder:
    """The buffer and its flusher thread (started with the first hit)."""

    def __init__(self, sessions: sessionmaker[Session], *,
                 flush_seconds: float = FLUSH_SECONDS, max_buffer: int = MAX_BUFFER,
                 housekeeping: Callable[[], object] | None = None,
                 housekeeping_seconds: float = HOUSEKEEPING_SECONDS) -> None:
        self._sessions = sessions
        # Run on the flusher's thread every `housekeeping_seconds` (the retention purge): the
        # web app makes the fingerprints, so it sees they go after 48 hours without cron.
        self._housekeeping = housekeeping
        self._housekeeping_seconds = housekeeping_seconds
        self._salts = DailySalts(sessions)
        self._classifier = Classifier()
        self._buffer: deque[Hit] = deque()
        self._max = max_buffer
        self._flush_seconds = flush_seconds
        self._lock = threading.Lock()      # the buffer
        self._flushing = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def record(self, hit: Hit) -> None:
        with self._lock:
            if len(self._buffer) >= self._max:
                self.dropped += 1  # the database has been away a long time: counts are lost
                return
            self._buffer.append(hit)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="click-flusher",
                                                daemon=True)
                self._thread.start()

    def pending(self) -> int:
        with self._lock:
            return len(self._buffer)

    def flush(self) -> int:
        """Write what is buffered; how many clicks were written (0 if the database is away,
        in which case they stay buffered for the next flush)."""
        with self._flushing:
            with self._lock:
                hits = list(self._buffer)
                self._buffer.clear()
            if not hits:
                return 0
            try:
                self._write(hits)
            except SQLAlchemyError as exc:
                log.warning("%d click(s) not written yet (%s); kept for the next flush",
                            len(hits), type(exc).__name__)
                with self._lock:
                    room = max(0, self._max - len(self._buffer))
                    self._buffer.extendleft(reversed(hits[:room]))
                    self.dropped += len(hits) - min(room, len(hits))
                return 0
            return len(hits)

    def _write(self, hits: list[Hit]) -> None:
        """One transaction: the editions' send times, one multi-row INSERT, the rules' updates
        (`mailer.clicks.classify`); no query per click."""
        # The salts first, in their own transactions: on SQLite a transaction that has read
        # cannot write after another one did, so none may open inside the one below.
        salts = {day: self._salts.for_day(day) for day in {hit.at.date() for hit in hits}}
        with self._sessions.begin() as session:
            # An edition deleted since its link was followed: nothing to count it against.
            sent = {row.id: (row.started_at, row.finished_at) for row in session.execute(
                select(Edition.id, Edition.started_at, Edition.finished_at)
                .where(Edition.id.in_({hit.edition_id for hit in hits})))}
            kept = [hit for hit in hits if hit.edition_id in sent]
            by_edition: dict[int, set[str]] = {}
            bursts: list[tuple[int, str, datetime, datetime]] = []
            for start in range(0, len(kept), YIELD_EVERY):
                if start:
                    time.sleep(0)  # (the redirects' turn: see YIELD_EVERY)
                chunk = kept[start:start + YIELD_EVERY]
                rows = [(hit.edition_id, hit.position, hit.at,
                         fingerprint(salts[hit.at.date()], hit.address, hit.user_agent),
                         first_verdict(prefetch=hit.prefetch, user_agent=hit.user_agent,
                                       trap=hit.trap)) for hit in chunk]
                outcome = self._classifier.classify(rows, sent)
                bursts += outcome.bursts
                _insert_clicks(session, [
                    (edition_id, position, at, verdict, fp, hit.delivery_id, hit.test_group)
                    for (edition_id, position, at, fp, _), verdict, hit
                    in zip(rows, outcome.verdicts, chunk, strict=True)])
                for (edition_id, _, _, fp, _), verdict in zip(rows, outcome.verdicts,
                                                              strict=True):
                    if verdict in (HUMAN, TRAPPED, BURST):
                        by_edition.setdefault(edition_id, set()).add(fp)
            for edition_id, fps in by_edition.items():
                apply_rules(session, edition_id, fps, bursts)

    def _run(self) -> None:
        last_housekeeping = time.monotonic()
        while True:
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the flusher must outlive any one bad batch
                log.exception("click flush failed")
            if (self._housekeeping is not None
                    and time.monotonic() - last_housekeeping >= self._housekeeping_seconds):
                last_housekeeping = time.monotonic()
                try:
                    self._housekeeping()
                except Exception:  # noqa: BLE001 - a database away now is retried next time
                    log.warning("click housekeeping failed; retried in an hour", exc_info=True)

    def close(self) -> None:
        """Flush what is left (a clean shutdown loses nothing)."""
        self.flush()
