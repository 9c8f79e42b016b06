"""The reader's own pages: unsubscribe (with RFC 8058's one-click POST) and preferences.

Both are reached by a signed link from an email (`mailer.tokens`), never by signing in; the
rules live in `mailer.optin` and the shared page helpers in `mailer.web.public`.

POST /unsubscribe/<token> is two things on one URL. With the body `List-Unsubscribe=One-Click`
it is RFC 8058: no cookie, no CSRF token, answered 200 at once. Otherwise it is the button on
the page, which carries a CSRF token like every other form.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, abort, redirect, request, url_for
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from mailer import optin
from mailer.choices import InvalidChoice, split
from mailer.models import Subscriber
from mailer.subscribers import set_choices
from mailer.tokens import PREFERENCES, UNSUBSCRIBE
from mailer.web.context import mailer_app
from mailer.web.public import (
    allowed,
    dispatch_confirmation,
    message_page,
    page,
    preferences_url,
    read_choices,
    read_link,
)
from mailer.web.security import CsrfError, csrf_exempt, validate_csrf
from mailer.web.throttle import address_key

bp = Blueprint("preferences", __name__)

ONE_CLICK_FIELD, ONE_CLICK_VALUE = "List-Unsubscribe", "One-Click"

MESSAGES = {
    "paused": "Your daily email is paused.",
    "resumed": "Welcome back: the daily email will arrive again from the next edition.",
    "name": "Your name has been updated.",
    "unsubscribed": "You have been unsubscribed. You will not get the daily email any more.",
    "resubscribe": "We have sent you an email. Press the link in it to confirm, and the daily "
                   "email will start again.",
    "choices": "Your choices are saved: they apply from the next email.",
    "unchanged": "Nothing needed changing.",
}


# ---- unsubscribe (RFC 8058) ----------------------------------------------------------------


def _is_one_click() -> bool:
    if request.form.get(ONE_CLICK_FIELD) == ONE_CLICK_VALUE:
        return True
    # A sender that forgets the Content-Type still means the same thing.
    return not request.form and request.get_data(cache=True).strip() == (
        b"List-Unsubscribe=One-Click")


#: The token a test send's links carry (`mailer.pipeline.send_test`): their pages are samples.
SAMPLE = "test"
SAMPLE_NOTE = ("This page is a sample: the link came from a test email. A reader's own link "
               "opens this page for their subscription; nothing you do here changes anyone's.")


def _sample_reader() -> Subscriber:
    """A reader who is not stored anywhere, for the sample pages."""
    return Subscriber(id=0, email="reader@example.org", name="", first_name="Sam",
                      status="active", frequency="daily", sections="")


@bp.route(f"/unsubscribe/{SAMPLE}", methods=["GET", "POST"])
@csrf_exempt  # (a one-click POST from a test email's header must not be a 400 either)
def unsubscribe_sample() -> Any:
    """A test email's unsubscribe link: the page a reader sees, changing nothing."""
    if request.method == "POST":
        return message_page("This was a test email", SAMPLE_NOTE)
    reader = _sample_reader()
    return page("unsubscribe.html", email=reader.email, sub_status=reader.status,
                prefs=url_for("preferences.preferences_sample"), token=SAMPLE,
                frequency=reader.frequency, chosen_sections=[], sample=SAMPLE_NOTE)


@bp.route(f"/preferences/{SAMPLE}", methods=["GET", "POST"])
@csrf_exempt
def preferences_sample() -> Any:
    """A test email's preferences link: the page a reader sees, changing nothing."""
    if request.method == "POST":
        return message_page("This was a test email", SAMPLE_NOTE)
    return page("preferences.html", sub=_sample_reader(), message="",
                pause_weeks=optin.PAUSE_WEEKS, left=False, sample=SAMPLE_NOTE)


