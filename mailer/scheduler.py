"""`mailer scheduler`: APScheduler 3 wiring for the sends (daily, weekly digest), nothing else.

The send itself is `pipeline.run_send`, the same code `mailer send` runs from cron: it takes the
run lock, refuses a late send and never sends an edition twice. This module only decides *when*
to call it and what to tell staff afterwards:

* a `DailyTrigger` (a `CronTrigger` on send_days at send_time in the configured time zone) that
  fires exactly once per local calendar day, clock changes included (and one on `weekly_send`
  for the weekly digest when it is offered; its schedule is read at start);
* the job lives in our database (`SQLAlchemyJobStore`, table ``apscheduler_jobs``), with
  ``coalesce``, ``max_instances=1`` and a ``misfire_grace_time`` equal to the late-send guard;
* at start-up the job stored by the previous process tells us whether a run fell due while no
  scheduler was running. Within the grace window we catch up (once: the edition state and the
  run lock see to that); past it we do not send, we alert staff. This check is explicit because
  APScheduler cannot do it for us: ``replace_existing`` recomputes the next run from "now", and a
  misfire past the grace time is merely logged;
* an optional feed collection every N minutes, so a feed outage at 06:59 does not cost the day;
* every `settings_check_seconds` the console's settings are re-read (`ScheduleFollower`): a new
  send time or new send days move the daily job at once, and a time moved earlier past a run
  still to come today is treated like a run that fell due while stopped.

APScheduler keeps its own real-time clock; `app.clock` (and MAILER_NOW) is used for everything
we decide ourselves. Under MAILER_NOW the triggers are shifted by the clock's offset, so the
daemon fires at the send time of the clock it was given; the job store keeps real instants
(`on_clock` reads them on the app's clock).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_SCHEDULER_STARTED,
    JobExecutionEvent,
    SchedulerEvent,
)
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import STATE_STOPPED
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import Engine, MetaData, Table, delete, inspect, select

from mailer import triggers
from mailer.alerts import alert
from mailer.app import App
from mailer.collect import collect
from mailer.db import make_engine, require_schema
from mailer.edition import get_edition, send_instant
from mailer.errors import FeedError
from mailer.locks import holder_alive
from mailer.models import (
    CANCELLED,
    PAUSED_SEND,
    SENDING,
    SENT,
    SKIPPED,
    WEEKLY,
    RunLock,
)
from mailer.outgoing.delivery import drain
from mailer.overrides import refresh
from mailer.schedule import (
    build_trigger,
    due_day,
    grace_seconds,
    moved,
    schedule_of,
    subject_test_trigger,
    weekly_trigger,
)
from mailer.scheduled_run import RunReport, both_times, edition_state, run_daily
from mailer.subject_test import planned_templates

log = logging.getLogger("mailer.scheduler")

JOB_ID = "daily-send"
WEEKLY_JOB_ID = "weekly-send"
TEST_JOB_ID = "subject-test"
COLLECT_JOB_ID = "collect-feed"
FOLLOW_JOB_ID = "follow-schedule"
WEBHOOKS_JOB_ID = "deliver-webhooks"
JOBS_TABLE = "apscheduler_jobs"
# A scheduled job may start a little before its instant by our clock (NTP steps, MAILER_NOW):
# it still means that day's edition, never the previous one.
DUE_SLACK = timedelta(minutes=5)

# The App of the running `mailer scheduler` process; jobs run without one build their own.
_APP: App | None = None


# ---- what the jobs do ----------------------------------------------------------------------


def daily_send() -> str:
    """The scheduled job. Module-level so the job store can keep a textual reference to it."""
    app, owned = _job_app()
    try:
        day = due_day(app.settings, app.clock.now(), DUE_SLACK) or app.clock.today(app.settings.tz)
        return run_daily(app, day).status
    finally:
        if owned:
            app.close()


def weekly_send() -> str:
    """The weekly digest's scheduled job (only when `weekly_digest` is on)."""
    app, owned = _job_app()
    try:
        return run_daily(app, app.clock.today(app.settings.tz), kind=WEEKLY).status
    finally:
        if owned:
            app.close()


