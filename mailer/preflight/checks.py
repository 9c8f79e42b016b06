"""The checks preflight runs on every edition's sample message, in the order they run.

Adding a check is one function here: decorate it with ``@check("name")`` and name its
parameters after what it needs from `Sample` (the fields of `Context`: ``msg``, ``data``,
``html``, ``text``, ``page``, ``unsubscribe_url``, ``articles``, ``slots``, ``settings``); it
returns the findings. The runner calls every registered check and turns a crash into an error
finding, so a check never needs its own try/except.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from urllib.parse import urlsplit

from mailer.config import Settings
from mailer.message import ONE_CLICK
from mailer.placeholders import Placeholders
from mailer.preflight.findings import ERROR, WARNING, Finding, grouped
from mailer.preflight.links import (
    TEXT_URL_RE,
    clean_text_url,
    is_local_host,
    tracked,
    url_scheme,
)
from mailer.preflight.page import ParsedHtml
from mailer.wording import plural


@dataclass
class ArticleLinks:
    """The edition's article URLs with tracking removed: what the parts must both carry."""

    all: set[str] = field(default_factory=set)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (title, link)


@dataclass(frozen=True)
class Context:
    """What a check may look at: the sample message as the reader gets it, and the settings."""

    msg: EmailMessage
    data: bytes
    html: str | None
    text: str | None
    page: ParsedHtml
    unsubscribe_url: str
    articles: ArticleLinks
    slots: Placeholders
    settings: Settings


Check = Callable[..., list[Finding]]
CHECKS: dict[str, Check] = {}
_CONTEXT_FIELDS = frozenset(f.name for f in fields(Context))


def check(name: str) -> Callable[[Check], Check]:
    """Register a check under `name` (shown when it crashes); its parameters must name
    `Context` fields, which is verified here, at import, rather than at 7am."""

    def register(fn: Check) -> Check:
        unknown = set(inspect.signature(fn).parameters) - _CONTEXT_FIELDS
        if unknown:
            raise TypeError(f"preflight check {name!r} asks for {sorted(unknown)}, "
                            f"which Context does not have")
        CHECKS[name] = fn
        return fn

    return register


def run_check(fn: Check, context: Context) -> list[Finding]:
    """Call one registered check with the parts of `context` it names."""
    names = inspect.signature(fn).parameters
    return list(fn(**{name: getattr(context, name) for name in names}))


GMAIL_CLIP_BYTES = 102 * 1024       # Gmail clips the HTML part beyond this ("[Message clipped]")
HTML_WARN_BYTES = 90 * 1024         # close enough to the clip to say so
SUBJECT_LIMIT = 120                 # characters; the subject must be shorter than this
MAX_LINE = 998                      # RFC 5322 section 2.1.1, CRLF excluded
# Codes about links that only a production reader would follow. The file:// outbox delivers to
# no one (it is the development and demo transport) and a staging deployment sets
# `allow_local_links`: there they are warnings, not errors.
LOCAL_ONLY_CODES = frozenset({"base-url-local", "local-link", "unsubscribe-not-https"})
_MSGID_RE = re.compile(r"<[^<>\s@]+@[^<>\s@]+\.[^<>\s@]+>")
_LIST_ID_RE = re.compile(r"(?:.*\s)?<[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
                         r"(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)+>")
_ANGLE_RE = re.compile(r"<([^<>]*)>")


def settings_findings(settings: Settings) -> list[Finding]:
    """The base URL makes every unsubscribe link: check it once, by name, before the links."""
    base = urlsplit(settings.base_url or "")
    if base.scheme not in ("http", "https") or not base.hostname:
        return [Finding(ERROR, "base-url-missing",
                        f"base_url is missing or not an absolute URL ({settings.base_url!r}): "
                        "subscribers could not unsubscribe")]
    if is_local_host(base.hostname):
        return [Finding(ERROR, "base-url-local",
                        f"base_url is {base.hostname}: subscribers could not unsubscribe")]
    return []


