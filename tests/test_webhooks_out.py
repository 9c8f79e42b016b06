"""Outgoing webhooks: events written with the change, delivered signed to a real receiver on
loopback that verifies them with the `standardwebhooks` package, retried while it is down,
given up after a day, and delivered at least once when the delivering process is killed."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailer import optin
from mailer.app import App
from mailer.clicks.retention import purge
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.erasure import erase
from mailer.feedback.events import apply
from mailer.models import (
    HOOK_DELIVERED,
    HOOK_FAILED,
    HOOK_PENDING,
    AuditEntry,
    HookDelivery,
    HookEndpoint,
    SendLog,
)
from mailer.outbox import emit
from mailer.outgoing import endpoints
from mailer.outgoing.delivery import RECORD_EVERY, deliver_due, drain
from mailer.pipeline import run_send
from mailer.subscribers import add, find, import_csv, set_choices
from tests.support.hookreceiver import Receiver, payloads, running_receiver
from tests.support.seed import seed_subscribers, with_feed
from tests.support.settings import make_settings

DAY_START = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)


@pytest.fixture
def app(tmp_path: Path, clock: FixedClock) -> Iterator[App]:
    application = App.create(make_settings(tmp_path, allow_local_links=True), clock=clock)
    init_db(application.engine)
    yield application
    application.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as found:
        yield found


def register(app: App, receiver: Receiver, *events: str) -> int:
    with app.sessions.begin() as session:
        row = endpoints.add(session, receiver.url, events, app.settings, now=app.clock.now())
        receiver.secret = row.secret
        return row.id


def import_readers(app: App, n: int) -> None:
    """The CSV import's bulk path (one INSERT of the events too)."""
    lines = "email,name\n" + "".join(f"reader{i}@example.org,Reader {i}\n" for i in range(n))
    with app.sessions.begin() as session:
        assert import_csv(session, io.StringIO(lines), at=app.clock.now()).added == n


def rows(app: App, state: str | None = None) -> int:
    with app.sessions() as session:
        pick = select(func.count()).select_from(HookDelivery)
        if state is not None:
            pick = pick.where(HookDelivery.state == state)
        return int(session.scalar(pick) or 0)


def test_each_change_reaches_the_receiver_signed_with_its_source(
        app: App, receiver: Receiver) -> None:
    register(app, receiver)
    now = app.clock.now()
    with app.sessions.begin() as session:
        request = optin.request_subscription(session, "ann@example.org", "Ann", now=now,
                                             source="web")
        assert request is not None
    with app.sessions.begin() as session:
        optin.confirm(session, request.subscriber_id, request.anchor, now=now)
    with app.sessions.begin() as session:
        ann = find(session, "ann@example.org")
        assert ann is not None
        set_choices(session, ann, frequency="weekly", source="preferences", at=now)
        optin.unsubscribe(session, ann, now=now, source="one-click")
        bob, _ = add(session, "bob@example.org", source="import")
        carol, _ = add(session, "carol@example.org", source="import")
        apply(session, "postmark", "ev-1", "bounce_hard", "bob@example.org", {}, now)
        apply(session, "postmark", "ev-2", "complaint", "carol@example.org", {}, now)
    report = deliver_due(app)
    assert report.delivered == rows(app) == 8 and receiver.refused == 0
    assert sorted(receiver.types()) == sorted([
        "subscriber.created", "subscriber.confirmed", "subscriber.updated",
        "subscriber.unsubscribed", "subscriber.created", "subscriber.created",
        "subscriber.bounced", "subscriber.complained"])
    [left] = payloads(receiver, "subscriber.unsubscribed")
    assert left["email"] == "ann@example.org" and left["channel"] == "one-click"
    [bounced] = payloads(receiver, "subscriber.bounced")
    assert bounced["email"] == "bob@example.org" and bounced["channel"] == "webhook"
    [changed] = payloads(receiver, "subscriber.updated")
    assert changed["frequency"] == "weekly"
    assert deliver_due(app).attempted == 0  # nothing twice