def subject_test_send() -> str:
    """The subject test's job, `test_minutes` before the daily send: the test groups go
    when a test is planned for the day's edition (settings or edition page), else nothing."""
    app, owned = _job_app()
    try:
        refresh(app)
        day = app.clock.today(app.settings.tz)
        with app.sessions() as session:
            edition = get_edition(session, day)
            if not planned_templates(app.settings, edition):
                log.info("subject test: none planned for edition %s", day)
                return "no-test"
        return run_daily(app, day, trigger="subject-test", test_phase=True).status
    finally:
        if owned:
            app.close()


def catch_up_send(day_iso: str) -> str:
    """The one-off job that makes up a run that fell due while no scheduler was running."""
    app, owned = _job_app()
    try:
        return run_daily(app, date.fromisoformat(day_iso), trigger="catch-up").status
    finally:
        if owned:
            app.close()


def collect_feed() -> None:
    """The optional background collection: keeps articles (and feed health) fresh."""
    app, owned = _job_app()
    try:
        result = collect(app)
        if result.not_modified:
            log.info("collect: feed not modified")
        else:
            log.info("collect: %d new, %d updated", result.new, result.updated)
    except FeedError as exc:
        # Recorded in FeedState (mailer status shows it); the send alerts if it still fails.
        log.warning("collect failed: %s", exc)
    except Exception:  # noqa: BLE001 - a background fetch must never kill the scheduler
        log.exception("collect failed")
    finally:
        if owned:
            app.close()


def deliver_webhooks() -> None:
    """Send what the webhook outbox holds (`mailer.outgoing.delivery`)."""
    app, owned = _job_app()
    try:
        report = drain(app, max_seconds=max(app.settings.webhook_every_seconds * 4, 30.0))
        if report.attempted:
            log.info("webhooks: delivered %d, failed attempts %d, given up %d",
                     report.delivered, report.failed_attempts, report.given_up)
    except Exception:  # noqa: BLE001 - the outbox keeps them; the next pass tries again
        log.exception("webhook delivery failed")
    finally:
        if owned:
            app.close()


def _job_app() -> tuple[App, bool]:
    if _APP is not None:
        return _APP, False
    return App.create(), True


# ---- start-up: did a run fall due while no scheduler was running? ---------------------------


@dataclass(frozen=True)
class StartupPlan:
    action: Literal["none", "catch-up", "missed"]
    day: date | None
    reason: str


def plan_startup(app: App, stored_next: datetime | None) -> StartupPlan:
    """Decide, from the previous process's stored next run and the edition's state, whether
    to catch up a run now (within the grace window), report it missed (past it), or do nothing.

    Without a stored job (first start) nothing is missed: a fresh install does not alert about
    days it was never asked to send. An edition left half-sent by a killed process counts as
    due whatever the store says (its run had started, so the store had moved on). A send time
    moved earlier, past a run still to come that day (`stored_next` later today, the new time
    gone by), would skip the day: that counts as due too. The running daemon asks the same
    question when the send time changes (`ScheduleFollower`).
    """
    settings = app.settings
    now = app.clock.now()
    day = due_day(settings, now)
    if day is None:
        return StartupPlan("none", None, "no send day in the last week")
    due = send_instant(settings, day)
    state = edition_state(app, day)
    if state in (SENT, SKIPPED, CANCELLED, PAUSED_SEND):
        return StartupPlan("none", day, f"edition {day} is {state}")
    if state == SENDING and _send_lock_held(app, day, now):
        return StartupPlan("none", day, f"edition {day} is being sent by another process")
    missed = stored_next is not None and stored_next <= now and due >= stored_next - DUE_SLACK
    # The send time moved earlier (in the console) past a run still to come that day: the new
    # schedule's run for the day has gone by and the old one will not come.
    overtaken = (stored_next is not None and stored_next > now
                 and stored_next.astimezone(settings.tz).date() == day)
    if not (missed or overtaken) and state != SENDING:
        return StartupPlan("none", day, "no scheduled run fell due while stopped")
    late = now - due
    grace = timedelta(seconds=grace_seconds(settings))
    if state == SENDING:
        what = "was interrupted mid-send"
    elif overtaken:
        assert stored_next is not None
        what = (f"was not sent (it was to go at {both_times(stored_next.astimezone(settings.tz))}; "
                "the send time has moved to before now)")
    else:
        what = "was not sent"
    due_text = f"{due.astimezone(settings.tz):%Y-%m-%d %H:%M %Z}"
    if late <= grace:
        return StartupPlan("catch-up", day, f"edition {day} (due {due_text}) {what}; "
                           f"{_hours(late)} late, within the {_hours(grace)} window")
    return StartupPlan("missed", day, f"edition {day} (due {due_text}) {what}; now "
                       f"{_hours(late)} late, past the {_hours(grace)} window "
                       "(late_send_hours)")


