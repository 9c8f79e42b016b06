"""Unsubscribe requests by email: the mailto of List-Unsubscribe (RFC 2369).

Mail clients that do not make RFC 8058's one-click POST offer the mailto instead (Apple Mail's
and Outlook's unsubscribe banners among them), and send an email to `unsubscribe_mailto` with
the subject the URI gives: "unsubscribe TOKEN", TOKEN being the reader's own signed
unsubscribe token, the one in the link (`MessageTemplate._list_unsubscribe_parts`). Unread,
that mailbox is where such requests go to die, and the reader keeps getting the email they
asked to stop.

Only the token counts. An email's From is trivially forged, so a message without a valid
token (a person writing "please take me off", a forgery) changes nothing: it is reported as
unmatched, with its From, and when that From is a reader still on the list the request is
noted in their history (`REQUEST_EVENT`), which the staff console's dashboard lists until
they have left, for staff to act on by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.header import decode_header, make_header
from email.message import Message
from email.utils import parseaddr

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.feedback.inbound import Outcome, Unreadable, parse, part_text, squash
from mailer.models import Subscriber, SubscriberEvent
from mailer.optin import CONFIRMED, unsubscribe
from mailer.subscribers import InvalidAddress, find, normalise_email, record_event
from mailer.tokens import UNSUBSCRIBE, BadToken, read_token

SOURCE = "mailto"  # what a subscriber's history says the change came from
REQUEST_EVENT = "unsubscribe-request"  # a request without a token, noted for staff
KEPT_EVENT = "unsubscribe-request-kept"  # staff read it: not a request to leave
# "unsubscribe TOKEN" (the URI's %20 decoded or not), or the link's ".../unsubscribe/TOKEN";
# a token is itsdangerous' payload and signature, URL-safe base64 joined by a dot.
_TOKEN = re.compile(r"unsubscribe(?:%20|[ \t]+|/)([A-Za-z0-9_-]{2,100}\.[A-Za-z0-9_-]{10,100})",
                    re.IGNORECASE)
MAX_TOKENS = 5  # candidates tried per message


def _subject(message: Message) -> str:
    raw = str(message.get("Subject", "") or "")
    try:
        return str(make_header(decode_header(raw)))
    except (ValueError, LookupError, UnicodeError):
        return raw


def _first_text(message: Message) -> str:
    """The first text/plain part (not inside an attached message), at most MAX_TEXT."""
    for part in message.walk():
        if part.get_content_type() == "message/rfc822":
            break
        if part.get_content_type() == "text/plain":
            return part_text(part)
    return ""


@dataclass(frozen=True)
class Request:
    tokens: list[str]  # candidates: the subject's first, then the text's
    sender: str  # the From address ("" when none)
    subject: str  # one line, for staff
    message_id: str


def read_request(raw: bytes) -> Request:
    """What a message asks; Unreadable when it is no message to read."""
    message = parse(raw)
    subject = _subject(message)
    found = _TOKEN.findall(subject) + _TOKEN.findall(_first_text(message))
    return Request(tokens=list(dict.fromkeys(found))[:MAX_TOKENS],
                   sender=squash(parseaddr(str(message.get("From", "") or ""))[1])[:320],
                   subject=squash(subject)[:200],
                   message_id=squash(message.get("Message-ID", ""))[:300])


def ingest(session: Session, raw: bytes, now: datetime, *, secret: str) -> list[Outcome]:
    """Unsubscribe the reader whose token the message carries; never raises for a bad
    message (database errors do: the caller keeps the message for later)."""
    try:
        request = read_request(raw)
    except Unreadable as exc:
        return [Outcome("ignored", str(exc))]
    except Exception as exc:  # noqa: BLE001 - a message the email package cannot read
        return [Outcome("ignored", f"unreadable message ({type(exc).__name__}: {exc})")]
    origin = f"email from {request.sender or 'no address'}"
    for token in request.tokens:
        try:
            subscriber_id, _ = read_token(secret, UNSUBSCRIBE, token)
        except BadToken:
            continue
        sub = session.get(Subscriber, subscriber_id)
        if sub is None:
            return [Outcome("unmatched", f"the token is of a subscriber no longer on the list "
                                         f"({origin}); nothing changed")]
        if unsubscribe(session, sub, now=now, source=SOURCE, detail=origin):
            return [Outcome("applied", f"{sub.email}: unsubscribed ({origin})")]
        return [Outcome("duplicate", f"{sub.email}: already gets nothing ({sub.status})")]
    why = "no valid unsubscribe token" if request.tokens else "no unsubscribe token"
    noted = _note_for_staff(session, request, now)
    return [Outcome("unmatched", f"{why} ({origin}); nothing changed: "
                                 + (f"noted in {noted}'s history for staff" if noted else
                                    "if they asked to leave, mailer subscribers unsubscribe "
                                    "ADDRESS"))]


def _note_for_staff(session: Session, request: Request, now: datetime) -> str:
    """Note a request without a token in the history of the reader it comes from, if they are
    still on the list (once per message); their address, or "" when nobody was noted."""
    try:
        address = normalise_email(request.sender)
    except InvalidAddress:
        return ""
    sub = find(session, address)
    if sub is None or sub.status not in CONFIRMED:
        return ""
    detail = (f"an email to the unsubscribe address without a token, subject "
              f"\"{request.subject}\" ({request.message_id or 'no Message-ID'}): unsubscribe "
              "them if they asked")
    seen = session.scalar(select(SubscriberEvent.id).where(
        SubscriberEvent.subscriber_id == sub.id, SubscriberEvent.kind == REQUEST_EVENT,
        SubscriberEvent.detail == detail[:2000]))
    if seen is None:
        record_event(session, sub, REQUEST_EVENT, source=SOURCE, detail=detail, at=now)
    return sub.email
