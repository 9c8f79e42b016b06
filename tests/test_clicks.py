"""Click measurement through the real redirect: links, bad input, scanners and readers.

Each test sends the sample edition through the file outbox (tests/support/clicks.py), then
follows the links in the readers' copies with Flask's test client the way a reader's browser
or a mail security gateway would, and reads what was recorded.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from functools import partial
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import psycopg
import pytest
import requests
from sqlalchemy import create_engine, delete, func, select
from waitress import create_server
from waitress.wasyncore import close_all

from mailer.app import App
from mailer.cli.serve import waitress_options
from mailer.clicks.recorder import ClickRecorder
from mailer.clicks.tokens import LinkSigner
from mailer.clicks.writer import Hit, sqlite_utc
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.edition import build_edition
from mailer.models import (
    BOT,
    BURST,
    HUMAN,
    PREFETCH,
    PREVIEW,
    TRAP,
    TRAPPED,
    Click,
    Delivery,
    Edition,
    EditionLink,
)
from mailer.web import CLICKS_KEY, create_app
from tests.support import pg
from tests.support.clicks import BROWSER_HEADERS, Copy, client_for, flush, follow, sent_edition
from tests.support.providers import FakeMailgun, FakePostmark, FakeSendGrid, running
from tests.support.seed import add_article, with_feed
from tests.support.settings import make_settings

CHROME = {"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                        "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
          "Accept": "text/html", "Accept-Language": "en-US"}


def verdicts(app: App) -> list[tuple[int, str]]:
    with app.sessions() as s:
        return [(c.position, c.verdict) for c in s.scalars(select(Click).order_by(Click.id))]


def links_of(app: App) -> dict[int, EditionLink]:
    with app.sessions() as s:
        return {row.position: row for row in s.scalars(select(EditionLink))}


def distinct(urls: list[str]) -> list[str]:
    return list(dict.fromkeys(urls))


def test_every_link_but_unsubscribe_goes_through_a_short_signed_redirect(
        app: App, tmp_path: Path) -> None:
    _, copies = sent_edition(app, tmp_path, readers=2)
    copy = copies[0]
    stored = links_of(app)
    assert {link.kind for link in stored.values()} == {
        "article", "donate", "signup", "archive", "trap"}
    # The text part: every link whole and under 80 characters; no trap there.
    assert copy.text_links and all(len(url) < 80 for url in copy.text_links)
    assert len(distinct(copy.text_links)) == len(stored) - 1
    # Unsubscribe and preferences never go through the redirect.
    assert re.search(r'href="https://mail\.example\.org/unsubscribe/[^"]+"', copy.html)
    assert re.search(r'href="https://mail\.example\.org/preferences/[^"]+"', copy.html)
    assert "utm_source" not in copy.html + copy.text
    # The trap: in the HTML only, hidden from sight, keyboards and screen readers.
    trap = re.search(r'<a [^>]*href="[^"]+/r/[^"]+"[^>]*></a>', copy.html)
    assert trap and 'aria-hidden="true"' in trap.group(0) and 'tabindex="-1"' in trap.group(0)
    assert "display:none" in trap.group(0)

    client = client_for(app)
    reached = {}
    for url in distinct(copy.html_links):
        answer = follow(client, url)
        assert answer.status_code == 302, url
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        reached[url] = answer.headers["Location"]
    assert set(reached.values()) == {link.target for link in stored.values()}
    assert all("utm_source=labourlist-daily" in stored[p].target
               for p in stored if stored[p].kind in ("article", "donate"))
    # The copies differ in nothing tracked (aggregate mode: no reader in a token).
    assert distinct(copies[1].html_links) == distinct(copy.html_links)


@pytest.fixture
def one_edition(app: App, tmp_path: Path) -> tuple[App, list[Copy]]:
    _, copies = sent_edition(app, tmp_path, readers=2)
    return app, copies


def test_bad_tokens_get_a_clear_404_and_count_nothing(one_edition: tuple[App, list[Copy]],
                                                      tmp_path: Path) -> None:
    app, copies = one_edition
    good = copies[0].text_links[0]
    token = urlsplit(good).path.removeprefix("/r/")
    with app.sessions() as s:
        edition_id = s.scalar(select(Edition.id))
        assert edition_id is not None
        size = s.scalar(select(func.count()).select_from(EditionLink))
    ours, theirs = LinkSigner("test-secret-key"), LinkSigner("another-install")
    flip = "A" if token[5] != "A" else "B"
    bad = {
        "forged": token[:5] + flip + token[6:],
        "truncated": token[:-3],
        "foreign": theirs.link_token(edition_id, 0),
        "beyond the list": ours.link_token(edition_id, size + 5),
        "unknown edition": ours.link_token(edition_id + 99, 0),
        "garbage": "%00%ff<script>",
        "too long": "A" * 500,
        "empty": "",
    }
    client = client_for(app)
    for why, value in bad.items():
        answer = follow(client, f"https://mail.example.org/r/{value}")
        assert answer.status_code == 404, why
        assert b'href="https://labourlist.org/"' in answer.data, why
        assert "Location" not in answer.headers, why
    # A 10 KB query string on a good token: still the story, and the query goes nowhere.
    answer = follow(client, good + "?x=" + "y" * 10_000)
    assert answer.status_code == 302 and "yyyy" not in answer.headers["Location"]
    flush(client)
    assert len(verdicts(app)) == 1
    # A deleted edition: its links stop working (a process that had not seen it).
    with app.sessions.begin() as s:
        s.execute(delete(Edition))
    answer = follow(client_for(app), good)
    assert answer.status_code == 404
    assert verdicts(app) == []  # the click went with its edition


def test_head_options_prefetch_and_other_methods_never_count(
        one_edition: tuple[App, list[Copy]]) -> None:
    app, copies = one_edition
    url = copies[0].text_links[1]
    client = client_for(app)
    assert follow(client, url, method="HEAD").status_code == 302
    assert follow(client, url, method="OPTIONS").status_code == 204
    assert follow(client, url, method="POST").status_code == 405
    prefetch = {**BROWSER_HEADERS, "Sec-Purpose": "prefetch"}
    assert follow(client, url, headers=prefetch, address="203.0.113.9").status_code == 302
    flush(client)
    assert verdicts(app) == [(1, PREFETCH)]


def test_a_flood_from_one_source_is_redirected_but_not_counted(
        one_edition: tuple[App, list[Copy]]) -> None:
    app, copies = one_edition
    url = copies[0].text_links[0]
    client = client_for(app)
    answers = [follow(client, url).status_code for _ in range(100)]
    assert set(answers) == {302}
    flush(client)
    assert len(verdicts(app)) == 60


def test_a_trap_seen_by_another_web_process_filters_the_sources_later_clicks(
        app: App, tmp_path: Path, clock: FixedClock) -> None:
    """Two web processes (two apps, each its own buffer and memory) on one database: the
    trap followed through one filters that source's clicks written by the other, before and
    after it, and no one else's."""
    _, copies = sent_edition(app, tmp_path, readers=3)
    trap = next(p for p, link in links_of(app).items() if link.kind == TRAP)
    found = re.search(r'<a [^>]*href="([^"]+/r/[^"]+)"[^>]*></a>', copies[0].html)
    assert found
    trap_url = found.group(1)
    first, second = client_for(app), client_for(app)
    follow(second, copies[0].text_links[0], headers=CHROME, address="192.0.2.40")
    follow(second, copies[1].text_links[0], headers=CHROME, address="198.51.100.9")
    flush(second)
    clock.advance(minutes=5)
    follow(first, trap_url, headers=CHROME, address="192.0.2.40")
    flush(first)
    clock.advance(minutes=5)
    follow(second, copies[0].text_links[1], headers=CHROME, address="192.0.2.40")
    flush(second)
    got = verdicts(app)
    assert (trap, TRAPPED) in got
    assert [v for _, v in got] == [TRAPPED, HUMAN, TRAPPED, TRAPPED]


