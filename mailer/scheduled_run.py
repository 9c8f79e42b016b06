"""One scheduled run of a send, and what staff are told about it.

The scheduler (`mailer.scheduler`) decides when; this module runs the send through the same
`pipeline.run_send` that `mailer send` runs from cron, and turns its outcome into a log line
and, when someone should act (a late, failed or skipped run, a feed that was stale), an alert.
It never raises: the scheduler must still be there tomorrow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from mailer import outbox
from mailer.alerts import alert
from mailer.app import App
from mailer.edition import get_edition, send_instant
from mailer.errors import FeedError, MailerError
from mailer.models import DAILY, PAUSED_SEND, SKIPPED, WEEKLY, FeedState
from mailer.overrides import refresh
from mailer.pipeline import LateSend, label, run_send
from mailer.preflight import spamassassin

log = logging.getLogger("mailer.scheduler")

# A send that starts this long after its due time is worth telling staff about.
LATE_ALERT_AFTER = timedelta(minutes=10)
# Statuses of a run that need nobody's attention.
OK_STATUSES = frozenset(
    {"sent", "already-sent", "already-running", "skipped", "paused", "cancelled", "dry-run",
     "testing", "no-test"}
)


@dataclass(frozen=True)
class RunReport:
    """What one scheduled run did, for the log, the exit status of --once-now and the tests."""

    day: date
    status: str  # a SendOutcome status, or "late" | "feed-error" | "failed"
    message: str

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES


def run_daily(app: App, day: date, *, trigger: str = "schedule",
              kind: str = DAILY, test_phase: bool = False) -> RunReport:
    """Run the send of `kind` for `day` through the pipeline (with `test_phase`, only a
    subject test's groups); log the result and alert staff when it failed, was skipped
    for want of articles, or ran late. Never raises: the scheduler must still be there
    tomorrow."""

    refresh(app)  # settings staff changed in the console since the daemon started
    # As `mailer send` does: SpamAssassin loads its rules while the feed is fetched and the
    # edition built, and the preflight check then waits for its scan alone.
    with spamassassin.warmed(spamassassin.configured_command(app.settings)):
        return _run_daily(app, day, trigger, kind, test_phase)


def _run_daily(app: App, day: date, trigger: str, kind: str,
               test_phase: bool = False) -> RunReport:
    settings = app.settings
    due = send_instant(settings, day, kind)
    due_text = f"{due.astimezone(settings.tz):%H:%M %Z}"
    started = app.clock.now()
    before = edition_state(app, day, kind)
    name, again = label(day, kind), f"mailer send --date {day}" + (
        " --kind weekly" if kind == WEEKLY else "")
    log.info("%s: %s (due %s): starting", trigger, name, due_text)
    stale_since: datetime | None = None
    try:
        try:
            outcome = run_send(app, day, kind=kind, test_phase=test_phase)
        except FeedError as exc:
            # The point of collecting ahead: a feed outage at send time does not cost the day.
            stale_since = _collected_recently(app)
            if stale_since is None:
                raise
            log.warning("%s: %s; sending with the articles collected at %s", trigger, exc,
                        both_times(stale_since.astimezone(settings.tz)))
            outcome = run_send(app, day, collect_first=False, kind=kind,
                               test_phase=test_phase)
    except LateSend as exc:
        return _failed(app, day, "late", str(exc), f"{name} NOT sent: too late",
                       "The scheduled send did not start in time and was refused, so nobody "
                       f"received {name}.\n\n{exc}", kind=kind)
    except FeedError as exc:
        return _failed(app, day, "feed-error", str(exc), f"{name} NOT sent: feed error",
                       f"The feed could not be read, so nothing was sent.\n\n{exc}\n\n"
                       f"Once the feed is back: {again}", kind=kind)
    except MailerError as exc:
        return _failed(app, day, "failed", str(exc), f"{name} NOT sent",
                       f"The scheduled send failed.\n\n{exc}", kind=kind)
    except Exception as exc:  # noqa: BLE001 - logged with its traceback, then alerted
        log.exception("%s: %s failed", trigger, name)
        return _failed(app, day, "failed", f"{type(exc).__name__}: {exc}",
                       f"{name} NOT sent: internal error",
                       f"The scheduled send crashed ({type(exc).__name__}: {exc}). "
                       "The log of the scheduler has the traceback.", kind=kind)
    report = RunReport(day, outcome.status, outcome.message)
    if outcome.status == "skipped":
        log.info("%s: skipped: %s", trigger, outcome.message)
        if before != SKIPPED:
            alert(app, f"{name} skipped: no articles",
                  f"{outcome.message}\n\nNo email went out today. If articles were published, "
                  "check the feed and the edition window (mailer preview).",
                  edition_id=outcome.edition_id)
    elif outcome.status == "sent":
        late = started - due
        log.info("%s: %s", trigger, outcome.message)
        if stale_since is not None:
            alert(app, f"{name} sent without a fresh feed",
                  f"The feed could not be read at send time, so {name} went out with "
                  f"the articles collected at {stale_since.astimezone(settings.tz):%H:%M %Z}. "
                  "Articles published after that are not in it and will not be in the next "
                  f"edition either.\n\n{outcome.message}", edition_id=outcome.edition_id)
        if late > LATE_ALERT_AFTER:
            alert(app, f"{name} sent late",
                  f"{name} was due at {due_text} and only started "
                  f"{late.total_seconds() / 60:.0f} minutes later "
                  f"({started.astimezone(settings.tz):%H:%M %Z}).\n\n{outcome.message}",
                  edition_id=outcome.edition_id)
    elif outcome.status == "stopped" or (outcome.status == "paused" and before != PAUSED_SEND):
        log.error("%s: %s", trigger, outcome.message)
        alert(app, f"{name} {outcome.status} before finishing",
              f"{outcome.message}\n\nQueued recipients are kept. To finish (nobody gets it "
              f"twice): {again}", edition_id=outcome.edition_id)
        _tell_listeners(app, day, kind, outcome.status, outcome.message, outcome.edition_id)
    else:
        log.info("%s: %s", trigger, outcome.message)
    return report


def _collected_recently(app: App) -> datetime | None:
    """When background collection is on and last succeeded recently, that moment."""
    minutes = app.settings.collect_every_minutes
    if not minutes:
        return None
    try:
        with app.sessions() as session:
            state = session.get(FeedState, app.settings.feed_url.strip())
            last_ok = state.last_ok_at if state is not None else None
    except Exception:  # noqa: BLE001 - no evidence of a recent fetch: no fallback
        return None
    fresh = timedelta(minutes=max(2 * minutes, 15))
    if last_ok is None or app.clock.now() - last_ok > fresh:
        return None
    return last_ok


def _failed(app: App, day: date, status: str, reason: str, subject: str,
            body: str, *, kind: str = DAILY) -> RunReport:
    log.error("edition %s not sent: %s", day, reason)
    alert(app, subject, body)
    _tell_listeners(app, day, kind, status, reason)
    return RunReport(day, status, reason)


def _tell_listeners(app: App, day: date, kind: str, status: str, reason: str,
                    edition_id: int | None = None) -> None:
    """`edition.failed` for the webhooks' receivers; like the alert, never raises."""
    try:
        with app.sessions.begin() as session:
            outbox.emit(session, outbox.EDITION_FAILED, {
                "id": edition_id, "date": day.isoformat(), "kind": kind, "status": status,
                "reason": reason}, at=app.clock.now())
    except Exception:  # noqa: BLE001 - the database may be the very thing that is down
        log.exception("could not record edition.failed for %s", day)


def edition_state(app: App, day: date, kind: str = DAILY) -> str | None:
    try:
        with app.sessions() as session:
            edition = get_edition(session, day, kind)
            return edition.state if edition is not None else None
    except Exception:  # noqa: BLE001 - the send itself will report a database problem
        return None


def both_times(moment: datetime | None) -> str:
    if moment is None:
        return "none"
    return f"{moment:%Y-%m-%d %H:%M %Z} ({moment.astimezone(UTC):%H:%M} UTC)"
