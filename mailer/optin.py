"""Subscribers' own decisions: double opt-in, confirm, unsubscribe, pause, resume, rename.

These are the domain rules behind the public web pages; the CLI and the staff console call the
same functions, so a status means the same thing whichever door the change came through, and
every change is recorded as a subscriber event (through `mailer.subscribers.set_status`).

The functions take a `Session` and the current time and never commit: the caller owns the
transaction. Sending the confirmation email is separate (`send_confirmation`), so a caller
commits first and only then talks to the mail server: a slow SMTP server must never hold a
database write lock, and an email must never point at a row that was rolled back.

Confirmation links (a design note). A link carries the subscriber id, its issue time and an
*anchor*: the id of the "confirmation-sent" event recorded when it was issued. It confirms only
while the request it belongs to is the current one: the subscriber is pending and no newer
"subscribed" event (a new request cycle, e.g. after an unsubscribe) exists. So an old link
replayed after an unsubscribe, or after a later resubscription request, changes nothing; a
second press of the same link while still subscribed is a harmless "already confirmed".
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.app import App
from mailer.errors import MailerError
from mailer.message import simple_message
from mailer.models import (
    ACTIVE,
    BOUNCED,
    COMPLAINED,
    DAILY,
    PAUSED,
    PENDING,
    UNSUBSCRIBED,
    Subscriber,
    SubscriberEvent,
)
from mailer.render import render_confirmation
from mailer.subscribers import (
    MAX_FIRST_NAME,
    MAX_NAME,
    add,
    find,
    is_suppressed,
    normalise_email,
    record_event,
    set_choices,
    set_status,
)
from mailer.tokens import CONFIRM, BadToken, make_token, read_token
from mailer.transports import from_dsn
from mailer.transports.base import Outgoing

log = logging.getLogger("mailer.optin")

#: How long a reader may pause the daily email for, in weeks (the preferences page offers these).
PAUSE_WEEKS = (1, 2, 4)
#: Statuses in which the reader gets nothing and must opt in again to get editions.
LEFT = (UNSUBSCRIBED, BOUNCED, COMPLAINED)
#: Statuses of a confirmed reader who has not left.
CONFIRMED = (ACTIVE, PAUSED)
#: Statuses only staff may lift: the address is dead (bounced) or its owner called us spam
#: (complained). Anyone can type an address into the public form, so a request there must not
#: put such an address back on the way to our mail: another email to it costs every reader's
#: deliverability, and a complainer asked for nothing.
STAFF_ONLY = (BOUNCED, COMPLAINED)

CONFIRMATION_SENT = "confirmation-sent"
MAX_REASON = 500


class OptinError(MailerError):
    """A request that cannot be honoured; `status` is the HTTP status the web answers with."""

    status = 400


class InvalidName(OptinError, ValueError):
    """Control characters (CR, LF, ...) or longer than the column allows."""


class LinkGone(OptinError):
    """The link was genuine but no longer applies (expired, superseded, subscriber erased)."""

    status = 410

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.expired = expired


class NotAllowed(OptinError):
    """The action does not fit the subscriber's current status (pause while unsubscribed)."""

    status = 409


@dataclass(frozen=True)
class ConfirmRequest:
    """A confirmation email to send once the transaction that created it has committed."""

    subscriber_id: int
    email: str
    anchor: int
    issued_at: datetime


def validate_name(raw: str | None) -> str:
    """Refuse (rather than silently clean) names with control characters or over the limit.

    A name arrives from a public form and is later written into a To: header and pages. Quietly
    stripping a CR/LF would hide an injection attempt; refusing it tells an honest user what to
    fix and gives an attacker nothing. Surrounding and repeated spaces are tidied.
    """
    text = raw or ""
    if len(text) > MAX_NAME:
        raise InvalidName(f"Your name must be at most {MAX_NAME} characters.")
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            raise InvalidName("Your name must not contain line breaks or control characters.")
    return " ".join(text.split())


# ---- subscribing ---------------------------------------------------------------------------


def request_subscription(session: Session, email: str, name: str = "", *, now: datetime,
                         source: str = "web", frequency: str | None = None,
                         sections: Sequence[str] | None = None) -> ConfirmRequest | None:
    """Start (or restart) double opt-in for an address; None when no email should go out.

    The caller shows the same answer whatever this returns, so the form never tells anyone
    whether an address is on the list. New addresses become pending; pending ones get the
    email again; people who unsubscribed start a fresh request and stay out of the audience
    until they confirm; confirmed readers, bounced and complained addresses (`STAFF_ONLY`) and
    suppressed (erased) ones get nothing, and nothing about them changes.

    `frequency` and `sections` (already parsed by `mailer.choices`; None when the form did
    not ask) are kept on the pending subscriber, so they hold from the first edition after
    confirming. A confirmed reader's choices are not changed from here: anyone can type an
    address into the form, and only the reader's own preferences link may change them.
    """
    address = normalise_email(email)
    clean = validate_name(name)
    if is_suppressed(session, address):
        return None
    sub = find(session, address)
    if sub is None:
        # The form's one name field asks for a first name (for the greeting).
        sub, _ = add(session, address, name=clean, first_name=clean[:MAX_FIRST_NAME],
                     status=PENDING, source=source, at=now, frequency=frequency or DAILY,
                     sections=sections or ())
        return _issue(session, sub, now=now, source=source)
    if sub.status in CONFIRMED:
        return None
    if sub.status in STAFF_ONLY:
        log.info("subscription request for subscriber %s ignored: %s", sub.id, sub.status)
        return None
    if sub.status in LEFT:
        set_status(session, sub, PENDING, source=source, at=now,
                   detail=f"asked to subscribe again (was {sub.status})")
        sub.paused_until = None
    set_choices(session, sub, frequency=frequency, sections=sections, source=source, at=now)
    return _issue(session, sub, now=now, source=source)


