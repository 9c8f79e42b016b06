"""Feed entries -> the articles to store: which to skip, and every field cleaned to fit its column.

An article's `published_at` is fixed the first time it is seen: WordPress may bump the date of
an edited post, and an article must appear in at most one edition. So an `Item` says which
fields an edit may change, and the date is not among them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailer.collect.clean import (
    clean_text,
    drop_footer_html,
    first_image,
    is_http_url,
    sanitize_html,
    summarise,
    trim,
)
from mailer.collect.feed import entry_date
from mailer.config import Settings
from mailer.models import Article

log = logging.getLogger(__name__)

DEFAULT_SECTION = "News"


def column_length(model: Any, name: str) -> int:
    """The String() length of a column, so truncation follows the schema rather than a guess."""
    length = getattr(model.__table__.c[name].type, "length", None)
    return int(length) if length else 10_000


TITLE_MAX = column_length(Article, "title")
LINK_MAX = column_length(Article, "link")
GUID_MAX = column_length(Article, "guid")
AUTHOR_MAX = column_length(Article, "author")
IMAGE_MAX = column_length(Article, "image_url")
SECTION_MAX = column_length(Article, "section")


@dataclass
class Item:
    """One entry, cleaned, ready to insert or to compare with the stored article."""

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


def items_from_entries(
    entries: Iterable[Any], settings: Settings, since: datetime
) -> tuple[list[Item], int]:
    """The entries worth storing, one per guid (the newest page's copy), and how many were
    skipped (the Daily email category, a bad link, no date, older than `since`)."""
    skip = {c.strip().casefold() for c in settings.skip_categories if c.strip()}
    items: dict[str, Item] = {}
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
) -> tuple[Item | None, str]:
    categories = _categories(entry)
    if any(c.casefold() in skip for c in categories):
        return None, "skipped category"
    link = str(entry.get("link") or "").strip()
    if not is_http_url(link) or len(link) > LINK_MAX:
        return None, f"link is not http(s): {link[:80]!r}"
    published = entry_date(entry)
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
    summary_html = drop_footer_html(sanitize_html(str(entry.get("summary") or ""), link))
    content_html = sanitize_html(content_raw, link)
    summary_text = summarise(summary_html, content_html)
    title = clean_text(str(entry.get("title") or ""), TITLE_MAX)
    if not title:
        title = trim(summary_text, 80) or "(untitled)"
    author = clean_text(str(entry.get("author") or ""), AUTHOR_MAX)
    return Item(
        guid=guid,
        published_at=published,
        title=title,
        link=link,
        author=author,
        summary_html=summary_html,
        summary_text=summary_text,
        content_html=content_html,
        image_url=first_image(content_html, IMAGE_MAX),
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
