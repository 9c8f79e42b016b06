"""The scheduler: when it fires, what a restart does, and that every trigger sends once.

The first half is pure computation with a set clock (the trigger across the Europe/London clock
changes, the start-up decision, the alerts). The second half runs real processes: APScheduler
keeps its own real-time clock and fires at whole minutes, so those tests give the daemons a
clock a few seconds short of a whole minute (MAILER_NOW, less than a minute ahead of real
time) and wait those seconds for its send time.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from mailer import overrides
from mailer import scheduler as sched
from mailer.alerts import alert
from mailer.app import App
from mailer.cli import cli
from mailer.clock import FixedClock, send_datetime
from mailer.collect import collect
from mailer.db import init_db, make_engine
from mailer.edition import get_edition
from mailer.models import SENDING, SENT, SKIPPED, Delivery, Edition, SendLog, Subscriber
from mailer.preflight import spamassassin
from mailer.sample import SAMPLE_SUBSCRIBERS, write_sample_feed
from mailer.schedule import (
    DailyTrigger,
    build_trigger,
    due_day,
    fire_times,
    grace_seconds,
    next_run,
)
from mailer.scheduler import (
    COLLECT_JOB_ID,
    FOLLOW_JOB_ID,
    JOB_ID,
    JOBS_TABLE,
    TEST_JOB_ID,
    WEBHOOKS_JOB_ID,
    WEEKLY_JOB_ID,
    build_scheduler,
    plan_startup,
    run_daily,
    stored_next_run,
)
from mailer.subscribers import add
from tests.support.environ import bare_environ
from tests.support.settings import make_settings
from tests.support.smtpsink import SmtpSink

LONDON = ZoneInfo("Europe/London")
ROOT = Path(__file__).resolve().parent.parent
STAFF = "staff.alerts@example.org"


def london(*args: int) -> datetime:
    return datetime(*args, tzinfo=LONDON)  # type: ignore[misc]


def is_last_sunday(day: date) -> bool:
    return day.weekday() == 6 and (day + timedelta(days=7)).month != day.month


# ---- the trigger, with the clock set ---------------------------------------------------------

CLOCK_CHANGES = [
    # (last Sunday, UTC hour of 07:00 London before, after)
    (date(2026, 3, 29), 7, 6),
    (date(2026, 10, 25), 6, 7),
    (date(2027, 3, 28), 7, 6),
    (date(2027, 10, 31), 6, 7),
]


@pytest.mark.parametrize(("change", "utc_before", "utc_after"), CLOCK_CHANGES)
def test_fire_times_across_clock_changes_stay_at_local_send_time(
    tmp_path: Path, change: date, utc_before: int, utc_after: int
) -> None:
    assert is_last_sunday(change)
    settings = make_settings(tmp_path, send_days="mon-sun")
    start = datetime.combine(change - timedelta(days=3), datetime.min.time(), tzinfo=LONDON)
    fires = list(fire_times(settings, start, start + timedelta(days=7)))
    assert [f.date() for f in fires] == [start.date() + timedelta(days=i) for i in range(7)]
    for fire in fires:
        assert (fire.hour, fire.minute) == (7, 0)
        expected_utc = utc_before if fire.date() < change else utc_after
        assert fire.astimezone(UTC).hour == expected_utc, fire
        assert fire.astimezone(UTC) == send_datetime(fire.date(), (7, 0), LONDON)


@pytest.mark.parametrize(("change", "utc_before", "utc_after"), CLOCK_CHANGES)
def test_weekday_schedule_around_clock_changes(
    tmp_path: Path, change: date, utc_before: int, utc_after: int
) -> None:
    settings = make_settings(tmp_path)  # mon-fri 07:00, the default
    friday = change - timedelta(days=2)
    fire = next_run(settings, london(friday.year, friday.month, friday.day, 7, 0))
    monday = change + timedelta(days=1)
    assert fire is not None and fire.date() == monday
    assert (fire.hour, fire.minute) == (7, 0)
    assert fire.astimezone(UTC).hour == utc_after
    before = next_run(settings, london(friday.year, friday.month, friday.day, 6, 59))
    assert before is not None and before.date() == friday
    assert before.astimezone(UTC).hour == utc_before


def test_weekdays_get_exactly_one_run_each_over_two_years(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    start, end = london(2026, 1, 1), london(2028, 1, 1)
    fires = list(fire_times(settings, start, end))
    days = Counter(f.date() for f in fires)
    weekdays = {start.date() + timedelta(days=i) for i in range((end - start).days)
                if (start.date() + timedelta(days=i)).weekday() < 5}
    assert set(days) == weekdays  # no weekday without a run, no weekend with one
    assert max(days.values()) == 1  # no day with two
    assert all((f.hour, f.minute) == (7, 0) for f in fires)
    # The job asks "which edition is due now?" at each fire: always that day's.
    assert all(due_day(settings, f.astimezone(UTC)) == f.date() for f in fires)


@pytest.mark.parametrize("send_time", ["01:00", "01:30", "01:59", "02:00", "00:30"])
def test_send_times_in_the_changing_hour_still_fire_once_a_day(
    tmp_path: Path, send_time: str
) -> None:
    """01:30 happens twice on the last Sunday of October and not at all in March: still one
    run per day, at the instant the late-send guard calls "due"."""
    settings = make_settings(tmp_path, send_days="mon-sun", send_time=send_time)
    start, end = london(2026, 1, 1), london(2028, 1, 1)
    fires = list(fire_times(settings, start, end))
    days = Counter(f.date() for f in fires)
    assert len(days) == (end - start).days and max(days.values()) == 1
    for fire in fires:
        assert fire.astimezone(UTC) == send_datetime(fire.date(), settings.send_hour_minute,
                                                     LONDON)
        assert due_day(settings, fire.astimezone(UTC)) == fire.date()


def test_trigger_survives_the_job_store(tmp_path: Path) -> None:
    """The job store pickles the trigger: it must come back as the same once-a-day trigger."""
    settings = make_settings(tmp_path, send_days="mon-sun", send_time="01:30")
    trigger = pickle.loads(pickle.dumps(build_trigger(settings)))
    fire = trigger.get_next_fire_time(london(2026, 10, 25, 1, 30), london(2026, 10, 25, 1, 30))
    assert fire.date() == date(2026, 10, 26)


def test_a_trigger_for_a_clock_ahead_of_real_time_fires_at_that_clocks_send_time(
    tmp_path: Path
) -> None:
    """Under MAILER_NOW the daemon's clock runs `shift` ahead of APScheduler's real time: its
    triggers give the real instant at which that clock shows the send time, across a clock
    change too, and keep the shift through the job store."""
    settings = make_settings(tmp_path, send_days="mon-sun", send_time="02:30")
    shift = timedelta(minutes=50)
    trigger = pickle.loads(pickle.dumps(build_trigger(settings, shift)))
    spring = date(2026, 3, 29)  # 01:00 GMT becomes 02:00 BST
    # Midnight real is 00:50 on the clock: today's 02:30 BST comes 50 min of real time
    # earlier, 00:40 GMT (a wall-clock 01:40, inside the gap, would be an hour late).
    fire = trigger.get_next_fire_time(None, london(2026, 3, 29, 0, 0))
    assert fire.astimezone(UTC) == send_datetime(spring, (2, 30), LONDON) - shift
    assert fire.astimezone(UTC) == datetime(2026, 3, 29, 0, 40, tzinfo=UTC)
    again = trigger.get_next_fire_time(fire, fire)
    assert again.astimezone(UTC) == send_datetime(date(2026, 3, 30), (2, 30), LONDON) - shift
    # 02:00 BST real is 02:50 on the clock: today's has gone by on it.
    fire = trigger.get_next_fire_time(None, london(2026, 3, 29, 2, 0))
    assert fire.astimezone(UTC) == send_datetime(date(2026, 3, 30), (2, 30), LONDON) - shift
    unshifted = build_trigger(settings).get_next_fire_time(None, london(2026, 3, 29, 2, 0))
    assert unshifted.astimezone(UTC) == send_datetime(spring, (2, 30), LONDON)


def test_due_day(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    thursday = date(2026, 11, 26)
    assert due_day(settings, london(2026, 11, 26, 6, 59)) == thursday - timedelta(days=1)
    assert due_day(settings, london(2026, 11, 26, 7, 0)) == thursday
    assert due_day(settings, london(2026, 11, 26, 6, 57), timedelta(minutes=5)) == thursday
    assert due_day(settings, london(2026, 11, 30, 6, 0)) == date(2026, 11, 27)  # Mon -> Fri
    assert grace_seconds(settings) == 3 * 3600


# ---- the start-up decision -------------------------------------------------------------------


def make_app(tmp_path: Path, clock: FixedClock, **overrides: object) -> App:
    overrides.setdefault("staff_alerts", [STAFF])
    application = App.create(make_settings(tmp_path, **overrides), clock=clock)
    init_db(application.engine)
    return application


@pytest.fixture
def sched_app(tmp_path: Path, clock: FixedClock) -> Iterator[App]:
    application = make_app(tmp_path, clock)
    yield application
    application.close()


def set_edition(app: App, day: date, state: str) -> None:
    with app.sessions.begin() as session:
        due = send_datetime(day, (7, 0), LONDON)
        session.add(Edition(edition_date=day, state=state, window_start=due - timedelta(days=1),
                            window_end=due))


def test_startup_with_no_stored_job_never_catches_up_or_alerts(
    sched_app: App, clock: FixedClock
) -> None:
    clock.set(london(2026, 11, 26, 7, 30))
    assert plan_startup(sched_app, None).action == "none"
    clock.set(london(2026, 11, 26, 11, 0))
    assert plan_startup(sched_app, None).action == "none"


def test_startup_catches_up_within_the_grace_window(sched_app: App, clock: FixedClock) -> None:
    clock.set(london(2026, 11, 26, 9, 59))
    plan = plan_startup(sched_app, london(2026, 11, 26, 7, 0))
    assert (plan.action, plan.day) == ("catch-up", date(2026, 11, 26))


def test_startup_past_the_grace_window_reports_missed(sched_app: App, clock: FixedClock) -> None:
    clock.set(london(2026, 11, 26, 10, 1))
    plan = plan_startup(sched_app, london(2026, 11, 26, 7, 0))
    assert (plan.action, plan.day) == ("missed", date(2026, 11, 26))
    assert "past the 3.0h window" in plan.reason


def test_startup_after_a_long_outage_looks_at_the_latest_due_day(
    sched_app: App, clock: FixedClock
) -> None:
    clock.set(london(2026, 11, 30, 7, 10))  # Monday; the store still says last Wednesday
    plan = plan_startup(sched_app, london(2026, 11, 25, 7, 0))
    assert (plan.action, plan.day) == ("catch-up", date(2026, 11, 30))


@pytest.mark.parametrize("state", [SENT, SKIPPED, "cancelled", "paused"])
def test_startup_leaves_finished_editions_alone(
    sched_app: App, clock: FixedClock, state: str
) -> None:
    set_edition(sched_app, date(2026, 11, 26), state)
    clock.set(london(2026, 11, 26, 7, 30))
    assert plan_startup(sched_app, london(2026, 11, 26, 7, 0)).action == "none"


def test_startup_when_the_previous_process_already_ran_it(
    sched_app: App, clock: FixedClock
) -> None:
    clock.set(london(2026, 11, 26, 7, 30))
    assert plan_startup(sched_app, london(2026, 11, 27, 7, 0)).action == "none"


def test_startup_finishes_a_send_interrupted_by_a_kill(sched_app: App, clock: FixedClock) -> None:
    """Killed mid-send: the store already shows tomorrow, the edition says "sending"."""
    set_edition(sched_app, date(2026, 11, 26), SENDING)
    clock.set(london(2026, 11, 26, 7, 30))
    assert plan_startup(sched_app, london(2026, 11, 27, 7, 0)).action == "catch-up"
    clock.set(london(2026, 11, 26, 12, 0))
    assert plan_startup(sched_app, london(2026, 11, 27, 7, 0)).action == "missed"


def test_a_send_time_moved_earlier_past_todays_run_is_not_skipped(
    sched_app: App, clock: FixedClock
) -> None:
    """Staff move 09:00 to 07:00 at 08:00: the old run (09:00) will not come, the new one has
    gone by. Today's edition is due, not silently skipped till tomorrow."""
    clock.set(london(2026, 11, 26, 8, 0))  # the app's send time is 07:00 now
    plan = plan_startup(sched_app, london(2026, 11, 26, 9, 0))  # the old schedule's next run
    assert (plan.action, plan.day) == ("catch-up", date(2026, 11, 26))
    assert "the send time has moved to before now" in plan.reason
    assert "60 min late, within the 3.0h window" in plan.reason
    clock.set(london(2026, 11, 26, 11, 0))  # moved from 18:00, past the grace window
    plan = plan_startup(sched_app, london(2026, 11, 26, 18, 0))
    assert (plan.action, plan.day) == ("missed", date(2026, 11, 26))
    assert "past the 3.0h window" in plan.reason