def resubscribe(session: Session, sub: Subscriber, *, now: datetime,
                source: str = "preferences") -> ConfirmRequest:
    """Come back after leaving: always through a fresh confirmation email, never at once,
    because the address may have changed hands or the link may have been forwarded.

    Not for a bounced or complained address (`STAFF_ONLY`): the preferences link is in every
    edition's footer, so whoever holds a forwarded copy holds it too. Staff use `reinstate`."""
    if sub.status in STAFF_ONLY:
        raise NotAllowed("This address bounced or reported our email as spam, so it cannot be "
                         "subscribed again here; please write to the editor.")
    return _restart(session, sub, now=now, source=source,
                    detail=f"asked to subscribe again (was {sub.status})")


def clean_reason(raw: str | None) -> str:
    """A staff member's reason as one printable line, at most `MAX_REASON` characters."""
    text = "".join(ch for ch in raw or "" if ch.isprintable() or ch.isspace())
    return " ".join(text.split())[:MAX_REASON]


def reinstate(session: Session, sub: Subscriber, *, reason: str, now: datetime,
              source: str = "staff") -> ConfirmRequest:
    """Staff bring back someone who left, through a confirmation email as always; a bounced or
    complained address needs a `reason` (OptinError without one).

    Why staff and a reason: someone who heard from the reader (the mailbox works again, the
    complaint was a slip) can judge what a form cannot, and the reason, recorded in the
    subscriber's history and by the caller in the audit log, says later why we mailed an
    address the provider had told us to stop mailing."""
    why = clean_reason(reason)
    if sub.status in STAFF_ONLY and not why:
        what = "bounced" if sub.status == BOUNCED else "reported our email as spam"
        raise OptinError(f"Give a reason to bring back an address that {what}: it is kept in "
                         "the audit log.")
    detail = f"brought back by staff (was {sub.status})" + (f": {why}" if why else "")
    return _restart(session, sub, now=now, source=source, detail=detail)


def _restart(session: Session, sub: Subscriber, *, now: datetime, source: str,
             detail: str) -> ConfirmRequest:
    if sub.status in CONFIRMED:
        raise NotAllowed("You are already subscribed.")
    if is_suppressed(session, sub.email):
        raise NotAllowed("This address cannot be subscribed again here; "
                         "please write to the editor.")
    if sub.status in LEFT:
        set_status(session, sub, PENDING, source=source, at=now, detail=detail)
        sub.paused_until = None
    return _issue(session, sub, now=now, source=source)


def _issue(session: Session, sub: Subscriber, *, now: datetime, source: str) -> ConfirmRequest:
    record_event(session, sub, CONFIRMATION_SENT, source=source, at=now)
    session.flush()
    anchor = session.scalar(select(func.max(SubscriberEvent.id))
                            .where(SubscriberEvent.subscriber_id == sub.id)) or 0
    return ConfirmRequest(subscriber_id=sub.id, email=sub.email, anchor=anchor, issued_at=now)


def confirm_token(secret: str, request: ConfirmRequest) -> str:
    return make_token(secret, CONFIRM, request.subscriber_id, issued_at=request.issued_at,
                      extra=str(request.anchor))


def confirm_url(app: App, request: ConfirmRequest) -> str:
    return f"{app.settings.base_url.rstrip('/')}/confirm/{confirm_token(app.secret_key, request)}"


def read_confirm_token(app: App, token: str) -> tuple[int, int]:
    """(subscriber_id, anchor); BadToken for forgeries, LinkGone once the link has expired."""
    try:
        sub_id, extra = read_token(
            app.secret_key, CONFIRM, token, now=app.clock.now(),
            max_age_seconds=app.settings.confirm_max_age_days * 86400,
        )
    except BadToken as exc:
        if exc.expired:
            raise LinkGone("This confirmation link has expired.", expired=True) from None
        raise
    if not extra.isdigit():
        raise BadToken("this link is not valid")
    return sub_id, int(extra)


def check_confirmable(session: Session, sub_id: int, anchor: int) -> Subscriber:
    """The subscriber a confirmation link may act on, or LinkGone (without changing anything)."""
    sub = session.get(Subscriber, sub_id)
    if sub is None:
        raise LinkGone("This confirmation link is no longer valid.")
    if sub.status in CONFIRMED:
        return sub
    newest_request = session.scalar(
        select(func.max(SubscriberEvent.id)).where(SubscriberEvent.subscriber_id == sub.id,
                                                   SubscriberEvent.kind == "subscribed")
    ) or 0
    if sub.status != PENDING or anchor < newest_request:
        raise LinkGone("This confirmation link is no longer valid.")
    return sub


