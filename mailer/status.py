"""`mailer status`: one look at whether tomorrow morning will work, for people and monitors.

Everything here is read-only and each check stands alone: a database that is down still gets
a report (saying so) rather than a traceback, because that is exactly when someone runs it.
`problems` lists what should wake someone (the exit status is non-zero when it is not empty);
`warnings` lists what is worth a look but is not wrong in itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, overload

from sqlalchemy import and_, exists, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from mailer import ledger, triggers
from mailer.app import App
from mailer.db import current_revision
from mailer.edition import send_instant, window_for
from mailer.errors import one_line
from mailer.locks import holder_alive
from mailer.models import (
    CANCELLED,
    CLAIMED,
    DAILY,
    DRAFT,
    FAILED,
    PAUSED_SEND,
    READY,
    SENDING,
    SENT,
    Article,
    Delivery,
    Edition,
    EditionArticle,
    FeedState,
    RunLock,
)
from mailer.preflight import dnscache
from mailer.schedule import due_day, grace_seconds, next_run
from mailer.scheduler import JOB_ID, on_clock, stored_next_run
from mailer.transports import FileTransport, from_dsn
from mailer.urls import redact_url, sqlite_file
from mailer.wording import plural

# The database's `state`, and how the lines that could not be checked give the reason.
DB_READY, DB_EMPTY, DB_NOT_CREATED, DB_UNREACHABLE = (
    "ready", "no tables", "not created", "unreachable")
_NOT_CHECKED = {DB_EMPTY: "database has no tables yet",
                DB_NOT_CREATED: "database not created yet",
                DB_UNREACHABLE: "database unreachable"}


@dataclass
class Status:
    """The report: plain data, so `--json` is `json.dumps(asdict(status))`."""

    checked_at: str
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    database: dict[str, Any] = field(default_factory=dict)
    last_edition: dict[str, Any] | None = None
    next_run: dict[str, Any] | None = None
    feed: dict[str, Any] = field(default_factory=dict)
    transport: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)
    trigger: dict[str, Any] = field(default_factory=dict)
    domain: dict[str, Any] = field(default_factory=dict)  # the sending domain's DNS verdict

    def problem(self, text_: str) -> None:
        self.problems.append(text_)
        self.ok = False


def gather(app: App) -> Status:
    """Run every check; never raises for a broken component (that is what it reports)."""
    now = app.clock.now()
    status = Status(checked_at=_iso(now))
    upcoming = next_run(app.settings, now)
    if upcoming is not None:
        status.next_run = {**_moment(upcoming), "edition_date": upcoming.date().isoformat()}
    if _check_database(app, status):
        _check_edition(app, status, now)
        _check_feed(app, status, now, upcoming.date() if upcoming else None)
        _check_scheduler(app, status, now)
        _check_domain(app, status)
    else:
        why = _NOT_CHECKED[status.database["state"]]
        status.feed = {"url": app.settings.feed_url, "state": f"unknown ({why})"}
    _check_transport(app, status)
    return status


# ---- the checks ------------------------------------------------------------------------------


def _check_database(app: App, status: Status) -> bool:
    url = app.settings.database_url
    status.database = {"url": redact_url(url), "state": DB_UNREACHABLE, "reachable": False}
    path = sqlite_file(url)
    if path is not None and not path.exists() and path.parent.is_dir():
        # Connecting would create the file: a look at the state must not change it. (In a
        # folder that is not there either, connecting fails and says so below.)
        status.database["state"] = DB_NOT_CREATED
        status.problem("database not created yet: run `mailer init`")
        return False
    try:
        with app.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        status.database["reachable"] = True
        revision = current_revision(app.engine)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        status.database["error"] = reason
        status.problem(f"database unreachable: {reason}")
        return False
    status.database["revision"] = revision
    if not revision:
        status.database["state"] = DB_EMPTY
        status.problem("database has no tables yet: run `mailer init`")
        return False
    status.database["state"] = DB_READY
    return True


def _check_edition(app: App, status: Status, now: datetime) -> None:
    settings = app.settings
    today = now.astimezone(settings.tz).date()
    with app.sessions() as session:
        edition = session.scalar(select(Edition).where(Edition.kind == DAILY,
                                                       Edition.edition_date <= today)
                                 .order_by(Edition.edition_date.desc()).limit(1))
        if edition is not None:
            counts = ledger.counts(session, edition.id)
            items = session.scalar(select(func.count()).where(
                EditionArticle.edition_id == edition.id)) or 0
            live_claims = session.scalar(select(func.count()).where(
                Delivery.edition_id == edition.id, Delivery.state == CLAIMED,
                Delivery.lease_until >= now)) or 0
            lock = session.get(RunLock, f"send:{edition.edition_date.isoformat()}")
            locked = lock is not None and lock.lease_until >= now and holder_alive(lock.holder)
            status.last_edition = {
                "date": edition.edition_date.isoformat(),
                "state": edition.state,
                "subject": edition.subject,
                "articles": items,
                "audience": edition.audience,
                "counts": counts,
                "started_at": _iso(edition.started_at),
                "finished_at": _iso(edition.finished_at),
                "note": edition.note,
            }
            label = f"edition {edition.edition_date}"
            if edition.state == FAILED:
                status.problem(f"{label} failed: {edition.note or 'see the log'}")
            elif edition.state == SENDING and not locked and not live_claims:
                status.problem(f"{label} stopped mid-send with {counts['queued']} queued: "
                               f"run `mailer send --date {edition.edition_date}` to finish")
            elif edition.state == PAUSED_SEND:
                status.warnings.append(f"{label} is paused with {counts['queued']} queued")
            if counts["failed"] or counts["ambiguous"]:
                status.warnings.append(f"{label}: {counts['failed']} failed, "
                                       f"{counts['ambiguous']} with unknown outcome")
        any_edition = edition is not None
        day = due_day(settings, now)
        if day is None or not any_edition:
            return
        due_edition = session.scalar(select(Edition).where(Edition.kind == DAILY,
                                                           Edition.edition_date == day))
        state = due_edition.state if due_edition is not None else None
    late = now - send_instant(settings, day)
    if state in (None, DRAFT, READY, FAILED) and late > timedelta(
            seconds=grace_seconds(settings)):
        status.problem(f"edition {day} was due {late.total_seconds() / 3600:.1f}h ago and was "
                       f"not sent ({state or 'never built'})")


def _check_feed(app: App, status: Status, now: datetime, next_day: date | None) -> None:
    url = app.settings.feed_url.strip()
    with app.sessions() as session:
        state = session.get(FeedState, url)
        waiting = _articles_waiting(app, session, next_day, now) if next_day else None
    feed: dict[str, Any] = {"url": url, "articles_waiting": waiting}
    if state is None or state.last_fetch_at is None:
        feed["state"] = "never fetched"
        status.warnings.append("the feed has never been fetched (mailer collect)")
    else:
        feed.update({
            "state": "failing" if state.last_error else "ok",
            "last_fetch_at": _iso(state.last_fetch_at),
            "last_status": state.last_status,
            "last_error": state.last_error,
            "last_ok_at": _iso(state.last_ok_at),
        })
        if state.last_error:
            since = f" (last success {_iso(state.last_ok_at)})" if state.last_ok_at else ""
            status.problem(f"last feed fetch failed: {state.last_error}{since}")
    status.feed = feed


def _articles_waiting(app: App, session: Any, day: date, now: datetime) -> int:
    """Articles in the next edition's window (so far) that no other edition carries."""
    window = window_for(session, app.settings, day)
    other = select(Edition.id).where(Edition.kind == DAILY, Edition.edition_date != day,
                                     Edition.state != CANCELLED)
    taken = exists().where(EditionArticle.article_id == Article.id,
                           EditionArticle.edition_id.in_(other))
    return session.scalar(select(func.count()).select_from(Article).where(
        and_(Article.published_at >= window.start,
             Article.published_at < min(window.end, now + timedelta(seconds=1))),
        ~taken)) or 0