def test_gateways_are_filtered_and_readers_counted_exactly(app: App, tmp_path: Path,
                                                           clock: FixedClock) -> None:
    """Security gateways click every link (the trap too) seconds after delivery; another
    clicks a burst of links without the trap; a crawler says what it is. Readers, with real
    browser headers, follow one or two links minutes apart. The human count is exactly the
    readers' clicks."""
    _, copies = sent_edition(app, tmp_path, readers=8)
    stored = links_of(app)
    trap = next(p for p, link in stored.items() if link.kind == TRAP)
    client = client_for(app)

    # Gateway 1 (browser-like user agent): every link, the trap among them, within seconds;
    # the flush in between puts the trap's effect on clicks already written.
    for n, url in enumerate(distinct(copies[0].html_links)):
        follow(client, url, headers=CHROME, address="192.0.2.10")
        if n == 3:
            flush(client)
    # Gateway 2: four stories in one second, no trap.
    for url in distinct(copies[1].text_links)[:4]:
        follow(client, url, headers=CHROME, address="192.0.2.20")
    # A crawler that names itself.
    follow(client, copies[2].text_links[0],
           headers={"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1; "
                                  "+http://www.google.com/bot.html)"}, address="192.0.2.30")
    flush(client)

    # Readers: minutes later, one or two links each, from their own addresses.
    expected = 0
    for n, copy in enumerate(copies[3:]):
        clock.advance(minutes=3)
        picks = distinct(copy.text_links)[n % 3: n % 3 + 1 + n % 2]
        for url in picks:
            follow(client, url, address=f"198.51.100.{n + 1}")
            clock.advance(seconds=40)
            expected += 1
    flush(client)

    got = verdicts(app)
    assert sum(1 for _, v in got if v == HUMAN) == expected
    assert {v for p, v in got if p == trap} == {TRAPPED}
    filtered = [v for _, v in got if v != HUMAN]
    assert filtered.count(BURST) == 4 and filtered.count(BOT) == 1
    assert filtered.count(TRAPPED) == len(distinct(copies[0].html_links))