def test_a_send_time_moved_while_todays_run_is_still_ahead_is_no_catch_up(
    sched_app: App, clock: FixedClock
) -> None:
    clock.set(london(2026, 11, 26, 6, 0))  # moved from 09:00 to 07:00 before either
    assert plan_startup(sched_app, london(2026, 11, 26, 9, 0)).action == "none"
    clock.set(london(2026, 11, 26, 8, 0))  # today's run already went: tomorrow's is next
    assert plan_startup(sched_app, london(2026, 11, 27, 9, 0)).action == "none"
    set_edition(sched_app, date(2026, 11, 26), SENT)  # moved earlier, but today's went by hand
    assert plan_startup(sched_app, london(2026, 11, 26, 9, 0)).action == "none"


def local_time(moment: datetime) -> str:
    return f"{moment.astimezone(LONDON):%H:%M}"


def test_the_running_daemon_follows_a_send_time_changed_in_the_console(
    tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real APScheduler (started paused: it keeps real time, our decisions keep the test
    clock). Configured 09:00; at 08:00 staff save 07:00: the daily job moves at once, and
    today's edition, whose old run will not come, goes out now. Resetting the override moves
    the job back without a restart."""
    app = make_app(tmp_path, clock, send_time="09:00")
    scheduler = sched.build_scheduler(app, app.engine)
    runner = threading.Thread(target=scheduler.start, kwargs={"paused": True}, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while not scheduler.running and time.monotonic() < deadline:
            time.sleep(0.01)
        daily = scheduler.get_job(sched.JOB_ID)
        before = daily.next_run_time.astimezone(LONDON)
        assert local_time(before) == "09:00"
        day = before.date()
        clock.set(before - timedelta(hours=1))  # 08:00 on the day the old run is for
        follower = scheduler.get_job(sched.FOLLOW_JOB_ID).func
        assert follower.check() is None  # nothing changed: nothing done
        add_subscribers(app, SAMPLE_SUBSCRIBERS)
        write_sample_feed(Path(app.settings.feed_url), clock.now() - timedelta(hours=1))
        with app.sessions.begin() as session:
            overrides.save_override(session, app.configured, app.settings, "send_time", "07:00")

        plan = follower.check()
        assert plan is not None and (plan.action, plan.day) == ("catch-up", day)
        assert local_time(scheduler.get_job(sched.JOB_ID).next_run_time) == "07:00"
        assert scheduler.get_job("catch-up").args == (str(day),)
        assert follower.check() is None  # a second look changes nothing

        monkeypatch.setattr(sched, "_APP", app)  # (what `mailer scheduler` sets for its jobs)
        scheduler.resume()  # the catch-up job runs, as in the daemon
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with app.sessions() as session:
                edition = get_edition(session, day)
            # (the late alert goes out after the edition is marked sent: wait for both)
            if edition is not None and edition.state == SENT and alerts_in(app):
                break
            time.sleep(0.1)
        recipients = Counter(str(m["To"]).split("<")[-1].rstrip(">") for m in outbox(app)
                             if not m["X-Mailer-Alert"])
        assert recipients == Counter(e for e, _ in SAMPLE_SUBSCRIBERS)
        assert alerts_in(app) == [f"[LabourList mailer] edition {day} sent late"]

        with app.sessions.begin() as session:
            overrides.clear_overrides(session)  # "Reset everything"
        plan = follower.check()
        assert plan is not None and plan.action == "none"  # (today's went)
        assert local_time(scheduler.get_job(sched.JOB_ID).next_run_time) == "09:00"
        assert app.settings.send_time == "09:00"
    finally:
        scheduler.shutdown(wait=True)
        runner.join(10)
        app.close()


# ---- the job's outcomes and the alerts -------------------------------------------------------


def outbox(app: App) -> list:  # type: ignore[type-arg]
    directory = Path(app.settings.dsn.removeprefix("file://"))
    return [message_from_bytes(p.read_bytes()) for p in sorted(directory.glob("*.eml"))]


def alerts_in(app: App) -> list[str]:
    return [str(m["Subject"]) for m in outbox(app) if m["X-Mailer-Alert"]]


def collect_every(app: App, minutes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Turn background collection on or off, here and in jobs that load their own settings."""
    monkeypatch.setenv("MAILER_COLLECT_EVERY_MINUTES", str(minutes))
    app.settings = app.settings.replace(collect_every_minutes=minutes)


def add_subscribers(app: App, people: list[tuple[str, str]]) -> None:
    with app.sessions.begin() as session:
        for email, name in people:
            add(session, email, name=name, source="test")


def test_feed_error_alerts_staff_and_sends_nothing(sched_app: App, clock: FixedClock) -> None:
    add_subscribers(sched_app, SAMPLE_SUBSCRIBERS)
    clock.set(london(2026, 11, 26, 7, 0))
    report = run_daily(sched_app, date(2026, 11, 26))  # the feed file does not exist
    assert (report.status, report.ok) == ("feed-error", False)
    assert alerts_in(sched_app) == ["[LabourList mailer] edition 2026-11-26 NOT sent: feed error"]
    [message] = outbox(sched_app)
    assert message["To"] == STAFF and message["Auto-Submitted"] == "auto-generated"
    assert "no such file" in message.get_payload(decode=True).decode()
    with sched_app.sessions() as session:
        assert session.scalar(select(SendLog.kind)) == "alert"


def test_no_articles_skips_and_alerts_once(sched_app: App, clock: FixedClock) -> None:
    add_subscribers(sched_app, SAMPLE_SUBSCRIBERS)
    write_sample_feed(Path(sched_app.settings.feed_url), clock.now() - timedelta(days=20))
    clock.set(london(2026, 11, 26, 7, 0))
    assert run_daily(sched_app, date(2026, 11, 26)).status == "skipped"
    assert run_daily(sched_app, date(2026, 11, 26)).status == "skipped"
    assert alerts_in(sched_app) == [
        "[LabourList mailer] edition 2026-11-26 skipped: no articles"
    ]


def test_the_scheduled_send_starts_spamassassin_ahead(sched_app: App,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Like `mailer send`: the daily job starts SpamAssassin before it fetches the feed, and
    the preflight check uses that one (or, without SpamAssassin, runs as before)."""
    started: list[tuple[str, object]] = []
    real_start = spamassassin._start_warm

    def spy(command: str) -> object:
        warm = real_start(command)
        started.append((command, warm))
        return warm

    monkeypatch.setattr(spamassassin, "_start_warm", spy)
    monkeypatch.setattr(spamassassin, "_spam_cache", {})  # (another test may have scored it)
    add_subscribers(sched_app, SAMPLE_SUBSCRIBERS)
    write_sample_feed(Path(sched_app.settings.feed_url), london(2026, 11, 26, 6, 30))
    assert run_daily(sched_app, date(2026, 11, 26)).status == "sent"
    assert [command for command, _ in started] == [
        spamassassin.configured_command(sched_app.settings)]
    warm = started[0][1]
    if warm is not None:  # (SpamAssassin installed: it answered the check itself)
        assert warm.proc.returncode == 0  # type: ignore[attr-defined]
    assert spamassassin._warm is None  # nothing left running


def test_a_refused_late_send_alerts(sched_app: App, clock: FixedClock) -> None:
    add_subscribers(sched_app, SAMPLE_SUBSCRIBERS)
    clock.set(london(2026, 11, 26, 10, 30))
    write_sample_feed(Path(sched_app.settings.feed_url), london(2026, 11, 26, 6, 30))
    report = run_daily(sched_app, date(2026, 11, 26))
    assert report.status == "late" and "3.5 hours ago" in report.message
    # The whole fix, in one line:
    assert report.message.endswith('; to send it anyway: mailer send --date 2026-11-26 --force '
                                   '--reason "why it is late"')
    assert alerts_in(sched_app) == ["[LabourList mailer] edition 2026-11-26 NOT sent: too late"]


def test_a_late_but_allowed_send_goes_out_and_alerts(sched_app: App, clock: FixedClock) -> None:
    add_subscribers(sched_app, SAMPLE_SUBSCRIBERS)
    write_sample_feed(Path(sched_app.settings.feed_url), london(2026, 11, 26, 6, 30))
    clock.set(london(2026, 11, 26, 7, 40))
    assert run_daily(sched_app, date(2026, 11, 26)).status == "sent"
    assert alerts_in(sched_app) == ["[LabourList mailer] edition 2026-11-26 sent late"]
    assert len(outbox(sched_app)) == len(SAMPLE_SUBSCRIBERS) + 1


@pytest.mark.parametrize("minutes", [0, 30])
def test_a_feed_outage_at_send_time_with_collection_ahead_still_sends(
    sched_app: App, clock: FixedClock, monkeypatch: pytest.MonkeyPatch, minutes: int
) -> None:
    collect_every(sched_app, minutes, monkeypatch)
    add_subscribers(sched_app, SAMPLE_SUBSCRIBERS)
    feed = Path(sched_app.settings.feed_url)
    clock.set(london(2026, 11, 26, 6, 40))
    write_sample_feed(feed, clock.now())
    collect(sched_app)
    feed.unlink()  # the feed goes down at 06:59
    clock.set(london(2026, 11, 26, 7, 0))
    report = run_daily(sched_app, date(2026, 11, 26))
    if not minutes:  # no collection ahead: nothing is sent
        assert report.status == "feed-error"
        assert len(outbox(sched_app)) == 1
    else:
        assert report.status == "sent"
        assert alerts_in(sched_app) == [
            "[LabourList mailer] edition 2026-11-26 sent without a fresh feed"]
        assert len(outbox(sched_app)) == len(SAMPLE_SUBSCRIBERS) + 1


def test_alert_never_raises_and_is_recorded(tmp_path: Path, clock: FixedClock) -> None:
    app = make_app(tmp_path, clock, dsn="nosuch+api://key@default")
    try:
        assert alert(app, "test subject", "body") is False
        with app.sessions() as session:
            [row] = session.scalars(select(SendLog)).all()
        assert row.kind == "alert" and "NOT DELIVERED" in row.detail
    finally:
        app.close()


def test_alert_with_once_key_is_sent_once(sched_app: App) -> None:
    assert alert(sched_app, "missed", "body", once_key="missed:2026-11-26") is True
    assert alert(sched_app, "missed", "body", once_key="missed:2026-11-26") is False
    assert len(alerts_in(sched_app)) == 1


# ---- `mailer status` and `mailer scheduler --once-now` ---------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key in list(os.environ):
        if key.startswith("MAILER_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MAILER_DNS_CHECK", "0")  # (no test looks a real domain up)
    env = {
        "MAILER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "MAILER_DSN": f"file://{tmp_path / 'outbox'}",
        "MAILER_FEED_URL": str(tmp_path / "feed.xml"),
        "MAILER_SECRET_KEY": "test-secret",
        "MAILER_BASE_URL": "https://mail.example.org",
        "MAILER_STAFF_ALERTS": STAFF,
        "MAILER_NOW": "2026-03-27T12:00:00Z",  # a Friday; the clocks change on Sunday
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_status_healthy_reports_next_run_in_local_time_and_utc(cli_env: dict[str, str]) -> None:
    assert run_cli("init")[0] == 0
    code, out = run_cli("status", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"] is True and report["problems"] == []
    assert report["next_run"]["local"] == "2026-03-30T07:00+01:00"
    assert report["next_run"]["utc"] == "2026-03-30T06:00+00:00"
    assert report["database"]["reachable"] is True
    assert report["transport"]["reachable"] is True
    assert not (Path(cli_env["MAILER_DSN"].removeprefix("file://"))).exists()  # not created
    code, out = run_cli("status")
    assert code == 0 and "next run: Mon 2026-03-30 07:00 BST (06:00 UTC)" in out


def test_status_counts_waiting_articles_and_reports_the_last_edition(
    cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILER_NOW", "2026-03-27T06:00:00Z")  # an hour before the send
    run_cli("init")
    write_sample_feed(Path(cli_env["MAILER_FEED_URL"]), datetime(2026, 3, 27, 6, tzinfo=UTC))
    assert run_cli("subscribers", "add", "reader@example.org")[0] == 0
    assert run_cli("collect")[0] == 0
    code, out = run_cli("status", "--json")
    report = json.loads(out)
    assert code == 0, out
    assert report["next_run"]["edition_date"] == "2026-03-27"
    assert report["feed"]["articles_waiting"] > 0 and report["feed"]["state"] == "ok"
    assert report["feed"]["last_fetch_at"].startswith("2026-03-27T06:00")
    monkeypatch.setenv("MAILER_NOW", "2026-03-27T07:00:10Z")
    assert run_cli("send")[0] == 0
    report = json.loads(run_cli("status", "--json")[1])
    assert report["last_edition"]["date"] == "2026-03-27"
    assert report["last_edition"]["state"] == SENT
    assert report["last_edition"]["counts"]["sent"] == 1
    assert report["feed"]["articles_waiting"] == 0


def test_status_fails_on_feed_error(cli_env: dict[str, str]) -> None:
    run_cli("init")
    run_cli("collect")  # no feed file
    code, out = run_cli("status")
    assert code == 1 and "PROBLEM: last feed fetch failed" in out


def test_status_fails_when_the_database_is_down(cli_env: dict[str, str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none")
    code, out = run_cli("status", "--json")
    report = json.loads(out)
    assert code == 1 and report["database"]["reachable"] is False
    assert report["problems"][0].startswith("database unreachable")


def test_status_fails_when_the_transport_is_unreachable(cli_env: dict[str, str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    run_cli("init")
    monkeypatch.setenv("MAILER_DSN", "smtp://user:secret@127.0.0.1:9?tls=0&timeout=3")
    code, out = run_cli("status", "--json")
    report = json.loads(out)
    assert code == 1 and report["transport"]["reachable"] is False
    assert "secret" not in out


def test_status_fails_on_a_stopped_send(cli_env: dict[str, str]) -> None:
    run_cli("init")
    app = App.create()
    try:
        set_edition(app, date(2026, 3, 27), SENDING)
    finally:
        app.close()
    code, out = run_cli("status")
    assert code == 1 and "stopped mid-send" in out


def test_scheduler_once_now_sends_then_says_already_sent(cli_env: dict[str, str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_NOW", "2026-03-27T07:00:30Z")  # 07:00 GMT, the send time
    run_cli("init")
    write_sample_feed(Path(cli_env["MAILER_FEED_URL"]), datetime(2026, 3, 27, 7, tzinfo=UTC))
    run_cli("subscribers", "add", "reader@example.org")
    code, out = run_cli("scheduler", "--once-now")
    assert code == 0 and "sent 1" in out
    code, out = run_cli("scheduler", "--once-now")
    assert code == 0 and "already sent" in out


# ---- real processes ------------------------------------------------------------------------


def clean_env(**values: str) -> dict[str, str]:
    env = bare_environ()
    env.update(values)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Daemon:
    """`python -m mailer scheduler` in the background, its output in a file; its clock
    (MAILER_NOW) is real time moved ahead by `shift` (`shifted_minute`)."""

    def __init__(self, env: dict[str, str], log_path: Path,
                 shift: timedelta = timedelta(0)) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        if shift:
            env = {**env, "MAILER_NOW": (datetime.now(UTC) + shift).isoformat()}
        self.proc = subprocess.Popen([sys.executable, "-m", "mailer", "scheduler"], env=env,
                                     cwd=log_path.parent, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, text: str, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if self.proc.poll() is not None:
                return text in self.output()
            time.sleep(0.1)
        return False

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        finally:
            self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._log.close()


def next_minute(margin: float = 10.0) -> datetime:
    """The first whole minute of London time at least `margin` seconds from now."""
    now = datetime.now(LONDON)
    return (now + timedelta(seconds=margin)).replace(second=0, microsecond=0) + timedelta(
        minutes=1)


def shifted_minute(margin: float) -> tuple[datetime, timedelta]:
    """A whole minute of London time, and the shift (0 to 60 s) that brings a clock running
    that far ahead of real time to `margin` seconds before it: daemons given that clock
    (`Daemon(shift=...)`) reach their send time in `margin` seconds."""
    now = datetime.now(UTC)
    fire = next_minute(margin)
    return fire, fire - timedelta(seconds=margin) - now


def seconds_until(moment: datetime, shift: timedelta = timedelta(0)) -> float:
    """Real seconds until a clock running `shift` ahead of real time shows `moment`."""
    return (moment - shift - datetime.now(UTC)).total_seconds()


def sleep_until(moment: datetime, shift: timedelta = timedelta(0)) -> None:
    time.sleep(max(0.0, seconds_until(moment, shift)))


def prepare(database_url: str, tmp_path: Path, name: str,
            people: list[tuple[str, str]]) -> tuple[Path, int]:
    """A database with subscribers and a feed file dated now; returns (feed path, edition count)."""
    feed = tmp_path / f"{name}-feed.xml"
    app = App.create(make_settings(tmp_path, database_url=database_url, feed_url=str(feed)))
    try:
        init_db(app.engine)
        add_subscribers(app, people)
    finally:
        app.close()
    write_sample_feed(feed, datetime.now(UTC))
    return feed, len(people)


def daemon_env(database_url: str, feed: Path, sink: SmtpSink, fire: datetime,
               late_hours: float = 3.0) -> dict[str, str]:
    return clean_env(
        MAILER_DATABASE_URL=database_url, MAILER_FEED_URL=str(feed), MAILER_DSN=sink.dsn,
        MAILER_SECRET_KEY="test-secret", MAILER_BASE_URL="https://mail.example.org",
        MAILER_TIMEZONE="Europe/London", MAILER_SEND_TIME=f"{fire:%H:%M}",
        MAILER_SEND_DAYS="mon-sun", MAILER_LATE_SEND_HOURS=str(late_hours),
        MAILER_STAFF_ALERTS=STAFF,
    )


def edition_row(database_url: str, tmp_path: Path, day: date) -> tuple[str | None, int]:
    app = App.create(make_settings(tmp_path, database_url=database_url))
    try:
        with app.sessions() as session:
            edition = get_edition(session, day)
            if edition is None:
                return None, 0
            sent = session.scalar(select(func.count()).where(
                Delivery.edition_id == edition.id, Delivery.state == "sent")) or 0
            return edition.state, sent
    finally:
        app.close()


def subscriber_recipients(sink: SmtpSink) -> Counter[str]:
    return Counter(r for r in sink.recipients() if r != STAFF)


def _real_scheduler_sends_once_stops_cleanly_and_a_restart_does_not_repeat(
    tmp_path: Path
) -> None:
    """The daemon starts with a send time hours away; staff save the next minute in the
    console (the `meta` row the settings page writes) and, with no restart, it fires then and
    sends the edition once; SIGTERM in the middle of the send lets it finish and exits 0;
    started again inside the grace window it sends nothing."""
    db = f"sqlite:///{tmp_path / 'daemon.db'}"
    feed, count = prepare(db, tmp_path, "daemon", SAMPLE_SUBSCRIBERS)
    fire, shift = shifted_minute(15)
    configured = fire + timedelta(hours=6)
    with SmtpSink(data_delay=0.4) as sink:  # slow enough to signal mid-send
        env = {**daemon_env(db, feed, sink, configured), "MAILER_CONNECTIONS": "1",
               "MAILER_SETTINGS_CHECK_SECONDS": "0.5"}
        first = Daemon(env, tmp_path / "first.log", shift)
        try:
            assert first.wait_for("scheduler started", 20), first.output()
            assert f"next run {configured:%Y-%m-%d %H:%M}" in first.output()
            app = App.create(make_settings(tmp_path, database_url=db))
            try:
                with app.sessions.begin() as session:
                    overrides.save_override(session, app.settings, app.settings, "send_time",
                                            f"{fire:%H:%M}")
            finally:
                app.close()
            assert first.wait_for(f"next run {fire:%Y-%m-%d %H:%M}", 10), first.output()
            assert "schedule changed" in first.output()
            assert not sink.messages  # not before its minute
            wait = seconds_until(fire, shift) + 30
            assert sink.wait_for(1, timeout=wait), first.output()
            assert first.terminate() == 0, first.output()
            assert len(sink.messages) == count  # the send finished before the exit
            log = first.output()
            assert log.index("SIGTERM received") < log.index(f"sent {count}") < log.index(
                "scheduler stopped")
            assert subscriber_recipients(sink) == Counter(e for e, _ in SAMPLE_SUBSCRIBERS)
            assert STAFF not in sink.recipients()  # on time: no alert
            assert edition_row(db, tmp_path, fire.date()) == (SENT, count)
            assert "schedule: edition" in log

            second = Daemon(env, tmp_path / "second.log", shift)
            try:
                assert second.wait_for("scheduler started", 20), second.output()
                time.sleep(3)
                assert len(sink.messages) == count, second.output()
                assert "catch-up" not in second.output()
            finally:
                second.stop()  # SIGKILL: nothing of value is lost either way
        finally:
            first.stop()


def _restart_after_a_kill_catches_up_within_grace_and_alerts_after_it(
    tmp_path: Path
) -> None:
    """Two schedulers killed before their send time: one restarted a moment after it (it
    sends, once), one restarted after its grace window (it sends nothing and alerts)."""
    db_in = f"sqlite:///{tmp_path / 'within.db'}"
    db_out = f"sqlite:///{tmp_path / 'after.db'}"
    feed_in, count = prepare(db_in, tmp_path, "within", SAMPLE_SUBSCRIBERS)
    feed_out, _ = prepare(db_out, tmp_path, "after", SAMPLE_SUBSCRIBERS)
    fire, shift = shifted_minute(12)
    grace_hours = 0.001  # 3.6 s
    with SmtpSink() as sink_in, SmtpSink() as sink_out:
        env_in = daemon_env(db_in, feed_in, sink_in, fire, late_hours=0.05)
        env_out = daemon_env(db_out, feed_out, sink_out, fire, late_hours=grace_hours)
        daemons = [Daemon(env_in, tmp_path / "in-1.log", shift),
                   Daemon(env_out, tmp_path / "out-1.log", shift)]
        try:
            for daemon in daemons:
                assert daemon.wait_for("scheduler started", 20), daemon.output()
            assert seconds_until(fire, shift) > 2, "too slow to start"
            for daemon in daemons:
                daemon.kill()
            sleep_until(fire + timedelta(seconds=2), shift)
            daemons.append(Daemon(env_in, tmp_path / "in-2.log", shift))
            sleep_until(fire + timedelta(seconds=grace_hours * 3600 + 3), shift)
            daemons.append(Daemon(env_out, tmp_path / "out-2.log", shift))
            within, after = daemons[2], daemons[3]

            assert sink_in.wait_for(count, timeout=30), within.output()
            assert sink_out.wait_for(1, timeout=30), after.output()
            time.sleep(2)
            assert subscriber_recipients(sink_in) == Counter(e for e, _ in SAMPLE_SUBSCRIBERS)
            assert STAFF not in sink_in.recipients()
            assert "catch-up" in within.output()
            assert edition_row(db_in, tmp_path, fire.date()) == (SENT, count)

            assert sink_out.recipients() == [STAFF]
            subject = str(sink_out.messages[0].message["Subject"])
            assert "NOT sent: scheduled run missed" in subject
            assert edition_row(db_out, tmp_path, fire.date())[0] != SENT
            assert after.proc.poll() is None  # still the daemon, waiting for tomorrow
            for daemon in (within, after):
                assert daemon.terminate() == 0, daemon.output()
        finally:
            for daemon in daemons:
                daemon.stop()


@pytest.mark.slow
def test_real_daemons_follow_the_console_survive_kills_and_catch_up(tmp_path: Path) -> None:
    """The two scenarios of the real daemon, side by side: each waits for its send time to
    come, so they share one wait instead of queueing for two. Each has its own database,
    feed, sink and daemons."""
    scenarios = (_real_scheduler_sends_once_stops_cleanly_and_a_restart_does_not_repeat,
                 _restart_after_a_kill_catches_up_within_grace_and_alerts_after_it)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = []
        for n, scenario in enumerate(scenarios):
            (tmp_path / f"s{n}").mkdir()
            futures.append(pool.submit(scenario, tmp_path / f"s{n}"))
        for future in futures:
            future.result()


# Each process loads the mailer, says "ready" and waits for the test's "go" on stdin, so the
# three start their runs at the same moment, however long each took to start.
LAUNCH = """
import sys
from mailer.cli import main
import mailer.scheduler
print("ready", flush=True)
sys.stdin.readline()
if sys.argv[1] == "job":
    status = mailer.scheduler.daily_send()
    print("job:", status)
    sys.exit(0 if status in mailer.scheduled_run.OK_STATUSES else 1)
sys.argv = ["mailer", "send"]
main()
"""


def until_ready(proc: subprocess.Popen[str]) -> str:
    """Read `LAUNCH`'s output up to its "ready" line; what came before it (warnings)."""
    assert proc.stdout is not None
    before = ""
    while (line := proc.stdout.readline()) != "ready\n":
        assert line, f"exited before it was ready: {before}"
        before += line
    return before


@pytest.mark.slow
def test_scheduler_job_and_two_cron_sends_at_once_send_one_edition(
    database_url: str, tmp_path: Path
) -> None:
    people = [(f"reader{i:02d}@example.org", f"Reader {i}") for i in range(40)]
    now = datetime.now(LONDON)
    if (now + timedelta(seconds=20)).date() != now.date():  # keep all three on one day
        time.sleep(25)
    feed, count = prepare(database_url, tmp_path, "race", people)
    due = datetime.now(LONDON).replace(second=0, microsecond=0)
    with SmtpSink() as sink:
        env = daemon_env(database_url, feed, sink, due)
        procs = [subprocess.Popen([sys.executable, "-c", LAUNCH, kind], env=env, cwd=tmp_path,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
                 for kind in ("job", "send", "send")]
        early = [until_ready(p) for p in procs]
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [before + p.communicate(timeout=90)[0] for before, p in zip(early, procs,
                                                                             strict=True)]
        assert [p.returncode for p in procs] == [0, 0, 0], outputs
        assert sink.wait_for(count, timeout=10)
        time.sleep(1)
        assert subscriber_recipients(sink) == Counter(e for e, _ in people)
        assert STAFF not in sink.recipients()
    sent = [o for o in outputs if "job: sent" in o or ": sent 40" in o]
    assert len(sent) == 1, outputs
    others = [o for o in outputs if o not in sent]
    assert all("already" in o for o in others), outputs  # "already being sent" / "already sent"
    app = App.create(make_settings(tmp_path, database_url=database_url))
    try:
        with app.sessions() as session:
            assert session.scalar(select(func.count()).select_from(Edition)) == 1
            assert session.scalar(select(Edition.state)) == SENT
            assert session.scalar(select(func.count()).select_from(Delivery)) == count
            assert session.scalar(select(func.count()).select_from(Subscriber)) == count
    finally:
        app.close()


def test_scheduler_wiring(sched_app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    collect_every(sched_app, 15, monkeypatch)
    scheduler = build_scheduler(sched_app, sched_app.engine)
    jobs = {job.id: job for job in scheduler.get_jobs()}
    # (the weekly digest is offered by default, so its job is there too)
    assert set(jobs) == {JOB_ID, TEST_JOB_ID, WEEKLY_JOB_ID, COLLECT_JOB_ID, FOLLOW_JOB_ID,
                         WEBHOOKS_JOB_ID}
    assert jobs[FOLLOW_JOB_ID].trigger.interval == timedelta(seconds=60)  # type: ignore[attr-defined]
    assert jobs[WEBHOOKS_JOB_ID].trigger.interval == timedelta(seconds=5)  # type: ignore[attr-defined]
    assert jobs[WEBHOOKS_JOB_ID].func_ref == "mailer.scheduler:deliver_webhooks"
    daily = jobs[JOB_ID]
    assert isinstance(daily.trigger, DailyTrigger)
    assert (daily.coalesce, daily.max_instances, daily.misfire_grace_time) == (True, 1, 3 * 3600)
    assert daily.func_ref == "mailer.scheduler:daily_send"  # a textual reference, for the store
    collect_every(sched_app, 0, monkeypatch)
    assert {job.id for job in build_scheduler(sched_app, sched_app.engine).get_jobs()} == {
        JOB_ID, TEST_JOB_ID, WEEKLY_JOB_ID, FOLLOW_JOB_ID, WEBHOOKS_JOB_ID}


@pytest.mark.slow
def test_the_job_store_lives_in_our_database(database_url: str, tmp_path: Path) -> None:
    """Started on SQLite or PostgreSQL, the daemon stores its jobs there; a restart with the
    collection turned off drops that job; SIGTERM stops an idle daemon at once with status 0."""
    feed, _ = prepare(database_url, tmp_path, "store", SAMPLE_SUBSCRIBERS[:1])
    fire = datetime.now(LONDON) + timedelta(hours=2)
    with SmtpSink() as sink:
        env = daemon_env(database_url, feed, sink, fire)
        engine = make_engine(database_url)
        try:
            always = {JOB_ID, TEST_JOB_ID, WEEKLY_JOB_ID}  # (the weekly digest is on by default)
            for minutes, expected in (("5", always | {COLLECT_JOB_ID}), ("0", always)):
                daemon = Daemon({**env, "MAILER_COLLECT_EVERY_MINUTES": minutes},
                                tmp_path / f"store-{minutes}.log")
                try:
                    assert daemon.wait_for("scheduler started", 20), daemon.output()
                    assert daemon.terminate() == 0, daemon.output()
                finally:
                    daemon.stop()
                with engine.connect() as conn:
                    ids = {row[0] for row in conn.exec_driver_sql(f"SELECT id FROM {JOBS_TABLE}")}
                assert ids == expected
                stored = stored_next_run(engine)
                assert stored is not None
                assert stored.astimezone(LONDON).strftime("%H:%M") == f"{fire:%H:%M}"
        finally:
            engine.dispose()
