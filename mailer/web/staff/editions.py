"""Console pages for one edition: preview, edits, test sends, send now and its progress.

Every edit is a POST that changes the edition through `mailer.editions_control` (which renders
the email again), then redirects back to the page (POST/redirect/GET), so the preview frames
reload with the new rendering and a browser refresh never repeats an action. The previews are
the real rendered parts with the per-reader placeholders filled for a fictional reader; they
are served from our own origin with the archive's email CSP (inline styles, remote images, no
scripts) and may be framed only by the console.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from sqlalchemy import func, select
from werkzeug.wrappers import Response

from mailer import audit, editions_control, ledger, pipeline, preflight
from mailer.app import App
from mailer.clicks.report import sent_edition_stats
from mailer.edition import (
    EDITABLE,
    build_edition,
    fill_preview,
    get_edition,
    send_instant,
    window_for,
)
from mailer.errors import FeedError, MailerError
from mailer.models import (
    DAILY,
    PAUSED_SEND,
    READY,
    SENDING,
    SENT,
    WEEKLY,
    Article,
    Edition,
    EditionArticle,
    SendLog,
    Subscriber,
)
from mailer.schedule import next_edition_day
from mailer.subscribers import InvalidAddress, normalise_email
from mailer.web.context import mailer_app
from mailer.web.security import EMAIL_CSP
from mailer.web.staff import send
from mailer.web.staff.auth import (
    current_staff,
    edition_route,
    login_required,
    parse_day,
    record,
    today,
)
from mailer.web.staff.stats import live_counts, send_summary
from mailer.wording import plural

MAX_TEST_RECIPIENTS = 20
#: How often the progress page reloads itself while a send runs (a Refresh header: no script).
REFRESH_SECONDS = 2
PREVIEW_CSP = EMAIL_CSP.replace("frame-ancestors 'none'", "frame-ancestors 'self'")


@dataclass(frozen=True)
class ItemView:
    article_id: int
    title: str
    section: str
    author: str
    published_at: datetime
    link: str
    pinned: bool


def _audience(db: Any, app: App, kind: str = DAILY) -> int:
    """The readers an edition of `kind` would go to now (daily readers only, while the
    weekly digest is offered)."""
    frequency = pipeline.audience_of(app.settings, kind)
    return db.scalar(select(func.count(Subscriber.id)).where(*ledger.audience(frequency))) or 0


def _name(kind: str) -> str:
    return "Weekly digest" if kind == WEEKLY else "Edition"


def _load(app: App, day: date, kind: str = DAILY) -> Edition | None:
    return ledger.load_edition(app.sessions, day, kind)


def _article_count(app: App, edition_id: int) -> int:
    with app.sessions() as db:
        return db.scalar(select(func.count()).select_from(EditionArticle)
                         .where(EditionArticle.edition_id == edition_id)) or 0


def _back(day: date, anchor: str = "", kind: str = DAILY) -> Response:
    url = url_for("staff.edition", day=day.isoformat(), kind=kind)
    return redirect(url + (f"#{anchor}" if anchor else ""), code=303)


# ---- the edition page ----------------------------------------------------------------------


@edition_route("", methods=["GET"])
@login_required
def edition(day: str, kind: str = DAILY) -> Any:
    app = mailer_app()
    the_day = parse_day(day)
    now = app.clock.now()
    with app.sessions() as db:
        ed = get_edition(db, the_day, kind)
        audience = _audience(db, app, kind)
        items: list[ItemView] = []
        dropped: list[Article] = []
        tests: list[SendLog] = []
        ledger_counts: dict[str, int] = {}
        clicks: dict[str, Any] | None = None
        if ed is not None:
            items = [ItemView(i.article_id, i.article.title, i.article.section,
                              i.article.author, i.article.published_at, i.article.link,
                              i.pinned) for i in ed.items]
            if ed.excluded:
                dropped = list(db.scalars(select(Article).where(Article.id.in_(ed.excluded))))
            tests = list(db.scalars(select(SendLog).where(SendLog.edition_id == ed.id,
                                                          SendLog.kind == "test")
                                    .order_by(SendLog.id.desc()).limit(10)))
            ledger_counts = live_counts(db, ed.id)
            clicks = sent_edition_stats(db, ed)
            db.expunge_all()
        window = None if ed is not None else window_for(db, app.settings, the_day, kind)
    job = send.registry(current_app).get(the_day, kind)
    version = hashlib.sha256((ed.html if ed else "").encode()).hexdigest()[:12]
    return render_template(
        "staff/edition.html", title=f"{_name(kind)} {the_day:%d %b %Y}", day=the_day, ed=ed,
        kind=kind,
        items=items, dropped=dropped, tests=tests, counts=ledger_counts, audience=audience,
        editable=ed is None or ed.state in EDITABLE, job=job, version=version,
        text=fill_preview(app.settings, ed, ed.text) if ed else "", window=window,
        due=send_instant(app.settings, the_day, kind), is_today=the_day == today(app),
        preflight=ed.preflight if ed and ed.preflight else None, now=now,
        html_kb=len(ed.html.encode()) / 1024 if ed else 0, clicks=clicks,
        next_day=next_edition_day(app.settings, the_day) if kind == DAILY else None,
    )


@edition_route("/preview", methods=["GET"])
@login_required
def preview(day: str, kind: str = DAILY) -> Response:
    """The HTML part for the preview frames (desktop and 375 px use the same document)."""
    app = mailer_app()
    ed = _load(app, parse_day(day), kind)
    if ed is None or not ed.html:
        abort(404)
    return email_preview(fill_preview(app.settings, ed, ed.html))


def email_preview(body: str) -> Response:
    """A rendered email as a console page serves it: the archive's email CSP, framable by
    the console only."""
    response = Response(body, mimetype="text/html")
    response.headers["Content-Security-Policy"] = PREVIEW_CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


@edition_route("/build", methods=["POST"])
@login_required
def build(day: str, kind: str = DAILY) -> Response:
    """Fetch the feed, then create or refresh the draft (staff edits are kept)."""
    app = mailer_app()
    the_day = parse_day(day)
    existing = _load(app, the_day, kind)
    if existing is not None and existing.state not in EDITABLE:
        flash(f"This edition is {existing.state}: it can no longer change.", "error")
        return _back(the_day, kind=kind)
    fetched = ""
    try:
        result = pipeline.collect_for(app, the_day, kind)
        fetched = ("the feed has not changed" if result.not_modified
                   else f"{result.new} new and {result.updated} updated articles")
    except FeedError as exc:
        flash(f"Could not fetch the feed ({exc}); the edition uses the articles already "
              "stored.", "error")
    built = build_edition(app, the_day, kind=kind)
    with app.sessions.begin() as db:
        record(db, "edition-built" if existing is None else "edition-refreshed",
               audit.edition_target(the_day, kind), fetched)
    n = _article_count(app, built.id)
    flash(f"Edition {'built' if existing is None else 'refreshed'}: {n} articles"
          + (f" ({fetched})." if fetched else "."))
    return _back(the_day, kind=kind)


@edition_route("/content", methods=["POST"])
@login_required
def content(day: str, kind: str = DAILY) -> Response:
    app = mailer_app()
    the_day = parse_day(day)
    before = _load(app, the_day, kind)
    form = request.form
    try:
        changed = editions_control.edit_text(
            app, the_day, subject=form.get("subject", ""), preheader=form.get("preheader", ""),
            editor_note=form.get("editor_note", ""), kind=kind)
    except MailerError as exc:
        flash(str(exc), "error")
        return _back(the_day, "content", kind)
    if changed and before is not None:
        after = _load(app, the_day, kind)
        assert after is not None
        fields = [name for name, a, b in (
            ("subject", before.subject, after.subject),
            ("preheader", before.preheader, after.preheader),
            ("editor's note", before.editor_note, after.editor_note)) if a != b]
        with app.sessions.begin() as db:
            record(db, "edition-edited", audit.edition_target(the_day, kind),
                   "changed " + ", ".join(fields) if fields else "")
        flash("Saved. The preview shows the new version.")
    else:
        flash("Nothing changed.")
    return _back(the_day, "content", kind)


@edition_route("/articles", methods=["POST"])
@login_required
def articles(day: str, kind: str = DAILY) -> Response:
    app = mailer_app()
    the_day = parse_day(day)
    action = request.form.get("action", "")
    raw_id = request.form.get("article_id", "")
    if not raw_id.isdigit() or action not in editions_control.ARRANGE_ACTIONS:
        abort(400)
    article_id = int(raw_id)
    try:
        editions_control.arrange(app, the_day, article_id, action, kind)
    except MailerError as exc:
        flash(str(exc), "error")
        return _back(the_day, "articles", kind)
    with app.sessions.begin() as db:
        title = db.scalar(select(Article.title).where(Article.id == article_id)) or ""
        record(db, "edition-arranged", audit.edition_target(the_day, kind),
               f"{action} article {article_id}: {title[:200]}")
    flash({"pin": "Pinned", "unpin": "Unpinned", "drop": "Dropped", "restore": "Restored",
           "up": "Moved up", "down": "Moved down", "top": "Moved to the top"}[action]
          + f": {title}")
    return _back(the_day, "articles", kind)


@edition_route("/order", methods=["POST"])
@login_required
def order(day: str, kind: str = DAILY) -> Response:
    """The whole story order at once: what the page's script sends after a drag and drop or
    an Up/Down/Lead press (answered in JSON, so the page does not reload); a form posting it
    gets the page back."""
    app = mailer_app()
    the_day = parse_day(day)
    raw = request.form.get("order", "")
    if not raw or not all(part.isdigit() for part in raw.split(",")):
        abort(400)
    ids = [int(part) for part in raw.split(",")]
    wants_json = request.accept_mimetypes.best == "application/json"
    try:
        editions_control.reorder(app, the_day, ids, kind)
    except MailerError as exc:
        if wants_json:
            return Response(json.dumps({"error": str(exc)}), status=409,
                            mimetype="application/json")
        flash(str(exc), "error")
        return _back(the_day, "articles", kind)
    with app.sessions.begin() as db:
        record(db, "edition-arranged", audit.edition_target(the_day, kind),
               "order " + ",".join(map(str, ids)))
        html = db.scalar(select(Edition.html).where(Edition.kind == kind,
                                                    Edition.edition_date == the_day)) or ""
    if wants_json:
        version = hashlib.sha256(html.encode()).hexdigest()[:12]
        return Response(json.dumps({"version": version}), mimetype="application/json")
    flash("Saved the new order.")
    return _back(the_day, "articles", kind)


@edition_route("/cancel-draft", methods=["POST"])
@login_required
def cancel_draft(day: str, kind: str = DAILY) -> Response:
    """Do not send this date's edition at all (the window is then carried by the next one)."""
    app = mailer_app()
    the_day = parse_day(day)
    ed = _load(app, the_day, kind)
    if ed is None or ed.state not in EDITABLE or not editions_control.cancel(app.sessions, ed.id):
        flash("Only an edition that has not started sending can be cancelled here.", "error")
        return _back(the_day, kind=kind)
    with app.sessions.begin() as db:
        record(db, "edition-cancelled", audit.edition_target(the_day, kind), "before sending")
    flash("Edition cancelled: nobody will receive it.")
    return _back(the_day, kind=kind)


