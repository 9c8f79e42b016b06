"""Preflight: no edition leaves unless it is a good email.

The checks run on a real sample message of the edition, built by the same `Personaliser` the
dispatcher uses (so the headers, encoding and filled links are byte for byte what a subscriber
would get), addressed to a fictional reader whose tokens unsubscribe nobody. They look at it the
way a deliverability team and a careful editor would: the headers Gmail and Yahoo require of bulk
senders, Gmail's 102 KB clipping, a text part that carries the same stories as the HTML, links
and images that work for a reader (absolute, public, with alt text), no hidden text, and the
SpamAssassin score with local rules only.

Each finding has a severity: an error stops the send (unless forced with a logged reason), a
warning is shown. `check_before_send` is what the dispatch path calls (through
`mailer.pipeline.run_preflight`); `mailer preflight` runs the same checks on demand, and
`render_screenshots` gives the staff console and the CLI the same four rendered views.

Settings read with `getattr` (new keys with defaults): ``spam_threshold`` (5.0),
``spamassassin_command`` ("spamassassin"), ``spamassassin_timeout`` (60 s),
``link_check_timeout`` (5 s), ``allow_local_links`` (False).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import struct
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import update

from mailer import netguard
from mailer.app import App
from mailer.config import Settings
from mailer.errors import MailerError, PreflightError
from mailer.message import ONE_CLICK
from mailer.models import Edition
from mailer.placeholders import Placeholders
from mailer.preflight.spamassassin import (  # noqa: F401 - parse_spamassassin: part of this API
    DEFAULT_SPAM_TIMEOUT,
    SpamCheckUnavailable,
    SpamResult,
    SpamRule,
    configured_command,
    parse_spamassassin,
    spam_score,
)

log = logging.getLogger("mailer.preflight")

ERROR = "error"
WARNING = "warning"

GMAIL_CLIP_BYTES = 102 * 1024       # Gmail clips the HTML part beyond this ("[Message clipped]")
HTML_WARN_BYTES = 90 * 1024         # close enough to the clip to say so
SUBJECT_LIMIT = 120                 # characters; the subject must be shorter than this
MAX_LINE = 998                      # RFC 5322 section 2.1.1, CRLF excluded
DEFAULT_SPAM_THRESHOLD = 5.0
DEFAULT_LINK_TIMEOUT = 5.0
LINK_CHECK_WORKERS = 8

# The fictional reader of the sample message: a non-ASCII name exercises the encoded To header,
# and subscriber id 0 exists in no database, so the sample's tokens unsubscribe nobody.
SAMPLE_EMAIL = "preflight.reader@example.org"
SAMPLE_NAME = "Siân Preflight"
SAMPLE_SUBSCRIBER_ID = 0

# Codes about links that only a production reader would follow. The file:// outbox delivers to
# no one (it is the development and demo transport) and a staging deployment sets
# `allow_local_links`: there they are warnings, not errors.
LOCAL_ONLY_CODES = frozenset({"base-url-local", "local-link", "unsubscribe-not-https"})

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    # Belt and braces: anything that escapes the route handler (a browser-internal fetch) goes
    # to a closed loopback port; loopback itself is never proxied, so local images still load.
    "--proxy-server=http://127.0.0.1:9", "--dns-prefetch-disable",
]
# (name, viewport width, colour scheme, images blocked): phones are where dark mode is read,
# desktop Outlook is where images are blocked by default.
SCREENSHOT_VIEWS: tuple[tuple[str, int, str, bool], ...] = (
    ("375-light", 375, "light", False),
    ("800-light", 800, "light", False),
    ("375-dark", 375, "dark", False),
    ("800-images-off", 800, "light", True),
)

_MSGID_RE = re.compile(r"<[^<>\s@]+@[^<>\s@]+\.[^<>\s@]+>")
_LIST_ID_RE = re.compile(r"(?:.*\s)?<[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
                         r"(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)+>")
_ANGLE_RE = re.compile(r"<([^<>]*)>")
_TEXT_URL_RE = re.compile(r"https?://[^\s<>\"']+")
_INVISIBLE_CHARS_RE = re.compile(r"[\s\u00ad\u034f\u200b-\u200f\u2060\ufeff]+")


# ---- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One problem: `code` is stable (for tests and the console), `message` is for people."""

    severity: str  # ERROR | WARNING
    code: str
    message: str

    def line(self) -> str:
        return f"{self.severity}: {self.message} [{self.code}]"


