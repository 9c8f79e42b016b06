"""Hostile requests at the public surface (issue 19), through the real app.

* A bounced or complained address stays where it is whatever an anonymous visitor does (the
  sign-up form, the WordPress embed, an old confirmation link, a forwarded preferences link),
  while the sign-up page answers exactly as for a new address; staff can bring it back with a
  reason, which is audited.
* Deeply nested JSON at any webhook is a 400 with a one-line log entry, not a RecursionError;
  archive page numbers that are not a page are a 404 or 400 page, not a 500.
* A SendGrid signature over a timestamp far from our clock is refused, with the tolerance
  Mailgun uses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import uuid
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from mailer.accounts import ADMIN, add_staff
from mailer.app import App
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.feedback.events import TIMESTAMP_TOLERANCE
from mailer.feedback.jsonbody import MAX_DEPTH
from mailer.models import (
    ACTIVE,
    BOUNCED,
    COMPLAINED,
    PENDING,
    AuditEntry,
    SubscriberEvent,
    WebhookEvent,
)
from mailer.subscribers import add, find, set_status
from mailer.tokens import PREFERENCES, make_token
from mailer.web import create_app
from tests.support.settings import make_settings
from tests.support.sns import Sns, sns_message

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
TOPIC = "arn:aws:sns:eu-west-2:123456789012:labourlist-ses-events"
PM_USER, PM_PASSWORD = "postmark", "pm-webhook-secret"
MG_KEY = "mg-webhook-signing-key"
SG_PRIVATE = ec.generate_private_key(ec.SECP256R1())
SG_PUBLIC = base64.b64encode(SG_PRIVATE.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
STAFF_EMAIL, STAFF_PASSWORD = "audience@example.org", "correct horse battery staple"
DEEP = 100_000


# ---- fixtures and helpers ------------------------------------------------------------------


def build_app(tmp_path: Path, clock: FixedClock, database_url: str) -> App:
    settings = make_settings(
        tmp_path, database_url=database_url,
        postmark_webhook_user=PM_USER, postmark_webhook_password=PM_PASSWORD,
        sendgrid_webhook_public_key=SG_PUBLIC, mailgun_webhook_signing_key=MG_KEY,
        ses_webhook_topic_arns=[TOPIC],
    )
    application = App.create(settings, clock=clock)
    init_db(application.engine)
    return application


@pytest.fixture
def any_app(database_url: str, tmp_path: Path, clock: FixedClock) -> Iterator[App]:
    """On SQLite and on PostgreSQL: the tests where subscriber state is at stake."""
    application = build_app(tmp_path, clock, database_url)
    yield application
    application.close()


@pytest.fixture
def lite_app(tmp_path: Path, clock: FixedClock) -> Iterator[App]:
    """SQLite only: the tests where nothing may be stored at all."""
    application = build_app(tmp_path, clock, f"sqlite:///{tmp_path / 'hostile.db'}")
    yield application
    application.close()


def web_for(app: App) -> Flask:
    return create_app(app, {"TESTING": True, "MAILER_SEND_INLINE": True})


def outbox(app: App) -> list[Path]:
    folder = Path(urlsplit(app.settings.dsn).path)
    return sorted(folder.glob("*.eml")) if folder.is_dir() else []


def confirm_path(eml: Path) -> str:
    message = message_from_bytes(eml.read_bytes(), policy=policy.default)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    match = re.search(r"https?://\S+/confirm/\S+", text)
    assert match, text
    return urlsplit(match.group(0)).path


def csrf_from(client: FlaskClient, path: str) -> str:
    page = client.get(path)
    match = CSRF_RE.search(page.text)
    assert match, f"no CSRF token on {path} ({page.status_code})"
    return match.group(1)


def staff_client(app: App) -> FlaskClient:
    """A browser signed in to the console as an admin."""
    with app.sessions.begin() as session:
        add_staff(session, STAFF_EMAIL, STAFF_PASSWORD, role=ADMIN)
    client = web_for(app).test_client()
    response = client.post("/staff/login", data={"csrf_token": csrf_from(client, "/staff/login"),
                                                 "email": STAFF_EMAIL,
                                                 "password": STAFF_PASSWORD})
    assert response.status_code == 303, response.text
    return client


def seed(app: App, email: str, status: str) -> int:
    """A confirmed reader whom a provider then reported as `status`."""
    with app.sessions.begin() as session:
        sub, _ = add(session, email, status=ACTIVE, source="test", at=app.clock.now())
        if status != ACTIVE:
            set_status(session, sub, status, source="webhook:postmark", at=app.clock.now())
        return sub.id


def state(app: App, email: str) -> tuple[str, list[tuple[str, str]]]:
    """A subscriber's status and whole event trail."""
    with app.sessions() as session:
        sub = find(session, email)
        assert sub is not None
        trail = [(e.kind, e.source) for e in session.scalars(
            select(SubscriberEvent).where(SubscriberEvent.subscriber_id == sub.id)
            .order_by(SubscriberEvent.id))]
        return sub.status, trail


