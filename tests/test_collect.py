"""The Collect stage against a real local HTTP server serving WordPress-shaped RSS2.

Nothing is mocked: requests talks to a real socket, feedparser parses the bytes, nh3 sanitises,
and the rows land in SQLite (and, for the cases that touch the database in interesting ways,
PostgreSQL too).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailer.app import App
from mailer.clock import FixedClock
from mailer.collect import CollectResult, collect
from mailer.collect.clean import summarise
from mailer.collect.entries import section_for
from mailer.db import init_db
from mailer.errors import FeedError
from mailer.models import Article, FeedState
from mailer.sample import SAMPLE_SUBSCRIBERS, write_sample_feed
from tests.support.feeds import RECORDED_PAGE, Post, posts_every, rss, yoast_footer
from tests.support.feedserver import FeedServer, Reply
from tests.support.settings import make_settings

NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)  # the conftest clock


# ---- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as feed_server:
        yield feed_server


@pytest.fixture
def db_app(tmp_path: Path, clock: FixedClock, database_url: str) -> Iterator[App]:
    """Like `app`, but once on SQLite and once on a fresh PostgreSQL database."""
    application = App.create(make_settings(tmp_path, database_url=database_url), clock=clock)
    init_db(application.engine)
    yield application
    application.close()


def point_at(app: App, url: str, **changes: object) -> None:
    app.settings = app.settings.replace(feed_url=url, **changes)


def stored(app: App) -> list[Article]:
    with app.sessions() as session:
        return list(session.scalars(select(Article).order_by(Article.published_at.desc())))


def by_guid(app: App) -> dict[str, Article]:
    return {a.guid: a for a in stored(app)}


def article_count(app: App) -> int:
    with app.sessions() as session:
        return session.scalar(select(func.count()).select_from(Article)) or 0


def feed_state(app: App) -> FeedState | None:
    with app.sessions() as session:
        return session.get(FeedState, app.settings.feed_url)


def guid(post_id: int) -> str:
    return f"https://labourlist.org/?p={post_id}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- paging ----------------------------------------------------------------------------------


def test_two_pages_follow_the_window_and_stop_past_since(db_app: App, server: FeedServer) -> None:
    page1 = posts_every(300, NOW - timedelta(minutes=30), 4, timedelta(hours=2))
    # Page 2 reaches back past `since`: its oldest item is outside the window.
    page2 = [
        Post(id=290, title="Party conference fringe guide", published=NOW - timedelta(hours=8)),
        Post(id=289, title="Shadow cabinet reshuffle latest", published=NOW - timedelta(hours=14)),
        Post(id=288, title="Union ballots on pay offer", published=NOW - timedelta(hours=23)),
        Post(id=287, title="Yesterday's news", published=NOW - timedelta(hours=26)),
    ]
    page3 = posts_every(280, NOW - timedelta(hours=30), 4, timedelta(hours=3))
    server.serve_pages([rss(page1), rss(page2), rss(page3)])
    point_at(db_app, server.url)

    result = collect(db_app, since=NOW - timedelta(hours=24))

    assert result == CollectResult(pages=2, new=7, updated=0, skipped=1, not_modified=False,
                                   status=200)
    assert [r.page for r in server.feed_requests()] == [1, 2]  # page 3 never asked for
    assert set(by_guid(db_app)) == {guid(p.id) for p in page1 + page2[:3]}
    first, second = server.feed_requests()
    assert first.headers["user-agent"] == db_app.settings.user_agent
    assert second.query == {"paged": "2"}
    assert "if-none-match" not in second.headers and "if-modified-since" not in second.headers
    newest = stored(db_app)[0]
    assert newest.published_at == NOW - timedelta(minutes=30)
    assert newest.published_at.tzinfo is not None
    assert newest.published_at.utcoffset() == timedelta(0)


def test_page_one_alone_when_it_already_reaches_past_since(app: App, server: FeedServer) -> None:
    posts = posts_every(400, NOW - timedelta(hours=1), 5, timedelta(hours=8))  # back to 33h
    server.serve_pages([rss(posts), rss(posts_every(390, NOW - timedelta(days=3), 2,
                                                    timedelta(hours=1)))])
    point_at(app, server.url)

    result = collect(app, since=NOW - timedelta(hours=24))

    assert (result.pages, result.new, result.skipped) == (1, 3, 2)
    assert [r.page for r in server.feed_requests()] == [1]


def test_404_on_page_three_is_the_end(app: App, server: FeedServer) -> None:
    page1 = posts_every(500, NOW - timedelta(hours=1), 4, timedelta(hours=3))
    page2 = posts_every(496, NOW - timedelta(hours=13), 4, timedelta(hours=3))
    server.serve_pages([rss(page1), rss(page2)])  # ?paged=3 answers 404 (an HTML page)
    point_at(app, server.url)

    result = collect(app)  # default since: window_cap_hours (72) back

    assert [r.page for r in server.feed_requests()] == [1, 2, 3]
    assert (result.pages, result.new, result.skipped, result.status) == (2, 8, 0, 200)


def test_paging_stops_at_feed_max_pages(app: App, server: FeedServer) -> None:
    pages = [rss(posts_every(600 - 10 * n, NOW - timedelta(hours=1 + 5 * n), 4,
                             timedelta(hours=1))) for n in range(4)]
    server.serve_pages(pages)
    point_at(app, server.url, feed_max_pages=2)

    result = collect(app)

    assert [r.page for r in server.feed_requests()] == [1, 2]
    assert (result.pages, result.new) == (2, 8)


def test_a_cache_that_ignores_paged_does_not_loop(app: App, server: FeedServer) -> None:
    page = rss(posts_every(700, NOW - timedelta(hours=1), 3, timedelta(hours=1)))
    server.serve_pages([page] * 5)
    point_at(app, server.url)

    result = collect(app)

    assert [r.page for r in server.feed_requests()] == [1, 2]
    assert result.new == 3


def test_a_post_on_two_pages_is_stored_once(app: App, server: FeedServer) -> None:
    # A post published while we page shifts everything down: the last item of page 1
    # reappears at the top of page 2.
    page1 = posts_every(800, NOW - timedelta(hours=1), 3, timedelta(hours=2))
    page2 = [page1[-1], *posts_every(797, NOW - timedelta(hours=7), 2, timedelta(hours=2))]
    server.serve_pages([rss(page1), rss(page2)])
    point_at(app, server.url)

    result = collect(app)

    assert result.new == 5
    assert article_count(app) == 5


def test_an_empty_well_formed_feed_is_fine(app: App, server: FeedServer) -> None:
    server.serve_pages([rss([])])
    point_at(app, server.url)

    result = collect(app)

    assert (result.pages, result.new, result.skipped) == (1, 0, 0)
    assert [r.page for r in server.feed_requests()] == [1]
    state = feed_state(app)
    assert state is not None and state.last_error == "" and state.last_ok_at == NOW


# ---- what is stored ----------------------------------------------------------------------------


def test_recorded_wordpress_page(app: App, server: FeedServer) -> None:
    server.serve_pages([RECORDED_PAGE])
    point_at(app, server.url)

    result = collect(app, since=NOW - timedelta(hours=24))

    assert (result.new, result.skipped) == (2, 1)  # the "Daily email" post is not an article
    articles = by_guid(app)
    assert guid(140190) not in articles
    analysis = articles[guid(140211)]
    assert analysis.title == (
        "Councils’ funding gap – what the settlement means for Northbridge & Eastmoor"
    )
    assert analysis.author == "Hannah Okafor, Tom Ashworth & Leila Haddad"
    assert analysis.categories == ["Analysis", "Local government"]
    assert analysis.section == "Analysis"
    assert analysis.link == "https://labourlist.org/2026/11/councils-funding-gap-northbridge-eastmoor/"
    assert analysis.published_at == datetime(2026, 11, 25, 21, 4, tzinfo=UTC)
    assert analysis.image_url == (
        "https://labourlist.org/wp-content/uploads/2026/11/town-hall-1024x576.jpg"
    )
    assert analysis.summary_text == (
        "Labour council leaders in Northbridge and Eastmoor say this year’s settlement leaves "
        "a £38m gap in adult social care – and they want ministers to close it before April."
    )
    assert "appeared first on" not in analysis.summary_html
    assert "<h2>“We can’t cut our way out”</h2>" in analysis.content_html
    assert "srcset" not in analysis.content_html and "class=" not in analysis.content_html
    news = articles[guid(140205)]
    assert news.title == "Unions back ‘landmark’ fair pay agreement for care workers"
    assert news.section == "News"
    assert news.image_url == ""


def test_daily_email_is_skipped_whatever_its_case(app: App, server: FeedServer) -> None:
    posts = [
        Post(id=900, title="Good morning", published=NOW - timedelta(hours=1),
             categories=("daily EMAIL",)),
        Post(id=899, title="Also the round-up", published=NOW - timedelta(hours=2),
             categories=("News", "Daily email")),
        Post(id=898, title="A real story", published=NOW - timedelta(hours=3)),
    ]
    server.serve_pages([rss(posts)])
    point_at(app, server.url)

    result = collect(app)

    assert (result.new, result.skipped) == (1, 2)
    assert list(by_guid(app)) == [guid(898)]


def test_titles_bylines_and_categories_are_plain_text(app: App, server: FeedServer) -> None:
    posts = [
        Post(id=1001, title="Labour’s “new deal” – unions & councils respond…",
             published=NOW - timedelta(hours=1), author="Tom Belger, Katie Neame & Morgan Jones",
             categories=("comment", "Keir Starmer")),
        # WordPress sometimes double-encodes, and titles can carry markup.
        Post(id=1002, title="", published=NOW - timedelta(hours=2),
             raw_title="Labour&amp;#8217;s &lt;em&gt;bold&lt;/em&gt;\n\t  plan &amp;amp; more",
             author="<b>Rhiannon</b> Evans", categories=("Fish &amp; chips",)),
        Post(id=1003, title="A " + "very " * 150 + "long title", published=NOW - timedelta(hours=3),
             categories=()),
    ]
    server.serve_pages([rss(posts)])
    point_at(app, server.url)

    collect(app)

    articles = by_guid(app)
    first = articles[guid(1001)]
    assert first.title == "Labour’s “new deal” – unions & councils respond…"
    assert first.author == "Tom Belger, Katie Neame & Morgan Jones"
    assert first.section == "Comment"  # canonical spelling from settings.sections
    assert first.categories == ["comment", "Keir Starmer"]
    second = articles[guid(1002)]
    assert second.title == "Labour’s bold plan & more"
    assert second.author == "Rhiannon Evans"
    assert second.categories == ["Fish & chips"]
    assert second.section == "News"
    long = articles[guid(1003)]
    assert len(long.title) <= 500 and long.title.endswith("…")
    assert long.section == "News"


def test_hostile_html_is_removed(app: App, server: FeedServer) -> None:
    hostile = (
        '<p onclick="alert(3)" style="color:red" class="lead">Safe paragraph with '
        '<a href="https://labourlist.org/ok" target="_blank">a link</a>.</p>\n'
        '<img src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUg==" alt="inline">\n'
        '<img src="https://cdn.example.org/photo.jpg" onerror="alert(\'img\')" alt="Photo">\n'
        "<script>alert('xss')</script>\n"
        "<style>body { display: none }</style>\n"
        '<iframe src="https://evil.example/embed">iframe fallback text</iframe>\n'
        '<p><a href="javascript:alert(1)">click me</a> '
        '<a href="JaVaScRiPt:alert(2)">shout</a> '
        '<a href="java&#x09;script:alert(5)">tabbed</a> '
        '<a href="data:text/html;base64,PHNjcmlwdD4=">data link</a></p>\n'
        '<svg onload="alert(4)"><text>svg text</text></svg>\n'
        '<form action="https://evil.example/"><input name="password"></form>\n'
        '<object data="https://evil.example/x.swf"></object><embed src="x.swf">\n'
        "<!-- a comment with <script>alert(6)</script> -->\n"
        '<p><img src="/wp-content/uploads/relative.jpg" alt="relative"></p>\n'
    )
    posts = [
        Post(id=1100, title="Hostile", raw_title="&lt;script&gt;alert(1)&lt;/script&gt;Tories "
             "&lt;b&gt;rattled&lt;/b&gt;", published=NOW - timedelta(hours=1),
             content=hostile,
             description='<p>Excerpt <img src=x onerror="alert(7)"><script>alert(8)</script>'
                         '<a href="javascript:alert(9)">more</a></p>'),
    ]
    server.serve_pages([rss(posts)])
    point_at(app, server.url)

    collect(app)

    (article,) = stored(app)
    assert article.title == "Tories rattled"
    for html in (article.content_html, article.summary_html):
        lowered = html.lower()
        for bad in ("<script", "alert(", "onerror", "onclick", "onload", "javascript:",
                    "<iframe", "iframe fallback", "<style", "display: none", "data:", "<svg",
                    "svg text", "<form", "<input", "<object", "<embed", "style=", "class=",
                    "target=", "<!--"):
            assert bad not in lowered, (bad, html)
    assert "Safe paragraph with" in article.content_html
    assert '<a href="https://labourlist.org/ok" rel="noopener noreferrer">a link</a>' in (
        article.content_html
    )
    assert "click me" in article.content_html  # the text stays, the link goes
    # A relative image is made absolute against the post's link (an email has no base).
    assert 'src="https://labourlist.org/wp-content/uploads/relative.jpg"' in article.content_html
    assert article.image_url == "https://cdn.example.org/photo.jpg"  # not the data: URI
    assert "alert" not in article.summary_text


def test_items_whose_link_is_not_http_are_skipped(app: App, server: FeedServer) -> None:
    posts = [
        Post(id=1200, title="Script link", published=NOW - timedelta(hours=1),
             link="javascript:alert(1)"),
        Post(id=1201, title="Mail link", published=NOW - timedelta(hours=2),
             link="mailto:editor@labourlist.org"),
        Post(id=1202, title="Fine", published=NOW - timedelta(hours=3)),
    ]
    server.serve_pages([rss(posts)])
    point_at(app, server.url)

    result = collect(app)

    assert (result.new, result.skipped) == (1, 2)
    assert list(by_guid(app)) == [guid(1202)]


def test_excerpt_loses_footer_and_read_more_and_is_trimmed(app: App, server: FeedServer) -> None:
    words = ("Members in every region told the party the same thing about bus services and "
             "rents, and the leadership says it is listening to them carefully. ") * 6
    link = "https://labourlist.org/2026/11/long-read/"
    description = (
        f"<p>{words}<a class=\"more-link\" href=\"{link}\">Continue reading<span "
        "class=\"screen-reader-text\"> &#8220;Labour&#8217;s long read&#8221;</span></a></p>\n"
        + yoast_footer("Labour’s long read", link)
    )
    posts = [
        Post(id=1300, title="Labour’s long read", published=NOW - timedelta(hours=1),
             link=link, description=description),
        Post(id=1301, title="Short", published=NOW - timedelta(hours=2),
             description="<p>Councils want a multi-year deal [&#8230;]</p>\n"
                         + yoast_footer("Short", "https://labourlist.org/s/")),
        Post(id=1302, title="No excerpt", published=NOW - timedelta(hours=3), description="",
             content="<p>Only the body says anything.</p><p>Second paragraph.</p>"),
    ]
    server.serve_pages([rss(posts)])
    point_at(app, server.url)

    collect(app)

    articles = by_guid(app)
    long = articles[guid(1300)].summary_text
    assert len(long) <= 300 and long.endswith("…")
    assert words.startswith(long[:-1])
    assert words[len(long) - 1] == " "  # cut on a word boundary
    assert "Continue reading" not in long and "appeared first" not in long
    assert articles[guid(1301)].summary_text == "Councils want a multi-year deal…"
    assert articles[guid(1302)].summary_text == "Only the body says anything. Second paragraph."


def test_summarise_keeps_a_complete_sentence_without_an_ellipsis() -> None:
    assert summarise("<p>It passed. [&#8230;]</p>") == "It passed."
    assert summarise("<p>It passed… Read more</p>") == "It passed…"
    assert summarise("") == ""
    footer_only = yoast_footer("Title", "https://labourlist.org/t/")
    assert summarise(footer_only, "<p>Body text.</p>") == "Body text."


def test_element_order_does_not_matter(tmp_path: Path, clock: FixedClock) -> None:
    posts = posts_every(1400, NOW - timedelta(hours=1), 6, timedelta(hours=2),
                        author="Leila Haddad", categories=("Analysis", "Polling"),
                        image="https://labourlist.org/wp-content/uploads/chart.png")
    results = []
    for seed in (None, 3, 11):
        home = tmp_path / f"s{seed}"
        home.mkdir()
        app = App.create(make_settings(home), clock=clock)
        init_db(app.engine)
        feed = home / "feed.xml"
        feed.write_text(rss(posts, shuffle_seed=seed), encoding="utf-8")
        point_at(app, str(feed))
        collect(app)
        results.append([
            (a.guid, a.title, a.link, a.author, a.published_at, a.categories, a.section,
             a.image_url, a.summary_text, a.content_html) for a in stored(app)
        ])
        app.close()
    assert len(results[0]) == 6
    assert results[0] == results[1] == results[2]


# ---- edits and conditional GET ----------------------------------------------------------------


def test_edited_post_updates_its_row_but_keeps_published_at(
    db_app: App, server: FeedServer, clock: FixedClock
) -> None:
    original = Post(id=1500, title="Minister’s statement on rail",
                    published=NOW - timedelta(hours=3), author="Daniel Price",
                    categories=("News",), excerpt="First version.")
    other = Post(id=1499, title="Unchanged story", published=NOW - timedelta(hours=5))
    server.serve_pages([rss([original, other])])
    point_at(db_app, server.url)
    assert collect(db_app).new == 2

    clock.advance(hours=4)
    edited = Post(id=1500, title="Minister’s statement on rail – updated",
                  published=NOW + timedelta(hours=2),  # WordPress bumped the date
                  author="Daniel Price, Hannah Okafor", categories=("Analysis", "Rail"),
                  excerpt="Second version.",
                  image="https://labourlist.org/wp-content/uploads/rail.jpg")
    server.serve_pages([rss([edited, other])])

    result = collect(db_app)

    assert (result.new, result.updated) == (0, 1)  # the unchanged post is not "updated"
    articles = by_guid(db_app)
    row = articles[guid(1500)]
    assert row.title == "Minister’s statement on rail – updated"
    assert row.author == "Daniel Price, Hannah Okafor"
    assert row.categories == ["Analysis", "Rail"]
    assert row.section == "Analysis"
    assert row.summary_text == "Second version."
    assert row.image_url == "https://labourlist.org/wp-content/uploads/rail.jpg"
    assert row.published_at == NOW - timedelta(hours=3)  # never moves
    assert row.updated_at == NOW + timedelta(hours=4)
    assert articles[guid(1499)].updated_at == NOW


def test_conditional_get_sends_back_exact_validators(
    db_app: App, server: FeedServer, clock: FixedClock
) -> None:
    etag = 'W/"8a3f0c2e9b7d4c1e-gzip"'
    last_modified = "Wed, 25 Nov 2026 21:04:00 GMT"
    posts = posts_every(1600, NOW - timedelta(hours=1), 4, timedelta(hours=4))
    older = posts_every(1590, NOW - timedelta(hours=17), 2, timedelta(hours=1))
    server.serve_pages([rss(posts), rss(older)], etag=etag, last_modified=last_modified)
    point_at(db_app, server.url)

    first = collect(db_app)
    assert (first.status, first.new, first.not_modified) == (200, 6, False)
    state = feed_state(db_app)
    assert state is not None
    assert (state.etag, state.last_modified) == (etag, last_modified)

    clock.advance(hours=1)
    before = len(server.requests)
    second = collect(db_app)

    assert second == CollectResult(pages=0, new=0, updated=0, skipped=0, not_modified=True,
                                   status=304)
    sent = server.requests[before:]
    assert len(sent) == 1  # nothing else fetched after a 304
    assert sent[0].headers["if-none-match"] == etag
    assert sent[0].headers["if-modified-since"] == last_modified
    state = feed_state(db_app)
    assert state is not None
    assert (state.last_status, state.last_error) == (304, "")
    assert state.last_fetch_at == state.last_ok_at == NOW + timedelta(hours=1)
    assert (state.etag, state.last_modified) == (etag, last_modified)

    # A new post changes the validators: a full fetch, and the new ones are kept.
    newer = Post(id=1700, title="Breaking: by-election result",
                 published=NOW + timedelta(minutes=30))
    server.serve_pages([rss([newer, *posts]), rss(older)], etag='"new-etag"',
                       last_modified="Thu, 26 Nov 2026 06:30:00 GMT")
    third = collect(db_app)
    assert (third.status, third.new, third.not_modified) == (200, 1, False)
    state = feed_state(db_app)
    assert state is not None and state.etag == '"new-etag"'


# ---- bad feeds ---------------------------------------------------------------------------------

GOOD_PAGE = rss(posts_every(2000, NOW - timedelta(hours=1), 3, timedelta(hours=1)))
BROKEN_XML = GOOD_PAGE.replace("</title>", "", 2)
HTML_PAGE = ("<!DOCTYPE html><html lang=\"en\"><head><title>LabourList</title></head>"
             "<body><h1>Just a moment...</h1><p>Checking your browser</p></body></html>")


@pytest.mark.parametrize(
    ("reply", "expected", "status"),
    [
        pytest.param(Reply(500, HTML_PAGE, "text/html"), "answered HTTP 500", 500, id="http-500"),
        pytest.param(Reply(503, "", "text/plain"), "answered HTTP 503", 503, id="http-503"),
        pytest.param(Reply(403, HTML_PAGE, "text/html"), "answered HTTP 403", 403, id="http-403"),
        pytest.param(Reply(200, BROKEN_XML), "is not well-formed XML (line", 200,
                     id="malformed-xml"),
        pytest.param(Reply(200, HTML_PAGE, "text/html; charset=UTF-8"),
                     "is not RSS/Atom (got text/html)", 200, id="html-page"),
        pytest.param(Reply(200, b""), "answered with an empty body", 200, id="empty-body"),
        pytest.param(Reply(200, '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"></rss>'),
                     "has no channel", 200, id="no-channel"),
        pytest.param(Reply(200, '{"code": "rest_no_route"}', "application/json"),
                     "is not RSS/Atom (got application/json)", 200, id="json"),
        pytest.param(Reply(200, GOOD_PAGE, delay=5), "timed out after 0.3s", 0,
                     id="timeout-before-headers"),
        pytest.param(Reply(200, GOOD_PAGE, delay=5, stall_after=200), "timed out after 0.3s", 0,
                     id="timeout-mid-body"),
    ],
)
def test_bad_feed_raises_one_line_and_writes_no_articles(
    app: App, server: FeedServer, reply: Reply, expected: str, status: int
) -> None:
    server.serve_pages([GOOD_PAGE])
    server.set_reply(1, reply)
    point_at(app, server.url, feed_timeout=0.3)

    with pytest.raises(FeedError) as caught:
        collect(app)

    message = str(caught.value)
    assert expected in message
    assert message.startswith(f"feed {server.url}")
    assert "\n" not in message and len(message) < 300
    assert article_count(app) == 0
    state = feed_state(app)
    assert state is not None
    assert (state.last_error, state.last_status) == (message, status)
    assert state.last_fetch_at == NOW and state.last_ok_at is None


def test_unreachable_feed(app: App) -> None:
    url = f"http://127.0.0.1:{closed_port()}/feed/"
    point_at(app, url, feed_timeout=2)

    with pytest.raises(FeedError, match=r"could not be reached \(Connection refused\)$"):
        collect(app)
    state = feed_state(app)
    assert state is not None and "Connection refused" in state.last_error


def test_failure_on_a_later_page_writes_nothing_and_keeps_no_validators(
    db_app: App, server: FeedServer
) -> None:
    page1 = posts_every(2100, NOW - timedelta(hours=1), 3, timedelta(hours=3))
    page2 = posts_every(2097, NOW - timedelta(hours=10), 3, timedelta(hours=3))
    server.serve_pages([rss(page1), rss(page2)], etag='"v1"',
                       last_modified="Thu, 26 Nov 2026 05:00:00 GMT")
    server.set_reply(2, Reply(200, rss(page2).replace("</title>", "", 1)))
    point_at(db_app, server.url)

    with pytest.raises(FeedError, match=r"paged=2 is not well-formed XML"):
        collect(db_app)

    assert article_count(db_app) == 0  # page 1 parsed fine, but nothing half-done is kept
    state = feed_state(db_app)
    assert state is not None and state.etag == "" and state.last_status == 200
    # Had the validators been saved, this run would get a 304 and miss page 1 for good.
    server.serve_pages([rss(page1), rss(page2)], etag='"v1"',
                       last_modified="Thu, 26 Nov 2026 05:00:00 GMT")
    result = collect(db_app)
    assert (result.status, result.new) == (200, 6)
    state = feed_state(db_app)
    assert state is not None and state.last_error == "" and state.etag == '"v1"'


def test_failure_keeps_earlier_articles_and_validators(app: App, server: FeedServer) -> None:
    server.serve_pages([GOOD_PAGE], etag='"ok"')
    point_at(app, server.url)
    collect(app)
    server.set_reply(1, Reply(502, HTML_PAGE, "text/html"))

    with pytest.raises(FeedError, match="HTTP 502"):
        collect(app)

    assert article_count(app) == 3
    state = feed_state(app)
    assert state is not None
    assert (state.etag, state.last_status, state.last_ok_at) == ('"ok"', 502, NOW)


def test_stray_output_before_the_xml_declaration_is_tolerated(
    app: App, server: FeedServer
) -> None:
    # A PHP notice printed before the feed: the classic broken WordPress feed.
    noisy = ("\n<br />\n<b>Deprecated</b>: Creation of dynamic property in "
             "<b>/var/www/wp-content/plugins/x.php</b> on line <b>12</b><br />\n"
             + GOOD_PAGE.replace("councils and unions", "councils\x0b and unions", 1))
    server.serve_pages([noisy])
    point_at(app, server.url)

    assert collect(app).new == 3


# ---- local files and the sample feed ---------------------------------------------------------


def test_local_file_path_and_file_url(app: App, tmp_path: Path) -> None:
    feed = tmp_path / "feed.xml"  # the conftest default feed_url
    feed.write_text(rss(posts_every(2200, NOW - timedelta(hours=1), 3, timedelta(hours=1))),
                    encoding="utf-8")

    result = collect(app)

    assert result == CollectResult(pages=1, new=3, updated=0, skipped=0, not_modified=False,
                                   status=0)
    state = feed_state(app)
    assert state is not None and state.last_status == 0 and state.last_ok_at == NOW

    moved = tmp_path / "dir with space" / "feed.xml"
    moved.parent.mkdir()
    moved.write_text(rss(posts_every(2300, NOW - timedelta(hours=1), 2, timedelta(hours=1))),
                     encoding="utf-8")
    point_at(app, moved.as_uri())
    assert collect(app).new == 2


def test_missing_local_file(app: App, tmp_path: Path) -> None:
    point_at(app, str(tmp_path / "nowhere.xml"))
    with pytest.raises(FeedError, match=r"nowhere\.xml: no such file$"):
        collect(app)


def test_sample_feed_has_twelve_articles_and_one_daily_email(app: App, tmp_path: Path) -> None:
    path = write_sample_feed(tmp_path / "feed.xml", NOW)
    xml = path.read_text(encoding="utf-8")
    assert "&#8217;" in xml and "<title><![CDATA[" not in xml
    assert '<guid isPermaLink="false">https://labourlist.org/?p=' in xml

    result = collect(app, since=NOW - timedelta(hours=24))

    assert (result.new, result.skipped) == (12, 1)
    articles = stored(app)
    assert {a.section for a in articles} == {"News", "Comment", "Analysis", "Columnist"}
    assert all(NOW - timedelta(hours=20) <= a.published_at < NOW for a in articles)
    assert any("," in a.author and "&" in a.author for a in articles)  # a joint byline
    assert any("’" in a.title for a in articles) and not any("&#" in a.title for a in articles)
    assert sum(1 for a in articles if a.image_url.startswith("https://")) >= 3
    assert all(a.summary_text and "appeared first" not in a.summary_text for a in articles)


def test_sample_subscribers() -> None:
    assert len(SAMPLE_SUBSCRIBERS) == 5
    emails = [email for email, _ in SAMPLE_SUBSCRIBERS]
    assert len(set(emails)) == 5
    assert all(email.isascii() and email.endswith("@example.org") for email in emails)
    assert all(name for _, name in SAMPLE_SUBSCRIBERS)
    assert any(not name.isascii() for _, name in SAMPLE_SUBSCRIBERS)


# ---- small pieces ----------------------------------------------------------------------------


def test_section_for(app: App) -> None:
    settings = app.settings
    assert section_for(["Keir Starmer", "comment"], settings) == "Comment"
    assert section_for(["Tag", " ANALYSIS ", "News"], settings) == "Analysis"
    assert section_for([], settings) == "News"
    assert section_for(["Trade unions"], settings) == "News"
    custom = settings.replace(sections=["Opinion", "Reports"])
    assert section_for(["opinion"], custom) == "Opinion"


def test_since_must_be_aware(app: App) -> None:
    with pytest.raises(ValueError):
        collect(app, since=datetime(2026, 11, 25, 6, 0))