@dataclass
class Report:
    """Everything preflight found about one edition."""

    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    spam_score: float | None = None
    rules: list[SpamRule] = field(default_factory=list)
    spam_threshold: float = DEFAULT_SPAM_THRESHOLD
    checked_at: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def findings(self) -> list[Finding]:
        return self.errors + self.warnings

    def add(self, finding: Finding) -> None:
        (self.errors if finding.severity == ERROR else self.warnings).append(finding)

    def failure_line(self) -> str:
        """The one line `mailer send` prints when it refuses the edition."""
        first = self.errors[0].message if self.errors else "no error"
        more = f" (+{len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        return (f"preflight failed: {first}{more}; "
                'fix it or use --force --reason "..."')

    def as_json(self, *, forced: bool = False, reason: str = "") -> dict[str, Any]:
        """The shape stored in `Edition.preflight` (and shown by the staff console)."""
        return {
            "checked_at": self.checked_at,
            "errors": [{"code": f.code, "message": f.message} for f in self.errors],
            "warnings": [{"code": f.code, "message": f.message} for f in self.warnings],
            "spam_score": self.spam_score,
            "spam_threshold": self.spam_threshold,
            "rules": [{"name": r.name, "score": r.score, "description": r.description}
                      for r in self.rules],
            "forced": forced,
            "reason": reason,
        }


@dataclass(frozen=True)
class Sample:
    """The sample message and the per-recipient links that were filled into it."""

    data: bytes
    unsubscribe_url: str
    preferences_url: str
    message_id: str

    @property
    def message(self) -> EmailMessage:
        msg = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg

    @property
    def html(self) -> str:
        """The filled HTML part, exactly as a recipient's client would show it."""
        return _part_text(self.message, "html") or ""


# ---- entry points ----------------------------------------------------------------------------


def sample_message(app: App, edition: Edition) -> Sample:
    """Build the edition's message for the fictional sample reader through the dispatcher's own
    code (`Personaliser`), so what is checked is what would be sent."""
    from mailer.ledger import Claim
    from mailer.personalise import Personaliser

    personaliser = Personaliser.for_edition(app, edition)
    claim = Claim(id=0, subscriber_id=SAMPLE_SUBSCRIBER_ID, email=SAMPLE_EMAIL, name=SAMPLE_NAME,
                  attempts=0)
    out = personaliser.outgoing(claim, with_fields=True)
    return Sample(data=out.data, unsubscribe_url=out.fields["unsubscribe_url"],
                  preferences_url=out.fields["preferences_url"], message_id=out.message_id)