def _hours(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f}h"


def _send_lock_held(app: App, day: date, now: datetime) -> bool:
    with app.sessions() as session:
        row = session.get(RunLock, f"send:{day.isoformat()}")
        return row is not None and row.lease_until >= now and holder_alive(row.holder)


def report_missed(day_iso: str, reason: str) -> None:
    """Alert staff (once per edition) that a run was missed and will not be sent by itself."""
    app, owned = _job_app()
    try:
        day = date.fromisoformat(day_iso)
        state = edition_state(app, day)
        if state in (SENT, SKIPPED, CANCELLED, PAUSED_SEND) or (
                state == SENDING and _send_lock_held(app, day, app.clock.now())):
            log.info("run for edition %s missed, but the edition is %s: nothing to report",
                     day, state)
            return
        log.error("missed: %s; not sending it automatically", reason)
        if state == SENDING:
            todo = (f"Some subscribers have it, the rest are still queued. To finish (nobody "
                    f"gets it twice): mailer send --date {day}")
        else:
            todo = (f"To send it anyway: mailer send --date {day} --force --reason \"...\"\n"
                    "To leave it, do nothing: the next edition carries its articles.")
        alert(app, f"edition {day} NOT sent: scheduled run missed",
              f"The scheduled send did not happen: {reason}.\n\nIt was not sent "
              f"automatically because it is too late.\n\n{todo}", once_key=f"missed:{day}")
    finally:
        if owned:
            app.close()


def stored_next_run(engine: Engine) -> datetime | None:
    """The daily job's next run time as the previous scheduler process left it, if any."""
    table = _jobs_table(engine)
    if table is None:
        return None
    with engine.connect() as conn:
        value = conn.execute(select(table.c.next_run_time)
                             .where(table.c.id == JOB_ID)).scalar_one_or_none()
    return None if value is None else datetime.fromtimestamp(float(value), UTC)


def _jobs_table(engine: Engine) -> Table | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table(JOBS_TABLE):
            return None
    return Table(JOBS_TABLE, MetaData(), autoload_with=engine)


def _drop_stale_jobs(engine: Engine, keep: set[str]) -> None:
    """Remove stored jobs this configuration no longer defines (e.g. collection turned off)."""
    table = _jobs_table(engine)
    if table is None:
        return
    with engine.begin() as conn:
        removed = conn.execute(delete(table).where(table.c.id.not_in(keep))).rowcount
    if removed:
        log.info("removed %d stored job(s) no longer configured", removed)


# ---- the daemon ----------------------------------------------------------------------------