def test_per_reader_tokens_name_the_delivery(app: App, tmp_path: Path) -> None:
    _, copies = sent_edition(app, tmp_path, readers=3, click_tracking="per-reader")
    assert all(len(url) < 80 for copy in copies for url in copy.text_links)
    client = client_for(app)
    with app.sessions() as s:
        delivery = {d.email: d.id for d in s.scalars(select(Delivery))}
    for n, copy in enumerate(copies):
        assert follow(client, copy.text_links[0], address=f"198.51.100.{n}").status_code == 302
    # A reader part that does not verify: the story still opens, nothing is counted.
    forged = copies[0].text_links[1][:-2] + "xx"
    assert follow(client, forged, address="198.51.100.50").status_code == 302
    flush(client)
    with app.sessions() as s:
        got = sorted(s.scalars(select(Click.delivery_id)))
    assert got == sorted(delivery[c.email] for c in copies)
    # Each reader's copy carries their own part; the link part is the edition's.
    first = [urlsplit(c.text_links[0]).path for c in copies]
    assert len(set(first)) == 3 and len({p.split(".")[0] for p in first}) == 1


def test_changing_the_mode_affects_only_later_editions(app: App, tmp_path: Path) -> None:
    day, copies = sent_edition(app, tmp_path, readers=1)
    app.settings = app.settings.replace(click_tracking="off")
    with app.sessions() as s:
        edition = s.scalar(select(Edition))
        assert edition is not None and edition.click_tracking == "aggregate"
    answer = follow(client_for(app), copies[0].text_links[0])
    assert answer.status_code == 302


@pytest.mark.parametrize("fake_type,dsn", [
    (FakeSendGrid, "sendgrid+api://SG.test-key@default"),
    (FakeMailgun, "mailgun+api://mg-key:mg.labourlist.org@default"),
    (FakePostmark, "postmark+api://pm-token@default"),
])
def test_per_reader_links_survive_each_providers_substitution(
        app: App, tmp_path: Path, fake_type: Any, dsn: str) -> None:
    """SendGrid and Mailgun fill the reader's part of each link themselves, Postmark gets
    finished bodies: every reader's links must still name that reader's delivery."""
    with running(fake_type) as fake:
        app.settings = app.settings.replace(dsn=f"{dsn}?endpoint={fake.url}")
        sent_edition(app, tmp_path, readers=2, click_tracking="per-reader")
        with app.sessions() as s:
            delivery = {d.email: d.id for d in s.scalars(select(Delivery))}
        client = client_for(app)
        for n, (reader, [message]) in enumerate(sorted(fake.delivered.items())):
            text_links = re.findall(r"https://mail\.example\.org/r/\S+", message.text)
            html_links = re.findall(r'href="(https://mail\.example\.org/r/[^"]+)"',
                                    unescape(message.html))
            assert text_links and html_links
            assert set(text_links) <= set(html_links)
            for url in (text_links[0], html_links[-2]):
                assert follow(client, url, address=f"198.51.100.{n}").status_code == 302
            flush(client)
            with app.sessions() as s:
                got = set(s.scalars(select(Click.delivery_id).where(
                    Click.fingerprint.is_not(None))))
            assert delivery[reader] in got
        with app.sessions() as s:
            assert set(s.scalars(select(Click.delivery_id))) == set(delivery.values())


