"""The ledger on its own: snapshot, claims, leases, outcomes (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer import ledger
from mailer.app import App
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.models import (
    ACTIVE,
    BOUNCED,
    PENDING,
    SENDING,
    UNSUBSCRIBED,
    Delivery,
    Edition,
    Subscriber,
)
from mailer.sent_record import SentJournal
from mailer.subscribers import add
from mailer.transports.base import Result
from tests.support.settings import make_settings

NOW = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)


@pytest.fixture
def db_app(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    app = App.create(make_settings(tmp_path, database_url=database_url), clock=FixedClock(NOW))
    init_db(app.engine)
    yield app
    app.close()


def _edition(app: App) -> int:
    with app.sessions.begin() as s:
        for i in range(10):
            add(s, f"user{i}@example.org", name=f"User {i}")
        add(s, "pending@example.org", status=PENDING)
        sub, _ = add(s, "gone@example.org")
        sub.status = UNSUBSCRIBED
        ed = Edition(edition_date=date(2026, 11, 26), state=SENDING,
                     window_start=NOW - timedelta(days=1), window_end=NOW)
        s.add(ed)
        s.flush()
        assert ledger.snapshot(s, ed) == 10
        assert ledger.snapshot(s, ed) == 0  # a second snapshot adds nobody
        return ed.id


def test_claims_are_disjoint_and_leases_expire(db_app: App) -> None:
    eid = _edition(db_app)
    with db_app.sessions.begin() as s:
        a = ledger.claim(s, eid, "w1", 4, NOW, 60)
    with db_app.sessions.begin() as s:
        b = ledger.claim(s, eid, "w2", 100, NOW, 60)
    assert len(a) == 4 and len(b) == 6
    assert not {c.id for c in a} & {c.id for c in b}
    with db_app.sessions.begin() as s:
        assert ledger.claim(s, eid, "w3", 100, NOW, 60) == []
        # w1 died: after its lease the rows come back.
        again = ledger.claim(s, eid, "w3", 100, NOW + timedelta(seconds=61), 60)
    assert {c.id for c in again} == {c.id for c in a} | {c.id for c in b}


def test_expired_claims_come_first_then_queued_rows_up_to_the_limit(db_app: App) -> None:
    eid = _edition(db_app)
    with db_app.sessions.begin() as s:
        dead = ledger.claim(s, eid, "dead", 3, NOW, 60)
        retry_later = ledger.claim(s, eid, "w", 1, NOW, 60)
        ledger.record(s, "w", [(retry_later[0], "", Result("retry", error="451"))], NOW, 5)
        s.get(Delivery, retry_later[0].id).next_attempt_at = NOW + timedelta(hours=1)
    later = NOW + timedelta(seconds=61)
    with db_app.sessions.begin() as s:
        got = ledger.claim(s, eid, "w2", 5, later, 60)
    dead_ids = {c.id for c in dead}
    assert dead_ids < {c.id for c in got} and len(got) == 5
    assert [c.id for c in got] == sorted(c.id for c in got)
    queued = [c.id for c in got if c.id not in dead_ids]
    # the oldest queued rows, skipping the one whose retry is not due yet
    assert queued == sorted(set(range(1, 11)) - dead_ids - {retry_later[0].id})[:2]


def test_claim_reads_an_index_range_not_the_whole_edition(tmp_path: Path) -> None:
    """At a million rows a scan-and-sort per claim costs seconds; a range read does not."""
    app = App.create(make_settings(tmp_path), clock=FixedClock(NOW))
    init_db(app.engine)
    eid = _edition(app)
    statements: list[str] = []
    with app.sessions.begin() as s:
        # SQLite's own trace sees what reaches the database, whichever way it was written.
        raw = s.connection().connection.dbapi_connection
        raw.set_trace_callback(statements.append)
        got = ledger.claim(s, eid, "w", 5, NOW, 60)
        raw.set_trace_callback(None)
    updates = [st for st in statements if st.lstrip().upper().startswith("UPDATE")]
    assert len(got) == 5 and len(updates) == 2  # expired claims, then queued rows
    with app.engine.connect() as conn:
        for statement in updates:
            plan = " | ".join(row[3] for row in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + statement))
            assert "ix_deliveries_edition_state_id (edition_id=? AND state=?)" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
    with app.sessions() as s:
        # The lease as the ORM reads it back: aware UTC, a minute on.
        leases = {d.lease_until for d in s.scalars(select(Delivery).where(
            Delivery.id.in_([c.id for c in got])))}
        assert leases == {NOW + timedelta(seconds=60)}
    app.close()


def test_sent_journal_folds_complete_lines_once(tmp_path: Path) -> None:
    """SMTP's "sent" outcomes on SQLite: a line in a file, folded into the ledger later."""
    app = App.create(make_settings(tmp_path), clock=FixedClock(NOW))
    init_db(app.engine)
    eid = _edition(app)
    journal = SentJournal.for_edition(app.engine, eid)
    assert journal is not None and journal.path.name.endswith(f"-sent-{eid}")
    with app.sessions.begin() as s:
        mine = ledger.claim(s, eid, "w", 5, NOW, 60)
    journal.append("w", [(mine[0].id, "<a@x>", "250 ok\tqueued"),
                         (mine[1].id, "<b@x>", "250 ok")], NOW)
    journal.append("other-worker", [(mine[2].id, "<c@x>", "250 ok")], NOW)  # not its claim
    # The journal folds what it appended without reading it back (rolled back here) ...
    with app.sessions() as s:
        assert journal.fold(s) == 2
        s.rollback()
    # ... and a run that died leaves its lines to the next run's journal, which reads them.
    with journal.path.open("ab") as f:
        f.write(b"garbled line\n")
        f.write(f"{mine[3].id}\tw\t<d@x>\t250 ok".encode())  # cut short: no newline
    reopened = SentJournal.for_edition(app.engine, eid)
    assert reopened is not None
    with app.sessions.begin() as s:
        assert reopened.fold(s) == 2
    reopened.close()
    journal.clear()
    assert journal.path.read_bytes() == b""
    with app.sessions() as s:
        rows = {d.id: d for d in s.scalars(select(Delivery).where(
            Delivery.id.in_([c.id for c in mine])))}
    assert [rows[c.id].state for c in mine] == ["sent", "sent", "claimed", "claimed",
                                                "claimed"]
    assert rows[mine[0].id].message_id == "<a@x>"
    assert rows[mine[0].id].provider_id == "250 ok queued"  # (a tab would split the line)
    assert rows[mine[0].id].sent_at == NOW
    # Folding the same lines again changes nothing (each row is guarded by its claim).
    journal.append("w", [(mine[0].id, "<a@x>", "250 ok")], NOW)
    with app.sessions.begin() as s:
        assert journal.fold(s) == 0
    journal.close(remove=True)
    assert not journal.path.exists()
    assert SentJournal.for_edition(
        App.create(make_settings(tmp_path, database_url="sqlite://"),
                   clock=FixedClock(NOW)).engine, eid) is None
    app.close()


