"""`/archive/feed.xml`: the archive's sent editions as RSS 2.0, read back by two parsers
(ElementTree for the exact document, feedparser as a feed reader would)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from xml.etree import ElementTree

import feedparser
import pytest
from flask.testing import FlaskClient

from mailer.app import App
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.models import SENT, Edition
from mailer.web import create_app
from mailer.web.feed import FEED_ITEMS
from tests.support.settings import make_settings

HOSTILE = "Votes & <b>motions</b> ]]> \x0b\"quoted\" 'single'"


def edition(day: date, *, state: str = SENT, subject: str = "", preheader: str = "",
            note: str = "") -> Edition:
    start = datetime(day.year, day.month, day.day, 7, 0, 3, tzinfo=UTC)
    return Edition(edition_date=day, state=state, subject=subject or f"Daily {day}",
                   preheader=preheader, editor_note=note, window_start=start - timedelta(1),
                   window_end=start, started_at=start if state == SENT else None,
                   finished_at=start + timedelta(minutes=4) if state == SENT else None)


@pytest.fixture
def any_app(database_url: str, tmp_path: Path, clock: FixedClock) -> Iterator[App]:
    application = App.create(make_settings(tmp_path, database_url=database_url), clock=clock)
    init_db(application.engine)
    yield application
    application.close()


def client_of(app: App) -> FlaskClient:
    return create_app(app, {"TESTING": True}).test_client()


def test_feed_lists_sent_editions_newest_first(any_app: App) -> None:
    with any_app.sessions.begin() as session:
        session.add_all([
            edition(date(2026, 11, 24), preheader="Monday's stories"),
            edition(date(2026, 11, 25), subject=HOSTILE, preheader="Tuesday <i>too</i>",
                    note="A note from the editor.\n\nSecond paragraph & more."),
            edition(date(2026, 11, 26), state="draft"),
            edition(date(2026, 11, 23), state="cancelled"),
        ])
    response = client_of(any_app).get("/archive/feed.xml")
    assert response.status_code == 200
    assert response.mimetype == "application/rss+xml"
    assert response.headers["Content-Type"] == "application/rss+xml; charset=utf-8"
    assert response.data.startswith(b"<?xml version='1.0' encoding='utf-8'?>")

    root = ElementTree.fromstring(response.data)
    assert root.tag == "rss" and root.get("version") == "2.0"
    channel = root.find("channel")
    assert channel is not None
    assert channel.findtext("title") == "LabourList Daily"
    assert channel.findtext("link") == "https://mail.example.org/archive/"
    items = channel.findall("item")
    assert [item.findtext("link") for item in items] == [
        "https://mail.example.org/archive/2026-11-25", "https://mail.example.org/archive/2026-11-24"]
    newest = items[0]
    assert newest.findtext("title") == HOSTILE.replace("\x0b", "")  # escaped, not lost
    assert newest.findtext("guid") == newest.findtext("link")
    assert parsedate_to_datetime(newest.findtext("pubDate") or "") == datetime(
        2026, 11, 25, 7, 0, 3, tzinfo=UTC)
    assert newest.findtext("description") == (
        "Tuesday <i>too</i>\n\nA note from the editor.\n\nSecond paragraph & more.")
    assert items[1].findtext("description") == "Monday's stories"
    assert b"<b>" not in response.data and b"]]>" not in response.data.replace(b"]]&gt;", b"")

    parsed = feedparser.parse(response.data)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "rss20"
    assert [entry.link for entry in parsed.entries][0].endswith("/archive/2026-11-25")


def test_feed_keeps_the_latest_thirty(app: App) -> None:
    first = date(2026, 9, 1)
    with app.sessions.begin() as session:
        session.add_all(edition(first + timedelta(days=n)) for n in range(FEED_ITEMS + 5))
    root = ElementTree.fromstring(client_of(app).get("/archive/feed.xml").data)
    links = [item.findtext("link") for item in root.iter("item")]
    assert len(links) == FEED_ITEMS == 30
    assert links[0] == f"https://mail.example.org/archive/{first + timedelta(days=34)}"
    assert links[-1] == f"https://mail.example.org/archive/{first + timedelta(days=5)}"


def test_an_empty_archive_is_a_valid_empty_feed(app: App) -> None:
    response = client_of(app).get("/archive/feed.xml")
    assert response.status_code == 200
    parsed = feedparser.parse(response.data)
    assert not parsed.bozo and parsed.entries == []


def test_archive_page_links_the_feed(app: App) -> None:
    page = client_of(app).get("/archive/").text
    assert ('<link rel="alternate" type="application/rss+xml" '
            'title="LabourList Daily: past editions" href="/archive/feed.xml">') in page
    assert 'href="/archive/feed.xml">Past editions as an RSS feed</a>' in page
    # Other pages do not claim a feed.
    assert "application/rss+xml" not in client_of(app).get("/subscribe").text


def test_feed_links_use_base_url_not_the_host_header(app: App) -> None:
    with app.sessions.begin() as session:
        session.add(edition(date(2026, 11, 25)))
    body = client_of(app).get("/archive/feed.xml",
                              headers={"Host": "evil.example.com"}).data
    assert b"evil.example.com" not in body and b"https://mail.example.org/archive/" in body
