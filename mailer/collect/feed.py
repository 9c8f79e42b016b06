"""A feed document: bytes in, feedparser entries out, or one line saying why it is not a feed.

RSS2, Atom 1.0 and RSS 1.0 (RDF) all arrive as feedparser entries and go through the same
rules; WordPress serves the same posts as all three (`/feed/`, `/feed/atom/`, `/feed/rdf/`).
feedparser's own sanitiser and URL rewriting are switched off: the one HTML policy is
`mailer.collect.clean`'s.
"""

from __future__ import annotations

import logging
import xml.parsers.expat
import xml.sax
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import feedparser

from mailer.errors import FeedError

log = logging.getLogger(__name__)

# XML 1.0 forbids these control characters; a stray one pasted into a post breaks the whole feed.
_XML_ILLEGAL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 13))


class FeedFailure(FeedError):
    """A FeedError that also carries the HTTP status to record (0 when there was none)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(_one_line(message))
        self.status = status


def parse_feed(body: bytes, url: str, content_type: str = "") -> feedparser.FeedParserDict:
    """Parse a feed document, or raise FeedError saying in one line why it is not a feed.

    Two repairs are tried before giving up, because they are the usual ways a WordPress feed
    breaks while its items are fine: output before the XML declaration (a PHP notice, blank
    lines from a plugin) and control characters pasted into a post. Anything else that is not
    well-formed XML is refused rather than half-read by the lenient parser.
    """
    if not body.strip():
        raise FeedFailure(f"feed {url} answered with an empty body")
    parsed = _feedparse(body, url)
    if parsed is None or _not_well_formed(parsed):
        repaired = _repair(body)
        if repaired != body:
            second = _feedparse(repaired, url)
            if second is not None and not _not_well_formed(second):
                log.warning("feed %s was not well-formed XML; parsed after removing stray "
                            "output or control characters", url)
                parsed = second
    if parsed is None:
        where = _expat_error(body)
        if where:
            raise FeedFailure(f"feed {url} is not well-formed XML ({where})")
        raise FeedFailure(f"feed {url} could not be parsed as RSS/Atom")
    if not parsed.get("version"):
        got = _describe_document(body, content_type)
        raise FeedFailure(f"feed {url} is not RSS/Atom (got {got})")
    if _not_well_formed(parsed):
        where = _where(parsed.get("bozo_exception"))
        raise FeedFailure(f"feed {url} is not well-formed XML ({where})")
    if not parsed.entries and not parsed.feed:
        # RSS keeps everything inside <channel>; Atom's <feed> is the document element itself.
        what = "an empty <feed>" if str(parsed.version).startswith("atom") else "no channel"
        raise FeedFailure(f"feed {url} has {what}")
    return parsed


def entry_key(entry: Any) -> str:
    """What makes two entries the same post, across pages."""
    return str(entry.get("id") or entry.get("link") or entry.get("title") or "")


def entry_date(entry: Any) -> datetime | None:
    """pubDate as aware UTC; feedparser has already converted any offset to UTC."""
    stamp = entry.get("published_parsed") or entry.get("updated_parsed")
    if not stamp:
        return None
    try:
        year, month, day, hour, minute, second = stamp[:6]
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def _feedparse(body: bytes, url: str) -> feedparser.FeedParserDict | None:
    # Bytes, never str: a str that looks like a path or URL would make feedparser open it.
    # No Content-Type is passed so the XML declaration decides the encoding. The location
    # lets feedparser make a relative <link> absolute; relative URLs inside the HTML are left
    # for sanitize_html, which resolves them against the post's own link.
    headers = {"content-location": url} if urlsplit(url).scheme in ("http", "https") else {}
    try:
        return feedparser.parse(body, sanitize_html=False, resolve_relative_uris=False,
                                response_headers=headers)
    except Exception as exc:  # feedparser itself can trip over badly broken input
        log.warning("feedparser failed on %s: %r", url, exc)
        return None


def _expat_error(body: bytes) -> str:
    """Where the document stops being well-formed XML, as "line L, column C: reason"."""
    parser = xml.parsers.expat.ParserCreate()
    try:
        parser.Parse(body, True)
    except xml.parsers.expat.ExpatError as exc:
        reason = xml.parsers.expat.ErrorString(exc.code) if exc.code else "parse error"
        return f"line {exc.lineno}, column {exc.offset}: {reason}"
    return ""


def _not_well_formed(parsed: feedparser.FeedParserDict) -> bool:
    return bool(parsed.get("bozo")) and isinstance(parsed.get("bozo_exception"),
                                                   xml.sax.SAXException)


def _repair(body: bytes) -> bytes:
    if b"\x00" not in body:  # UTF-16/32 would contain NULs; those bytes are not ours to drop
        body = body.translate(None, _XML_ILLEGAL_BYTES)
    start = body.find(b"<?xml")
    if start > 0:
        body = body[start:]
    return body


def _where(exc: object) -> str:
    if isinstance(exc, xml.sax.SAXParseException):
        return f"line {exc.getLineNumber()}, column {exc.getColumnNumber()}: {exc.getMessage()}"
    return _one_line(str(exc)) or "parse error"


def _describe_document(body: bytes, content_type: str) -> str:
    mime = content_type.split(";", 1)[0].strip().lower()
    head = body.lstrip()[:200].lower()
    looks_html = head.startswith((b"<!doctype html", b"<html")) or b"<html" in head
    if looks_html and "html" not in mime:
        return f"an HTML page served as {mime}" if mime else "an HTML page"
    return mime or "a document that is not a feed"


def _one_line(text: str) -> str:
    return " ".join(text.split())
