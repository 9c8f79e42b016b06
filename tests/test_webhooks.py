"""Provider webhooks through the real Flask app: signed with test keys, payloads in each
provider's documented shape. Valid events change a subscriber once, however often they are
delivered; tampered or unsigned ones change nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask.testing import FlaskClient
from sqlalchemy import func, select

from mailer.app import App
from mailer.clock import FixedClock
from mailer.config import Settings, validate
from mailer.db import init_db
from mailer.feedback import providers
from mailer.feedback.events import TIMESTAMP_TOLERANCE, EventKind, apply
from mailer.feedback.providers import ses as ses_hooks
from mailer.models import Subscriber, SubscriberEvent, WebhookEvent
from mailer.subscribers import add
from mailer.web import create_app
from tests.support.sns import TOPIC, Sns, sign_sns, sns_message

PM_USER, PM_PASSWORD = "postmark", "pm-webhook-secret"
MG_KEY = "mg-webhook-signing-key"
SG_PRIVATE = ec.generate_private_key(ec.SECP256R1())
SG_PUBLIC = base64.b64encode(SG_PRIVATE.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
SIGNED_AT = str(int(NOW.timestamp()))  # a webhook's signed timestamp: our clock's now
READERS = ["alice@example.org", "bob@example.org", "carol@example.org", "dan@example.org",
           "erin@example.org"]


@dataclass(frozen=True)
class HookSettings(Settings):
    """Settings that accept the test's SNS topic."""

    ses_webhook_topic_arns: list[str] = field(default_factory=lambda: [TOPIC])


@pytest.fixture
def hook_app(tmp_path: Path) -> Iterator[App]:
    settings = HookSettings(
        database_url=f"sqlite:///{tmp_path / 'hooks.db'}",
        base_url="https://mail.example.org",
        secret_key="test-secret-key",
        postmark_webhook_user=PM_USER,
        postmark_webhook_password=PM_PASSWORD,
        sendgrid_webhook_public_key=SG_PUBLIC,
        mailgun_webhook_signing_key=MG_KEY,
    )
    validate(settings)
    app = App.create(settings, clock=FixedClock(NOW))
    init_db(app.engine)
    with app.sessions.begin() as session:
        for address in READERS:
            add(session, address, name=address.split("@")[0].title(), at=NOW)
    yield app
    app.close()


@pytest.fixture
def client(hook_app: App) -> FlaskClient:
    return create_app(hook_app, {"TESTING": True}).test_client()


def status(app: App, address: str) -> str:
    with app.sessions() as session:
        sub = session.scalar(select(Subscriber).where(Subscriber.email == address))
        assert sub is not None
        return sub.status


def trail(app: App, address: str) -> list[str]:
    with app.sessions() as session:
        sub = session.scalar(select(Subscriber).where(Subscriber.email == address))
        assert sub is not None
        return [e.kind for e in session.scalars(
            select(SubscriberEvent).where(SubscriberEvent.subscriber_id == sub.id)
            .order_by(SubscriberEvent.id))]


def stored(app: App) -> int:
    with app.sessions() as session:
        return session.scalar(select(func.count()).select_from(WebhookEvent)) or 0


def snapshot(app: App) -> dict[str, str]:
    return {address: status(app, address) for address in READERS}


# ---- Postmark ---------------------------------------------------------------------------------


def postmark_bounce(address: str, kind: str = "HardBounce", bounce_id: int = 4323372036) -> dict:
    return {"RecordType": "Bounce", "MessageStream": "broadcast", "ID": bounce_id,
            "Type": kind, "TypeCode": 1, "Name": "Hard bounce", "Tag": "",
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Metadata": {"delivery_id": "9"},
            "ServerID": 23, "Description": "The server was unable to deliver your message.",
            "Details": "smtp;550 5.1.1 The email account does not exist.", "Email": address,
            "From": "daily@labourlist.org", "BouncedAt": "2026-11-26T06:30:00Z",
            "DumpAvailable": True, "Inactive": kind == "HardBounce", "CanActivate": True,
            "Subject": "LabourList Daily"}


def post_postmark(client: FlaskClient, body: Any, auth: tuple[str, str] | None = (
        PM_USER, PM_PASSWORD)) -> Any:
    headers = {}
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return client.post("/webhooks/postmark", data=json.dumps(body), headers=headers,
                       content_type="application/json")


