"""SendGrid's signed Event Webhook: ECDSA verification, then ``event`` → EventKind.

SendGrid signs ``timestamp + raw body`` with ECDSA P-256 / SHA-256 and sends the base64 DER
signature in ``X-Twilio-Email-Event-Webhook-Signature`` and the timestamp in
``X-Twilio-Email-Event-Webhook-Timestamp``. The public key (Settings → Mail Settings → Signed
Event Webhook) is configured as ``sendgrid_webhook_public_key``: the base64 DER SendGrid shows,
or PEM. The body must be verified exactly as received, before it is parsed. A signature over a
timestamp more than `events.TIMESTAMP_TOLERANCE` from our clock is refused (403) like a bad
one, so a captured post cannot be replayed later. (SendGrid does not document whether a retry
is signed afresh; one that kept its first timestamp is refused once the window has passed.)

One request carries a JSON array of events; ``sg_event_id`` identifies each (SendGrid retries
failed posts for 24 hours).
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailer.config import Settings
from mailer.feedback.events import Event, EventKind, WebhookRejected, check_timestamp, digest
from mailer.feedback.providers import Verified, WebhookRequest, read_json

PROVIDER = "sendgrid"
PARSED_BEFORE_VERIFIED = False
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

EVENTS: dict[str, EventKind] = {
    "delivered": EventKind.DELIVERED,
    "deferred": EventKind.DEFERRED,
    "spamreport": EventKind.COMPLAINT,
    "unsubscribe": EventKind.UNSUBSCRIBE,
    "group_unsubscribe": EventKind.UNSUBSCRIBE,
}

#: ``bounce`` events: ``type`` bounce (the address is dead) or blocked (the server refused us).
BOUNCE_TYPES: dict[str, EventKind] = {
    "bounce": EventKind.BOUNCE_HARD,
    "blocked": EventKind.DEFERRED,
}

#: ``dropped`` events: SendGrid did not even try, because of its own suppression lists.
DROP_REASONS: dict[str, EventKind] = {
    "bounced address": EventKind.BOUNCE_HARD,
    "invalid": EventKind.BOUNCE_HARD,
    "unsubscribed address": EventKind.UNSUBSCRIBE,
    "spam reporting address": EventKind.COMPLAINT,
}


@lru_cache(maxsize=4)
def load_public_key(key: str) -> ec.EllipticCurvePublicKey:
    """The configured verification key (base64 DER as SendGrid shows it, or PEM)."""
    text = key.strip()
    try:
        if "BEGIN PUBLIC KEY" in text:
            loaded = serialization.load_pem_public_key(text.encode("ascii"))
        else:
            loaded = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, UnicodeError):
        raise WebhookRejected(403, "sendgrid_webhook_public_key is not a valid public key") \
            from None
    if not isinstance(loaded, ec.EllipticCurvePublicKey):
        raise WebhookRejected(403, "sendgrid_webhook_public_key is not an ECDSA key")
    return loaded


def verify(request: WebhookRequest, settings: Settings, now: datetime) -> Verified:
    """Check the signature over the body as received, then read it."""
    check_signature(request.body, request.headers.get(SIGNATURE_HEADER),
                    request.headers.get(TIMESTAMP_HEADER), settings.sendgrid_webhook_public_key,
                    now)
    return Verified(read_json(request.body))


def check_signature(body: bytes, signature: str | None, timestamp: str | None, public_key: str,
                    now: datetime) -> None:
    """Raise WebhookRejected unless `body` carries SendGrid's signature over a timestamp
    within `events.TIMESTAMP_TOLERANCE` of `now` (a signed post replayed later is refused)."""
    if not public_key:
        raise WebhookRejected(403, "sendgrid webhook is not configured "
                                   "(set MAILER_SENDGRID_WEBHOOK_PUBLIC_KEY)")
    if not signature or not timestamp:
        raise WebhookRejected(403, "missing signature headers")
    key = load_public_key(public_key)
    try:
        raw_signature = base64.b64decode(signature.strip(), validate=True)
        key.verify(raw_signature, timestamp.strip().encode("utf-8") + body,
                   ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        raise WebhookRejected(403, "bad signature") from None
    check_timestamp(timestamp, now, status=403)


def kind_of(event: dict[str, Any]) -> EventKind:
    name = str(event.get("event", ""))
    if name == "bounce":
        return BOUNCE_TYPES.get(str(event.get("type") or "bounce"), EventKind.BOUNCE_HARD)
    if name == "dropped":
        reason = str(event.get("reason", "")).strip().lower()
        for prefix, kind in DROP_REASONS.items():
            if reason.startswith(prefix):
                return kind
        return EventKind.UNKNOWN
    return EVENTS.get(name, EventKind.UNKNOWN)


def parse(body: Any) -> list[Event]:
    """The events of one Event Webhook post (a JSON array)."""
    if not isinstance(body, list):
        raise WebhookRejected(400, "sendgrid webhook body must be a JSON array")
    events: list[Event] = []
    for item in body:
        if not isinstance(item, dict):
            continue
        event_id = str(item.get("sg_event_id") or "") or digest(item)
        detail = " ".join(str(item.get(k, "")) for k in ("event", "type", "reason", "status")
                          if item.get(k))
        events.append(Event(PROVIDER, event_id, kind_of(item), str(item.get("email") or ""),
                            item, detail))
    return events
