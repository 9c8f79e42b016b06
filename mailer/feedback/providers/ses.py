"""Amazon SES notifications through SNS: signature, topic, confirmation, then SES events.

An SNS message is trusted only when all of this holds:

* ``SigningCertURL`` is an https URL on ``sns.<region>.amazonaws.com`` ending in ``.pem``
  (`SNS_URL`); the certificate is fetched over verified TLS and cached by URL;
* the signature (``SignatureVersion`` 1: SHA1, 2: SHA256, RSA PKCS#1 v1.5) verifies over
  SNS's canonical "string to sign" with that certificate, which must be in its validity period;
* the ``TopicArn`` is one we configured (``ses_webhook_topic_arns``). A valid signature proves
  only that *some* AWS account sent it: anyone can point their own topic at our URL, and SES
  bounce notifications for our subscribers' addresses would then be theirs to invent.

A ``SubscriptionConfirmation`` that passes is confirmed by fetching its ``SubscribeURL``, which
must be on the same SNS hosts. Notifications carry SES events (``eventType`` for configuration
set event publishing, ``notificationType`` for identity notifications); each affected
recipient becomes one event with id ``<SNS MessageId>:<address>``.

Tests serve certificates from 127.0.0.1 by replacing `SNS_URL` (a module setting on purpose:
no configuration file or environment variable can widen it in production).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
from datetime import datetime
from typing import Any

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailer.config import Settings
from mailer.feedback import jsonbody
from mailer.feedback.events import Event, EventKind, WebhookRejected
from mailer.feedback.providers import Verified, WebhookRequest, read_json

log = logging.getLogger("mailer.webhooks")

PROVIDER = "ses"
PARSED_BEFORE_VERIFIED = True  # the signature is inside the JSON
#: Where SNS certificates and subscription URLs may live (replaced by tests only).
SNS_URL = re.compile(r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/")
CERT_PATH = re.compile(r"^[^?#]*\.pem$")
FETCH_TIMEOUT = 10.0
MAX_CERT_BYTES = 64 * 1024
SES_TOPIC_VALIDATED = "Successfully validated SNS topic for Amazon SES event publishing."

MESSAGE_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                     "Type")

#: Transient bounce sub-types that are about our message, not the address: not counted.
CONTENT_BOUNCES = frozenset({"ContentRejected", "MessageTooLarge", "AttachmentRejected"})

_certs: dict[str, x509.Certificate] = {}
_certs_lock = threading.Lock()


def _allowed(url: str) -> bool:
    return bool(SNS_URL.match(url or ""))


def fetch_certificate(url: str) -> x509.Certificate:
    """The signing certificate at `url` (an allowed SNS URL), fetched once per process."""
    match = SNS_URL.match(url or "")
    if match is None or not CERT_PATH.match(url[match.end():]):
        raise WebhookRejected(403, "SigningCertURL is not an Amazon SNS certificate URL")
    with _certs_lock:
        cached = _certs.get(url)
    if cached is not None:
        return cached
    try:
        response = requests.get(url, timeout=FETCH_TIMEOUT, allow_redirects=False)
    except requests.RequestException:
        raise WebhookRejected(403, "cannot fetch the SNS signing certificate") from None
    if response.status_code != 200 or len(response.content) > MAX_CERT_BYTES:
        raise WebhookRejected(403, "cannot fetch the SNS signing certificate")
    try:
        cert = x509.load_pem_x509_certificate(response.content)
    except ValueError:
        raise WebhookRejected(403, "the SNS signing certificate is unreadable") from None
    with _certs_lock:
        if len(_certs) >= 32:
            _certs.clear()
        _certs[url] = cert
    return cert


def string_to_sign(message: dict[str, Any]) -> bytes:
    """SNS's canonical form: ``key\\nvalue\\n`` for the signed keys present, in order."""
    keys = NOTIFICATION_KEYS if message.get("Type") == "Notification" else CONFIRMATION_KEYS
    parts = []
    for key in keys:
        value = message.get(key)
        if value is None:
            if key == "Subject":
                continue
            raise WebhookRejected(403, f"SNS message without {key}")
        parts.append(f"{key}\n{value}\n")
    return "".join(parts).encode("utf-8")


def topic_arns(settings: Settings) -> list[str]:
    """``ses_webhook_topic_arns`` as a list (a list setting, or a comma-separated string)."""
    raw: list[str] | str = settings.ses_webhook_topic_arns or []
    if isinstance(raw, str):
        raw = raw.split(",")
    return [str(arn).strip() for arn in raw if str(arn).strip()]


def verify(request: WebhookRequest, settings: Settings, now: datetime) -> Verified:
    """Read and check the SNS message; answer SNS's subscription handshake (which carries no
    events) here, confirming a subscription by fetching its ``SubscribeURL``."""
    message_type = request.headers.get("x-amz-sns-message-type") or ""
    message = check_message(read_json(request.body), topics=topic_arns(settings), now=now,
                            message_type_header=message_type)
    kind = message["Type"]
    if kind == "SubscriptionConfirmation":
        confirm_subscription(message)
        log.warning("confirmed the SNS subscription to %s", message.get("TopicArn"))
        return Verified(message, answer={"ok": True, "confirmed": message.get("TopicArn")})
    if kind == "UnsubscribeConfirmation":
        log.warning("SNS unsubscribed us from %s", message.get("TopicArn"))
        return Verified(message, answer={"ok": True})
    return Verified(message)


