"""Preflight: a clean edition passes; editions broken on purpose are refused with the right
message unless forced with a reason.

Real tools throughout: the sample feed through the real collector and renderer, the message
built by the dispatcher's own code, the Debian `spamassassin` binary, a real SMTP server for
`mailer send`, an HTTP server on 127.0.0.1 for the link check and headless Chromium for the
screenshots.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner
from pytest_httpserver import HTTPServer
from sqlalchemy import insert, select

from mailer import preflight
from mailer.app import App
from mailer.cli import cli
from mailer.cli.common import EXIT_PREFLIGHT
from mailer.clock import FixedClock
from mailer.collect import collect
from mailer.config import BUNDLED_TEMPLATES, PROJECT_ROOT, Settings
from mailer.db import init_db
from mailer.edition import build_edition
from mailer.errors import PreflightError
from mailer.models import DRAFT, SENT, Article, Edition
from mailer.preflight import ERROR, WARNING, Report
from mailer.preflight.checks import CHECKS, LOCAL_ONLY_CODES, check, check_hidden_text
from mailer.preflight.links import check_live_links
from mailer.preflight.page import parse_html
from mailer.preflight.screenshots import _PLACEHOLDER_PNG, CHROMIUM
from mailer.preflight.spamassassin import parse_spamassassin
from mailer.sample import write_sample_feed
from tests.support.seed import seed_subscribers, with_feed
from tests.support.settings import make_settings
from tests.support.smtpsink import SmtpSink

DAY = date(2026, 11, 26)
NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)  # the `clock` fixture's instant
SMTP_DSN = "smtp://127.0.0.1:2525"  # never connected to: run_checks sends nothing
REASON = "Editor approved: the long subject is deliberate today"

needs_spamassassin = pytest.mark.skipif(
    shutil.which("spamassassin") is None,
    reason="needs the spamassassin binary (Debian: apt install spamassassin)")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs /usr/bin/chromium (Debian: apt install chromium)")


# ---- set-up helpers ------------------------------------------------------------------------------


def sample_edition(app: App, tmp_path: Path) -> Edition:
    with_feed(app, tmp_path)
    collect(app)
    return build_edition(app, DAY)


def codes(report: Report, severity: str = ERROR) -> list[str]:
    return [f.code for f in (report.errors if severity == ERROR else report.warnings)]


def add_huge_articles(app: App, n: int = 110) -> None:
    """Many stories with long bodies: the edition's HTML grows past Gmail's 102 KB clip."""
    body = "The council’s budget settlement, explained line by line. " * 100
    now = app.clock.now()
    rows = [{"guid": f"https://labourlist.org/?p={900000 + i}",
             "title": f"Story {i}: what the spending review means for councils, unions and "
                      "the next manifesto",
             "link": f"https://labourlist.org/2026/11/story-{i}-spending-review-councils/",
             "author": "Staff", "summary_text": body, "section": "News", "categories": ["News"],
             "published_at": now - timedelta(minutes=30 + i)} for i in range(n)]
    with app.sessions.begin() as session:
        session.execute(insert(Article), rows)


def templates_without_alt(tmp_path: Path) -> Path:
    """A copy of the templates whose lead image has no alt attribute."""
    target = tmp_path / "templates"
    shutil.copytree(BUNDLED_TEMPLATES, target)
    mjml = target / "edition.mjml.j2"
    source = mjml.read_text(encoding="utf-8")
    assert ' alt="" width="560"' in source
    mjml.write_text(source.replace(' alt="" width="560"', ' width="560"'), encoding="utf-8")
    return target


LONG_SUBJECT = "LabourList Daily: {date} – " + "unions, councils, the budget and more " * 3

# (id, settings changes, extra set-up, expected code, expected words in the message)
BROKEN: list[tuple[str, dict[str, str], Callable[[App, Path], object] | None, str, str]] = [
    ("huge", {}, lambda app, tmp: add_huge_articles(app), "html-size",
     "Gmail clips messages over 102 KB"),
    ("localhost", {"base_url": "http://localhost:8000"}, None, "base-url-local",
     "base_url is localhost: subscribers could not unsubscribe"),
    ("no-alt", {"templates_dir": "{tmp}/templates"},
     lambda app, tmp: templates_without_alt(tmp), "image-alt",
     "image without alt text: https://labourlist.org/wp-content/uploads/"),
    ("long-subject", {"subject": LONG_SUBJECT}, None, "subject-long",
     "characters; keep it under 120"),
    ("relative-link", {"donation_url": "/donate/"}, None, "relative-link",
     "relative link: /donate/"),
]


def _apply(changes: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {k: v.replace("{tmp}", str(tmp_path)) for k, v in changes.items()}


# ---- the clean edition ---------------------------------------------------------------------------


def test_clean_sample_edition_passes(app: App, tmp_path: Path) -> None:
    edition = sample_edition(app, tmp_path)
    report = preflight.run_checks(app, edition)
    assert report.errors == []
    assert codes(report, WARNING) in ([], ["spamassassin"])  # only if it is not installed
    sample = preflight.sample_message(app, edition)
    assert sample.unsubscribe_url.startswith("https://mail.example.org/unsubscribe/")
    assert sample.unsubscribe_url in sample.html
    assert report.checked_at == NOW.isoformat()


@needs_spamassassin
def test_clean_edition_spamassassin_score_is_low(app: App, tmp_path: Path) -> None:
    report = preflight.run_checks(app, sample_edition(app, tmp_path))
    assert report.spam_score is not None
    assert report.spam_score <= 1.0, [(r.name, r.score) for r in report.rules]
    names = {r.name for r in report.rules}
    assert "HTML_MESSAGE" in names  # the rules that fired are listed, even at 0 points
    for bad in ("MPART_ALT_DIFF", "MIME_BASE64_TEXT", "HTML_FONT_LOW_CONTRAST", "MISSING_DATE",
                "INVALID_MSGID", "MISSING_MID"):
        assert bad not in names


def test_missing_spamassassin_is_a_warning(app: App, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    edition = sample_edition(app, tmp_path)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    report = preflight.run_checks(app, edition)
    assert report.errors == []
    assert [f.message for f in report.warnings] == ["spamassassin not installed: score not checked"]
    assert report.spam_score is None


@needs_spamassassin
def test_spam_score_over_the_threshold_is_an_error(app: App, tmp_path: Path) -> None:
    edition = sample_edition(app, tmp_path)
    app.settings = _with_knob(app.settings, spam_threshold=-1.0)  # type: ignore[assignment]
    report = preflight.run_checks(app, edition)
    assert codes(report) == ["spam-score"]
    assert report.errors[0].message.startswith("SpamAssassin score 0 is over the limit -1")


def _with_knob(settings: object, **knobs: object) -> object:
    """Settings with keys config.py does not have yet (read with getattr by preflight)."""

    class WithKnobs:
        def __getattr__(self, name: str) -> object:
            if name in knobs:
                return knobs[name]
            return getattr(settings, name)

    return WithKnobs()


def test_parse_spamassassin_report() -> None:
    output = (
        "X-Spam-Checker-Version: SpamAssassin 4.0.1 (2024-03-25) on vm\n"
        "X-Spam-Status: Yes, score=6.3 required=5.0 tests=MISSING_DATE,\n"
        "\tMPART_ALT_DIFF,NO_RELAYS autolearn=no version=4.0.1\n"
        "From: a@example.org\n\nbody\n\n"
        "Content analysis details:   (6.3 points, 5.0 required)\n\n"
        " pts rule name              description\n"
        "---- ---------------------- --------------------------------------------------\n"
        " 2.7 MISSING_DATE           Missing Date: header\n"
        " 2.2 MPART_ALT_DIFF         BODY: HTML and text parts are different\n"
        "                            (and a continuation line)\n"
        "-0.0 NO_RELAYS              Informational: message was not relayed via SMTP\n"
        "\n"
    )
    result = parse_spamassassin(output)
    assert result is not None and result.score == 6.3
    assert [(r.name, r.score) for r in result.rules] == [
        ("MISSING_DATE", 2.7), ("MPART_ALT_DIFF", 2.2), ("NO_RELAYS", -0.0)]
    assert result.rules[1].description.endswith("(and a continuation line)")
    assert parse_spamassassin("no report here") is None


# ---- editions broken on purpose ------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "setup", "code", "words"),
                         [pytest.param(*case[1:], id=case[0]) for case in BROKEN])
def test_broken_edition_fails_with_the_right_message(
        app: App, tmp_path: Path, changes: dict[str, str],
        setup: Callable[[App, Path], object] | None, code: str, words: str) -> None:
    app.settings = app.settings.replace(dsn=SMTP_DSN, **_apply(changes, tmp_path))
    if setup is not None:
        setup(app, tmp_path)
    report = preflight.run_checks(app, sample_edition(app, tmp_path))
    assert code in codes(report), report.errors
    assert any(words in f.message for f in report.errors), report.errors
    assert report.errors[0].code == code, "the first error is the one the break caused"


def test_missing_base_url(app: App, tmp_path: Path) -> None:
    edition = sample_edition(app, tmp_path)
    app.settings = dataclasses.replace(app.settings, base_url="")  # validate() would refuse it
    report = preflight.run_checks(app, edition)
    assert report.errors[0].code == "base-url-missing"
    assert "base_url is missing" in report.errors[0].message
    assert "subscribers could not unsubscribe" in report.errors[0].message


def test_localhost_base_url_is_only_a_warning_for_the_file_outbox(app: App,
                                                                  tmp_path: Path) -> None:
    """`mailer demo` and local development: nobody receives the file outbox's messages."""
    app.settings = app.settings.replace(base_url="http://localhost:8000")
    assert app.settings.dsn.startswith("file://")
    report = preflight.run_checks(app, sample_edition(app, tmp_path))
    assert report.errors == []
    assert "base-url-local" in codes(report, WARNING)
    assert all("file:// outbox delivers to no one" in f.message for f in report.warnings
               if f.code in LOCAL_ONLY_CODES)


