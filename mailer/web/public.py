"""The subscribers' side of the web: subscribe, confirm, archive, and the shared page helpers.

Every page is plain HTML that works without JavaScript. The rules live in `mailer.optin`;
this module only maps HTTP to them: read the form, check the signed token, call the domain
function inside one transaction, answer with a page and the right status code.

Three things worth knowing:

* POST /subscribe also accepts forms embedded on the WordPress site, which cannot carry our
  CSRF token (they are served from another origin). A token, when sent, must be valid; without
  one the request is accepted only when the honeypot is empty and the per-IP and per-address
  rate limits pass. Forging a subscription request gains an attacker nothing (double opt-in
  sends one email, and the limits stop that being repeated), so this is the whole defence
  CSRF would have given here.
* The unsubscribe and preferences pages (and RFC 8058's one-click POST) live in
  `mailer.web.preferences`, which uses the helpers here; nothing here imports it.
* GETs never change anything: mail scanners fetch every link in an email.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from email.utils import parseaddr
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.wrappers import Response

from mailer import optin
from mailer.app import App
from mailer.choices import InvalidChoice, parse_frequency, parse_sections, split
from mailer.models import DAILY, PENDING, SENT, WEEKLY, Edition
from mailer.render import long_date, weekly_day
from mailer.subscribers import InvalidAddress, normalise_email
from mailer.tokens import PREFERENCES, BadToken, make_token, read_token
from mailer.web import feed, problems
from mailer.web.context import mailer_app
from mailer.web.security import EMAIL_CSP, CsrfError, csrf_exempt, csrf_token_sent, validate_csrf
from mailer.web.throttle import Limit, address_key, hit, ip_key
from mailer.welcome import send_welcome

log = logging.getLogger("mailer.web")

bp = Blueprint("public", __name__)

HONEYPOT = "hp"
#: A hidden field in every form that offers section checkboxes: none ticked then means "all".
SECTIONS_SHOWN = "sections_shown"
ARCHIVE_PAGE = 60
MAX_PAGE_DIGITS = 9

#: Limits on subscription requests: per client IP (a bot filling the form with many
#: addresses) and per address (someone using the form to flood one inbox).
DEFAULT_LIMITS: dict[str, tuple[Limit, ...]] = {
    "subscribe-ip": (Limit(10, 600), Limit(50, 86400)),
    "subscribe-address": (Limit(3, 3600), Limit(6, 86400)),
}

ERRORS = {
    400: ("This request could not be understood",
          "The link or form you used is not valid. If you copied a link from an email, please "
          "check it is complete."),
    403: ("Not allowed", "You are not allowed to do that."),
    404: ("Page not found", "There is no page at this address."),
    405: ("Not allowed", "This page cannot be used like that."),
    409: ("Nothing changed", "That does not fit the current state of your subscription."),
    410: ("This link no longer works", "The link has expired or has been replaced by a newer one."),
    413: ("Too much data", "The form sent more data than we accept."),
    429: ("Too many requests", "Please wait a little and try again later."),
    500: ("Something went wrong", "Please try again in a few minutes."),
    503: ("Temporarily unavailable", "Please try again in a few minutes."),
}


# ---- helpers -------------------------------------------------------------------------------


def brand(app: App) -> str:
    return app.settings.from_addr.partition("<")[0].strip().strip('"') or "LabourList Daily"


@bp.app_context_processor
def _context() -> dict[str, Any]:
    app = mailer_app()
    return {"brand": brand(app), "postal_address": app.settings.postal_address,
            "long_date": long_date, "contact": parseaddr(app.settings.reply_to)[1],
            "staff_only": optin.STAFF_ONLY, "offered_sections": app.settings.sections,
            "weekly_day": weekly_day(app.settings.weekly_send), "split_sections": split,
            "weekly_offered": app.settings.weekly_digest}


@dataclass(frozen=True)
class FormChoices:
    """A form's frequency and sections, parsed; None for a choice the form did not offer
    (the WordPress embed may leave both out), which leaves what is stored as it is."""

    frequency: str | None = None
    sections: list[str] | None = None


def read_choices(form: MultiDict[str, str]) -> FormChoices:
    """Frequency (a radio) and sections (checkboxes) from a form; InvalidChoice names an
    unknown one. Unticked checkboxes send nothing, so a form that offers sections says so
    with `SECTIONS_SHOWN`; a form without it (or without any `sections`) changes none."""
    raw_frequency = form.get("frequency")
    frequency = parse_frequency(raw_frequency) if raw_frequency is not None else None
    if frequency == WEEKLY and not mailer_app().settings.weekly_digest:
        frequency = None  # not on offer: a form cannot choose what would not be sent
    ticked = form.getlist("sections")
    sections = None
    if ticked or form.get(SECTIONS_SHOWN):
        sections = parse_sections(";".join(ticked), mailer_app().settings.sections)
    return FormChoices(frequency, sections)


def page(template: str, status: int = 200, **context: Any) -> tuple[str, int]:
    return render_template(template, **context), status


def message_page(title: str, text: str, status: int = 200, **context: Any) -> tuple[str, int]:
    return page("message.html", status, title=title, text=text, **context)


def client_ip() -> str:
    return request.remote_addr or "unknown"


def limits(name: str) -> tuple[Limit, ...]:
    return tuple(current_app.config["MAILER_RATE_LIMITS"].get(name, ()))


def allowed(key: str, name: str) -> bool:
    """Count a hit in its own committed transaction: a refused or failing request still used
    up its allowance."""
    app = mailer_app()
    with app.sessions.begin() as session:
        return hit(session, key, limits(name), now=app.clock.now())


def read_link(purpose: str, token: str) -> int:
    """Subscriber id from a signed unsubscribe/preferences token, or a 400 page."""
    try:
        sub_id, _ = read_token(mailer_app().secret_key, purpose, token)
    except BadToken:
        abort(400)
    return sub_id


def requested_page(raw: str | None) -> int:
    """The number in ``?page=`` (1 without one): a 400 page unless it is plain ASCII digits,
    a 404 page for 0 or a number past any real list.

    Why not just `int()`: it takes " 5", "+5", "5_0" and other scripts' digits, and a number
    too big for SQL's OFFSET was a 500. Nine digits is far past any list here, and even
    times a page size it is a safe OFFSET on SQLite and PostgreSQL."""
    if raw is None:
        return 1
    if not (raw.isascii() and raw.isdigit()):
        abort(400)
    number = int(raw) if len(raw) <= MAX_PAGE_DIGITS else 0
    if number < 1:
        abort(404)
    return number


def preferences_url(app: App, sub_id: int) -> str:
    return url_for("preferences.preferences", token=make_token(app.secret_key, PREFERENCES, sub_id))


def in_background(name: str, task: Callable[[App, Any], object], argument: Any) -> None:
    """Run `task(app, argument)` now on this thread (tests: MAILER_SEND_INLINE) or on a fresh
    thread, so the response does not wait for, or reveal by its timing, the mail server."""
    app = mailer_app()
    if current_app.config.get("MAILER_SEND_INLINE"):
        task(app, argument)
        return
    threading.Thread(target=task, args=(app, argument), name=name).start()


def dispatch_confirmation(request_: optin.ConfirmRequest) -> None:
    in_background(f"confirm-{request_.subscriber_id}", optin.send_confirmation, request_)


def dispatch_welcome(subscriber_id: int) -> None:
    """The welcome email, once the confirmation has committed (`mailer.welcome` claims it,
    so a second confirm at the same moment sends nothing)."""
    if mailer_app().settings.welcome_email:
        in_background(f"welcome-{subscriber_id}", send_welcome, subscriber_id)


# ---- subscribe -----------------------------------------------------------------------------


@bp.get("/")
def index() -> Response:
    return redirect(url_for("public.subscribe"))


@bp.route("/subscribe", methods=["GET", "POST"])
@csrf_exempt  # checked below: the WordPress embed cannot carry our token
def subscribe() -> Any:
    if request.method != "POST":  # GET and HEAD only read
        return page("subscribe.html")
    form = request.form
    email, name = form.get("email", ""), form.get("name", "")
    if csrf_token_sent():
        try:
            validate_csrf()
        except CsrfError:
            abort(400, description="csrf")
    if form.get(HONEYPOT, ""):
        log.info("subscribe refused: honeypot filled (ip %s)", client_ip())
        return page("subscribe.html", 400, email=email, name=name,
                    error="Your request could not be accepted.")
    if not allowed(ip_key("subscribe", client_ip()), "subscribe-ip"):
        abort(429)
    try:
        address = normalise_email(email)
        optin.validate_name(name)
        choices = read_choices(form)
    except InvalidAddress:
        return page("subscribe.html", 400, email=email, name=name,
                    error="Please enter a valid email address, like name@example.com.")
    except optin.InvalidName as exc:
        return page("subscribe.html", 400, email=email, name="", error=str(exc))
    except InvalidChoice as exc:
        return page("subscribe.html", 400, email=email, name=name,
                    error=f"Please choose again: {exc}.")
    if not allowed(address_key("subscribe", address), "subscribe-address"):
        abort(429)
    app = mailer_app()
    with app.sessions.begin() as session:
        confirm_request = optin.request_subscription(
            session, address, name, now=app.clock.now(), source="web",
            frequency=choices.frequency, sections=choices.sections)
    if confirm_request is not None:
        dispatch_confirmation(confirm_request)
    # The same page whether the address was new, pending, active or suppressed.
    return page("subscribe_sent.html", email=address)


# ---- confirm -------------------------------------------------------------------------------


def _confirm_link(token: str) -> tuple[int, int]:
    try:
        return optin.read_confirm_token(mailer_app(), token)
    except BadToken:
        abort(400)


@bp.route("/confirm/<token>", methods=["GET", "POST"])
def confirm(token: str) -> Any:
    """GET shows the button and changes nothing (scanners prefetch links); POST confirms."""
    app = mailer_app()
    try:
        sub_id, anchor = _confirm_link(token)
        with app.sessions.begin() as session:
            if request.method != "POST":  # GET and HEAD only read
                sub = optin.check_confirmable(session, sub_id, anchor)
                if sub.status != PENDING:
                    return page("confirmed.html", already=True, prefs=preferences_url(app, sub.id))
                return page("confirm.html", email=sub.email)
            sub, changed = optin.confirm(session, sub_id, anchor, now=app.clock.now())
            answer = page("confirmed.html", already=not changed,
                          prefs=preferences_url(app, sub.id))
    except optin.LinkGone as exc:
        return page("link_gone.html", 410, reason=str(exc), expired=exc.expired)
    if changed:  # committed: the welcome may go
        dispatch_welcome(sub_id)
    return answer


# ---- archive -------------------------------------------------------------------------------


@bp.get("/archive/")
def archive_index() -> Any:
    app = mailer_app()
    number = requested_page(request.args.get("page"))
    with app.sessions() as session:
        total = session.scalar(select(func.count()).select_from(Edition)
                               .where(Edition.state == SENT)) or 0
        rows = session.execute(
            select(Edition.edition_date, Edition.kind, Edition.subject)
            .where(Edition.state == SENT)
            .order_by(Edition.edition_date.desc(), Edition.kind)
            .offset((number - 1) * ARCHIVE_PAGE).limit(ARCHIVE_PAGE)
        ).all()
    if number > 1 and not rows:
        abort(404)
    return page("archive.html", editions=rows, number=number,
                more=total > number * ARCHIVE_PAGE)


@bp.get("/archive/feed.xml")
def archive_feed() -> Any:
    """RSS 2.0 of the latest sent editions, every kind, newest first (`mailer.web.feed`)."""
    app = mailer_app()
    with app.sessions() as session:
        rows = session.execute(
            select(Edition.edition_date, Edition.kind, Edition.subject, Edition.preheader,
                   Edition.editor_note, Edition.started_at, Edition.finished_at,
                   Edition.window_end)
            .where(Edition.state == SENT)
            .order_by(Edition.edition_date.desc(), Edition.id.desc()).limit(feed.FEED_ITEMS)
        ).all()
    items = [feed.FeedItem(row.edition_date, row.subject, row.preheader, row.editor_note,
                           row.started_at or row.finished_at or row.window_end,
                           weekly=row.kind == WEEKLY)
             for row in rows]
    body = feed.rss(items, base_url=app.settings.base_url, title=brand(app))
    response = Response(body, mimetype="application/rss+xml")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/archive/<day>")
def archive_edition(day: str) -> Any:
    """The "view in browser" page: the archived HTML, which holds no per-reader data."""
    return _archived(day, DAILY)


@bp.get("/archive/weekly/<day>")
def archive_weekly(day: str) -> Any:
    """A weekly digest's page (it may share its date with a daily edition)."""
    return _archived(day, WEEKLY)


