"""One event type for every provider, and the one place where an event changes a subscriber.

Provider modules verify a request and map its events, through plain dicts, to `Event`s of a
few normalised kinds (django-anymail's idea). `apply` then does the same thing whoever sent
it:

* the event is stored once: `WebhookEvent` is unique on (provider, event id), so a provider's
  retry, a replay or two web processes receiving the same event change nothing the second time;
* hard bounce → ``bounced``, complaint → ``complained``, unsubscribe → ``unsubscribed``, each
  through `subscribers.set_status`, so the subscriber's event trail says which provider and
  why;
* soft bounces are counted; `DEFAULT_SOFT_BOUNCE_LIMIT` of them in a row (no delivery in
  between) suppress the address as ``bounced``. A delivery resets the count;
* deferred, delivered and unknown events are stored and otherwise ignored: an event type a
  provider adds tomorrow must not turn into a 500 that the provider retries for days.

A status never moves "up": a bounce or an unsubscribe does not touch someone who already
unsubscribed or complained, and nothing here ever re-activates an address.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.errors import MailerError
from mailer.models import (
    ACTIVE,
    BOUNCED,
    COMPLAINED,
    PAUSED,
    PENDING,
    UNSUBSCRIBED,
    Subscriber,
    WebhookEvent,
)
from mailer.subscribers import find, record_event, set_status

DEFAULT_SOFT_BOUNCE_LIMIT = 3
#: How far a provider's signed timestamp may be from our clock, either way, in seconds: one
#: value for every provider that signs one (Mailgun, SendGrid). A captured request stops
#: working after this; a clock a few minutes off still loses nothing.
TIMESTAMP_TOLERANCE = 600
MAX_EVENT_ID = 300  # the WebhookEvent.event_id column
#: Statuses a bounce or an unsubscribe may still change (who could still be mailed).
MAILABLE = frozenset({ACTIVE, PENDING, PAUSED})


class EventKind(StrEnum):
    """The normalised event types (stored as their string values)."""

    BOUNCE_HARD = "bounce_hard"
    BOUNCE_SOFT = "bounce_soft"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Event:
    """One provider event about one address, ready for `apply`."""

    provider: str
    event_id: str
    kind: EventKind
    email: str
    payload: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


class WebhookRejected(MailerError):
    """A webhook request that must not be acted on (bad signature, replay, malformed body).

    `status` is the HTTP answer: 400 malformed, 401 missing basic auth, 403 bad signature or
    not configured, 406 replayed (Mailgun reads 406 as "do not retry").
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_timestamp(raw: str, now: datetime, *, status: int) -> None:
    """Refuse a signed timestamp (Unix seconds) more than `TIMESTAMP_TOLERANCE` from `now`.

    A valid signature proves who signed, not when the request was sent: without this, anyone
    who once saw a signed request (a log, a proxy) could replay it for ever. `status` is the
    provider's refusal code (Mailgun stops retrying on 406). Call it after the signature
    check, so an unsigned request learns nothing about our clock."""
    try:
        sent_at = float(raw.strip())
    except ValueError:
        raise WebhookRejected(403, "bad timestamp") from None
    if not math.isfinite(sent_at):
        raise WebhookRejected(403, "bad timestamp")
    if abs(now.timestamp() - sent_at) > TIMESTAMP_TOLERANCE:
        raise WebhookRejected(status, "timestamp outside the replay window")


