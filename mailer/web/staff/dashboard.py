"""The console's front page: today's edition, the next send, recent editions and list growth,
a warning when the latest edition's spam complaints approach Gmail's limit, and (for admins)
bursts of wrong passwords the alert email may not have reached anyone about."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from flask import redirect, render_template, url_for
from werkzeug.wrappers import Response

from mailer import audit, departures, triggers
from mailer.clicks.report import click_history
from mailer.edition import get_edition
from mailer.schedule import next_edition_day
from mailer.subscribers import counts
from mailer.web.context import mailer_app
from mailer.web.staff import stats
from mailer.web.staff.auth import bp, current_staff, login_required, today


@bp.get("/")
@login_required
def dashboard() -> Any:
    app = mailer_app()
    now = app.clock.now()
    day = today(app)
    with app.sessions() as db:
        edition = get_edition(db, day)
        history = stats.edition_history(db, limit=30, now=now)
        totals = counts(db)
        growth = stats.list_growth(db, now=now, tz=app.settings.tz, days=30)
        clicks = click_history(db, day, days=30)
        requests = stats.unsubscribe_requests(db, now=now)
        login_alerts = _login_alerts(db, now) if current_staff().is_admin else []
        trigger = triggers.current(db, app.settings, now)
    return render_template(
        "staff/dashboard.html", title="Dashboard", day=day, edition=edition,
        next_send=stats.next_send(app, now), history=history, totals=totals,
        growth=growth, chart=stats.growth_chart(growth), clicks=clicks,
        click_chart=stats.click_chart(clicks),
        audience=totals.get("active", 0), requests=requests, login_alerts=login_alerts,
        complaints=stats.complaint_alert(history),
        complaint_limits=(departures.COMPLAINT_ALERT_RATE, departures.COMPLAINT_ERROR_RATE),
        trigger=trigger, next_day=next_edition_day(app.settings, day),
        weekly_day=_next_weekly(app.settings.weekly_weekday, day)
        if app.settings.weekly_digest else None,
    )


def _next_weekly(weekday: int, day: date) -> date:
    """The weekly digest's date on or after `day` (its page, to prepare or to look back at)."""
    return day + timedelta(days=(weekday - day.weekday()) % 7)


def _login_alerts(db: Any, now: datetime) -> list[Any]:
    """Bursts of wrong passwords in the last day, for admins: the alert email may go to an
    inbox nobody reads, or nowhere when `staff_alerts` is empty."""
    entries, _ = audit.recent(db, limit=10, action="login-alert")
    return [entry for entry in entries if entry.created_at >= now - timedelta(days=1)]


@bp.get("/today")
@login_required
def today_edition() -> Response:
    return redirect(url_for("staff.edition", day=today(mailer_app()).isoformat()))
