"""The trap link in a real browser: no person can see it, tab to it or hear it.

The email's HTML part as a reader's client shows it, in headless Chromium: every story link is
visible, reachable with the keyboard and exposed to assistive technology; the trap link is
none of those.
"""

from __future__ import annotations

import re
from pathlib import Path

from mailer.app import App
from tests.support.browser import NEEDS_CHROMIUM, browser_tab
from tests.support.clicks import sent_edition

pytestmark = NEEDS_CHROMIUM


def test_the_trap_is_invisible_unfocusable_and_silent(app: App, tmp_path: Path) -> None:
    _, copies = sent_edition(app, tmp_path, readers=1)
    html = copies[0].html
    trap = re.search(r'<a [^>]*href="([^"]+/r/[^"]+)"[^>]*></a>', html)
    assert trap
    trap_url = trap.group(1)
    with browser_tab(timeout_ms=10_000, offline=True) as tab:
        tab.set_content(html)
        assert not tab.locator(f'a[href="{trap_url}"]').is_visible()
        # What a screen reader is given: every link but the trap.
        exposed = [link.get_attribute("href") for link in tab.get_by_role("link").all()]
        assert trap_url not in exposed
        assert len(set(exposed)) >= 10
        # What the keyboard reaches: tab through the whole message and back to the start.
        focused: list[str | None] = []
        for _ in range(len(exposed) + 5):
            tab.keyboard.press("Tab")
            focus = tab.locator(":focus")
            focused.append(focus.get_attribute("href") if focus.count() else None)
        assert trap_url not in focused
        assert {u for u in focused if u} == set(exposed)
