"""The send engine against a real aiosmtpd server: retries, bounces, outages, pause, leases."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from mailer import dispatch, ledger
from mailer.app import App
from mailer.dispatch import Dispatcher
from mailer.models import BOUNCED, PAUSED_SEND, SENDING, SENT, Delivery, Edition, Subscriber
from mailer.pipeline import run_send
from mailer.sent_record import SentJournal
from tests.support.seed import add_article, seed_subscribers, start_sending, with_feed
from tests.support.smtpsink import SmtpSink

DAY = date(2026, 11, 26)


def _use(app: App, sink: SmtpSink, **changes: object) -> App:
    app.settings = app.settings.replace(dsn=sink.dsn, **changes)
    return app


def test_451_then_250_delivers_once_and_550_511_bounces(app: App, tmp_path: Path,
                                                        make_smtp_sink) -> None:  # type: ignore[no-untyped-def]
    def rcpt(address: str, attempt: int) -> str | None:
        if address.startswith("reader1") and attempt <= 2:   # reader1, reader10..19
            return "451 4.7.1 Greylisted, try again later"
        if address in ("reader3@example.org", "reader4@example.org"):
            return "550 5.1.1 No such user here"
        return None

    sink = make_smtp_sink(rcpt_policy=rcpt)
    with_feed(_use(app, sink, connections=2), tmp_path)
    emails = seed_subscribers(app, 30)
    outcome = run_send(app, DAY)
    assert outcome.status == "sent", outcome.message
    got = Counter(sink.recipients())
    expected = set(emails) - {"reader3@example.org", "reader4@example.org"}
    assert set(got) == expected and all(n == 1 for n in got.values())
    with app.sessions() as s:
        dead = s.scalars(select(Subscriber).where(Subscriber.status == BOUNCED)).all()
        assert {d.email for d in dead} == {"reader3@example.org", "reader4@example.org"}
        rows = s.scalars(select(Delivery).where(Delivery.email == "reader3@example.org")).all()
        assert rows[0].state == "failed" and rows[0].permanent and rows[0].attempts == 1
        greylisted = s.scalar(select(Delivery).where(Delivery.email == "reader1@example.org"))
        assert greylisted is not None and greylisted.attempts == 3
    # Bounced addresses are left out of the next edition.
    app.clock.advance(days=1)  # type: ignore[attr-defined]
    sink.messages.clear()
    add_article(app, "next-day-story")
    assert run_send(app, DAY + timedelta(days=1), collect_first=False).status == "sent"
    assert "reader3@example.org" not in sink.recipients()
    assert len(sink.recipients()) == 28


def test_second_send_sends_nothing(app: App, tmp_path: Path, smtp_sink: SmtpSink) -> None:
    with_feed(_use(app, smtp_sink), tmp_path)
    seed_subscribers(app, 5)
    assert run_send(app, DAY).status == "sent"
    again = run_send(app, DAY)
    assert again.status == "already-sent" and "already sent" in again.message
    assert len(smtp_sink.recipients()) == 5
    with app.sessions() as s:
        # Written by the driver-level hot path, read back through the ORM as aware UTC.
        stamps = set(s.scalars(select(Delivery.sent_at)))
        assert stamps == {app.clock.now()}


def test_server_down_then_up_finishes_without_losing_anyone(app: App, tmp_path: Path) -> None:
    sink = SmtpSink()
    sink.port = 0
    with_feed(app, tmp_path)
    seed_subscribers(app, 20)
    # Point at a port where nothing listens yet: the send stops with a clear message.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    app.settings = app.settings.replace(dsn=f"smtp://127.0.0.1:{free_port}?tls=0&timeout=2")
    import mailer.dispatch as dispatch_module

    old_wait = dispatch_module.TRANSPORT_WAIT_SECONDS
    dispatch_module.TRANSPORT_WAIT_SECONDS = 1.0
    try:
        first = run_send(app, DAY)
    finally:
        dispatch_module.TRANSPORT_WAIT_SECONDS = old_wait
    assert first.status == "stopped"
    assert "run the send again" in first.message
    with app.sessions() as s:
        edition = s.scalar(select(Edition))
        assert edition is not None and edition.state == SENDING
        assert ledger.counts(s, edition.id)["queued"] == 20  # nobody failed, nobody lost
    # The server comes back; the rerun completes.
    from aiosmtpd.controller import Controller  # noqa: F401  (the sink uses it)

    with SmtpSink() as up:
        app.settings = app.settings.replace(dsn=up.dsn)
        second = run_send(app, DAY)
        assert second.status == "sent", second.message
        assert sorted(up.recipients()) == sorted(f"reader{i}@example.org" for i in range(20))


def test_pause_then_resume_no_one_skipped_or_twice(app: App, tmp_path: Path,
                                                   make_smtp_sink) -> None:  # type: ignore[no-untyped-def]
    sink = make_smtp_sink(data_delay=0.01)
    with_feed(_use(app, sink, connections=2), tmp_path)
    emails = seed_subscribers(app, 120)

    def pause_soon() -> None:
        sink.wait_for(20, timeout=20)
        with app.sessions.begin() as s:
            s.execute(update(Edition).where(Edition.state == SENDING).values(state=PAUSED_SEND))

    pauser = threading.Thread(target=pause_soon)
    pauser.start()
    first = run_send(app, DAY)
    pauser.join()
    assert first.status == "paused", first.message
    sent_while_running = len(sink.recipients())
    assert 20 <= sent_while_running < 120
    with app.sessions.begin() as s:
        s.execute(update(Edition).where(Edition.state == PAUSED_SEND).values(state=SENDING))
    second = run_send(app, DAY, collect_first=False)
    assert second.status == "sent", second.message
    got = Counter(sink.recipients())
    assert set(got) == set(emails) and max(got.values()) == 1


def test_others_see_progress_within_a_claim_batch(
        app: App, tmp_path: Path, make_smtp_sink,  # type: ignore[no-untyped-def]
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite + SMTP: "sent" outcomes wait in the sent journal until a fold, and a slow relay
    takes minutes over one claim of 1,000 rows. The staff progress page and `mailer editions
    show` read the ledger: a stream folds at least every JOURNAL_FOLD_SECONDS, so they see
    the count go up while the claim is still being sent, not only at its end. (Here a fold
    every quarter second and a claim sent in about one: four folds, as a 1 s fold over a
    claim of four seconds.)"""
    monkeypatch.setattr(dispatch, "JOURNAL_FOLD_SECONDS", 0.25)
    sink = make_smtp_sink(data_delay=0.01)  # 100 messages a second on one connection
    with_feed(_use(app, sink, connections=1), tmp_path)
    seed_subscribers(app, 100)  # one claim, about a second
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            with app.sessions() as s:
                edition_id = s.scalar(select(Edition.id))
                if edition_id is not None:
                    seen.append(ledger.counts(s, edition_id)["sent"])

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        outcome = run_send(app, DAY)
    finally:
        done.set()
        watcher.join()
    assert outcome.status == "sent", outcome.message
    assert len(sink.recipients()) == 100
    midway = [n for n in seen if 0 < n < 100]
    assert len(set(midway)) >= 2, seen  # it went up in steps, before the claim was done


