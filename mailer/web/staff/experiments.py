"""Console pages for what the newsroom tests: donation asks over a period, and the subject
lines of an edition's subject test.

The figures come from `mailer.clicks.asks` (per ask: readers shown, human donate clicks, a
95% interval, gifts) and `mailer.subject_test` (the test's record); these views only choose the
period, plan a test, and pause or resume an ask. Pausing is a setting override
(`paused_asks`, `mailer.overrides`): admins only, audited, and it applies from the next
edition built, as every setting does.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from mailer import audit, editions_control, overrides
from mailer.asks import POSITIONS, live
from mailer.clicks.asks import AskFigures, asks_over, better
from mailer.errors import ConfigError, MailerError
from mailer.web.context import mailer_app
from mailer.web.staff.auth import admin_required, bp, login_required, parse_day, record, today

#: The period the asks page shows when none is chosen.
DEFAULT_DAYS = 30


def _period() -> tuple[date, date]:
    """The period asked for (?since=&until=, dates), else the last `DEFAULT_DAYS` days."""
    until = today(mailer_app())
    since = until - timedelta(days=DEFAULT_DAYS - 1)
    try:
        if request.args.get("until"):
            until = date.fromisoformat(request.args["until"])
        if request.args.get("since"):
            since = date.fromisoformat(request.args["since"])
    except ValueError:
        flash("Dates are like 2026-12-01; showing the last 30 days.", "error")
        until = today(mailer_app())
        since = until - timedelta(days=DEFAULT_DAYS - 1)
    return min(since, until), max(since, until)


@bp.get("/asks")
@login_required
def asks() -> Any:
    """Each donation ask over a period: shown, clicks, rate with its interval, gifts."""
    app = mailer_app()
    since, until = _period()
    with app.sessions() as db:
        figures = asks_over(db, since, until)
    configured = app.settings.asks
    shown_now = {ask.name for ask in live(configured)}
    found = {f.name: f for f in figures}
    rows = [(ask, found.get(ask.name, AskFigures(ask.name)), ask.name in shown_now)
            for ask in configured]
    gone = [f for f in figures if f.name not in {ask.name for ask in configured}]
    return render_template("staff/asks.html", title="Donation asks", rows=rows, gone=gone,
                           best=better(figures), since=since, until=until,
                           several=len(configured) > 1, positions=POSITIONS)


def _set_paused(name: str, paused: bool) -> Response:
    app = mailer_app()
    names = [ask.name for ask in app.settings.asks]
    if name not in names:
        flash(f"There is no donation ask called {name!r}.", "error")
        return redirect(url_for("staff.asks"), code=303)
    current = [n.strip() for n in app.settings.paused_asks.split(",") if n.strip()]
    wanted = [n for n in current if n != name] + ([name] if paused else [])
    configured = app.configured or app.settings
    try:
        with app.sessions.begin() as db:
            app.settings = overrides.save_override(db, configured, app.settings, "paused_asks",
                                                   ", ".join(wanted))
            record(db, "ask-paused" if paused else "ask-resumed", f"ask:{name}",
                   f"paused asks now: {', '.join(wanted) or 'none'}")
    except ConfigError as exc:
        flash(str(exc), "error")
        return redirect(url_for("staff.asks"), code=303)
    flash(f"“{name}” is {'paused' if paused else 'shown again'} from the next edition built.")
    return redirect(url_for("staff.asks"), code=303)


@bp.post("/asks")
@admin_required
def save_ask() -> Response:
    """Add an ask, or change the one of that name: copy, amount, button label, position."""
    app = mailer_app()
    form = request.form
    entry = {key: " ".join(form.get(key, "").split()) for key in
             ("name", "copy", "amount", "label", "position")}
    entry = {key: value for key, value in entry.items() if value or key == "copy"}
    settings = app.settings
    tables = [dict(t) for t in settings.donation_asks] or [
        {"name": settings.donation_ask, "copy": settings.donation_copy,
         "amount": settings.donation_amount}]
    known = next((t for t in tables if t.get("name") == entry.get("name")), None)
    if known is not None:
        known.update(entry)
    else:
        tables.append(entry)
    configured = app.configured or app.settings
    try:
        with app.sessions.begin() as db:
            app.settings = overrides.save_override(
                db, configured, app.settings, "donation_asks",
                json.dumps(tables, ensure_ascii=False))
            record(db, "ask-changed" if known else "ask-added",
                   f"ask:{entry.get('name', '')}", json.dumps(entry, ensure_ascii=False))
    except ConfigError as exc:
        flash(f"Not saved: {exc}", "error")
        return redirect(url_for("staff.asks") + "#edit-ask", code=303)
    flash(f"Saved the ask “{entry['name']}”: readers see it from the next edition built.")
    return redirect(url_for("staff.asks"), code=303)


@bp.post("/asks/<name>/pause")
@admin_required
def pause_ask(name: str) -> Response:
    return _set_paused(name, True)


@bp.post("/asks/<name>/resume")
@admin_required
def resume_ask(name: str) -> Response:
    return _set_paused(name, False)


@bp.post("/editions/<day>/subject-test")
@login_required
def subject_lines(day: str) -> Response:
    """Plan (or clear) a subject test on one edition: up to three lines, one per field."""
    app = mailer_app()
    the_day = parse_day(day)
    lines = [request.form.get(f"line{i}", "") for i in range(1, 4)]
    try:
        changed = editions_control.set_subject_lines(app, the_day, lines)
    except MailerError as exc:
        flash(str(exc), "error")
        return redirect(url_for("staff.edition", day=the_day.isoformat()) + "#subject-test",
                        code=303)
    if changed:
        planned = [line for line in lines if line.strip()]
        with app.sessions.begin() as db:
            record(db, "subject-test-planned", audit.edition_target(the_day),
                   "; ".join(planned) if planned else "cleared: the settings decide")
        flash("Saved the subject lines to test." if planned else
              "No subject lines of its own: the settings decide whether it is tested.")
    else:
        flash("Nothing changed.")
    return redirect(url_for("staff.edition", day=the_day.isoformat()) + "#subject-test",
                    code=303)
