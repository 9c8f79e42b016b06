"""axe-core (npm's, injected with Playwright into real Chromium) over every page a reader or a
staff member reaches: no violations.

The pages are in the states people meet them: the public sign-up and its answer, a reader's
unsubscribe and preferences pages, the archive and an archived edition; and the console
signed in as an admin: dashboard, an edition (draft, with its previews and text part, then
sent, with its clicks and a spam complaint, which puts an alert on the dashboard), the send
confirmation and progress, subscribers, one subscriber, the import, audience, donation asks,
settings, audit log, API and webhooks, a receiver's deliveries, and a page refused to an
editor (403). `npm install` (CI: `.ci/run`) provides `node_modules/axe-core/axe.min.js`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mailer.accounts import ADMIN, EDITOR, add_staff
from mailer.app import App
from mailer.clock import Clock
from mailer.db import init_db
from mailer.feedback.events import apply
from mailer.models import Subscriber
from mailer.outgoing import endpoints
from mailer.pipeline import run_send
from mailer.tokens import PREFERENCES, UNSUBSCRIBE, make_token
from mailer.web import create_app
from tests.support.browser import NEEDS_CHROMIUM, LiveServer, browser_tab, sign_in
from tests.support.seed import seed_subscribers, with_feed
from tests.support.settings import make_settings

AXE = Path(__file__).resolve().parents[1] / "node_modules" / "axe-core" / "axe.min.js"
pytestmark = [*NEEDS_CHROMIUM, pytest.mark.skipif(
    not AXE.exists(), reason="needs npm's axe-core: run `npm install` in the checkout")]

NOW = datetime(2026, 11, 26, 6, 30, tzinfo=UTC)
DAY = "2026-11-26"
ADMIN_EMAIL, EDITOR_EMAIL, PASSWORD = "admin@example.org", "ed@example.org", "a long password!"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[LiveServer, App]]:
    holder: dict[str, App] = {}

    def build(url: str) -> Any:
        app = App.create(make_settings(tmp_path, base_url=url, allow_local_links=True),
                         clock=Clock(NOW))
        init_db(app.engine)
        with_feed(app, tmp_path)
        seed_subscribers(app, 6)
        with app.sessions.begin() as session:
            add_staff(session, ADMIN_EMAIL, PASSWORD, role=ADMIN)
            add_staff(session, EDITOR_EMAIL, PASSWORD, role=EDITOR)
            endpoints.add(session, "http://127.0.0.1:9/hook", [], app.settings, now=NOW)
        holder["app"] = app
        return create_app(app, {"MAILER_SEND_INLINE": True})

    server = LiveServer(build)
    yield server, holder["app"]
    server.stop()
    holder["app"].close()


def violations(tab: Any) -> list[str]:
    """axe's violations on the page open in `tab`, one line each."""
    tab.add_script_tag(path=str(AXE))
    found = tab.evaluate("""async () => {
        const result = await axe.run(document, {resultTypes: ['violations']});
        return result.violations.map(v => v.id + ': ' + v.help + ' @ ' +
            v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(' | '));
    }""")
    return list(found)


def check(tab: Any, url: str, found: dict[str, list[str]]) -> None:
    answer = tab.goto(url)
    assert answer is not None and answer.status < 500, url
    problems = violations(tab)
    if problems:
        found[url] = problems


def test_no_page_has_an_accessibility_violation(live: tuple[LiveServer, App]) -> None:
    server, app = live
    base = server.url
    with app.sessions() as session:
        sub_id = session.query(Subscriber.id).order_by(Subscriber.id).first()[0]  # type: ignore[index]
    found: dict[str, list[str]] = {}
    with browser_tab(timeout_ms=30_000, offline=True, java_script_enabled=True, bypass_csp=True,
                     viewport={"width": 1280, "height": 900}) as tab:
        for path in ("/subscribe", "/archive",
                     f"/unsubscribe/{make_token(app.secret_key, UNSUBSCRIBE, sub_id)}",
                     f"/preferences/{make_token(app.secret_key, PREFERENCES, sub_id)}",
                     "/staff/login"):
            check(tab, base + path, found)
        tab.goto(f"{base}/subscribe")
        tab.fill("input[name=email]", "new.reader@example.org")
        tab.click("form button[type=submit]")
        problems = violations(tab)
        if problems:
            found["/subscribe (answered)"] = problems
        sign_in(tab, base, ADMIN_EMAIL, PASSWORD)
        for path in ("/staff/", f"/staff/editions/{DAY}"):
            check(tab, base + path, found)
        tab.click("text=Build")  # a draft with its previews and text part
        tab.wait_for_load_state()
        for path in (f"/staff/editions/{DAY}", f"/staff/editions/{DAY}/send",
                     "/staff/subscribers", f"/staff/subscribers/{sub_id}",
                     "/staff/subscribers/import", "/staff/audience", "/staff/asks",
                     "/staff/settings", "/staff/audit", "/staff/integrations", "/staff/team",
                     "/staff/integrations/webhooks/1"):
            check(tab, base + path, found)
        assert run_send(app).status == "sent"
        with app.sessions.begin() as session:  # one of six: the dashboard's complaint alert
            apply(session, "postmark", "complaint-1", "complaint", "reader0@example.org", {},
                  app.clock.now())
        for path in (f"/staff/editions/{DAY}", f"/staff/editions/{DAY}/progress", "/staff/",
                     f"/archive/{DAY}", "/archive"):
            check(tab, base + path, found)
        tab.goto(f"{base}/staff/")
        assert tab.locator("#complaint-alert").count() == 1  # (checked above)
        tab.goto(f"{base}/staff/logout")
    with browser_tab(timeout_ms=30_000, offline=True, java_script_enabled=True, bypass_csp=True,
                     viewport={"width": 375, "height": 800}) as tab:
        sign_in(tab, base, EDITOR_EMAIL, PASSWORD)
        check(tab, f"{base}/staff/settings", found)  # 403 for an editor, in the console
        check(tab, f"{base}/staff/editions/{DAY}", found)
    report = "\n".join(f"{url}\n  " + "\n  ".join(lines) for url, lines in found.items())
    assert not found, re.sub(r"\s+\n", "\n", report)