def stored_events(app: App) -> int:
    """Provider events kept (Mailgun's used signature tokens are not events)."""
    with app.sessions() as session:
        return session.scalar(select(func.count()).select_from(WebhookEvent)
                              .where(WebhookEvent.kind != "nonce")) or 0


# ---- 7: anonymous requests leave a bounced or complained address alone ---------------------


@pytest.mark.parametrize("reported", [BOUNCED, COMPLAINED])
def test_signup_form_and_embed_leave_a_suppressed_address_alone(any_app: App,
                                                                reported: str) -> None:
    """Same page as a brand-new sign-up, and no status change, event or email."""
    web = web_for(any_app)
    seed(any_app, "gone@example.org", reported)
    before = state(any_app, "gone@example.org")
    form = web.test_client()
    token = csrf_from(form, "/subscribe")
    embed = web.test_client(use_cookies=False)

    def answers(email: str) -> list[str]:
        posts = [form.post("/subscribe", data={"email": email, "hp": "", "csrf_token": token}),
                 embed.post("/subscribe", data={"email": email, "hp": ""},
                            headers={"Origin": "https://labourlist.org"})]
        assert [p.status_code for p in posts] == [200, 200]
        return [p.text.replace(email, "ADDRESS") for p in posts]

    fresh = answers("new@example.org")
    assert answers("gone@example.org") == fresh
    assert state(any_app, "gone@example.org") == before
    recipients = [message_from_bytes(p.read_bytes(), policy=policy.default)["To"]
                  for p in outbox(any_app)]
    assert recipients == ["new@example.org", "new@example.org"]


@pytest.mark.parametrize("reported", [BOUNCED, COMPLAINED])
def test_old_confirmation_link_does_not_bring_back_a_suppressed_address(
        any_app: App, clock: FixedClock, reported: str) -> None:
    """Pending, then the confirmation email bounced (or was reported as spam): the link in
    it, pressed later, changes nothing."""
    web = web_for(any_app)
    client = web.test_client()
    token = csrf_from(client, "/subscribe")
    client.post("/subscribe", data={"email": "late@example.org", "csrf_token": token})
    [eml] = outbox(any_app)
    link = confirm_path(eml)
    clock.advance(minutes=10)
    kind = "HardBounce" if reported == BOUNCED else "SpamComplaint"
    record = {"RecordType": "Bounce" if reported == BOUNCED else "SpamComplaint",
              "ID": 42, "Type": kind, "Email": "late@example.org"}
    auth = base64.b64encode(f"{PM_USER}:{PM_PASSWORD}".encode()).decode()
    hook = client.post("/webhooks/postmark", json=record,
                       headers={"Authorization": f"Basic {auth}"})
    assert hook.status_code == 200, hook.text
    before = state(any_app, "late@example.org")
    assert before[0] == reported
    clock.advance(minutes=10)
    assert client.get(link).status_code == 410
    assert client.post(link, data={"csrf_token": token}).status_code == 410
    assert state(any_app, "late@example.org") == before and len(outbox(any_app)) == 1


