"""Message stage: the edition's RFC 5322 message, built once and filled per recipient.

A send to 50,000 people must not build 50,000 `EmailMessage` objects or re-render the
template 50,000 times. `MessageTemplate.build` does all the expensive work once: it encodes
the common headers, quoted-printable-encodes both bodies and splits them at the
per-recipient placeholders. `fill` is then a `b"".join` of those byte segments with a few
small, freshly encoded values (To, Message-ID, List-Unsubscribe, greeting, links).

Two rules make the fill safe:

* every placeholder (a slot named with the edition's random key, see `mailer.placeholders`)
  is an unbreakable atom in the quoted-printable body: it sits on a line of
  its own between soft line breaks, so no soft break can ever split it, and the value that
  replaces it is itself quoted-printable encoded (``=`` becomes ``=3D``, long values get their
  own soft breaks), so every body line stays within 76 octets;
* every header value passes through `sanitize_header_value`, so no CR or LF from a name,
  subject or URL can ever start a new header.
"""

from __future__ import annotations

import html
import re
import secrets
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from urllib.parse import quote

from mailer.config import Settings
from mailer.mime import (
    CRLF,
    HEADER_NAME_RE,
    Segment,
    Slot,
    address_header,
    clean_address,
    clean_message_id,
    clean_name,
    clean_url,
    display_mailbox,
    encode_body,
    encode_mailbox,
    folded_text_header,
    header_line,
    idna,
    join_lines,
    merge_segments,
    normalise_newlines,
    qp_text_and_html,
    sanitize_header_value,
)
from mailer.placeholders import CLICK, GREETING, PREFERENCES_URL, UNSUBSCRIBE_URL, Placeholders

TEST_PREFIX = "[TEST] "
ONE_CLICK = "List-Unsubscribe=One-Click"

# ---- small, public helpers -------------------------------------------------------------------


TEST_BANNER = ("TEST: this copy went to you, not to readers. Its unsubscribe and preferences "
               "links open sample pages.")
_BODY_TAG = re.compile(r"<body\b[^>]*>", re.I)


def with_test_banner(html: str, text: str) -> tuple[str, str]:
    """A test send's body says it is one at the top, not only in the subject: a forwarded
    or screenshotted test must never pass for the edition readers got."""
    banner = ('<div role="note" style="background:#ffd400;color:#1f1f1f;font:bold 15px/1.4 '
              'Helvetica,Arial,sans-serif;padding:10px 16px;text-align:center;">'
              f"{TEST_BANNER}</div>")
    opened = _BODY_TAG.search(html)
    if opened is not None:
        html = html[:opened.end()] + banner + html[opened.end():]
    else:
        html = banner + html
    return html, f"*** {TEST_BANNER} ***\n\n{text}"


def greeting_for(name: str) -> str:
    """The greeting line: "Good morning, Siân", or just "Good morning" when we have no first
    name. Give it the reader's first name, never the whole name field."""
    return _greeting(clean_name(name))


def _greeting(clean_name: str) -> str:
    return f"Good morning, {clean_name}" if clean_name else "Good morning"


def new_message_id(settings: Settings, key: str) -> str:
    """A fresh, unique Message-ID on the sender's domain: ``<key.random@domain>``.

    Gmail refuses repeated Message-IDs (421 4.7.28), so every message, including a retry to
    the same person, gets a new one; `key` (say ``e12.s345``) only makes logs readable.
    """
    domain = parseaddr(settings.from_addr)[1].rpartition("@")[2].strip().lower()
    domain = re.sub(r"[^a-z0-9.-]", "", idna(domain)) or "localhost"
    safe_key = re.sub(r"[^A-Za-z0-9._-]", "-", key)[:64].strip(".") or "msg"
    return f"<{safe_key}.{secrets.token_hex(10)}@{domain}>"


