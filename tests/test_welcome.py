"""The welcome email: sent once per reader when they confirm, through the configured transport.

A real SMTP server (aiosmtpd) receives it where its headers and links matter; the file outbox
where only the count does. Exactly once is tested with confirms racing on threads, on SQLite
and on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask.testing import FlaskClient
from sqlalchemy import select

from mailer.app import App
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.models import (
    ACTIVE,
    PAUSED,
    PENDING,
    SENT,
    UNSUBSCRIBED,
    Edition,
    SendLog,
    Subscriber,
    Suppression,
)
from mailer.subscribers import add, email_hash
from mailer.web import create_app
from mailer.welcome import send_welcome
from tests.support.settings import make_settings
from tests.support.smtpsink import SmtpSink
from tests.test_web_public import CSRF_RE, confirm_path, csrf_from, events, outbox, subscriber

DAY = date(2026, 11, 25)


def make_app(tmp_path: Path, clock: FixedClock, **overrides: Any) -> App:
    app = App.create(make_settings(tmp_path, **overrides), clock=clock)
    init_db(app.engine)
    return app


def web_client(app: App) -> FlaskClient:
    return create_app(app, {"TESTING": True, "MAILER_SEND_INLINE": True}).test_client()


def sent_edition(app: App, day: date = DAY, subject: str = "Conference votes & more") -> None:
    with app.sessions.begin() as session:
        session.add(Edition(edition_date=day, state=SENT, subject=subject,
                            window_start=datetime(2026, 11, 24, tzinfo=UTC),
                            window_end=datetime(2026, 11, 25, tzinfo=UTC)))


def text_of(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def link_path(text: str) -> str:
    match = re.search(r"https?://\S+/confirm/\S+", text)
    assert match, text
    return urlsplit(match.group(0)).path


def sign_up_and_confirm(client: FlaskClient, confirmation: Callable[[], str],
                        email: str = "sian@example.org", name: str = "Siân") -> tuple[str, str]:
    """Subscribe through the form and press the confirmation link (the confirm path);
    `confirmation` gives the confirmation email's path. (path, the button's CSRF token)."""
    token = csrf_from(client, "/subscribe")
    response = client.post("/subscribe", data={"email": email, "name": name, "hp": "",
                                               "csrf_token": token})
    assert response.status_code == 200
    path = confirmation()
    csrf = csrf_from(client, path)
    done = client.post(path, data={"csrf_token": csrf})
    assert done.status_code == 200 and "You are subscribed" in done.text
    return path, csrf


def welcome_logs(app: App) -> list[tuple[str, str, int | None]]:
    with app.sessions() as session:
        return [(row.recipients, row.detail, row.edition_id) for row in session.scalars(
            select(SendLog).where(SendLog.kind == "welcome").order_by(SendLog.id))]


# ---- what arrives --------------------------------------------------------------------------


def test_confirming_sends_one_welcome_through_smtp(tmp_path: Path, clock: FixedClock,
                                                   smtp_sink: SmtpSink) -> None:
    app = make_app(tmp_path, clock, dsn=smtp_sink.dsn)
    sent_edition(app, date(2026, 11, 24), "Older")
    sent_edition(app)
    client = web_client(app)
    path, csrf = sign_up_and_confirm(
        client, lambda: link_path(text_of(smtp_sink.messages[0].message)))
    assert smtp_sink.wait_for(2)
    welcome = smtp_sink.messages[1]
    assert welcome.rcpt_tos == ["sian@example.org"]
    message = welcome.message
    assert message["Subject"] == "Welcome to LabourList Daily"
    text = text_of(message)
    assert "Welcome, Siân" in text and "every weekday morning" in text
    assert "https://mail.example.org/archive/2026-11-25" in text  # the latest sent edition
    assert "Conference votes & more" in text

    # An edition's headers: List-Id, and the reader's own one-click link and mailto.
    assert message["List-Id"] and message["List-Unsubscribe-Post"] == (
        "List-Unsubscribe=One-Click")
    links = re.findall(r"<([^>]+)>", str(message["List-Unsubscribe"]))
    one_click = urlsplit(links[0]).path
    assert one_click.startswith("/unsubscribe/") and links[1].startswith("mailto:")
    assert one_click.rsplit("/", 1)[1] in links[1]
    assert f"https://mail.example.org{one_click}" in text

    # Its preferences link is the reader's, and works.
    prefs = re.search(r"https://mail\.example\.org(/preferences/\S+)", text).group(1)  # type: ignore[union-attr]
    assert client.get(prefs).status_code == 200

    sub = subscriber(app, "sian@example.org")
    assert sub is not None and sub.welcomed_at == clock.now()
    assert welcome_logs(app) == [(f"subscriber {sub.id}", "ok", 2)]
    assert events(app, "sian@example.org")[-1] == ("welcomed", "welcome")

    # Pressing the button again changes nothing and sends nothing.
    again = client.post(path, data={"csrf_token": csrf})
    assert again.status_code == 200 and "already subscribed" in again.text
    # The one-click link in the welcome works like an edition's.
    leave = web_client(app).post(one_click, data={"List-Unsubscribe": "One-Click"})
    assert leave.status_code == 200
    assert subscriber(app, "sian@example.org").status == UNSUBSCRIBED  # type: ignore[union-attr]
    assert len(smtp_sink.messages) == 2


def test_before_any_edition_it_links_the_archive(tmp_path: Path, clock: FixedClock) -> None:
    app = make_app(tmp_path, clock)
    client = web_client(app)
    sign_up_and_confirm(client, lambda: confirm_path(outbox(app)[0]), name="")
    confirmation, welcome = outbox(app)  # named by Message-ID: msg.* < welcome.*
    message = message_from_bytes(welcome.read_bytes(), policy=policy.default)
    text = text_of(message)  # type: ignore[arg-type]
    assert message["Subject"] == "Welcome to LabourList Daily"
    assert "\nWelcome\n" in text.replace("\r\n", "\n") and "mail.example.org/archive/" in text
    assert welcome_logs(app)[0][2] is None


def test_weekly_reader_with_sections_is_told_so(tmp_path: Path, clock: FixedClock) -> None:
    app = make_app(tmp_path, clock)
    with app.sessions.begin() as session:
        sub, _ = add(session, "w@example.org", status=ACTIVE, frequency="weekly",
                     sections=["News", "Comment"], source="test")
        sub_id = sub.id
    assert send_welcome(app, sub_id) == "sent"
    [eml] = outbox(app)
    text = text_of(message_from_bytes(eml.read_bytes(), policy=policy.default))  # type: ignore[arg-type]
    assert "the weekly round-up with News and Comment only" in " ".join(text.split())
    assert "every Saturday morning" in text


def test_a_templates_override_is_used(tmp_path: Path, clock: FixedClock) -> None:
    app = make_app(tmp_path, clock)
    own = tmp_path / "templates"
    own.mkdir()
    (own / "welcome.txt.j2").write_text("Hello from the newsroom, {{ greeting }}.\n"
                                        "{{ preferences_url }}\n", encoding="utf-8")
    with app.sessions.begin() as session:
        sub, _ = add(session, "o@example.org", status=ACTIVE, first_name="Ola", source="test")
        sub_id = sub.id
    assert send_welcome(app, sub_id) == "sent"
    text = text_of(message_from_bytes(outbox(app)[0].read_bytes(), policy=policy.default))  # type: ignore[arg-type]
    assert text.startswith("Hello from the newsroom, Welcome, Ola.")


# ---- exactly once ---------------------------------------------------------------------------


def test_two_concurrent_confirms_send_one_welcome(database_url: str, tmp_path: Path,
                                                  clock: FixedClock) -> None:
    app = make_app(tmp_path, clock, database_url=database_url)
    try:
        web = create_app(app, {"TESTING": True, "MAILER_SEND_INLINE": True})
        first = web.test_client()
        token = csrf_from(first, "/subscribe")
        first.post("/subscribe", data={"email": "race@example.org", "csrf_token": token})
        [confirmation] = outbox(app)
        path = confirm_path(confirmation)
        clients = [web.test_client() for _ in range(4)]
        tokens = [csrf_from(client, path) for client in clients]
        start = threading.Barrier(len(clients))
        answers: list[int] = []

        def press(client: FlaskClient, csrf: str) -> None:
            start.wait()
            answers.append(client.post(path, data={"csrf_token": csrf}).status_code)

        threads = [threading.Thread(target=press, args=pair) for pair in zip(clients, tokens,
                                                                               strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert answers == [200] * len(clients)
        assert len(outbox(app)) == 2  # the confirmation and one welcome
        assert len(welcome_logs(app)) == 1
        # And the claim alone, many senders at once: one wins.
        with app.sessions.begin() as session:
            session.get_one(Subscriber, subscriber(app, "race@example.org").id  # type: ignore[union-attr]
                            ).welcomed_at = None
        results: list[str] = []
        racing = threading.Barrier(6)
        sub_id = subscriber(app, "race@example.org").id  # type: ignore[union-attr]

        def send() -> None:
            racing.wait()
            results.append(send_welcome(app, sub_id))

        senders = [threading.Thread(target=send) for _ in range(6)]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(30)
        assert sorted(results) == ["sent"] + ["skipped"] * 5
        assert len(outbox(app)) == 3
    finally:
        app.close()


# ---- who never gets one ----------------------------------------------------------------------


def test_suppressed_and_inactive_readers_get_nothing(app: App) -> None:
    ids = {}
    with app.sessions.begin() as session:
        for email, status in (("gone@example.org", ACTIVE), ("paused@example.org", PAUSED),
                              ("pending@example.org", PENDING),
                              ("left@example.org", UNSUBSCRIBED)):
            sub, _ = add(session, email, status=status, source="test")
            ids[email] = sub.id
        session.add(Suppression(email_hash=email_hash("gone@example.org"), reason="erased"))
    for sub_id in ids.values():
        assert send_welcome(app, sub_id) == "skipped"
    assert send_welcome(app, 9999) == "skipped"
    assert outbox(app) == [] and welcome_logs(app) == []
    with app.sessions() as session:
        assert session.scalars(select(Subscriber.welcomed_at)).all() == [None] * 4


def test_welcome_email_false_sends_nothing(tmp_path: Path, clock: FixedClock) -> None:
    app = make_app(tmp_path, clock, welcome_email=False)
    client = web_client(app)
    sign_up_and_confirm(client, lambda: confirm_path(outbox(app)[0]))
    assert len(outbox(app)) == 1  # the confirmation only
    sub = subscriber(app, "sian@example.org")
    assert sub is not None and sub.status == ACTIVE and sub.welcomed_at is None
    assert send_welcome(app, sub.id) == "off"
    assert welcome_logs(app) == []


def test_a_refused_welcome_is_recorded_and_confirmation_still_works(
        tmp_path: Path, clock: FixedClock, make_smtp_sink: Callable[..., SmtpSink]) -> None:
    # The confirmation is accepted; the second message to the address (the welcome) is not.
    sink = make_smtp_sink(rcpt_policy=lambda address, attempt:
                          "550 5.1.1 <sian@example.org> no such user" if attempt > 1 else None)
    app = make_app(tmp_path, clock, dsn=sink.dsn)
    sign_up_and_confirm(web_client(app), lambda: link_path(text_of(sink.messages[0].message)))
    sub = subscriber(app, "sian@example.org")
    assert sub is not None and sub.status == ACTIVE and sub.welcomed_at is not None
    [(recipients, detail, _)] = welcome_logs(app)
    assert recipients == f"subscriber {sub.id}" and detail.startswith("failed")
    assert "550" in detail and "sian@example.org" not in detail
    assert events(app, "sian@example.org")[-1] == ("welcome-failed", "welcome")
    assert len(sink.messages) == 1


def test_an_unreachable_server_does_not_break_confirming(tmp_path: Path,
                                                         clock: FixedClock) -> None:
    app = make_app(tmp_path, clock)
    client = web_client(app)
    token = csrf_from(client, "/subscribe")
    client.post("/subscribe", data={"email": "x@example.org", "csrf_token": token})
    path = confirm_path(outbox(app)[0])
    page = client.get(path)
    csrf = CSRF_RE.search(page.text).group(1)  # type: ignore[union-attr]
    app.settings = dataclasses.replace(app.settings, dsn="smtp://127.0.0.1:1")  # no one there
    done = client.post(path, data={"csrf_token": csrf})
    assert done.status_code == 200 and "You are subscribed" in done.text
    [(_, detail, _)] = welcome_logs(app)
    assert detail.startswith(("failed", "retry"))