def _check_scheduler(app: App, status: Status, now: datetime) -> None:
    """What will fire the next send (`mailer.triggers`), and what the daemon's job store
    says (cron users have none)."""
    with app.sessions() as session:
        trigger = triggers.current(session, app.settings, now)
    status.trigger = {"kind": trigger.kind, "seen_at": _iso(trigger.seen_at),
                      "where": trigger.who}
    if trigger.warning:
        status.warnings.append(trigger.warning)
    try:
        stored = on_clock(app, stored_next_run(app.engine))
    except SQLAlchemyError as exc:
        status.scheduler = {"job": JOB_ID, "error": str(exc).splitlines()[0]}
        return
    local = stored.astimezone(app.settings.tz) if stored is not None else None
    status.scheduler = {"job": JOB_ID, "stored": stored is not None,
                        "stored_next_run": _moment(local) if local is not None else None}
    if stored is not None and now - stored > timedelta(seconds=grace_seconds(app.settings)):
        status.warnings.append(
            f"the scheduler's stored next run ({_iso(stored)}) is overdue: `mailer scheduler` "
            "is not running (fine if cron sends instead)")


def _check_domain(app: App, status: Status) -> None:
    """The sending domain's DNS verdict kept today (`mailer.preflight.dnscache`): status
    looks nothing up, so it says what the day's first send found, or that none has looked."""
    if not app.settings.dns_check or app.settings.dsn.startswith("file://"):
        return
    kept = dnscache.kept_report(app)
    if kept is None:
        status.domain = {"checked_at": None, "warnings": None}
        return
    report, checked_at = kept
    status.domain = {"checked_at": checked_at, "warnings": len(report.findings)}