@check("headers")
def check_headers(msg: EmailMessage) -> list[Finding]:
    """What Gmail and Yahoo require of bulk mail, and RFC 8058 one-click unsubscribe."""
    found: list[Finding] = []

    def single(name: str) -> str | None:
        values = msg.get_all(name) or []
        if not values:
            found.append(Finding(ERROR, "header-missing", f"the message has no {name} header"))
            return None
        if len(values) > 1:
            found.append(Finding(ERROR, "header-repeated",
                                 f"the message has {len(values)} {name} headers"))
        return str(values[0])

    from_value = single("From")
    if from_value is not None:
        addresses = [a for _, a in getaddresses([from_value]) if a]
        if len(addresses) != 1 or "@" not in addresses[0]:
            found.append(Finding(ERROR, "header-from", f"From is not one address: {from_value!r}"))
    single("To")
    date_value = single("Date")
    if date_value is not None:
        try:
            when = parsedate_to_datetime(date_value)
        except (TypeError, ValueError):
            when = None
        if when is None or when.tzinfo is None:
            found.append(Finding(ERROR, "header-date", f"Date is not valid: {date_value!r}"))
    message_id = single("Message-ID")
    if message_id is not None and not _MSGID_RE.fullmatch(message_id.strip()):
        found.append(Finding(ERROR, "header-message-id",
                             f"Message-ID is not valid: {message_id!r}"))
    if single("MIME-Version") not in (None, "1.0"):
        found.append(Finding(ERROR, "header-mime", "MIME-Version is not 1.0"))
    list_id = single("List-Id")
    if list_id is not None and not _LIST_ID_RE.fullmatch(" ".join(list_id.split())):
        found.append(Finding(ERROR, "header-list-id",
                             f"List-Id is not like 'Name <list.example.org>': {list_id!r}"))
    unsub = single("List-Unsubscribe")
    if unsub is not None:
        uris = _ANGLE_RE.findall(" ".join(unsub.split()))
        https = [u for u in uris if u.lower().startswith("https://")]
        if not https:
            http = [u for u in uris if u.lower().startswith("http://")]
            if http:
                found.append(Finding(ERROR, "unsubscribe-not-https",
                                     f"List-Unsubscribe link is not https ({http[0]}): "
                                     "one-click unsubscribe (RFC 8058) needs https"))
            else:
                found.append(Finding(ERROR, "list-unsubscribe",
                                     "List-Unsubscribe has no https link"))
        if not any(u.lower().startswith("mailto:") for u in uris):
            found.append(Finding(ERROR, "list-unsubscribe",
                                 "List-Unsubscribe has no mailto: address"))
    post = single("List-Unsubscribe-Post")
    if post is not None and post.strip() != ONE_CLICK:
        found.append(Finding(ERROR, "list-unsubscribe-post",
                             f"List-Unsubscribe-Post must be {ONE_CLICK!r}, not {post!r}"))
    return found


@check("structure")
def check_structure(msg: EmailMessage, data: bytes) -> list[Finding]:
    """multipart/alternative, text first, HTML last, no base64 text, no over-long lines."""
    found: list[Finding] = []
    if msg.get_content_type() != "multipart/alternative":
        found.append(Finding(ERROR, "mime-structure",
                             f"the message is {msg.get_content_type()}, not "
                             "multipart/alternative with a text and an HTML part"))
    else:
        kinds = [p.get_content_type() for p in msg.iter_parts()]
        if kinds and kinds[-1] != "text/html" and "text/html" in kinds:
            found.append(Finding(WARNING, "mime-order",
                                 "the HTML part is not last: clients show the last part they "
                                 "understand"))
    for part in msg.walk():
        if part.get_content_maintype() == "text" and (
                str(part.get("Content-Transfer-Encoding", "")).lower() == "base64"):
            found.append(Finding(WARNING, "base64-text",
                                 f"the {part.get_content_type()} part is base64-encoded "
                                 "(SpamAssassin MIME_BASE64_TEXT); use quoted-printable"))
    long_lines = [(n, len(line)) for n, line in enumerate(data.split(b"\n"), 1)
                  if len(line.rstrip(b"\r")) > MAX_LINE]
    if long_lines:
        n, length = long_lines[0]
        more = f" (+{len(long_lines) - 1} more)" if len(long_lines) > 1 else ""
        found.append(Finding(ERROR, "line-length",
                             f"line {n} of the encoded message is {length} characters, over "
                             f"the {MAX_LINE} limit{more}"))
    return found