def confirm(session: Session, sub_id: int, anchor: int, *, now: datetime,
            source: str = "web") -> tuple[Subscriber, bool]:
    """Make a pending subscriber active; (subscriber, changed). Idempotent: pressing the
    button twice, or confirming while paused, changes nothing."""
    sub = check_confirmable(session, sub_id, anchor)
    if sub.status in CONFIRMED:
        return sub, False
    set_status(session, sub, ACTIVE, source=source, at=now, event="confirmed")
    sub.confirmed_at = now
    return sub, True


def send_confirmation(app: App, request: ConfirmRequest) -> bool:
    """Email the confirmation link now, through the configured transport; True when accepted.

    Failures are logged and reported as False rather than raised: the reader sees the same
    page either way (it must not reveal whether an address was known) and can ask again.
    """
    try:
        rendered = render_confirmation(app.settings, confirm_url(app, request))
        brand = app.settings.from_addr.partition("<")[0].strip().strip('"') or "LabourList Daily"
        message_id, data = simple_message(
            app.settings, to=request.email, subject=f"Please confirm your subscription to {brand}",
            text=rendered.text, html=rendered.html, date=app.clock.now(),
        )
        with from_dsn(app.settings.dsn, app.settings) as transport:
            [result] = transport.send([Outgoing(request.email, message_id, data)])
    except Exception:
        log.exception("confirmation email for subscriber %s could not be sent",
                      request.subscriber_id)
        return False
    if result.status != "sent":
        log.warning("confirmation email for subscriber %s not accepted: %s %s",
                    request.subscriber_id, result.status, result.error)
        return False
    return True


def subscribe(app: App, email: str, name: str = "", *, source: str = "web") -> bool:
    """Request a subscription and send the confirmation email (for the CLI and staff console).

    Returns True when an email went out; False when none was needed or it failed.
    """
    with app.sessions.begin() as session:
        request = request_subscription(session, email, name, now=app.clock.now(), source=source)
    return send_confirmation(app, request) if request is not None else False


# ---- leaving and coming back -------------------------------------------------------------


def unsubscribe(session: Session, sub: Subscriber, *, now: datetime, source: str,
                detail: str = "") -> bool:
    """Stop all email at once; False when the subscriber already gets nothing (idempotent).

    A bounced or complained address is left as it is: it already receives nothing, and its
    status says more than "unsubscribed" would.
    """
    if sub.status in LEFT:
        return False
    sub.paused_until = None
    return set_status(session, sub, UNSUBSCRIBED, source=source, at=now, detail=detail)


def pause(session: Session, sub: Subscriber, weeks: int, *, now: datetime,
          source: str = "preferences") -> datetime:
    """Pause for 1, 2 or 4 weeks (again while paused: the pause restarts from now)."""
    if weeks not in PAUSE_WEEKS:
        raise OptinError(f"A pause lasts {', '.join(map(str, PAUSE_WEEKS))} weeks.")
    if sub.status not in CONFIRMED:
        raise NotAllowed("Only a confirmed subscription can be paused.")
    until = now + timedelta(weeks=weeks)
    sub.paused_until = until
    detail = f"until {until:%Y-%m-%d %H:%M}Z ({weeks} week{'s' if weeks > 1 else ''})"
    if not set_status(session, sub, PAUSED, source=source, at=now, event="paused",
                      detail=detail):
        record_event(session, sub, "paused", source=source, detail=detail, at=now)
    return until


def resume(session: Session, sub: Subscriber, *, now: datetime,
           source: str = "preferences") -> bool:
    """End a pause early; False when not paused."""
    if sub.status != PAUSED:
        return False
    sub.paused_until = None
    return set_status(session, sub, ACTIVE, source=source, at=now, event="resumed")


def reactivate_due(session: Session, now: datetime) -> int:
    """Resume every pause that has run out; returns how many. The send pipeline calls this
    before it snapshots the audience, so a pause ends with the first edition after it."""
    due = session.scalars(
        select(Subscriber).where(Subscriber.status == PAUSED, Subscriber.paused_until.is_not(None),
                                 Subscriber.paused_until <= now)
    ).all()
    for sub in due:
        resume(session, sub, now=now, source="pause-ended")
    return len(due)


def change_name(session: Session, sub: Subscriber, name: str, *, now: datetime,
                source: str = "preferences") -> bool:
    """Set the first name the greeting uses (the preferences page's "First name"); the
    whole name follows it when it was the same (a web sign-up's) or empty. InvalidName for
    control characters or too long."""
    clean = validate_name(name)[:MAX_FIRST_NAME]
    if clean == sub.first_name:
        return False
    if sub.name in ("", sub.first_name):
        sub.name = clean
    sub.first_name = clean
    sub.updated_at = now
    record_event(session, sub, "name-changed", source=source, at=now)
    return True