def test_a_dead_runs_journal_is_folded_before_its_claims_go_back(
        app: App, tmp_path: Path, smtp_sink: SmtpSink) -> None:
    """SQLite + SMTP: a run killed with outcomes still in its sent journal. The next run
    writes them into the ledger before returning the dead run's claims to the queue, so
    nobody whose message went out gets it again."""
    with_feed(_use(app, smtp_sink), tmp_path)
    emails = seed_subscribers(app, 10)
    edition_id, dead = start_sending(app, DAY, claimed_by="thishost:999999:dead:0", claims=4)
    journal = SentJournal.for_edition(app.engine, edition_id)
    assert journal is not None
    journal.append("thishost:999999:dead:0",
                   [(c.id, f"<dead{c.id}@labourlist.org>", "250 queued") for c in dead[:2]],
                   app.clock.now())
    journal.close()
    progress = Dispatcher(app, edition_id).run()
    assert progress.tally.sent == 8
    delivered = {c.email for c in dead[:2]}
    assert Counter(smtp_sink.recipients()) == Counter(set(emails) - delivered)
    with app.sessions() as s:
        assert ledger.counts(s, edition_id)["sent"] == 10
        assert s.scalar(select(Delivery.message_id).where(Delivery.id == dead[0].id)) == (
            f"<dead{dead[0].id}@labourlist.org>")
    assert not journal.path.exists()  # folded and removed at the end of the run