def _check_transport(app: App, status: Status) -> None:
    dsn = app.settings.dsn
    status.transport = {"dsn": redact_url(dsn), "reachable": False}
    try:
        transport = from_dsn(dsn, app.settings)
        status.transport["name"] = transport.name
        if isinstance(transport, FileTransport):
            detail = _file_writable(transport.directory)
        else:
            detail = transport.check()
    except Exception as exc:  # noqa: BLE001 - any failure here is the answer, not a crash
        reason = one_line(exc)
        status.transport["error"] = reason
        status.problem(f"transport unreachable: {reason}")
        return
    status.transport.update({"reachable": True, "detail": detail})


def _file_writable(directory: Path) -> str:
    """Check the outbox is (or can become) writable, without creating anything."""
    target = directory.resolve()
    probe = target
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise OSError(f"outbox path {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OSError(f"outbox directory {probe} is not writable")
    if probe != target:
        return f"file {target}: will be created (parent {probe} is writable)"
    count = sum(1 for _ in target.glob("*.eml"))
    return f"file {target}: writable, {count} message(s)"


# ---- output ----------------------------------------------------------------------------------


def render_text(status: Status) -> str:
    """The human report: one line per fact, problems first."""
    lines: list[str] = []
    lines.append("status: OK" if status.ok else f"status: {len(status.problems)} problem(s)")
    lines += [f"  PROBLEM: {p}" for p in status.problems]
    lines += [f"  warning: {w}" for w in status.warnings]
    db = status.database
    if db["state"] == DB_READY:
        lines.append(f"database: reachable ({db['url']}, revision {db['revision']})")
    elif db["state"] == DB_EMPTY:
        lines.append(f"database: reachable, no tables yet ({db['url']}): run `mailer init`")
    elif db["state"] == DB_NOT_CREATED:
        lines.append(f"database: not created yet ({db['url']}): run `mailer init`")
    else:
        lines.append(f"database: UNREACHABLE ({db['url']}): {db.get('error', '')}")
    e = status.last_edition
    if e is None:
        lines.append("last edition: none yet")
    else:
        c = e["counts"]
        lines.append(f"last edition: {e['date']} {e['state']}, {e['articles']} article(s), "
                     f"audience {e['audience']}: sent {c.get(SENT, 0)}, failed "
                     f"{c.get('failed', 0)}, unknown {c.get('ambiguous', 0)}, queued "
                     f"{c.get('queued', 0) + c.get('claimed', 0)}")
    n = status.next_run
    if n is None:
        lines.append("next run: none scheduled")
    else:
        lines.append(f"next run: {n['text']} for edition {n['edition_date']}")
    f = status.feed
    if f.get("last_fetch_at"):
        lines.append(f"feed: {f['state']}, last fetch {f['last_fetch_at']} (HTTP "
                     f"{f.get('last_status') or '-'})" + (f": {f['last_error']}" if
                                                          f.get("last_error") else ""))
    else:
        lines.append(f"feed: {f.get('state')}")
    if f.get("articles_waiting") is not None:
        lines.append(f"articles waiting for the next edition: {f['articles_waiting']}")
    t = status.transport
    if t.get("reachable"):
        lines.append(f"transport: {t.get('detail')}")
    else:
        lines.append(f"transport: UNREACHABLE ({t.get('dsn')}): {t.get('error', '')}")
    trig = status.trigger
    if trig.get("kind") == triggers.SCHEDULER:
        lines.append(f"trigger: the scheduler, running ({trig['where']}, seen {trig['seen_at']})")
    elif trig.get("kind") == triggers.CRON:
        lines.append(f"trigger: cron (the last `mailer send` ran at {trig['seen_at']} on "
                     f"{trig['where']})")
    elif trig:
        lines.append("trigger: NONE seen (see the warning above)")
    d = status.domain
    if d and d["checked_at"] is None:
        lines.append("sending domain: not checked yet today (the next send looks SPF, DKIM and "
                     "DMARC up; `mailer preflight --dns` does it now)")
    elif d:
        lines.append(f"sending domain: SPF, DKIM and DMARC sound at {d['checked_at'][11:16]} "
                     f"UTC, {plural(d['warnings'], 'warning')} (`mailer preflight --dns`)")
    s = status.scheduler
    if s.get("stored"):
        lines.append(f"scheduler job store: next run {s['stored_next_run']['text']}")
    return "\n".join(lines)


@overload
def _iso(moment: datetime) -> str: ...
@overload
def _iso(moment: datetime | None) -> str | None: ...


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")


def _moment(moment: datetime) -> dict[str, Any]:
    return {"local": moment.isoformat(timespec="minutes"),
            "utc": moment.astimezone(UTC).isoformat(timespec="minutes"),
            "zone": moment.tzname(),
            "text": f"{moment:%a %Y-%m-%d %H:%M %Z} ({moment.astimezone(UTC):%H:%M} UTC)"}
