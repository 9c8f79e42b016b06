"""What every HTTP provider transport shares (after django-anymail's ``base_requests``).

A provider module only says how to turn messages into one API call (a `Payload`) and how to read
the answer; this module runs the fixed sequence around it:

1. ``send()`` asks the provider to split the messages into calls (`HttpTransport.payloads`);
2. each call goes out on the one ``requests.Session`` made by ``open()`` (connection reuse,
   default timeouts, our User-Agent);
3. 429 and 500/502/503 are retried inside ``send`` with a bounded wait that honours
   ``Retry-After`` (and SendGrid's ``X-RateLimit-Reset``); when the wait would be too long,
   the messages come back as ``retry`` and the ledger schedules them, so a worker never sleeps
   for minutes while holding claims;
4. 401/403 raise `SendStopped` ("check your API key"): every later call would fail the same
   way, and retrying 50,000 recipients five times each would only hide the real problem;
5. a 2xx or a 4xx that names recipients becomes one `Result` per message, in order.

Exactly once matters more than throughput: a request whose outcome we cannot know (a read
timeout, a dropped connection after the request was written, a 504 from a gateway) makes its
messages ``ambiguous``, which the ledger never re-sends blindly. Only failures that happen
before the request could reach the provider (refused connection, connect timeout, TLS
handshake) are safe to retry.
"""

from __future__ import annotations

import email
import email.policy
import html
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

from mailer.config import Settings
from mailer.errors import TransportError
from mailer.transports.base import Outgoing, Result, Status, Transport
from mailer.transports.dsn import Dsn

if TYPE_CHECKING:
    from mailer.message import MessageTemplate

DEFAULT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_WAIT = 30.0  # seconds one send() may spend waiting on 429/5xx before giving up
MAX_RETRIES = 4
RETRYABLE = frozenset({429, 500, 502, 503})
# A gateway timeout means the provider may still be working on the request: not retried.
AMBIGUOUS_STATUSES = frozenset({504})
STOPPING = "not sent: the send is stopping"
HTTP_OPTIONS = frozenset({"endpoint", "timeout", "max_wait"})


class SendStopped(TransportError):
    """Every further call would fail the same way (bad API key, daily quota used up, sender
    not verified): the send must stop now instead of retrying each recipient until it gives
    up. The dispatcher releases the batch's claims and stops; nothing was sent."""

    stop_send = True


# ---- what a provider call looks like ------------------------------------------------------


@dataclass
class ApiRequest:
    """One HTTP request to the provider (relative path; the transport adds the base URL)."""

    method: str
    path: str
    json: Any = None
    data: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class Payload(ABC):
    """One provider call carrying some of the messages of a ``send()`` (django-anymail's
    payload object): it builds the request and maps the answer to one Result per message."""

    def __init__(self, messages: list[Outgoing]) -> None:
        self.messages = messages

    @abstractmethod
    def request(self) -> ApiRequest:
        """The HTTP request for these messages."""

    @abstractmethod
    def parse(self, response: requests.Response) -> list[Result]:
        """One Result per message from a 2xx answer, in order."""

    def recipient_error(self, response: requests.Response) -> bool:
        """Whether a refused request (4xx) blames a recipient it does not name: the
        transport then cuts the batch in halves to find who."""
        return False

    def parse_error(self, response: requests.Response) -> list[Result | None] | None:
        """Read a 4xx answer (not 401/403/429). Return None when no recipient explains it
        (the request itself is wrong: the send stops), else one entry per message: a Result,
        or None for a message that was not at fault and should go out in a new call."""
        return None


# ---- helpers for providers ----------------------------------------------------------------


@dataclass
class Rendered:
    """One recipient's finished message as API providers take it (bodies, headers)."""

    from_addr: str
    to: str
    subject: str
    text: str
    html: str
    reply_to: str
    #: Headers we must keep (List-Unsubscribe, List-Unsubscribe-Post, List-Id, Message-ID, …).
    headers: dict[str, str]


def template_of(message: Outgoing) -> MessageTemplate | None:
    """The edition's shared template, when the dispatcher attached it together with this
    recipient's `fields`; None means the message goes as its finished bytes, alone."""
    return message.template if message.fields else None


def fill_placeholders(
    template: MessageTemplate, body: str, values: dict[str, str], *, escape: bool
) -> str:
    """Replace the per-recipient slots of a template body with this recipient's values
    (HTML-escaped for the HTML part, as `MessageTemplate.fill` does)."""
    slots = template.placeholders
    filled = {field: values.get(field, "") for field in slots.fields.values()}
    if escape:
        filled = {field: html.escape(value, quote=True) for field, value in filled.items()}
    return slots.fill(body, filled)


