"""The daily job in order: collect -> build -> check -> snapshot -> dispatch.

Called by `mailer send`, the scheduler and the staff console alike, so every trigger takes the
same run lock and the same guards: a second trigger of one edition says "already running" or
"already sent" and changes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import func, select, update

from mailer import ledger, preflight, subject_test
from mailer.app import App
from mailer.asks import live
from mailer.clicks import retention
from mailer.clicks.retention import Purged
from mailer.collect import CollectResult, collect
from mailer.config import Settings
from mailer.db import rowcount
from mailer.dbretry import is_outage
from mailer.dispatch import Dispatcher, Progress
from mailer.edition import EDITABLE, build_edition, edition_view, send_instant, window_for
from mailer.errors import MailerError
from mailer.locks import LeaseLock
from mailer.message import MessageTemplate, new_message_id
from mailer.models import (
    CANCELLED,
    DAILY,
    PAUSED_SEND,
    SENDING,
    SENT,
    SKIPPED,
    TESTING,
    WEEKLY,
    Edition,
    EditionArticle,
    SendLog,
    Subscriber,
)
from mailer.optin import reactivate_due
from mailer.placeholders import Placeholders
from mailer.preflight import spamassassin
from mailer.subscribers import normalise_email
from mailer.transports import from_dsn
from mailer.transports.base import Outgoing
from mailer.variants import render_variants

log = logging.getLogger("mailer.pipeline")


class LateSend(MailerError):
    """The scheduled time is too far in the past; sending now needs --force."""


@dataclass
class SendOutcome:
    status: str  # sent | already-sent | already-running | skipped | paused | cancelled |
    #              dry-run | test | stopped | testing (a subject test's groups are out) |
    #              no-test (a subject test phase found nothing to test)
    message: str
    edition_id: int | None = None
    articles: int = 0
    audience: int = 0
    progress: Progress | None = None
    details: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status != "stopped"


def collect_for(app: App, day: date, kind: str = DAILY) -> CollectResult:
    """Fetch the feed far enough back to cover the edition window of `day`."""

    with app.sessions() as session:
        since = window_for(session, app.settings, day, kind).start
    return collect(app, since=since)


def label(day: date, kind: str = DAILY) -> str:
    """How messages name an edition: 'edition 2026-12-05', 'weekly edition 2026-12-05'."""
    return f"weekly edition {day}" if kind == WEEKLY else f"edition {day}"


def audience_of(settings: Settings, kind: str) -> str | None:
    """The frequency an edition of `kind` goes to (`ledger.audience`): while the weekly
    digest is not offered, the daily goes to every active reader."""
    if kind == WEEKLY:
        return WEEKLY
    return DAILY if settings.weekly_digest else None


def default_day(app: App) -> date:
    return app.clock.today(app.settings.tz)


def _edition_state(app: App, day: date, kind: str = DAILY) -> Edition | None:
    return ledger.load_edition(app.sessions, day, kind)


def run_send(
    app: App,
    day: date | None = None,
    *,
    dry_run: bool = False,
    force: bool = False,
    reason: str = "",
    test_to: Sequence[str] = (),
    collect_first: bool = True,
    on_progress: Callable[[Progress], None] | None = None,
    connections: int | None = None,
    kind: str = DAILY,
    test_phase: bool = False,
) -> SendOutcome:
    """Send the edition of `kind` for `day` (or resume it). With `test_phase`, only a
    subject test's groups go (`mailer.subject_test`), the rest waiting for the run at the
    send time, which decides the test and sends the winner to them."""
    day = day or default_day(app)
    if kind == WEEKLY and not app.settings.weekly_digest:
        raise MailerError("the weekly digest is off (weekly_digest = false): readers are not "
                          "offered it, and those who chose it get the daily")
    if test_to:
        return send_test(app, day, test_to, collect_first=collect_first, kind=kind)
    name = f"send:{day.isoformat()}" if kind == DAILY else f"send:{kind}:{day.isoformat()}"
    lock = LeaseLock(app.sessions, app.clock, name, lease_seconds=60)
    if not lock.try_acquire():
        existing = _edition_state(app, day, kind)
        if existing is not None and existing.state == SENT:
            return SendOutcome("already-sent", f"{label(day, kind)} was already sent",
                               existing.id)
        return SendOutcome("already-running", f"{label(day, kind)} is already being sent by "
                           f"{lock.current_holder()}")
    try:
        outcome = _run_locked(app, day, kind, _Run(dry_run, force, reason, collect_first,
                                                   on_progress, connections, test_phase))
    finally:
        _release_run_lock(lock)
    if not dry_run:
        housekeeping(app)
    return outcome


def housekeeping(app: App) -> Purged | None:
    """The daily retention rules (`mailer.clicks.retention`), run after each send so that
    every trigger runs them. A failure is logged and leaves the send's outcome as it was:
    the next run (or `mailer clicks purge`) catches up."""
    try:
        with app.sessions.begin() as session:
            purged = retention.purge(session, app.clock.now(), app.settings)
    except Exception as exc:  # noqa: BLE001 - housekeeping never fails a send
        log.warning("retention purge failed (the next run catches up): %s", exc)
        return None
    log.info("retention: %s", purged.summary())
    return purged


def _release_run_lock(lock: LeaseLock) -> None:
    """Release the run lock; a database still out after the send gave up waiting for it
    (DatabaseOutage) keeps the lock row instead, whose holder is this process: once it has
    exited, the next run on this machine takes the lock at once (elsewhere, at its lease)."""
    try:
        lock.release()
    except Exception as exc:
        if not is_outage(exc):
            raise


@dataclass(frozen=True)
class _Run:
    """How this run was asked for (`run_send`'s options)."""

    dry_run: bool
    force: bool
    reason: str
    collect_first: bool
    on_progress: Callable[[Progress], None] | None
    connections: int | None
    test_phase: bool


def _run_locked(app: App, day: date, kind: str, run: _Run) -> SendOutcome:
    existing = _edition_state(app, day, kind)
    settled = _settled(existing, label(day, kind))
    if settled is not None:
        return settled
    if existing is not None and existing.state == TESTING:
        waiting = _still_testing(app, existing, run)
        if waiting is not None:
            return waiting
        edition = _decide(app, existing)
    elif existing is not None and existing.state == SENDING:
        edition = existing  # resuming: the audience was snapshotted when the send started
    else:
        prepared = _prepare(app, day, kind, run)
        if prepared is None:  # another process moved the edition on: look again
            return _run_locked(app, day, kind, dataclasses.replace(run, collect_first=False))
        if isinstance(prepared, SendOutcome):
            return prepared
        edition = prepared
    spamassassin.release()  # (started ahead by the CLI for the preflight check, if any)
    dispatcher = Dispatcher(app, edition.id, connections=run.connections,
                            on_progress=run.on_progress)
    progress = dispatcher.run()
    if progress.stopped_reason:
        return SendOutcome("stopped", progress.stopped_reason, edition.id, progress=progress)
    final = _edition_state(app, day, kind)
    if final is not None and final.state == TESTING:  # the test groups are out
        return _run_locked(app, day, kind, dataclasses.replace(run, collect_first=False))
    return _finished(app, day, kind, edition, progress)


def _still_testing(app: App, edition: Edition, run: _Run) -> SendOutcome | None:
    """The answer while a subject test's groups are out and its time has not come (None
    once it has, or with `force`: decide now)."""
    due = send_instant(app.settings, edition.edition_date, edition.kind)
    name = label(edition.edition_date, edition.kind)
    at = f"{due.astimezone(app.settings.tz):%H:%M %Z}"
    record = edition.subject_test or {}
    groups = " + ".join(str(n) for n in record.get("group_sizes", []))
    if run.test_phase:
        return SendOutcome("testing", f"{name}: subject test sent to {groups} readers; the "
                           f"rest goes at {at} with the winning subject", edition.id)
    if app.clock.now() < due and not run.force:
        return SendOutcome("testing", f"{name}: the subject test runs until {at}; the rest "
                           "goes then (--force decides it now)", edition.id)
    return None


def _decide(app: App, edition: Edition) -> Edition:
    """End the subject test: the winner's subject for the rest, who are queued again."""
    with app.sessions.begin() as session:
        fresh = session.get(Edition, edition.id)
        assert fresh is not None
        decision = subject_test.finish(session, fresh, app.clock.now())
    log.info("%s: subject test decided: %s", label(edition.edition_date, edition.kind),
             decision.reason)
    decided = ledger.load_edition(app.sessions, edition.edition_date, edition.kind)
    assert decided is not None
    return decided


def _settled(existing: Edition | None, name: str) -> SendOutcome | None:
    """The answer for an edition that is already past the point of sending, if it is."""
    if existing is None:
        return None
    if existing.state == SENT:
        return SendOutcome("already-sent",
                           f"{name} was already sent ({existing.sent_count} messages);"
                           " nothing to do", existing.id)
    if existing.state == SKIPPED:
        return SendOutcome("skipped", f"{name} was skipped: no articles", existing.id)
    if existing.state == CANCELLED:
        return SendOutcome("cancelled", f"{name} was cancelled; nothing sent", existing.id)
    if existing.state == PAUSED_SEND:
        kind = " --kind weekly" if existing.kind == WEEKLY else ""
        return SendOutcome("paused", f"{name} is paused: run `mailer editions resume "
                           f"{existing.edition_date}{kind}` to continue", existing.id)
    return None


def _prepare(app: App, day: date, kind: str, run: _Run) -> Edition | SendOutcome | None:
    """Guard, build, check and start a new send: the edition to dispatch, an outcome that ends
    the run here (late, skipped, dry run, no test to run), or None when the edition stopped
    being editable."""
    now = app.clock.now()
    due = send_instant(app.settings, day, kind)
    late = now - due
    if late > timedelta(hours=app.settings.late_send_hours) and not run.force \
            and not run.dry_run:
        raise LateSend(
            f"{label(day, kind)} was due at {due.astimezone(app.settings.tz):%H:%M %Z}, "
            f"{late.total_seconds() / 3600:.1f} hours ago (limit "
            f"{app.settings.late_send_hours:g}h); to send it anyway: mailer send --date {day}"
            f"{' --kind weekly' if kind == WEEKLY else ''} --force --reason \"why it is late\""
        )
    if run.test_phase:
        refused = _no_test_phase(app, day, kind, due)
        if refused is not None:
            return refused
    if run.collect_first:
        collect_for(app, day, kind)
    edition = build_edition(app, day, close_window_at=now, kind=kind)
    if edition.state not in EDITABLE:
        return None
    articles = _count_items(app, edition)
    if articles == 0 and run.test_phase:  # (articles may come before the send: no skip yet)
        return SendOutcome("no-test", f"{label(day, kind)}: no articles yet, so no subject "
                           "test", edition.id)
    if articles == 0:
        return _skip_empty(app, edition, now, dry_run=run.dry_run)
    run_preflight(app, edition, force=run.force, reason=run.reason)
    frequency = audience_of(app.settings, kind)
    with app.sessions() as session:
        audience = session.scalar(select(func.count(Subscriber.id))
                                  .where(*ledger.audience(frequency))) or 0
    if run.dry_run:
        return SendOutcome("dry-run", f"{label(day, kind)}: {articles} articles, would send "
                           f"to {audience} subscribers", edition.id, articles, audience)
    subjects, why_not = _test_subjects(app, edition, audience, testing=run.test_phase)
    if run.test_phase and not subjects:
        return SendOutcome("no-test", f"{label(day, kind)}: no subject test: {why_not}; the "
                           "edition goes at send time with its own subject", edition.id)
    with app.sessions.begin() as session:
        started = rowcount(session.execute(
            update(Edition).where(Edition.id == edition.id, Edition.state.in_(EDITABLE))
            # (started when sending starts: after the build and the preflight checks)
            .values(state=SENDING, started_at=app.clock.now(),
                    forced_reason=run.reason if run.force else "")
        ))
        if started:
            # Pauses that ran out end with this edition.
            reactivate_due(session, now)
            fresh = session.get(Edition, edition.id)
            assert fresh is not None
            fresh.audience = ledger.snapshot(
                session, fresh, frequency, [ask.name for ask in live(app.settings.asks)])
            if subjects:
                subject_test.start(session, fresh, subjects, app.settings, app.clock.now())
            # Once per distinct choice of sections in that audience, never per reader.
            render_variants(app, session, fresh)
    return edition


def _no_test_phase(app: App, day: date, kind: str, due: datetime) -> SendOutcome | None:
    """Why a subject test phase has nothing to do now, if it has not: no test planned for
    the edition, or too little time left before the send for one."""
    existing = _edition_state(app, day, kind)
    name = label(day, kind)
    if not subject_test.planned_templates(app.settings, existing):
        return SendOutcome("no-test", f"{name}: no subject test is planned (subject_test, "
                           "or subject lines on the edition page); nothing to do",
                           existing.id if existing else None)
    left = due - app.clock.now()
    if left < timedelta(minutes=app.settings.test_minutes / 2):
        return SendOutcome("no-test", f"{name}: too late for a subject test (the send is "
                           f"due at {due.astimezone(app.settings.tz):%H:%M %Z}); the edition "
                           "goes then with its own subject", existing.id if existing else None)
    return None


def _test_subjects(app: App, edition: Edition, audience: int, *,
                   testing: bool) -> tuple[list[str], str]:
    """The subject lines to test on `edition` now ([]: none), and why there are none; a
    planned test that cannot run (too few readers, no click tracking, or no test phase
    before this send) says why in the edition's record too."""
    templates = subject_test.planned_templates(app.settings, edition)
    if not templates:
        return [], "nothing to test"
    with app.sessions.begin() as session:
        fresh = session.get(Edition, edition.id)
        assert fresh is not None
        subjects = subject_test.subjects_for(fresh, edition_view(session, app.settings, fresh),
                                             templates)
        why = ("every subject line is the edition's own" if not subjects else
               subject_test.why_not(app.settings, fresh, audience, len(subjects)))
        if not testing and not why:
            why = "no test phase ran before the send (`mailer send --subject-test`)"
        if why:
            return [], str(subject_test.not_run(fresh, why)["reason"])
        return subjects, ""


def _skip_empty(app: App, edition: Edition, now: datetime, *, dry_run: bool) -> SendOutcome:
    name = label(edition.edition_date, edition.kind)
    if dry_run:
        return SendOutcome("dry-run", f"{name}: no articles in the window; "
                           "it would be skipped", edition.id)
    with app.sessions.begin() as session:
        session.execute(update(Edition).where(Edition.id == edition.id,
                                              Edition.state.in_(EDITABLE))
                        .values(state=SKIPPED, finished_at=now,
                                note="no articles in the window"))
    return SendOutcome("skipped", f"{name}: no articles in the window "
                       f"({edition.window_start:%Y-%m-%d %H:%M} to "
                       f"{edition.window_end:%Y-%m-%d %H:%M} UTC); nothing sent",
                       edition.id)


def _finished(app: App, day: date, kind: str, edition: Edition,
              progress: Progress) -> SendOutcome:
    """The one line a finished dispatch ends with, from the ledger's counts."""
    name = label(day, kind)
    final = _edition_state(app, day, kind)
    state = final.state if final else ""
    with app.sessions() as session:
        c = ledger.counts(session, edition.id)
    if state == SENT:
        msg = (f"{name}: sent {c['sent']}, failed {c['failed']}, "
               f"unknown outcome {c['ambiguous']}")
        if c["withdrawn"]:
            msg += f", left the list during the send {c['withdrawn']}"
        if c["skipped"]:
            msg += f", nothing in their sections today {c['skipped']}"
        return SendOutcome("sent", msg, edition.id, progress=progress, details=c)
    if state == PAUSED_SEND:
        why = f" ({final.note})" if final is not None and final.note else ""
        return SendOutcome("paused", f"{name} paused with {c['queued']} still queued"
                           f"{why}", edition.id, progress=progress, details=c)
    if state == CANCELLED:
        return SendOutcome("cancelled", f"{name} cancelled; {c['sent']} were sent "
                           "before the cancel", edition.id, progress=progress, details=c)
    return SendOutcome("stopped", f"{name} is {state} with {c['queued']} queued",
                       edition.id, progress=progress, details=c)


def _count_items(app: App, edition: Edition) -> int:
    with app.sessions() as session:
        return session.scalar(select(func.count()).where(
            EditionArticle.edition_id == edition.id)) or 0


def run_preflight(app: App, edition: Edition, *, force: bool, reason: str) -> None:
    """Check the real edition before the first message goes out (raises PreflightError)."""

    preflight.check_before_send(app, edition, force=force, reason=reason)


def send_test(app: App, day: date, addresses: Sequence[str], *,
              collect_first: bool = True, kind: str = DAILY) -> SendOutcome:
    """Send the edition to the given addresses only, marked as a test; no ledger rows."""
    recipients = [normalise_email(a) for a in addresses]
    existing = _edition_state(app, day, kind)
    if existing is None or existing.state in EDITABLE:
        if collect_first:
            collect_for(app, day, kind)
        edition = build_edition(app, day, kind=kind)
    else:
        edition = existing
    template = MessageTemplate.build(settings=app.settings, subject=edition.subject,
                                     html=edition.html, text=edition.text,
                                     date=app.clock.now(), test=True,
                                     placeholders=Placeholders(edition.placeholder_key))

    base = app.settings.base_url.rstrip("/")
    messages = []
    for address in recipients:
        mid = new_message_id(app.settings, f"test.{day:%Y%m%d}")
        kwargs = dict(email=address, name="", unsubscribe_url=f"{base}/unsubscribe/test",
                      preferences_url=f"{base}/preferences/test", message_id=mid)
        messages.append(Outgoing(recipient=address, message_id=mid,
                                 data=template.fill(**kwargs), fields=template.fields(**kwargs),
                                 wire_ready=True))
    transport = from_dsn(app.settings.dsn, app.settings)
    with transport:
        results = transport.send(messages) if transport.max_batch >= len(messages) else [
            r for m in messages for r in transport.send([m])
        ]
    bad = [f"{m.recipient}: {r.error}" for m, r in zip(messages, results, strict=True)
           if r.status != "sent"]
    with app.sessions.begin() as session:
        session.add(SendLog(kind="test", edition_id=edition.id, recipients=",".join(recipients),
                            detail="; ".join(bad) or "ok", created_at=app.clock.now()))
    if bad:
        raise MailerError("test send failed for " + "; ".join(bad))
    return SendOutcome("test", f"test of {label(day, kind)} sent to {', '.join(recipients)}",
                       edition.id)
