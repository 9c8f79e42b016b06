"""Writing a batch of followed links as clicks: fingerprints, the scanner rules, one INSERT.

The batch comes from a web process's buffer (`mailer.clicks.recorder`) as plain tuples
(`RawHit`): every piece of work taken off the request path is worth several times its own
cost there, where it holds the interpreter lock the request threads queue for. So the flood
rule and the conversions happen here. A hit's address and user agent are turned into a
fingerprint with the day's salt here and then dropped: neither is ever written. The rules run
in memory over the batch with what this writer has seen lately
(`mailer.clicks.classify.Classifier`), so a reader's click costs no query of its own.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import NamedTuple, Protocol, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session, sessionmaker

from mailer.clicks.classify import Classifier, apply_rules, first_verdict
from mailer.clicks.fingerprint import DailySalts, fingerprint
from mailer.models import BURST, HUMAN, TRAPPED, Click, Edition

#: The table itself: a Core INSERT of many rows, without the ORM's per-object work.
_CLICKS = cast(Table, Click.__table__)
#: Clicks worked on between two turns given to the redirects, when the writer runs on the web
#: process's thread: its Python work holds the interpreter lock, and a redirect waiting behind
#: a whole batch of it is the slow tail. (In a process of its own there is no one to yield to.)
YIELD_EVERY = 64
#: Hits a minute from one address and user agent that are counted (`FloodGuard`).
FLOOD_PER_MINUTE = 60


#: A counted redirect as the request path hands it on: `Hit`'s fields in order, the time as
#: seconds since the epoch (`Clock.timestamp`; a float keeps the microseconds of any time
#: this century). A plain tuple is the cheapest thing a redirect can make, and `marshal`
#: sends it to the writer process as it is.
RawHit = tuple[int, int, float, str, str, int | None, bool, bool, int]


class Hit(NamedTuple):
    """One followed link as the writer works on it (made from its `RawHit`). The address and
    user agent live only here, in memory, until the writer makes a fingerprint of them."""

    edition_id: int
    position: int
    at: datetime
    address: str
    user_agent: str
    delivery_id: int | None = None
    prefetch: bool = False
    trap: bool = False
    test_group: int = 0  # a subject test's group (`mailer.subject_test`), 0 outside one

    @classmethod
    def from_raw(cls, raw: RawHit) -> Hit:
        edition_id, position, at, address, agent, delivery_id, prefetch, trap, group = raw
        return cls(edition_id, position, datetime.fromtimestamp(at, UTC), address, agent,
                   delivery_id, prefetch, trap, group)

    def raw(self) -> RawHit:
        """The tuple the redirect makes for this hit (`RawHit`; tests)."""
        return (self.edition_id, self.position, self.at.timestamp(), self.address,
                self.user_agent, self.delivery_id, self.prefetch, self.trap, self.test_group)


class FloodGuard:
    """At most `FLOOD_PER_MINUTE` counted hits a minute, by the hits' own times, from one
    address and user agent; the rest were redirected and are not written. `forget` takes a
    batch back when it was not written, so that its retry is not counted twice."""

    def __init__(self) -> None:
        self._minutes: dict[int, dict[tuple[str, str], int]] = {}

    def admit(self, batch: list[RawHit]) -> list[RawHit]:
        kept: list[RawHit] = []
        for raw in batch:
            minute = int(raw[2] // 60)
            seen = self._minutes.get(minute)
            if seen is None:
                # (a minute and the one before it: a batch can straddle the turn)
                self._minutes = {m: s for m, s in self._minutes.items() if m >= minute - 1}
                seen = self._minutes[minute] = {}
            key = (raw[3], raw[4])
            count = seen[key] = seen.get(key, 0) + 1
            if count <= FLOOD_PER_MINUTE:
                kept.append(raw)
        return kept

    def forget(self, batch: list[RawHit]) -> None:
        for raw in batch:
            seen = self._minutes.get(int(raw[2] // 60))
            key = (raw[3], raw[4])
            if seen and seen.get(key):
                seen[key] -= 1


def _insert_clicks(session: Session, rows: list[tuple[int, int, datetime, str, str,
                                                     int | None, int]]) -> None:
    """One driver-level executemany of (edition, position, at, verdict, fingerprint,
    delivery, test group) rows. SQLAlchemy's Core INSERT processes every parameter of every row in
    Python; here only `at` is converted: on SQLite into the text the column type writes
    (`sqlite_utc`, cheaper than the type's own processor), elsewhere by the type's processor."""
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


class BatchWriter(Protocol):
    """What the recorder hands its batches to (`ClickWriter`, or the writer process)."""

    def write(self, batch: list[RawHit]) -> None: ...

    def close(self) -> None: ...


class ClickWriter:
    """Writes batches of hits; keeps the day's salts and the rules' recent clicks between
    batches. Raises SQLAlchemy's errors when the database is away (nothing is written then).
    `in_web_process`: it shares the interpreter with the redirects (`YIELD_EVERY`)."""

    def __init__(self, sessions: sessionmaker[Session], *, in_web_process: bool = True) -> None:
        self._sessions = sessions
        self._in_web_process = in_web_process
        self._salts = DailySalts(sessions)
        self._classifier = Classifier()
        self._flood = FloodGuard()

    def write(self, batch: list[RawHit]) -> None:
        """The flood rule, then the hits it admits written (`_write`)."""
        admitted = self._flood.admit(batch)
        try:
            self._write([Hit.from_raw(raw) for raw in admitted])
        except BaseException:
            self._flood.forget(batch)
            raise

    def _write(self, hits: list[Hit]) -> None:
        """One transaction: the editions' send times, the INSERT, the rules' updates
        (`mailer.clicks.classify`); no query per click."""
        if not hits:
            return
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
            step = YIELD_EVERY if self._in_web_process else max(1, len(kept))
            for start in range(0, len(kept), step):
                if start:
                    time.sleep(0)  # (the redirects' turn: see YIELD_EVERY)
                chunk = kept[start:start + step]
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

    def close(self) -> None:
        """(Nothing to stop: the sessions are the web app's.)"""