def simple_message(
    settings: Settings,
    *,
    to: str,
    subject: str,
    text: str,
    html: str | None = None,
    headers: dict[str, str] | None = None,
    date: datetime | None = None,
) -> tuple[str, bytes]:
    """One-off messages (confirmation emails, staff alerts): a plain `EmailMessage` is fine
    here because there is one of them, not fifty thousand. Bodies are quoted-printable UTF-8,
    never base64 (SpamAssassin's MIME_BASE64_TEXT)."""
    message_id = new_message_id(settings, "msg")
    policy = SMTP.clone(max_line_length=76)  # quoted-printable lines of at most 76
    msg = EmailMessage(policy=policy)
    msg["From"] = sanitize_header_value(settings.from_addr)
    msg["To"] = sanitize_header_value(to)
    msg["Subject"] = sanitize_header_value(subject)
    msg["Date"] = format_datetime((date or datetime.now(UTC)).astimezone(UTC))
    msg["Message-ID"] = message_id
    if settings.reply_to:
        msg["Reply-To"] = sanitize_header_value(settings.reply_to)
    for key, value in (headers or {}).items():
        if not HEADER_NAME_RE.fullmatch(key):
            raise ValueError(f"not a valid header name: {key!r}")
        msg[key] = sanitize_header_value(value)
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return message_id, msg.as_bytes(policy=policy)


_CLICK_RE = re.compile(r"(?:\.[A-Za-z0-9_-]{1,40})?")


def _clean_click(value: str) -> str:
    """A per-reader link suffix is "." and base64url characters, or nothing: anything else
    would change where a link goes, so it is refused rather than cleaned."""
    if not _CLICK_RE.fullmatch(value):
        raise ValueError("a click suffix is '.' and a link token's characters")
    return value


# ---- the per-edition template ----------------------------------------------------------------

# A signed token as it may stand in a mailto URI unescaped (RFC 6068 unreserved characters).
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~-]{1,200}")

# The order in which `MessageTemplate.fill` computes the slots' values.
_FILL_ORDER: tuple[Slot, ...] = (
    ("header", "to"), ("header", "message_id"), ("header", "list_unsubscribe"),
    ("text", GREETING), ("html", GREETING),
    ("text", UNSUBSCRIBE_URL), ("html", UNSUBSCRIBE_URL),
    ("text", PREFERENCES_URL), ("html", PREFERENCES_URL),
    ("text", CLICK), ("html", CLICK),
)