# ---- tests ---------------------------------------------------------------------------------


def _recipients(raw: str) -> list[str]:
    parts = [p for p in re.split(r"[\s,;]+", raw) if p]
    if not parts:
        raise MailerError("Give at least one address to send the test to.")
    if len(parts) > MAX_TEST_RECIPIENTS:
        raise MailerError(f"A test goes to at most {MAX_TEST_RECIPIENTS} addresses.")
    addresses: list[str] = []
    bad: list[str] = []
    for part in parts:
        try:
            address = normalise_email(part)
        except InvalidAddress:
            bad.append(part[:80])
            continue
        if address not in addresses:
            addresses.append(address)
    if bad:
        raise MailerError("Not valid email addresses: " + ", ".join(bad))
    return addresses


@edition_route("/test", methods=["POST"])
@login_required
def send_test(day: str, kind: str = DAILY) -> Response:
    """Send the edition, marked [TEST], to the signed-in staff member or a list of addresses.
    Test sends do not touch the ledger: nobody on the list receives anything."""
    app = mailer_app()
    the_day = parse_day(day)
    try:
        if request.form.get("to") == "me":
            addresses = [current_staff().email]
        else:
            addresses = _recipients(request.form.get("addresses", ""))
        pipeline.send_test(app, the_day, addresses, collect_first=False, kind=kind)
    except MailerError as exc:
        flash(f"The test was not sent: {exc}", "error")
        return _back(the_day, "test", kind)
    with app.sessions.begin() as db:
        record(db, "test-sent", audit.edition_target(the_day, kind), ", ".join(addresses))
    flash(f"Test sent to {', '.join(addresses)}. Its subject starts with [TEST].")
    return _back(the_day, "test", kind)


