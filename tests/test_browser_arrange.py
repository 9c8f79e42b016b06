"""The story order in real Chromium with JavaScript on: Up/Down and drag and drop save the
order without reloading the page; the same buttons still work as forms without JavaScript."""

from __future__ import annotations

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
from mailer.models import Edition
from mailer.web import create_app
from tests.support.browser import NEEDS_CHROMIUM, LiveServer, browser_tab, sign_in
from tests.support.seed import seed_subscribers, with_feed
from tests.support.settings import make_settings

pytestmark = NEEDS_CHROMIUM

NOW = datetime(2026, 11, 26, 6, 30, tzinfo=UTC)
DAY = "2026-11-26"
EMAIL, PASSWORD = "editor@example.org", "a long enough password"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[LiveServer, App]]:
    holder: dict[str, App] = {}

    def build(url: str) -> Any:
        del url
        app = App.create(make_settings(tmp_path, base_url="https://mail.example.org"),
                         clock=Clock(NOW))
        init_db(app.engine)
        with_feed(app, tmp_path)
        seed_subscribers(app, 2)
        with app.sessions.begin() as session:
            add_staff(session, EMAIL, PASSWORD, role=ADMIN)
        holder["app"] = app
        return create_app(app, {"MAILER_SEND_INLINE": True})

    server = LiveServer(build)
    yield server, holder["app"]
    server.stop()
    holder["app"].close()


def stored_order(app: App) -> list[int]:
    with app.sessions() as session:
        edition = session.scalar(select(Edition))
        assert edition is not None
        return [item.article_id for item in edition.items]


def page_order(tab: Any) -> list[int]:
    return [int(x) for x in tab.eval_on_selector_all(
        "ol.articles > li", "items => items.map(li => li.dataset.articleId)")]


def test_stories_move_without_a_reload_by_button_and_by_drag(
        live: tuple[LiveServer, App]) -> None:
    server, app = live
    # (tall enough for the whole list: a drag must not scroll the page under the pointer)
    with browser_tab(timeout_ms=20_000, offline=True, java_script_enabled=True,
                     viewport={"width": 1280, "height": 3000}) as tab:
        sign_in(tab, server.url, EMAIL, PASSWORD)
        tab.goto(f"{server.url}/staff/editions/{DAY}")
        tab.click("text=Build the edition")
        tab.wait_for_selector("ol.articles > li")
        tab.evaluate("window.notReloaded = true")
        before = page_order(tab)
        assert len(before) >= 3
        # Keyboard and buttons: Down on the lead, pressed with Enter.
        tab.focus("ol.articles > li:first-child button[value=down]")
        tab.keyboard.press("Enter")
        # (selectors, not wait_for_function: the console's CSP forbids evaluating strings)
        tab.wait_for_selector("#order-status:has-text('to position 2')")
        moved = [before[1], before[0], *before[2:]]
        assert page_order(tab) == moved and stored_order(app) == moved
        assert tab.evaluate("window.notReloaded") is True
        assert tab.evaluate("document.activeElement.value") in ("down", "up")
        # Drag the last story onto the first.
        tab.drag_and_drop("ol.articles > li:last-child", "ol.articles > li:first-child",
                          source_position={"x": 4, "y": 4}, target_position={"x": 4, "y": 2})
        tab.wait_for_selector(f"ol.articles > li:first-child[data-article-id='{moved[-1]}']")
        tab.wait_for_selector("#order-status:has-text('to position 1')")
        dragged = [moved[-1], *moved[:-1]]
        assert stored_order(app) == dragged
        assert tab.evaluate("window.notReloaded") is True
        # (no script error; the previews' remote images are refused by the offline tab)
        assert not [e for e in tab.console_errors if "Failed to load resource" not in e]
    # Without JavaScript the same button is a form that reloads the page.
    with browser_tab(timeout_ms=20_000, offline=True,
                     viewport={"width": 1280, "height": 900}) as tab:
        sign_in(tab, server.url, EMAIL, PASSWORD)
        tab.goto(f"{server.url}/staff/editions/{DAY}")
        tab.click("ol.articles > li:first-child button[value=down]")
        tab.wait_for_load_state()
        assert stored_order(app) == [dragged[1], dragged[0], *dragged[2:]]
