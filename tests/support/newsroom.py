"""The world of the end-to-end tests: a morning's feed, five people on the list, the CLI.

The `env` fixture (loaded through `pytest_plugins`) gives an initialised App on the test's
database, a local WordPress feed serving `posts()` over two pages, and the environment that
`run_mailer` runs `mailer` with; the SMTP sink is the `smtp_sink` fixture's.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mailer.app import App
from mailer.cli import cli
from mailer.clock import FixedClock
from mailer.config import PROJECT_ROOT
from mailer.db import init_db
from mailer.models import PENDING, UNSUBSCRIBED
from mailer.subscribers import add, set_status
from tests.support.feeds import Post, rss
from tests.support.feedserver import FeedServer
from tests.support.settings import make_settings
from tests.support.smtpsink import SmtpSink

# Thursday 26 November 2026, 06:59 London (GMT): the edition is due at 07:00.
NOW = datetime(2026, 11, 26, 6, 59, tzinfo=UTC)
HOSTILE = (
    '<p>Fine words.</p><script>alert("x")</script>'
    '<img src="https://labourlist.org/i.jpg" onerror="alert(1)" alt="pic">'
    '<a href="javascript:alert(2)">click</a><iframe src="https://evil.example/"></iframe>'
    '<p><a href="https://labourlist.org/ok/">a real link</a></p>'
)


def posts() -> tuple[list[Post], list[Post]]:
    h = timedelta(hours=1)
    page1 = [
        Post(101, "Starmer&#8217;s plan &#8211; what it means for unions &#038; councils",
             NOW - 1 * h, categories=("News",), raw_title=(
                 "Starmer&#8217;s plan &#8211; what it means for unions &#038; councils")),
        Post(102, "Good morning: the daily email", NOW - 2 * h, categories=("Daily email",)),
        Post(103, "Why the left must win the argument on housing", NOW - 3 * h,
             author="Tom Belger, Katie Neame & Morgan Jones", categories=("Comment",),
             content=HOSTILE),
        Post(104, "Polling shows a tight race in the north", NOW - 5 * h,
             categories=("Analysis",)),
    ]
    page2 = [
        Post(105, "Council by-election results round-up", NOW - 12 * h, categories=("News",)),
        Post(106, "An old story from two days ago", NOW - 50 * h, categories=("News",)),
    ]
    return page1, page2


@pytest.fixture
def env(tmp_path: Path, database_url: str,
        smtp_sink: SmtpSink) -> Iterator[tuple[App, FeedServer, dict[str, str]]]:
    """Five people on the list (three active), a two-page feed, the CLI's environment."""
    settings = make_settings(tmp_path, database_url=database_url, dsn=smtp_sink.dsn)
    app = App.create(settings, clock=FixedClock(NOW))
    init_db(app.engine)
    with app.sessions.begin() as s:
        add(s, "ann@example.org", name="Ann Active")
        add(s, "sian@example.org", name="Siân Evans")
        add(s, "bob@example.org", name="Bob Active")
        add(s, "pending@example.org", status=PENDING)
        gone, _ = add(s, "gone@example.org")
        set_status(s, gone, UNSUBSCRIBED, source="staff")
    with FeedServer() as feed:
        page1, page2 = posts()
        feed.serve_pages([rss(page1), rss(page2)], etag='W/"abc"',
                         last_modified="Thu, 26 Nov 2026 05:59:00 GMT")
        environ = {
            "MAILER_DATABASE_URL": database_url, "MAILER_FEED_URL": feed.url,
            "MAILER_DSN": smtp_sink.dsn, "MAILER_BASE_URL": "https://mail.labourlist.org",
            "MAILER_SECRET_KEY": "e2e-secret", "MAILER_NOW": NOW.isoformat(),
            "MAILER_CONFIG": str(PROJECT_ROOT / "config" / "mailer.toml"),
        }
        yield app, feed, environ
    app.close()


def run_mailer(environ: dict[str, str], *args: str) -> Result:
    """`mailer ARGS` in this process, with `environ` as its whole configuration."""
    return CliRunner().invoke(cli, list(args), env=environ, catch_exceptions=False)
