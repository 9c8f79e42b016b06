"""`/api/v1/editions`: list, show (with click figures), preview, test send and send now.

"Send now" starts exactly what the console's button starts (`mailer.web.staff.send`: the
pipeline on a thread, under the run lock) and answers 202 at once with the edition's URL to
poll: a second call, another process or cron at the same moment all end in "already running"
or "already sent", and nobody gets two copies.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import Response, current_app

from mailer import audit, ledger
from mailer.clicks.report import sent_edition_stats
from mailer.edition import fill_preview, get_edition, list_editions
from mailer.errors import MailerError, one_line
from mailer.models import DAILY, Edition
from mailer.pipeline import send_test
from mailer.subscribers import InvalidAddress
from mailer.web.api.base import actor, bp, current_key, error, idempotent, scoped
from mailer.web.api.schemas import (
    EditionKind,
    EditionOut,
    EditionPage,
    EditionQuery,
    Outcome,
    PreviewQuery,
    SendIn,
    TestIn,
)
from mailer.web.context import mailer_app
from mailer.web.staff import send


def _day(value: str) -> date:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        day = None
    if day is None or value != day.isoformat():
        raise error(404, "an edition is named by its date, YYYY-MM-DD")
    return day


def _url(edition: Edition) -> str:
    suffix = "" if edition.kind == DAILY else f"?kind={edition.kind}"
    return f"/api/v1/editions/{edition.edition_date.isoformat()}{suffix}"


def edition_json(session: Any, edition: Edition, *, stats: bool) -> dict[str, Any]:
    return {"id": edition.id, "date": edition.edition_date.isoformat(), "kind": edition.kind,
            "state": edition.state, "subject": edition.subject, "audience": edition.audience,
            "sent_count": edition.sent_count, "failed_count": edition.failed_count,
            "created_at": edition.created_at, "started_at": edition.started_at,
            "finished_at": edition.finished_at, "url": _url(edition),
            "stats": sent_edition_stats(session, edition) if stats else None}


def _load(session: Any, day: str, kind: str) -> Edition:
    edition = get_edition(session, _day(day), kind)
    if edition is None:
        raise error(404, f"no {kind} edition for {day} has been built yet")
    return edition


@bp.get("/editions")
@scoped("editions:read")
@bp.input(EditionQuery, location="query", arg_name="query")
@bp.output(EditionPage)
def list_all(query: dict[str, Any]) -> dict[str, Any]:
    """The latest editions of a kind, newest first."""
    with mailer_app().sessions() as session:
        rows = list_editions(session, limit=query["limit"], kind=query["kind"])
        return {"data": [edition_json(session, e, stats=False) for e in rows]}


@bp.get("/editions/<day>")
@scoped("editions:read")
@bp.input(EditionKind, location="query", arg_name="query")
@bp.output(EditionOut)
def show(day: str, query: dict[str, Any]) -> dict[str, Any]:
    """One edition, its state and counts; its click figures with the stats:read scope."""
    with mailer_app().sessions() as session:
        edition = _load(session, day, query["kind"])
        return edition_json(session, edition, stats="stats:read" in current_key().scopes)


@bp.get("/editions/<day>/preview")
@scoped("editions:read")
@bp.input(PreviewQuery, location="query", arg_name="query")
@bp.doc(responses={200: "The email's HTML or text part, as a preview (no reader's links)"})
def preview(day: str, query: dict[str, Any]) -> Response:
    """The edition's HTML or text part as staff preview it."""
    app = mailer_app()
    with app.sessions() as session:
        edition = _load(session, day, query["kind"])
        html = query["format"] == "html"
        body = fill_preview(app.settings, edition, edition.html if html else edition.text)
    return Response(body, mimetype="text/html" if html else "text/plain")


@bp.post("/editions/<day>/test")
@scoped("editions:send")
@idempotent
@bp.input(EditionKind, location="query", arg_name="query")
@bp.input(TestIn, arg_name="body")
@bp.output(Outcome)
def test_send(day: str, query: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Send the edition, marked as a test, to up to ten addresses (no reader gets it)."""
    app, the_day = mailer_app(), _day(day)
    try:
        outcome = send_test(app, the_day, body["to"], kind=query["kind"])
    except InvalidAddress as exc:
        raise error(422, str(exc), errors={"json": {"to": [str(exc)]}}) from None
    except MailerError as exc:
        raise error(409, one_line(exc)) from None
    with app.sessions.begin() as session:
        audit.record(session, actor(), "test-sent", audit.edition_target(the_day, query["kind"]),
                     f"to {len(body['to'])} address(es): {outcome.status}", at=app.clock.now())
    return {"status": outcome.status, "message": outcome.message, "url": ""}


@bp.post("/editions/<day>/send")
@scoped("editions:send")
@idempotent
@bp.input(EditionKind, location="query", arg_name="query")
@bp.input(SendIn, arg_name="body")
@bp.output(Outcome, status_code=202)
def send_now(day: str, query: dict[str, Any],
             body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Start the send at once; poll the returned URL for its state."""
    app, the_day, kind = mailer_app(), _day(day), query["kind"]
    reason = " ".join(body["reason"].split())
    job, started = send.start(
        app, send.registry(current_app), the_day, actor=actor(), force=bool(reason),
        reason=reason, inline=bool(current_app.config["MAILER_SEND_INLINE"]),
        audit_detail="through the API" + (f"; forced: {reason}" if reason else ""),
        edition_kind=kind)
    url = f"/api/v1/editions/{the_day.isoformat()}" + ("" if kind == DAILY else f"?kind={kind}")
    if job.outcome is not None or job.error:
        message = job.error or (job.outcome.message if job.outcome else "")
        status = "failed" if job.error else (job.outcome.status if job.outcome else "")
    else:
        status = "started" if started else "already-running"
        message = "the send has started" if started else "this edition is being sent already"
    edition = ledger.load_edition(app.sessions, the_day, kind)
    if edition is not None:
        url = _url(edition)
    return {"status": status, "message": message, "url": url}, 202, {"Location": url}