def build_scheduler(app: App, engine: Engine) -> BlockingScheduler:
    """A BlockingScheduler with the daily job (and the collect job) in the database store."""
    settings = app.settings
    scheduler = BlockingScheduler(
        timezone=settings.tz,
        jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename=JOBS_TABLE),
                   "memory": MemoryJobStore()},
        job_defaults={"coalesce": True, "max_instances": 1},
    )
    shift = app.clock.offset
    scheduler.add_job(daily_send, trigger=build_trigger(settings, shift), id=JOB_ID,
                      name="daily send", replace_existing=True, coalesce=True,
                      max_instances=1, misfire_grace_time=grace_seconds(settings))
    # (always there: staff may plan a test on one edition's page with the setting off)
    scheduler.add_job(subject_test_send, trigger=subject_test_trigger(settings, shift),
                      id=TEST_JOB_ID,
                      name="subject test", replace_existing=True, coalesce=True,
                      max_instances=1, misfire_grace_time=settings.test_minutes * 30)
    if settings.weekly_digest:
        scheduler.add_job(weekly_send, trigger=weekly_trigger(settings, shift), id=WEEKLY_JOB_ID,
                          name="weekly send", replace_existing=True, coalesce=True,
                          max_instances=1, misfire_grace_time=grace_seconds(settings))
    minutes = settings.collect_every_minutes
    if minutes:
        scheduler.add_job(collect_feed, trigger="interval", minutes=minutes, id=COLLECT_JOB_ID,
                          name="collect feed", replace_existing=True, coalesce=True,
                          max_instances=1, misfire_grace_time=minutes * 60)
    # (in memory: it is not a plan to keep across restarts, and it runs every few seconds)
    scheduler.add_job(deliver_webhooks, trigger="interval",
                      seconds=settings.webhook_every_seconds, id=WEBHOOKS_JOB_ID,
                      name="deliver webhooks", jobstore="memory", coalesce=True,
                      max_instances=1, misfire_grace_time=None)
    scheduler.add_job(ScheduleFollower(scheduler, app), trigger="interval",
                      seconds=settings.settings_check_seconds, id=FOLLOW_JOB_ID,
                      name="follow the console's schedule", jobstore="memory",
                      coalesce=True, max_instances=1, misfire_grace_time=None)
    return scheduler


class ScheduleFollower:
    """A job of the running daemon: re-reads the console's settings and, when staff changed
    the send time or days, moves the daily job there without a restart.

    A time moved earlier past the run still to come today would skip today's edition; that
    is the start-up question again (`plan_startup`, with the run the old schedule still had
    to come): within the grace window the edition goes now, past it staff are told.
    """

    def __init__(self, scheduler: BlockingScheduler, app: App) -> None:
        self.scheduler = scheduler
        self.app = app
        self.scheduled = schedule_of(app.settings)

    def __call__(self) -> None:
        try:
            triggers.beat(self.app.sessions, self.app.clock.now())
            self.check()
        except Exception:  # noqa: BLE001 - the daemon must go on with the schedule it has
            log.exception("could not follow a change of the schedule")

    def check(self) -> StartupPlan | None:
        """Move the daily job if the schedule changed; what was done about today, if so."""

        settings = refresh(self.app)
        wanted = schedule_of(settings)
        if wanted == self.scheduled:
            return None
        shift = self.app.clock.offset
        job = self.scheduler.get_job(JOB_ID)
        before = on_clock(self.app, job.next_run_time if job is not None else None)
        job = self.scheduler.reschedule_job(JOB_ID, trigger=build_trigger(settings, shift))
        self.scheduler.reschedule_job(TEST_JOB_ID, trigger=subject_test_trigger(settings, shift))
        self.scheduled = wanted
        log.info("schedule changed: daily send at %s on %s (%s); next run %s (was %s)",
                 settings.send_time, settings.send_days, settings.timezone,
                 both_times(on_clock(self.app, job.next_run_time)), both_times(before))
        plan = plan_startup(self.app, before)
        act_on(self.scheduler, plan)
        return plan


def on_clock(app: App, moment: datetime | None) -> datetime | None:
    """A real instant APScheduler keeps (a job's next run) as `app.clock` tells the time."""
    if moment is None or not app.clock.offset:
        return moment
    return moved(moment, app.clock.offset)


def act_on(scheduler: BlockingScheduler, plan: StartupPlan) -> None:
    """Queue what `plan` says: a catch-up send now, or the missed-run alert now."""
    now = datetime.now(UTC)
    if plan.action == "catch-up":
        log.warning("catch-up: %s: sending now", plan.reason)
        scheduler.add_job(catch_up_send, "date", run_date=now, args=[str(plan.day)],
                          id="catch-up", jobstore="memory", misfire_grace_time=None,
                          replace_existing=True)
    elif plan.action == "missed":
        scheduler.add_job(report_missed, "date", run_date=now,
                          args=[str(plan.day), plan.reason], id="report-missed",
                          jobstore="memory", misfire_grace_time=None, replace_existing=True)
    else:
        log.debug("schedule check: %s", plan.reason)


