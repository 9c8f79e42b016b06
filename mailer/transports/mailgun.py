"""Mailgun: ``mailgun+api://API_KEY:DOMAIN@default?region=eu``.

One ``POST /v3/DOMAIN/messages`` carries the shared bodies, up to 1,000 repeated ``to`` fields
and ``recipient-variables``, a JSON object keyed by address. Mailgun then sends each recipient
their own message with ``%recipient.KEY%`` replaced everywhere, headers included, so our
per-recipient ``List-Unsubscribe`` and ``Message-ID`` are ``h:`` fields pointing at recipient
variables. Without ``recipient-variables`` every recipient would see all the others in To:
the payload always sends it, even for one recipient.

As with SendGrid, the HTML body gets its own escaped variables, and the shared bodies come from
the edition's `MessageTemplate` attached to each `Outgoing`; a message without one goes alone
with its finished bodies.

Mailgun fills ``%recipient.KEY%`` and its own variables (``%recipient%``,
``%unsubscribe_url%`` ...) wherever they appear, and the bodies carry text from the feed. So no
``%`` that could start a Mailgun variable reaches it live: our variables' names carry the
edition's random key (`mailer.placeholders`), and every other ``%`` followed by a letter is
encoded for Mailgun's language before the call (`inert_html`, `inert_text`), the way HTML
escaping encodes ``<``. Feed links already hold ``%`` only as upper-case percent-escapes.

Mailgun accepts or refuses a call as a whole: 200 ``{"id", "message": "Queued. Thank you."}``
(the id is every recipient's provider id) or 400 ``{"message"}``. A 400 that blames an address
without naming it cuts the batch in halves until the culprit is alone (a refused call sent
nothing, so this is safe); any other 400 or a 404 (unknown domain, wrong region) stops the send.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from html import escape
from typing import Any
from urllib.parse import quote

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
    SendStopped,
    per_recipient_headers,
    quoted_address,
    render,
    response_detail,
    split_address,
    template_of,
)

REGIONS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
_RECIPIENT_WORDS = ("'to'", "to parameter", "recipient", "invalid address")


# A "%" that Mailgun could read as the start of one of its variables: every variable name
# starts with a letter (lower case in Mailgun's documentation; upper case too, to be safe,
# except where a percent-escape's hex digits follow).
_LIVE_PERCENT_RE = re.compile(r"%(?=[a-z_.]|[G-Z]|[A-F](?![0-9A-F]))")


def variable(key: str) -> str:
    return f"%recipient.{key}%"


def inert_html(html: str) -> str:
    """The HTML part with no "%" Mailgun could fill: written as the character reference
    ``&#37;``, which a mail client reads back as "%" in text and in attribute values alike."""
    return _LIVE_PERCENT_RE.sub("&#37;", html)


def inert_text(text: str) -> str:
    """A text part or subject with no "%" Mailgun could fill: an invisible WORD JOINER
    (U+2060) after it keeps what the reader sees and breaks the variable syntax."""
    return _LIVE_PERCENT_RE.sub("%\u2060", text)


def _with_variables(
    body: str, slots: Placeholders, inert: Callable[[str], str], suffix: str
) -> str:
    """`body` made inert for Mailgun between its slots, each slot becoming the recipient
    variable that fills it."""
    pieces = slots.pattern.split(body)
    return "".join(
        variable(slots.provider_variable(slots.fields[piece]) + suffix) if index % 2
        else inert(piece)
        for index, piece in enumerate(pieces)
    )