def run_checks(app: App, edition: Edition, *, check_links: bool = False) -> Report:
    """Run every check on a sample message of `edition`; never raises for a bad edition.

    A check that crashes becomes an error finding naming it, so a bug here shows up as a
    refusal that can be forced with a reason rather than as a traceback at 7am.
    """
    settings = app.settings
    report = Report(spam_threshold=_spam_threshold(settings),
                    checked_at=app.clock.now().isoformat())
    for finding in _settings_findings(settings):
        report.add(finding)
    try:
        sample = sample_message(app, edition)
    except (ValueError, MailerError) as exc:
        report.add(Finding(ERROR, "sample-message",
                           f"could not build a sample message: {exc}"))
        return _finish(report, settings)
    msg = sample.message
    html = _part_text(msg, "html")
    text = _part_text(msg, "plain")
    page = parse_html(html or "")
    articles = _article_links(app, edition)
    slots = Placeholders(edition.placeholder_key)

    checks: list[tuple[str, Callable[[], Iterable[Finding]]]] = [
        ("headers", lambda: check_headers(msg)),
        ("structure", lambda: check_structure(msg, sample.data)),
        ("subject", lambda: check_subject(msg)),
        ("html", lambda: check_html(html, page, sample.unsubscribe_url, slots)),
        ("text", lambda: check_text(text, page, articles, slots)),
        ("links", lambda: check_links_static(page, text or "", settings)),
        ("images", lambda: check_images(page)),
        ("hidden-text", lambda: check_hidden_text(page)),
        ("articles", lambda: _dropped_articles(articles)),
    ]
    for name, check in checks:
        try:
            for finding in check():
                report.add(finding)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.exception("preflight check %s crashed", name)
            report.add(Finding(ERROR, "check-crashed", f"the {name} check crashed: {exc!r}"))
    try:
        result = spam_score(sample.data, command=configured_command(settings),
                            timeout=float(getattr(settings, "spamassassin_timeout",
                                                  DEFAULT_SPAM_TIMEOUT)))
    except SpamCheckUnavailable as exc:
        report.add(Finding(WARNING, "spamassassin", str(exc)))
    else:
        report.spam_score, report.rules = result.score, result.rules
        if result.score > report.spam_threshold:
            fired = ", ".join(f"{r.name} ({r.score:g})" for r in _worst(result.rules)) or "none"
            report.add(Finding(ERROR, "spam-score",
                               f"SpamAssassin score {result.score:g} is over the limit "
                               f"{report.spam_threshold:g}: {fired}"))
    if check_links:
        urls = [a.href for a in page.links if _tracked(a.href) in articles.all]
        urls += [img.src for img in page.images]
        for finding in check_live_links(urls, timeout=float(getattr(
                settings, "link_check_timeout", DEFAULT_LINK_TIMEOUT)),
                user_agent=settings.user_agent, allow_local=settings.allow_local_links):
            report.add(finding)
    return _finish(report, settings)


def check_before_send(app: App, edition: Edition, *, force: bool = False,
                      reason: str = "") -> Report:
    """The dispatch path's gate: check, record the result on the edition, refuse on an error.

    With `force` the send goes ahead despite errors, but only with a reason, which is stored
    with the findings (the pipeline also writes it to `Edition.forced_reason`).
    """
    report = run_checks(app, edition)
    reason = " ".join(reason.split())
    forced = force and not report.ok
    if forced and not reason:
        raise PreflightError(report.failure_line().replace(
            "fix it or use", "forcing past it needs a reason: use"))
    record(app, edition, report, forced=forced, reason=reason if force else "")
    if not report.ok and not force:
        raise PreflightError(report.failure_line())
    if forced:
        log.warning("edition %s forced past %d preflight error(s) (%s): %s",
                    edition.edition_date, len(report.errors),
                    "; ".join(f.message for f in report.errors), reason)
    for warning in report.warnings:
        log.warning("preflight warning for edition %s: %s", edition.edition_date,
                    warning.message)
    return report


def record(app: App, edition: Edition, report: Report, *, forced: bool = False,
           reason: str = "") -> dict[str, Any]:
    """Store the report on the edition (the row and the object passed in)."""
    data = report.as_json(forced=forced, reason=reason)
    with app.sessions.begin() as session:
        session.execute(update(Edition).where(Edition.id == edition.id).values(preflight=data))
    edition.preflight = data
    return data


# ---- settings --------------------------------------------------------------------------------


def _spam_threshold(settings: Settings) -> float:
    return float(getattr(settings, "spam_threshold", DEFAULT_SPAM_THRESHOLD))


def _settings_findings(settings: Settings) -> list[Finding]:
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


def _finish(report: Report, settings: Settings) -> Report:
    """Downgrade link findings that only matter to a production reader: when nobody gets the
    mail (the file:// outbox), or on a staging deployment that says so (`allow_local_links`)."""
    if settings.dsn.startswith("file://"):
        why = "the file:// outbox delivers to no one"
    elif getattr(settings, "allow_local_links", False):
        why = "allow_local_links is set"
    else:
        return report
    keep: list[Finding] = []
    for finding in report.errors:
        if finding.code in LOCAL_ONLY_CODES:
            report.warnings.append(Finding(WARNING, finding.code,
                                           f"{finding.message} (a warning only: {why})"))
        else:
            keep.append(finding)
    report.errors = keep
    return report


# ---- headers and structure -------------------------------------------------------------------


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


