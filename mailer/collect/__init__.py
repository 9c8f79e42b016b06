"""Collect: fetch the WordPress feed, page back through the window, store each article once.

Why it is shaped this way:

- Every page is fetched and parsed before anything is written, and all article writes happen in
  one transaction, so an unreachable or malformed feed changes nothing ("nothing lost or
  half-done"). A failure is recorded in `FeedState` in a transaction of its own so that
  `mailer status` can show it.
- The conditional-GET validators (ETag, Last-Modified) are saved in the same transaction as the
  articles they describe. Saving them after a failed run would make the next run get a 304 and
  never see those articles.
- An article's `published_at` is fixed the first time it is seen: WordPress may bump the date of
  an edited post, and an article must appear in at most one edition.
- All HTML goes through one allow-list sanitiser (nh3). feedparser's own sanitiser and URL
  rewriting are switched off so that there is exactly one policy, and the tests check that policy.
- `feed_timeout` bounds the whole fetch, every page, not each read (`mailer.deadline`): a server
  that drips a byte a second never trips a read timeout, and the send waits on this fetch.
- RSS2, Atom 1.0 and RSS 1.0 (RDF) all arrive as feedparser entries and go through the same
  rules; WordPress serves the same posts as all three (`/feed/`, `/feed/atom/`, `/feed/rdf/`).
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
import time
import xml.parsers.expat
import xml.sax
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urljoin, urlsplit, urlunsplit
from urllib.request import url2pathname

import feedparser
import nh3
import requests
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from mailer.app import App
from mailer.config import Settings
from mailer.deadline import Deadline
from mailer.errors import FeedError
from mailer.models import Article, FeedState

log = logging.getLogger(__name__)

# ---- the sanitising policy ----------------------------------------------------------------

ALLOWED_TAGS = frozenset(
    {"p", "a", "em", "strong", "b", "i", "ul", "ol", "li", "blockquote", "br",
     "h2", "h3", "h4", "img", "figure", "figcaption"}
)
ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
}
# Removed together with everything inside them: their content is code, styling or embedded
# documents, never text a reader should see in an email.
REMOVED_WITH_CONTENT = frozenset(
    {"script", "style", "iframe", "object", "embed", "noembed", "template", "svg", "math",
     "form", "select", "textarea", "button"}
)
URL_SCHEMES = frozenset({"http", "https"})

# Excerpts in the email are "about 300 characters": long enough for two sentences.
SUMMARY_CHARS = 300
# A WordPress page of ten full posts is a few hundred kilobytes; anything this big is not a feed.
MAX_FEED_BYTES = 20 * 1024 * 1024
ACCEPT = "application/rss+xml, application/atom+xml;q=0.9, application/xml;q=0.8, */*;q=0.1"
DEFAULT_SECTION = "News"

# XML 1.0 forbids these control characters; a stray one pasted into a post breaks the whole feed.
_XML_ILLEGAL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 13))


def _column_length(model: Any, name: str) -> int:
    """The String() length of a column, so truncation follows the schema rather than a guess."""
    length = getattr(model.__table__.c[name].type, "length", None)
    return int(length) if length else 10_000


TITLE_MAX = _column_length(Article, "title")
LINK_MAX = _column_length(Article, "link")
GUID_MAX = _column_length(Article, "guid")
AUTHOR_MAX = _column_length(Article, "author")
IMAGE_MAX = _column_length(Article, "image_url")
SECTION_MAX = _column_length(Article, "section")
ETAG_MAX = _column_length(FeedState, "etag")
LAST_MODIFIED_MAX = _column_length(FeedState, "last_modified")


# ---- public API ----------------------------------------------------------------------------


@dataclass
class CollectResult:
    pages: int  # feed pages fetched (0 when the first page answered 304)
    new: int  # articles inserted
    updated: int  # existing guids whose stored fields changed (edited posts)
    skipped: int  # items skipped (Daily email category, bad link, no date, before `since`)
    not_modified: bool  # first page answered 304
    status: int  # HTTP status of the first page (0 for a local file)


@dataclass
class Fetched:
    """One HTTP (or file) response, read in full; validators exactly as the server sent them."""

    url: str
    status: int
    body: bytes = b""
    content_type: str = ""
    etag: str = ""
    last_modified: str = ""


def collect(app: App, *, since: datetime | None = None) -> CollectResult:
    """Fetch app.settings.feed_url and store its articles.

    `since` (aware) is how far back to page: ?paged=2, 3 ... are followed while the oldest item
    on the last page fetched is still newer than `since`, up to settings.feed_max_pages; a 404
    on a later page means the end. Items older than `since` are skipped. Defaults to
    now - window_cap_hours, the furthest back any edition window can reach.

    Raises FeedError (one line) when the feed cannot be fetched or parsed; then no article is
    written and the error is recorded in FeedState.
    """
    settings = app.settings
    now = app.clock.now()
    if since is None:
        since = now - timedelta(hours=settings.window_cap_hours)
    elif since.tzinfo is None:
        raise ValueError("collect(since=...) needs an aware datetime")
    since = since.astimezone(UTC)
    url = settings.feed_url.strip()

    etag, last_modified = _validators(app, url)
    try:
        run = _fetch_pages(url, settings, since, etag=etag, last_modified=last_modified)
    except _FetchFailed as exc:
        _record_failure(app, url, now, str(exc), exc.status)
        raise

    if run.not_modified:
        _record_success(app, url, now, run)
        log.info("feed %s not modified (304)", url)
        return CollectResult(pages=0, new=0, updated=0, skipped=0, not_modified=True,
                             status=run.status)

    items, skipped = _items_from_entries(run.entries, settings, since)
    new, updated = _store(app, url, now, run, items)
    log.info("feed %s: %d page(s), %d new, %d updated, %d skipped",
             url, run.pages, new, updated, skipped)
    return CollectResult(pages=run.pages, new=new, updated=updated, skipped=skipped,
                         not_modified=False, status=run.status)


def section_for(categories: Sequence[str], settings: Settings) -> str:
    """The email section of an article: its first category that names a configured section.

    WordPress mixes sections and one-off tags in `<category>`; only configured sections may
    become headings in the email, in their configured spelling.
    """
    canonical: dict[str, str] = {}
    for name in settings.sections:
        canonical.setdefault(name.strip().casefold(), name.strip())
    for category in categories:
        hit = canonical.get(category.strip().casefold())
        if hit:
            return hit
    return DEFAULT_SECTION


def fetch_feed_text(
    url: str,
    settings: Settings,
    *,
    etag: str = "",
    last_modified: str = "",
    session: requests.Session | None = None,
    deadline: Deadline | None = None,
) -> Fetched:
    """GET one feed page with the configured timeout and User-Agent.

    Validators are sent back byte for byte: WordPress compares them exactly, and with both
    present both must match for a 304. The HTTP status is returned, not judged, because a 404
    means "error" on page 1 but "past the end" on page 3. Transport failures raise FeedError.

    `deadline` is the whole fetch's (see `_fetch_pages`) and `session` one it is mounted on;
    pass both or neither (then this page alone gets `feed_timeout`).
    """
    headers = {"User-Agent": settings.user_agent, "Accept": ACCEPT}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    own = deadline is None
    deadline = deadline or Deadline(settings.feed_timeout)
    http = session or deadline.mount_on(requests.Session())
    watching = deadline if own else nullcontext()  # the caller's deadline is already running
    try:
        with watching, http.get(url, headers=headers, stream=True,
                                timeout=deadline.timeout(settings.feed_timeout)) as resp:
            fetched = Fetched(
                url=url,
                status=resp.status_code,
                content_type=resp.headers.get("Content-Type", ""),
                etag=resp.headers.get("ETag", ""),
                last_modified=resp.headers.get("Last-Modified", ""),
            )
            if 200 <= resp.status_code < 300:
                fetched.body = _read_capped(resp, url)
            if deadline.expired:  # cut off: what arrived may be a truncated body
                raise _FetchFailed(_deadline_message(url, deadline))
            return fetched
    except requests.RequestException as exc:
        if deadline.expired:
            raise _FetchFailed(_deadline_message(url, deadline)) from None
        raise _FetchFailed(_describe_request_error(exc, url, settings.feed_timeout)) from None
    finally:
        if session is None:
            http.close()


def parse_feed(body: bytes, url: str, content_type: str = "") -> feedparser.FeedParserDict:
    """Parse a feed document, or raise FeedError saying in one line why it is not a feed.

    Two repairs are tried before giving up, because they are the usual ways a WordPress feed
    breaks while its items are fine: output before the XML declaration (a PHP notice, blank
    lines from a plugin) and control characters pasted into a post. Anything else that is not
    well-formed XML is refused rather than half-read by the lenient parser.
    """
    if not body.strip():
        raise _FetchFailed(f"feed {url} answered with an empty body")
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
            raise _FetchFailed(f"feed {url} is not well-formed XML ({where})")
        raise _FetchFailed(f"feed {url} could not be parsed as RSS/Atom")
    if not parsed.get("version"):
        got = _describe_document(body, content_type)
        raise _FetchFailed(f"feed {url} is not RSS/Atom (got {got})")
    if _not_well_formed(parsed):
        where = _where(parsed.get("bozo_exception"))
        raise _FetchFailed(f"feed {url} is not well-formed XML ({where})")
    if not parsed.entries and not parsed.feed:
        # RSS keeps everything inside <channel>; Atom's <feed> is the document element itself.
        what = "an empty <feed>" if str(parsed.version).startswith("atom") else "no channel"
        raise _FetchFailed(f"feed {url} has {what}")
    return parsed


# ---- HTML to safe HTML and plain text --------------------------------------------------------


def sanitize_html(fragment: str, base: str = "") -> str:
    """Reduce HTML to the allow-list; every kept link and image is absolute http(s).

    Relative URLs are resolved against `base` (the post's link) because an email has no page
    to be relative to; anything that is not http(s) afterwards is dropped.
    """
    if not fragment:
        return ""
    return nh3.clean(
        fragment,
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(REMOVED_WITH_CONTENT),
        attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=_attribute_filter(base),
        url_schemes=set(URL_SCHEMES),
        link_rel="noopener noreferrer",
        strip_comments=True,
    ).strip()


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment: entities decoded, tags gone, whitespace collapsed."""
    return " ".join(_text_blocks(fragment))


def clean_text(value: str, limit: int | None = None) -> str:
    """A one-line plain-text field (title, author, category) from feed text.

    feedparser has already decoded one level of entities; WordPress sometimes double-encodes,
    and titles may carry markup, so unescape once more, sanitise, and keep only the text.
    """
    text = html_to_text(sanitize_html(html.unescape(value or "")))
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def summarise(summary_html: str, content_html: str = "", limit: int = SUMMARY_CHARS) -> str:
    """The excerpt as plain text, without WordPress's footer and "read more" furniture.

    Yoast appends "The post … appeared first on …" as its own paragraph, and WordPress ends
    excerpts with "[…]" or a theme's "Continue reading"; none of it belongs in an email.
    """
    text = " ".join(_without_footer(_text_blocks(summary_html))
                    or _without_footer(_text_blocks(content_html)))
    cut = False
    while True:
        shorter = _TAIL.sub("", text)
        if shorter == text:
            break
        text, cut = shorter.rstrip(), True
    if cut and text and text[-1] not in ".!?…:”’\"'":
        text += "…"
    return _trim(text, limit)


def first_image(content_html: str) -> str:
    """The first http(s) image of the post (an https one when there is one), else "".

    RSS2 from WordPress has no featured image, so the first <img> of the content stands in.
    Tracking pixels (1x1, as Jetpack appends) are not pictures and are passed over; an http URL
    is kept as it is rather than guessed into https.
    """
    finder = _ImageFinder()
    finder.feed(content_html or "")
    finder.close()
    candidates = [src for src in finder.sources if len(src) <= IMAGE_MAX]
    for src in candidates:
        if src.lower().startswith("https://"):
            return src
    return candidates[0] if candidates else ""


# ---- internals: fetching -------------------------------------------------------------------


class _FetchFailed(FeedError):
    """A FeedError that also carries the HTTP status to record (0 when there was none)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(_one_line(message))
        self.status = status


@dataclass
class _Run:
    status: int
    pages: int = 0
    not_modified: bool = False
    entries: list[Any] = field(default_factory=list)
    etag: str = ""
    last_modified: str = ""
    local: bool = False


def _fetch_pages(
    url: str, settings: Settings, since: datetime, *, etag: str, last_modified: str
) -> _Run:
    """Fetch and parse page 1, then later pages while they still reach back past `since`."""
    path = _local_path(url)
    if path is not None:
        parsed = parse_feed(_read_local(path, url), url)
        return _Run(status=0, pages=1, entries=list(parsed.entries), local=True)

    deadline = Deadline(settings.feed_timeout)
    with deadline, deadline.mount_on(requests.Session()) as http:
        first = fetch_feed_text(url, settings, etag=etag, last_modified=last_modified,
                                session=http, deadline=deadline)
        if first.status == 304:
            return _Run(status=304, not_modified=True)
        parsed = _parse_page(first)
        run = _Run(status=first.status, pages=1, entries=list(parsed.entries),
                   etag=first.etag, last_modified=first.last_modified)
        seen = {_entry_key(e) for e in run.entries}
        last_page = list(parsed.entries)
        while run.pages < settings.feed_max_pages and _reaches_back(last_page, since):
            page_url = _page_url(url, run.pages + 1)
            page = fetch_feed_text(page_url, settings, session=http, deadline=deadline)
            if page.status in (404, 410):
                break  # WordPress answers 404 past the last page
            parsed = _parse_page(page)
            run.pages += 1
            fresh = [e for e in parsed.entries if _entry_key(e) not in seen]
            if not fresh:
                break  # an empty page, or a cache that ignores ?paged
            seen.update(_entry_key(e) for e in fresh)
            run.entries.extend(fresh)
            last_page = list(parsed.entries)
        return run


def _parse_page(fetched: Fetched) -> feedparser.FeedParserDict:
    """Parse a 2xx page; any other status, or a body that is not a feed, is a FeedError."""
    if not 200 <= fetched.status < 300:
        raise _FetchFailed(f"feed {fetched.url} answered HTTP {fetched.status}", fetched.status)
    try:
        return parse_feed(fetched.body, fetched.url, fetched.content_type)
    except _FetchFailed as exc:
        exc.status = exc.status or fetched.status
        raise


def _reaches_back(entries: Iterable[Any], since: datetime) -> bool:
    """True when the oldest dated item is still newer than `since`: older pages may matter."""
    dates = [d for d in (_entry_date(e) for e in entries) if d is not None]
    return bool(dates) and min(dates) > since


def _page_url(url: str, page: int) -> str:
    """The WordPress URL of feed page N (`?paged=N`), keeping any other query parameters."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "paged"]
    query.append(("paged", str(page)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _local_path(url: str) -> Path | None:
    """A filesystem path when feed_url names a file (a path or file:// URL), else None."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        return Path(url2pathname(unquote(parts.path)))
    if scheme == "" or len(scheme) == 1:  # a plain path, or a Windows drive letter
        return Path(url)
    raise _FetchFailed(
        f"feed {url}: unsupported URL scheme {parts.scheme!r} (use http(s) or a file path)"
    )


def _read_local(path: Path, url: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_FEED_BYTES:
            raise _FetchFailed(f"feed {url} is larger than {MAX_FEED_BYTES // 2**20} MB")
        return path.read_bytes()
    except FileNotFoundError:
        raise _FetchFailed(f"feed {url}: no such file") from None
    except OSError as exc:
        raise _FetchFailed(f"feed {url}: cannot read ({exc.strerror or exc})") from None


def _read_capped(resp: requests.Response, url: str) -> bytes:
    """The (decompressed) body, refusing anything implausibly large for a feed."""
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_content(chunk_size=64 * 1024):
        size += len(chunk)
        if size > MAX_FEED_BYTES:
            raise _FetchFailed(f"feed {url} is larger than {MAX_FEED_BYTES // 2**20} MB",
                               resp.status_code)
        chunks.append(chunk)
    return b"".join(chunks)


def _is_timeout(exc: BaseException) -> bool:
    # requests raises ConnectionError, not Timeout, when the body stalls after the headers.
    if isinstance(exc, requests.Timeout):
        return True
    seen: set[int] = set()
    pending: list[Any] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, TimeoutError) or type(current).__name__.endswith("TimeoutError"):
            return True
        if isinstance(current, BaseException):
            pending.extend(current.args)
            pending.extend([current.__cause__, current.__context__])
            pending.append(getattr(current, "reason", None))
    return "timed out" in str(exc).lower()


def _deadline_message(url: str, deadline: Deadline) -> str:
    return (f"feed {url} timed out after {deadline.seconds:g}s (the whole fetch must finish "
            "within feed_timeout; the server is answering too slowly)")


def _describe_request_error(exc: requests.RequestException, url: str, timeout: float) -> str:
    if _is_timeout(exc):
        return f"feed {url} timed out after {timeout:g}s"
    reason = _short_reason(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        return f"feed {url}: TLS error ({reason})"
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return f"feed {url} redirects too many times"
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return f"feed {url} is not a valid URL"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return f"feed {url}: the response was cut off"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return f"feed {url} could not be reached ({reason})"
    return f"feed {url} could not be fetched ({reason})"


def _short_reason(exc: BaseException) -> str:
    """The human part of a urllib3 error chain, e.g. "Connection refused"."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if match:
        return match.group(1).strip()
    for marker in ("Name or service not known", "certificate verify failed", "Connection refused"):
        if marker.lower() in text.lower():
            return marker
    return type(exc).__name__


# ---- internals: parsing ----------------------------------------------------------------------


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


def _entry_key(entry: Any) -> str:
    return str(entry.get("id") or entry.get("link") or entry.get("title") or "")


def _entry_date(entry: Any) -> datetime | None:
    """pubDate as aware UTC; feedparser has already converted any offset to UTC."""
    stamp = entry.get("published_parsed") or entry.get("updated_parsed")
    if not stamp:
        return None
    try:
        return datetime(*stamp[:6], tzinfo=UTC)
    except (TypeError, ValueError):
        return None


@dataclass
class _Item:
    guid: str
    published_at: datetime
    title: str
    link: str
    author: str
    summary_html: str
    summary_text: str
    content_html: str
    image_url: str
    categories: list[str]
    section: str

    def editable(self) -> dict[str, Any]:
        """The fields an edit may change; published_at is deliberately not among them."""
        return {
            "title": self.title, "link": self.link, "author": self.author,
            "summary_html": self.summary_html, "summary_text": self.summary_text,
            "content_html": self.content_html, "image_url": self.image_url,
            "categories": self.categories, "section": self.section,
        }


def _items_from_entries(
    entries: Iterable[Any], settings: Settings, since: datetime
) -> tuple[list[_Item], int]:
    skip = {c.strip().casefold() for c in settings.skip_categories if c.strip()}
    items: dict[str, _Item] = {}
    skipped = 0
    for entry in entries:
        item, reason = _item_from_entry(entry, settings, since, skip)
        if item is None:
            skipped += 1
            log.debug("skipped %r: %s", entry.get("title", ""), reason)
        elif item.guid not in items:  # first (newest page) wins
            items[item.guid] = item
    return list(items.values()), skipped


def _item_from_entry(
    entry: Any, settings: Settings, since: datetime, skip: set[str]
) -> tuple[_Item | None, str]:
    categories = _categories(entry)
    if any(c.casefold() in skip for c in categories):
        return None, "skipped category"
    link = str(entry.get("link") or "").strip()
    if not _is_http_url(link) or len(link) > LINK_MAX:
        return None, f"link is not http(s): {link[:80]!r}"
    published = _entry_date(entry)
    if published is None:
        return None, "no publication date"
    if published < since:
        return None, "published before the collection window"

    guid = str(entry.get("id") or link).strip()
    if len(guid) > GUID_MAX:
        guid = "sha256:" + hashlib.sha256(guid.encode("utf-8")).hexdigest()

    content_raw = ""
    for part in entry.get("content") or []:
        if part.get("value"):
            content_raw = str(part["value"])
            break
    summary_html = _drop_footer_html(sanitize_html(str(entry.get("summary") or ""), link))
    content_html = sanitize_html(content_raw, link)
    summary_text = summarise(summary_html, content_html)
    title = clean_text(str(entry.get("title") or ""), TITLE_MAX)
    if not title:
        title = _trim(summary_text, 80) or "(untitled)"
    author = clean_text(str(entry.get("author") or ""), AUTHOR_MAX)
    return _Item(
        guid=guid,
        published_at=published,
        title=title,
        link=link,
        author=author,
        summary_html=summary_html,
        summary_text=summary_text,
        content_html=content_html,
        image_url=first_image(content_html),
        categories=categories,
        section=section_for(categories, settings)[:SECTION_MAX],
    ), ""


def _categories(entry: Any) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    for tag in entry.get("tags") or []:
        name = clean_text(str(tag.get("term") or tag.get("label") or ""))
        if name and name.casefold() not in seen:
            seen.add(name.casefold())
            names.append(name)
    return names


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.lower() in URL_SCHEMES and bool(parts.netloc)


# ---- internals: HTML helpers -------------------------------------------------------------------

_BLOCK_TAGS = frozenset(
    {"p", "br", "li", "ul", "ol", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "figure",
     "figcaption", "div", "section", "article", "header", "footer", "table", "tr", "td", "th",
     "hr", "pre", "dl", "dt", "dd"}
)
_INVISIBLE_TAGS = frozenset({"script", "style", "template", "noscript", "iframe"})
_FOOTER = re.compile(r"^The post .+ appeared first on .+$", re.S)
_TAIL = re.compile(
    r"\s*(?:\[(?:…|\.\.\.|&hellip;)\]"
    r"|(?:…\s*)?(?:Continue reading|Read more)(?:\s*[\"“'‘].{0,300}?[\"”'’])?"
    r"\s*(?:→|»|›|…|\.\.\.)?)\s*$"
)


class _TextExtractor(HTMLParser):
    """Text per block element, so paragraphs stay apart and a trailing footer can be dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[list[str]] = [[]]
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _INVISIBLE_TAGS:
            self._hidden += 1
        elif tag in _BLOCK_TAGS:
            self.blocks.append([])

    def handle_endtag(self, tag: str) -> None:
        if tag in _INVISIBLE_TAGS:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCK_TAGS:
            self.blocks.append([])

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.blocks[-1].append(data)


def _text_blocks(fragment: str) -> list[str]:
    if not fragment:
        return []
    parser = _TextExtractor()
    parser.feed(fragment)
    parser.close()
    blocks = (" ".join("".join(parts).split()) for parts in parser.blocks)
    return [b for b in blocks if b]


class _ImageFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "img":
            return
        values = {k: (v or "").strip() for k, v in attrs}
        src = values.get("src", "")
        if not _is_http_url(src):
            return
        if any(_tiny(values.get(dim, "")) for dim in ("width", "height")):
            return
        self.sources.append(src)


def _tiny(value: str) -> bool:
    return value.isdigit() and int(value) <= 2


def _attribute_filter(base: str) -> Callable[[str, str, str], str | None]:
    def keep(tag: str, attr: str, value: str) -> str | None:
        if attr in ("href", "src"):
            return _absolute_http(value, base) or None
        if attr in ("width", "height"):
            return value.strip() if value.strip().rstrip("%").isdigit() else None
        return value

    return keep


def _absolute_http(value: str, base: str) -> str:
    try:
        candidate = urljoin(base, value.strip()) if base else value.strip()
        return candidate if _is_http_url(candidate) else ""
    except ValueError:
        return ""


def _drop_footer_html(fragment: str) -> str:
    """Remove Yoast's trailing "The post … appeared first on …" paragraph from sanitised HTML.

    Safe as a string search because nh3's output is canonical: a kept <p> has no attributes.
    """
    start = fragment.rfind("<p>The post ")
    if start < 0:
        return fragment
    tail = fragment[start:]
    if tail.rstrip().endswith("</p>") and _FOOTER.match(html_to_text(tail)):
        return fragment[:start].rstrip()
    return fragment


def _without_footer(blocks: list[str]) -> list[str]:
    while blocks and _FOOTER.match(blocks[-1]):
        blocks = blocks[:-1]
    return blocks


def _trim(text: str, limit: int) -> str:
    """Shorten to at most `limit` characters on a word boundary, ending in an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:–—-") + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---- internals: the database ---------------------------------------------------------------


def _validators(app: App, url: str) -> tuple[str, str]:
    with app.sessions() as session:
        state = session.get(FeedState, url)
        if state is None:
            return "", ""
        return state.etag, state.last_modified


def _state(session: Session, url: str) -> FeedState:
    state = session.get(FeedState, url)
    if state is None:
        state = FeedState(url=url, etag="", last_modified="", last_status=0, last_error="")
        session.add(state)
    return state


def _apply_success(state: FeedState, now: datetime, run: _Run) -> None:
    state.last_fetch_at = now
    state.last_status = run.status
    state.last_error = ""
    state.last_ok_at = now
    if not run.not_modified and not run.local:
        # Exactly as received, or not at all: a truncated validator would never match.
        state.etag = run.etag if len(run.etag) <= ETAG_MAX else ""
        state.last_modified = (
            run.last_modified if len(run.last_modified) <= LAST_MODIFIED_MAX else ""
        )


def _record_success(app: App, url: str, now: datetime, run: _Run) -> None:
    def work(session: Session) -> None:
        _apply_success(_state(session, url), now, run)

    _retrying(app, work)


def _record_failure(app: App, url: str, now: datetime, message: str, status: int) -> None:
    """Note the failure for `mailer status`, leaving validators and articles untouched."""

    def work(session: Session) -> None:
        state = _state(session, url)
        state.last_fetch_at = now
        state.last_status = status
        state.last_error = message

    try:
        _retrying(app, work)
    except SQLAlchemyError:
        log.exception("could not record the feed error for %s", url)


def _store(app: App, url: str, now: datetime, run: _Run, items: list[_Item]) -> tuple[int, int]:
    counts = (0, 0)

    def work(session: Session) -> None:
        nonlocal counts
        counts = _upsert(session, items, now)
        _apply_success(_state(session, url), now, run)

    _retrying(app, work)
    return counts


def _retrying(app: App, work: Callable[[Session], None]) -> None:
    """Run `work` in one transaction; once more if a concurrent collect inserted the same key."""
    for attempt in (1, 2, 3):
        try:
            with app.sessions.begin() as session:
                work(session)
            return
        except IntegrityError:
            if attempt == 3:
                raise
            time.sleep(0.05 * attempt)


def _upsert(session: Session, items: list[_Item], now: datetime) -> tuple[int, int]:
    existing: dict[str, Article] = {}
    guids = [item.guid for item in items]
    for start in range(0, len(guids), 500):
        chunk = guids[start:start + 500]
        for article in session.scalars(select(Article).where(Article.guid.in_(chunk))):
            existing[article.guid] = article
    new = updated = 0
    for item in items:
        article = existing.get(item.guid)
        if article is None:
            session.add(Article(guid=item.guid, published_at=item.published_at, fetched_at=now,
                                updated_at=now, **item.editable()))
            new += 1
            continue
        changed = False
        for name, value in item.editable().items():
            if getattr(article, name) != value:
                setattr(article, name, value)
                changed = True
        if changed:
            article.updated_at = now
            updated += 1
    session.flush()
    return new, updated
