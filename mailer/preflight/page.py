"""What a reader would see of an email's HTML: its links, its images and its hidden text.

Email clients drop or rewrite most <style> rules, so only inline styles and `bgcolor` count;
visibility is worked out the way a client renders it, by inheriting styles down the tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from html.parser import HTMLParser

from mailer.mime import part_text as decode_part
from mailer.preflight.findings import short


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
_INVISIBLE_CHARS_RE = re.compile(r"[\s\u00ad\u034f\u200b-\u200f\u2060\ufeff]+")


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
        snippet = short(" ".join(visible.split()), 60)
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
    return match is not None and float(match.group(1)) == 0


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
                red, green, blue = (min(255, int(float(n))) for n in nums[:3])
                return (red, green, blue)
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


def part_text(msg: EmailMessage, subtype: str) -> str | None:
    """The first text/`subtype` leaf of `msg`, decoded; None when it has none."""
    for part in msg.walk():
        if part.get_content_type() == f"text/{subtype}" and not part.is_multipart():
            return decode_part(part)
    return None