def check_message(message: Any, *, topics: list[str] | tuple[str, ...], now: datetime,
                  message_type_header: str | None = None) -> dict[str, Any]:
    """Raise WebhookRejected unless `message` is a genuine SNS message for one of `topics`."""
    if not isinstance(message, dict):
        raise WebhookRejected(400, "SNS body must be a JSON object")
    kind = message.get("Type")
    if kind not in MESSAGE_TYPES:
        raise WebhookRejected(400, "not an SNS message")
    if message_type_header is not None and message_type_header != kind:
        raise WebhookRejected(400, "x-amz-sns-message-type does not match the body")
    if not topics:
        raise WebhookRejected(403, "ses webhook is not configured "
                                   "(set ses_webhook_topic_arns to the SNS topic ARNs)")
    if message.get("TopicArn") not in topics:
        raise WebhookRejected(403, "SNS topic not allowed")
    version = str(message.get("SignatureVersion", ""))
    algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(version)
    if algorithm is None:
        raise WebhookRejected(403, "unsupported SNS SignatureVersion")
    cert = fetch_certificate(str(message.get("SigningCertURL", "")))
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise WebhookRejected(403, "the SNS signing certificate is not valid now")
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise WebhookRejected(403, "unexpected SNS certificate key type")
    try:
        signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        key.verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm)
    except (InvalidSignature, binascii.Error, ValueError):
        raise WebhookRejected(403, "bad signature") from None
    return message


def confirm_subscription(message: dict[str, Any]) -> None:
    """Fetch ``SubscribeURL`` (an allowed SNS URL) to confirm a verified subscription."""
    url = str(message.get("SubscribeURL", ""))
    if not _allowed(url):
        raise WebhookRejected(403, "SubscribeURL is not an Amazon SNS URL")
    try:
        response = requests.get(url, timeout=FETCH_TIMEOUT, allow_redirects=False)
    except requests.RequestException as exc:
        raise WebhookRejected(502, f"could not confirm the subscription: "
                                   f"{type(exc).__name__}") from None
    if response.status_code != 200:
        raise WebhookRejected(502, f"could not confirm the subscription: HTTP "
                                   f"{response.status_code}")


def _bounce(event: dict[str, Any]) -> tuple[EventKind, list[tuple[str, str]]]:
    bounce = event.get("bounce") or {}
    bounce_type = str(bounce.get("bounceType", ""))
    sub_type = str(bounce.get("bounceSubType", ""))
    if bounce_type == "Permanent":
        kind = EventKind.BOUNCE_HARD
    elif sub_type in CONTENT_BOUNCES:
        kind = EventKind.DEFERRED
    else:  # Transient (mailbox full, general) and Undetermined
        kind = EventKind.BOUNCE_SOFT
    recipients = [(str(r.get("emailAddress", "")),
                   f"{bounce_type}/{sub_type} {r.get('diagnosticCode', '')}".strip())
                  for r in bounce.get("bouncedRecipients") or [] if isinstance(r, dict)]
    return kind, recipients


def _complaint(event: dict[str, Any]) -> tuple[EventKind, list[tuple[str, str]]]:
    complaint = event.get("complaint") or {}
    feedback = str(complaint.get("complaintFeedbackType", ""))
    kind = EventKind.UNKNOWN if feedback == "not-spam" else EventKind.COMPLAINT
    return kind, [(str(r.get("emailAddress", "")), feedback or "complaint")
                  for r in complaint.get("complainedRecipients") or [] if isinstance(r, dict)]


def _delivery(event: dict[str, Any]) -> tuple[EventKind, list[tuple[str, str]]]:
    delivery = event.get("delivery") or {}
    return EventKind.DELIVERED, [(str(r), "") for r in delivery.get("recipients") or []]


def _delay(event: dict[str, Any]) -> tuple[EventKind, list[tuple[str, str]]]:
    delay = event.get("deliveryDelay") or {}
    return EventKind.DEFERRED, [(str(r.get("emailAddress", "")), str(delay.get("delayType", "")))
                                for r in delay.get("delayedRecipients") or []
                                if isinstance(r, dict)]


def _subscription(event: dict[str, Any]) -> tuple[EventKind, list[tuple[str, str]]]:
    preferences = (event.get("subscription") or {}).get("newTopicPreferences") or {}
    kind = EventKind.UNSUBSCRIBE if preferences.get("unsubscribeAll") else EventKind.UNKNOWN
    return kind, [(str(r), "SES subscription") for r in _destination(event)]


def _destination(event: dict[str, Any]) -> list[str]:
    return [str(r) for r in (event.get("mail") or {}).get("destination") or []]


HANDLERS = {
    "Bounce": _bounce,
    "Complaint": _complaint,
    "Delivery": _delivery,
    "DeliveryDelay": _delay,
    "Subscription": _subscription,
}


def parse(message: dict[str, Any]) -> list[Event]:
    """The events of a verified SNS Notification carrying an SES event."""
    sns_id = str(message.get("MessageId", ""))
    text = message.get("Message", "")
    if text == SES_TOPIC_VALIDATED:
        return []
    try:  # signed by SNS, yet bounded like any body: it is walked and stored below
        event = jsonbody.loads(text) if isinstance(text, str) else None
    except jsonbody.JsonRefused:
        event = None
    if not isinstance(event, dict):
        return [Event(PROVIDER, sns_id, EventKind.UNKNOWN, "", {"Message": str(text)[:2000]},
                      "unreadable SNS message")]
    name = str(event.get("eventType") or event.get("notificationType") or "")
    handler = HANDLERS.get(name)
    if handler is not None:
        kind, recipients = handler(event)
    else:
        kind, recipients = EventKind.UNKNOWN, [(r, name) for r in _destination(event)]
    if not recipients:
        return [Event(PROVIDER, sns_id, EventKind.UNKNOWN, "", event, name)]
    return [Event(PROVIDER, f"{sns_id}:{address.lower()}", kind, address, event, detail or name)
            for address, detail in recipients]
