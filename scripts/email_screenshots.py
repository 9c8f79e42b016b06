"""Save PNGs of the email as readers see it: light, dark and images off, at 320, 375 and 600 px.

    .venv/bin/python scripts/email_screenshots.py [--out docs/screenshots] [--chromium PATH]

Renders a sample edition (the bundled sample feed, an editor's note with its sign-off, a
logo masthead with its dark-mode variant served from 127.0.0.1) through the real templates,
the way a send does, and opens the HTML part in headless Chromium: with the light colour
scheme, with the dark one (clients that honour prefers-color-scheme), and with every image
refused (a client with images off shows the alt text). The clock is fixed, so the pictures
change only when the email does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from datetime import UTC, date, datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer.app import App  # noqa: E402
from mailer.clock import FixedClock  # noqa: E402
from mailer.collect import collect  # noqa: E402
from mailer.db import init_db  # noqa: E402
from mailer.edition import build_edition, fill_preview, get_edition  # noqa: E402
from mailer.editions_control import edit_text  # noqa: E402
from mailer.sample import write_sample_feed  # noqa: E402
from tests.support.browser import CHROMIUM_ARGS  # noqa: E402
from tests.support.settings import make_settings  # noqa: E402

WIDTHS = (320, 375, 600)
DAY = date(2026, 11, 26)
NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
NOTE = ("Good morning. The care workers' deal is the biggest win for low-paid staff in a "
        "decade, and the detail still matters: our reporters read all 80 pages.")
LOGO = ('<svg xmlns="http://www.w3.org/2000/svg" width="300" height="60"><text x="0" y="44" '
        'font-family="Georgia" font-size="40" font-weight="bold" fill="{fill}">LabourList'
        '</text></svg>')


def _logo_server(folder: Path) -> tuple[ThreadingHTTPServer, str]:
    (folder / "logo.svg").write_text(LOGO.format(fill="#ffffff"))
    (folder / "logo-dark.svg").write_text(LOGO.format(fill="#ffd6dc"))
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 partial(SimpleHTTPRequestHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def render(folder: Path, base: str) -> Path:
    """The sample edition's HTML part as the console previews it (the readers' slots
    filled with a sample reader's)."""
    settings = make_settings(folder, logo_url=f"{base}/logo.svg",
                             logo_dark_url=f"{base}/logo-dark.svg", logo_alt="LabourList",
                             editor_signoff="Hannah, LabourList editor",
                             feed_url=str(write_sample_feed(folder / "feed.xml", NOW)))
    app = App.create(settings, clock=FixedClock(NOW))
    try:
        init_db(app.engine)
        collect(app)
        build_edition(app, DAY)
        with app.sessions() as session:
            edition = get_edition(session, DAY)
            assert edition is not None
            subject, preheader = edition.subject, edition.preheader
        edit_text(app, DAY, subject=subject, preheader=preheader, editor_note=NOTE)
        with app.sessions() as session:
            edition = get_edition(session, DAY)
            assert edition is not None
            html = fill_preview(settings, edition, edition.html)
    finally:
        app.close()
    page = folder / "email.html"
    page.write_text(html, encoding="utf-8")
    return page


def shoot(playwright: Any, chromium: str, page_file: Path, out: Path) -> list[Path]:
    browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
    made = []
    try:
        for scheme, images in (("light", True), ("dark", True), ("noimages", False)):
            for width in WIDTHS:
                context = browser.new_context(viewport={"width": width, "height": 900},
                                              color_scheme="dark" if scheme == "dark"
                                              else "light")
                tab = context.new_page()
                if not images:
                    tab.route("**/*", lambda route: route.abort()
                              if route.request.resource_type == "image" else route.continue_())
                tab.goto(page_file.as_uri())
                target = out / f"email-{scheme}-{width}.png"
                tab.screenshot(path=str(target), full_page=True)
                made.append(target)
                context.close()
    finally:
        browser.close()
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server, base = _logo_server(Path(tmp))
        try:
            page = render(Path(tmp), base)
            with sync_playwright() as playwright:
                made = shoot(playwright, args.chromium, page, args.out)
        finally:
            server.shutdown()
    for path in made:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