def check_subject(msg: EmailMessage) -> list[Finding]:
    subject = " ".join(str(msg.get("Subject", "")).split())
    if not subject:
        return [Finding(ERROR, "subject-missing", "the subject is empty")]
    if len(subject) >= SUBJECT_LIMIT:
        return [Finding(ERROR, "subject-long",
                        f"the subject is {len(subject)} characters; keep it under "
                        f"{SUBJECT_LIMIT}")]
    return []


# ---- bodies ----------------------------------------------------------------------------------


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
    text_links = {_clean_text_url(u) for u in _TEXT_URL_RE.findall(text)}
    html_links = {link.href for link in page.links if _scheme(link.href) in ("http", "https")}
    html_articles = {_tracked(u) for u in html_links} & articles.all
    text_articles = {_tracked(u) for u in text_links} & articles.all
    if html_articles - text_articles:
        missing = sorted(html_articles - text_articles)
        found.append(Finding(ERROR, "text-articles",
                             f"the text part lacks {len(missing)} article(s) the HTML has, "
                             f"e.g. {missing[0]}"))
    if text_articles - html_articles:
        extra = sorted(text_articles - html_articles)
        found.append(Finding(ERROR, "text-articles",
                             f"the text part has {len(extra)} article(s) the HTML lacks, "
                             f"e.g. {extra[0]}"))
    others = (html_links ^ text_links) - {u for u in html_links | text_links
                                          if _tracked(u) in articles.all}
    if others:
        first = sorted(others)[0]
        where = "HTML" if first in html_links else "text part"
        found.append(Finding(WARNING, "text-links",
                             f"{len(others)} link(s) appear in only one part, e.g. {first} "
                             f"(only in the {where})"))
    return found


def check_links_static(page: ParsedHtml, text: str, settings: Settings) -> list[Finding]:
    """Every link absolute http(s), and none to a local or staging host."""
    found: list[Finding] = []
    base_host = (urlsplit(settings.base_url or "").hostname or "").lower()
    base_is_local = bool(base_host) and is_local_host(base_host)
    relative: list[str] = []
    bad_scheme: list[str] = []
    local: list[str] = []
    urls = [link.href for link in page.links] + [img.src for img in page.images if img.src]
    urls += [_clean_text_url(u) for u in _TEXT_URL_RE.findall(text)]
    for url in dict.fromkeys(urls):
        scheme = _scheme(url)
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
        found.append(_grouped(ERROR, "relative-link", "relative link", relative,
                              "every link must be an absolute https:// URL"))
    if bad_scheme:
        found.append(_grouped(ERROR, "link-scheme", "link that is not http(s)", bad_scheme))
    if local:
        found.append(_grouped(ERROR, "local-link", "link to a local or staging host", local,
                              "subscribers cannot reach it"))
    return found


def check_images(page: ParsedHtml) -> list[Finding]:
    """Alt text for every image (images are off by default in Outlook and for many readers),
    and a src every client can load."""
    found: list[Finding] = []
    no_alt = [img.src or "(no src)" for img in page.images if not (img.alt or "").strip()]
    if no_alt:
        found.append(_grouped(ERROR, "image-alt", "image without alt text", no_alt))
    unusable = [img.src or "(no src)" for img in page.images
                if _scheme(img.src) != "https" and _scheme(img.src) != "http"]
    if unusable:
        found.append(_grouped(ERROR, "image-src", "image whose src is not an absolute https URL",
                              unusable))
    plain = [img.src for img in page.images if _scheme(img.src) == "http"]
    if plain:
        found.append(_grouped(WARNING, "image-http", "image over plain http", plain,
                              "some clients block it; prefer https"))
    return found


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
        found.append(_grouped(severity, code, label, [f"“{s}”" for s in snippets]))
    return found


# ---- articles --------------------------------------------------------------------------------


@dataclass
class ArticleLinks:
    """The edition's article URLs with tracking removed: what the parts must both carry."""

    all: set[str] = field(default_factory=set)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (title, link)


