"""Threat: a feed server that holds `mailer collect` hostage, and feeds in the other formats
WordPress serves.

A server that sends a byte every half second is never silent long enough to trip a per-read
timeout; only a deadline on the whole fetch stops it. Atom 1.0 (`/feed/atom/`) and RSS 1.0
(`/feed/rdf/`) carry the same posts as RSS2 and must be collected by the same rules: the same
window, guid dedupe, sanitising, "Daily email" exclusion and paging.

Every test runs the `mailer` CLI (click's runner) against a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from mailer.app import App
from mailer.cli import cli
from mailer.cli.common import EXIT_FEED
from mailer.config import PROJECT_ROOT
from mailer.db import init_db
from mailer.models import Article, FeedState
from tests.support.feeds import Post, atom, posts_every, rdf, rss
from tests.support.feedserver import ATOM_TYPE, RDF_TYPE, RSS_TYPE, FeedServer, Reply
from tests.support.settings import make_settings

NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)


@dataclass
class Env:
    """A fresh database and the environment that points `mailer` at it."""

    app: App
    environ: dict[str, str]

    def mailer(self, *args: str, **env: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=self.environ | env,
                                  catch_exceptions=False)

    def articles(self) -> list[Article]:
        with self.app.sessions() as session:
            return list(session.scalars(select(Article).order_by(Article.published_at.desc())))

    def feed_state(self, url: str) -> FeedState | None:
        with self.app.sessions() as session:
            return session.get(FeedState, url)


def _env(tmp_path: Path, name: str) -> Iterator[Env]:
    settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / name}.db")
    app = App.create(settings)
    init_db(app.engine)
    environ = {
        "MAILER_DATABASE_URL": settings.database_url, "MAILER_NOW": NOW.isoformat(),
        "MAILER_CONFIG": str(PROJECT_ROOT / "config" / "mailer.toml"),
        "MAILER_DSN": settings.dsn,
    }
    yield Env(app, environ)
    app.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from _env(tmp_path, "main")


@pytest.fixture
def other_env(tmp_path: Path) -> Iterator[Env]:
    yield from _env(tmp_path, "other")


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as feed_server:
        yield feed_server


def _timed(env: Env, *args: str, **overrides: str) -> tuple[Result, float]:
    started = time.monotonic()
    result = env.mailer(*args, **overrides)
    return result, time.monotonic() - started


# ---- a server that drips (item 8) --------------------------------------------------------------

DRIP_PAGE = rss(posts_every(3000, NOW - timedelta(hours=1), 3, timedelta(hours=1)))


@pytest.mark.parametrize("drip_headers", [False, True], ids=["body", "headers"])
def test_a_feed_that_drips_is_cut_off_at_feed_timeout(
        env: Env, server: FeedServer, drip_headers: bool) -> None:
    """One byte every 0.5 s never trips a 1 s read timeout; the whole fetch still ends at 1 s."""
    server.serve_pages([DRIP_PAGE])
    server.set_reply(1, Reply(200, DRIP_PAGE, drip=0.5, drip_headers=drip_headers))

    result, took = _timed(env, "collect", MAILER_FEED_URL=server.url, MAILER_FEED_TIMEOUT="1")

    assert took < 1.6, f"mailer collect ran {took:.1f}s with feed_timeout=1"
    assert result.exit_code == EXIT_FEED, result.output
    line = f"error: feed {server.url} timed out after 1s"
    assert result.output.startswith(line), result.output
    assert "the whole fetch must finish within feed_timeout" in result.output
    assert result.output.count("\n") == 1
    assert env.articles() == []
    state = env.feed_state(server.url)
    assert state is not None and state.last_error == result.output[len("error: "):].strip()


def test_the_deadline_covers_every_page_of_the_fetch(env: Env, server: FeedServer) -> None:
    """Page 1 answers at once, page 2 drips: the deadline is for the fetch, not per page, and a
    fetch cut off on page 2 stores nothing from page 1 either."""
    page1 = posts_every(3100, NOW - timedelta(hours=1), 3, timedelta(hours=3))
    page2 = posts_every(3097, NOW - timedelta(hours=10), 3, timedelta(hours=3))
    server.serve_pages([rss(page1), rss(page2)])
    server.set_reply(2, Reply(200, rss(page2), drip=0.3))

    result, took = _timed(env, "collect", MAILER_FEED_URL=server.url, MAILER_FEED_TIMEOUT="1")

    assert took < 1.6, f"mailer collect ran {took:.1f}s with feed_timeout=1"
    assert result.exit_code == EXIT_FEED, result.output
    assert f"error: feed {server.url}?paged=2 timed out after 1s" in result.output
    assert [r.page for r in server.feed_requests()] == [1, 2]
    assert env.articles() == []


def test_mailer_send_reports_a_dripping_feed_as_a_feed_error(
        env: Env, server: FeedServer) -> None:
    """`mailer send` collects first: a feed cut off at its deadline is exit status 4."""
    server.serve_pages([DRIP_PAGE])
    server.set_reply(1, Reply(200, DRIP_PAGE, drip=0.5))

    result, took = _timed(env, "send", MAILER_FEED_URL=server.url, MAILER_FEED_TIMEOUT="1",
                          MAILER_SPAMASSASSIN_COMMAND="true")

    assert result.exit_code == EXIT_FEED, result.output
    assert f"feed {server.url} timed out after 1s" in result.output
    assert took < 3, f"mailer send ran {took:.1f}s with feed_timeout=1"


# ---- Atom 1.0 and RSS 1.0 (item 15) ----------------------------------------------------------


def _posts() -> tuple[list[Post], list[Post]]:
    """Two WordPress pages that exercise every collection rule.

    Page 1: an entity-laden title and joint byline with a relative image and hostile markup,
    the "Daily email" round-up (not an article), a post whose link is javascript: (dropped).
    Page 2: page 1's last post again (WordPress shifts pages when a post is published while
    paging), one more inside the window, and one before it (skipped; stops the paging).
    """
    lead = Post(4005, "Councils’ funding gap – what it means for Northbridge & Eastmoor",
                NOW - timedelta(hours=1), author="Hannah Okafor, Tom Ashworth & Leila Haddad",
                categories=("Analysis", "Local government"),
                image="/wp-content/uploads/2026/11/town-hall.jpg",
                paragraphs=["Council leaders say the settlement leaves a £38m gap.",
                            '<script>alert("x")</script><a href="javascript:alert(1)">Vote</a>'
                            ' <a href="/2026/11/earlier/">earlier</a>'
                            '<iframe src="https://evil.example/"></iframe>'])
    daily = Post(4004, "Good morning: the care deal", NOW - timedelta(hours=2),
                 author="LabourList", categories=("Daily email",))
    bad_link = Post(4003, "A post with a bad link", NOW - timedelta(hours=3),
                    link="javascript:alert(1)")
    comment = Post(4002, "Why the care deal matters", NOW - timedelta(hours=4),
                   author="Daniel Price", categories=("Comment",),
                   excerpt="Care workers waited a decade for this.")
    inside = Post(4001, "Union ballots on pay offer", NOW - timedelta(hours=20))
    before = Post(4000, "Last week's news", NOW - timedelta(days=4))
    return [lead, daily, bad_link, comment], [comment, inside, before]


def _collect_as(env: Env, feed: FeedServer, render: Callable[[Sequence[Post]], str],
                content_type: str) -> list[Article]:
    page1, page2 = _posts()
    feed.serve_pages([render(page1), render(page2)], content_type=content_type)
    result = env.mailer("collect", MAILER_FEED_URL=feed.url)
    assert result.exit_code == 0, result.output
    assert result.output == "collected: 3 new, 0 updated, 3 skipped, 2 page(s)\n"
    assert [r.page for r in feed.feed_requests()] == [1, 2]
    return env.articles()


def _fields(article: Article) -> dict[str, Any]:
    return {name: getattr(article, name) for name in (
        "title", "link", "author", "summary_html", "summary_text", "content_html", "image_url",
        "categories", "section", "published_at")}


@pytest.mark.parametrize(("render", "content_type", "path"), [
    pytest.param(atom, ATOM_TYPE, "/feed/atom/", id="atom"),
    pytest.param(rdf, RDF_TYPE, "/feed/rdf/", id="rss1-rdf"),
])
def test_wordpress_atom_and_rdf_are_collected_exactly_like_rss2(
        env: Env, other_env: Env, render: Callable[[Sequence[Post]], str], content_type: str,
        path: str) -> None:
    with FeedServer() as rss2_server, FeedServer(feed_path=path) as other_server:
        expected = _collect_as(env, rss2_server, rss, RSS_TYPE)
        got = _collect_as(other_env, other_server, render, content_type)

    assert [_fields(a) for a in got] == [_fields(a) for a in expected]
    lead = got[0]
    assert lead.title == "Councils’ funding gap – what it means for Northbridge & Eastmoor"
    assert lead.author == "Hannah Okafor, Tom Ashworth & Leila Haddad"
    assert lead.image_url == "https://labourlist.org/wp-content/uploads/2026/11/town-hall.jpg"
    assert "script" not in lead.content_html and "iframe" not in lead.content_html
    assert "javascript:" not in lead.content_html
    assert 'href="https://labourlist.org/2026/11/earlier/"' in lead.content_html
    assert [a.section for a in got] == ["Analysis", "Comment", "News"]
    if render is atom:  # Atom's <id> is WordPress's guid, as in RSS2
        assert [a.guid for a in got] == [a.guid for a in expected]
    else:  # RSS 1.0 has no guid: an item is its rdf:about, the permalink
        assert [a.guid for a in got] == [a.link for a in got]


def test_atom_window_is_the_published_date_not_the_last_edit(
        env: Env, server: FeedServer) -> None:
    """Atom's <updated> is the last edit: an old post edited this morning is not news, and a
    stored post edited later keeps the date it was published."""
    fresh = Post(4101, "Fresh story", NOW - timedelta(hours=2))
    old_but_edited = Post(4100, "Old story, typo fixed", NOW - timedelta(days=5),
                          modified=NOW - timedelta(minutes=30))
    server.serve_pages([atom([fresh, old_but_edited])], content_type=ATOM_TYPE)
    first = env.mailer("collect", MAILER_FEED_URL=server.url)
    assert first.output == "collected: 1 new, 0 updated, 1 skipped, 1 page(s)\n"

    edited = Post(4101, "Fresh story, updated", fresh.published, link=fresh.url,
                  modified=NOW - timedelta(minutes=5))
    server.serve_pages([atom([edited, old_but_edited])], content_type=ATOM_TYPE)
    second = env.mailer("collect", MAILER_FEED_URL=server.url)
    assert second.output == "collected: 0 new, 1 updated, 1 skipped, 1 page(s)\n"
    [article] = env.articles()
    assert article.title == "Fresh story, updated"
    assert article.published_at == fresh.published


def test_an_atom_feed_with_no_entries_is_a_quiet_day_not_an_error(
        env: Env, server: FeedServer) -> None:
    server.serve_pages([atom([])], content_type=ATOM_TYPE)
    result = env.mailer("collect", MAILER_FEED_URL=server.url)
    assert result.exit_code == 0, result.output
    assert result.output == "collected: 0 new, 0 updated, 0 skipped, 1 page(s)\n"


def test_an_empty_atom_document_is_refused_in_atom_terms(env: Env, server: FeedServer) -> None:
    """Not "has no channel": an Atom document has none to have."""
    server.serve_pages(['<?xml version="1.0" encoding="UTF-8"?>'
                        '<feed xmlns="http://www.w3.org/2005/Atom"></feed>'],
                       content_type=ATOM_TYPE)
    result = env.mailer("collect", MAILER_FEED_URL=server.url)
    assert result.exit_code == EXIT_FEED
    assert result.output == f"error: feed {server.url} has an empty <feed>\n"
