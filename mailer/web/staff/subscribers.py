"""Console pages for the subscriber list: search, one subscriber's story, changes, CSV.

Status changes go through the same rules the readers' own pages use (`mailer.optin`): staff can
unsubscribe someone at once, but bringing someone back always sends them a confirmation email,
because an address that left may have changed hands. Erasure (`mailer.erasure`) removes the
person and leaves only a hash, so an import cannot quietly re-add them.

The export is a POST: it hands out the whole list, so it needs the CSRF token like any other
action (a link on another site cannot make a signed-in browser download it) and is audited.
"""

from __future__ import annotations

import csv
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from sqlalchemy import func, or_, select
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response

from mailer import audit, optin
from mailer.erasure import erase
from mailer.errors import MailerError
from mailer.feedback.unsubscribe_mail import KEPT_EVENT
from mailer.models import STATUSES, Delivery, Edition, Subscriber
from mailer.subscribers import (
    NotText,
    counts,
    csv_text,
    export_csv_text,
    import_csv_batched,
    record_event,
)
from mailer.web.context import mailer_app
from mailer.web.public import ERRORS, dispatch_confirmation, message_page, requested_page
from mailer.web.staff.auth import bp, current_staff, login_required, record

PAGE_SIZE = 50
#: Uploads of a real list (tens of thousands of rows) are bigger than any form: a Mailchimp
#: export of 50,000 readers, with its twenty-odd columns, is about 15 MB.
MAX_IMPORT_BYTES = 32 * 1024 * 1024
#: Werkzeug counts the file's bytes in transit (its parser's 64 KB buffer) against
#: max_form_memory_size too, so the app-wide 64 KB made any upload over ~190 KB a 413. The file
#: itself goes to a temporary file (in memory only up to 500 KB); this bounds the text fields.
IMPORT_FORM_MEMORY = 256 * 1024
#: Lines listed on the result page; the summary counts them all.
MAX_LISTED_ERRORS = 500
IMPORT_SOURCE = "staff-import"
IMPORT_TITLE = "Import subscribers"


@bp.url_value_preprocessor
def _allow_large_imports(endpoint: str | None, values: dict[str, Any] | None) -> None:
    # Runs before any before_request hook (the CSRF check reads the form, and so the body).
    if endpoint == "staff.import_subscribers":
        request.max_content_length = MAX_IMPORT_BYTES
        request.max_form_memory_size = IMPORT_FORM_MEMORY


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(exc: RequestEntityTooLarge) -> Any:
    """On the import page, say what the limit is and what to do; elsewhere the usual page."""
    if request.endpoint != "staff.import_subscribers":
        return message_page(*ERRORS[413], 413)
    return _import_page(413, error=f"The file is larger than {_limit_mb()} MB, the most one "
                                   "import takes. Split it into smaller files and import "
                                   "each one. Nothing was imported.")


def _limit_mb() -> str:
    return f"{MAX_IMPORT_BYTES / (1024 * 1024):g}"


def _import_page(status: int = 200, **context: Any) -> tuple[str, int]:
    return render_template("staff/import.html", title=IMPORT_TITLE, max_mb=_limit_mb(),
                           **context), status


def _target(sub_id: int) -> str:
    return audit.subscriber_target(sub_id)


def _get(db: Any, sub_id: int) -> Subscriber:
    sub = db.get(Subscriber, sub_id)
    if sub is None:
        abort(404)
    return sub