def _article_links(app: App, edition: Edition) -> ArticleLinks:
    from mailer.edition import edition_articles

    links = ArticleLinks()
    if edition.id is None:
        return links
    with app.sessions() as session:
        for article in edition_articles(session, edition.id):
            if _scheme(article.link) in ("http", "https"):
                links.all.add(_tracked(article.link))
            else:
                links.dropped.append((article.title, article.link))
    return links


def _dropped_articles(articles: ArticleLinks) -> list[Finding]:
    if not articles.all and not articles.dropped:
        return [Finding(WARNING, "no-articles",
                        "the edition has no articles: `mailer send` would skip it")]
    return [Finding(WARNING, "article-dropped",
                    f"article “{title}” is not in the email: its link {link!r} is not an "
                    "absolute http(s) URL") for title, link in articles.dropped]


def _tracked(url: str) -> str:
    """`url` without utm_* parameters and fragment, host lower-cased: how an article is
    recognised whichever slot (and tracking) a link carries."""
    parts = urlsplit(url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if not k.lower().startswith("utm_")])
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", query, ""))


# ---- hosts and links -------------------------------------------------------------------------


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


def _scheme(url: str | None) -> str:
    return urlsplit(url or "").scheme.lower()


def _clean_text_url(url: str) -> str:
    return url.rstrip(".,;:!?)]}'\"")


def _grouped(severity: str, code: str, label: str, items: list[str], why: str = "") -> Finding:
    more = f" (+{len(items) - 1} more)" if len(items) > 1 else ""
    tail = f": {why}" if why else ""
    return Finding(severity, code, f"{label}: {_short(items[0])}{more}{tail}")


def _short(value: str, limit: int = 120) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


# ---- HTML parsing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    href: str


@dataclass(frozen=True)
class Image:
    src: str
    alt: str | None


@dataclass
class ParsedHtml:
    links: list[Link] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    hidden: list[tuple[str, str]] = field(default_factory=list)  # (trick, text snippet)


def parse_html(html: str) -> ParsedHtml:
    """Links, images and hidden text of an email's HTML, from its inline styles.

    Only inline styles and `bgcolor` are read (email clients drop or rewrite most <style>
    rules, and inline styles are where hiding tricks live); properties are inherited down the
    element tree, so MJML's `font-size:0` layout cells with a sized `<div>` inside are fine.
    """
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser.page


_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "param", "source", "track", "wbr"})
_NAMED_COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0), "red": (255, 0, 0),
                  "green": (0, 128, 0), "blue": (0, 0, 255), "grey": (128, 128, 128),
                  "gray": (128, 128, 128), "silver": (192, 192, 192),
                  "yellow": (255, 255, 0)}
_COLOUR_RE = re.compile(r"#[0-9a-fA-F]{3}\b|#[0-9a-fA-F]{6}\b|rgba?\([^)]*\)|\b[a-zA-Z]+\b")
_LENGTH_RE = re.compile(r"^(-?\d*\.?\d+)\s*(px|pt|em|rem|%)?$")
Rgb = tuple[int, int, int]