def test_postmark_hard_bounce_applies_once(client: FlaskClient, hook_app: App) -> None:
    body = postmark_bounce("alice@example.org")
    first = post_postmark(client, body)
    assert first.status_code == 200 and first.get_json()["applied"] == 1
    second = post_postmark(client, body)
    assert second.status_code == 200 and second.get_json()["duplicates"] == 1
    assert status(hook_app, "alice@example.org") == "bounced"
    assert trail(hook_app, "alice@example.org").count("bounced") == 1
    assert stored(hook_app) == 1


def test_postmark_record_types(client: FlaskClient, hook_app: App) -> None:
    complaint = {**postmark_bounce("bob@example.org", "SpamComplaint", 77),
                 "RecordType": "SpamComplaint"}
    change = {"RecordType": "SubscriptionChange", "MessageID": str(uuid.uuid4()),
              "ServerID": 23, "MessageStream": "broadcast", "ChangedAt": "2026-11-26T06:31:00Z",
              "Recipient": "carol@example.org", "Origin": "Recipient", "SuppressSending": True,
              "SuppressionReason": "ManualSuppression", "Tag": "", "Metadata": {}}
    delivery = {"RecordType": "Delivery", "ServerID": 23, "MessageStream": "broadcast",
                "MessageID": str(uuid.uuid4()), "Recipient": "dan@example.org",
                "DeliveredAt": "2026-11-26T06:32:00Z", "Details": "250 OK", "Metadata": {}}
    opened = {"RecordType": "Open", "Recipient": "erin@example.org", "MessageID": "x"}
    for body in (complaint, change, delivery, opened, change):
        assert post_postmark(client, body).status_code == 200
    assert snapshot(hook_app) == {"alice@example.org": "active", "bob@example.org": "complained",
                                  "carol@example.org": "unsubscribed",
                                  "dan@example.org": "active", "erin@example.org": "active"}
    assert stored(hook_app) == 4  # the repeated SubscriptionChange was a duplicate


def test_postmark_soft_bounces_in_a_row_suppress(client: FlaskClient, hook_app: App) -> None:
    delivered = {"RecordType": "Delivery", "MessageID": "d1", "Recipient": "dan@example.org",
                 "DeliveredAt": "2026-11-26T06:32:00Z"}
    post_postmark(client, postmark_bounce("dan@example.org", "SoftBounce", 1))
    post_postmark(client, postmark_bounce("dan@example.org", "SoftBounce", 2))
    post_postmark(client, delivered)  # a delivery in between: the count starts again
    post_postmark(client, postmark_bounce("dan@example.org", "SoftBounce", 3))
    post_postmark(client, postmark_bounce("dan@example.org", "SoftBounce", 4))
    post_postmark(client, postmark_bounce("dan@example.org", "SoftBounce", 4))  # duplicate
    assert status(hook_app, "dan@example.org") == "active"
    post_postmark(client, postmark_bounce("dan@example.org", "SoftBounce", 5))
    assert status(hook_app, "dan@example.org") == "bounced"
    assert trail(hook_app, "dan@example.org").count("soft_bounce") == 5


@pytest.mark.parametrize("auth", [None, (PM_USER, "wrong"), ("someone", PM_PASSWORD)])
def test_postmark_without_the_right_basic_auth_changes_nothing(
        client: FlaskClient, hook_app: App, auth: tuple[str, str] | None) -> None:
    response = post_postmark(client, postmark_bounce("alice@example.org"), auth)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert status(hook_app, "alice@example.org") == "active" and stored(hook_app) == 0


def test_only_provider_modules_are_routes(client: FlaskClient) -> None:
    """`/webhooks/<provider>` matches the modules of mailer.feedback.providers and nothing
    else: any other name is the app's 404 whatever the method, as for a URL we do not serve."""
    assert providers.names() == ["mailgun", "postmark", "sendgrid", "ses"]
    for name in ("unknown", "events", "jsonbody", "__init__", "Postmark", "ses_", "os"):
        assert client.post(f"/webhooks/{name}", data="{}").status_code == 404
        assert client.get(f"/webhooks/{name}").status_code == 404
    assert client.get("/webhooks/ses").status_code == 405


