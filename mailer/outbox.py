"""The outbox of outgoing webhooks: events written in the transaction of the change they report.

Other systems (the site, the CRM, the donations platform) learn that a reader joined, left,
bounced or complained, and that an edition went out, through webhooks we POST to them. The
event is a row here, added in the same transaction as the change: when the change commits the
event exists and survives any crash, and a change that rolls back leaves no event behind. The
delivering process (`mailer.webhook_delivery`) sends the rows later, never the web request
that made the change.

One row per event and endpoint, fanned out when the event is written: an endpoint added later
does not receive the past, and one that is slow holds back nobody else. The event's id (the
Standard Webhooks `webhook-id`) is the same for every endpoint and every retry, so receivers
deduplicate by it. Writing an event costs one small indexed query when no endpoint is
registered: most installations have none.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from mailer.choices import split
from mailer.models import (
    HOOK_DELIVERED,
    HOOK_PENDING,
    HookDelivery,
    HookEndpoint,
    Subscriber,
    utcnow,
)

SUBSCRIBER_CREATED = "subscriber.created"
SUBSCRIBER_CONFIRMED = "subscriber.confirmed"
SUBSCRIBER_UPDATED = "subscriber.updated"
SUBSCRIBER_UNSUBSCRIBED = "subscriber.unsubscribed"
SUBSCRIBER_BOUNCED = "subscriber.bounced"
SUBSCRIBER_COMPLAINED = "subscriber.complained"
EDITION_SENT = "edition.sent"
EDITION_FAILED = "edition.failed"
EVENT_TYPES = (SUBSCRIBER_CREATED, SUBSCRIBER_CONFIRMED, SUBSCRIBER_UPDATED,
               SUBSCRIBER_UNSUBSCRIBED, SUBSCRIBER_BOUNCED, SUBSCRIBER_COMPLAINED,
               EDITION_SENT, EDITION_FAILED)

#: How long an event is retried before it is given up (the Standard Webhooks norm is a day).
RETRY_WINDOW = timedelta(hours=24)
#: A new event's first attempt is due at once, whichever clock the delivering process reads.
DUE_AT_ONCE = datetime(2000, 1, 1, tzinfo=UTC)

# What a subscriber's history event (`SubscriberEvent.kind`) tells other systems. "subscribed"
# and "added" on a new row are `SUBSCRIBER_CREATED` (see `event_for`).
_EVENT_OF_KIND = {
    "confirmed": SUBSCRIBER_CONFIRMED,
    "subscribed": SUBSCRIBER_UPDATED,  # someone who had left asked again: pending once more
    "activated": SUBSCRIBER_UPDATED,
    "paused": SUBSCRIBER_UPDATED,
    "resumed": SUBSCRIBER_UPDATED,
    "choices-changed": SUBSCRIBER_UPDATED,
    "name-changed": SUBSCRIBER_UPDATED,
    "unsubscribed": SUBSCRIBER_UNSUBSCRIBED,
    "bounced": SUBSCRIBER_BOUNCED,
    "complained": SUBSCRIBER_COMPLAINED,
}


def event_for(kind: str, *, new: bool = False) -> str | None:
    """The webhook event a subscriber history entry of `kind` makes, or None."""
    if new and kind in ("subscribed", "added"):
        return SUBSCRIBER_CREATED
    return _EVENT_OF_KIND.get(kind)


def channel_of(source: str) -> str:
    """Where a change came from, in the words a receiving system can switch on."""
    if source in ("one-click", "mailto", "bounce-email"):
        return source
    if source in ("staff", "cli", "import"):
        return "console"
    if source.startswith("api"):
        return "api"
    if source.startswith("webhook") or source in ("postmark", "sendgrid", "mailgun", "ses"):
        return "webhook"
    if source in ("page", "preferences", "web", "confirm"):
        return "reader"
    return source or "other"


def new_message_id() -> str:
    """A fresh Standard Webhooks message id."""
    return "msg_" + secrets.token_hex(12)


def reader_data(*, id: int, email: str, status: str, name: str, first_name: str,  # noqa: A002
                frequency: str, sections: str, source: str = "", detail: str = "",
                ) -> dict[str, Any]:
    """What an event says about a reader: what a CRM keeps, and nothing it should not."""
    return {"id": id, "email": email, "status": status, "name": name,
            "first_name": first_name, "frequency": frequency, "sections": split(sections),
            "source": source, "channel": channel_of(source), "detail": detail}


def subscriber_data(sub: Subscriber, *, source: str = "", detail: str = "") -> dict[str, Any]:
    return reader_data(id=sub.id, email=sub.email, status=sub.status, name=sub.name,
                       first_name=sub.first_name, frequency=sub.frequency,
                       sections=sub.sections or "", source=source, detail=detail)


def _endpoints_for(session: Session, event_type: str) -> list[int]:
    rows = session.execute(select(HookEndpoint.id, HookEndpoint.events)
                           .where(HookEndpoint.enabled.is_(True))).all()
    return [row.id for row in rows if event_type in row.events or "*" in row.events]


def emit(session: Session, event_type: str, data: dict[str, Any], *,
         subscriber_id: int | None = None, at: datetime | None = None) -> int:
    """Add the event for every endpoint that wants it, in the caller's transaction; how many
    rows were written."""
    return emit_many(session, event_type, [(data, subscriber_id)], at=at)


def emit_many(session: Session, event_type: str,
              items: Iterable[tuple[dict[str, Any], int | None]], *,
              at: datetime | None = None) -> int:
    """`emit` for many events of one type in one INSERT (a CSV import's new readers)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event {event_type!r}")
    endpoints = _endpoints_for(session, event_type)
    if not endpoints:
        return 0
    now = at or utcnow()
    stamp = now.isoformat().replace("+00:00", "Z")
    rows: list[dict[str, Any]] = []
    for data, subscriber_id in items:
        message_id = new_message_id()
        payload = {"type": event_type, "timestamp": stamp, "data": data}
        rows.extend({"message_id": message_id, "endpoint_id": endpoint,
                     "event_type": event_type, "payload": payload,
                     "subscriber_id": subscriber_id, "state": HOOK_PENDING, "attempts": 0,
                     "created_at": now, "next_attempt_at": DUE_AT_ONCE,
                     "expires_at": now + RETRY_WINDOW, "last_status": 0, "last_error": ""}
                    for endpoint in endpoints)
    if rows:
        session.execute(insert(HookDelivery), rows)
    return len(rows)


def forget_subscriber(session: Session, subscriber_id: int) -> int:
    """Erasure: events about the reader that have not gone are dropped, and the payloads of
    those that went are emptied (the row stays for the endpoint's delivery history)."""
    dropped = session.execute(
        delete(HookDelivery).where(HookDelivery.subscriber_id == subscriber_id,
                                   HookDelivery.state != HOOK_DELIVERED)
        .execution_options(synchronize_session=False))
    session.execute(
        update(HookDelivery).where(HookDelivery.subscriber_id == subscriber_id)
        .values(payload={}, subscriber_id=None)
        .execution_options(synchronize_session=False))
    return int(getattr(dropped, "rowcount", 0) or 0)