def test_only_the_events_asked_for_and_none_for_a_change_that_rolled_back(
        app: App, receiver: Receiver) -> None:
    register(app, receiver, "subscriber.unsubscribed")
    with pytest.raises(RuntimeError), app.sessions.begin() as session:
        sub, _ = add(session, "dana@example.org")
        optin.unsubscribe(session, sub, now=app.clock.now(), source="api:site")
        raise RuntimeError("the request failed after the change")
    assert rows(app) == 0
    with app.sessions.begin() as session:
        sub, _ = add(session, "dana@example.org")  # created: not asked for
        optin.unsubscribe(session, sub, now=app.clock.now(), source="api:site")
    assert drain(app).delivered == 1
    [left] = payloads(receiver, "subscriber.unsubscribed")
    assert left["channel"] == "api" and left["source"] == "api:site"


def test_a_receiver_down_for_a_while_gets_every_event_once_it_is_back(
        app: App, receiver: Receiver) -> None:
    register(app, receiver)
    import_readers(app, 30)
    assert rows(app, HOOK_PENDING) == 30
    receiver.stop()  # connection refused
    first = deliver_due(app)
    assert first.failed_attempts == 30 and first.delivered == 0
    assert deliver_due(app).attempted == 0  # waiting for the backoff
    app.clock.advance(seconds=6)  # type: ignore[attr-defined]
    receiver.start(receiver.port)
    receiver.status = 503  # up, but failing
    assert deliver_due(app).failed_attempts == 30 and not receiver.unique()
    app.clock.advance(seconds=31)  # type: ignore[attr-defined]
    receiver.status = 200
    assert drain(app).delivered == 30
    assert len(receiver.unique()) == 30 and len(receiver.posts) == 30  # none twice
    with app.sessions() as session:
        hook = session.scalars(select(HookEndpoint)).one()
        assert hook.enabled and hook.failing_since is None
        attempts = set(session.scalars(select(HookDelivery.attempts)))
    assert attempts == {3}


def test_a_receiver_failing_for_a_day_is_disabled_staff_are_told_and_events_given_up(
        app: App, receiver: Receiver) -> None:
    endpoint_id = register(app, receiver, "subscriber.created")
    receiver.status = 500
    import_readers(app, 2)
    for _ in range(40):
        deliver_due(app)
        app.clock.advance(hours=1)  # type: ignore[attr-defined]
    with app.sessions() as session:
        hook = session.get(HookEndpoint, endpoint_id)
        assert hook is not None and not hook.enabled
        assert "24 hours" in hook.disabled_reason and "HTTP 500" in hook.disabled_reason
        actions = list(session.scalars(select(AuditEntry.action)))
        alerts = list(session.scalars(select(SendLog.detail).where(SendLog.kind == "alert")))
    assert actions.count("webhook-disabled") == 1
    assert alerts == [f"webhook endpoint disabled: {receiver.url}: not emailed (no staff_alerts "
                      "configured)"]
    assert rows(app, HOOK_FAILED) + rows(app, HOOK_PENDING) == 2
    assert rows(app, HOOK_DELIVERED) == 0
    # Turned back on, with a day of retries from "send again":
    with app.sessions.begin() as session:
        endpoints.set_enabled(session, endpoint_id, True)
        for row_id in session.scalars(select(HookDelivery.id)):
            endpoints.send_again(session, row_id, now=app.clock.now())
    receiver.status = 200
    assert drain(app).delivered == 2 and len(receiver.unique()) == 2


def test_an_edition_sent_is_announced_with_its_counts(
        app: App, receiver: Receiver, tmp_path: Path) -> None:
    with_feed(app, tmp_path)
    seed_subscribers(app, 5)
    register(app, receiver, "edition.sent")
    assert run_send(app).status == "sent"
    drain(app)
    [sent] = payloads(receiver, "edition.sent")
    assert sent["counts"]["sent"] == 5 and sent["kind"] == "daily" and sent["date"]


def test_erasing_a_reader_drops_their_undelivered_events(app: App, receiver: Receiver) -> None:
    register(app, receiver)
    with app.sessions.begin() as session:
        sub, _ = add(session, "erin@example.org")
    drain(app)
    with app.sessions.begin() as session:
        sub = find(session, "erin@example.org")
        assert sub is not None
        optin.unsubscribe(session, sub, now=app.clock.now(), source="page")
    with app.sessions.begin() as session:
        sub = find(session, "erin@example.org")
        assert sub is not None
        erase(session, sub, at=app.clock.now())
    with app.sessions() as session:
        kept = list(session.scalars(select(HookDelivery)))
    assert [(row.state, row.payload, row.subscriber_id) for row in kept] == [
        (HOOK_DELIVERED, {}, None)]
    assert drain(app).attempted == 0