def test_a_provider_missing_its_package_is_a_503_that_names_it(
        hook_app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lacking.py").write_text("import mailer_test_not_installed\n")
    monkeypatch.setattr(providers, "__path__", [*providers.__path__, str(tmp_path)])
    client = create_app(hook_app, {"TESTING": True}).test_client()
    response = client.post("/webhooks/lacking", data="{}")
    assert response.status_code == 503
    assert "'mailer_test_not_installed'" in response.get_json()["error"]
    assert client.post("/webhooks/missing", data="{}").status_code == 404


def test_unconfigured_webhooks_refuse_everything(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'bare.db'}",
                        base_url="https://mail.example.org", secret_key="k")
    app = App.create(settings, clock=FixedClock(NOW))
    init_db(app.engine)
    try:
        client = create_app(app, {"TESTING": True}).test_client()
        assert post_postmark(client, postmark_bounce("a@example.org"), ("postmark", "")) \
            .status_code == 403
        assert client.post("/webhooks/sendgrid", data="[]").status_code == 403
        assert client.post("/webhooks/mailgun", json=mailgun_event("a@example.org")) \
            .status_code == 403
        message = sns_message(ses_event("Bounce", ["a@example.org"]), "http://x/c.pem")
        assert post_sns(client, message).status_code == 403
    finally:
        app.close()


# ---- SendGrid ---------------------------------------------------------------------------------


def sendgrid_events() -> list[dict[str, Any]]:
    base = {"timestamp": 1795500000, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
            "category": ["daily"], "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.0"}
    return [
        {**base, "email": "alice@example.org", "event": "bounce", "sg_event_id": "ev-bounce",
         "reason": "550 5.1.1 unknown recipient", "status": "5.1.1", "type": "bounce",
         "bounce_classification": "Invalid Address"},
        {**base, "email": "bob@example.org", "event": "spamreport", "sg_event_id": "ev-spam"},
        {**base, "email": "carol@example.org", "event": "group_unsubscribe",
         "sg_event_id": "ev-unsub", "asm_group_id": 42},
        {**base, "email": "dan@example.org", "event": "bounce", "sg_event_id": "ev-blocked",
         "reason": "blocked by policy", "status": "5.7.1", "type": "blocked"},
        {**base, "email": "erin@example.org", "event": "open", "sg_event_id": "ev-open",
         "useragent": "Mozilla/5.0"},
        {**base, "email": "erin@example.org", "event": "delivered", "sg_event_id": "ev-del",
         "response": "250 OK"},
    ]


def sendgrid_signed(body: bytes, timestamp: str = SIGNED_AT,
                    key: ec.EllipticCurvePrivateKey = SG_PRIVATE) -> dict[str, str]:
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}


def test_sendgrid_signed_events_apply_once(client: FlaskClient, hook_app: App) -> None:
    body = json.dumps(sendgrid_events()).encode()
    for expected_applied in (6, 0):
        response = client.post("/webhooks/sendgrid", data=body, headers=sendgrid_signed(body),
                               content_type="application/json")
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["applied"] == expected_applied
    assert snapshot(hook_app) == {"alice@example.org": "bounced", "bob@example.org": "complained",
                                  "carol@example.org": "unsubscribed",
                                  "dan@example.org": "active", "erin@example.org": "active"}
    assert stored(hook_app) == 6


def test_sendgrid_large_batches_are_accepted(client: FlaskClient, hook_app: App) -> None:
    """SendGrid posts hundreds of events at once: far above the forms' 64 KB body limit."""
    events = [{"email": f"reader{i}@example.org", "timestamp": 1795500000, "event": "delivered",
               "sg_event_id": f"ev-{i}", "sg_message_id": f"msg-{i}.filter0001",
               "response": "250 2.0.0 OK " + "x" * 200} for i in range(1500)]
    body = json.dumps(events).encode()
    assert len(body) > 256 * 1024
    response = client.post("/webhooks/sendgrid", data=body, headers=sendgrid_signed(body),
                           content_type="application/json")
    assert response.status_code == 200 and response.get_json()["applied"] == 1500


