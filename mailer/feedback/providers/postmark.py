"""Postmark webhooks: HTTP basic auth, then ``RecordType`` (and the bounce ``Type``) → EventKind.

Postmark signs nothing; the webhook URL carries credentials
(``https://USER:PASSWORD@host/webhooks/postmark``), checked in constant time against
``postmark_webhook_user`` / ``postmark_webhook_password``. Without a configured password the
endpoint refuses everything: an open endpoint would let anyone unsubscribe the list.

One request carries one record. Bounces and spam complaints have an ``ID``; other records do
not, so their id is a hash of the body (Postmark's retries repeat the body exactly).
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any

from mailer.config import Settings
from mailer.feedback.events import Event, EventKind, WebhookRejected, digest
from mailer.feedback.providers import Verified, WebhookRequest, read_json

PROVIDER = "postmark"
PARSED_BEFORE_VERIFIED = False

#: Bounce ``Type`` (also used for SpamComplaint records) → kind.
BOUNCE_TYPES: dict[str, EventKind] = {
    "HardBounce": EventKind.BOUNCE_HARD,
    "BadEmailAddress": EventKind.BOUNCE_HARD,
    "SoftBounce": EventKind.BOUNCE_SOFT,
    "DnsError": EventKind.BOUNCE_SOFT,
    "Transient": EventKind.DEFERRED,
    # The receiving server blocked *us* (reputation, policy): not the address's fault.
    "Blocked": EventKind.DEFERRED,
    "DMARCPolicy": EventKind.DEFERRED,
    "SpamComplaint": EventKind.COMPLAINT,
    "SpamNotification": EventKind.COMPLAINT,
    "Unsubscribe": EventKind.UNSUBSCRIBE,
    "ManualSuppression": EventKind.UNSUBSCRIBE,
}

#: SubscriptionChange ``SuppressionReason`` (when ``SuppressSending`` is true) → kind.
SUPPRESSION_REASONS: dict[str, EventKind] = {
    "HardBounce": EventKind.BOUNCE_HARD,
    "SpamComplaint": EventKind.COMPLAINT,
    "ManualSuppression": EventKind.UNSUBSCRIBE,
}

RECORD_TYPES: dict[str, EventKind] = {
    "Delivery": EventKind.DELIVERED,
    "SpamComplaint": EventKind.COMPLAINT,
}


def verify(request: WebhookRequest, settings: Settings, now: datetime) -> Verified:
    """Check the basic-auth credentials, then read the body."""
    check_credentials(request.username, request.password,
                      expected_user=settings.postmark_webhook_user,
                      expected_password=settings.postmark_webhook_password)
    return Verified(read_json(request.body))


def check_credentials(username: str | None, password: str | None, *, expected_user: str,
                      expected_password: str) -> None:
    """Raise WebhookRejected unless the basic-auth credentials match (constant time)."""
    if not expected_password:
        raise WebhookRejected(403, "postmark webhook is not configured "
                                   "(set MAILER_POSTMARK_WEBHOOK_PASSWORD)")
    if username is None or password is None:
        raise WebhookRejected(401, "basic auth required")
    user_ok = hmac.compare_digest(username.encode(), expected_user.encode())
    password_ok = hmac.compare_digest(password.encode(), expected_password.encode())
    if not (user_ok and password_ok):
        raise WebhookRejected(401, "wrong webhook credentials")


def kind_of(record: dict[str, Any]) -> EventKind:
    record_type = str(record.get("RecordType", ""))
    if record_type == "Bounce":
        return BOUNCE_TYPES.get(str(record.get("Type", "")), EventKind.UNKNOWN)
    if record_type == "SubscriptionChange":
        if not record.get("SuppressSending"):
            return EventKind.UNKNOWN  # a reactivation: we never re-subscribe anyone from here
        return SUPPRESSION_REASONS.get(str(record.get("SuppressionReason", "")),
                                       EventKind.UNSUBSCRIBE)
    return RECORD_TYPES.get(record_type, EventKind.UNKNOWN)


def parse(body: Any) -> list[Event]:
    """The event in a Postmark webhook body (a JSON object)."""
    if not isinstance(body, dict):
        raise WebhookRejected(400, "postmark webhook body must be a JSON object")
    record_type = str(body.get("RecordType", ""))
    email = str(body.get("Email") or body.get("Recipient") or "")
    if record_type in ("Bounce", "SpamComplaint") and body.get("ID") is not None:
        event_id = f"{record_type}:{body['ID']}"
    else:
        event_id = digest(body)
    detail = " ".join(str(body.get(k, "")) for k in ("Type", "Description", "Details",
                                                     "SuppressionReason") if body.get(k))
    return [Event(PROVIDER, event_id, kind_of(body), email, body, detail)]
