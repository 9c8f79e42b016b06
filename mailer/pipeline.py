"""The daily job in order: collect -> build -> check -> snapshot -> dispatch.

Called by `mailer send`, the scheduler and the staff console alike, so every trigger takes the
same run lock and the same guards: a second trigger of one edition says "already running" or
"already sent" and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import func, select, update

from mailer import ledger, preflight
from mailer.app import App
from mailer.asks import live
from mailer.clicks import retention
from mailer.clicks.retention import Purged
from mailer.collect import CollectResult, collect
from mailer.config import Settings
from mailer.db import rowcount
from mailer.dbretry import is_outage
from mailer.dispatch import Dispatcher, Progress
from mailer.edition import EDITABLE, build_edition, send_instant, window_for
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
    #              dry-run | test | stopped
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
) -> SendOutcome:
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
        outcome = _run_locked(app, day, kind, dry_run=dry_run, force=force, reason=reason,
                              collect_first=collect_first, on_progress=on_progress,
                              connections=connections)
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


def _run_locked(app: App, day: date, kind: str, *, dry_run: bool, force: bool, reason: str,
                collect_first: bool, on_progress: Callable[[Progress], None] | None,
                connections: int | None) -> SendOutcome:
    existing = _edition_state(app, day, kind)
    settled = _settled(existing, label(day, kind))
    if settled is not None:
        return settled
    if existing is not None and existing.state == SENDING:
        edition = existing  # resuming: the audience was snapshotted when the send started
    else:
        prepared = _prepare(app, day, kind, dry_run=dry_run, force=force, reason=reason,
                            collect_first=collect_first)
        if prepared is None:  # another process moved the edition on: look again
            return _run_locked(app, day, kind, dry_run=dry_run, force=force, reason=reason,
                               collect_first=False, on_progress=on_progress,
                               connections=connections)
        if isinstance(prepared, SendOutcome):
            return prepared
        edition = prepared
    spamassassin.release()  # (started ahead by the CLI for the preflight check, if any)
    dispatcher = Dispatcher(app, edition.id, connections=connections, on_progress=on_progress)
    progress = dispatcher.run()
    if progress.stopped_reason:
        return SendOutcome("stopped", progress.stopped_reason, edition.id, progress=progress)
    return _finished(app, day, kind, edition, progress)


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


def _prepare(app: App, day: date, kind: str, *, dry_run: bool, force: bool, reason: str,
             collect_first: bool) -> Edition | SendOutcome | None:
    """Guard, build, check and start a new send: the edition to dispatch, an outcome that ends
    the run here (late, skipped, dry run), or None when the edition stopped being editable."""
    now = app.clock.now()
    due = send_instant(app.settings, day, kind)
    late = now - due
    if late > timedelta(hours=app.settings.late_send_hours) and not force and not dry_run:
        raise LateSend(
            f"{label(day, kind)} was due at {due.astimezone(app.settings.tz):%H:%M %Z}, "
            f"{late.total_seconds() / 3600:.1f} hours ago (limit "
            f"{app.settings.late_send_hours:g}h); use --force to send it anyway"
        )
    if collect_first:
        collect_for(app, day, kind)
    edition = build_edition(app, day, close_window_at=now, kind=kind)
    if edition.state not in EDITABLE:
        return None
    articles = _count_items(app, edition)
    if articles == 0:
        return _skip_empty(app, edition, now, dry_run=dry_run)
    run_preflight(app, edition, force=force, reason=reason)
    frequency = audience_of(app.settings, kind)
    if dry_run:
        with app.sessions() as session:
            audience = session.scalar(select(func.count(Subscriber.id))
                                      .where(*ledger.audience(frequency))) or 0
        return SendOutcome("dry-run", f"{label(day, kind)}: {articles} articles, would send "
                           f"to {audience} subscribers", edition.id, articles, audience)
    with app.sessions.begin() as session:
        started = rowcount(session.execute(
            update(Edition).where(Edition.id == edition.id, Edition.state.in_(EDITABLE))
            # (started when sending starts: after the build and the preflight checks)
            .values(state=SENDING, started_at=app.clock.now(),
                    forced_reason=reason if force else "")
        ))
        if started:
            # Pauses that ran out end with this edition.
            reactivate_due(session, now)
            fresh = session.get(Edition, edition.id)
            assert fresh is not None
            fresh.audience = ledger.snapshot(
                session, fresh, frequency, [ask.name for ask in live(app.settings.asks)])
            # Once per distinct choice of sections in that audience, never per reader.
            render_variants(app, session, fresh)
    return edition


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