def test_sendgrid_tampered_or_wrongly_signed_changes_nothing(client: FlaskClient,
                                                             hook_app: App) -> None:
    body = json.dumps(sendgrid_events()).encode()
    headers = sendgrid_signed(body)
    tampered = body.replace(b"dan@example.org", b"bob@example.org")
    other_key = ec.generate_private_key(ec.SECP256R1())
    attempts = [
        (tampered, headers),
        (body, {**headers, "X-Twilio-Email-Event-Webhook-Timestamp": str(int(SIGNED_AT) + 1)}),
        (body, sendgrid_signed(body, key=other_key)),
        (body, {"X-Twilio-Email-Event-Webhook-Timestamp": SIGNED_AT}),
        (body, {**headers, "X-Twilio-Email-Event-Webhook-Signature": "not base64!"}),
    ]
    for data, hdrs in attempts:
        response = client.post("/webhooks/sendgrid", data=data, headers=hdrs,
                               content_type="application/json")
        assert response.status_code == 403
    assert set(snapshot(hook_app).values()) == {"active"} and stored(hook_app) == 0


# ---- Mailgun ----------------------------------------------------------------------------------


def mailgun_event(address: str, *, event: str = "failed", severity: str = "permanent",
                  reason: str = "bounce", event_id: str = "G9Bn5sl1TC6nu79C8C0bwg",
                  timestamp: float | None = None, token: str | None = None,
                  key: str = MG_KEY) -> dict[str, Any]:
    ts = str(int(timestamp if timestamp is not None else NOW.timestamp()))
    token = token or uuid.uuid4().hex + uuid.uuid4().hex[:18]
    signature = hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": ts, "token": token, "signature": signature},
        "event-data": {
            "event": event, "id": event_id, "timestamp": 1795500000.375624,
            "log-level": "error", "severity": severity, "reason": reason,
            "recipient": address, "recipient-domain": address.split("@")[1],
            "delivery-status": {"code": 550, "enhanced-code": "5.1.1", "attempt-no": 1,
                                "message": "5.1.1 The email account does not exist",
                                "description": ""},
            "message": {"headers": {"message-id": "20261126060000.1.ABC@mg.labourlist.org",
                                    "to": address, "from": "daily@labourlist.org",
                                    "subject": "LabourList Daily"}},
            "user-variables": {"delivery_id": "12"},
        },
    }


def test_mailgun_signed_event_applies_once(client: FlaskClient, hook_app: App) -> None:
    body = mailgun_event("alice@example.org")
    assert client.post("/webhooks/mailgun", json=body).get_json()["applied"] == 1
    # The same request again: its token was used, Mailgun is told not to retry.
    again = client.post("/webhooks/mailgun", json=body)
    assert again.status_code == 406
    # The same event re-signed (a genuine retry carries a fresh token): a duplicate.
    resigned = mailgun_event("alice@example.org")
    response = client.post("/webhooks/mailgun", json=resigned)
    assert response.status_code == 200 and response.get_json()["duplicates"] == 1
    assert status(hook_app, "alice@example.org") == "bounced"
    assert trail(hook_app, "alice@example.org").count("bounced") == 1


def test_mailgun_event_kinds(client: FlaskClient, hook_app: App) -> None:
    events = [
        mailgun_event("bob@example.org", event="complained", event_id="e1"),
        mailgun_event("carol@example.org", event="unsubscribed", event_id="e2"),
        mailgun_event("dan@example.org", severity="temporary", reason="generic",
                      event_id="e3"),
        mailgun_event("erin@example.org", reason="generic", event_id="e4"),  # 550 5.1.1
    ]
    for body in events:
        assert client.post("/webhooks/mailgun", json=body).status_code == 200
    assert snapshot(hook_app) == {"alice@example.org": "active", "bob@example.org": "complained",
                                  "carol@example.org": "unsubscribed",
                                  "dan@example.org": "active", "erin@example.org": "bounced"}


def test_mailgun_bad_signature_stale_or_replayed_changes_nothing(client: FlaskClient,
                                                                 hook_app: App) -> None:
    tampered = mailgun_event("alice@example.org")
    tampered["signature"]["token"] = "x" * 50
    wrong_key = mailgun_event("alice@example.org", key="another-key")
    late = timedelta(seconds=TIMESTAMP_TOLERANCE + 60)
    stale = mailgun_event("alice@example.org", timestamp=(NOW - late).timestamp())
    future = mailgun_event("alice@example.org", timestamp=(NOW + late).timestamp())
    unsigned = mailgun_event("alice@example.org")
    del unsigned["signature"]
    for body, code in ((tampered, 403), (wrong_key, 403), (stale, 406), (future, 406),
                       (unsigned, 403)):
        assert client.post("/webhooks/mailgun", json=body).status_code == code
    assert client.post("/webhooks/mailgun", data="not json").status_code == 400
    assert status(hook_app, "alice@example.org") == "active" and stored(hook_app) == 0