@dataclass(frozen=True)
class _Style:
    """The inherited state that decides whether text is visible."""

    hidden_by: str = ""        # the trick that hides everything below, if any
    font_px: float = 16.0
    colour: Rgb | None = None
    background: Rgb = (255, 255, 255)
    mso_hide: bool = False


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = ParsedHtml()
        self.stack: list[tuple[str, _Style]] = [("#root", _Style())]
        self.in_head = 0
        self.in_not_mso = False

    # -- tree ---------------------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k.lower(): (v or "") for k, v in attrs}
        if tag == "a" and "href" in attr:
            self.page.links.append(Link(attr["href"].strip()))
        elif tag == "area" and "href" in attr:
            self.page.links.append(Link(attr["href"].strip()))
        elif tag == "img":
            self.page.images.append(Image(attr.get("src", "").strip(),
                                          attr["alt"] if "alt" in attr else None))
        if tag in _VOID:
            return
        if tag in ("head", "style", "script", "title"):
            self.in_head += 1
        self.stack.append((tag, self._derive(self.stack[-1][1], attr)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self.stack) - 1, 0, -1):
            if self.stack[index][0] == tag:
                for name, _ in self.stack[index:]:
                    if name in ("head", "style", "script", "title"):
                        self.in_head -= 1
                del self.stack[index:]
                return

    def handle_comment(self, data: str) -> None:
        # <!--[if !mso]><!--> ... <!--<![endif]-->: content for every client except Outlook,
        # where `mso-hide:all` is the standard, honest way to keep it out of Outlook.
        if data.startswith("[if !mso"):
            self.in_not_mso = True
        elif data.strip().endswith("<![endif]") or data.strip() == "<![endif]":
            self.in_not_mso = False

    def handle_data(self, data: str) -> None:
        if self.in_head:
            return
        visible = _INVISIBLE_CHARS_RE.sub(" ", data).strip()
        if not visible:
            return
        style = self.stack[-1][1]
        snippet = _short(" ".join(visible.split()), 60)
        if style.hidden_by:
            self.page.hidden.append((style.hidden_by, snippet))
        elif style.font_px < 2:
            self.page.hidden.append((f"font-size {style.font_px:g}px", snippet))
        elif style.mso_hide and not self.in_not_mso:
            self.page.hidden.append(("mso-hide:all", snippet))
        elif style.colour is not None:
            ratio = _contrast(style.colour, style.background)
            if ratio < 1.25:
                self.page.hidden.append(("text colour matches the background", snippet))
            elif ratio < 2.0:
                self.page.hidden.append(("low contrast", snippet))

    # -- styles -------------------------------------------------------------------------
    def _derive(self, parent: _Style, attr: dict[str, str]) -> _Style:
        props = _style_props(attr.get("style", ""))
        hidden_by = parent.hidden_by
        if not hidden_by:
            if "hidden" in attr or props.get("display") == "none":
                hidden_by = "display:none"
            elif props.get("visibility") in ("hidden", "collapse"):
                hidden_by = "visibility:hidden"
            elif _is_zero(props.get("opacity", "")):
                hidden_by = "opacity:0"
            elif props.get("overflow") == "hidden" and any(
                    _is_zero(props.get(k, "")) for k in ("max-height", "height", "max-width",
                                                         "width")):
                hidden_by = "zero size with overflow:hidden"
        font_px = parent.font_px
        if "font-size" in props:
            font_px = _font_px(props["font-size"], parent.font_px)
        colour = parent.colour
        if "color" in props:
            colour = _colour(props["color"]) or colour
        background = parent.background
        bg = _colour(props.get("background-color", "")) or _colour(props.get("background", ""))
        bg = bg or _colour(attr.get("bgcolor", ""))
        if bg is not None:
            background = bg
        mso_hide = parent.mso_hide or props.get("mso-hide") == "all"
        return _Style(hidden_by, font_px, colour, background, mso_hide)


def _style_props(style: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for declaration in style.split(";"):
        name, colon, value = declaration.partition(":")
        if colon:
            value = value.replace("!important", "").strip().lower()
            props[name.strip().lower()] = value
    return props


def _is_zero(value: str) -> bool:
    match = _LENGTH_RE.match(value.strip())
    return bool(match) and float(match.group(1)) == 0


def _font_px(value: str, inherited: float) -> float:
    match = _LENGTH_RE.match(value.strip())
    if not match:
        return inherited  # keywords (small, larger, inherit) are never invisible
    number, unit = float(match.group(1)), match.group(2) or "px"
    return {"px": number, "pt": number * 4 / 3, "em": number * inherited, "rem": number * 16,
            "%": number * inherited / 100}[unit]


def _colour(value: str) -> Rgb | None:
    """The first colour in a CSS value (#rgb, #rrggbb, rgb(), a few names), or None."""
    for token in _COLOUR_RE.findall(value or ""):
        token = token.lower()
        if token.startswith("#"):
            digits = token[1:]
            if len(digits) == 3:
                digits = "".join(c * 2 for c in digits)
            return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))
        if token.startswith("rgb"):
            if token.startswith("rgba"):
                parts = token[token.index("(") + 1:-1].split(",")
                if len(parts) == 4 and _is_zero(parts[3]):
                    return None  # fully transparent: the parent's colour shows
            nums = re.findall(r"\d+(?:\.\d+)?", token)
            if len(nums) >= 3:
                return tuple(min(255, int(float(n))) for n in nums[:3])  # type: ignore[return-value]
            return None
        if token in _NAMED_COLOURS:
            return _NAMED_COLOURS[token]
    return None


