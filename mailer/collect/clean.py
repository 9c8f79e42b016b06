"""Article HTML to safe HTML and plain text: the one sanitising policy, excerpts, the picture.

All HTML goes through one allow-list sanitiser (nh3); feedparser's own sanitiser is switched
off (`mailer.collect.feed`) so that there is exactly one policy, and the tests check that policy.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import nh3

from mailer.htmltext import html_to_text, text_blocks

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

_FOOTER = re.compile(r"^The post .+ appeared first on .+$", re.S)
_TAIL = re.compile(
    r"\s*(?:\[(?:…|\.\.\.|&hellip;)\]"
    r"|(?:…\s*)?(?:Continue reading|Read more)(?:\s*[\"“'‘].{0,300}?[\"”'’])?"
    r"\s*(?:→|»|›|…|\.\.\.)?)\s*$"
)


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
    text = " ".join(_without_footer(text_blocks(summary_html))
                    or _without_footer(text_blocks(content_html)))
    cut = False
    while True:
        shorter = _TAIL.sub("", text)
        if shorter == text:
            break
        text, cut = shorter.rstrip(), True
    if cut and text and text[-1] not in ".!?…:”’\"'":
        text += "…"
    return trim(text, limit)


def first_image(content_html: str, max_length: int) -> str:
    """The first http(s) image of the post (an https one when there is one), else "".

    RSS2 from WordPress has no featured image, so the first <img> of the content stands in.
    Tracking pixels (1x1, as Jetpack appends) are not pictures and are passed over; an http URL
    is kept as it is rather than guessed into https. A URL longer than `max_length` (the
    column's) is passed over too rather than stored cut short.
    """
    finder = _ImageFinder()
    finder.feed(content_html or "")
    finder.close()
    candidates = [src for src in finder.sources if len(src) <= max_length]
    for src in candidates:
        if src.lower().startswith("https://"):
            return src
    return candidates[0] if candidates else ""


def drop_footer_html(fragment: str) -> str:
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


def is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.lower() in URL_SCHEMES and bool(parts.netloc)


def trim(text: str, limit: int) -> str:
    """Shorten to at most `limit` characters on a word boundary, ending in an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:–—-") + "…"


class _ImageFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "img":
            return
        values = {k: (v or "").strip() for k, v in attrs}
        src = values.get("src", "")
        if not is_http_url(src):
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
        return candidate if is_http_url(candidate) else ""
    except ValueError:
        return ""


def _without_footer(blocks: list[str]) -> list[str]:
    while blocks and _FOOTER.match(blocks[-1]):
        blocks = blocks[:-1]
    return blocks
