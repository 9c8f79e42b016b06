"""Save a PNG of every public page at 375 px (a phone) and 1280 px (a laptop) wide.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--chromium /usr/bin/chromium]

Runs the real app under waitress on 127.0.0.1 with a throw-away SQLite database, the bundled
sample feed (so the archive shows a real edition) and a file outbox (nothing is emailed), then
walks each page in headless Chromium the way a reader would. The clock is fixed, so dates in
the pictures do not change from run to run. Review the images whenever a template or the CSS
changes: they are how a reviewer sees the pages without running anything.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer.app import App  # noqa: E402
from mailer.clock import FixedClock, send_datetime  # noqa: E402
from mailer.config import Settings, validate  # noqa: E402
from mailer.db import init_db  # noqa: E402
from mailer.models import ACTIVE, SENT, Edition  # noqa: E402
from mailer.subscribers import add  # noqa: E402
from mailer.tokens import CONFIRM, PREFERENCES, UNSUBSCRIBE, make_token  # noqa: E402
from mailer.web import create_app  # noqa: E402
from tests.support.browser import CHROMIUM_ARGS, LiveServer  # noqa: E402

WIDTHS = (375, 1280)
ARGS = CHROMIUM_ARGS
NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)


def build(workdir: Path, url: str) -> App:
    settings = Settings(database_url=f"sqlite:///{workdir / 'shots.db'}",
                        dsn=f"file://{workdir / 'outbox'}", base_url=url,
                        secret_key=secrets.token_urlsafe(32),
                        feed_url=str(workdir / "feed.xml"))
    validate(settings)
    app = App.create(settings, clock=FixedClock(NOW))
    init_db(app.engine)
    seed_archive(app, workdir)
    return app


def seed_archive(app: App, workdir: Path) -> None:
    """A sent edition built by the real pipeline from the bundled sample feed."""
    from mailer.collect import collect
    from mailer.edition import build_edition
    from mailer.sample import write_sample_feed

    for day in (date(2026, 11, 26),):
        at = send_datetime(day, app.settings.send_hour_minute, app.settings.tz)
        app.clock.set(at)  # type: ignore[attr-defined]
        write_sample_feed(workdir / "feed.xml", at)
        collect(app)
        edition = build_edition(app, day)
        with app.sessions.begin() as session:
            row = session.get(Edition, edition.id)
            assert row is not None
            row.state = SENT
    app.clock.set(NOW)  # type: ignore[attr-defined]


class Server(LiveServer):
    """The browser tests' live server; `builder` makes the App once the URL is known (links in
    emails must point at it)."""

    def __init__(self, workdir: Path, builder: Callable[[Path, str], App] | None = None) -> None:
        def web(url: str) -> Any:
            self.app = (builder or build)(workdir, url)
            return create_app(self.app, {"MAILER_SEND_INLINE": True})

        super().__init__(web)

    def stop(self) -> None:
        super().stop()
        self.app.close()


def add_reader(app: App, email: str, name: str) -> int:
    with app.sessions.begin() as session:
        sub, _ = add(session, email, name=name, status=ACTIVE, source="screenshots",
                     at=app.clock.now())
        return sub.id


def newest_confirm_link(outbox: Path) -> str:
    newest = max(outbox.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
    message = message_from_bytes(newest.read_bytes(), policy=policy.default)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    match = re.search(r"http://\S+/confirm/\S+", text)
    assert match, text
    return match.group(0)


def shoot(page: Any, out: Path, name: str, width: int, prefix: str = "") -> None:
    path = out / f"{prefix}{name}-{width}.png"
    page.screenshot(path=str(path), full_page=True)
    print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def walk(browser: Any, server: Server, out: Path, width: int, workdir: Path) -> None:
    app, url = server.app, server.url
    context = browser.new_context(viewport={"width": width, "height": 800},
                                  device_scale_factor=1, java_script_enabled=False)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))

    page.goto(f"{url}/subscribe")
    shoot(page, out, "subscribe", width)
    page.get_by_label("Email address").fill("reader@example")  # the browser lets it through
    page.get_by_role("button", name="Subscribe").click()
    shoot(page, out, "subscribe-error", width)
    page.get_by_label("Email address").fill(f"new-{width}@example.org")
    page.get_by_label("First name").fill("Siân")
    page.get_by_role("button", name="Subscribe").click()
    shoot(page, out, "subscribe-sent", width)

    page.goto(newest_confirm_link(workdir / "outbox"))
    shoot(page, out, "confirm", width)
    page.get_by_role("button", name="Yes, subscribe me").click()
    shoot(page, out, "confirmed", width)

    expired = make_token(app.secret_key, CONFIRM, 1, issued_at=NOW - timedelta(days=8),
                         extra="1")
    page.goto(f"{url}/confirm/{expired}")
    shoot(page, out, "confirm-expired", width)

    sub_id = add_reader(app, f"reader-{width}@example.org", "Amir")
    page.goto(f"{url}/unsubscribe/{make_token(app.secret_key, UNSUBSCRIBE, sub_id)}")
    shoot(page, out, "unsubscribe", width)
    page.get_by_role("button", name="Unsubscribe").click()
    shoot(page, out, "unsubscribed", width)

    sub_id = add_reader(app, f"prefs-{width}@example.org", "Grace")
    prefs = f"{url}/preferences/{make_token(app.secret_key, PREFERENCES, sub_id)}"
    page.goto(prefs)
    shoot(page, out, "preferences", width)
    page.get_by_label("2 weeks").check()
    page.get_by_role("button", name="Pause").click()
    shoot(page, out, "preferences-paused", width)
    page.get_by_role("button", name="Unsubscribe").click()
    shoot(page, out, "preferences-unsubscribed", width)

    page.goto(f"{url}/unsubscribe/not-a-real-token")
    shoot(page, out, "bad-link", width)
    page.goto(f"{url}/archive/")
    shoot(page, out, "archive", width)
    page.goto(f"{url}/archive/2026-11-26")
    shoot(page, out, "archive-edition", width)
    page.goto(f"{url}/nowhere")
    shoot(page, out, "not-found", width)

    context.close()
    # 400/404 pages log their status as a console error by design, and the archived edition's
    # images live on the WordPress site (unreachable offline); anything else, a CSP violation
    # above all, is a bug.
    unexpected = [e for e in errors if "status of 4" not in e and "net::ERR_" not in e]
    if unexpected:
        raise SystemExit(f"browser console errors at {width}px: {unexpected}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        workdir = Path(tmp)
        server = Server(workdir)
        browser = playwright.chromium.launch(executable_path=args.chromium, args=ARGS)
        try:
            for width in WIDTHS:
                walk(browser, server, args.out, width, workdir)
        finally:
            browser.close()
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
