"""The archive as an RSS 2.0 feed (`/archive/feed.xml`): the latest sent editions, newest first.

A plain function of rows and settings, so it is tested without Flask. The XML is built with
ElementTree, which escapes text and attributes; characters XML 1.0 cannot hold at all (C0
controls other than tab and newline) are dropped first, since no escaping can carry them and
one would make the whole feed unreadable. Links are built from `base_url`, as the emails' are,
never from the request's Host header.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import format_datetime
from xml.etree import ElementTree

FEED_ITEMS = 30
ATOM = "http://www.w3.org/2005/Atom"
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True)
class FeedItem:
    """One sent edition as the feed shows it."""

    edition_date: date
    subject: str
    preheader: str
    editor_note: str
    sent_at: datetime  # when its send started (the pubDate)
    weekly: bool = False  # the weekly digest (its own archive path)


def rss(items: Sequence[FeedItem], *, base_url: str, title: str) -> bytes:
    """The feed document, UTF-8 with an XML declaration."""
    base = base_url.rstrip("/")
    ElementTree.register_namespace("atom", ATOM)
    root = ElementTree.Element("rss", {"version": "2.0"})
    channel = ElementTree.SubElement(root, "channel")
    _text(channel, "title", title)
    _text(channel, "link", f"{base}/archive/")
    _text(channel, "description", f"Past editions of {title}")
    _text(channel, "language", "en-gb")
    ElementTree.SubElement(channel, f"{{{ATOM}}}link", {
        "href": f"{base}/archive/feed.xml", "rel": "self", "type": "application/rss+xml"})
    if items:
        _text(channel, "lastBuildDate", _rfc822(max(item.sent_at for item in items)))
    for item in items:
        url = f"{base}/archive/{'weekly/' if item.weekly else ''}{item.edition_date.isoformat()}"
        entry = ElementTree.SubElement(channel, "item")
        what = "Weekly digest" if item.weekly else "Edition"
        _text(entry, "title", item.subject or f"{what} of {item.edition_date.isoformat()}")
        _text(entry, "link", url)
        guid = _text(entry, "guid", url)
        guid.set("isPermaLink", "true")
        _text(entry, "pubDate", _rfc822(item.sent_at))
        description = "\n\n".join(part for part in (item.preheader.strip(),
                                                    item.editor_note.strip()) if part)
        if description:
            _text(entry, "description", description)
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)


def _text(parent: ElementTree.Element, tag: str, value: str) -> ElementTree.Element:
    element = ElementTree.SubElement(parent, tag)
    element.text = _NOT_XML.sub("", value)
    return element


def _rfc822(when: datetime) -> str:
    """RFC 822 dates, as RSS 2.0 asks ("Thu, 26 Nov 2026 07:00:03 GMT")."""
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return format_datetime(aware.astimezone(UTC), usegmt=True)