@pytest.mark.postgres
@pytest.mark.parametrize("writer", ["thread", "process"])
def test_redirects_ride_out_a_database_outage(tmp_path: Path, pg_url: str,
                                              clock: FixedClock, writer: str) -> None:
    """With every connection to its database cut and new ones refused, as in a restart, the
    redirect still answers from memory (`mailer serve` preloads recent editions) and the
    clicks wait in the buffer, whichever process writes them; when the database is back they
    are written."""
    app = App.create(make_settings(tmp_path, database_url=pg_url, click_writer=writer),
                     clock=clock)
    init_db(app.engine)
    client = None
    try:
        day, copies = sent_edition(app, tmp_path, readers=2)
        client = client_for(app)
        assert client.application.extensions[CLICKS_KEY].preload(day) == 1
        name = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(pg.base_url(), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s", (name,))
            try:
                urls = distinct(copies[0].text_links)
                for n, url in enumerate(urls):
                    assert follow(client, url, address=f"198.51.100.{n}").status_code == 302
                assert flush(client) == 0
                recorder = client.application.extensions[CLICKS_KEY].recorder
                assert recorder.pending() == len(urls)
            finally:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        flush(client)
        assert len(verdicts(app)) == len(urls)
    finally:
        if client is not None:
            client.application.extensions[CLICKS_KEY].recorder.close()
        app.close()


def test_open_pixel_is_off_by_default_and_labelled_when_on(app: App, tmp_path: Path) -> None:
    _, copies = sent_edition(app, tmp_path, readers=1, open_tracking=True)
    with app.sessions() as s:
        edition = s.scalar(select(Edition))
        assert edition is not None
        # Preflight judged the email without the pixel (no alt text) and the trap.
        assert edition.preflight["errors"] == []
        kinds = [link.kind for link in s.scalars(select(EditionLink))]
    assert kinds.count("open") == 1
    pixel = re.search(r'<img [^>]*src="([^"]+/o/[^"]+)"', copies[0].html)
    assert pixel and pixel.group(1) not in copies[0].text
    client = client_for(app)
    answer = follow(client, pixel.group(1))
    assert answer.status_code == 200 and answer.mimetype == "image/gif"
    # The pixel's token is no link, and a link's token is no pixel.
    assert follow(client, pixel.group(1).replace("/o/", "/r/")).status_code == 404
    assert follow(client, copies[0].text_links[0].replace("/r/", "/o/")).status_code == 404
    flush(client)
    assert len(verdicts(app)) == 1


def test_default_has_no_pixel(one_edition: tuple[App, list[Copy]]) -> None:
    _, copies = one_edition
    assert "/o/" not in copies[0].html


def test_most_read_block_carries_yesterdays_top_stories(app: App, tmp_path: Path,
                                                        clock: FixedClock) -> None:
    day, copies = sent_edition(app, tmp_path, readers=1)
    stored = links_of(app)
    stories = [p for p, link in sorted(stored.items()) if link.kind == "article"]
    client = client_for(app)
    wanted = {stories[1]: 4, stories[2]: 3, stories[3]: 2, stories[4]: 1}
    reader = 0
    for position, clicks in wanted.items():
        url = next(u for u in copies[0].text_links
                   if LinkSigner("test-secret-key").read(urlsplit(u).path[3:]).position
                   == position)
        for _ in range(clicks):
            reader += 1
            clock.advance(minutes=2)
            follow(client, url, address=f"198.51.100.{reader}")
    flush(client)

    clock.advance(days=1)
    add_article(app, "tomorrow-1", title="A new day's first story")
    app.settings = app.settings.replace(most_read_block=True, most_read_min_clicks=2)
    edition = build_edition(app, day + timedelta(days=1))
    titles = [stored[p].title for p in (stories[1], stories[2], stories[3])]
    assert "Most read" in edition.html and "MOST READ" in edition.text
    block = edition.text.split("MOST READ", 1)[1]
    assert [block.index(t.split(":")[0][:30]) for t in titles] == sorted(
        block.index(t.split(":")[0][:30]) for t in titles)
    assert stored[stories[4]].title not in block
    # Too few clicks to rank: no block at all.
    app.settings = app.settings.replace(most_read_min_clicks=3)
    again = build_edition(app, day + timedelta(days=1))
    assert "MOST READ" not in again.text


def test_clicks_before_the_send_are_previews_not_readers(app: App, tmp_path: Path) -> None:
    """Staff clicking through a preview or a test send before the send must not count."""
    with_feed(app, tmp_path)
    edition = build_edition(app, app.clock.today(app.settings.tz))
    url = re.findall(r"https://mail\.example\.org/r/\S+", edition.text)[0]
    client = client_for(app)
    assert follow(client, url).status_code == 302
    flush(client)
    assert verdicts(app) == [(0, PREVIEW)]


def test_behind_a_proxy_readers_are_told_apart_and_otherwise_not_trusted(
        app: App, tmp_path: Path) -> None:
    """Under waitress as `mailer serve` runs it: with `trusted_proxies = 1` the forwarded
    address reaches the app (two readers, two fingerprints); with none, a client's own
    X-Forwarded-For is ignored (it could claim any address)."""
    _, copies = sent_edition(app, tmp_path, readers=1)
    path = urlsplit(copies[0].text_links[0]).path
    fingerprints = []
    for proxies in (1, 0):
        app.settings = app.settings.replace(trusted_proxies=proxies)
        web = create_app(app, {"TESTING": True})
        server = create_server(web, host="127.0.0.1", port=0,
                               **waitress_options(app.settings, threads=2))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            for reader in ("198.51.100.1", "198.51.100.2"):
                answer = requests.get(f"http://127.0.0.1:{server.effective_port}{path}",
                                      headers={**BROWSER_HEADERS, "X-Forwarded-For": reader},
                                      allow_redirects=False, timeout=10)
                assert answer.status_code == 302
        finally:
            # Every socket closed from the server's own loop, which then ends: closed from
            # here, under its select(), the loop could fail on them (EBADF).
            server.trigger.pull_trigger(partial(close_all, server._map))  # noqa: SLF001
            server.task_dispatcher.shutdown()
            thread.join(10)
            assert not thread.is_alive()
        web.extensions[CLICKS_KEY].recorder.flush()
        with app.sessions.begin() as s:
            fingerprints.append(len(set(s.scalars(select(Click.fingerprint)))))
            s.execute(delete(Click))
    assert fingerprints == [2, 1]


def test_the_web_app_clears_fingerprints_itself_after_48_hours(
        one_edition: tuple[App, list[Copy]], clock: FixedClock) -> None:
    """The retention purge runs hourly on the flusher's thread, so fingerprints go after 48
    hours whether or not cron runs `mailer clicks purge`."""
    app, copies = one_edition
    client = client_for(app)
    follow(client, copies[0].text_links[0])
    flush(client)
    clicks = client.application.extensions[CLICKS_KEY]
    clock.advance(hours=49)
    assert clicks.housekeeping().fingerprints == 1
    with app.sessions() as s:
        assert list(s.scalars(select(Click.fingerprint))) == [None]
    # And the flusher's thread calls it on its schedule.
    called = threading.Event()
    recorder = ClickRecorder(app.sessions, housekeeping=called.set, housekeeping_seconds=0.05)
    recorder.record(Hit(edition_id=999_999, position=0, at=clock.now(), address="x",
                        user_agent="y").raw())
    assert called.wait(5)


@pytest.mark.parametrize("at", [
    datetime(2026, 12, 4, 7, 20, 11, 228090, tzinfo=UTC),
    datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC),  # (no microseconds: still six digits)
    datetime(2026, 10, 25, 1, 30, tzinfo=ZoneInfo("Europe/London")),  # (British Summer Time)
    datetime(2027, 1, 1, 0, 0, 0, 1, tzinfo=ZoneInfo("America/New_York")),
])
def test_clicks_times_are_written_as_the_column_type_writes_them(at: datetime) -> None:
    dialect = create_engine("sqlite://").dialect
    processor = Click.__table__.c.at.type.dialect_impl(dialect).bind_processor(dialect)
    assert processor is not None
    assert sqlite_utc(at) == processor(at)
