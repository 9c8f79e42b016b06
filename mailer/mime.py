"""MIME and RFC 5322 encoding for the message stage: quoted-printable bodies split at their
placeholders, header lines, encoded words, and the clean-up of names, addresses, URLs and
Message-IDs before they go into a header.

`mailer.message` builds an edition's template and fills it per recipient with these; they
are pure functions of their arguments, so each rule about the wire format is tested here
once, whichever message uses it.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import unicodedata
from email.header import Header
from email.message import Message
from email.utils import parseaddr
from urllib.parse import quote, urlsplit

from mailer.placeholders import Placeholders

CRLF = b"\r\n"
SOFT_BREAK = b"=\r\n"
MAX_NAME = 200          # the subscribers.name column; longer input is cut, not refused
MAX_DISPLAY_NAME = 120  # in To: keeps even a 4-byte-per-character name's line under 998
MAX_ADDRESS = 254       # RFC 5321 forward-path limit, less the angle brackets
MAX_HEADER_LINE = 998   # RFC 5322 section 2.1.1

# Line breaks and other "space-like" controls become one space so words do not run together;
# the remaining C0/C1 controls (and DEL) are dropped.
_BREAKS_RE = re.compile(r"[\t\n\v\f\r\x1c-\x1e\x85\u2028\u2029]+")
_CONTROLS_RE = re.compile(r"[\x00-\x08\x0e-\x1b\x1f\x7f-\x9f]")
_ADDR_BAD_RE = re.compile(r"[\s<>()\[\],;:\"\\]")
HEADER_NAME_RE = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext
_PLAIN_PHRASE_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/^_`{|}~ -]+")  # atext and spaces, no "=?"
_ATOM_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/^_`{|}~-]+")  # atext without "=" and "?"
_Q_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_MSGID_RE = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")
# Addresses and Message-IDs the clean-up steps would return unchanged (the usual case; SMTP
# writes such addresses into its commands as they are).
_PLAIN_ADDRESS = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+"
PLAIN_ADDRESS_RE = re.compile(_PLAIN_ADDRESS)
_PLAIN_MSGID_RE = re.compile(f"<{_PLAIN_ADDRESS}>")
_PLAIN_URL_RE = re.compile(
    r"https?://[A-Za-z0-9.-]+(?::[0-9]+)?(?:[/?#][A-Za-z0-9!#$%&'()*+,\-./:;=?@\[\]_~]*)?"
)

# A slot is where a per-recipient value goes: ("header", name) or (part, field), the field
# being one of `mailer.placeholders.FIELDS`.
Slot = tuple[str, str]
Segment = bytes | Slot


def sanitize_header_value(value: str) -> str:
    """Make `value` safe for a header line: no CR, LF or other control character survives.

    Defence in depth: values are checked at the door too, but a header is the one place where
    a stray line break lets an attacker add recipients (``Bcc:``) or forge headers. Line breaks
    and tabs collapse to a single space (so "a\\nb" reads "a b"), other controls are removed,
    and surrounding whitespace is trimmed.
    """
    value = _BREAKS_RE.sub(" ", str(value))
    value = _CONTROLS_RE.sub("", value)
    return value.strip()


def normalise_newlines(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


def _qp(data: str) -> bytes:
    """Quoted-printable with CRLF line ends, lines of at most 76 octets, and no line that
    starts with a dot (see `_escape_leading_dots`)."""
    encoded = binascii.b2a_qp(data.encode("utf-8"), istext=True)
    if encoded.startswith(b".") or b"\n." in encoded:
        encoded = _escape_leading_dots(encoded)
    return encoded.replace(b"\n", CRLF)


def _escape_leading_dots(encoded: bytes) -> bytes:
    """Write a dot that starts a line as "=2E" (quoted-printable allows encoding any octet).

    SMTP DATA would need such a line dot-stuffed, which costs a copy of the whole ~50 KB
    message per recipient; a message built without them goes on the wire as it is.
    """
    lines = encoded.split(b"\n")
    for index, line in enumerate(lines):
        if line.startswith(b"."):
            lines[index] = _rewrap(line, 76, b"\n")
    return b"\n".join(lines)


def _rewrap(line: bytes, limit: int, newline: bytes) -> bytes:
    """One encoded line as soft-broken lines of at most `limit` octets, none starting with a
    dot; never splits an "=XX" escape. Each round shortens what is left, so it ends."""
    out: list[bytes] = []
    while True:
        if line.startswith(b"."):
            line = b"=2E" + line[1:]
        if len(line) <= limit:
            out.append(line)
            return newline.join(out)
        cut = limit - 3
        while cut > 3 and b"=" in line[cut - 2:cut]:
            cut -= 1  # do not split "=XX"
        out.append(line[:cut] + b"=")
        line = line[cut:]


def _qp_open_end(encoded: bytes) -> bytes:
    """Make room for a soft line break after `encoded`: binascii lets the last line run to
    76 octets, and the "=" that follows must not make it 77."""
    start = encoded.rfind(CRLF) + 2 if CRLF in encoded else 0
    last = encoded[start:]
    if len(last) <= 75:
        return encoded
    return encoded[:start] + _rewrap(last, 75, CRLF)


def _qp_value(value: str) -> bytes:
    """Encode one fill value; values never contain line breaks (they are sanitised)."""
    if value and value.isascii() and "=" not in value and (
        value.isprintable() and not value.endswith((" ", "\t")) and not value.startswith(".")
    ):
        # The common case (names, links): nothing to escape, only long lines to break.
        encoded = value.encode("ascii")
        if len(encoded) <= 75:
            return encoded
        if len(encoded) <= 147 and encoded[72:73] != b".":
            # What `_rewrap` makes of it (no "=" to keep whole): one soft break, as most links
            # need (an unsubscribe link is about 80 characters).
            return encoded[:72] + SOFT_BREAK + encoded[72:]
        return _rewrap(encoded, 75, CRLF)
    return _qp_open_end(_qp(value))


def qp_text_and_html(value: str) -> tuple[bytes, bytes]:
    """A fill value encoded for the text part and, HTML-escaped, for the HTML part (the
    same bytes when escaping changes nothing, as for names and links almost always)."""
    encoded = _qp_value(value)
    if "&" in value or "<" in value or ">" in value or '"' in value or "'" in value:
        return encoded, _qp_value(html.escape(value, quote=True))
    return encoded, encoded


def encode_body(part: str, body: str, placeholders: Placeholders) -> list[Segment]:
    """Quoted-printable encode `body`, each placeholder becoming a slot on a line of its own.

    A soft line break goes before a placeholder (unless it starts a line) and after it (unless
    it ends one), so the literal text around it is encoded as if it started at column 0 and no
    soft break can fall inside the placeholder.
    """
    out: list[Segment] = []
    pieces = placeholders.pattern.split(body)
    for index, piece in enumerate(pieces):
        if index % 2:  # a placeholder
            previous = out[-1] if out else CRLF
            if not (isinstance(previous, bytes) and previous.endswith(CRLF)):
                if isinstance(previous, bytes):
                    out[-1] = _qp_open_end(previous)
                out.append(SOFT_BREAK)
            out.append((part, placeholders.fields[piece]))
            following = pieces[index + 1] if index + 1 < len(pieces) else "\n"
            if not following.startswith("\n"):
                out.append(SOFT_BREAK)
        elif piece:
            out.append(_qp(piece))
    return out


def merge_segments(segments: list[Segment]) -> list[Segment]:
    """Join adjacent byte strings so a fill joins as few pieces as possible."""
    merged: list[Segment] = []
    for seg in segments:
        if isinstance(seg, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] = merged[-1] + seg
        else:
            merged.append(seg)
    return merged


def join_lines(lines: list[str]) -> bytes:
    """Header lines to bytes; refuses any line break that is not a fold (defence in depth)."""
    for line in lines:
        unfolded = line.replace("\r\n ", " ")
        if "\r" in unfolded or "\n" in unfolded:
            raise ValueError("line break in a header value")
    return b"".join(line.encode("ascii") + CRLF for line in lines)


def header_line(name: str, value: str) -> bytes:
    line = f"{name}: {value}"
    if len(line) > MAX_HEADER_LINE and any(
            len(chunk) > MAX_HEADER_LINE for chunk in line.split("\r\n")):
        raise ValueError(f"{name} header too long")
    return line.encode("ascii") + CRLF


def folded_text_header(name: str, value: str) -> str:
    """Fold an unstructured header (Subject) at spaces; RFC 2047-encode it when it is not
    ASCII (or could be mistaken for encoded words). `email.header.Header` keeps the spaces
    inside the encoded words; the policy folder can drop one between two encoded words."""
    if not value.isascii() or "=?" in value:
        words = Header(value, "utf-8", header_name=name).encode(linesep="\r\n", maxlinelen=78)
        return f"{name}: {words}"
    out = f"{name}:"
    line_len = len(out)
    for index, word in enumerate(value.split(" ")):
        if word and index and line_len + 1 + len(word) > 78:
            out += "\r\n " + word  # the fold's space is the original space
            line_len = 1 + len(word)
        else:
            out += " " + word
            line_len += 1 + len(word)
    if any(len(line) > MAX_HEADER_LINE for line in out.split("\r\n")):
        raise ValueError(f"{name} header has a word too long to fold")
    return out


def address_header(name: str, value: str, *, bare: bool = False) -> str:
    """Encode a `Name <addr>` header value from configuration (From, Reply-To, List-Id)."""
    value = sanitize_header_value(value)
    display, addr = parseaddr(value)
    if not addr:
        raise ValueError(f"{name}: cannot read an address in {value!r}")
    addr = clean_address(addr, allow_no_at=bare)
    display = clean_name(display)
    if bare and not display:
        return f"{name}: <{addr}>"  # RFC 2919 needs the angle brackets
    return f"{name}: {encode_mailbox(display, addr, name)}"


def encode_mailbox(name: str, addr: str, header: str = "To") -> str:
    """`Name <addr>` in ASCII, folded at spaces so lines stay within 78 where possible.

    An ASCII name is an atom sequence or a quoted string. A non-ASCII name keeps its plain
    ASCII words as they are and turns each run of other words into ONE encoded word, spaces
    included: RFC 2047 decoders drop the whitespace between two adjacent encoded words while
    Python's address parser keeps it, so never putting two encoded words side by side is the
    one form every decoder reads back identically. (A very long run makes an encoded word over
    75 characters; decoders accept that, and it is far better than a lost or doubled space.)
    """
    if not name:
        return addr
    if _PLAIN_PHRASE_RE.fullmatch(name):
        if len(header) + len(name) + len(addr) + 5 <= 78:
            return f"{name} <{addr}>"  # what the folding below makes of it, in one line
        tokens = name.split(" ")
    elif name.isascii():
        tokens = ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    else:
        tokens = []
        run: list[str] = []
        for word in name[:MAX_DISPLAY_NAME].rstrip().split(" "):
            if _ATOM_RE.fullmatch(word):
                if run:
                    tokens.append(_encoded_word(" ".join(run)))
                    run = []
                tokens.append(word)
            else:
                run.append(word)
        if run:
            tokens.append(_encoded_word(" ".join(run)))
    tokens.append(f"<{addr}>")
    out = ""
    line_len = len(header) + 1
    for token in tokens:
        if out and line_len + 1 + len(token) > 78:
            out += "\r\n " + token
            line_len = 1 + len(token)
        else:
            out += (" " if out else "") + token
            line_len += 1 + len(token)
    return out


def display_mailbox(name: str, addr: str) -> str:
    """`"Name" <addr>` unencoded (UTF-8 as is), for JSON APIs that do their own encoding."""
    if not name:
        return addr
    if _PLAIN_PHRASE_RE.fullmatch(name):
        return f"{name} <{addr}>"
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}" <{addr}>'


def _encoded_word(text: str) -> str:
    """One RFC 2047 encoded word for a phrase: Q or B, whichever is shorter."""
    raw = text.encode("utf-8")
    q = "".join(
        chr(b) if chr(b) in _Q_SAFE else "_" if b == 0x20 else f"={b:02X}" for b in raw
    )
    b64 = base64.b64encode(raw).decode("ascii")
    return f"=?utf-8?q?{q}?=" if len(q) <= len(b64) else f"=?utf-8?b?{b64}?="


def clean_name(name: str | None) -> str:
    if not name:
        return ""
    if (name.isascii() and name.isprintable() and len(name) <= MAX_NAME and "  " not in name
            and name[0] != " " and name[-1] != " "):
        return name  # what the steps below would return unchanged, at a tenth of the cost
    # A name is filled into the joined bytes and never scanned for slots again, and the
    # slots' names are random per edition: it needs no placeholder filtering.
    name = sanitize_header_value(name)
    name = " ".join(unicodedata.normalize("NFC", name).split())
    return name[:MAX_NAME].strip()


def idna(domain: str) -> str:
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"cannot encode the domain {domain!r}") from None


def clean_address(email: str, *, allow_no_at: bool = False) -> str:
    """A bare ASCII addr-spec, or ValueError: a recipient can never carry a second address
    or a header into the To line."""
    if len(email) <= MAX_ADDRESS and PLAIN_ADDRESS_RE.fullmatch(email):
        return email
    email = sanitize_header_value(email)
    local, at, domain = email.rpartition("@")
    if not at:
        if allow_no_at and email and not _ADDR_BAD_RE.search(email):
            return idna(email)  # a List-Id such as daily.labourlist.org
        raise ValueError(f"not an email address: {email!r}")
    if not local or not domain or _ADDR_BAD_RE.search(email) or "@" in local:
        raise ValueError(f"not an email address: {email!r}")
    if not local.isascii():
        raise ValueError(f"address needs SMTPUTF8, not supported: {email!r}")
    addr = f"{local}@{idna(domain)}"
    if len(addr) > MAX_ADDRESS:
        raise ValueError("email address too long")
    return addr


def clean_url(url: str) -> str:
    """An absolute http(s) URL with nothing that could close `<...>` or an HTML attribute."""
    if _PLAIN_URL_RE.fullmatch(url):
        return url  # only characters `quote` keeps: the steps below would not change it
    url = sanitize_header_value(url)
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    return quote(url, safe="!#$%&'()*+,-./:;=?@[]_~")


def clean_message_id(message_id: str) -> str:
    if len(message_id) <= 250 and _PLAIN_MSGID_RE.fullmatch(message_id):
        return message_id
    message_id = sanitize_header_value(message_id)
    if not message_id.startswith("<"):
        message_id = f"<{message_id}>"
    if (not message_id.isascii() or not _MSGID_RE.fullmatch(message_id)
            or len(message_id) > 250):
        raise ValueError(f"not a Message-ID: {message_id!r}")
    return message_id


def part_text(part: Message, *, limit: int | None = None, charset: str = "") -> str:
    """A leaf part's payload as text: its transfer encoding undone, then decoded by `charset`,
    else the one it names (UTF-8 when it names none we know), bad bytes replaced. At most
    `limit` characters (None: all of it), and no more bytes decoded than could make them.

    The one MIME text decoder: for bounces and unsubscribe mail (a stranger's message must read
    as some text, never raise, whatever encoding or charset it claims) and for preflight's
    reading of our own sample message."""
    payload = part.get_payload(decode=True)  # bytes for a leaf part, None for a multipart
    data = payload if isinstance(payload, bytes) else b""
    if limit is not None:
        data = data[:limit * 4]
    try:
        text = data.decode(charset or part.get_content_charset() or "utf-8", "replace")
    except LookupError:
        text = data.decode("utf-8", "replace")
    return text if limit is None else text[:limit]
