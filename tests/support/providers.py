"""Local HTTP servers that speak the providers' documented request and response shapes.

Each fake checks credentials and request shape the way the real API does, turns every accepted
recipient into the message that recipient would receive (substitutions applied, headers merged)
and records it in `delivered`, so tests can check "each recipient once, with our unsubscribe
headers" across thousands of recipients. Misbehaviour is scripted:

* `fail_next(status, body, headers)` answers the next request(s) with an error (429 with
  Retry-After, 500, 401 …) before normal handling resumes;
* addresses tell the fake how to treat them: ``inactive…`` (Postmark 406), ``invalid…``
  (refused as an invalid address), ``unverified…`` (SES sandbox rejection).

They run on 127.0.0.1 through pytest-httpserver (werkzeug), one server per fake.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from werkzeug import Request, Response

from tests.support.quickhttp import HTTPServer


@dataclass
class Delivered:
    """What one recipient would receive."""

    to: str
    subject: str
    text: str
    html: str
    headers: dict[str, str]
    provider_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str) -> str:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return ""


@dataclass
class Call:
    method: str
    path: str
    status: int
    recipients: int = 0


def _address(value: str) -> str:
    return email.utils.parseaddr(value)[1].lower()


F = TypeVar("F", bound="FakeProvider")


class FakeProvider:
    """A provider API on a local port: subclasses implement `handle`."""

    def __init__(self) -> None:
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self.lock = threading.Lock()
        self.delivered: dict[str, list[Delivered]] = defaultdict(list)
        self.calls: list[Call] = []
        self.script: list[tuple[int, Any, dict[str, str], float]] = []
        self.server.expect_request(re.compile(".*")).respond_with_handler(self._dispatch)

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self: F) -> F:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.clear()
        if self.server.is_running():
            self.server.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    # ---- scripting ---------------------------------------------------------------------------
    def fail_next(self, status: int, body: Any = None, headers: dict[str, str] | None = None,
                  *, times: int = 1, delay: float = 0.0) -> None:
        """Answer the next `times` send requests with this error (after `delay` seconds)."""
        with self.lock:
            for _ in range(times):
                self.script.append((status, body, dict(headers or {}), delay))

    def recipients(self) -> list[str]:
        return [addr for addr, items in self.delivered.items() for _ in items]

    def batch_sizes(self, path_part: str) -> list[int]:
        return [c.recipients for c in self.calls if path_part in c.path and c.status < 300]

    # ---- plumbing ------------------------------------------------------------------------------
    def _dispatch(self, request: Request) -> Response:
        scripted = None
        if request.method == "POST":
            with self.lock:
                if self.script:
                    scripted = self.script.pop(0)
        if scripted is not None:
            status, body, headers, delay = scripted
            with self.lock:
                self.calls.append(Call(request.method, request.path, status, 0))
            if delay:
                time.sleep(delay)
            return self.reply(status, body, headers)
        response, count = self.handle(request)
        with self.lock:
            self.calls.append(Call(request.method, request.path, response.status_code, count))
        return response

    @staticmethod
    def reply(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Response:
        if body is None or isinstance(body, str | bytes):
            return Response(body or b"", status=status, headers=headers or {},
                            content_type="text/plain")
        return Response(json.dumps(body), status=status, headers=headers or {},
                        content_type="application/json")

    def handle(self, request: Request) -> tuple[Response, int]:
        raise NotImplementedError

    def record(self, item: Delivered) -> None:
        with self.lock:
            self.delivered[_address(item.to)].append(item)


# ---- Postmark ---------------------------------------------------------------------------------


class FakePostmark(FakeProvider):
    """``POST /email/batch`` (≤ 500, per-message ErrorCode), ``GET /server``,
    ``GET /message-streams/ID``."""

    def __init__(self, token: str = "pm-token", streams: dict[str, str] | None = None) -> None:
        super().__init__()
        self.token = token
        self.streams = streams or {"broadcast": "Broadcasts", "outbound": "Transactional"}

    def handle(self, request: Request) -> tuple[Response, int]:
        if request.headers.get("X-Postmark-Server-Token") != self.token:
            return self.reply(401, {"ErrorCode": 10, "Message": "Bad or missing Server API "
                                                                "token."}), 0
        if request.method == "GET" and request.path == "/server":
            return self.reply(200, {"ID": 1, "Name": "LabourList Daily"}), 0
        if request.method == "GET" and request.path.startswith("/message-streams/"):
            stream = request.path.rsplit("/", 1)[1]
            if stream not in self.streams:
                return self.reply(422, {"ErrorCode": 1226, "Message": "The message stream for "
                                        "the provided 'ID' was not found."}), 0
            return self.reply(200, {"ID": stream, "MessageStreamType": self.streams[stream],
                                    "SubscriptionManagementConfiguration":
                                        {"UnsubscribeHandlingType": "None"}}), 0
        if request.method != "POST" or request.path != "/email/batch":
            return self.reply(404, {"ErrorCode": 404, "Message": "Not found"}), 0
        messages = request.get_json(silent=True)
        if not isinstance(messages, list):
            return self.reply(422, {"ErrorCode": 402, "Message": "Invalid JSON"}), 0
        if len(messages) > 500:
            return self.reply(422, {"ErrorCode": 410, "Message": "Too many batch messages"}), 0
        answers = []
        for message in messages:
            to = str(message.get("To", ""))
            address = _address(to)
            base = {"To": to, "SubmittedAt": "2026-11-26T06:00:00Z"}
            if address.startswith("inactive"):
                answers.append({**base, "ErrorCode": 406, "Message": "You tried to send to a "
                                "recipient that has been marked as inactive."})
                continue
            if address.startswith("invalid") or not message.get("From"):
                answers.append({**base, "ErrorCode": 300, "Message": "Invalid 'To' address."})
                continue
            if message.get("MessageStream") not in self.streams:
                answers.append({**base, "ErrorCode": 1235, "Message": "The message stream "
                                "was not found."})
                continue
            message_id = str(uuid.uuid4())
            headers = {h["Name"]: h["Value"] for h in message.get("Headers", [])}
            if message.get("ReplyTo"):
                headers["Reply-To"] = message["ReplyTo"]
            self.record(Delivered(to, message.get("Subject", ""), message.get("TextBody", ""),
                                  message.get("HtmlBody", ""), headers, message_id,
                                  {"stream": message.get("MessageStream"),
                                   "from": message.get("From"),
                                   "metadata": message.get("Metadata")}))
            answers.append({**base, "ErrorCode": 0, "Message": "OK", "MessageID": message_id})
        return self.reply(200, answers), len(messages)


# ---- SendGrid ---------------------------------------------------------------------------------


class FakeSendGrid(FakeProvider):
    """``POST /v3/mail/send`` (≤ 1,000 personalizations, substitutions, 202 + X-Message-Id),
    ``GET /v3/scopes``."""

    def __init__(self, key: str = "SG.test-key") -> None:
        super().__init__()
        self.key = key

    def handle(self, request: Request) -> tuple[Response, int]:
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return self.reply(401, {"errors": [{"field": None, "message": "The provided "
                                    "authorization grant is invalid, expired, or revoked"}]}), 0
        if request.method == "GET" and request.path == "/v3/scopes":
            return self.reply(200, {"scopes": ["mail.send", "user.profile.read"]}), 0
        if request.method != "POST" or request.path != "/v3/mail/send":
            return self.reply(404, {"errors": [{"message": "not found"}]}), 0
        body = request.get_json(silent=True) or {}
        personalizations = body.get("personalizations") or []
        errors: list[dict[str, Any]] = []
        if not personalizations or len(personalizations) > 1000:
            errors.append({"field": "personalizations", "message": "The personalization "
                           "block is limited to 1000 personalizations per API request."})
        if not body.get("from", {}).get("email"):
            errors.append({"field": "from.email", "message": "The from email does not "
                           "contain a valid address."})
        seen: set[str] = set()
        for n, item in enumerate(personalizations):
            for m, to in enumerate(item.get("to") or []):
                address = str(to.get("email", "")).lower()
                if address.startswith("invalid"):
                    errors.append({"field": f"personalizations.{n}.to.{m}.email",
                                   "message": "Does not contain a valid address."})
                if address in seen:
                    errors.append({"field": f"personalizations.{n}.to",
                                   "message": "Each email address in the personalization "
                                   "block should be unique."})
                seen.add(address)
        if errors:
            return self.reply(400, {"errors": errors}), 0
        message_id = uuid.uuid4().hex[:22]
        content = {c["type"]: c["value"] for c in body.get("content", [])}
        for item in personalizations:
            subs = item.get("substitutions") or {}
            text, html = content.get("text/plain", ""), content.get("text/html", "")
            for key, value in subs.items():
                text, html = text.replace(key, value), html.replace(key, value)
            headers = {**body.get("headers", {}), **item.get("headers", {})}
            to = item["to"][0]
            name = to.get("name", "")
            self.record(Delivered(f"{name} <{to['email']}>" if name else to["email"],
                                  item.get("subject") or body.get("subject", ""), text, html,
                                  headers, message_id,
                                  {"custom_args": item.get("custom_args"),
                                   "tracking": body.get("tracking_settings"),
                                   "reply_to": body.get("reply_to")}))
        return self.reply(202, b"", {"X-Message-Id": message_id}), len(personalizations)


# ---- Mailgun ----------------------------------------------------------------------------------


#: Where the fake Mailgun's own unsubscribe variables point (``%unsubscribe_url%`` ...).
MAILGUN_UNSUBSCRIBE = "https://email.mg.labourlist.org/u/"


class FakeMailgun(FakeProvider):
    """``POST /v3/DOMAIN/messages`` (repeated ``to``, ``recipient-variables``, ``h:``
    headers), ``GET /v3/domains/DOMAIN``."""

    def __init__(self, key: str = "mg-key", domain: str = "mg.labourlist.org") -> None:
        super().__init__()
        self.key = key
        self.domain = domain

    def handle(self, request: Request) -> tuple[Response, int]:
        auth = request.authorization
        if auth is None or auth.username != "api" or auth.password != self.key:
            return self.reply(401, "Forbidden"), 0
        if request.method == "GET" and request.path == f"/v3/domains/{self.domain}":
            return self.reply(200, {"domain": {"name": self.domain, "state": "active"}}), 0
        match = re.fullmatch(r"/v3/([^/]+)/messages", request.path)
        if request.method != "POST" or match is None:
            return self.reply(404, {"message": "not found"}), 0
        if match.group(1) != self.domain:
            return self.reply(404, {"message": f"Domain not found: {match.group(1)}"}), 0
        form = request.form
        tos = form.getlist("to")
        if not tos or len(tos) > 1000:
            return self.reply(400, {"message": "'to' parameter is missing or too many"}), 0
        if any(_address(t).startswith("invalid") for t in tos):
            return self.reply(400, {"message": "'to' parameter is not a valid address. "
                                               "please check documentation"}), 0
        if not form.get("from"):
            return self.reply(400, {"message": "from parameter is missing"}), 0
        raw_vars = form.get("recipient-variables")
        if raw_vars is None:
            return self.reply(400, {"message": "batch without recipient-variables would "
                                               "show every address to everyone"}), 0
        variables = json.loads(raw_vars)
        message_id = f"<{uuid.uuid4().hex}@{self.domain}>"
        headers_template = {k[2:]: v for k, v in form.items(multi=True) if k.startswith("h:")}
        for to in tos:
            values = variables.get(_address(to), {})

            def sub(text: str, values: dict[str, Any] = values, to: str = to) -> str:
                # Mailgun's own variables too: they are filled whatever the caller meant.
                own = {"recipient": _address(to),
                       "unsubscribe_url": f"{MAILGUN_UNSUBSCRIBE}{_address(to)}",
                       "tag_unsubscribe_url": f"{MAILGUN_UNSUBSCRIBE}tag/{_address(to)}",
                       "mailing_list_unsubscribe_url": f"{MAILGUN_UNSUBSCRIBE}list/"
                                                       f"{_address(to)}"}
                text = re.sub(r"%recipient\.([A-Za-z0-9_:-]+)%",
                              lambda m: str(values.get(m.group(1), "")), text)
                return re.sub(r"%([a-z_]+)%", lambda m: own.get(m.group(1), m.group(0)), text)

            headers = {k: sub(v) for k, v in headers_template.items()}
            self.record(Delivered(to, sub(form.get("subject", "")), sub(form.get("text", "")),
                                  sub(form.get("html", "")), headers, message_id,
                                  {"v": {k: sub(v) for k, v in form.items()
                                         if k.startswith("v:")}}))
        return self.reply(200, {"id": message_id, "message": "Queued. Thank you."}), len(tos)


# ---- Amazon SES v2 ----------------------------------------------------------------------------


class FakeSes(FakeProvider):
    """The SES v2 REST JSON API as boto3 calls it: ``POST /v2/email/outbound-emails`` with a
    base64 raw message, ``GET /v2/email/account``; errors carry ``x-amzn-ErrorType``."""

    def __init__(self, key_id: str = "AKIDFAKE", region: str = "eu-west-2") -> None:
        super().__init__()
        self.key_id = key_id
        self.region = region
        self.raw: list[bytes] = []

    @staticmethod
    def error(status: int, code: str, message: str) -> tuple[int, dict[str, str], dict[str, str]]:
        """(status, body, headers) of an SES error, for `fail_next`."""
        return status, {"message": message}, {"x-amzn-ErrorType": f"{code}:"}

    def handle(self, request: Request) -> tuple[Response, int]:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith(f"AWS4-HMAC-SHA256 Credential={self.key_id}/"):
            status, body, headers = self.error(403, "UnrecognizedClientException",
                                               "The security token included in the request "
                                               "is invalid.")
            return self.reply(status, body, headers), 0
        if request.method == "GET" and request.path == "/v2/email/account":
            return self.reply(200, {"SendingEnabled": True, "ProductionAccessEnabled": True,
                                    "SendQuota": {"Max24HourSend": 50000.0,
                                                  "MaxSendRate": 14.0,
                                                  "SentLast24Hours": 12.0}}), 0
        if request.method != "POST" or request.path != "/v2/email/outbound-emails":
            return self.reply(404, {"message": "not found"}), 0
        body = request.get_json(silent=True) or {}
        raw = base64.b64decode(body["Content"]["Raw"]["Data"])
        destination = body.get("Destination", {}).get("ToAddresses") or []
        if len(destination) != 1:
            status, err, headers = self.error(400, "BadRequestException", "one recipient")
            return self.reply(status, err, headers), 0
        address = destination[0].lower()
        if address.startswith("unverified"):
            status, err, headers = self.error(
                400, "MessageRejected", "Email address is not verified. The following "
                f"identities failed the check in region {self.region.upper()}: {address}")
            return self.reply(status, err, headers), 0
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        text = parsed.get_body(preferencelist=("plain",))
        html = parsed.get_body(preferencelist=("html",))
        message_id = f"0102{uuid.uuid4().hex}-000000"
        with self.lock:
            self.raw.append(raw)
        self.record(Delivered(str(parsed["To"]), str(parsed["Subject"]),
                              text.get_content() if text else "",
                              html.get_content() if html else "",
                              {k: " ".join(str(v).split()) for k, v in parsed.items()},
                              message_id, {"configuration_set": body.get("ConfigurationSetName"),
                                           "tags": body.get("EmailTags")}))
        return self.reply(200, {"MessageId": message_id}), 1


@contextmanager
def running(factory: Callable[[], F]) -> Iterator[F]:
    """A started fake, stopped on the way out."""
    fake = factory().start()
    try:
        yield fake
    finally:
        fake.stop()
