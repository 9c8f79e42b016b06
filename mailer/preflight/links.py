"""Links as preflight sees them: which hosts a reader cannot reach, which URLs are the same
article whatever tracking they carry, and whether each link answers (through netguard, since
the URLs come from the feed).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from mailer import netguard
from mailer.preflight.findings import WARNING, Finding, short

DEFAULT_LINK_TIMEOUT = 5.0
LINK_CHECK_WORKERS = 8
TEXT_URL_RE = re.compile(r"https?://[^\s<>\"']+")


def is_local_host(host: str) -> bool:
    """localhost, loopback, private or link-local addresses, *.local, *.localhost and any
    host with a 'staging' label: places a subscriber's mail client cannot or must not reach."""
    host = host.lower().strip("[]").rstrip(".")
    if not host:
        return False
    if host == "localhost" or host.endswith((".localhost", ".local")):
        return True
    if any("staging" in label for label in host.split(".")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified


def url_scheme(url: str | None) -> str:
    return urlsplit(url or "").scheme.lower()


def clean_text_url(url: str) -> str:
    return url.rstrip(".,;:!?)]}'\"")


def tracked(url: str) -> str:
    """`url` without utm_* parameters and fragment, host lower-cased: how an article is
    recognised whichever slot (and tracking) a link carries."""
    parts = urlsplit(url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if not k.lower().startswith("utm_")])
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", query, ""))


def without_utm(url: str) -> str:
    parts = urlsplit(url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if not k.lower().startswith("utm_")])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def check_live_links(urls: Iterable[str], *, timeout: float = DEFAULT_LINK_TIMEOUT,
                     user_agent: str = "", workers: int = LINK_CHECK_WORKERS,
                     allow_local: bool = False) -> list[Finding]:
    """HEAD each URL (GET when HEAD is refused or fails), concurrently, with a short timeout;
    a warning per dead one. UTM parameters are removed first so a check never shows up as a
    visit in the site's analytics.

    The URLs are the feed's, so they go out through `netguard`: a link (or a redirect hop) to
    loopback, private, link-local or metadata addresses is not requested but reported as
    `link-refused` with the reason; `allow_local` (staging, tests) admits loopback and private.
    """
    targets = list(dict.fromkeys(without_utm(u) for u in urls
                                 if url_scheme(u) in ("http", "https")))
    if not targets:
        return []
    headers = {"User-Agent": user_agent} if user_agent else {}

    def probe(url: str) -> Finding | None:
        status: int | None = None
        problem = ""
        for method in ("HEAD", "GET"):
            try:
                status = netguard.probe(url, method=method, timeout=timeout, headers=headers,
                                        allow_local=allow_local).status
            except netguard.Refused as exc:
                return Finding(WARNING, "link-refused",
                               f"link not checked ({exc}): {short(url)}")
            except netguard.Unreachable as exc:
                problem = str(exc)
                continue
            if status < 400:
                return None
        why = f"HTTP {status}" if status is not None else problem or "no answer"
        return Finding(WARNING, "dead-link", f"dead link ({why}): {short(url)}")

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets)))) as pool:
        return [finding for finding in pool.map(probe, targets) if finding is not None]