def test_staging_deployment_may_allow_local_links(app: App, tmp_path: Path) -> None:
    app.settings = app.settings.replace(dsn=SMTP_DSN, base_url="https://staging.labourlist.org")
    edition = sample_edition(app, tmp_path)
    assert codes(preflight.run_checks(app, edition)) == ["base-url-local"]
    app.settings = _with_knob(app.settings, allow_local_links=True)  # type: ignore[assignment]
    report = preflight.run_checks(app, edition)
    assert report.errors == []
    assert [f.message for f in report.warnings if f.code == "base-url-local"] == [
        "base_url is staging.labourlist.org: subscribers could not unsubscribe "
        "(a warning only: allow_local_links is set)"]


def test_article_link_to_a_staging_host_is_an_error(app: App, tmp_path: Path) -> None:
    app.settings = app.settings.replace(dsn=SMTP_DSN)
    sample_edition(app, tmp_path)
    with app.sessions.begin() as session:
        article = session.scalars(select(Article).order_by(Article.published_at.desc())).first()
        assert article is not None
        article.link = "https://staging.labourlist.org/2026/11/draft/"
    edition = build_edition(app, DAY)
    report = preflight.run_checks(app, edition)
    assert codes(report) == ["local-link"]
    assert "staging.labourlist.org" in report.errors[0].message


