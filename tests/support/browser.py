"""Real headless Chromium against the real app under waitress, shared by the browser tests."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from waitress import create_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
NEEDS_CHROMIUM = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs /usr/bin/chromium (Debian: apt install chromium)"),
]


class LiveServer:
    """The Flask app under waitress on 127.0.0.1 and a free port, in a thread."""

    def __init__(self, build: Callable[[str], Any]) -> None:
        self._app: Any = None
        self.server = create_server(self._wsgi, host="127.0.0.1", port=0, threads=4)
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self._app = build(self.url)  # the base URL is known only once the port is bound
        self.thread = threading.Thread(target=self.server.run, name="waitress", daemon=True)
        self.thread.start()

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self._app(environ, start_response)

    def stop(self) -> None:
        # Closed from its own loop: closed from here, the loop would notice only when its
        # poll times out (a second).
        self.server.trigger.pull_trigger(self.server.close)
        self.server.task_dispatcher.shutdown()
        self.thread.join(10)


@contextlib.contextmanager
def browser_tab(*, timeout_ms: int, offline: bool = False, java_script_enabled: bool = False,
                **context_options: Any) -> Iterator[Any]:
    """One tab with JavaScript off unless asked (the pages must not need it) whose console
    errors collect in ``tab.console_errors``; `offline` aborts every request that does not go
    to 127.0.0.1."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(java_script_enabled=java_script_enabled,
                                      **context_options)
        if offline:
            context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/]).*"),
                          lambda route: route.abort())
        tab = context.new_page()
        tab.set_default_timeout(timeout_ms)
        tab.console_errors = []
        tab.on("console", lambda msg: msg.type == "error" and tab.console_errors.append(msg.text))
        try:
            yield tab
        finally:
            context.close()
            browser.close()


def sign_in(tab: Any, base: str, email: str, password: str) -> None:
    """Sign in to the staff console through its login form, as a person would."""
    tab.goto(f"{base}/staff/login")
    tab.fill("#email", email)
    tab.fill("#password", password)
    tab.click("button[type=submit]")