@edition_route("/preflight", methods=["POST"])
@login_required
def run_preflight(day: str, kind: str = DAILY) -> Response:
    """Run the preflight checks now (the send runs them again in any case)."""
    app = mailer_app()
    the_day = parse_day(day)
    ed = _load(app, the_day, kind)
    if ed is None:
        flash("Build the edition first.", "error")
        return _back(the_day, kind=kind)
    report = preflight.run_checks(app, ed, dns="fresh" if app.settings.dns_check else "off")
    preflight.record(app, ed, report)
    with app.sessions.begin() as db:
        record(db, "preflight-run", audit.edition_target(the_day, kind),
               f"{len(report.errors)} errors, {len(report.warnings)} warnings")
    flash("Preflight checks passed." if report.ok else
          f"Preflight found {plural(len(report.errors), 'problem')} that would stop the send.",
          "message" if report.ok else "error")
    return _back(the_day, "preflight", kind)


# ---- send now ------------------------------------------------------------------------------


def _lateness(app: App, day: date, kind: str = DAILY) -> timedelta:
    return app.clock.now() - send_instant(app.settings, day, kind)


@edition_route("/send", methods=["GET"])
@login_required
def send_confirm(day: str, kind: str = DAILY) -> Any:
    """The confirm step: who will receive it, how many, and whether it is late."""
    app = mailer_app()
    the_day = parse_day(day)
    ed = _load(app, the_day, kind)
    if ed is not None and ed.state in (SENDING, PAUSED_SEND):
        return redirect(url_for("staff.progress", day=the_day.isoformat(), kind=kind))
    with app.sessions() as db:
        audience = _audience(db, app, kind)
    articles_count = _article_count(app, ed.id) if ed is not None else 0
    late = _lateness(app, the_day, kind)
    return render_template(
        "staff/send_confirm.html", title=f"Send the {_name(kind).lower()} of {the_day:%d %b %Y}",
        day=the_day, kind=kind, ed=ed, audience=audience, articles_count=articles_count,
        late=late > timedelta(hours=app.settings.late_send_hours), late_by=late,
        late_hours=app.settings.late_send_hours,
        due=send_instant(app.settings, the_day, kind), sendable=ed is None or ed.state in EDITABLE,
        preflight=ed.preflight if ed and ed.preflight else None,
    )