@check("subject")
def check_subject(msg: EmailMessage) -> list[Finding]:
    subject = " ".join(str(msg.get("Subject", "")).split())
    if not subject:
        return [Finding(ERROR, "subject-missing", "the subject is empty")]
    if len(subject) >= SUBJECT_LIMIT:
        return [Finding(ERROR, "subject-long",
                        f"the subject is {len(subject)} characters; keep it under "
                        f"{SUBJECT_LIMIT}")]
    return []


@check("html")
def check_html(html: str | None, page: ParsedHtml, unsubscribe_url: str,
               slots: Placeholders) -> list[Finding]:
    """Present, under Gmail's clip, every placeholder filled, the unsubscribe link inside.

    Only the edition's own slots count: text from the feed that merely looks like a slot is
    text (it fills nothing), and must not be able to stop the send."""
    if html is None:
        return [Finding(ERROR, "html-missing", "the message has no text/html part")]
    found: list[Finding] = []
    size = len(html.encode("utf-8"))
    if size > GMAIL_CLIP_BYTES:
        found.append(Finding(ERROR, "html-size",
                             f"the HTML is {size / 1024:.1f} KB: Gmail clips messages over "
                             f"{GMAIL_CLIP_BYTES // 1024} KB, hiding the end of the edition and "
                             "its unsubscribe link"))
    elif size > HTML_WARN_BYTES:
        found.append(Finding(WARNING, "html-size",
                             f"the HTML is {size / 1024:.1f} KB, close to Gmail's "
                             f"{GMAIL_CLIP_BYTES // 1024} KB clipping limit"))
    left = slots.left_in(html)
    if left:
        found.append(Finding(ERROR, "placeholder", f"unfilled placeholder in the HTML: {left[0]}"))
    if unsubscribe_url not in {link.href for link in page.links}:
        found.append(Finding(ERROR, "unsubscribe-link",
                             "the HTML has no visible unsubscribe link (the reader's own "
                             "unsubscribe URL is not among its links)"))
    return found


@check("text")
def check_text(text: str | None, page: ParsedHtml, articles: ArticleLinks,
               slots: Placeholders) -> list[Finding]:
    """The text part must tell the same story as the HTML (SpamAssassin's MPART_ALT_DIFF, and
    readers whose client shows only text)."""
    if text is None:
        return [Finding(ERROR, "text-missing", "the message has no text/plain part")]
    if not text.strip():
        return [Finding(ERROR, "text-missing", "the text/plain part is empty")]
    found: list[Finding] = []
    left = slots.left_in(text)
    if left:
        found.append(Finding(ERROR, "placeholder",
                             f"unfilled placeholder in the text part: {left[0]}"))
    text_links = {clean_text_url(u) for u in TEXT_URL_RE.findall(text)}
    html_links = {link.href for link in page.links if url_scheme(link.href) in ("http", "https")}
    html_articles = {tracked(u) for u in html_links} & articles.all
    text_articles = {tracked(u) for u in text_links} & articles.all
    if html_articles - text_articles:
        missing = sorted(html_articles - text_articles)
        found.append(Finding(ERROR, "text-articles",
                             f"the text part lacks {plural(len(missing), 'article')} the HTML has, "
                             f"e.g. {missing[0]}"))
    if text_articles - html_articles:
        extra = sorted(text_articles - html_articles)
        found.append(Finding(ERROR, "text-articles",
                             f"the text part has {plural(len(extra), 'article')} the HTML lacks, "
                             f"e.g. {extra[0]}"))
    others = (html_links ^ text_links) - {u for u in html_links | text_links
                                          if tracked(u) in articles.all}
    if others:
        first = sorted(others)[0]
        where = "HTML" if first in html_links else "text part"
        found.append(Finding(WARNING, "text-links",
                             f"{plural(len(others), 'link appears', 'links appear')} in only "
                             f"one part, e.g. {first} (only in the {where})"))
    return found