def test_text_part_must_carry_the_same_articles(app: App, tmp_path: Path) -> None:
    edition = sample_edition(app, tmp_path)
    first = edition.text.index("Read the full story: ")
    edition.text = edition.text[:first] + edition.text[edition.text.index("\n", first):]
    report = preflight.run_checks(app, edition)
    assert codes(report) == ["text-articles"]
    assert "the text part lacks 1 article the HTML has" in report.errors[0].message


# ---- hidden text ---------------------------------------------------------------------------


@pytest.mark.parametrize(("html", "trick"), [
    ('<div style="display:none">Buy now</div>', "display:none"),
    ('<p style="visibility: hidden !important">Buy now</p>', "visibility:hidden"),
    ('<span style="font-size:1px">Buy now</span>', "font-size 1px"),
    ('<td style="font-size:0"><b>Buy now</b></td>', "font-size 0px"),
    ('<div style="background-color:#ffffff"><p style="color:#fefefe">Buy now</p></div>',
     "text colour matches the background"),
    ('<table bgcolor="#b5002a"><tr><td style="color:#b5002a">Buy now</td></tr></table>',
     "text colour matches the background"),
    ('<div style="max-height:0;overflow:hidden">Buy now</div>', "zero size with overflow"),
    ('<div style="opacity:0">Buy now</div>', "opacity:0"),
])
def test_hidden_text_tricks_are_errors(html: str, trick: str) -> None:
    findings = check_hidden_text(parse_html(html))
    assert [(f.severity, f.code) for f in findings] == [(ERROR, "hidden-text")]
    assert trick in findings[0].message and "Buy now" in findings[0].message