def digest(payload: Any) -> str:
    """A stable id for an event that has none of its own: a provider's retry sends the same
    body again, so the hash of its canonical JSON identifies it."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=str)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _event_id(raw: str) -> str:
    raw = raw.strip()
    if not raw:
        raise ValueError("event id is empty")
    if len(raw) > MAX_EVENT_ID:
        return "sha256:" + hashlib.sha256(raw.encode("utf-8")).hexdigest()
    return raw


def already_seen(session: Session, provider: str, event_id: str) -> bool:
    found = session.scalar(
        select(WebhookEvent.id).where(WebhookEvent.provider == provider,
                                      WebhookEvent.event_id == _event_id(event_id))
    )
    return found is not None


def _store(session: Session, row: WebhookEvent) -> bool:
    """Insert the row; False when another request stored the same event first."""
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return False
    return True


def claim_nonce(session: Session, provider: str, nonce: str, now: datetime) -> bool:
    """Remember a one-time value (Mailgun's signature token); False if it was used before.

    Kept in the same table and transaction as the events, so a request that fails and is
    retried was never "used", and two processes cannot both accept one token."""
    if already_seen(session, f"{provider}:nonce", nonce):
        return False
    return _store(session, WebhookEvent(provider=f"{provider}:nonce", event_id=_event_id(nonce),
                                        kind="nonce", email="", payload={}, received_at=now))


def apply(
    session: Session,
    provider: str,
    event_id: str,
    kind: EventKind | str,
    email: str,
    payload: dict[str, Any],
    now: datetime,
    *,
    detail: str = "",
    soft_bounce_limit: int = DEFAULT_SOFT_BOUNCE_LIMIT,
    source: str = "",
) -> bool:
    """Store the event and change the subscriber it is about, once.

    Returns False (and changes nothing) when this provider's event id was seen before. An
    address we do not know is stored too: the record explains a later question. `source` is
    what the subscriber's history says the change came from (default "webhook:PROVIDER").
    """
    try:
        kind = EventKind(kind)
    except ValueError:
        kind = EventKind.UNKNOWN
    key = _event_id(event_id)
    if already_seen(session, provider, key):
        return False
    address = (email or "").strip().lower()[:320]
    row = WebhookEvent(provider=provider, event_id=key, kind=kind.value, email=address,
                       payload=payload, received_at=now)
    if not _store(session, row):
        return False
    sub = find(session, address) if address else None
    if sub is not None:
        _change(session, sub, kind, source=source or f"webhook:{provider}", detail=detail,
                now=now, soft_bounce_limit=soft_bounce_limit)
    return True


def apply_event(session: Session, event: Event, now: datetime, *,
                soft_bounce_limit: int = DEFAULT_SOFT_BOUNCE_LIMIT) -> bool:
    """`apply` for an `Event`."""
    return apply(session, event.provider, event.event_id, event.kind, event.email,
                 event.payload, now, detail=event.detail, soft_bounce_limit=soft_bounce_limit)


def _change(session: Session, sub: Subscriber, kind: EventKind, *, source: str, detail: str,
            now: datetime, soft_bounce_limit: int) -> None:
    source = source[:40]
    detail = " ".join(detail.split())[:500]
    if kind is EventKind.BOUNCE_HARD:
        if sub.status in MAILABLE:
            set_status(session, sub, BOUNCED, source=source, detail=detail or "hard bounce",
                       at=now)
    elif kind is EventKind.COMPLAINT:
        if sub.status != COMPLAINED:
            set_status(session, sub, COMPLAINED, source=source,
                       detail=detail or "spam complaint", at=now)
    elif kind is EventKind.UNSUBSCRIBE:
        if sub.status in MAILABLE:
            set_status(session, sub, UNSUBSCRIBED, source=source,
                       detail=detail or "unsubscribed at the provider", at=now)
    elif kind is EventKind.BOUNCE_SOFT:
        sub.soft_bounces = (sub.soft_bounces or 0) + 1
        count = sub.soft_bounces
        record_event(session, sub, "soft_bounce", source=source,
                     detail=f"{count} in a row" + (f": {detail}" if detail else ""), at=now)
        if count >= soft_bounce_limit and sub.status in MAILABLE:
            set_status(session, sub, BOUNCED, source=source,
                       detail=f"{count} soft bounces in a row", at=now)
    elif kind is EventKind.DELIVERED:
        if sub.soft_bounces:
            sub.soft_bounces = 0
