"""Fetching the feed: HTTP (or a local file), page by page, all under one deadline.

`feed_timeout` bounds the whole fetch, every page, not each read (`mailer.deadline`): a server
that drips a byte a second never trips a read timeout, and the send waits on this fetch. Every
page is fetched and parsed before anything is written (see `mailer.collect`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit
from urllib.request import url2pathname

import feedparser
import requests

from mailer.collect.feed import FeedFailure, entry_date, entry_key, parse_feed
from mailer.config import Settings
from mailer.deadline import Deadline

# A WordPress page of ten full posts is a few hundred kilobytes; anything this big is not a feed.
MAX_FEED_BYTES = 20 * 1024 * 1024
ACCEPT = "application/rss+xml, application/atom+xml;q=0.9, application/xml;q=0.8, */*;q=0.1"


@dataclass
class Fetched:
    """One HTTP (or file) response, read in full; validators exactly as the server sent them."""

    url: str
    status: int
    body: bytes = b""
    content_type: str = ""
    etag: str = ""
    last_modified: str = ""


@dataclass
class FetchRun:
    """Every page of one collect run, parsed, with page 1's status and validators."""

    status: int
    pages: int = 0
    not_modified: bool = False
    entries: list[Any] = field(default_factory=list)
    etag: str = ""
    last_modified: str = ""
    local: bool = False


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

    `deadline` is the whole fetch's (see `fetch_pages`) and `session` one it is mounted on;
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
                raise FeedFailure(_deadline_message(url, deadline))
            return fetched
    except requests.RequestException as exc:
        if deadline.expired:
            raise FeedFailure(_deadline_message(url, deadline)) from None
        raise FeedFailure(_describe_request_error(exc, url, settings.feed_timeout)) from None
    finally:
        if session is None:
            http.close()


def fetch_pages(
    url: str, settings: Settings, since: datetime, *, etag: str, last_modified: str
) -> FetchRun:
    """Fetch and parse page 1, then later pages while they still reach back past `since`."""
    path = _local_path(url)
    if path is not None:
        parsed = parse_feed(_read_local(path, url), url)
        return FetchRun(status=0, pages=1, entries=list(parsed.entries), local=True)

    deadline = Deadline(settings.feed_timeout)
    with deadline, deadline.mount_on(requests.Session()) as http:
        first = fetch_feed_text(url, settings, etag=etag, last_modified=last_modified,
                                session=http, deadline=deadline)
        if first.status == 304:
            return FetchRun(status=304, not_modified=True)
        parsed = _parse_page(first)
        run = FetchRun(status=first.status, pages=1, entries=list(parsed.entries),
                       etag=first.etag, last_modified=first.last_modified)
        seen = {entry_key(e) for e in run.entries}
        last_page = list(parsed.entries)
        while run.pages < settings.feed_max_pages and _reaches_back(last_page, since):
            page_url = _page_url(url, run.pages + 1)
            page = fetch_feed_text(page_url, settings, session=http, deadline=deadline)
            if page.status in (404, 410):
                break  # WordPress answers 404 past the last page
            parsed = _parse_page(page)
            run.pages += 1
            fresh = [e for e in parsed.entries if entry_key(e) not in seen]
            if not fresh:
                break  # an empty page, or a cache that ignores ?paged
            seen.update(entry_key(e) for e in fresh)
            run.entries.extend(fresh)
            last_page = list(parsed.entries)
        return run


def _parse_page(fetched: Fetched) -> feedparser.FeedParserDict:
    """Parse a 2xx page; any other status, or a body that is not a feed, is a FeedError."""
    if not 200 <= fetched.status < 300:
        raise FeedFailure(f"feed {fetched.url} answered HTTP {fetched.status}", fetched.status)
    try:
        return parse_feed(fetched.body, fetched.url, fetched.content_type)
    except FeedFailure as exc:
        exc.status = exc.status or fetched.status
        raise


def _reaches_back(entries: Iterable[Any], since: datetime) -> bool:
    """True when the oldest dated item is still newer than `since`: older pages may matter."""
    dates = [d for d in (entry_date(e) for e in entries) if d is not None]
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
    raise FeedFailure(
        f"feed {url}: unsupported URL scheme {parts.scheme!r} (use http(s) or a file path)"
    )


def _read_local(path: Path, url: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_FEED_BYTES:
            raise FeedFailure(f"feed {url} is larger than {MAX_FEED_BYTES // 2**20} MB")
        return path.read_bytes()
    except FileNotFoundError:
        raise FeedFailure(f"feed {url}: no such file") from None
    except OSError as exc:
        raise FeedFailure(f"feed {url}: cannot read ({exc.strerror or exc})") from None


def _read_capped(resp: requests.Response, url: str) -> bytes:
    """The (decompressed) body, refusing anything implausibly large for a feed."""
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_content(chunk_size=64 * 1024):
        size += len(chunk)
        if size > MAX_FEED_BYTES:
            raise FeedFailure(f"feed {url} is larger than {MAX_FEED_BYTES // 2**20} MB",
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
