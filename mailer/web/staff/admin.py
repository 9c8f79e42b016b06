"""Console pages for admins and for the record: the settings overrides and the audit log.

The settings page edits the short allow-list in `mailer.overrides` (donation copy, amount and
link; sender name and reply-to; send time and days). Values are validated as a whole and saved
in one transaction with one audit entry per changed key; this web process uses them at once,
other processes when they next build their settings (see docs/staff.md).
"""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from sqlalchemy import select

from mailer import audit, overrides
from mailer.accounts import list_staff
from mailer.config import parse_days
from mailer.errors import ConfigError
from mailer.models import Subscriber
from mailer.web.context import mailer_app
from mailer.web.public import requested_page
from mailer.web.staff.auth import admin_required, bp, login_required, record

AUDIT_PAGE = 50


def _settings_page(status: int = 200, *, error: str = "", error_key: str = "",
                   submitted: dict[str, str] | None = None) -> Any:
    app = mailer_app()
    configured = app.configured or app.settings
    stored = overrides.load_overrides(app.sessions)
    fields = [
        {"field": f,
         "value": (submitted or {}).get(f.key, overrides.current_value(app.settings, f.key)),
         "configured": overrides.current_value(configured, f.key),
         "overridden": f.key in stored}
        for f in overrides.FIELDS if f.on_settings_page
    ]
    with app.sessions() as db:
        staff_users = list_staff(db)
        db.expunge_all()
    days = next((str(item["value"]) for item in fields
                 if getattr(item["field"], "key", "") == "send_days"), "")
    try:
        chosen = parse_days(days)
    except (ConfigError, ValueError):
        chosen = frozenset()
    return render_template("staff/settings.html", title="Settings", fields=fields, error=error,
                           error_key=error_key, staff_users=staff_users,
                           timezone=app.settings.timezone, weekdays=WEEKDAYS,
                           chosen_days=chosen), status


WEEKDAYS = (("mon", "Monday"), ("tue", "Tuesday"), ("wed", "Wednesday"), ("thu", "Thursday"),
            ("fri", "Friday"), ("sat", "Saturday"), ("sun", "Sunday"))
LABELS = {f.key: f.label for f in overrides.FIELDS} | {"from_addr": "Sender name"}


def _submitted() -> dict[str, str]:
    """The form's values; the send days come as one checkbox a day."""
    submitted = {f.key: request.form.get(f.key, "") for f in overrides.FIELDS
                 if f.on_settings_page}
    if request.form.get("send_days_picker"):
        ticked = [n for n, (day, _) in enumerate(WEEKDAYS)
                  if day in request.form.getlist("send_day")]
        current = overrides.current_value(mailer_app().settings, "send_days")
        try:
            same = parse_days(current) == frozenset(ticked)
        except ValueError:
            same = False
        # The same days as now keep their spelling ("mon-fri"): no change to record.
        submitted["send_days"] = current if same else ",".join(WEEKDAYS[n][0] for n in ticked)
    return submitted


def _in_words(message: str) -> tuple[str, str]:
    """(the error with the field's label instead of its key, the field's key)."""
    key, _, why = message.removeprefix("setting ").partition(":")
    key = "sender_name" if key == "from_addr" else key
    label = LABELS.get(key)
    return (f"{label}:{why}" if label else message), key


@bp.route("/settings", methods=["GET", "POST"])
@admin_required
def settings() -> Any:
    if request.method != "POST":
        return _settings_page()
    app = mailer_app()
    configured = app.configured or app.settings
    if request.form.get("action") == "reset":
        with app.sessions.begin() as db:
            overrides.clear_overrides(db)
            record(db, "settings-reset", "settings", "every override removed")
        app.settings = overrides.with_overrides(configured, app.sessions)
        flash("Every setting is back to the configuration file's value.")
        return redirect(url_for("staff.settings"), code=303)
    submitted = _submitted()
    try:
        with app.sessions.begin() as db:
            new, changed = overrides.save_overrides(db, configured, app.settings, submitted)
            for key, (old, value) in changed.items():
                record(db, "setting-changed", f"setting:{key}", f"{old!r} -> {value!r}")
    except ConfigError as exc:
        message, key = _in_words(str(exc))
        return _settings_page(400, error=message, error_key=key, submitted=submitted)
    app.settings = new
    flash("Saved: " + ", ".join(changed) if changed else "Nothing changed.")
    return redirect(url_for("staff.settings"), code=303)


@bp.get("/audit")
@login_required
def audit_log() -> Any:
    app = mailer_app()
    actor = request.args.get("actor", "")[:320]
    action = request.args.get("action", "")[:60]
    number = requested_page(request.args.get("page"))
    with app.sessions() as db:
        entries, total = audit.recent(db, limit=AUDIT_PAGE, offset=(number - 1) * AUDIT_PAGE,
                                      actor=actor, action=action)
        ids = [int(e.target.split(":", 1)[1]) for e in entries
               if e.target.startswith("subscriber:") and e.target.split(":", 1)[1].isdigit()]
        emails = dict(db.execute(select(Subscriber.id, Subscriber.email)
                                 .where(Subscriber.id.in_(ids))).all()) if ids else {}
        names = audit.actions(db)
        db.expunge_all()
    return render_template("staff/audit.html", title="Audit log", entries=entries,
                           total=total, number=number, more=total > number * AUDIT_PAGE,
                           actor=actor, action=action, actions=names, emails=emails)


def edition_day(target: str) -> str:
    """The date in an ``edition:YYYY-MM-DD`` target, or ""."""
    return target.removeprefix("edition:") if target.startswith("edition:") else ""


@bp.app_template_global("audit_link")
def _audit_link(target: str) -> str:
    """Where an audit target points to in the console ("" when nowhere)."""
    day = edition_day(target)
    if day:
        return url_for("staff.edition", day=day)
    if target.startswith("subscriber:") and target.split(":", 1)[1].isdigit():
        return url_for("staff.subscriber", sub_id=int(target.split(":", 1)[1]))
    return ""