def run_scheduler(app: App) -> int:
    """Run the daemon until SIGTERM or SIGINT; return the process exit status.

    The first signal stops scheduling and lets a send in progress finish (the ledger would
    survive a kill, but a clean finish leaves no "unknown outcome" rows); a second one exits at
    once.
    """
    global _APP
    settings = app.settings
    require_schema(app.engine)
    engine = make_engine(settings.database_url)
    minutes = settings.collect_every_minutes
    plan = plan_startup(app, on_clock(app, stored_next_run(engine)))
    _drop_stale_jobs(engine, {JOB_ID, TEST_JOB_ID} | ({COLLECT_JOB_ID} if minutes else set())
                     | ({WEEKLY_JOB_ID} if settings.weekly_digest else set()))
    scheduler = build_scheduler(app, engine)
    act_on(scheduler, plan)
    _listen(scheduler, app)
    triggers.beat(app.sessions, app.clock.now())  # (then with every follower's check)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if stopping.is_set():
            log.warning("%s again: exiting now (an interrupted send resumes safely with "
                        "`mailer send`)", name)
            os._exit(128 + signum)
        stopping.set()
        log.info("%s received: stopping (a send in progress finishes first)", name)
        # Not from inside the handler: the main thread may hold the scheduler's locks.
        threading.Thread(target=_shutdown, args=(scheduler,), name="shutdown",
                         daemon=True).start()

    def on_started(_event: SchedulerEvent) -> None:
        # Installed once running, so an early signal never meets a scheduler that cannot stop.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, on_signal)
        job = scheduler.get_job(JOB_ID)
        upcoming = on_clock(app, job.next_run_time if job is not None else None)
        log.info("scheduler started: %s at %s on %s (%s); next run %s; grace %s%s",
                 JOB_ID, settings.send_time, settings.send_days, settings.timezone,
                 both_times(upcoming), _hours(timedelta(seconds=grace_seconds(settings))),
                 f"; collecting every {minutes} min" if minutes else "")

    scheduler.add_listener(on_started, EVENT_SCHEDULER_STARTED)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    _APP = app
    try:
        scheduler.start()
    finally:
        _APP = None
        if threading.current_thread() is threading.main_thread():
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        engine.dispose()
    log.info("scheduler stopped")
    return 0


def _shutdown(scheduler: BlockingScheduler) -> None:
    if scheduler.state != STATE_STOPPED:
        scheduler.shutdown(wait=True)


def _listen(scheduler: BlockingScheduler, app: App) -> None:
    """Log (and for the daily job, alert on) what APScheduler itself decides."""

    def on_event(event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            due = on_clock(app, event.scheduled_run_time)
            log.error("job %s missed its run at %s (more than %ss late)", event.job_id,
                      both_times(due), grace_seconds(app.settings))
            if event.job_id == JOB_ID and due is not None:
                local = due.astimezone(app.settings.tz)
                report_missed(local.date().isoformat(),
                              f"the run due at {local:%H:%M %Z} could not start in time "
                              "(the machine was busy or asleep)")
        elif event.code == EVENT_JOB_ERROR:
            log.error("job %s raised %r", event.job_id, event.exception)
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            log.warning("job %s is still running from the previous trigger; this one is "
                        "skipped", event.job_id)

    scheduler.add_listener(on_event,
                           EVENT_JOB_MISSED | EVENT_JOB_ERROR | EVENT_JOB_MAX_INSTANCES)


def run_once_now(app: App) -> RunReport:
    """`mailer scheduler --once-now`: the daily job's work for today, at once, then exit."""
    require_schema(app.engine)
    global _APP
    _APP = app
    try:
        return run_daily(app, app.clock.today(app.settings.tz), trigger="once-now")
    finally:
        _APP = None
