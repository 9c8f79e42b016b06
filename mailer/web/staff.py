"""The staff console under /staff: login, dashboard, and the shared plumbing of its pages.

In the shape of Flask's tutorial: one blueprint, `login_required` / `admin_required` built with
`functools.wraps`, the signed-in user loaded once per request into `g.staff`. The console calls
the same domain functions as the CLI (`mailer.pipeline`, `mailer.editions_control`,
`mailer.subscribers`, `mailer.optin`, `mailer.overrides`), and every change it makes is written
to the audit log in the same transaction.

Access is refused by default: a `before_request` hook on the blueprint sends every request
without a valid session to the login page before any view runs, so a view that forgets its
decorator is still protected (the decorators say what each view needs, for the reader and for
views moved elsewhere). CSRF tokens are the web app's own (`mailer.web.security`); the session
cookie is HttpOnly, SameSite=Lax, and Secure and host-only under https. The cookie names the
account's session generation, checked against the database on every request, so signing out
(or a new password) ends the session on the server and not only in the browser.

The pages are split by area: this module (login, dashboard), `staff_editions` (preview, edits,
test and real sends), `staff_subscribers` (list, events, erasure, CSV), `staff_admin` (settings,
audit log). They all register on this module's `bp`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from mailer import audit
from mailer.app import App
from mailer.models import StaffUser
from mailer.staff import ADMIN, LoginRefused, authenticate, end_sessions, password_version
from mailer.web import mailer_app
from mailer.web.ratelimit import Limit, hit, ip_key
from mailer.web.security import CSP

log = logging.getLogger("mailer.web.staff")

F = TypeVar("F", bound=Callable[..., Any])

bp = Blueprint("staff", __name__, url_prefix="/staff")

SESSION_USER = "staff_id"
SESSION_VERSION = "staff_v"
SESSION_SINCE = "staff_at"
SESSION_GENERATION = "staff_g"
#: A console session ends this long after login, however active it was.
SESSION_HOURS = 12
#: Endpoints reachable without a session (the login form itself).
OPEN_ENDPOINTS = frozenset({"staff.login"})
#: Per client IP, on top of the per-account lock in `mailer.staff`.
LOGIN_LIMITS = (Limit(20, 600), Limit(100, 86400))
#: Staff pages may frame their own previews; public pages still may not frame anything.
STAFF_CSP = CSP + "; frame-src 'self'"


@dataclass(frozen=True)
class StaffSession:
    """The signed-in staff member, as the views need them."""

    id: int
    email: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


# ---- access --------------------------------------------------------------------------------


def current_staff() -> StaffSession:
    """The signed-in staff member (views behind `login_required` only)."""
    user: StaffSession | None = g.get("staff")
    if user is None:  # a view reached without the decorators' checks: refuse, never guess
        abort(403)
    return user


def _load_staff() -> StaffSession | None:
    """The session's staff member, or None when the session is absent, expired, or belongs to
    an account that was removed, signed out or whose password changed since.

    The cookie is signed, so its contents are ours, but it is also a bearer token that
    outlives sign-out in any copy of it; the account's session generation, read from the
    database on every request, is what makes sign-out final."""
    user_id = session.get(SESSION_USER)
    if not isinstance(user_id, int):
        return None
    app = mailer_app()
    since = session.get(SESSION_SINCE)
    now = app.clock.now()
    try:
        started = datetime.fromisoformat(since) if isinstance(since, str) else None
    except ValueError:
        started = None
    if started is None or not (now - timedelta(hours=SESSION_HOURS) <= started
                               <= now + timedelta(minutes=5)):
        return None
    with app.sessions() as db:
        user = db.get(StaffUser, user_id)
        if user is None or session.get(SESSION_VERSION) != password_version(user):
            return None
        generation = session.get(SESSION_GENERATION)
        if not isinstance(generation, int) or generation != user.session_generation:
            return None
        return StaffSession(user.id, user.email, user.role)


def _to_login() -> Response:
    target = request.full_path.rstrip("?") if request.method == "GET" else ""
    args = {"next": target} if target and target != "/staff/" else {}
    return redirect(url_for("staff.login", **args), code=303 if request.method != "GET" else 302)


@bp.before_request
def _require_session() -> Response | None:
    g.staff = _load_staff()
    if g.staff is None:
        for key in (SESSION_USER, SESSION_VERSION, SESSION_SINCE, SESSION_GENERATION):
            session.pop(key, None)
        if request.endpoint not in OPEN_ENDPOINTS:
            return _to_login()
    return None


def login_required(view: F) -> F:
    """Refuse the view without a signed-in staff member (redirect to the login page)."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if g.get("staff") is None:
            return _to_login()
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def admin_required(view: F) -> F:
    """Like `login_required`, and 403 for anyone who is not an admin."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        user = g.get("staff")
        if user is None:
            return _to_login()
        if not user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


@bp.after_request
def _staff_headers(response: Response) -> Response:
    # Runs before the app-wide hook, which only fills headers that are not set yet.
    response.headers.setdefault("Content-Security-Policy", STAFF_CSP)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


# ---- helpers shared by the staff pages -----------------------------------------------------


def actor() -> str:
    """Who the audit log names for this request."""
    return current_staff().email


def record(db: Any, action: str, target: str = "", detail: str = "") -> None:
    """Audit entry for the current staff member, in the caller's transaction."""
    audit.record(db, actor(), action, target, detail, at=mailer_app().clock.now())