_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.I)


def as_page(email_html: str) -> str:
    """An archived email as a web page: its body is the page's one `<main>` landmark (an
    email has no landmarks; a page needs one for screen readers to jump to). Our own MJML
    output, stored when the edition was sent; any edition sent before this rule gets it too."""
    opened = _BODY_OPEN.search(email_html)
    closed = email_html.lower().rfind("</body")
    if opened is None or closed < opened.end():
        return email_html
    return (email_html[:opened.end()] + "<main>" + email_html[opened.end():closed]
            + "</main>" + email_html[closed:])


def _archived(day: str, kind: str) -> Any:
    try:
        edition_date = date.fromisoformat(day)
    except ValueError:
        abort(404)
    if day != edition_date.isoformat():
        abort(404)  # only the canonical YYYY-MM-DD form, one URL per edition
    with mailer_app().sessions() as session:
        html = session.scalar(select(Edition.archive_html).where(
            Edition.kind == kind, Edition.edition_date == edition_date, Edition.state == SENT))
    if not html:
        abort(404)
    response = Response(as_page(html), mimetype="text/html")
    response.headers["Content-Security-Policy"] = EMAIL_CSP
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


# ---- health ----------------------------------------------------------------------------------


@bp.get("/healthz")
def healthz() -> Any:
    """200 when the database answers; 503 otherwise, for load balancers and monitors.

    A raw DBAPI connection, so SQLite's BEGIN IMMEDIATE (which a send holds for a moment) never
    makes the check wait for a write lock."""
    try:
        raw = mailer_app().engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            cursor.close()
        finally:
            raw.close()
    except Exception as exc:  # any failure to reach the database is "down"
        log.warning("health check failed: %s", exc)
        return jsonify(status="error", detail="database unreachable"), 503
    return jsonify(status="ok")


# ---- error pages -----------------------------------------------------------------------------


def register_error_pages(web: Flask) -> None:
    """Readable HTML error pages with the right status for every abort()."""

    def handle(exc: HTTPException) -> Any:
        code = exc.code or 500
        if problems.is_api_request():  # programs get RFC 9457 problem details, not a page
            allow = (", ".join(exc.valid_methods) if isinstance(exc, MethodNotAllowed)
                     and exc.valid_methods else "")
            return problems.problem(code, exc.description or "",
                                    headers={"Allow": allow} if allow else None)
        title, text = ERRORS.get(code, ERRORS[500] if code >= 500 else ERRORS[400])
        if code == 400 and exc.description == "csrf":
            title = "This form has expired"
            text = ("The form was too old or was not sent from our site. Please go back, "
                    "reload the page and try again.")
        body, status = message_page(title, text, code)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            return body, status, {"Allow": ", ".join(exc.valid_methods)}
        return body, status

    for code in ERRORS:
        if code != 500:
            web.register_error_handler(code, handle)

    @web.errorhandler(500)
    def server_error(exc: Exception) -> Any:
        if problems.is_api_request():
            return problems.problem(500, "something went wrong on our side; try again later")
        return message_page(*ERRORS[500], 500)
