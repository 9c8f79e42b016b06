"""SendGrid: ``sendgrid+api://API_KEY@default``.

One ``POST /v3/mail/send`` carries one shared content and up to 1,000 *personalizations*, one
per recipient, each with its own ``to``, ``headers`` (our per-recipient ``List-Unsubscribe``
and ``Message-ID``) and ``substitutions``. SendGrid substitutes the same value into the text
and the HTML part, but the HTML part needs it escaped, so the HTML content uses its own
placeholder names (``%%GREETING_<key>_HTML%%`` …) and each personalization carries both forms.
The substitution keys are the edition's slots, whose names carry a random key
(`mailer.placeholders`): no text from a feed can contain one, so SendGrid's substitution is
never live for it. (SendGrid substitutes nothing else here: no dynamic template, and
subscription tracking, whose tags it would fill, is off.)

The shared content comes from the edition's `MessageTemplate` that the dispatcher attaches to
each `Outgoing` (``message.template``). A message without one is sent alone with its finished
bodies (correct, one call per recipient: the fallback, never the normal path).

SendGrid answers 202 with ``X-Message-Id`` for the whole call (kept as each recipient's
provider id: events carry it as the prefix of ``sg_message_id``). A 400 lists ``errors[]``;
those that name ``personalizations.N`` fail that recipient and the rest are sent again at
once; an error about anything else (From, content) would fail every batch, so the send stops.
Our own unsubscribe handling stays in charge: SendGrid's subscription tracking is switched off
for these messages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import escape
from typing import Any

import requests

from mailer.config import Settings
from mailer.errors import TransportError
from mailer.message import MessageTemplate
from mailer.placeholders import Placeholders
from mailer.transports import register
from mailer.transports.base import Outgoing, Result
from mailer.transports.dsn import Dsn
from mailer.transports.http import (
    HTTP_OPTIONS,
    ApiRequest,
    HttpTransport,
    Payload,
    per_recipient_headers,
    render,
    split_address,
    template_of,
)

_PERSONALIZATION_FIELD = re.compile(r"^personalizations\.(\d+)\b")


def html_key(placeholder: str) -> str:
    """``%%GREETING_k%%`` → ``%%GREETING_k_HTML%%``: the HTML part's own substitution tag."""
    return placeholder[:-2] + "_HTML%%"


def email_object(value: str) -> dict[str, str]:
    """SendGrid's ``{"email", "name"}``. Names with a comma or semicolon are quoted: SendGrid
    does not quote them itself and the header would then name several people."""
    name, addr = split_address(value)
    obj = {"email": addr}
    if name:
        obj["name"] = f'"{name}"' if any(c in name for c in ",;") else name
    return obj