@edition_route("/send", methods=["POST"])
@login_required
def send_now(day: str, kind: str = DAILY) -> Response:
    app = mailer_app()
    the_day = parse_day(day)
    reason = " ".join(request.form.get("reason", "").split())[:500]
    with app.sessions() as db:
        audience = _audience(db, app, kind)
    detail = f"audience about {audience}" + (f"; forced: {reason}" if reason else "")
    _, started = send.start(
        app, send.registry(current_app), the_day, actor=current_staff().email,
        force=bool(reason), reason=reason, inline=bool(current_app.config["MAILER_SEND_INLINE"]),
        audit_detail=detail, edition_kind=kind)
    if not started:
        flash("This edition is already being sent from here: nothing new was started.")
    return redirect(url_for("staff.progress", day=the_day.isoformat(), kind=kind), code=303)


@edition_route("/progress", methods=["GET"])
@login_required
def progress(day: str, kind: str = DAILY) -> Any:
    app = mailer_app()
    the_day = parse_day(day)
    job = send.registry(current_app).get(the_day, kind)
    ed = ledger.load_edition(app.sessions, the_day, kind)
    with app.sessions() as db:
        c = live_counts(db, ed.id if ed is not None else None)
    rate = None
    if job is not None and job.progress is not None and job.running:
        rate = job.progress.rate
    elif ed is not None and ed.started_at is not None:
        end = ed.finished_at or app.clock.now()
        elapsed = (end - ed.started_at).total_seconds()
        rate = c["sent"] / elapsed if elapsed > 0 else None
    live = (ed is not None and ed.state == SENDING) or (job is not None and job.running)
    total = ed.audience if ed is not None and ed.audience else sum(c.values())
    # Pressed "Send now" a moment ago: the edition is still being prepared, nobody queued yet.
    starting = live and (ed is None or ed.state in EDITABLE + (READY,)) and not total
    with app.sessions() as db:
        expected = _audience(db, app, kind) if starting else 0
    body = render_template(
        "staff/progress.html", title=f"Sending the {_name(kind).lower()} of {the_day:%d %b %Y}",
        day=the_day, kind=kind, ed=ed, counts=c, total=total, rate=rate, job=job, live=live,
        done=c["sent"] + c["failed"] + c["unknown"] + c["withdrawn"], refresh=REFRESH_SECONDS,
        starting=starting, expected=expected,
        summary=send_summary(ed, c, app.settings.tz) if ed is not None and ed.state == SENT
        else "",
    )
    response = Response(body, mimetype="text/html")
    if live:
        response.headers["Refresh"] = str(REFRESH_SECONDS)
    return response


