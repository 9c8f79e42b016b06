"""A sent edition whose links people (and scanners) can follow: the click tests' world.

`sent_edition(app, tmp_path, readers=N, **settings)` sends the sample feed's edition through
the file outbox to N readers and returns each reader's tracked links as they appear in the
HTML part (in document order, the trap last) and in the text part. `client_for(app)` is a
Flask test client of the real web app; `follow(client, url, ...)` follows a link the way a
browser or a scanner would, and `flush(client)` writes the buffered clicks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from email import message_from_bytes, policy
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from mailer.app import App
from mailer.models import Click
from mailer.pipeline import run_send
from mailer.web import CLICKS_KEY, create_app
from tests.support.seed import seed_subscribers, with_feed

BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
           "(KHTML, like Gecko) Version/17.1 Safari/605.1.15")
BROWSER_HEADERS = {"User-Agent": BROWSER, "Accept": "text/html,application/xhtml+xml",
                   "Accept-Language": "en-GB,en;q=0.9"}
_HREF = re.compile(r'(?:href|src)="([^"]+/[ro]/[^"]+)"')
_TEXT_URL = re.compile(r"https?://\S+/r/\S+")


@dataclass
class Copy:
    """One reader's email: the tracked links of its HTML part and its text part."""

    email: str
    html_links: list[str] = field(default_factory=list)
    text_links: list[str] = field(default_factory=list)
    html: str = ""
    text: str = ""


def sent_edition(app: App, tmp_path: Path, *, readers: int = 3,
                 **settings: Any) -> tuple[date, list[Copy]]:
    """Send today's sample edition to `readers` readers; their copies, by address.

    SpamAssassin is left out (preflight then warns that it is unavailable): these tests are
    about links, and a score costs seconds."""
    settings = {"spamassassin_command": "/nonexistent/spamassassin", **settings}
    app.settings = app.settings.replace(**settings)
    with_feed(app, tmp_path)
    seed_subscribers(app, readers)
    day = app.clock.today(app.settings.tz)
    outcome = run_send(app, day)
    assert outcome.status == "sent", outcome
    return day, read_outbox(Path(urlsplit(app.settings.dsn).path or
                                 app.settings.dsn.removeprefix("file://")))


def read_outbox(outbox: Path) -> list[Copy]:
    copies = []
    for path in sorted(outbox.glob("*.eml")):
        msg = message_from_bytes(path.read_bytes(), policy=policy.default)
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        copies.append(Copy(parseaddr(str(msg["To"]))[1], _HREF.findall(html),
                           _TEXT_URL.findall(text), html, text))
    return copies


def client_for(app: App, **config: Any) -> FlaskClient:
    web = create_app(app, {"TESTING": True, **config})
    return web.test_client()


def follow(client: FlaskClient, url: str, *, method: str = "GET",
           headers: dict[str, str] | None = None, address: str = "198.51.100.7") -> TestResponse:
    """Request a tracked link from `address` (a documentation address, as a reader's)."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return client.open(path, method=method, headers=headers or BROWSER_HEADERS,
                       environ_base={"REMOTE_ADDR": address})


def flush(client: FlaskClient) -> int:
    """Write the clicks buffered so far (what the flusher thread does twice a second).
    What it returns counts only this call's batch: the flusher thread may have written some
    of them first, so a test counts rows (`clicks_written`) to know they are all there."""
    web: Flask = client.application
    return web.extensions[CLICKS_KEY].recorder.flush()


def clicks_written(app: App) -> int:
    with app.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Click)) or 0)
