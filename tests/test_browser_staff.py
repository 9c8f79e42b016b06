"""The staff console in a real headless Chromium, against the real app under waitress.

What an editor does on a weekday morning, end to end: sign in, open today's edition, add an
editor's note and see it in the preview, send a test to themselves (it arrives at a real SMTP
server, marked [TEST]), send the edition, watch the progress page reach the audience size, and
find the edition in the dashboard's history with the right counts. JavaScript is off: the
console must work without it (the progress page reloads itself with a Refresh header).

Screenshots of each step go to a temporary directory, or to MAILER_SCREENSHOT_DIR when set
(`scripts/staff_screenshots.py` makes the committed set in docs/screenshots/).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailer.accounts import ADMIN, add_staff
from mailer.app import App
from mailer.clock import Clock
from mailer.db import init_db
from mailer.models import SENT, AuditEntry, Edition
from mailer.web import create_app
from tests.support.browser import NEEDS_CHROMIUM, LiveServer, browser_tab
from tests.support.seed import seed_subscribers, with_feed
from tests.support.settings import make_settings
from tests.support.smtpsink import SmtpSink

pytestmark = NEEDS_CHROMIUM

# Thursday 26 November 2026, 06:30 London: before the 07:00 send, so "Send now" is on time.
NOW = datetime(2026, 11, 26, 6, 30, tzinfo=UTC)
DAY = "2026-11-26"
PUBLIC_URL = "https://mail.example.org"
EDITOR, PASSWORD = "editor@example.org", "a long enough password"
AUDIENCE = 5
NOTE = "Good morning from the newsroom: a note added in the browser test."


@pytest.fixture
def live(tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[tuple[LiveServer, App]]:
    holder: dict[str, App] = {}

    def build(url: str) -> Any:
        # A running clock that starts at NOW, as MAILER_NOW gives `mailer serve`. The public
        # URL is https (preflight refuses emails whose links point at 127.0.0.1); the browser
        # talks to the app directly, as a proxy would.
        del url
        app = App.create(make_settings(tmp_path, base_url=PUBLIC_URL, dsn=smtp_sink.dsn),
                         clock=Clock(NOW))
        init_db(app.engine)
        with_feed(app, tmp_path)
        seed_subscribers(app, AUDIENCE)
        with app.sessions.begin() as session:
            add_staff(session, EDITOR, PASSWORD, role=ADMIN)
        holder["app"] = app
        return create_app(app)  # as `mailer serve` runs it: the send on a background thread

    server = LiveServer(build)
    yield server, holder["app"]
    server.stop()
    holder["app"].close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("MAILER_SCREENSHOT_DIR") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture
def page(live: tuple[LiveServer, App]) -> Iterator[Any]:
    # Offline: the sample articles' images live on labourlist.org.
    with browser_tab(timeout_ms=20_000, offline=True,
                     viewport={"width": 1280, "height": 900}) as tab:
        yield tab


def test_editor_previews_tests_and_sends_the_edition(live: tuple[LiveServer, App],
                                                     smtp_sink: SmtpSink, page: Any,
                                                     shots: Path) -> None:
    from playwright.sync_api import expect

    server, app = live

    def shot(name: str) -> None:
        page.screenshot(path=str(shots / f"staff-{name}.png"), full_page=True)

    # Nothing under /staff without signing in.
    page.goto(f"{server.url}/staff/")
    page.get_by_role("heading", name="Staff sign in").wait_for()
    page.get_by_label("Email address").fill(EDITOR)
    page.get_by_label("Password").fill(PASSWORD)
    shot("login")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()
    shot("dashboard-before")

    # Today's edition: build it from the feed, then add the editor's note.
    page.get_by_role("link", name="Open today’s edition").click()
    page.get_by_role("heading", name="Edition of Thursday 26 November 2026").wait_for()
    page.get_by_role("button", name="Build the edition").click()
    expect(page.locator("#edition-state")).to_have_text("draft")
    assert page.locator("ol.articles > li").count() >= 3
    page.get_by_role("textbox", name="Editor’s note").fill(NOTE)
    page.get_by_role("button", name="Save and update the preview").click()
    page.get_by_text("Saved. The preview shows the new version.").wait_for()
    for title in ("desktop width", "375 pixels wide"):
        frame = page.frame_locator(f"iframe[title*='{title}']")
        frame.get_by_text("a note added in the browser test").first.wait_for()
    expect(page.locator("#text-part")).to_contain_text("a note added in the browser test")
    shot("edition")

    # A test to the signed-in editor arrives at the SMTP server, marked as a test.
    page.get_by_role("button", name="Send test to me").click()
    page.get_by_text(f"Test sent to {EDITOR}").wait_for()
    assert smtp_sink.wait_for(1, timeout=20), "the test email did not arrive"
    test_message = smtp_sink.messages[0]
    assert test_message.rcpt_tos == [EDITOR]
    assert str(test_message.message["Subject"]).startswith("[TEST] ")
    body = test_message.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "a note added in the browser test" in " ".join(body.split())

    # Send now: a confirm step with the audience size, then the live progress view.
    page.get_by_role("link", name="Send now…").click()
    expect(page.locator("#audience")).to_have_text(str(AUDIENCE))
    shot("send-confirm")
    page.get_by_role("button", name=f"Send to {AUDIENCE} subscribers now").click()
    page.get_by_role("heading", name=re.compile("the edition of Thursday 26 November")).wait_for()
    # The page reloads itself (Refresh header) until the send is done.
    expect(page.locator("#sent-count")).to_have_text(str(AUDIENCE), timeout=60_000)
    expect(page.locator("#total")).to_have_text(str(AUDIENCE))
    expect(page.locator("#edition-state")).to_have_text("sent", timeout=30_000)
    expect(page.locator("#failed-count")).to_have_text("0")
    shot("progress")

    assert smtp_sink.wait_for(1 + AUDIENCE, timeout=30)
    real = [m for m in smtp_sink.messages if not str(m.message["Subject"]).startswith("[TEST]")]
    assert Counter(r for m in real for r in m.rcpt_tos) == Counter(
        f"reader{i}@example.org" for i in range(AUDIENCE))  # each subscriber exactly once

    # Pressing Send again changes nothing: the confirm page has nothing to send.
    page.goto(f"{server.url}/staff/editions/{DAY}/send")
    page.get_by_text("there is nothing to send").wait_for()
    assert page.get_by_role("button", name=re.compile("subscribers now")).count() == 0

    # The dashboard's history shows the edition with the right counts.
    page.get_by_role("link", name="Dashboard").click()
    row = page.locator("#history tbody tr").filter(has_text="Thu 26 Nov 2026")
    expect(row.locator("td").nth(0)).to_have_text("sent")
    cells = row.locator("td.num")
    expect(cells.nth(0)).to_have_text(str(AUDIENCE))  # sent
    expect(cells.nth(1)).to_have_text("0")  # failed
    shot("dashboard")

    page.get_by_role("link", name="Audit log").click()
    for action in ("login", "edition-built", "edition-edited", "test-sent", "send-started",
                   "send-finished"):
        expect(page.locator("#audit")).to_contain_text(action)

    with app.sessions() as session:
        edition = session.scalar(select(Edition).where(Edition.edition_date
                                                       == datetime(2026, 11, 26).date()))
        assert edition is not None and edition.state == SENT
        assert edition.sent_count == AUDIENCE and NOTE in edition.editor_note
        actors = set(session.scalars(select(AuditEntry.actor)))
        assert actors == {EDITOR}

    unexpected = [e for e in page.console_errors  # type: ignore[attr-defined]
                  if "net::ERR_" not in e]
    assert unexpected == []  # e.g. a Content-Security-Policy violation