def local(moment: datetime | None, fmt: str = "%a %d %b %Y, %H:%M") -> str:
    """A UTC instant as the newsroom reads it: in the configured time zone."""
    if moment is None:
        return "–"
    return moment.astimezone(mailer_app().settings.tz).strftime(fmt)


def today(app: App) -> date:
    return app.clock.today(app.settings.tz)


def parse_day(value: str) -> date:
    """The edition date from a URL: only canonical YYYY-MM-DD, else 404."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        abort(404)
    if value != day.isoformat():
        abort(404)
    return day


def client_ip() -> str:
    return request.remote_addr or "unknown"


def safe_next(target: str | None) -> str:
    """Where to go after login: only a path inside the console (no open redirect)."""
    if target:
        parts = urlsplit(target)
        if (not parts.scheme and not parts.netloc and parts.path.startswith("/staff/")
                and "\\" not in target and not target.startswith("//")):
            return target
    return url_for("staff.dashboard")


@bp.app_template_filter("localtime")
def _localtime_filter(moment: datetime | None, fmt: str = "%a %d %b %Y, %H:%M") -> str:
    return local(moment, fmt)


@bp.context_processor
def _staff_context() -> dict[str, Any]:
    return {"staff": g.get("staff"), "today_iso": today(mailer_app()).isoformat()}


# ---- login / logout ------------------------------------------------------------------------


def _login_limits() -> tuple[Limit, ...]:
    configured = current_app.config.get("MAILER_RATE_LIMITS", {})
    return tuple(configured.get("staff-login-ip", LOGIN_LIMITS))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    next_url = request.values.get("next", "")
    if g.get("staff") is not None and request.method == "GET":
        return redirect(safe_next(next_url))
    if request.method != "POST":
        return render_template("staff/login.html", title="Sign in", next_url=next_url)
    app = mailer_app()
    email = request.form.get("email", "").strip()
    password = request.form.get("password", "")
    now = app.clock.now()
    # Its own committed transaction (SQLite has one writer; see public.allowed).
    with app.sessions.begin() as db:
        ok = hit(db, ip_key("staff-login", client_ip()), _login_limits(), now=now)
    if not ok:
        log.warning("staff login refused: too many attempts from %s", client_ip())
        return render_template("staff/login.html", title="Sign in", next_url=next_url, email=email,
                               error="Too many attempts from your network: please wait a few "
                                     "minutes and try again."), 429
    refused: LoginRefused | None = None
    with app.sessions.begin() as db:  # committed either way: failures count towards the lock
        try:
            result = authenticate(db, email, password, now=now)
        except LoginRefused as exc:
            refused = exc
            audit.record(db, email.lower()[:320] or "(no address)", "login-failed",
                         detail=f"ip {client_ip()}" + ("; account locked" if exc.locked
                                                         else ""), at=now)
        else:
            audit.record(db, result.email, "login", detail=f"ip {client_ip()}", at=now)
    if refused is not None:
        return render_template("staff/login.html", title="Sign in", next_url=next_url, email=email,
                               error=str(refused)), 401
    session.clear()  # a fresh session (and CSRF secret) for the signed-in user
    session[SESSION_USER] = result.user_id
    session[SESSION_VERSION] = result.version
    session[SESSION_GENERATION] = result.generation
    session[SESSION_SINCE] = now.isoformat()
    return redirect(safe_next(next_url), code=303)


@bp.post("/logout")
@login_required
def logout() -> Response:
    """Sign out everywhere: the account's session generation goes up, so this cookie and any
    copy of it (and the account's other browsers) stop working, not just this browser's."""
    app = mailer_app()
    with app.sessions.begin() as db:
        end_sessions(db, current_staff().id)
        record(db, "logout")
    session.clear()
    flash("You have signed out.")
    return redirect(url_for("staff.login"), code=303)


# ---- dashboard -----------------------------------------------------------------------------


@bp.get("/")
@login_required
def dashboard() -> Any:
    from mailer.edition import get_edition
    from mailer.subscribers import counts
    from mailer.web import staff_stats

    app = mailer_app()
    now = app.clock.now()
    day = today(app)
    with app.sessions() as db:
        edition = get_edition(db, day)
        history = staff_stats.edition_history(db, limit=30, now=now)
        totals = counts(db)
        growth = staff_stats.list_growth(db, now=now, tz=app.settings.tz, days=30)
        requests = staff_stats.unsubscribe_requests(db, now=now)
    return render_template(
        "staff/dashboard.html", title="Dashboard", day=day, edition=edition,
        next_send=staff_stats.next_send(app, now), history=history, totals=totals,
        growth=growth, chart=staff_stats.growth_chart(growth),
        audience=totals.get("active", 0), requests=requests,
    )


@bp.get("/today")
@login_required
def today_edition() -> Response:
    return redirect(url_for("staff.edition", day=today(mailer_app()).isoformat()))


# The other areas register their views on `bp` (imported last: they import this module).
from mailer.web import staff_admin, staff_editions, staff_subscribers  # noqa: E402,F401