@pytest.mark.parametrize("html", [
    # MJML's layout: a font-size:0 cell whose sized <div> holds the text.
    '<td style="font-size:0px"><div style="font-size:13px;color:#4a4a4a">Visible</div></td>',
    '<div style="display:none">   &zwnj;&nbsp;  </div>',  # nothing to read there
    "<!--[if mso]><div style=\"display:none\">Outlook only</div><![endif]-->",
    '<!--[if !mso]><!--><div style="mso-hide:all">Not for Outlook</div><!--<![endif]-->',
    '<div style="background:#b5002a"><p style="color:#ffffff">White on red</p></div>',
    "<head><title>Title text</title><style>p{display:none}</style></head>",
])
def test_honest_markup_is_not_hidden_text(html: str) -> None:
    assert check_hidden_text(parse_html(html)) == []


def test_mso_hide_outside_conditional_comments_is_a_warning() -> None:
    findings = check_hidden_text(
        parse_html('<div style="mso-hide:all">Hidden from Outlook</div>'))
    assert [(f.severity, f.code) for f in findings] == [(WARNING, "hidden-text")]


# ---- the dispatch gate -------------------------------------------------------------------------


def test_check_before_send_records_and_refuses(app: App, tmp_path: Path) -> None:
    app.settings = app.settings.replace(subject=LONG_SUBJECT, donation_url="/donate/")
    edition = sample_edition(app, tmp_path)
    with pytest.raises(PreflightError) as caught:
        preflight.check_before_send(app, edition)
    message = str(caught.value)
    assert message.startswith("preflight failed: the subject is ")
    assert message.endswith('(+1 more); fix it or use --force --reason "..."')
    assert "\n" not in message
    with app.sessions() as session:
        stored = session.get(Edition, edition.id)
        assert stored is not None
        assert [e["code"] for e in stored.preflight["errors"]] == ["subject-long",
                                                                  "relative-link"]
        assert stored.preflight["forced"] is False and stored.preflight["checked_at"]

    with pytest.raises(PreflightError, match="needs a reason"):
        preflight.check_before_send(app, edition, force=True, reason="  ")

    report = preflight.check_before_send(app, edition, force=True, reason=REASON)
    assert not report.ok
    with app.sessions() as session:
        stored = session.get(Edition, edition.id)
        assert stored is not None
        assert stored.preflight["forced"] is True and stored.preflight["reason"] == REASON