def per_recipient_headers(message: Outgoing) -> dict[str, str]:
    """List-Unsubscribe and Message-ID: the headers that differ for every recipient."""
    fields = message.fields
    headers: dict[str, str] = {}
    if fields.get("list_unsubscribe"):
        headers["List-Unsubscribe"] = fields["list_unsubscribe"]
    message_id = fields.get("message_id") or message.message_id
    if message_id:
        headers["Message-ID"] = message_id
    return headers


def render(message: Outgoing) -> Rendered:
    """The recipient's message from the shared template and `fields` (cheap), or parsed from
    the full RFC 5322 bytes when the message carries no template."""
    template = template_of(message)
    if template is not None:
        common = template.common_headers()
        reply_to = common.pop("Reply-To", "")
        return Rendered(
            from_addr=template.from_addr,
            to=message.fields.get("to") or message.recipient,
            subject=template.subject,
            text=fill_placeholders(template, template.text, message.fields, escape=False),
            html=fill_placeholders(template, template.html, message.fields, escape=True),
            reply_to=reply_to,
            headers={**common, **per_recipient_headers(message)},
        )
    return parse_message(message)


#: Headers of our message that API providers must pass through as custom headers.
KEPT_HEADERS = ("List-Unsubscribe", "List-Unsubscribe-Post", "List-Id", "Message-ID",
                "X-Mailer-Test", "Feedback-ID")


def parse_message(message: Outgoing) -> Rendered:
    """Take the finished message apart (the slow path: one MIME parse per recipient)."""
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    text_part = parsed.get_body(preferencelist=("plain",))
    html_part = parsed.get_body(preferencelist=("html",))
    headers = {name: _unfold(parsed[name]) for name in KEPT_HEADERS if parsed[name] is not None}
    if "Message-ID" not in headers and message.message_id:
        headers["Message-ID"] = message.message_id
    return Rendered(
        from_addr=_unfold(parsed["From"]),
        to=_unfold(parsed["To"]) or message.recipient,
        subject=_unfold(parsed["Subject"]),
        text=text_part.get_content() if isinstance(text_part, EmailMessage) else "",
        html=html_part.get_content() if isinstance(html_part, EmailMessage) else "",
        reply_to=_unfold(parsed["Reply-To"]),
        headers=headers,
    )


def _unfold(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def split_address(value: str) -> tuple[str, str]:
    """("Name", "addr") from a formatted address, with RFC 2047 words decoded: JSON APIs
    take UTF-8 names and would show encoded words literally."""
    pairs = getaddresses([value])
    name, addr = pairs[0] if pairs and pairs[0][1] else parseaddr(value)
    if "=?" in name:
        try:
            name = str(make_header(decode_header(name)))
        except (UnicodeError, LookupError, ValueError):
            pass
    return " ".join(name.split()), addr


def quoted_address(value: str) -> str:
    """``"Name" <addr>`` with the name quoted (Postmark, Mailgun refuse bare punctuation)."""
    name, addr = split_address(value)
    if not name:
        return addr
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}" <{addr}>'


def unique_recipients(messages: list[Outgoing], size: int) -> Iterator[list[int]]:
    """Indices of `messages` in groups of at most `size` where no address appears twice
    (providers refuse a batch naming one address twice; a repeat waits for the next call)."""
    remaining = list(range(len(messages)))
    while remaining:
        group: list[int] = []
        seen: set[str] = set()
        later: list[int] = []
        for index in remaining:
            address = messages[index].recipient.lower()
            if len(group) < size and address not in seen:
                group.append(index)
                seen.add(address)
            else:
                later.append(index)
        yield group
        remaining = later


def response_detail(response: requests.Response, limit: int = 300) -> str:
    """A short, single-line excerpt of an error answer for logs and the ledger."""
    try:
        text = response.text
    except Exception:  # noqa: BLE001 - undecodable bodies still need an error line
        return ""
    return " ".join(text.split())[:limit]


def retry_after(response: requests.Response, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date) or SendGrid's
    ``X-RateLimit-Reset`` (epoch seconds); None when the answer does not say."""
    now = time.time() if now is None else now
    raw = (response.headers.get("Retry-After") or "").strip()
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, when.timestamp() - now)
    reset = (response.headers.get("X-RateLimit-Reset") or "").strip()
    if reset:
        try:
            value = float(reset)
        except ValueError:
            return None
        # An epoch timestamp (SendGrid) or, from some gateways, a number of seconds.
        return max(0.0, value - now) if value > 10**9 else max(0.0, value)
    return None


def backoff(attempt: int) -> float:
    """1, 2, 4, 8 … seconds when the provider does not say how long to wait."""
    return float(min(30, 2 ** max(0, attempt - 1)))


def _connect_failure(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached the provider (safe to send again)."""
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.SSLError):
        return True
    if isinstance(exc, requests.ConnectionError):
        reason: Any = exc.args[0] if exc.args else None
        if isinstance(reason, MaxRetryError):
            reason = reason.reason
        return isinstance(reason, NewConnectionError | ConnectTimeoutError)
    return False


