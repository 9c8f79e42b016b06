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
(or a new password) ends the session on the server and not only in the browser. Sign-in
attempts are throttled by `mailer.web.throttle` (growing delays, never a lock).

This module holds the blueprint, the access checks, the helpers every page shares and the
login/logout views. The other pages are split by area: `dashboard`, `editions` (preview, edits,
test and real sends, with `send` running sends off the request thread), `subscribers` (list,
events, erasure, CSV), `admin` (settings, audit log), `stats` (the dashboard's figures). They
import this module and register on its `bp`; it imports none of them (`mailer.web.staff`
imports them all, which is what registers them).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar, cast
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
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from mailer import audit
from mailer.accounts import (
    ADMIN,
    LoginRefused,
    LoginResult,
    authenticate,
    end_sessions,
    may_erase,
    password_version,
)
from mailer.alerts import alert
from mailer.app import App
from mailer.departures import complaint_words
from mailer.models import DAILY, WEEKLY, StaffUser
from mailer.web import throttle
from mailer.web.context import mailer_app
from mailer.web.security import CSP
from mailer.wording import plural

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
#: Staff pages may frame their own previews (public pages still may not frame anything) and
#: run the console's own script files (the story order's drag and drop:
#: `static/staff-arrange.js`), never inline or foreign ones.
STAFF_CSP = CSP + "; frame-src 'self'; script-src 'self'; connect-src 'self'"


@dataclass(frozen=True)
class StaffSession:
    """The signed-in staff member, as the views need them."""

    id: int
    email: str
    role: str
    can_erase_grant: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    @property
    def can_erase(self) -> bool:
        return may_erase(self.role, self.can_erase_grant)


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
        if user.disabled_at is not None:
            return None
        return StaffSession(user.id, user.email, user.role, user.can_erase)


def _to_login() -> Response:
    target = request.full_path.rstrip("?") if request.method == "GET" else ""
    args: dict[str, Any] = {"next": target} if target and target != "/staff/" else {}
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

    return cast(F, wrapped)


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

    return cast(F, wrapped)


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


def edition_route(rule: str, **options: Any) -> Callable[[F], F]:
    """Register an edition page for both kinds: ``/editions/<day><rule>`` for the daily and
    ``/editions/weekly/<day><rule>`` for the weekly digest; the view gets `kind`, and
    ``url_for(endpoint, day=..., kind=...)`` builds the URL of that kind (the daily's
    without `kind`)."""
    def register(view: F) -> F:
        bp.add_url_rule(f"/editions/<day>{rule}", view_func=view,
                        defaults={"kind": DAILY}, **options)
        bp.add_url_rule(f"/editions/weekly/<day>{rule}", view_func=view,
                        defaults={"kind": WEEKLY}, **options)
        return view
    return register


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
    """The client's address: the TCP peer, or, only when `trusted_proxies` is set, the one
    werkzeug's ProxyFix took from that many X-Forwarded-For hops (`mailer.web.create_app`)."""
    return request.remote_addr or "unknown"


def safe_next(target: str | None) -> str:
    """Where to go after login: only a path inside the console (no open redirect)."""
    if target:
        parts = urlsplit(target)
        if (not parts.scheme and not parts.netloc and parts.path.startswith("/staff/")
                and "\\" not in target and not target.startswith("//")):
            return target
    return url_for("staff.dashboard")


#: What a refusal inside the console says (in the console's own frame and navigation).
STAFF_ERRORS = {
    400: ("This request could not be understood", "The form or link is not valid: go back "
          "and try again."),
    403: ("Not allowed", "Your account cannot do this: ask an admin (roles: docs/staff.md)."),
    404: ("Not found", "There is nothing at this address in the console."),
    405: ("Not allowed", "This page cannot be used like that."),
    409: ("Nothing changed", "That does not fit the current state of this edition or "
          "subscriber."),
    410: ("Gone", "This no longer exists."),
}


def _staff_error(exc: HTTPException) -> Any:
    code = exc.code or 400
    title, text = STAFF_ERRORS.get(code, STAFF_ERRORS[400])
    if code == 400 and exc.description == "csrf":
        title, text = ("This form has expired", "The form was too old or was not sent from "
                       "our site. Please go back, reload the page and try again.")
    return render_template("staff/message.html", title=title, text=text), code


for _code in STAFF_ERRORS:
    bp.register_error_handler(_code, _staff_error)


bp.add_app_template_filter(plural, "plural")
bp.add_app_template_filter(complaint_words, "complaint_words")


@bp.app_template_filter("localtime")
def _localtime_filter(moment: datetime | None, fmt: str = "%a %d %b %Y, %H:%M") -> str:
    return local(moment, fmt)


@bp.context_processor
def _staff_context() -> dict[str, Any]:
    return {"staff": g.get("staff"), "today_iso": today(mailer_app()).isoformat()}


# ---- login / logout ------------------------------------------------------------------------


@dataclass(frozen=True)
class _SignIn:
    """One attempt's outcome: signed in, refused unchecked (wait), or a wrong password."""

    result: LoginResult | None = None
    wait: int = 0
    error: str = ""
    failure: throttle.Failure | None = None
    account: str | None = None


def _sign_in(app: App, email: str, password: str, now: datetime) -> _SignIn:
    """Throttle, check and count one attempt in one transaction, committed whatever happens
    (a wrong password counts although the sign-in is refused). Too early, the password is not
    even checked: a refusal costs no scrypt and says nothing about the password."""
    client = client_ip()
    attempt = throttle.Attempt.of(email.strip().lower(), client)
    with app.sessions.begin() as db:
        throttle.lock(db, attempt)
        wait = throttle.wait_seconds(db, attempt, now)
        if wait:
            return _SignIn(wait=wait)
        try:
            result = authenticate(db, email, password, now=now)
        except LoginRefused as exc:
            failure = throttle.record_failure(db, attempt, now, known=exc.account is not None)
            later = f"; next try from there in {failure.wait} s" if failure.wait else ""
            audit.record(db, email.lower()[:320] or "(no address)", "login-failed",
                         detail=f"ip {client}{later}", at=now)
            if failure.burst_started:
                audit.record(db, "mailer", "login-alert", f"staff:{exc.account}",
                             detail=_burst_summary(failure, client), at=now)
            return _SignIn(error=str(exc), failure=failure, account=exc.account)
        throttle.record_success(db, attempt)
        audit.record(db, result.email, "login", detail=f"ip {client}", at=now)
        return _SignIn(result=result)


def _burst_summary(failure: throttle.Failure, client: str) -> str:
    minutes = int(throttle.WINDOW.total_seconds() // 60)
    return (f"{failure.account_failures} wrong passwords in {minutes} min from "
            f"{failure.clients} client address(es), the latest from {client}")


def _alert_admins(app: App, account: str, failure: throttle.Failure) -> None:
    """Tell the staff alert addresses (and send_log) about a burst of wrong passwords, once
    per burst (`throttle.record_failure` decides), off the request thread like the sign-up
    emails: an SMTP server's pace must not set the login page's."""
    subject = f"staff sign-in: repeated wrong passwords for {account}"
    body = (f"{_burst_summary(failure, client_ip())}.\n\n"
            f"Nothing is locked: the addresses that guessed wait up to "
            f"{throttle.CAP_SECONDS} s between attempts, and sign-ins from anywhere else work "
            f"as usual. You get this once per burst; the next alert for this account comes "
            f"only after an hour without a wrong password for it.\n\n"
            f"If it is not a colleague who forgot their password, see the failed sign-ins at "
            f"{app.settings.base_url.rstrip('/')}/staff/audit?action=login-failed, consider "
            f"blocking the addresses at the proxy, and make sure the account's password is "
            f"long and used nowhere else (`mailer staff set-password`).\n")
    if current_app.config.get("MAILER_SEND_INLINE"):
        alert(app, subject, body)
        return
    threading.Thread(target=alert, args=(app, subject, body), name="login-alert",
                     daemon=True).start()


def _refused(attempt: _SignIn, email: str, next_url: str) -> Any:
    """The login page again, saying why: 429 with Retry-After when the client must wait, 401
    (and how long to wait, if at all) for a wrong address or password."""
    if attempt.wait:
        log.info("staff sign-in from %s refused for %d s: too many wrong passwords",
                 client_ip(), attempt.wait)
        page = render_template("staff/login.html", title="Sign in", next_url=next_url,
                               email=email, error="Too many sign-in attempts: try again in "
                                                  f"{attempt.wait} s.")
        return page, 429, {"Retry-After": str(attempt.wait)}
    error = attempt.error
    if attempt.failure is not None and attempt.failure.wait:
        error += f" You can try again in {attempt.failure.wait} s."
    return render_template("staff/login.html", title="Sign in", next_url=next_url, email=email,
                           error=error), 401


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    next_url = request.values.get("next", "")
    if g.get("staff") is not None and request.method == "GET":
        return redirect(safe_next(next_url))
    if request.method != "POST":
        return render_template("staff/login.html", title="Sign in", next_url=next_url)
    app = mailer_app()
    email = request.form.get("email", "").strip()
    now = app.clock.now()
    attempt = _sign_in(app, email, request.form.get("password", ""), now)
    result = attempt.result
    if result is None:
        failure = attempt.failure
        if failure is not None and failure.burst_started and attempt.account:
            _alert_admins(app, attempt.account, failure)
        return _refused(attempt, email, next_url)
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