@bp.get("/subscribers")
@login_required
def subscribers() -> Any:
    app = mailer_app()
    q = request.args.get("q", "").strip()[:320]
    status = request.args.get("status", "")
    if status and status not in STATUSES:
        abort(400)
    number = requested_page(request.args.get("page"))
    query = select(Subscriber)
    if status:
        query = query.where(Subscriber.status == status)
    if q:
        needle = q.lower()
        query = query.where(or_(Subscriber.email.contains(needle, autoescape=True),
                                func.lower(Subscriber.name).contains(needle, autoescape=True)))
    with app.sessions() as db:
        total = db.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = list(db.scalars(query.order_by(Subscriber.id.desc())
                               .offset((number - 1) * PAGE_SIZE).limit(PAGE_SIZE)))
        totals = counts(db)
    pages = max(1, -(-total // PAGE_SIZE))
    if number > pages:
        abort(404)
    return render_template("staff/subscribers.html", title="Subscribers", rows=rows, q=q,
                           status=status, statuses=STATUSES, total=total, totals=totals,
                           number=number, pages=pages)


@bp.get("/subscribers/<int:sub_id>")
@login_required
def subscriber(sub_id: int) -> Any:
    app = mailer_app()
    with app.sessions() as db:
        sub = _get(db, sub_id)
        events = list(sub.events)
        deliveries = db.execute(
            select(Edition.edition_date, Delivery.state, Delivery.sent_at, Delivery.error)
            .join(Edition, Edition.id == Delivery.edition_id)
            .where(Delivery.subscriber_id == sub.id)
            .order_by(Edition.edition_date.desc()).limit(10)
        ).all()
        history, _ = audit.recent(db, target=_target(sub.id), limit=20)
        db.expunge_all()
    return render_template("staff/subscriber.html", title=sub.email, sub=sub, events=events,
                           deliveries=deliveries, history=history,
                           left=sub.status in optin.LEFT)


@bp.post("/subscribers/<int:sub_id>/unsubscribe")
@login_required
def unsubscribe(sub_id: int) -> Response:
    app = mailer_app()
    with app.sessions.begin() as db:
        sub = _get(db, sub_id)
        changed = optin.unsubscribe(db, sub, now=app.clock.now(), source="staff",
                                    detail=f"by {current_staff().email}")
        if changed:
            record(db, "subscriber-unsubscribed", _target(sub.id))
    flash("Unsubscribed: they will get nothing from the next edition on." if changed
          else "Nothing changed: this subscriber already gets nothing.")
    return redirect(url_for("staff.subscriber", sub_id=sub_id), code=303)


@bp.post("/subscribers/<int:sub_id>/keep")
@login_required
def keep(sub_id: int) -> Response:
    """An email to the unsubscribe address that was not a request to leave (the dashboard's
    list of requests without a token): noted, so the dashboard stops listing it."""
    app = mailer_app()
    with app.sessions.begin() as db:
        sub = _get(db, sub_id)
        record_event(db, sub, KEPT_EVENT, source="staff",
                     detail=f"by {current_staff().email}: the email was not a request to "
                            "leave", at=app.clock.now())
        record(db, "subscriber-kept", _target(sub.id), "unsubscribe request set aside")
    flash("Set aside: they stay on the list, and the dashboard no longer lists their email.")
    return redirect(url_for("staff.dashboard"), code=303)


@bp.post("/subscribers/<int:sub_id>/resubscribe")
@login_required
def resubscribe(sub_id: int) -> Response:
    """Ask the reader to confirm again: they are `pending` and get nothing until they do.

    A bounced or complained address can only come back this way, with a reason (the form's
    ``reason``), audited as ``subscriber-reinstated``: the public pages leave it alone."""
    app = mailer_app()
    reason = optin.clean_reason(request.form.get("reason"))
    try:
        with app.sessions.begin() as db:
            sub = _get(db, sub_id)
            was = sub.status
            confirm = optin.reinstate(db, sub, reason=reason, now=app.clock.now(),
                                      source="staff")
            detail = "confirmation email sent" + (f"; reason: {reason}" if reason else "")
            if was in optin.STAFF_ONLY:
                record(db, "subscriber-reinstated", _target(sub.id), f"was {was}; {detail}")
            else:
                record(db, "subscriber-resubscribe", _target(sub.id), detail)
    except optin.OptinError as exc:
        flash(str(exc), "error")
        return redirect(url_for("staff.subscriber", sub_id=sub_id), code=303)
    dispatch_confirmation(confirm)
    flash("A confirmation email is on its way. They will get the daily email again once they "
          "press its link.")
    return redirect(url_for("staff.subscriber", sub_id=sub_id), code=303)


@bp.route("/subscribers/<int:sub_id>/erase", methods=["GET", "POST"])
@login_required
def erase_subscriber(sub_id: int) -> Any:
    """Right to erasure, with a confirm step (GET shows what will go; POST does it). Admins,
    and editors an admin allowed: it cannot be undone."""
    if not current_staff().can_erase:
        abort(403)
    app = mailer_app()
    if request.method != "POST":
        with app.sessions() as db:
            sub = _get(db, sub_id)
            events = len(sub.events)
            sent = db.scalar(select(func.count()).select_from(Delivery)
                             .where(Delivery.subscriber_id == sub.id)) or 0
            db.expunge_all()
        return render_template("staff/erase.html", title=f"Erase {sub.email}", sub=sub,
                               events=events, deliveries=sent)
    if request.form.get("confirm") != "yes":
        flash("Tick the box to confirm the erasure.", "error")
        return redirect(url_for("staff.erase_subscriber", sub_id=sub_id), code=303)
    with app.sessions.begin() as db:
        sub = _get(db, sub_id)
        result = erase(db, sub, at=app.clock.now())
        record(db, "subscriber-erased", _target(result.subscriber_id),
               f"address hash {result.email_hash[:12]}…; {result.deliveries} ledger rows "
               "anonymised")
    flash("Erased. Only a hash of the address remains, so an import cannot add it back "
          "without anyone noticing.")
    return redirect(url_for("staff.subscribers"), code=303)


@bp.route("/subscribers/import", methods=["GET", "POST"])
@login_required
def import_subscribers() -> Any:
    """Upload a CSV (email, name, status or a Mailchimp export); bad lines are reported by
    number and the good ones kept.

    The rows go in 1,000 to a transaction (`import_csv_batched`), so on SQLite confirmation
    clicks, webhooks and a send under way write between batches instead of waiting for the
    whole list; 50,000 rows take a few seconds, within the request."""
    if request.method != "POST":
        return _import_page()
    upload = request.files.get("csv")
    if upload is None or not upload.filename:
        return _import_page(400, error="Choose a CSV file to upload.")
    app = mailer_app()
    try:
        report = import_csv_batched(app.sessions, csv_text(upload.stream),
                                    source=IMPORT_SOURCE, at=app.clock.now(),
                                    sections=app.settings.sections)
    except NotText as exc:
        error = str(exc)[:1].upper() + str(exc)[1:]
    except (csv.Error, MailerError) as exc:
        error = f"The file could not be read: {exc}"
    else:
        with app.sessions.begin() as db:
            record(db, "subscribers-imported", "subscribers",
                   f"{upload.filename[:100]}: {next(report.lines())}")
        return _import_page(report=report, summary=report.sentence(), filename=upload.filename,
                            listed=report.errors[:MAX_LISTED_ERRORS],
                            unlisted=max(0, len(report.errors) - MAX_LISTED_ERRORS))
    return _import_page(400, error=f"{error}. Nothing was imported.")


@bp.post("/subscribers/export")
@login_required
def export_subscribers() -> Response:
    app = mailer_app()
    status = request.form.get("status", "")
    if status and status not in STATUSES:
        abort(400)
    with app.sessions() as db:
        body = export_csv_text(db, status or None)
    with app.sessions.begin() as db:
        record(db, "subscribers-exported", "subscribers", f"status {status or 'all'}")
    day = app.clock.today(app.settings.tz).isoformat()
    name = f"subscribers-{status + '-' if status else ''}{day}.csv"
    response = Response(body, mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
