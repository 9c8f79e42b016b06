"""Threat: a feed server that holds `mailer collect` hostage.

A server that sends a byte every half second is never silent long enough to trip a per-read
timeout; only a deadline on the whole fetch stops it.

Every test runs the `mailer` CLI (click's runner) against a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from mailer.app import App
from mailer.cli import EXIT_FEED, cli
from mailer.config import PROJECT_ROOT
from mailer.db import init_db
from mailer.models import Article, FeedState
from tests.conftest import make_settings
from tests.support.feeds import posts_every, rss
from tests.support.feedserver import FeedServer, Reply

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