def test_a_crashing_check_is_an_error_not_a_traceback(app: App, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    edition = sample_edition(app, tmp_path)

    def broken(page: object) -> list[preflight.Finding]:
        raise RuntimeError("boom")

    monkeypatch.setitem(CHECKS, "images", broken)
    report = preflight.run_checks(app, edition)
    assert codes(report) == ["check-crashed"]
    assert "images check crashed" in report.errors[0].message


def test_adding_a_check_is_one_decorated_function(app: App, tmp_path: Path) -> None:
    seen: dict[str, str] = {}

    def shouting_subject(msg: EmailMessage, settings: Settings) -> list[preflight.Finding]:
        seen["subject"], seen["base"] = str(msg["Subject"]), settings.base_url
        return [preflight.Finding(WARNING, "subject-shouts", "the subject is in capitals")]

    check("subject-shouts")(shouting_subject)
    try:
        report = preflight.run_checks(app, sample_edition(app, tmp_path))
    finally:
        del CHECKS["subject-shouts"]
    assert "subject-shouts" in [f.code for f in report.warnings]
    assert seen["subject"] and seen["base"] == app.settings.base_url
    with pytest.raises(TypeError, match="reader"):
        check("asks-for-too-much")(lambda reader: [])


# ---- `mailer send` and `mailer preflight` through the CLI ----------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[tuple[App, dict[str, str]]]:
    settings = make_settings(tmp_path, dsn=smtp_sink.dsn)
    app = App.create(settings, clock=FixedClock(NOW))
    init_db(app.engine)
    seed_subscribers(app, 2)
    feed = write_sample_feed(tmp_path / "feed.xml", NOW)
    environ = {
        "MAILER_DATABASE_URL": settings.database_url, "MAILER_FEED_URL": str(feed),
        "MAILER_DSN": smtp_sink.dsn, "MAILER_BASE_URL": "https://mail.labourlist.org",
        "MAILER_SECRET_KEY": "preflight-secret", "MAILER_NOW": NOW.isoformat(),
        "MAILER_CONFIG": str(PROJECT_ROOT / "config" / "mailer.toml"),
    }
    yield app, environ
    app.close()


def _mailer(environ: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), env=environ, catch_exceptions=False)


def _edition_row(app: App) -> Edition:
    with app.sessions() as session:
        edition = session.scalar(select(Edition).where(Edition.edition_date == DAY))
        assert edition is not None
        session.expunge(edition)
        return edition


