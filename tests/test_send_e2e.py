"""The whole daily job through the CLI: a local WordPress feed, a real SMTP server, a database.

Runs on SQLite and on the real PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from mailer.app import App
from mailer.cli import cli
from mailer.models import SENT, UNSUBSCRIBED, Edition, EditionLink
from mailer.subscribers import find, set_status
from tests.support.feeds import rss
from tests.support.feedserver import Reply
from tests.support.newsroom import NOW, run_mailer
from tests.support.smtpsink import SmtpSink


def test_daily_send_end_to_end(env, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    app, feed, environ = env
    result = run_mailer(environ, "send")
    assert result.exit_code == 0, result.output
    assert "sent 3" in result.output
    got = Counter(smtp_sink.recipients())
    assert got == Counter({"ann@example.org": 1, "sian@example.org": 1, "bob@example.org": 1})
    # Paging stopped once items were older than the window: page 3 never asked for.
    assert {r.page for r in feed.feed_requests()} == {1, 2}

    for received in smtp_sink.messages:
        msg = message_from_bytes(received.data, policy=policy.default)
        for header in ("From", "Reply-To", "To", "Subject", "Date", "Message-ID",
                       "MIME-Version", "List-Id"):
            assert msg[header], header
        unsub = str(msg["List-Unsubscribe"])
        assert unsub.startswith("<https://mail.labourlist.org/unsubscribe/")
        assert "<mailto:" in unsub
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg.get_content_type() == "multipart/alternative"
        parts = list(msg.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        assert all(p["Content-Transfer-Encoding"] == "quoted-printable" for p in parts)
        assert all(len(line) <= 998 for line in received.data.split(b"\r\n"))
        text, html = parts[0].get_content(), parts[1].get_content()
        # Only the window's articles; not the Daily email post; titles unescaped.
        assert "Starmer’s plan – what it means for unions & councils" in text
        assert "Why the left must win the argument on housing" in text
        assert "Council by-election results round-up" in text
        assert "An old story from two days ago" not in text + html
        assert "the daily email" not in (text + html).lower().replace("labourlist daily", "")
        # Nothing hostile survives.
        for bad in ("<script", "onerror", "javascript:", "<iframe", "evil.example"):
            assert bad not in html.lower()
        # Stories and the donate button go through the click redirect (the default,
        # aggregate measurement); the site's UTM tags are on the targets it redirects to.
        assert "https://mail.labourlist.org/r/" in html and "£10 a month" in html
        assert "utm_source=" not in html
        # The unsubscribe link in the body is the recipient's own.
        assert unsub.split(">")[0][1:] in html
    ids = [str(message_from_bytes(r.data, policy=policy.default)["Message-ID"])
           for r in smtp_sink.messages]
    assert len(set(ids)) == len(ids)

    # Running it again for the same date sends nothing and says so.
    again = run_mailer(environ, "send")
    assert again.exit_code == 0 and "already sent" in again.output
    assert len(smtp_sink.recipients()) == 3
    with app.sessions() as s:
        edition = s.scalar(select(Edition))
        assert edition is not None and edition.state == SENT and edition.sent_count == 3
        targets = s.scalars(select(EditionLink.target)
                            .where(EditionLink.kind.in_(("article", "donate")))).all()
        assert targets and all("utm_source=labourlist-daily" in t for t in targets)
    # Conditional GET: the second fetch sent back the validators exactly.
    assert run_mailer(environ, "collect").output.startswith("feed not modified")
    last = feed.feed_requests()[-1]
    assert last.headers.get("if-none-match") == 'W/"abc"'
    assert last.headers.get("if-modified-since") == "Thu, 26 Nov 2026 05:59:00 GMT"


def test_test_send_and_dry_run_touch_no_ledger(env, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    app, _feed, environ = env
    dry = run_mailer(environ, "send", "--dry-run")
    assert dry.exit_code == 0 and "would send to 3" in dry.output
    test = run_mailer(environ, "send", "--test-to", "editor@example.org")
    assert test.exit_code == 0, test.output
    assert smtp_sink.recipients() == ["editor@example.org"]
    msg = message_from_bytes(smtp_sink.messages[0].data, policy=policy.default)
    assert str(msg["Subject"]).startswith("[TEST]")
    real = run_mailer(environ, "send")
    assert real.exit_code == 0 and "sent 3" in real.output


@pytest.mark.parametrize(
    ("reply", "expect"),
    [
        (Reply(500, "oops", "text/plain"), "HTTP 500"),
        (Reply(200, "<rss><channel><item><title>broken", "application/rss+xml"), "XML"),
        (Reply(200, "<!doctype html><html><body>Hi</body></html>", "text/html"), "not RSS"),
        (Reply(200, "", "application/rss+xml"), "empty"),
        (Reply(200, "x", delay=3.0), "timed out"),
    ],
    ids=["http-500", "malformed", "html", "empty", "timeout"],
)
def test_bad_feed_sends_nothing(env, smtp_sink: SmtpSink, reply: Reply, expect: str) -> None:  # type: ignore[no-untyped-def]
    app, feed, environ = env
    feed.set_reply(1, reply)
    result = CliRunner().invoke(cli, ["send"], env={**environ, "MAILER_FEED_TIMEOUT": "1"})
    assert result.exit_code == 4  # feed error
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and expect.lower() in lines[0].lower(), result.output
    assert smtp_sink.recipients() == []
    with app.sessions() as s:
        assert s.scalar(select(Edition).where(Edition.state == SENT)) is None


def test_no_articles_skips_the_edition(env, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    app, feed, environ = env
    feed.serve_pages([rss([])])
    result = run_mailer(environ, "send")
    assert result.exit_code == 0 and "no articles" in result.output
    assert smtp_sink.recipients() == []
    with app.sessions() as s:
        assert s.scalar(select(Edition.state)) == "skipped"


def test_late_send_refused_unless_forced(env, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    _app, _feed, environ = env
    late = {**environ, "MAILER_NOW": (NOW + timedelta(hours=5)).isoformat()}
    refused = CliRunner().invoke(cli, ["send"], env=late)
    assert refused.exit_code == 3 and "--force" in refused.output
    assert smtp_sink.recipients() == []
    forced = run_mailer(late, "send", "--force", "--reason", "feed outage this morning")
    assert forced.exit_code == 0, forced.output
    assert len(smtp_sink.recipients()) == 3


def test_unsubscribed_before_send_is_not_reached(env, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    app, _feed, environ = env
    with app.sessions.begin() as s:
        sub = find(s, "bob@example.org")
        assert sub is not None
        set_status(s, sub, UNSUBSCRIBED, source="one-click")
    assert run_mailer(environ, "send").exit_code == 0
    assert sorted(smtp_sink.recipients()) == ["ann@example.org", "sian@example.org"]


def test_one_click_unsubscribe_then_next_send_skips_them(env, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """RFC 8058 POST through the real web app, then `mailer send`: the address is not reached."""
    from mailer.tokens import UNSUBSCRIBE, make_token
    from mailer.web import create_app

    app, _feed, environ = env
    with app.sessions() as s:
        bob = find(s, "bob@example.org")
        assert bob is not None
        token = make_token(environ["MAILER_SECRET_KEY"], UNSUBSCRIBE, bob.id)
    web_app = App.create(app.settings.replace(secret_key=environ["MAILER_SECRET_KEY"]),
                         clock=app.clock)
    client = create_app(web_app, {"TESTING": True}).test_client()
    answer = client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    with app.sessions() as s:
        assert find(s, "bob@example.org").status == UNSUBSCRIBED  # type: ignore[union-attr]
    assert run_mailer(environ, "send").exit_code == 0
    assert sorted(smtp_sink.recipients()) == ["ann@example.org", "sian@example.org"]
    web_app.close()


def test_paused_subscriber_comes_back_when_the_pause_ends(env, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    from mailer.models import PAUSED

    app, _feed, environ = env
    with app.sessions.begin() as s:
        ann = find(s, "ann@example.org")
        assert ann is not None
        set_status(s, ann, PAUSED, source="preferences")
        ann.paused_until = NOW - timedelta(minutes=1)
    assert run_mailer(environ, "send").exit_code == 0
    assert "ann@example.org" in smtp_sink.recipients()