def _contrast(a: Rgb, b: Rgb) -> float:
    """WCAG 2 contrast ratio, 1 (identical) to 21 (black on white)."""

    def luminance(rgb: Rgb) -> float:
        channels = []
        for c in rgb:
            s = c / 255
            channels.append(s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4)
        return 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2]

    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _part_text(msg: EmailMessage, subtype: str) -> str | None:
    for part in msg.walk():
        if part.get_content_type() == f"text/{subtype}" and not part.is_multipart():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                charset = part.get_content_charset() or "utf-8"
                return payload.decode(charset, errors="replace")
            return None
    return None


def _worst(rules: list[SpamRule]) -> list[SpamRule]:
    return [r for r in rules if r.score > 0][:8]


# ---- live link check -------------------------------------------------------------------------


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
    targets = list(dict.fromkeys(_without_utm(u) for u in urls
                                 if _scheme(u) in ("http", "https")))
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
                               f"link not checked ({exc}): {_short(url)}")
            except netguard.Unreachable as exc:
                problem = str(exc)
                continue
            if status < 400:
                return None
        why = f"HTTP {status}" if status is not None else problem or "no answer"
        return Finding(WARNING, "dead-link", f"dead link ({why}): {_short(url)}")

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets)))) as pool:
        return [finding for finding in pool.map(probe, targets) if finding is not None]


def _without_utm(url: str) -> str:
    parts = urlsplit(url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if not k.lower().startswith("utm_")])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


# ---- screenshots -----------------------------------------------------------------------------


def render_screenshots(html: str, out_dir: Path, *, prefix: str = "",
                       chromium: Path = CHROMIUM) -> list[Path]:
    """Render `html` in headless Chromium four ways and save full-page PNGs in `out_dir`:
    375 px light, 800 px light, 375 px dark and 800 px with images blocked.

    Nothing leaves the machine: every request that is not to a loopback address is refused in
    the page, except that images from elsewhere are answered with a neutral 16:9 placeholder
    (so the layout shows where they sit) in all but the images-off view, where every image
    fails and the alt text shows. Scripts are off, as in every mail client.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - playwright is a test/console extra
        raise MailerError("screenshots need the playwright package "
                          "(pip install playwright)") from None
    if not Path(chromium).exists():
        raise MailerError(f"screenshots need Chromium at {chromium} "
                          "(Debian: apt install chromium)")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            for name, width, scheme, images_off in SCREENSHOT_VIEWS:
                context = browser.new_context(viewport={"width": width, "height": 800},
                                              color_scheme=scheme,  # type: ignore[arg-type]
                                              java_script_enabled=False,
                                              service_workers="block")
                try:
                    page = context.new_page()
                    page.route("**/*", _router(images_off))
                    page.set_content(html, wait_until="load")
                    path = out_dir / f"{prefix}{name}.png"
                    page.screenshot(path=str(path), full_page=True)
                    paths.append(path)
                finally:
                    context.close()
        finally:
            browser.close()
    return paths


def _router(images_off: bool) -> Callable[[Any, Any], None]:
    def handle(route: Any, request: Any) -> None:
        url = request.url
        if images_off and request.resource_type == "image":
            route.abort("blockedbyclient")
        elif _is_loopback_url(url):
            route.continue_()
        elif request.resource_type == "image":
            log.debug("screenshot: placeholder for %s", url)
            route.fulfill(status=200, content_type="image/png", body=_PLACEHOLDER_PNG)
        else:
            log.debug("screenshot: blocked %s", url)
            route.abort("blockedbyclient")

    return handle


def _is_loopback_url(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _png(width: int, height: int, rgb: Rgb) -> bytes:
    """A tiny solid-colour PNG (no imaging library needed)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    row = b"\x00" + bytes(rgb) * width
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height))
            + chunk(b"IEND", b""))


_PLACEHOLDER_PNG = _png(16, 9, (217, 217, 217))