def _each(count: int, status: Status, error: str) -> list[Result]:
    return [Result(status, error=error) for _ in range(count)]


def check_endpoint(url: str) -> str:
    """Validate ``?endpoint=``: an absolute http(s) base URL, no trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise TransportError(
            f"MAILER_DSN option endpoint={url!r} must be an http(s) base URL such as "
            "https://api.eu.example.com"
        )
    return url.rstrip("/")


# ---- the transport -------------------------------------------------------------------------


class HttpTransport(Transport):
    """Base of the provider transports: session, timeouts, retries, per-message results."""

    #: The provider's public API base URL (``?endpoint=`` replaces it).
    default_base_url = ""

    def __init__(
        self,
        *,
        base_url: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        max_wait: float = DEFAULT_MAX_WAIT,
        user_agent: str = "LabourListMailer",
    ) -> None:
        self.base_url = check_endpoint(base_url or self.default_base_url)
        self.timeout = timeout
        self.max_wait = max_wait
        self.user_agent = user_agent
        self._session: requests.Session | None = None
        self._pending_stop: SendStopped | None = None
        #: How the transport waits; tests replace it to check waits without sleeping.
        self.sleep: Callable[[float], None] = time.sleep

    @staticmethod
    def http_options(dsn: Dsn, settings: Settings) -> dict[str, Any]:
        """The keyword arguments every provider reads the same way from the DSN."""
        endpoint = dsn.options.get("endpoint", "")
        return {
            "base_url": check_endpoint(endpoint) if endpoint else "",
            "timeout": dsn.float_option("timeout", DEFAULT_TIMEOUT),
            "max_wait": dsn.float_option("max_wait", DEFAULT_MAX_WAIT),
            "user_agent": settings.user_agent,
        }

    # ---- provider hooks ------------------------------------------------------------------
    def auth(self, session: requests.Session) -> None:
        """Put the credentials on the session (a header or basic auth)."""

    @abstractmethod
    def payloads(self, messages: list[Outgoing]) -> Iterable[tuple[list[int], Payload]]:
        """Split the messages into provider calls: (indices into `messages`, payload)."""

    @abstractmethod
    def build(self, messages: list[Outgoing]) -> Payload:
        """One payload for exactly these messages (used again for a partial re-send)."""

    def by_template(self, messages: list[Outgoing]) -> Iterator[tuple[list[int], Payload]]:
        """`payloads` for providers that substitute per-recipient values into shared content
        (SendGrid, Mailgun): messages of one template go together, at most `max_batch` and
        each address once per call; a message without a template goes alone."""
        groups: dict[int, list[int]] = {}
        for index, message in enumerate(messages):
            template = template_of(message)
            if template is None:
                yield [index], self.build([message])
            else:
                groups.setdefault(id(template), []).append(index)
        for indices in groups.values():
            subset = [messages[i] for i in indices]
            for group in unique_recipients(subset, self.max_batch):
                yield [indices[i] for i in group], self.build([subset[i] for i in group])

    # ---- Transport interface ---------------------------------------------------------------
    def open(self) -> bool:
        """Make the session; no network traffic (``check()`` is the credential test)."""
        if self._session is not None:
            return False
        session = requests.Session()
        session.headers["User-Agent"] = f"{self.user_agent} {self.name}-transport"
        session.headers["Accept"] = "application/json"
        self.auth(session)
        self._session = session
        return True

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def send(self, messages: list[Outgoing]) -> list[Result]:
        """One Result per message, in order. Raises `SendStopped` only before anything of
        this call reached the provider; a stop found later is raised by the next call
        instead, so the results of messages already accepted are never lost."""
        if self._pending_stop is not None:
            exc, self._pending_stop = self._pending_stop, None
            raise exc
        if not messages:
            return []
        self.open()
        results: list[Result | None] = [None] * len(messages)
        answered = False
        for indices, payload in self.payloads(messages):
            if self._pending_stop is not None:
                break
            try:
                outcome = self._call(payload)
            except SendStopped as exc:
                if not answered:
                    raise
                self._pending_stop = exc
                break
            answered = True
            for index, result in zip(indices, outcome, strict=True):
                results[index] = result
        return [r if r is not None else Result("retry", error=STOPPING) for r in results]

    # ---- one call --------------------------------------------------------------------------
    def _call(self, payload: Payload, *, rounds: int = 2) -> list[Result]:
        """Send one payload with the bounded retries. A request refused because of some of
        its recipients is sent again without them (SendGrid names them), or cut in halves
        until the culprit is alone (Mailgun does not): a refused request sent nothing."""
        response = self._request(payload)
        if isinstance(response, list):
            return response
        status = response.status_code
        if 200 <= status < 300:
            return payload.parse(response)
        messages = payload.messages
        partial = payload.parse_error(response)
        if partial is None:
            if payload.recipient_error(response):
                if len(messages) == 1:
                    return [Result("failed", error=f"{self.name} refused the recipient "
                                                   f"(HTTP {status}): {response_detail(response)}")]
                half = len(messages) // 2
                return self._in_parts([messages[:half], messages[half:]], rounds=rounds)
            raise SendStopped(
                f"{self.name} refused the request (HTTP {status}): "
                f"{response_detail(response) or response.reason}"
            )
        again = [i for i, r in enumerate(partial) if r is None]
        results: list[Result] = [
            r if r is not None else Result("retry", error=f"HTTP {status} for the batch")
            for r in partial
        ]
        if again and rounds > 0:
            retried = self._in_parts([[messages[i] for i in again]], rounds=rounds - 1)
            for index, result in zip(again, retried, strict=True):
                results[index] = result
        return results

    def _in_parts(self, groups: list[list[Outgoing]], *, rounds: int) -> list[Result]:
        """Results for several follow-up calls; a stop after one of them answered is kept
        for the next ``send()`` (see `send`)."""
        out: list[Result] = []
        for group in groups:
            if self._pending_stop is not None:
                out.extend(_each(len(group), "retry", STOPPING))
                continue
            try:
                out.extend(self._call(self.build(group), rounds=rounds))
            except SendStopped as exc:
                if not out:
                    raise
                self._pending_stop = exc
                out.extend(_each(len(group), "retry", STOPPING))
        return out

    def _request(self, payload: Payload) -> requests.Response | list[Result]:
        """The final answer to a payload (after 429/5xx retries), or the Results when the
        call could not complete."""
        session = self._session
        assert session is not None
        count = len(payload.messages)
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            req = payload.request()
            try:
                response = session.request(
                    req.method, self.base_url + req.path, json=req.json, data=req.data,
                    headers=req.headers or None, timeout=(CONNECT_TIMEOUT, self.timeout),
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                if not _connect_failure(exc):
                    error = (f"{self.name}: no answer after the request was sent "
                             f"({type(exc).__name__}); outcome unknown")
                    return _each(count, "ambiguous", error)
                error = f"{self.name} unreachable: {type(exc).__name__}"
                wait = backoff(attempt)
                if attempt <= MAX_RETRIES and waited + wait <= self.max_wait:
                    self.sleep(wait)
                    waited += wait
                    continue
                return _each(count, "retry", error)

            status = response.status_code
            if status in (401, 403):
                raise SendStopped(
                    f"{self.name} refused our credentials (HTTP {status}): check your API key"
                    + self.auth_hint(response)
                )
            if status in AMBIGUOUS_STATUSES:
                error = f"{self.name} answered HTTP {status}; the request may have been sent"
                return _each(count, "ambiguous", error)
            if status in RETRYABLE or status >= 500:
                told = retry_after(response)
                wait = told if told is not None else backoff(attempt)
                error = (f"{self.name} answered HTTP {status}"
                         + (f"; retry after {wait:.0f}s" if told is not None else "")
                         + (f": {response_detail(response, 120)}" if status != 429 else ""))
                if (status in RETRYABLE and attempt <= MAX_RETRIES
                        and waited + wait <= self.max_wait):
                    self.sleep(wait)
                    waited += wait
                    continue
                return _each(count, "retry", error)
            return response

    def auth_hint(self, response: requests.Response) -> str:
        """Extra words for a 401/403 (which key, which account)."""
        detail = response_detail(response, 160)
        return f" ({detail})" if detail else ""

    # ---- check -------------------------------------------------------------------------------
    def get_json(self, path: str) -> Any:
        """GET a credential/status endpoint for ``check()``; raise TransportError on failure."""
        fresh = self.open()
        session = self._session
        assert session is not None
        try:
            try:
                response = session.get(self.base_url + path,
                                       timeout=(CONNECT_TIMEOUT, self.timeout),
                                       allow_redirects=False)
            except requests.RequestException as exc:
                raise TransportError(
                    f"{self.name}: cannot reach {self.base_url} ({type(exc).__name__})"
                ) from None
            if response.status_code in (401, 403):
                raise TransportError(
                    f"{self.name} refused our credentials (HTTP {response.status_code}): "
                    "check your API key" + self.auth_hint(response)
                )
            if not 200 <= response.status_code < 300:
                raise TransportError(
                    f"{self.name}: {path} answered HTTP {response.status_code}: "
                    f"{response_detail(response) or response.reason}"
                )
            try:
                return response.json()
            except ValueError:
                raise TransportError(f"{self.name}: {path} did not answer JSON") from None
        finally:
            if fresh:
                self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url}>"