@check("links")
def check_links_static(page: ParsedHtml, text: str | None, settings: Settings) -> list[Finding]:
    """Every link absolute http(s), and none to a local or staging host."""
    found: list[Finding] = []
    base_host = (urlsplit(settings.base_url or "").hostname or "").lower()
    base_is_local = bool(base_host) and is_local_host(base_host)
    relative: list[str] = []
    bad_scheme: list[str] = []
    local: list[str] = []
    urls = [link.href for link in page.links] + [img.src for img in page.images if img.src]
    urls += [clean_text_url(u) for u in TEXT_URL_RE.findall(text or "")]
    for url in dict.fromkeys(urls):
        scheme = url_scheme(url)
        if scheme in ("mailto", "tel"):
            continue
        if scheme in ("http", "https"):
            host = (urlsplit(url).hostname or "").lower()
            if not host:
                relative.append(url)
            elif is_local_host(host) and not (base_is_local and host == base_host):
                local.append(url)  # base_url's own links are reported once, by name
        elif not scheme:
            relative.append(url)
        else:
            bad_scheme.append(url)
    if relative:
        found.append(grouped(ERROR, "relative-link", "relative link", relative,
                              "every link must be an absolute https:// URL"))
    if bad_scheme:
        found.append(grouped(ERROR, "link-scheme", "link that is not http(s)", bad_scheme))
    if local:
        found.append(grouped(ERROR, "local-link", "link to a local or staging host", local,
                              "subscribers cannot reach it"))
    return found


@check("images")
def check_images(page: ParsedHtml) -> list[Finding]:
    """An alt attribute on every image (images are off by default in Outlook and for many
    readers): empty for a decorative picture (the lead's, which repeats its headline), never
    missing, which makes clients read out the file name; and a src every client can load."""
    found: list[Finding] = []
    no_alt = [img.src or "(no src)" for img in page.images if img.alt is None]
    if no_alt:
        found.append(grouped(ERROR, "image-alt", "image without alt text", no_alt))
    unusable = [img.src or "(no src)" for img in page.images
                if url_scheme(img.src) != "https" and url_scheme(img.src) != "http"]
    if unusable:
        found.append(grouped(ERROR, "image-src", "image whose src is not an absolute https URL",
                              unusable))
    plain = [img.src for img in page.images if url_scheme(img.src) == "http"]
    if plain:
        found.append(grouped(WARNING, "image-http", "image over plain http", plain,
                              "some clients block it; prefer https"))
    return found


@check("hidden-text")
def check_hidden_text(page: ParsedHtml) -> list[Finding]:
    """Text a reader cannot see is a spam signal (SpamAssassin's HTML_FONT_LOW_CONTRAST and
    friends) and an honesty problem: an error, except Outlook-only hiding (`mso-hide:all`),
    which layouts use legitimately for alternative content, and merely low contrast."""
    found: list[Finding] = []
    by_trick: dict[str, list[str]] = {}
    for trick, snippet in page.hidden:
        by_trick.setdefault(trick, []).append(snippet)
    for trick, snippets in by_trick.items():
        severity = WARNING if trick in ("mso-hide:all", "low contrast") else ERROR
        code = "low-contrast" if trick == "low contrast" else "hidden-text"
        label = "low-contrast text" if trick == "low contrast" else f"hidden text ({trick})"
        found.append(grouped(severity, code, label, [f"“{s}”" for s in snippets]))
    return found


@check("articles")
def check_articles(articles: ArticleLinks) -> list[Finding]:
    if not articles.all and not articles.dropped:
        return [Finding(WARNING, "no-articles",
                        "the edition has no articles: `mailer send` would skip it")]
    return [Finding(WARNING, "article-dropped",
                    f"article “{title}” is not in the email: its link {link!r} is not an "
                    "absolute http(s) URL") for title, link in articles.dropped]