@pytest.mark.parametrize("reported", [BOUNCED, COMPLAINED])
def test_preferences_link_cannot_resubscribe_a_suppressed_address(any_app: App,
                                                                  reported: str) -> None:
    """The preferences link is in every edition's footer, so forwarded copies carry it."""
    sub_id = seed(any_app, "fwd@example.org", reported)
    before = state(any_app, "fwd@example.org")
    client = web_for(any_app).test_client()
    path = f"/preferences/{make_token(any_app.secret_key, PREFERENCES, sub_id)}"
    page = client.get(path)
    assert page.status_code == 200 and 'value="resubscribe"' not in page.text
    assert "editor@labourlist.org" in page.text  # where to ask instead
    response = client.post(path, data={"action": "resubscribe",
                                       "csrf_token": csrf_from(client, path)})
    assert response.status_code == 409 and 'role="alert"' in response.text
    assert "cannot be subscribed again here" in response.text
    assert state(any_app, "fwd@example.org") == before and outbox(any_app) == []


def audit_entries(app: App, action: str) -> list[tuple[str, str, str]]:
    with app.sessions() as session:
        return [(a.actor, a.target, a.detail) for a in session.scalars(
            select(AuditEntry).where(AuditEntry.action == action))]


@pytest.mark.parametrize("reported", [BOUNCED, COMPLAINED])
def test_staff_reinstate_with_a_reason_which_is_audited(any_app: App,
                                                        reported: str) -> None:
    sub_id = seed(any_app, "back@example.org", reported)
    before = state(any_app, "back@example.org")
    staff = staff_client(any_app)
    page = staff.get(f"/staff/subscribers/{sub_id}")
    assert page.status_code == 200 and 'name="reason"' in page.text
    action = f"/staff/subscribers/{sub_id}/resubscribe"

    for reason in ("", "   "):  # no reason: refused, nothing happens
        refused = staff.post(action, data={"csrf_token": csrf_from(staff, "/staff/"),
                                           "reason": reason}, follow_redirects=True)
        assert "Give a reason to bring back" in refused.text
    assert state(any_app, "back@example.org") == before and outbox(any_app) == []
    assert audit_entries(any_app, "subscriber-reinstated") == []

    why = "Reader phoned: the mailbox works again"
    done = staff.post(action, data={"csrf_token": csrf_from(staff, "/staff/"), "reason": why},
                      follow_redirects=True)
    assert done.status_code == 200 and "confirmation email" in done.text
    status, trail = state(any_app, "back@example.org")
    assert status == PENDING and trail[-2:] == [("subscribed", "staff"),
                                                ("confirmation-sent", "staff")]
    [(actor, target, detail)] = audit_entries(any_app, "subscriber-reinstated")
    assert (actor, target) == (STAFF_EMAIL, f"subscriber:{sub_id}")
    assert why in detail and reported in detail
    assert why in staff.get(f"/staff/subscribers/{sub_id}").text  # on the console page too

    [eml] = outbox(any_app)  # the reader still confirms it themselves
    reader = web_for(any_app).test_client()
    link = confirm_path(eml)
    assert reader.post(link, data={"csrf_token": csrf_from(reader, link)}).status_code == 200
    assert state(any_app, "back@example.org")[0] == ACTIVE


# ---- 9: deep JSON at the webhooks ----------------------------------------------------------


def deep_array(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def mailgun_signature(ts: str, key: str = MG_KEY) -> dict[str, str]:
    token = uuid.uuid4().hex + uuid.uuid4().hex[:18]
    signature = hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    return {"timestamp": ts, "token": token, "signature": signature}


def sendgrid_headers(body: bytes, timestamp: str) -> dict[str, str]:
    signature = SG_PRIVATE.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
            "Content-Type": "application/json"}


def post_hook(client: FlaskClient, provider: str, body: bytes, now: float) -> Any:
    """POST `body` to a provider's webhook with whatever credentials get it to the parser."""
    headers: dict[str, str] = {"Content-Type": "application/json"}
    if provider == "postmark":
        auth = base64.b64encode(f"{PM_USER}:{PM_PASSWORD}".encode()).decode()
        headers["Authorization"] = f"Basic {auth}"
    elif provider == "sendgrid":
        headers = sendgrid_headers(body, str(int(now)))
    elif provider == "ses":
        headers = {"x-amz-sns-message-type": "Notification",
                   "Content-Type": "text/plain; charset=UTF-8"}
    return client.post(f"/webhooks/{provider}", data=body, headers=headers)


