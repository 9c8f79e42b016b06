"""The public pages in a real headless Chromium, against the real app under waitress.

What a reader does, end to end: fill the subscribe form, receive the confirmation email at a
real SMTP server (aiosmtpd), open its link, press the button; later open an email's unsubscribe
link and press that button. Also checks the browser reports no CSP violation or other console
error, since a policy that blocks our own stylesheet would only show up here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailer.app import App
from mailer.clock import Clock
from mailer.db import init_db
from mailer.models import ACTIVE, UNSUBSCRIBED, SubscriberEvent
from mailer.subscribers import add, find
from mailer.tokens import UNSUBSCRIBE, make_token
from mailer.web import create_app
from tests.support.browser import NEEDS_CHROMIUM, LiveServer, browser_tab
from tests.support.settings import make_settings
from tests.support.smtpsink import SmtpSink

pytestmark = NEEDS_CHROMIUM


@pytest.fixture
def live(tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[tuple[LiveServer, App]]:
    holder: dict[str, App] = {}

    def build(url: str) -> Any:
        app = App.create(make_settings(tmp_path, base_url=url, dsn=smtp_sink.dsn), clock=Clock())
        init_db(app.engine)
        holder["app"] = app
        return create_app(app)  # as `mailer serve` runs it: emails sent on a thread

    server = LiveServer(build)
    yield server, holder["app"]
    server.stop()
    holder["app"].close()


@pytest.fixture
def page() -> Iterator[Any]:
    with browser_tab(timeout_ms=15_000) as tab:
        yield tab


def test_subscribe_confirm_unsubscribe(live: tuple[LiveServer, App], smtp_sink: SmtpSink,
                                       page: Any) -> None:
    server, app = live
    page.goto(f"{server.url}/subscribe")
    page.get_by_label("Email address").fill("browser@example.org")
    page.get_by_label("First name").fill("Bea")
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()

    assert smtp_sink.wait_for(1, timeout=15), "no confirmation email reached the SMTP server"
    received = smtp_sink.messages[0]
    assert received.rcpt_tos == ["browser@example.org"]
    body = received.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    link = re.search(r"http://127\.0\.0\.1:\d+/confirm/\S+", body)
    assert link, body

    page.goto(link.group(0))
    page.get_by_role("heading", name="Confirm your subscription").wait_for()
    with app.sessions() as session:
        sub = find(session, "browser@example.org")
        assert sub is not None and sub.status == "pending" and sub.name == "Bea"
    page.get_by_role("button", name="Yes, subscribe me").click()
    page.get_by_role("heading", name="You are subscribed").wait_for()
    with app.sessions() as session:
        sub = find(session, "browser@example.org")
        assert sub is not None and sub.status == ACTIVE
        sub_id = sub.id

    token = make_token(app.secret_key, UNSUBSCRIBE, sub_id)
    page.goto(f"{server.url}/unsubscribe/{token}")
    page.get_by_role("heading", name="Unsubscribe from").wait_for()
    assert page.get_by_role("link", name=re.compile("preferences")).count() == 1
    page.get_by_role("button", name="Unsubscribe").click()
    page.get_by_role("heading", name="You have been unsubscribed").wait_for()
    with app.sessions() as session:
        sub = find(session, "browser@example.org")
        assert sub is not None and sub.status == UNSUBSCRIBED
        last = session.scalars(select(SubscriberEvent).where(
            SubscriberEvent.subscriber_id == sub_id).order_by(SubscriberEvent.id.desc())).first()
        assert last is not None and (last.kind, last.source) == ("unsubscribed", "page")

    assert page.console_errors == []  # e.g. a Content-Security-Policy violation


def test_unsubscribe_link_from_an_email(live: tuple[LiveServer, App], page: Any) -> None:
    server, app = live
    with app.sessions.begin() as session:
        sub, _ = add(session, "reader@example.org", status=ACTIVE, source="test")
        sub_id = sub.id
    page.goto(f"{server.url}/unsubscribe/{make_token(app.secret_key, UNSUBSCRIBE, sub_id)}")
    with app.sessions() as session:  # opening the link changed nothing
        assert find(session, "reader@example.org").status == ACTIVE  # type: ignore[union-attr]
    page.get_by_role("button", name="Unsubscribe").click()
    page.get_by_role("heading", name="You have been unsubscribed").wait_for()
    with app.sessions() as session:
        assert find(session, "reader@example.org").status == UNSUBSCRIBED  # type: ignore
    assert page.console_errors == []