def test_send_of_a_clean_edition_records_its_preflight(cli_env, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    app, environ = cli_env
    checked = _mailer(environ, "preflight", "--date", DAY.isoformat())
    assert checked.exit_code == 0, checked.output
    assert "preflight passed: 0 error(s)" in checked.output
    result = _mailer(environ, "send")
    assert result.exit_code == 0, result.output
    assert "sent 2" in result.output
    edition = _edition_row(app)
    assert edition.state == SENT and edition.forced_reason == ""
    assert edition.preflight["errors"] == [] and edition.preflight["forced"] is False
    if shutil.which("spamassassin"):
        assert edition.preflight["spam_score"] <= 1.0
        assert "spamassassin: score" in checked.output


@pytest.mark.parametrize(("changes", "setup", "code", "words"),
                         [pytest.param(*case[1:], id=case[0]) for case in BROKEN])
def test_send_refuses_a_broken_edition_unless_forced_with_a_reason(
        cli_env, smtp_sink: SmtpSink, tmp_path: Path, changes: dict[str, str],  # type: ignore[no-untyped-def]
        setup: Callable[[App, Path], object] | None, code: str, words: str) -> None:
    app, environ = cli_env
    environ |= {f"MAILER_{k.upper()}": v for k, v in _apply(changes, tmp_path).items()}
    if setup is not None:
        setup(app, tmp_path)

    checked = _mailer(environ, "preflight")
    assert checked.exit_code == EXIT_PREFLIGHT
    assert f"error: {words}" in checked.output or words in checked.output
    assert "`mailer send` would refuse this edition" in checked.output

    refused = _mailer(environ, "send")
    assert refused.exit_code == EXIT_PREFLIGHT, refused.output
    assert "error: preflight failed: " in refused.output and words in refused.output
    assert 'use --force --reason "..."' in refused.output
    assert smtp_sink.recipients() == []
    edition = _edition_row(app)
    assert edition.state == DRAFT
    assert code in [e["code"] for e in edition.preflight["errors"]]

    no_reason = _mailer(environ, "send", "--force")
    assert no_reason.exit_code == 1 and "--force needs --reason" in no_reason.output
    assert smtp_sink.recipients() == []

    forced = _mailer(environ, "send", "--force", "--reason", REASON)
    assert forced.exit_code == 0, forced.output
    assert "sent 2" in forced.output
    assert sorted(smtp_sink.recipients()) == ["reader0@example.org", "reader1@example.org"]
    edition = _edition_row(app)
    assert edition.state == SENT
    assert edition.forced_reason == REASON
    assert edition.preflight["forced"] is True and edition.preflight["reason"] == REASON
    assert code in [e["code"] for e in edition.preflight["errors"]]


# ---- optional checks -----------------------------------------------------------------------


def test_link_check_reports_dead_links(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/live/", method="HEAD").respond_with_data("")
    httpserver.expect_request("/no-head/", method="HEAD").respond_with_data("", status=405)
    httpserver.expect_request("/no-head/", method="GET").respond_with_data("ok")
    httpserver.expect_request("/gone/").respond_with_data("", status=404)
    urls = [httpserver.url_for(p) + "?utm_source=labourlist-daily&id=7"
            for p in ("/live/", "/no-head/", "/gone/")]
    findings = check_live_links(urls, timeout=5, allow_local=True)  # 127.0.0.1
    assert [(f.severity, f.code) for f in findings] == [(WARNING, "dead-link")]
    assert "HTTP 404" in findings[0].message and "/gone/?id=7" in findings[0].message
    assert all("utm_" not in str(request.url) for request, _ in httpserver.log)


def test_link_check_in_run_checks(app: App, tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/gone/").respond_with_data("", status=404)
    with app.sessions.begin() as session:
        session.add(Article(guid="gone", title="A story that was taken down",
                            link=httpserver.url_for("/gone/"), author="Staff",
                            summary_text="Summary.", section="News", categories=["News"],
                            published_at=NOW - timedelta(hours=1)))
    app.settings = app.settings.replace(allow_local_links=True)  # the server is on loopback
    report = preflight.run_checks(app, build_edition(app, DAY), check_links=True)
    assert "dead-link" in codes(report, WARNING)


@pytest.mark.browser
@needs_chromium
def test_screenshots_write_four_pngs_without_leaving_loopback(
        app: App, tmp_path: Path, httpserver: HTTPServer,
        caplog: pytest.LogCaptureFixture) -> None:
    httpserver.expect_request("/local.png").respond_with_data(
        _PLACEHOLDER_PNG, content_type="image/png")
    html = preflight.sample_message(app, sample_edition(app, tmp_path)).html
    html = html.replace("</body>", f'<img src="{httpserver.url_for("/local.png")}" alt="local">'
                                   '<link rel="stylesheet" href="https://fonts.example.com/x.css">'
                                   "</body>")
    caplog.set_level("DEBUG", logger="mailer.preflight")
    paths = preflight.render_screenshots(html, tmp_path / "shots")
    assert [p.name for p in paths] == ["375-light.png", "800-light.png", "375-dark.png",
                                       "800-images-off.png"]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    assert len({p.read_bytes() for p in paths}) == 4  # four different views
    # Loopback images load (in the three views with images); nothing else left the machine.
    assert sum(1 for request, _ in httpserver.log if request.path == "/local.png") == 3
    assert "blocked https://fonts.example.com/x.css" in caplog.text
    assert "placeholder for https://labourlist.org/wp-content/uploads/" in caplog.text