# ---- Amazon SES through SNS ---------------------------------------------------------------------


def ses_event(kind: str, recipients: list[str], **extra: Any) -> dict[str, Any]:
    mail = {"timestamp": "2026-11-26T06:00:00.000Z", "source": "daily@labourlist.org",
            "messageId": "0102018c-aaaa-bbbb-cccc-000000000000-000000",
            "destination": recipients, "headersTruncated": False}
    if kind == "Bounce":
        body = {"bounce": {"feedbackId": "0102018c-feedback", "bounceType":
                           extra.get("bounce_type", "Permanent"),
                           "bounceSubType": extra.get("sub_type", "General"),
                           "bouncedRecipients": [{"emailAddress": r, "action": "failed",
                                                  "status": "5.1.1",
                                                  "diagnosticCode": "smtp; 550 5.1.1 unknown"}
                                                 for r in recipients],
                           "timestamp": "2026-11-26T06:01:00.000Z",
                           "reportingMTA": "dsn; a8-1.smtp-out.amazonses.com"}}
    elif kind == "Complaint":
        body = {"complaint": {"feedbackId": "0102018c-complaint",
                              "complaintFeedbackType": "abuse",
                              "complainedRecipients": [{"emailAddress": r} for r in recipients],
                              "timestamp": "2026-11-26T06:05:00.000Z"}}
    else:
        body = {"delivery": {"recipients": recipients, "smtpResponse": "250 ok",
                             "timestamp": "2026-11-26T06:00:05.000Z"}}
    key = "notificationType" if extra.get("identity") else "eventType"
    return {key: kind, "mail": mail, **body}


def post_sns(client: FlaskClient, message: dict[str, Any]) -> Any:
    return client.post("/webhooks/ses", data=json.dumps(message),
                       headers={"x-amz-sns-message-type": message["Type"],
                                "x-amz-sns-message-id": message["MessageId"],
                                "x-amz-sns-topic-arn": message["TopicArn"]},
                       content_type="text/plain; charset=UTF-8")


@pytest.mark.parametrize("version", ["1", "2"])
def test_ses_bounce_through_sns_applies_once(client: FlaskClient, hook_app: App, sns: Sns,
                                             version: str) -> None:
    message = sns_message(ses_event("Bounce", ["alice@example.org", "bob@example.org"]),
                          sns.cert_url, key=sns.key, version=version,
                          subject="Amazon SES Email Event Notification")
    first = post_sns(client, message)
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["applied"] == 2
    assert post_sns(client, message).get_json()["duplicates"] == 2
    assert status(hook_app, "alice@example.org") == status(hook_app, "bob@example.org") \
        == "bounced"
    assert trail(hook_app, "alice@example.org").count("bounced") == 1


def test_ses_complaint_soft_bounce_and_delivery(client: FlaskClient, hook_app: App,
                                                sns: Sns) -> None:
    for event in (ses_event("Complaint", ["carol@example.org"], identity=True),
                  ses_event("Bounce", ["dan@example.org"], bounce_type="Transient",
                            sub_type="MailboxFull"),
                  ses_event("Delivery", ["erin@example.org"])):
        response = post_sns(client, sns_message(event, sns.cert_url, key=sns.key))
        assert response.status_code == 200
    assert snapshot(hook_app)["carol@example.org"] == "complained"
    assert snapshot(hook_app)["dan@example.org"] == "active"
    assert trail(hook_app, "dan@example.org")[-1] == "soft_bounce"
    validated = sns_message(ses_hooks.SES_TOPIC_VALIDATED, sns.cert_url, key=sns.key)
    assert post_sns(client, validated).get_json()["events"] == 0