class MessageTemplate:
    """Built once per edition: headers and both bodies pre-encoded as bytes with
    quoted-printable UTF-8; per-recipient fill is a join of pre-split byte segments — no
    EmailMessage and no template render per recipient.

    `html`, `text` and `subject` keep the placeholders (named by `placeholders`) for API
    providers that do their own substitution (see `fields` and `personalise`).
    """

    def __init__(
        self,
        *,
        settings: Settings,
        subject: str,
        html: str,
        text: str,
        date: datetime,
        test: bool,
        segments: list[Segment],
        placeholders: Placeholders,
    ) -> None:
        self.settings = settings
        self.placeholders = placeholders
        self.subject = subject
        self.html = html
        self.text = text
        self.date = date
        self.test = test
        self.from_addr = sanitize_header_value(settings.from_addr)
        mailto = sanitize_header_value(settings.unsubscribe_mailto)
        # The mailto's subject carries the reader's unsubscribe token
        # (`_list_unsubscribe_parts`), so `mailer unsubscribes ingest` knows whom a message sent
        # to it is about, whatever address it comes from.
        self._mailto = (f"<mailto:{quote(mailto, safe='@.+-_')}?subject=unsubscribe"
                        if mailto else "")
        self._segments = segments
        # fill() interleaves the fixed parts with the values in slot order: fixed, value,
        # fixed, ..., fixed (b"" where two slots or an end meet), two slice assignments in C
        # rather than a Python loop over the slots, for every recipient.
        self._fixed: list[bytes] = [b""]
        self._order: list[int] = []  # for each slot, its index in fill's tuple of values
        for seg in segments:
            if isinstance(seg, bytes):
                self._fixed[-1] += seg
            else:
                self._order.append(_FILL_ORDER.index(seg))
                self._fixed.append(b"")
        for seg in segments:
            if isinstance(seg, bytes) and (seg.startswith(b".") or b"\n." in seg):
                raise ValueError("the encoded message has a line starting with a dot")

    @classmethod
    def build(
        cls,
        *,
        settings: Settings,
        subject: str,
        html: str,
        text: str,
        date: datetime,
        placeholders: Placeholders,
        test: bool = False,
    ) -> MessageTemplate:
        """Encode everything that is the same for every recipient, once. `placeholders`
        names the slots the edition was rendered with: only those are filled."""
        if date.tzinfo is None:
            raise ValueError("the message Date needs an aware datetime")
        subject = sanitize_header_value(subject)
        if test and not subject.startswith(TEST_PREFIX):
            subject = TEST_PREFIX + subject
        if test:
            html, text = with_test_banner(html, text)
        html = normalise_newlines(html)
        text = normalise_newlines(text)
        boundary = "=_LL" + secrets.token_hex(12)  # "=_" never occurs in quoted-printable

        segments: list[Segment] = []
        segments.append(join_lines([address_header("From", settings.from_addr)]))
        segments.append(("header", "to"))
        head = [folded_text_header("Subject", subject)]
        head.append(f"Date: {format_datetime(date)}")
        segments.append(join_lines(head))
        segments.append(("header", "message_id"))
        head = []
        if settings.reply_to:
            head.append(address_header("Reply-To", settings.reply_to))
        head.append("MIME-Version: 1.0")
        head.append(address_header("List-Id", settings.list_id, bare=True))
        segments.append(join_lines(head))
        segments.append(("header", "list_unsubscribe"))
        head = [f"List-Unsubscribe-Post: {ONE_CLICK}"]
        if test:
            head.append("X-Mailer-Test: yes")
        head.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
        segments.append(join_lines(head) + CRLF)  # blank line: end of the header block

        dash = f"--{boundary}".encode("ascii")
        for part, subtype, body in (("text", "plain", text), ("html", "html", html)):
            segments.append(
                dash + CRLF
                + f"Content-Type: text/{subtype}; charset=utf-8".encode("ascii") + CRLF
                + b"Content-Transfer-Encoding: quoted-printable" + CRLF + CRLF
            )
            segments.extend(encode_body(part, body, placeholders))
            segments.append(CRLF)
        segments.append(dash + b"--" + CRLF)

        return cls(settings=settings, subject=subject, html=html, text=text, date=date,
                   test=test, segments=merge_segments(segments), placeholders=placeholders)

    # -- per recipient --------------------------------------------------------------------

    def fill(
        self,
        *,
        email: str,
        name: str,
        unsubscribe_url: str,
        preferences_url: str,
        message_id: str,
        click: str = "",
        first_name: str | None = None,
    ) -> bytes:
        """The complete message for one recipient, ready for SMTP DATA as it is: CRLF line
        endings and no line that starts with a dot (so no dot-stuffing copy per recipient).

        `name` is the To header's display name; the greeting uses `first_name` (the reader's
        own, "" for a plain "Good morning"), or `name` when it is not given."""
        email = clean_address(email)
        name = clean_name(name)
        greeting = _greeting(name if first_name is None else clean_name(first_name))
        unsubscribe_url = clean_url(unsubscribe_url)
        message_id = clean_message_id(message_id)
        values = (  # in _FILL_ORDER
            header_line("To", encode_mailbox(name, email, "To")),
            header_line("Message-ID", message_id),
            header_line("List-Unsubscribe", self._fold_list_unsubscribe(unsubscribe_url)),
            *qp_text_and_html(greeting),
            *qp_text_and_html(unsubscribe_url),
            *qp_text_and_html(clean_url(preferences_url)),
            *qp_text_and_html(_clean_click(click)),
        )
        # Encoding rules out a value that starts a line with a dot; checked (each value as if
        # it started a line) because SMTP sends the result as it is.
        if b"\n." in b"\n".join(values):
            raise ValueError("a filled value would start a line with a dot")
        parts = [b""] * (2 * len(self._fixed) - 1)
        parts[0::2] = self._fixed
        parts[1::2] = [values[i] for i in self._order]
        return b"".join(parts)

    def fields(
        self,
        *,
        email: str,
        name: str,
        unsubscribe_url: str,
        preferences_url: str,
        message_id: str,
        click: str = "",
        first_name: str | None = None,
    ) -> dict[str, str]:
        """The per-recipient values as plain strings, for API providers that take JSON.

        ``greeting`` is plain text: HTML-escape it before substituting it into `html`
        (`personalise` does both parts correctly).
        """
        email = clean_address(email)
        name = clean_name(name)
        unsubscribe_url = clean_url(unsubscribe_url)
        return {
            "to": display_mailbox(name, email),
            "greeting": _greeting(name if first_name is None else clean_name(first_name)),
            "unsubscribe_url": unsubscribe_url,
            "preferences_url": clean_url(preferences_url),
            "click": _clean_click(click),
            "message_id": clean_message_id(message_id),
            "list_unsubscribe": ", ".join(self._list_unsubscribe_parts(unsubscribe_url)),
        }

    def personalise(
        self, *, name: str, unsubscribe_url: str, preferences_url: str, click: str = ""
    ) -> tuple[str, str]:
        """(text, html) with the placeholders filled, for API providers that want finished
        bodies per message (Postmark batch). Values are HTML-escaped for the HTML part."""
        raw = {
            GREETING: greeting_for(name),
            UNSUBSCRIBE_URL: clean_url(unsubscribe_url),
            PREFERENCES_URL: clean_url(preferences_url),
            CLICK: _clean_click(click),
        }
        escaped = {field: html.escape(value, quote=True) for field, value in raw.items()}
        return self.placeholders.fill(self.text, raw), self.placeholders.fill(self.html, escaped)

    def common_headers(self) -> dict[str, str]:
        """Headers that are the same for every recipient and that API providers must pass
        through as custom headers (From, To, Subject and Date they set themselves)."""
        headers = {
            "List-Id": sanitize_header_value(self.settings.list_id),
            "List-Unsubscribe-Post": ONE_CLICK,
        }
        if self.settings.reply_to:
            headers["Reply-To"] = sanitize_header_value(self.settings.reply_to)
        if self.test:
            headers["X-Mailer-Test"] = "yes"
        return headers

    def list_unsubscribe(self, unsubscribe_url: str) -> str:
        """RFC 8058 / RFC 2369 value: the one-click HTTPS link first, then the mailto."""
        return ", ".join(self._list_unsubscribe_parts(clean_url(unsubscribe_url)))

    def _list_unsubscribe_parts(self, clean_url: str) -> list[str]:
        if not self._mailto:
            return [f"<{clean_url}>"]
        path, _, token = clean_url.rpartition("/")
        if path.endswith("/unsubscribe") and _TOKEN_CHARS.fullmatch(token):
            return [f"<{clean_url}>", f"{self._mailto}%20{token}>"]
        return [f"<{clean_url}>", f"{self._mailto}>"]

    def _fold_list_unsubscribe(self, clean_url: str) -> str:
        # Fold only at the comma between the two URIs: a URI must never be broken, and
        # Python's own folder would RFC 2047-encode a long one.
        parts = self._list_unsubscribe_parts(clean_url)
        one_line = ", ".join(parts)
        if len("List-Unsubscribe: ") + len(one_line) <= 78:
            return one_line
        return ",\r\n ".join(parts)