@bp.route("/unsubscribe/<token>", methods=["GET", "POST"])
@csrf_exempt  # the one-click POST has no cookie and no token, by design; the button has both
def unsubscribe(token: str) -> Any:
    app = mailer_app()
    sub_id = read_link(UNSUBSCRIBE, token)
    if request.method != "POST":  # GET and HEAD only read
        with app.sessions() as session:
            sub = session.get(Subscriber, sub_id)
            if sub is None:
                return message_page("You are not on our list",
                                    "This address is no longer on our list: you will not get "
                                    "the daily email.")
            return page("unsubscribe.html", email=sub.email, sub_status=sub.status,
                        prefs=preferences_url(app, sub.id), token=token,
                        frequency=sub.frequency, chosen_sections=split(sub.sections))
    one_click = _is_one_click()
    if not one_click:
        try:
            validate_csrf()
        except CsrfError:
            abort(400, description="csrf")
    with app.sessions.begin() as session:
        sub = session.get(Subscriber, sub_id)
        if sub is not None:
            optin.unsubscribe(session, sub, now=app.clock.now(),
                              source="one-click" if one_click else "page")
    if one_click:
        # 200 with a tiny body and no redirect, no cookie: what mailbox providers expect.
        return Response("You have been unsubscribed.\n", status=200,
                        mimetype="text/plain")
    prefs = preferences_url(app, sub_id) if sub is not None else None
    return page("unsubscribed.html", prefs=prefs)


# ---- preferences ---------------------------------------------------------------------------


@bp.route("/preferences/<token>", methods=["GET", "POST"])
def preferences(token: str) -> Any:
    app = mailer_app()
    sub_id = read_link(PREFERENCES, token)
    if request.method != "POST":  # GET and HEAD only read
        with app.sessions() as session:
            sub = session.get(Subscriber, sub_id)
            if sub is None:
                return message_page("You are not on our list",
                                    "This address is no longer on our list.", 410)
            done = request.args.get("done", "")
            return page("preferences.html", sub=sub, message=MESSAGES.get(done, ""),
                        pause_weeks=optin.PAUSE_WEEKS, left=sub.status in optin.LEFT)
    action = request.form.get("action", "")
    if action == "resubscribe":
        # Checked before the write transaction: the hit commits on its own (SQLite allows one
        # writer at a time, so it cannot be nested inside another write).
        with app.sessions() as session:
            sub = session.get(Subscriber, sub_id)
            address = sub.email if sub is not None else ""
        if address and not allowed(address_key("subscribe", address), "subscribe-address"):
            abort(429)
    now = app.clock.now()
    try:
        with app.sessions.begin() as session:
            sub = session.get(Subscriber, sub_id)
            if sub is None:
                return message_page("You are not on our list",
                                    "This address is no longer on our list.", 410)
            done, confirm_request = _apply(session, sub, action, now)
    except optin.OptinError as exc:
        with app.sessions() as session:
            sub = session.get(Subscriber, sub_id)
            return page("preferences.html", exc.status, sub=sub, error=str(exc),
                        pause_weeks=optin.PAUSE_WEEKS, left=sub is not None
                        and sub.status in optin.LEFT)
    if confirm_request is not None:
        dispatch_confirmation(confirm_request)
    return redirect(url_for("preferences.preferences", token=token, done=done), code=303)


def _apply(session: Session, sub: Subscriber, action: str,
           now: datetime) -> tuple[str, optin.ConfirmRequest | None]:
    """Do what the posted `action` asks; (the `MESSAGES` key to show, a confirmation email to
    send once committed). OptinError for what cannot be done, 400 for an unknown action."""
    form = request.form
    if action == "pause":
        weeks = form.get("weeks", "")
        if not weeks.isdigit():
            raise optin.OptinError("Choose how long to pause for.")
        optin.pause(session, sub, int(weeks), now=now)
        return "paused", None
    if action == "resume":
        return ("resumed" if optin.resume(session, sub, now=now) else "unchanged"), None
    if action == "name":
        changed = optin.change_name(session, sub, form.get("name", ""), now=now)
        return ("name" if changed else "unchanged"), None
    if action == "choices":
        try:
            choices = read_choices(form)
        except InvalidChoice as exc:
            raise optin.OptinError(f"Please choose again: {exc}.") from None
        # Offered on the unsubscribe page too: its history says which page kept the reader.
        source = "unsubscribe-page" if form.get("via") == "unsubscribe" else "preferences"
        changed = set_choices(session, sub, frequency=choices.frequency,
                              sections=choices.sections, source=source, at=now)
        return ("choices" if changed else "unchanged"), None
    if action == "unsubscribe":
        changed = optin.unsubscribe(session, sub, now=now, source="page",
                                    detail="preferences page")
        return ("unsubscribed" if changed else "unchanged"), None
    if action == "resubscribe":
        return "resubscribe", optin.resubscribe(session, sub, now=now)
    abort(400)
