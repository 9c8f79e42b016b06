"""An edition's link list, and the view whose links go through `/r/<token>`.

Rendering builds the view with the site's links (UTM-tagged); `link_list` numbers every
distinct link of it (stories, the donate button, the sign-up prompt, "view in your browser",
then the scanner trap and the open pixel), and `tracked_view` swaps each for its redirect.
Unsubscribe and preferences links are per-reader slots, never in the view, so never
redirected. The archive page is rendered from the untracked view: it is a web page, not an
email, and its visits are the site's analytics' business.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from html import escape as html_escape
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from mailer.clicks.tokens import BadLinkToken, LinkSigner
from mailer.config import Settings
from mailer.models import ARCHIVE, ARTICLE, DONATE, OPEN, SIGNUP, TRAP
from mailer.render import ArticleView, EditionView

OFF, AGGREGATE, PER_READER = "off", "aggregate", "per-reader"


@dataclass(frozen=True)
class Link:
    """One entry of an edition's link list; `position` is what a token names."""

    position: int
    kind: str
    url: str      # without our UTM parameters: what reports show
    target: str   # where a click goes
    title: str = ""
    article_id: int | None = None
    utm_content: str = ""


def site_home(settings: Settings) -> str:
    """The site's home page (where the trap and a dead link send a reader): the origin of the
    feed, or failing that of the donate page, the sign-up page or our own base URL."""
    for url in (settings.feed_url, settings.donation_url, settings.signup_url,
                settings.base_url):
        parts = urlsplit(url or "")
        if parts.scheme in ("http", "https") and parts.netloc:
            return urlunsplit((parts.scheme, parts.netloc, "/", "", ""))
    return "/"


def strip_utm(url: str) -> str:
    """`url` without the utm_* parameters (ours, added by `render.add_utm`)."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if not any(k.startswith("utm_") for k, _ in pairs):
        return url
    query = urlencode([(k, v) for k, v in pairs if not k.startswith("utm_")])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def donate_ask(utm_content: str) -> str:
    """The ask a donate link's utm_content names (donate-YYYYMMDD-<ask>), or ""."""
    parts = utm_content.split("-", 2)
    return parts[2] if len(parts) == 3 and parts[0] == "donate" else ""


def _utm_content(url: str) -> str:
    return dict(parse_qsl(urlsplit(url).query)).get("utm_content", "")


def link_list(view: EditionView, *, home: str, open_pixel: bool) -> list[Link]:
    """Every link of `view` once, in reading order, then the trap and (if on) the pixel.

    A story linked three times (image, headline, "read more") is one entry; so is a story that
    is also in the "Most read" block. The trap and the pixel lead to `home`, a page that
    exists, so a scanner that follows them learns nothing.
    """
    links: list[Link] = []
    seen: set[str] = set()

    def add(kind: str, target: str, title: str = "", article_id: int | None = None) -> None:
        if not target or target in seen:
            return
        seen.add(target)
        links.append(Link(len(links), kind, strip_utm(target), target, title, article_id,
                          _utm_content(target)))

    for article in view.articles:
        add(ARTICLE, article.url, article.title, article.article_id)
    # Every live ask's donate link (each reader's copy shows one), named by its ask.
    donate = view.donation_urls or (view.donation_url,)
    for url in (view.donation_url, *donate):
        name = donate_ask(_utm_content(url)) if len(donate) > 1 else ""
        add(DONATE, url, f"Donate ({name})" if name else "Donate")
    add(SIGNUP, view.signup_url, "Sign up")
    add(ARCHIVE, view.archive_url, "View in your browser")
    links.append(Link(len(links), TRAP, home, home))
    if open_pixel:
        links.append(Link(len(links), OPEN, home, home))
    return links


def tracked_view(view: EditionView, links: list[Link], *, edition_id: int, base_url: str,
                 signer: LinkSigner, reader_slot: str = "", test_group: int = 0) -> EditionView:
    """`view` with each link replaced by its redirect: ``base_url/r/<token>`` and, in
    per-reader mode, `reader_slot` (the per-recipient suffix, filled at send time). The trap
    and the pixel carry no reader: they say nothing about anyone. In a subject test's copy
    every token also names its `test_group` (a share of the audience, no reader)."""
    base = base_url.rstrip("/")
    by_target = {link.target: link for link in links if link.kind not in (TRAP, OPEN)}

    def redirect(position: int, reader: str) -> str:
        return f"{base}/r/{signer.link_token(edition_id, position, test_group)}{reader}"

    def swap(url: str) -> str:
        link = by_target.get(url)
        return redirect(link.position, reader_slot) if link else url

    def story(article: ArticleView) -> ArticleView:
        return dataclasses.replace(article, url=swap(article.url))

    special = {link.kind: link.position for link in links if link.kind in (TRAP, OPEN)}
    pixel = special.get(OPEN)
    return dataclasses.replace(
        view,
        lead=story(view.lead) if view.lead else None,
        sections=[(name, [story(a) for a in items]) for name, items in view.sections],
        most_read=[story(a) for a in view.most_read],
        donation_url=swap(view.donation_url),
        signup_url=swap(view.signup_url),
        archive_url=swap(view.archive_url),
        trap_url=redirect(special[TRAP], "") if TRAP in special else "",
        pixel_url=(f"{base}/o/{signer.link_token(edition_id, pixel, test_group)}{reader_slot}"
                   if pixel is not None else ""),
    )


def untrack(body: str, links: dict[int, Link], *, edition_id: int, base_url: str,
            signer: LinkSigner, html: bool) -> tuple[str, list[str]]:
    """`body` with each of the edition's redirects replaced by its target, the trap link and
    the open pixel removed: the email as it would be untracked, for preflight's link checks
    and for previews whose clicks must not count. Also the redirects that do not resolve to
    one of `links` (a template or a bug pointing somewhere the edition does not link)."""
    base = re.escape(base_url.rstrip("/"))
    unresolved: list[str] = []

    def target(match: re.Match[str]) -> Link | None:
        try:
            ref = signer.read(match.group("token"))
        except BadLinkToken:
            ref = None
        link = links.get(ref.position) if ref and ref.edition_id == edition_id else None
        if link is None:
            unresolved.append(match.group(0))
        return link

    if html:
        def drop_hidden(match: re.Match[str]) -> str:
            link = target(match)
            return "" if link is None or link.kind in (TRAP, OPEN) else match.group(0)
        body = re.sub(rf'<(?:a|img)\b[^>]*?(?:href|src)="(?P<url>{base}/[ro]/'
                      rf'(?P<token>{_TOKEN}))"[^>]*>(?:</a>)?', drop_hidden, body)

    def swap(match: re.Match[str]) -> str:
        link = target(match)
        if link is None:
            return match.group(0)
        return html_escape(link.target, quote=True) if html else link.target

    body = re.sub(rf"(?P<url>{base}/[ro]/(?P<token>{_TOKEN}))", swap, body)
    return body, list(dict.fromkeys(unresolved))


_TOKEN = r"[A-Za-z0-9_-]{8,60}(?:\.[A-Za-z0-9_-]{1,40})?"
