"""A stand-in for Amazon SNS: a signing key, its certificate served over local HTTP, and signed
notifications, so SES's webhooks are verified the real way (the `sns` fixture, loaded through
`pytest_plugins`)."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from werkzeug import Request, Response

from mailer.feedback.providers import ses as ses_hooks
from tests.support.quickhttp import HTTPServer

TOPIC = "arn:aws:sns:eu-west-2:123456789012:labourlist-ses-events"


@dataclass
class Sns:
    """A stand-in for SNS: a signing key, its certificate served over HTTP, and the
    subscription-confirmation URL."""

    server: HTTPServer
    key: rsa.RSAPrivateKey
    cert_url: str
    confirmations: list[str]


@pytest.fixture
def sns(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sns]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(2040, 1, 1, tzinfo=UTC))
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    server = HTTPServer(host="127.0.0.1", port=0)
    confirmations: list[str] = []

    def handler(request: Request) -> Response:
        if request.path.endswith(".pem"):
            return Response(pem, content_type="application/x-x509-ca-cert")
        confirmations.append(request.args.get("Token", ""))
        return Response("<ConfirmSubscriptionResponse/>", content_type="text/xml")

    server.expect_request(re.compile(".*")).respond_with_handler(handler)
    server.start()
    base = f"http://127.0.0.1:{server.port}/"
    monkeypatch.setattr(ses_hooks, "SNS_URL", re.compile("^" + re.escape(base)))
    monkeypatch.setattr(ses_hooks, "_certs", {})
    try:
        yield Sns(server, key, base + "SimpleNotificationService-0123456789abcdef.pem",
                  confirmations)
    finally:
        server.clear()
        server.stop()


def sign_sns(message: dict[str, Any], key: rsa.RSAPrivateKey, version: str = "1") -> None:
    """Sign as SNS does: the documented keys in order, "Key\\nvalue\\n" each."""
    if message["Type"] == "Notification":
        keys = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        keys = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                "Type"]
    text = "".join(f"{k}\n{message[k]}\n" for k in keys if k in message)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(text.encode(), padding.PKCS1v15(), algorithm)
    message["SignatureVersion"] = version
    message["Signature"] = base64.b64encode(signature).decode()


def sns_message(event: dict[str, Any] | str, cert_url: str, *, topic: str = TOPIC,
                key: rsa.RSAPrivateKey | None = None, version: str = "1",
                subject: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": topic,
        "Message": event if isinstance(event, str) else json.dumps(event),
        "Timestamp": "2026-11-26T06:01:30.000Z", "SigningCertURL": cert_url,
        "UnsubscribeURL": "https://sns.eu-west-2.amazonaws.com/?Action=Unsubscribe",
    }
    if subject is not None:
        message["Subject"] = subject
    if key is not None:
        sign_sns(message, key, version)
    else:
        message.update(SignatureVersion="1", Signature="AAAA")
    return message
