"""Mailgun webhooks: HMAC signature and replay window, then ``event-data`` → EventKind.

Mailgun puts the signature in the JSON body: ``signature = {timestamp, token, signature}``
where ``signature`` is the hex HMAC-SHA256 of ``timestamp + token`` under the webhook signing
key (``mailgun_webhook_signing_key``). A valid signature is not enough: a captured request
could be replayed, so a timestamp more than `events.TIMESTAMP_TOLERANCE` seconds away from our
clock, or a token already used, is refused with 406 (Mailgun's "do not retry"). The token
check lives in the database (`events.claim_nonce`), in the same transaction as the events.

``failed`` events carry ``severity``: temporary → deferred; permanent → a hard bounce when the
reason or the SMTP code says the address is dead, else a soft bounce (counted).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any

from mailer.config import Settings
from mailer.feedback.events import Event, EventKind, WebhookRejected, check_timestamp, digest
from mailer.feedback.providers import Verified, WebhookRequest, read_json
from mailer.smtp_status import is_hard_bounce

PROVIDER = "mailgun"
PARSED_BEFORE_VERIFIED = True  # the signature is inside the JSON

EVENTS: dict[str, EventKind] = {
    "delivered": EventKind.DELIVERED,
    "complained": EventKind.COMPLAINT,
    "unsubscribed": EventKind.UNSUBSCRIBE,
}

#: ``reason`` of a permanent failure → kind (Mailgun's own suppression lists and bounces).
PERMANENT_REASONS: dict[str, EventKind] = {
    "bounce": EventKind.BOUNCE_HARD,
    "suppress-bounce": EventKind.BOUNCE_HARD,
    "suppress-complaint": EventKind.COMPLAINT,
    "suppress-unsubscribe": EventKind.UNSUBSCRIBE,
    "old": EventKind.BOUNCE_SOFT,  # gave up after retrying for hours
}


def verify(request: WebhookRequest, settings: Settings, now: datetime) -> Verified:
    """Read the body, check the signature in it; the token is the nonce the route claims."""
    body = read_json(request.body)
    token = check_signature(body, settings.mailgun_webhook_signing_key, now)
    return Verified(body, nonce=token)


def check_signature(body: Any, signing_key: str, now: datetime) -> str:
    """Check signature and timestamp; return the token (the caller claims it once)."""
    if not signing_key:
        raise WebhookRejected(403, "mailgun webhook is not configured "
                                   "(set MAILER_MAILGUN_WEBHOOK_SIGNING_KEY)")
    block = body.get("signature") if isinstance(body, dict) else None
    if not isinstance(block, dict):
        raise WebhookRejected(403, "missing signature")
    timestamp = str(block.get("timestamp", ""))
    token = str(block.get("token", ""))
    signature = str(block.get("signature", ""))
    if not (timestamp and token and signature):
        raise WebhookRejected(403, "missing signature")
    expected = hmac.new(signing_key.encode("utf-8"), (timestamp + token).encode("utf-8"),
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode("ascii"), signature.lower().encode("utf-8")):
        raise WebhookRejected(403, "bad signature")
    check_timestamp(timestamp, now, status=406)
    return token


def kind_of(data: dict[str, Any]) -> EventKind:
    name = str(data.get("event", ""))
    if name != "failed":
        return EVENTS.get(name, EventKind.UNKNOWN)
    if str(data.get("severity", "")) != "permanent":
        return EventKind.DEFERRED
    reason = str(data.get("reason", ""))
    if reason in PERMANENT_REASONS:
        return PERMANENT_REASONS[reason]
    status = data.get("delivery-status") or {}
    try:
        code = int(status.get("code", 0))
    except (TypeError, ValueError):
        code = 0
    message = str(status.get("enhanced-code") or status.get("message") or "")
    return EventKind.BOUNCE_HARD if is_hard_bounce(code, message) else EventKind.BOUNCE_SOFT


def parse(body: Any) -> list[Event]:
    """The event of one webhook post (``event-data``)."""
    data = body.get("event-data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise WebhookRejected(400, "mailgun webhook body has no event-data")
    # event-data.id is unique per day only; with its timestamp it identifies the event.
    event_id = (f"{data['id']}:{data.get('timestamp', '')}" if data.get("id")
                else digest(data))
    status = data.get("delivery-status") or {}
    detail = " ".join(str(x) for x in (data.get("event"), data.get("severity"),
                                       data.get("reason"), status.get("code"),
                                       status.get("message") or status.get("description"))
                      if x)
    return [Event(PROVIDER, event_id, kind_of(data), str(data.get("recipient") or ""), data,
                  detail)]