def test_ses_tampered_foreign_or_unsigned_messages_change_nothing(
        client: FlaskClient, hook_app: App, sns: Sns) -> None:
    event = ses_event("Bounce", ["alice@example.org"])
    tampered = sns_message(event, sns.cert_url, key=sns.key)
    tampered["Message"] = tampered["Message"].replace("alice", "bob")
    foreign_topic = sns_message(event, sns.cert_url, key=sns.key,
                                topic="arn:aws:sns:eu-west-2:999999999999:attacker")
    outside_cert = sns_message(event, "https://evil.example.com/SimpleNotificationService-1.pem",
                               key=sns.key)
    not_pem = sns_message(event, sns.cert_url.replace(".pem", ".txt"), key=sns.key)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrong_key = sns_message(event, sns.cert_url, key=other_key)
    bad_version = sns_message(event, sns.cert_url, key=sns.key)
    bad_version["SignatureVersion"] = "3"
    for message in (tampered, foreign_topic, outside_cert, not_pem, wrong_key, bad_version):
        assert post_sns(client, message).status_code == 403
    mismatched = sns_message(event, sns.cert_url, key=sns.key)
    response = client.post("/webhooks/ses", data=json.dumps(mismatched),
                           headers={"x-amz-sns-message-type": "SubscriptionConfirmation"})
    assert response.status_code == 400
    assert set(snapshot(hook_app).values()) == {"active"} and stored(hook_app) == 0


def test_ses_subscription_confirmation_is_confirmed(client: FlaskClient, hook_app: App,
                                                    sns: Sns) -> None:
    base = sns.cert_url.rsplit("/", 1)[0]
    message: dict[str, Any] = {
        "Type": "SubscriptionConfirmation", "MessageId": str(uuid.uuid4()),
        "Token": "2336412f37fb687f5d51e6e2425c464de1",
        "TopicArn": TOPIC, "Timestamp": "2026-11-26T06:00:00.000Z",
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
        "SubscribeURL": f"{base}/?Action=ConfirmSubscription&TopicArn={TOPIC}"
                        "&Token=2336412f37fb687f5d51e6e2425c464de1",
        "SigningCertURL": sns.cert_url,
    }
    sign_sns(message, sns.key)
    assert post_sns(client, message).status_code == 200
    assert sns.confirmations == ["2336412f37fb687f5d51e6e2425c464de1"]
    # A confirmation whose SubscribeURL points elsewhere is never fetched.
    elsewhere = {**message, "SubscribeURL": "https://evil.example.com/?Token=x"}
    sign_sns(elsewhere, sns.key)
    assert post_sns(client, elsewhere).status_code == 403
    forged = {**message, "Token": "another"}
    assert post_sns(client, forged).status_code == 403
    assert len(sns.confirmations) == 1


# ---- events.apply directly -----------------------------------------------------------------------


def test_apply_stores_unknown_events_and_addresses(hook_app: App) -> None:
    with hook_app.sessions.begin() as session:
        assert apply(session, "postmark", "x1", "something-new", "alice@example.org", {}, NOW)
        assert apply(session, "postmark", "x2", EventKind.BOUNCE_HARD, "nobody@example.org",
                     {}, NOW)
        assert not apply(session, "postmark", "x1", EventKind.BOUNCE_HARD,
                         "alice@example.org", {}, NOW)
        assert apply(session, "sendgrid", "x1", EventKind.UNSUBSCRIBE, "Alice@Example.org",
                     {}, NOW)
    with hook_app.sessions() as session:
        kinds = sorted(session.scalars(select(WebhookEvent.kind)))
    assert kinds == ["bounce_hard", "unknown", "unsubscribe"]
    assert status(hook_app, "alice@example.org") == "unsubscribed"


def test_statuses_never_move_back_to_mailable(hook_app: App) -> None:
    with hook_app.sessions.begin() as session:
        apply(session, "ses", "a", EventKind.UNSUBSCRIBE, "bob@example.org", {}, NOW)
        apply(session, "ses", "b", EventKind.BOUNCE_HARD, "bob@example.org", {}, NOW)
        apply(session, "ses", "c", EventKind.COMPLAINT, "bob@example.org", {}, NOW)
        apply(session, "ses", "d", EventKind.UNSUBSCRIBE, "bob@example.org", {}, NOW)
    assert status(hook_app, "bob@example.org") == "complained"
    assert trail(hook_app, "bob@example.org")[-2:] == ["unsubscribed", "complained"]
