"""HTML to plain text, one way for the whole mailer.

Collect uses it for titles, bylines and excerpts from the feed; render uses it for an article
stored without a plain-text excerpt. Text is kept per block element, so paragraphs stay apart
(an excerpt can drop a trailing footer paragraph) and two blocks never run into one word; what
is inside script, style and similar elements is never text a reader should see.
"""

from __future__ import annotations

from html.parser import HTMLParser

_BLOCK_TAGS = frozenset(
    {"p", "br", "li", "ul", "ol", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "figure",
     "figcaption", "div", "section", "article", "header", "footer", "table", "tr", "td", "th",
     "hr", "pre", "dl", "dt", "dd"}
)
_INVISIBLE_TAGS = frozenset({"script", "style", "template", "noscript", "iframe"})


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment: entities decoded, tags gone, whitespace collapsed."""
    return " ".join(text_blocks(fragment))


def text_blocks(fragment: str) -> list[str]:
    """The text of each block element, whitespace collapsed, empty blocks left out."""
    if not fragment:
        return []
    parser = _TextExtractor()
    parser.feed(fragment)
    parser.close()
    blocks = (" ".join("".join(parts).split()) for parts in parser.blocks)
    return [b for b in blocks if b]


class _TextExtractor(HTMLParser):
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