PROVIDERS = ["postmark", "sendgrid", "mailgun", "ses"]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", ["array", "object"])
def test_deeply_nested_json_is_a_400_at_every_webhook(lite_app: App, provider: str, shape: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    body = deep_array(DEEP) if shape == "array" else b'{"a":' * DEEP + b"1" + b"}" * DEEP
    client = web_for(lite_app).test_client()
    with caplog.at_level(logging.INFO):
        response = post_hook(client, provider, body, lite_app.clock.now().timestamp())
    assert response.status_code == 400
    assert "nested" in response.get_json()["error"]
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text
    [line] = [r.getMessage() for r in caplog.records if r.name == "mailer.webhooks"]
    assert "\n" not in line and "nested" in line
    assert stored_events(lite_app) == 0


def test_nesting_bound_is_exact_and_real_events_still_fit(lite_app: App) -> None:
    """A signed Mailgun event whose user-variables nest to the bound is read; one level more is
    refused before its signature is even looked at."""
    client = web_for(lite_app).test_client()
    now = lite_app.clock.now()

    def body(levels: int) -> dict[str, Any]:
        inner: Any = "x"
        for _ in range(levels - 3):  # the body, event-data and user-variables are three
            inner = [inner]
        return {"signature": mailgun_signature(str(int(now.timestamp()))),
                "event-data": {"event": "delivered", "id": f"ev-{levels}",
                               "recipient": "deep@example.org",
                               "user-variables": {"v": inner}}}

    fits = client.post("/webhooks/mailgun", json=body(MAX_DEPTH))
    assert fits.status_code == 200 and fits.get_json()["applied"] == 1
    too_deep = client.post("/webhooks/mailgun", json=body(MAX_DEPTH + 1))
    assert too_deep.status_code == 400 and "nested" in too_deep.get_json()["error"]
    # Brackets inside strings are text, not nesting.
    text = body(4)
    text["event-data"]["user-variables"]["v"] = "[" * 5000 + "{" * 5000
    text["event-data"]["id"] = "ev-text"
    assert client.post("/webhooks/mailgun", json=text).status_code == 200
    assert stored_events(lite_app) == 2


def test_signed_sns_message_with_deep_inner_json_is_stored_unread(
        lite_app: App, sns: Sns, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    """SNS signed it, so it is ours: kept as an unreadable event (200, so SNS stops
    retrying), never walked."""
    client = web_for(lite_app).test_client()
    message = sns_message(deep_array(DEEP).decode(), sns.cert_url, key=sns.key)
    with caplog.at_level(logging.INFO):
        response = client.post("/webhooks/ses", data=json.dumps(message),
                               headers={"x-amz-sns-message-type": "Notification"},
                               content_type="text/plain; charset=UTF-8")
    assert response.status_code == 200, response.text
    assert response.get_json()["events"] == 1 and "Traceback" not in caplog.text
    with lite_app.sessions() as session:
        [row] = session.scalars(select(WebhookEvent))
        assert row.kind == "unknown" and len(json.dumps(row.payload)) < 3000


def test_webhook_body_limits(lite_app: App) -> None:
    """8 MB where the body is verified before it is parsed; 1 MB where a stranger's JSON is
    parsed first (Mailgun's and SNS's signatures are inside it)."""
    from mailer.web.hooks import MAX_UNVERIFIED_BODY, MAX_WEBHOOK_BODY

    client = web_for(lite_app).test_client()
    now = lite_app.clock.now().timestamp()

    def flat(size: int) -> bytes:
        return b"[" + b"0," * (size // 2) + b"0]"

    over_small, over_large = flat(MAX_UNVERIFIED_BODY), flat(MAX_WEBHOOK_BODY)
    for provider in ("mailgun", "ses"):
        assert post_hook(client, provider, over_small, now).status_code == 413
    for provider in PROVIDERS:
        assert post_hook(client, provider, over_large, now).status_code == 413
    signed = json.dumps([{"email": "r@example.org", "event": "delivered", "sg_event_id": "ev",
                          "response": "250 OK " + "x" * MAX_UNVERIFIED_BODY}]).encode()
    assert post_hook(client, "sendgrid", signed, now).status_code == 200
    assert stored_events(lite_app) == 1


# ---- 9: archive page numbers ---------------------------------------------------------------


@pytest.mark.parametrize("page,code", [
    ("99999999999999999999", 404), ("9" * 5000, 404), ("0", 404), ("2", 404), ("999999999", 404),
    ("-1", 400), ("+1", 400), (" 1", 400), ("1e3", 400), ("1_0", 400), ("\u0661", 400),
    ("x", 400), ("", 400),
])
def test_archive_pages_that_are_not_a_page(lite_app: App, page: str, code: int,
                                           caplog: pytest.LogCaptureFixture) -> None:
    client = web_for(lite_app).test_client()
    assert client.get("/archive/").status_code == 200  # page 1 exists even when empty
    assert client.get("/archive/?page=1").status_code == 200
    with caplog.at_level(logging.INFO):
        response = client.get("/archive/", query_string={"page": page})
    assert response.status_code == code
    assert response.mimetype == "text/html" and "<h1>" in response.text
    assert "Traceback" not in caplog.text


def test_staff_list_pages_refuse_absurd_page_numbers(lite_app: App,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The same rule behind the console's login (those pages overflowed the same way)."""
    staff = staff_client(lite_app)
    for path in ("/staff/subscribers", "/staff/audit"):
        assert staff.get(path, query_string={"page": "1"}).status_code == 200
        with caplog.at_level(logging.INFO):
            for page, code in (("99999999999999999999", 404), ("0", 404), ("-3", 400),
                               ("x", 400)):
                response = staff.get(path, query_string={"page": page})
                assert response.status_code == code, (path, page)
        assert "Traceback" not in caplog.text


# ---- 11a: SendGrid's signed timestamp must be near our clock -------------------------------


def sendgrid_post(client: FlaskClient, timestamp: str, event_id: str) -> Any:
    body = json.dumps([{"email": "reader@example.org", "event": "spamreport",
                        "sg_event_id": event_id, "timestamp": 1795500000}]).encode()
    return client.post("/webhooks/sendgrid", data=body, headers=sendgrid_headers(body, timestamp))


def test_sendgrid_refuses_a_timestamp_far_from_our_clock(any_app: App) -> None:
    seed(any_app, "reader@example.org", ACTIVE)
    client = web_for(any_app).test_client()
    now = int(any_app.clock.now().timestamp())
    late = TIMESTAMP_TOLERANCE + 60
    for n, stamp in enumerate(("978307200",  # 1 January 2001, validly signed
                               str(now - late), str(now + late), "nan", "inf", "1e400", "")):
        response = sendgrid_post(client, stamp, f"ev-{n}")
        assert response.status_code == 403, stamp
    assert state(any_app, "reader@example.org")[0] == ACTIVE and stored_events(any_app) == 0
    ok = sendgrid_post(client, str(now - TIMESTAMP_TOLERANCE + 60), "ev-ok")
    assert ok.status_code == 200 and ok.get_json()["applied"] == 1
    assert state(any_app, "reader@example.org")[0] == COMPLAINED


def test_mailgun_uses_the_same_tolerance(lite_app: App) -> None:
    client = web_for(lite_app).test_client()
    now = int(lite_app.clock.now().timestamp())

    def post(ts: int) -> int:
        body = {"signature": mailgun_signature(str(ts)),
                "event-data": {"event": "delivered", "id": f"ev-{ts}",
                               "recipient": "reader@example.org"}}
        return client.post("/webhooks/mailgun", json=body).status_code

    late = TIMESTAMP_TOLERANCE + 60
    assert [post(now - late), post(now + late)] == [406, 406]
    assert [post(now - TIMESTAMP_TOLERANCE + 60), post(now + TIMESTAMP_TOLERANCE - 60)] == \
        [200, 200]