def test_stale_claim_is_reclaimed_after_lease(tmp_path: Path, database_url: str,
                                              clock, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    from mailer.db import init_db
    from tests.support.settings import make_settings

    app = App.create(make_settings(tmp_path, database_url=database_url, dsn=smtp_sink.dsn),
                     clock=clock)
    init_db(app.engine)
    with_feed(app, tmp_path)
    seed_subscribers(app, 10)
    # The send starts; a worker on another machine claims 4 rows and dies.
    edition_id, claimed = start_sending(app, DAY, claimed_by="otherhost:4242:dead:0",
                                        claims=4)
    assert len(claimed) == 4
    if app.engine.dialect.name == "postgresql":
        # The other host may be alive: its rows are not touched while its lease runs ...
        with app.sessions.begin() as s:
            mine = ledger.claim(s, edition_id, "me", 100, app.clock.now(), 60)
            assert len(mine) == 6
            ledger.release(s, "me", [c.id for c in mine])
        # ... and once it has run out, they are reclaimed and sent.
        clock.advance(seconds=app.settings.lease_seconds + 1)
    # (SQLite allows one dispatcher at a time, so a new one knows every old claim is dead.)
    progress = Dispatcher(app, edition_id).run()
    assert progress.tally.sent == 10
    with app.sessions() as s:
        assert s.scalar(select(Edition.state).where(Edition.id == edition_id)) == SENT
        assert ledger.counts(s, edition_id)["sent"] == 10
    assert sorted(smtp_sink.recipients()) == sorted(f"reader{i}@example.org" for i in range(10))
    app.close()


def test_connection_dropped_mid_send_rerun_completes(app: App, tmp_path: Path,
                                                     make_smtp_sink) -> None:  # type: ignore[no-untyped-def]
    sink = make_smtp_sink(drop_after=7, drop_mode="before_data")
    with_feed(_use(app, sink, connections=1), tmp_path)
    emails = seed_subscribers(app, 25)
    outcome = run_send(app, DAY)
    assert outcome.status == "sent", outcome.message
    got = Counter(sink.recipients())
    assert set(got) == set(emails) and max(got.values()) == 1


def test_ambiguous_outcome_is_not_resent(app: App, tmp_path: Path,
                                         make_smtp_sink) -> None:  # type: ignore[no-untyped-def]
    sink = make_smtp_sink(drop_after=5, drop_mode="after_data")
    with_feed(_use(app, sink, connections=1), tmp_path)
    seed_subscribers(app, 12)
    outcome = run_send(app, DAY)
    assert outcome.status == "sent"
    assert outcome.details["ambiguous"] == 1 and outcome.details["sent"] == 11
    with app.sessions() as s:
        row = s.scalar(select(Delivery).where(Delivery.state == "ambiguous"))
        assert row is not None and "outcome unknown" in row.error
    # Delivered (to the sink's "dropped" list) exactly once; never blindly retried.
    all_seen = sink.recipients() + [r for m in sink.dropped for r in m.rcpt_tos]
    assert len(all_seen) == 12 and len(set(all_seen)) == 12


def test_sender_rejected_pauses_instead_of_failing_everyone(app: App, tmp_path: Path,
                                                            make_smtp_sink) -> None:  # type: ignore[no-untyped-def]
    from mailer.dispatch import MAX_CONSECUTIVE_FAILURES

    sink = make_smtp_sink(mail_policy=lambda address, attempt: "553 5.7.1 Sender not allowed")
    with_feed(_use(app, sink, connections=1), tmp_path)
    seed_subscribers(app, 100)
    outcome = run_send(app, DAY)
    assert outcome.status == "paused"
    assert "consecutive failures" in outcome.message and "553" in outcome.message
    assert outcome.details["failed"] == MAX_CONSECUTIVE_FAILURES
    assert outcome.details["queued"] == 100 - MAX_CONSECUTIVE_FAILURES
    with app.sessions() as s:
        assert s.scalar(select(Subscriber).where(Subscriber.status == BOUNCED)) is None
