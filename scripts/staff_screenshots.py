"""Save a PNG of every staff console page at 375 px (a phone) and 1280 px (a laptop) wide.

    .venv/bin/python scripts/staff_screenshots.py [--out docs/screenshots] [--chromium PATH]

Runs the real app under waitress on 127.0.0.1 with a throw-away SQLite database and a file
outbox (nothing is emailed). A fortnight of history is made by the real pipeline (articles,
sends, a few unsubscribes and bounces after each), then each width walks the console the way an
editor would: sign in, dashboard, today's edition (build, note, reorder), a test send, the send
confirmation, the finished progress page, the subscriber pages (search, one subscriber, erasure
confirmation, an import with a bad line), settings (with a refused value) and the audit log.
The clock is fixed, so the pictures only change when the pages do.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from mailer.accounts import ADMIN, add_staff  # noqa: E402
from mailer.app import App  # noqa: E402
from mailer.clock import FixedClock, send_datetime  # noqa: E402
from mailer.config import Settings, validate  # noqa: E402
from mailer.db import init_db  # noqa: E402
from mailer.models import ACTIVE, Article  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import screenshots  # noqa: E402  (the public pages' script: server, browser flags)

WIDTHS, ARGS = screenshots.WIDTHS, screenshots.ARGS
NOW = datetime(2026, 11, 26, 6, 30, tzinfo=UTC)  # Thursday, half an hour before the send
TODAY = date(2026, 11, 26)
EDITOR, PASSWORD = "hannah.editor@labourlist.org", "screenshots-only-password"
NAMES = ("Siân Evans", "Amir Hussain", "Grace O'Neill", "Tomasz Nowak", "Beth Carter",
         "Kwame Mensah", "Ruth Adeyemi", "Declan Murphy", "Priya Natarajan", "Olu Bakare")
HEADLINES = ("Councils warn of a winter funding gap", "Union ballot result due on Friday",
             "What the by-election tells us", "Housing bill clears its second reading",
             "Why the left must talk about growth")


def build(workdir: Path, url: str) -> App:
    settings = Settings(database_url=f"sqlite:///{workdir / 'staff.db'}",
                        dsn=f"file://{workdir / 'outbox'}", base_url="https://mail.example.org",
                        secret_key=secrets.token_urlsafe(32),
                        feed_url=str(workdir / "feed.xml"))
    validate(settings)
    app = App.create(settings, clock=FixedClock(NOW - timedelta(days=30)))
    init_db(app.engine)
    seed_history(app, workdir)
    with app.sessions.begin() as session:
        add_staff(session, EDITOR, PASSWORD, role=ADMIN, at=NOW - timedelta(days=40))
        add_staff(session, "audience.team@labourlist.org", PASSWORD,
                  at=NOW - timedelta(days=40))
    return app


def address(i: int) -> str:
    first = NAMES[i % len(NAMES)].split()[0].lower().replace("â", "a")
    return f"{first}.{i}@example.org"


def seed_history(app: App, workdir: Path) -> None:
    """A month of readers joining and leaving, and two weeks of editions sent for real."""
    from mailer.pipeline import run_send
    from mailer.sample import write_sample_feed
    from mailer.subscribers import add, find, set_status

    clock: FixedClock = app.clock  # type: ignore[assignment]
    start = NOW - timedelta(days=30)
    joins = [start + timedelta(hours=11 * i + 3) for i in range(60)]
    joined = 0

    def join_until(moment: datetime) -> None:
        nonlocal joined
        with app.sessions.begin() as session:
            while joined < len(joins) and joins[joined] <= moment:
                add(session, address(joined), name=NAMES[joined % len(NAMES)], status=ACTIVE,
                    source="web" if joined % 3 else "import", at=joins[joined])
                joined += 1

    day = (start + timedelta(days=14)).date()
    serial = 0
    while day < TODAY:
        if day.weekday() < 5:
            at = send_datetime(day, app.settings.send_hour_minute, app.settings.tz)
            join_until(at)
            clock.set(at - timedelta(minutes=1))
            with app.sessions.begin() as session:
                for hours, title in enumerate(HEADLINES[: 3 + day.weekday() % 3]):
                    serial += 1
                    session.add(Article(
                        guid=f"https://labourlist.org/?p={90000 + serial}", title=title,
                        link=f"https://labourlist.org/2026/11/story-{serial}/",
                        author="LabourList staff", summary_text="A fictional story.",
                        section=("News", "Comment", "Analysis")[serial % 3],
                        categories=["News"], published_at=at - timedelta(hours=hours + 1)))
            run_send(app, day, collect_first=False)
            clock.set(at + timedelta(hours=5))
            with app.sessions.begin() as session:
                for n, status in ((serial * 7 % joined, "unsubscribed"),
                                  (serial * 11 % joined, "bounced")):
                    sub = find(session, address(n))
                    if sub is not None and sub.status == ACTIVE:
                        set_status(session, sub, status, source="webhook", at=clock.now())
        day += timedelta(days=1)
    join_until(NOW)
    clock.set(NOW)
    write_sample_feed(workdir / "feed.xml", NOW)


def shoot(page: Any, out: Path, name: str, width: int) -> None:
    screenshots.shoot(page, out, name, width, prefix="staff-")


def walk(browser: Any, url: str, out: Path, width: int, workdir: Path) -> None:
    context = browser.new_context(viewport={"width": width, "height": 900},
                                  device_scale_factor=1, java_script_enabled=False)
    context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/]).*"), lambda route: route.abort())
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))

    page.goto(f"{url}/staff/")
    page.get_by_label("Email address").fill(EDITOR)
    page.get_by_label("Password").fill(PASSWORD)
    shoot(page, out, "login", width)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("h1:has-text('Dashboard')")  # (the redirect after signing in)
    shoot(page, out, "dashboard", width)

    page.goto(f"{url}/staff/editions/{TODAY}")
    shoot(page, out, "edition-new", width)
    page.get_by_role("button", name="Build the edition").click()
    page.get_by_role("textbox", name="Editor’s note").fill(
        "Good morning. The care workers’ pay deal leads today: our reporter has been "
        "talking to the unions behind it.\n\nBack tomorrow with the conference round-up.")
    page.get_by_role("button", name="Save and update the preview").click()
    page.get_by_role("button", name=re.compile("^Pin “Polling analysis")).click()
    page.get_by_role("button", name="Send test to me").click()
    page.wait_for_timeout(300)  # let the preview frames paint
    shoot(page, out, "edition", width)

    page.get_by_role("link", name="Send now…").click()
    shoot(page, out, "send-confirm", width)
    page.get_by_role("button", name=re.compile("subscribers now")).click()
    shoot(page, out, "progress", width)
    page.get_by_role("link", name="Dashboard").click()
    shoot(page, out, "dashboard-after", width)

    page.get_by_role("link", name="Subscribers", exact=True).click()
    shoot(page, out, "subscribers", width)
    page.get_by_label("Search by address or name").fill("grace")
    page.get_by_role("button", name="Search").click()
    page.locator("#subscribers tbody a").first.click()
    shoot(page, out, "subscriber", width)
    page.get_by_role("link", name="Erase…").click()
    shoot(page, out, "erase", width)

    csv_path = workdir / f"import-{width}.csv"
    csv_path.write_text("email,name\nnew.reader@example.org,New Reader\n"
                        "not an address,Someone\nanother.reader@example.org,\n",
                        encoding="utf-8")
    page.goto(f"{url}/staff/subscribers/import")
    page.get_by_label("CSV file").set_input_files(str(csv_path))
    page.get_by_role("button", name="Import").click()
    shoot(page, out, "import", width)

    page.goto(f"{url}/staff/settings")
    page.get_by_label("Send time").fill("7.15am")
    page.get_by_role("button", name="Save settings").click()
    shoot(page, out, "settings", width)

    page.goto(f"{url}/staff/audit")
    shoot(page, out, "audit", width)
    context.close()
    # The sample articles' images live on labourlist.org (blocked here, offline by design).
    unexpected = [e for e in errors if "net::ERR_" not in e and "status of 4" not in e]
    if unexpected:
        raise SystemExit(f"browser console errors at {width}px: {unexpected}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=ARGS)
        try:
            for width in WIDTHS:  # a fresh world per width: the walk sends the edition
                with tempfile.TemporaryDirectory() as tmp:
                    server = screenshots.Server(Path(tmp), build)
                    try:
                        walk(browser, server.url, args.out, width, Path(tmp))
                    finally:
                        server.stop()
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
