"""Readers who stop receiving during a send do not get it: their queued rows are withdrawn.

A send's audience is a snapshot, and a send through a rate-limited relay can take an hour: a
reader who unsubscribes (or bounces, complains, pauses, is erased) after the snapshot must
not get the edition when their row's turn comes. On SQLite and the real PostgreSQL.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from mailer import ledger, optin
from mailer.app import App
from mailer.cli import cli
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.erasure import erase
from mailer.feedback.events import EventKind, apply
from mailer.locks import HOSTNAME
from mailer.models import (
    CANCELLED,
    CLAIMED,
    QUEUED,
    SENT,
    WITHDRAWN,
    Delivery,
    Edition,
)
from mailer.pipeline import run_send
from mailer.subscribers import find
from tests.support.seed import eml_recipients, seed_subscribers, start_sending, with_feed
from tests.support.settings import make_settings

DAY = date(2026, 11, 26)


@pytest.fixture
def app(tmp_path: Path, database_url: str, clock: FixedClock) -> Iterator[App]:
    application = App.create(make_settings(tmp_path, database_url=database_url), clock=clock)
    init_db(application.engine)
    with_feed(application, tmp_path)
    yield application
    application.close()


def states(app: App, edition_id: int) -> dict[str, str]:
    with app.sessions() as session:
        return dict(session.execute(select(Delivery.email, Delivery.state)
                                    .where(Delivery.edition_id == edition_id)).all())


def test_those_who_leave_after_the_snapshot_are_not_sent_it(app: App, tmp_path: Path) -> None:
    emails = seed_subscribers(app, 30)
    edition_id, _ = start_sending(app, DAY)
    now = app.clock.now()
    with app.sessions.begin() as session:
        def sub(i: int):  # type: ignore[no-untyped-def]
            found = find(session, f"reader{i}@example.org")
            assert found is not None
            return found

        optin.unsubscribe(session, sub(5), now=now, source="one-click")
        apply(session, "postmark", "ev-6", EventKind.BOUNCE_HARD, "reader6@example.org", {},
              now)
        apply(session, "postmark", "ev-7", EventKind.COMPLAINT, "reader7@example.org", {}, now)
        optin.pause(session, sub(8), 2, now=now)
        erase(session, sub(9), at=now)
    gone = {f"reader{i}@example.org" for i in (5, 6, 7, 8, 9)}
    now_states = states(app, edition_id)
    # (an erased reader's rows keep no address)
    assert {e for e, s in now_states.items() if s == WITHDRAWN} == (
        gone - {"reader9@example.org"} | {"erased"})
    assert Counter(now_states.values()) == Counter({QUEUED: 25, WITHDRAWN: 5})
    with app.sessions() as session:
        row = session.scalar(select(Delivery).where(
            Delivery.email == "reader5@example.org"))
        assert row is not None and row.error == "unsubscribed during the send (one-click)"

    outcome = run_send(app, DAY, collect_first=False)
    assert outcome.status == "sent", outcome.message
    assert outcome.message.endswith("left the list during the send 5")
    got = eml_recipients(tmp_path / "outbox")
    assert set(got) == set(emails) - gone and max(got.values()) == 1
    with app.sessions() as session:
        ed = session.get(Edition, edition_id)
        assert ed is not None and ed.state == SENT
        assert (ed.sent_count, ed.failed_count) == (25, 0)  # withdrawn is not a failure
        assert ledger.counts(session, edition_id)[WITHDRAWN] == 5
    environ = {"MAILER_DATABASE_URL": app.settings.database_url, "MAILER_SECRET_KEY": "x"}
    listed = CliRunner().invoke(cli, ["editions", "list"], env=environ)
    assert listed.exit_code == 0 and "withdrawn    5" in listed.output, listed.output
    shown = CliRunner().invoke(cli, ["editions", "show", str(DAY)], env=environ)
    assert "sent 25" in shown.output and "withdrawn 5" in shown.output, shown.output


def test_a_claimed_row_and_finished_editions_are_left_alone(app: App) -> None:
    """A claimed row may be on its way to the server: it is not touched. Editions that will
    send nothing more (sent, cancelled) keep their ledger as it was."""
    seed_subscribers(app, 6)
    edition_id, claimed = start_sending(app, DAY, claimed_by="thishost:999999:dead:0",
                                        claims=2)
    claimed_email = claimed[0].email
    with app.sessions.begin() as session:
        ed = session.get(Edition, edition_id)
        assert ed is not None
        ed.state = CANCELLED
    now = app.clock.now()
    with app.sessions.begin() as session:
        sub = find(session, "reader4@example.org")
        assert sub is not None
        optin.unsubscribe(session, sub, now=now, source="one-click")
    assert states(app, edition_id)["reader4@example.org"] == QUEUED  # (cancelled edition)
    with app.sessions.begin() as session:
        ed = session.get(Edition, edition_id)
        assert ed is not None
        ed.state = "sending"
    with app.sessions.begin() as session:
        for address in (claimed_email, "reader5@example.org"):
            sub = find(session, address)
            assert sub is not None
            optin.unsubscribe(session, sub, now=now, source="page")
    after = states(app, edition_id)
    assert after[claimed_email] == CLAIMED
    assert after["reader5@example.org"] == WITHDRAWN


def test_a_claimed_row_whose_reader_left_is_withdrawn_when_it_comes_back(
        app: App, tmp_path: Path) -> None:
    """A worker died holding two rows, and one of their readers left meanwhile: the
    recovered rows go back to the queue, except that one, which is withdrawn. A pause gives
    claimed rows back the same way (`ledger.release`)."""
    seed_subscribers(app, 6)
    edition_id, claimed = start_sending(app, DAY, claimed_by=f"{HOSTNAME}:999999:dead:0",
                                        claims=2)
    left, stays = claimed[0].email, claimed[1].email
    with app.sessions.begin() as session:
        sub = find(session, left)
        assert sub is not None
        optin.unsubscribe(session, sub, now=app.clock.now(), source="one-click")
        taken = ledger.claim(session, edition_id, "w-live", 2, app.clock.now(), 300)
    assert states(app, edition_id)[left] == CLAIMED
    taken_left = taken[0].email
    with app.sessions.begin() as session:
        sub = find(session, taken_left)
        assert sub is not None
        optin.unsubscribe(session, sub, now=app.clock.now(), source="mailto")
        ledger.release(session, "w-live", [c.id for c in taken])  # (a pause)
    after = states(app, edition_id)
    assert after[taken_left] == WITHDRAWN and after[taken[1].email] == QUEUED
    outcome = run_send(app, DAY, collect_first=False)  # recovers the dead worker's rows
    assert outcome.status == "sent", outcome.message
    final = states(app, edition_id)
    assert final[left] == WITHDRAWN and final[stays] == "sent"
    got = eml_recipients(tmp_path / "outbox")
    assert left not in got and taken_left not in got and len(got) == 4


def test_an_expired_claim_whose_reader_left_is_not_taken_over(app: App, tmp_path: Path,
                                                              clock: FixedClock) -> None:
    """A worker on another machine went silent holding two rows (its lease runs out; nothing
    here can tell it is dead), and one of their readers left meanwhile: on PostgreSQL the
    claim that takes the expired rows over withdraws that one and sends the other (on SQLite
    the one dispatcher gives every claim back when it starts, `ledger.back_to_queue`)."""
    seed_subscribers(app, 4)
    edition_id, claimed = start_sending(app, DAY, claimed_by="otherhost:4242:gone:0", claims=2)
    left, stays = claimed[0].email, claimed[1].email
    with app.sessions.begin() as session:
        sub = find(session, left)
        assert sub is not None
        optin.unsubscribe(session, sub, now=app.clock.now(), source="one-click")
    assert states(app, edition_id)[left] == CLAIMED
    clock.advance(seconds=app.settings.lease_seconds + 1)
    outcome = run_send(app, DAY, collect_first=False)
    assert outcome.status == "sent", outcome.message
    final = states(app, edition_id)
    assert final[left] == WITHDRAWN and final[stays] == "sent"
    assert set(eml_recipients(tmp_path / "outbox")) == {
        f"reader{i}@example.org" for i in range(4)} - {left}


def test_only_a_change_away_from_active_withdraws(app: App) -> None:
    """Only a change away from active withdraws: a second unsubscribe, or a status that was
    never active, leaves the ledger as it is."""
    seed_subscribers(app, 3)
    edition_id, _ = start_sending(app, DAY)
    now = app.clock.now()
    with app.sessions.begin() as session:
        sub = find(session, "reader1@example.org")
        assert sub is not None
        assert optin.unsubscribe(session, sub, now=now, source="one-click") is True
        assert optin.unsubscribe(session, sub, now=now, source="mailto") is False
    assert Counter(states(app, edition_id).values()) == Counter({QUEUED: 2, WITHDRAWN: 1})