def test_outcomes_guarded_by_claim(db_app: App) -> None:
    eid = _edition(db_app)
    with db_app.sessions.begin() as s:
        claims = ledger.claim(s, eid, "w1", 4, NOW, 60)
    results = [Result("sent", provider_id="q1"), Result("retry", error="451 4.7.1 later"),
               Result("failed", error="550 5.1.1 no such user", hard_bounce=True),
               Result("ambiguous", error="lost")]
    with db_app.sessions.begin() as s:
        tally = ledger.record(s, "w1", [(c, f"<m{c.id}@x>", r) for c, r in
                                        zip(claims, results, strict=True)], NOW, 5)
    assert (tally.sent, tally.retried, tally.failed, tally.ambiguous, tally.bounced) == (
        1, 1, 1, 1, 1)
    with db_app.sessions.begin() as s:
        # A late answer from a worker that lost its claim changes nothing.
        late = ledger.record(s, "intruder", [(claims[0], "<x@x>", Result("failed"))], NOW, 5)
        assert late.lost == 1
        c = ledger.counts(s, eid)
        assert c == {"queued": 7, "claimed": 0, "sent": 1, "failed": 1, "ambiguous": 1,
                     "withdrawn": 0, "skipped": 0}
        bounced = s.get(Subscriber, claims[2].subscriber_id)
        assert bounced is not None and bounced.status == BOUNCED
        assert bounced.events[-1].kind == BOUNCED
        retry = s.scalar(select(Delivery).where(Delivery.id == claims[1].id))
        assert retry is not None and retry.next_attempt_at is not None
        assert retry.next_attempt_at > NOW and retry.attempts == 1
        # Not due yet, so not claimable now.
        ids = {c.id for c in ledger.claim(s, eid, "w2", 100, NOW, 60)}
        assert claims[1].id not in ids


def test_retry_cap_fails_the_row(db_app: App) -> None:
    eid = _edition(db_app)
    now = NOW
    for attempt in range(3):
        with db_app.sessions.begin() as s:
            rows = [c for c in ledger.claim(s, eid, "w", 100, now, 60) if c.email ==
                    "user0@example.org"]
            ledger.release(s, "w", [c.id for c in ledger.claim(s, eid, "w", 100, now, 60)])
            tally = ledger.record(s, "w", [(rows[0], "<m>", Result("retry", error="451"))],
                                  now, 3)
        now += timedelta(minutes=10)
        assert (tally.failed == 1) == (attempt == 2)
    with db_app.sessions() as s:
        row = s.scalar(select(Delivery).where(Delivery.email == "user0@example.org"))
        assert row is not None and row.state == "failed" and not row.permanent
        assert "gave up after 3 attempts" in row.error


def test_snapshot_only_active(db_app: App) -> None:
    eid = _edition(db_app)
    with db_app.sessions() as s:
        emails = set(s.scalars(select(Delivery.email).where(Delivery.edition_id == eid)))
        statuses = set(s.scalars(select(Subscriber.status).where(Subscriber.email.in_(emails))))
    assert statuses == {ACTIVE}
    assert "pending@example.org" not in emails and "gone@example.org" not in emails


def test_a_tally_adds_every_field() -> None:
    """`Tally.add` names its fields one by one (it runs once per round of answers): a field
    added to the dataclass and forgotten there fails here."""
    from dataclasses import asdict, fields

    total = ledger.Tally(*range(1, len(fields(ledger.Tally)) + 1))
    total.add(ledger.Tally(*range(10, 10 + len(fields(ledger.Tally)))))
    assert asdict(total) == {f.name: (i + 1) + (10 + i)
                             for i, f in enumerate(fields(ledger.Tally))}