def _control(day: str, action: str, kind: str) -> Response:
    app = mailer_app()
    the_day = parse_day(day)
    ed = _load(app, the_day, kind)
    if ed is None:
        abort(404)
    control = {"pause": editions_control.pause, "resume": editions_control.resume,
               "cancel": editions_control.cancel}[action]
    if not control(app.sessions, ed.id):
        flash(f"Nothing changed: the edition is {ed.state}.", "error")
        return redirect(url_for("staff.progress", day=the_day.isoformat(), kind=kind), code=303)
    with app.sessions.begin() as db:
        record(db, {"pause": "send-paused", "resume": "send-resumed",
                    "cancel": "send-cancelled"}[action], audit.edition_target(the_day, kind))
    if action == "resume":
        send.start(app, send.registry(current_app), the_day,
                   actor=current_staff().email, kind="resume", edition_kind=kind,
                   inline=bool(current_app.config["MAILER_SEND_INLINE"]))
        flash("Resumed: sending to the rest of the list.")
    elif action == "pause":
        flash("Paused: messages already on their way finish; nobody else is sent to until "
              "you resume.")
    else:
        flash("Cancelled: nobody else will receive this edition.")
    return redirect(url_for("staff.progress", day=the_day.isoformat(), kind=kind), code=303)


@edition_route("/pause", methods=["POST"])
@login_required
def pause(day: str, kind: str = DAILY) -> Response:
    return _control(day, "pause", kind)


@edition_route("/resume", methods=["POST"])
@login_required
def resume(day: str, kind: str = DAILY) -> Response:
    return _control(day, "resume", kind)


@edition_route("/cancel", methods=["POST"])
@login_required
def cancel(day: str, kind: str = DAILY) -> Response:
    return _control(day, "cancel", kind)
