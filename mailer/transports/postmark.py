"""Postmark: ``postmark+api://SERVER_TOKEN@default?stream=broadcast``.

Each call is ``POST /email/batch`` with up to 500 complete messages (Postmark has no
per-recipient substitution in its batch API, so every message carries its own finished bodies
and its own ``List-Unsubscribe``). Postmark answers 200 even when some messages were refused and
lists one result per message, in request order; each ``ErrorCode`` becomes that recipient's
outcome:

* 0 → sent (``MessageID`` is Postmark's id, kept in the ledger for webhook matching);
* 406 inactive recipient (Postmark suppressed the address after a bounce or complaint) →
  failed and the subscriber is suppressed: retrying can never succeed;
* 300 invalid request → failed for that recipient, unless it is about our From address, which
  would fail every message: the send stops;
* account-level codes (bad token, unconfirmed sender signature, account pending or not allowed
  to send, unknown message stream) → the send stops with Postmark's message.

Newsletters must go through a *broadcast* message stream (Postmark's rule); ``mailer transports
check`` says so when the configured stream is transactional, and warns when Postmark is set to
add its own unsubscribe handling on top of ours.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import requests

from mailer.config import Settings
from mailer.errors import TransportError
from mailer.transports import register
from mailer.transports.base import Outgoing, Result
from mailer.transports.dsn import Dsn
from mailer.transports.http import (
    HTTP_OPTIONS,
    ApiRequest,
    HttpTransport,
    Payload,
    SendStopped,
    quoted_address,
    render,
    response_detail,
)

INACTIVE_RECIPIENT = 406
INVALID_REQUEST = 300
#: Codes that are about our account or request, not about the recipient: stop the send.
ACCOUNT_CODES = frozenset({10, 400, 401, 402, 403, 405, 409, 410, 411, 412, 413})
#: Codes that mean "later": rate limit, maintenance.
LATER_CODES = frozenset({100, 429})
#: Budget per call, measured on the finished MIME messages (JSON escaping adds to it; the
#: API's limit is 50 MB).
MAX_BATCH_BYTES = 20 * 1024 * 1024
_SENDER_WORDS = ("'from'", "from address", "sender signature", "sender address")


class PostmarkPayload(Payload):
    """One ``/email/batch`` call: a JSON array of complete messages."""

    def __init__(self, messages: list[Outgoing], stream: str) -> None:
        super().__init__(messages)
        self.stream = stream

    def request(self) -> ApiRequest:
        return ApiRequest("POST", "/email/batch", json=[self._one(m) for m in self.messages])

    def _one(self, message: Outgoing) -> dict[str, Any]:
        rendered = render(message)
        body: dict[str, Any] = {
            "From": rendered.from_addr,
            "To": quoted_address(rendered.to),
            "Subject": rendered.subject,
            "TextBody": rendered.text,
            "HtmlBody": rendered.html,
            "MessageStream": self.stream,
            "Headers": [{"Name": k, "Value": v} for k, v in rendered.headers.items()],
        }
        if rendered.reply_to:
            body["ReplyTo"] = rendered.reply_to
        if message.delivery_id is not None:
            body["Metadata"] = {"delivery_id": str(message.delivery_id)}
        return body

    def parse(self, response: requests.Response) -> list[Result]:
        try:
            answers = response.json()
        except ValueError:
            answers = None
        if not isinstance(answers, list) or len(answers) != len(self.messages):
            # We cannot tell which message each answer belongs to, and some may be sent.
            error = f"postmark: unreadable batch answer: {response_detail(response, 120)}"
            return [Result("ambiguous", error=error) for _ in self.messages]
        results: list[Result] = []
        stop: str = ""
        for answer in answers:
            result, fatal = self._result(answer if isinstance(answer, dict) else {})
            results.append(result)
            stop = stop or fatal
        if stop and not any(r.status == "sent" for r in results):
            raise SendStopped(stop)
        return results

    @staticmethod
    def _result(answer: dict[str, Any]) -> tuple[Result, str]:
        """(Result, reason to stop the send or "") for one entry of the batch answer."""
        try:
            code = int(answer.get("ErrorCode", -1))
        except (TypeError, ValueError):
            code = -1
        text = str(answer.get("Message", "")).strip()
        error = f"postmark {code}: {text}"
        if code == 0:
            return Result("sent", provider_id=str(answer.get("MessageID", ""))), ""
        if code == INACTIVE_RECIPIENT:
            return Result("failed", error=error, hard_bounce=True,
                          suppress_reason="bounced"), ""
        if code == INVALID_REQUEST:
            if any(word in text.lower() for word in _SENDER_WORDS):
                return Result("retry", error=error), f"postmark refused our sender: {text}"
            return Result("failed", error=error), ""
        if code in ACCOUNT_CODES or code >= 1000:
            return Result("retry", error=error), f"postmark refused the send ({code}): {text}"
        if code in LATER_CODES:
            return Result("retry", error=error), ""
        if code == -1:
            return Result("ambiguous", error="postmark: a batch answer without ErrorCode"), ""
        return Result("failed", error=error), ""


class PostmarkTransport(HttpTransport):
    """Postmark's batch API (``/email/batch``, 500 messages a call)."""

    name = "postmark"
    max_batch = 500
    default_base_url = "https://api.postmarkapp.com"

    def __init__(self, token: str, *, stream: str = "broadcast", **options: Any) -> None:
        if not token:
            raise TransportError(
                "MAILER_DSN for Postmark needs the server token: postmark+api://TOKEN@default"
            )
        super().__init__(**options)
        self._token = token
        self.message_stream = stream

    @classmethod
    def from_dsn(cls, dsn: Dsn, settings: Settings) -> PostmarkTransport:
        """``postmark+api://TOKEN@default[?stream=broadcast&endpoint=…&timeout=…]``."""
        dsn.check_options(HTTP_OPTIONS | {"stream"})
        return cls(dsn.user or dsn.password, stream=dsn.options.get("stream") or "broadcast",
                   **cls.http_options(dsn, settings))

    def auth(self, session: requests.Session) -> None:
        session.headers["X-Postmark-Server-Token"] = self._token

    def payloads(self, messages: list[Outgoing]) -> Iterable[tuple[list[int], Payload]]:
        """Calls of at most 500 messages and about `MAX_BATCH_BYTES`: each message carries
        its whole HTML, and 500 copies of a heavy edition would pass Postmark's 50 MB."""
        indices: list[int] = []
        size = 0
        for index, message in enumerate(messages):
            weight = len(message.data)
            if indices and (len(indices) >= self.max_batch or size + weight > MAX_BATCH_BYTES):
                yield indices, self.build([messages[i] for i in indices])
                indices, size = [], 0
            indices.append(index)
            size += weight
        if indices:
            yield indices, self.build([messages[i] for i in indices])

    def build(self, messages: list[Outgoing]) -> Payload:
        return PostmarkPayload(messages, self.message_stream)

    def check(self) -> str:
        """The token (``GET /server``) and the stream (``GET /message-streams/ID``)."""
        server = self.get_json("/server")
        stream = self.get_json(f"/message-streams/{quote(self.message_stream, safe='')}")
        kind = str(stream.get("MessageStreamType", ""))
        if kind == "Inbound":
            raise TransportError(f"postmark: stream {self.message_stream!r} is an inbound "
                                 "stream; use a broadcast stream (?stream=ID)")
        notes = []
        if kind != "Broadcasts":
            notes.append(f"warning: stream {self.message_stream!r} is "
                         f"{kind or 'not a broadcast stream'};"
                         " Postmark requires newsletters to use a broadcast stream")
        handling = (stream.get("SubscriptionManagementConfiguration") or {}).get(
            "UnsubscribeHandlingType", "")
        if handling == "Postmark":
            notes.append("warning: Postmark adds its own unsubscribe link and header on this "
                         "stream; set unsubscribe handling to None (we send our own)")
        summary = (f"postmark {self.base_url}: token ok (server {server.get('Name', '?')!r}), "
                   f"stream {self.message_stream!r} ({kind or 'unknown type'})")
        return "; ".join([summary, *notes])


register("postmark+api", PostmarkTransport.from_dsn)