@pytest.mark.parametrize("url, allow_local, why", [
    ("http://hooks.example.org/x", False, "https://"),
    ("https://127.0.0.1/x", False, "loopback"),
    ("https://10.1.2.3/x", False, "private"),
    ("http://169.254.169.254/latest", True, "metadata"),
    ("ftp://example.org/", True, "https://"),
])
def test_a_receiver_url_must_be_https_and_public(tmp_path: Path, url: str, allow_local: bool,
                                                 why: str) -> None:
    settings = make_settings(tmp_path, allow_local_links=allow_local)
    with pytest.raises(endpoints.EndpointError, match=why):
        endpoints.check_url(url, settings)


def test_kill_9_of_the_delivering_process_mid_batch_loses_nothing(
        app: App, receiver: Receiver, tmp_path: Path) -> None:
    register(app, receiver)
    with app.sessions.begin() as session:
        for n in range(150):
            emit(session, "edition.failed", {"n": n})
    receiver.delay = 0.005
    (tmp_path / "none.toml").write_text("")
    environ = {**os.environ, "MAILER_DATABASE_URL": app.settings.database_url,
               "MAILER_ALLOW_LOCAL_LINKS": "true", "MAILER_CONFIG": str(tmp_path / "none.toml"),
               "MAILER_SECRET_KEY": "kill-test"}
    child = subprocess.Popen([sys.executable, "-m", "mailer", "webhooks", "deliver"],
                             env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while len(receiver.posts) < 120 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    got_before = len(receiver.unique())
    assert 120 <= got_before < 150, child.stderr.read() if child.stderr else ""
    receiver.delay = 0.0
    # The dead process's lease runs out (it used the wall clock); then a new pass sends the rest.
    app.clock = FixedClock(datetime.now(UTC) + timedelta(minutes=5))
    drain(app)
    events = receiver.unique()
    assert sorted(p["data"]["n"] for p in events.values()) == list(range(150))
    # Sent again: at most those the dead process sent since it last recorded its outcomes
    # (every RECORD_EVERY), never the whole pass; receivers deduplicate by the event id, which
    # is the same on every attempt.
    assert len(receiver.posts) - len(events) <= RECORD_EVERY
    assert rows(app, HOOK_DELIVERED) == 150


def test_finished_deliveries_go_after_thirty_days(app: App, receiver: Receiver) -> None:
    register(app, receiver)
    with app.sessions.begin() as session:
        add(session, "fay@example.org", at=app.clock.now())
    drain(app)
    app.clock.advance(days=29)  # type: ignore[attr-defined]
    with app.sessions.begin() as session:
        assert purge(session, app.clock.now(), app.settings).webhook_deliveries == 0
    app.clock.advance(days=2)  # type: ignore[attr-defined]
    with app.sessions.begin() as session:
        assert purge(session, app.clock.now(), app.settings).webhook_deliveries == 1
    assert rows(app) == 0


@pytest.mark.postgres
def test_two_delivering_processes_on_postgresql_share_the_outbox_without_repeats(
        pg_url: str, tmp_path: Path, clock: FixedClock, receiver: Receiver) -> None:
    apps = [App.create(make_settings(tmp_path, database_url=pg_url, allow_local_links=True),
                       clock=clock) for _ in range(2)]
    init_db(apps[0].engine)
    try:
        register(apps[0], receiver)
        with apps[0].sessions.begin() as session:
            for n in range(60):
                emit(session, "edition.failed", {"n": n})
        receiver.delay = 0.01
        reports = []
        threads = [threading.Thread(target=lambda a=a: reports.append(deliver_due(a, batch=40)))
                   for a in apps]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(r.delivered for r in reports) == 60
        assert len(receiver.posts) == len(receiver.unique()) == 60
    finally:
        for app in apps:
            app.close()