class MailgunPayload(Payload):
    """One ``/messages`` call: shared bodies and recipient variables."""

    def __init__(self, messages: list[Outgoing], domain: str) -> None:
        super().__init__(messages)
        self.domain = domain
        self.template: MessageTemplate | None = template_of(messages[0])
        if self.template is None and len(messages) != 1:
            raise ValueError("messages without a template are sent one per call")

    def request(self) -> ApiRequest:
        form: list[tuple[str, str]] = []
        variables: dict[str, dict[str, str]] = {}
        if self.template is not None:
            template = self.template
            common = template.common_headers()
            slots = template.placeholders
            name = slots.provider_variable  # every variable name carries the edition's key
            text = _with_variables(template.text, slots, inert_text, "")
            html = _with_variables(template.html, slots, inert_html, "_html")
            form += [("from", template.from_addr), ("subject", inert_text(template.subject))]
            for message in self.messages:
                form.append(("to", quoted_address(message.fields.get("to") or message.recipient)))
                values: dict[str, str] = {}
                for key in slots.fields.values():
                    value = message.fields.get(key, "")
                    values[name(key)] = value
                    values[name(key) + "_html"] = escape(value, quote=True)
                headers = per_recipient_headers(message)
                values[name("list_unsubscribe")] = headers.get("List-Unsubscribe", "")
                values[name("message_id")] = headers.get("Message-ID", "")
                values[name("delivery_id")] = (str(message.delivery_id)
                                               if message.delivery_id is not None else "")
                variables[split_address(message.recipient)[1] or message.recipient] = values
            form += [("h:List-Unsubscribe", variable(name("list_unsubscribe"))),
                     ("h:Message-Id", variable(name("message_id"))),
                     ("v:delivery_id", variable(name("delivery_id")))]
        else:
            message = self.messages[0]
            rendered = render(message)
            common = dict(rendered.headers)
            text, html = inert_text(rendered.text), inert_html(rendered.html)
            if rendered.reply_to:
                common["Reply-To"] = rendered.reply_to
            form += [("from", rendered.from_addr), ("subject", inert_text(rendered.subject)),
                     ("to", quoted_address(rendered.to))]
            variables[message.recipient] = {}
            if message.delivery_id is not None:
                form.append(("v:delivery_id", str(message.delivery_id)))
        form += [("text", text), ("html", html)]
        form += [(f"h:{name}", value) for name, value in common.items()]
        form.append(("recipient-variables", json.dumps(variables, ensure_ascii=False)))
        return ApiRequest("POST", f"/v3/{quote(self.domain, safe='')}/messages", data=form)

    def parse(self, response: requests.Response) -> list[Result]:
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or "id" not in answer:
            if "Mailgun Magnificent API" in response.text:
                # Mailgun's answer to a URL that is not an API endpoint: nothing was sent.
                raise SendStopped("mailgun: the endpoint is not Mailgun's API; check the "
                                  "domain and ?region= / ?endpoint= in MAILER_DSN")
            error = f"mailgun: unreadable answer: {response_detail(response, 120)}"
            return [Result("ambiguous", error=error) for _ in self.messages]
        provider_id = str(answer["id"])
        return [Result("sent", provider_id=provider_id) for _ in self.messages]

    def recipient_error(self, response: requests.Response) -> bool:
        if response.status_code != 400:
            return False
        text = response_detail(response).lower()
        return any(word in text for word in _RECIPIENT_WORDS)


class MailgunTransport(HttpTransport):
    """Mailgun's messages API with recipient variables (1,000 recipients a call)."""

    name = "mailgun"
    max_batch = 1000
    default_base_url = REGIONS["us"]

    def __init__(self, api_key: str, domain: str, **options: Any) -> None:
        if not api_key or not domain:
            raise TransportError(
                "MAILER_DSN for Mailgun needs the API key and the sending domain: "
                "mailgun+api://KEY:DOMAIN@default?region=eu"
            )
        if "/" in domain:
            raise TransportError(f"MAILER_DSN: {domain!r} is not a Mailgun sending domain")
        super().__init__(**options)
        self._key = api_key
        self.domain = domain

    @classmethod
    def from_dsn(cls, dsn: Dsn, settings: Settings) -> MailgunTransport:
        """``mailgun+api://KEY:DOMAIN@default[?region=eu|us&endpoint=…]``."""
        dsn.check_options(HTTP_OPTIONS | {"region"})
        options = cls.http_options(dsn, settings)
        region = (dsn.options.get("region") or "us").lower()
        if region not in REGIONS:
            raise TransportError(f"MAILER_DSN option region={region!r} must be us or eu")
        if not options["base_url"]:
            options["base_url"] = REGIONS[region]
        return cls(dsn.user, dsn.password, **options)

    def auth(self, session: requests.Session) -> None:
        session.auth = ("api", self._key)

    def payloads(self, messages: list[Outgoing]) -> Iterable[tuple[list[int], Payload]]:
        return self.by_template(messages)

    def build(self, messages: list[Outgoing]) -> Payload:
        return MailgunPayload(messages, self.domain)

    def auth_hint(self, response: requests.Response) -> str:
        return f" (domain {self.domain!r}, {self.base_url}: EU domains need ?region=eu)"

    def check(self) -> str:
        """``GET /v3/domains/DOMAIN``: the key works and the domain exists in this region."""
        info = self.get_json(f"/v3/domains/{quote(self.domain, safe='')}")
        state = str((info.get("domain") or {}).get("state", "unknown"))
        if state == "disabled":
            raise TransportError(f"mailgun: domain {self.domain!r} is disabled")
        summary = f"mailgun {self.base_url}: API key ok, domain {self.domain!r} {state}"
        if state != "active":
            summary += "; warning: an unverified domain can only send to authorised recipients"
        return summary


register("mailgun+api", MailgunTransport.from_dsn)
