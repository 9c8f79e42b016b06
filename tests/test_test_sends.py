"""A test send says it is one in its body, and its unsubscribe and preferences links open
sample pages that change nothing (not a 400)."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from flask.testing import FlaskClient

from mailer.app import App
from mailer.message import TEST_BANNER
from mailer.pipeline import run_send
from mailer.subscribers import add, find
from mailer.web import create_app
from tests.support.clicks import read_outbox
from tests.support.seed import with_feed

DAY = date(2026, 11, 26)


def test_a_test_send_says_so_and_its_reader_links_open_sample_pages(
        app: App, tmp_path: Path) -> None:
    with_feed(app, tmp_path)
    with app.sessions.begin() as session:
        add(session, "reader@example.org")
    assert run_send(app, DAY, test_to=["editor@example.org"]).status == "test"
    [copy] = read_outbox(tmp_path / "outbox")
    assert TEST_BANNER in copy.html and copy.text.startswith(f"*** {TEST_BANNER} ***")
    links = [u for u in re.findall(r'href="([^"]+)"', copy.html)
             if "/unsubscribe/" in u or "/preferences/" in u]
    assert sorted(links) == ["https://mail.example.org/preferences/test",
                             "https://mail.example.org/unsubscribe/test"]
    client: FlaskClient = create_app(app, {"TESTING": True}).test_client()
    for link in links:
        answer = client.get(link.removeprefix("https://mail.example.org"))
        assert answer.status_code == 200 and "This page is a sample" in answer.get_data(True)
    one_click = client.post("/unsubscribe/test", data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200
    with app.sessions() as session:
        assert find(session, "reader@example.org").status == "active"  # type: ignore[union-attr]