class SendGridPayload(Payload):
    """One ``/v3/mail/send`` call: shared content, one personalization per recipient."""

    def __init__(self, messages: list[Outgoing]) -> None:
        super().__init__(messages)
        self.template: MessageTemplate | None = template_of(messages[0])
        if self.template is None and len(messages) != 1:
            raise ValueError("messages without a template are sent one per call")

    def request(self) -> ApiRequest:
        if self.template is not None:
            template = self.template
            common = template.common_headers()
            reply_to = common.pop("Reply-To", "")
            text = template.text
            html = template.html
            slots = template.placeholders
            html = slots.pattern.sub(lambda m: html_key(m.group(0)), html)
            from_addr, subject = template.from_addr, template.subject
            personalizations = [self._personalization(m, slots) for m in self.messages]
        else:
            rendered = render(self.messages[0])
            common = {k: v for k, v in rendered.headers.items()
                      if k not in ("List-Unsubscribe", "Message-ID")}
            reply_to, text, html = rendered.reply_to, rendered.text, rendered.html
            from_addr, subject = rendered.from_addr, rendered.subject
            personalization = self._personalization(self.messages[0], None)
            personalization["to"] = [email_object(rendered.to)]
            for name in ("List-Unsubscribe", "Message-ID"):
                if name in rendered.headers:
                    personalization["headers"][name] = rendered.headers[name]
            personalizations = [personalization]
        body: dict[str, Any] = {
            "personalizations": personalizations,
            "from": email_object(from_addr),
            "subject": subject,
            "content": [{"type": "text/plain", "value": text},
                        {"type": "text/html", "value": html}],
            "headers": common,
            "tracking_settings": {"subscription_tracking": {"enable": False}},
        }
        if reply_to:
            body["reply_to"] = email_object(reply_to)
        return ApiRequest("POST", "/v3/mail/send", json=body)

    @staticmethod
    def _personalization(message: Outgoing, slots: Placeholders | None) -> dict[str, Any]:
        """One recipient's block; with `slots`, the substitutions that fill them."""
        fields = message.fields
        item: dict[str, Any] = {
            "to": [email_object(fields.get("to") or message.recipient)],
            "headers": per_recipient_headers(message) if slots else {},
        }
        if slots:
            subs: dict[str, str] = {}
            for placeholder, key in slots.fields.items():
                value = fields.get(key, "")
                subs[placeholder] = value
                subs[html_key(placeholder)] = escape(value, quote=True)
            item["substitutions"] = subs
        if message.delivery_id is not None:
            item["custom_args"] = {"delivery_id": str(message.delivery_id)}
        return item

    def parse(self, response: requests.Response) -> list[Result]:
        provider_id = response.headers.get("X-Message-Id", "")
        return [Result("sent", provider_id=provider_id) for _ in self.messages]

    def parse_error(self, response: requests.Response) -> list[Result | None] | None:
        if response.status_code != 400:
            return None
        try:
            errors = response.json().get("errors") or []
        except (ValueError, AttributeError):
            return None
        blamed: dict[int, str] = {}
        for error in errors:
            if not isinstance(error, dict):
                return None
            match = _PERSONALIZATION_FIELD.match(str(error.get("field") or ""))
            if match is None or int(match.group(1)) >= len(self.messages):
                return None  # about the request itself: every batch would fail the same way
            blamed.setdefault(int(match.group(1)), str(error.get("message", "")).strip())
        if not blamed:
            return None
        return [Result("failed", error=f"sendgrid refused the recipient: {blamed[i]}")
                if i in blamed else None for i in range(len(self.messages))]


class SendGridTransport(HttpTransport):
    """SendGrid's v3 Mail Send (1,000 personalizations a call)."""

    name = "sendgrid"
    max_batch = 1000
    default_base_url = "https://api.sendgrid.com"

    def __init__(self, api_key: str, **options: Any) -> None:
        if not api_key:
            raise TransportError(
                "MAILER_DSN for SendGrid needs the API key: sendgrid+api://KEY@default"
            )
        super().__init__(**options)
        self._key = api_key

    @classmethod
    def from_dsn(cls, dsn: Dsn, settings: Settings) -> SendGridTransport:
        """``sendgrid+api://KEY@default[?endpoint=https://api.eu.sendgrid.com]``."""
        dsn.check_options(HTTP_OPTIONS)
        return cls(dsn.user or dsn.password, **cls.http_options(dsn, settings))

    def auth(self, session: requests.Session) -> None:
        session.headers["Authorization"] = f"Bearer {self._key}"

    def payloads(self, messages: list[Outgoing]) -> Iterable[tuple[list[int], Payload]]:
        return self.by_template(messages)

    def build(self, messages: list[Outgoing]) -> Payload:
        return SendGridPayload(messages)

    def check(self) -> str:
        """``GET /v3/scopes``: the key works and may send mail."""
        scopes = self.get_json("/v3/scopes").get("scopes") or []
        if "mail.send" not in scopes:
            raise TransportError("sendgrid: the API key works but lacks the mail.send "
                                 "permission (give it Mail Send access)")
        return f"sendgrid {self.base_url}: API key ok, mail.send allowed"


register("sendgrid+api", SendGridTransport.from_dsn)
