"""The public web pages over HTTP (Flask's test client): opt-in, RFC 8058, preferences, archive.

Every refusal test checks two things: the status code and that nothing changed in the
database (status, events, outbox).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from mailer import optin
from mailer.app import App
from mailer.cli import cli
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.models import (
    ACTIVE,
    PAUSED,
    PENDING,
    SENT,
    UNSUBSCRIBED,
    Article,
    Edition,
    RateEvent,
    Subscriber,
    SubscriberEvent,
)
from mailer.render import build_view, render_archive
from mailer.subscribers import add, find
from mailer.tokens import CONFIRM, PREFERENCES, UNSUBSCRIBE, make_token
from mailer.web import create_app
from mailer.web.security import CSP, EMAIL_CSP
from mailer.web.throttle import Limit
from tests.support.settings import make_settings

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


# ---- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def web(app: App) -> Flask:
    return create_app(app, {"TESTING": True, "MAILER_SEND_INLINE": True})


@pytest.fixture
def client(web: Flask) -> FlaskClient:
    return web.test_client()


@pytest.fixture
def any_app(database_url: str, tmp_path: Path, clock: FixedClock) -> Iterator[App]:
    """The same App on SQLite and on PostgreSQL (the domain flows that must hold on both)."""
    application = App.create(make_settings(tmp_path, database_url=database_url), clock=clock)
    init_db(application.engine)
    yield application
    application.close()


def outbox(app: App) -> list[Path]:
    folder = Path(urlsplit(app.settings.dsn).path)
    return sorted(folder.glob("*.eml")) if folder.is_dir() else []


def confirm_path(eml: Path) -> str:
    message = message_from_bytes(eml.read_bytes(), policy=policy.default)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    match = re.search(r"https?://\S+/confirm/\S+", text)
    assert match, text
    return urlsplit(match.group(0)).path


def csrf_from(client: FlaskClient, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, response.text
    match = CSRF_RE.search(response.text)
    assert match, response.text
    return match.group(1)


def subscriber(app: App, email: str) -> Subscriber | None:
    with app.sessions() as session:
        return find(session, email)


def events(app: App, email: str) -> list[tuple[str, str]]:
    with app.sessions() as session:
        sub = find(session, email)
        assert sub is not None
        return [(e.kind, e.source) for e in session.scalars(
            select(SubscriberEvent).where(SubscriberEvent.subscriber_id == sub.id)
            .order_by(SubscriberEvent.id))]


def count_subscribers(app: App) -> int:
    with app.sessions() as session:
        return session.scalar(select(func.count()).select_from(Subscriber)) or 0


def add_sub(app: App, email: str = "reader@example.org", status: str = ACTIVE,
            name: str = "") -> int:
    with app.sessions.begin() as session:
        sub, _ = add(session, email, name=name, status=status, source="test",
                     at=app.clock.now())
        return sub.id


def unsub_path(app: App, sub_id: int) -> str:
    return f"/unsubscribe/{make_token(app.secret_key, UNSUBSCRIBE, sub_id)}"


def prefs_path(app: App, sub_id: int) -> str:
    return f"/preferences/{make_token(app.secret_key, PREFERENCES, sub_id)}"


def snapshot(app: App) -> tuple[object, ...]:
    """Everything a refused request must leave alone."""
    with app.sessions() as session:
        subs = tuple(session.execute(select(Subscriber.email, Subscriber.name, Subscriber.status,
                                            Subscriber.paused_until)
                                     .order_by(Subscriber.id)).all())
        evs = session.scalar(select(func.count()).select_from(SubscriberEvent))
    return subs, evs, tuple(outbox(app))


def subscribe_via_form(client: FlaskClient, email: str, name: str = "") -> None:
    token = csrf_from(client, "/subscribe")
    response = client.post("/subscribe", data={"email": email, "name": name, "hp": "",
                                               "csrf_token": token})
    assert response.status_code == 200, response.text
    assert "Check your inbox" in response.text


# ---- subscribe and confirm ----------------------------------------------------------------


def test_double_opt_in_flow(any_app: App) -> None:
    client = create_app(any_app, {"TESTING": True, "MAILER_SEND_INLINE": True}).test_client()
    subscribe_via_form(client, "Ann@Example.org", "Ann")
    sub = subscriber(any_app, "ann@example.org")
    assert sub is not None and sub.status == PENDING and sub.name == "Ann"
    [eml] = outbox(any_app)
    message = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert message["To"] == "ann@example.org"
    path = confirm_path(eml)

    page = client.get(path)  # what a link scanner does: nothing changes
    assert page.status_code == 200 and "Yes, subscribe me" in page.text
    assert subscriber(any_app, "ann@example.org").status == PENDING  # type: ignore[union-attr]

    token = CSRF_RE.search(page.text).group(1)  # type: ignore[union-attr]
    done = client.post(path, data={"csrf_token": token})
    assert done.status_code == 200 and "You are subscribed" in done.text
    sub = subscriber(any_app, "ann@example.org")
    assert sub is not None and sub.status == ACTIVE and sub.confirmed_at is not None

    again = client.post(path, data={"csrf_token": token})  # idempotent
    assert again.status_code == 200 and "already subscribed" in again.text
    assert events(any_app, "ann@example.org") == [
        ("subscribed", "web"), ("confirmation-sent", "web"), ("confirmed", "web"),
        ("welcomed", "welcome")]  # the welcome email (tests/test_welcome.py), once


def test_confirm_get_does_not_change_state(app: App, client: FlaskClient) -> None:
    subscribe_via_form(client, "scan@example.org")
    path = confirm_path(outbox(app)[0])
    before = snapshot(app)
    for _ in range(3):
        assert client.get(path).status_code == 200
        assert client.head(path).status_code == 200
    assert snapshot(app) == before


def test_confirm_needs_csrf(app: App, client: FlaskClient) -> None:
    subscribe_via_form(client, "csrf@example.org")
    path = confirm_path(outbox(app)[0])
    client.get(path)
    before = snapshot(app)
    for data in ({}, {"csrf_token": ""}, {"csrf_token": "forged"}):
        response = client.post(path, data=data)
        assert response.status_code == 400 and "This form has expired" in response.text
    # A valid token from another browser's session does not do either.
    other = create_app(app, {"TESTING": True}).test_client()
    assert client.post(path, data={"csrf_token": csrf_from(other, path)}).status_code == 400
    assert snapshot(app) == before


def test_known_address_gets_the_same_answer(app: App, client: FlaskClient) -> None:
    add_sub(app, "known@example.org", ACTIVE)
    token = csrf_from(client, "/subscribe")

    def answer(email: str) -> str:
        response = client.post("/subscribe", data={"email": email, "csrf_token": token})
        assert response.status_code == 200
        return response.text.replace(email, "ADDRESS")

    assert answer("known@example.org") == answer("unknown@example.org")
    assert len(outbox(app)) == 1  # only the new address got an email
    assert subscriber(app, "known@example.org").status == ACTIVE  # type: ignore[union-attr]
    assert events(app, "known@example.org") == [("added", "test")]


def test_pending_address_gets_the_email_again(app: App, client: FlaskClient) -> None:
    subscribe_via_form(client, "slow@example.org")
    subscribe_via_form(client, "slow@example.org")
    first, second = outbox(app)
    # Both links work: the reader may press the one in the first email.
    for path in (confirm_path(first), confirm_path(second)):
        assert client.get(path).status_code == 200
    token = csrf_from(client, confirm_path(first))
    assert client.post(confirm_path(first), data={"csrf_token": token}).status_code == 200
    assert subscriber(app, "slow@example.org").status == ACTIVE  # type: ignore[union-attr]


def test_embedded_form_without_csrf_token(app: App, web: Flask) -> None:
    """The WordPress embed: a cross-site POST with no cookie and no token is accepted."""
    client = web.test_client(use_cookies=False)
    response = client.post("/subscribe", data={"email": "embed@example.org", "hp": ""},
                           headers={"Origin": "https://labourlist.org",
                                    "Referer": "https://labourlist.org/newsletter/"})
    assert response.status_code == 200 and "Check your inbox" in response.text
    assert len(outbox(app)) == 1
    assert subscriber(app, "embed@example.org").status == PENDING  # type: ignore[union-attr]


def test_subscribe_with_a_bad_csrf_token_is_refused(app: App, client: FlaskClient) -> None:
    csrf_from(client, "/subscribe")
    before = snapshot(app)
    response = client.post("/subscribe", data={"email": "x@example.org", "csrf_token": "nope"})
    assert response.status_code == 400 and "This form has expired" in response.text
    assert snapshot(app) == before


def test_honeypot_filled(app: App, client: FlaskClient) -> None:
    before = snapshot(app)
    response = client.post("/subscribe", data={"email": "bot@example.org", "hp": "http://spam"})
    assert response.status_code == 400
    assert snapshot(app) == before


@pytest.mark.parametrize("email", [
    "", "not-an-address", "a@", "@example.org", "two@@example.org", "a b@example.org",
    "x@example.org\r\nBcc: victim@example.org", "x" * 10_000 + "@example.org",
])
def test_malformed_email(app: App, client: FlaskClient, email: str) -> None:
    before = snapshot(app)
    response = client.post("/subscribe", data={"email": email, "csrf_token":
                                               csrf_from(client, "/subscribe")})
    assert response.status_code == 400
    assert "valid email address" in response.text
    assert snapshot(app) == before


@pytest.mark.parametrize("name", ["x" * 10_240, "Ann\r\nBcc: victim@example.org", "Ann\nX",
                                  "Ann\rX", "Ann\x00", "Ann\u2028X"])
def test_bad_name_on_subscribe(app: App, client: FlaskClient, name: str) -> None:
    before = snapshot(app)
    response = client.post("/subscribe", data={"email": "n@example.org", "name": name,
                                               "csrf_token": csrf_from(client, "/subscribe")})
    assert response.status_code == 400
    assert snapshot(app) == before


def test_oversized_body_is_refused(app: App, client: FlaskClient) -> None:
    before = snapshot(app)
    response = client.post("/subscribe", data={"email": "n@example.org", "name": "x" * 200_000})
    assert response.status_code == 413
    assert snapshot(app) == before


def test_rate_limit_per_ip(app: App) -> None:
    limits = {"subscribe-ip": (Limit(2, 600),), "subscribe-address": (Limit(10, 600),)}
    web = create_app(app, {"TESTING": True, "MAILER_SEND_INLINE": True,
                           "MAILER_RATE_LIMITS": limits})
    client = web.test_client(use_cookies=False)
    for n in range(2):
        assert client.post("/subscribe", data={"email": f"r{n}@example.org"}).status_code == 200
    before = snapshot(app)
    refused = client.post("/subscribe", data={"email": "r9@example.org"})
    assert refused.status_code == 429 and "Too many requests" in refused.text
    assert snapshot(app) == before
    # Another client address is not affected; the window slides with the (fixed) clock.
    other = client.post("/subscribe", data={"email": "r9@example.org"},
                        environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 200
    app.clock.advance(minutes=11)  # type: ignore[attr-defined]
    assert client.post("/subscribe", data={"email": "r10@example.org"}).status_code == 200


def test_rate_limit_per_address_is_shared_between_processes(app: App) -> None:
    """Two app instances (two waitress processes) on one database share the counts."""
    limits = {"subscribe-ip": (Limit(100, 600),), "subscribe-address": (Limit(2, 3600),)}
    config = {"TESTING": True, "MAILER_SEND_INLINE": True, "MAILER_RATE_LIMITS": limits}
    one = create_app(app, config).test_client(use_cookies=False)
    two = create_app(App.create(app.settings, clock=app.clock), config).test_client(
        use_cookies=False)
    assert one.post("/subscribe", data={"email": "inbox@example.org"},
                    environ_base={"REMOTE_ADDR": "192.0.2.1"}).status_code == 200
    assert two.post("/subscribe", data={"email": "INBOX@example.org"},
                    environ_base={"REMOTE_ADDR": "192.0.2.2"}).status_code == 200
    before = snapshot(app)
    refused = one.post("/subscribe", data={"email": "inbox@example.org"},
                       environ_base={"REMOTE_ADDR": "192.0.2.3"})
    assert refused.status_code == 429
    assert snapshot(app) == before
    assert len(outbox(app)) == 2
    with app.sessions() as session:  # addresses are never stored in clear in rate_events
        keys = session.scalars(select(RateEvent.key)).all()
    assert keys and not any("inbox" in key for key in keys)


def test_background_send(app: App) -> None:
    """The default: the email goes out on a thread, the page does not wait for it."""
    client = create_app(app, {"TESTING": True}).test_client()
    subscribe_via_form(client, "bg@example.org")
    deadline = time.monotonic() + 10
    while not outbox(app) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(outbox(app)) == 1


# ---- confirmation links that must not work --------------------------------------------------


def test_expired_confirmation(app: App, client: FlaskClient, clock: FixedClock) -> None:
    subscribe_via_form(client, "late@example.org")
    path = confirm_path(outbox(app)[0])
    token = csrf_from(client, path)
    clock.advance(days=8)
    before = snapshot(app)
    page = client.get(path)
    assert page.status_code == 410 and "expired" in page.text
    assert client.post(path, data={"csrf_token": token}).status_code == 410
    assert snapshot(app) == before
    assert subscriber(app, "late@example.org").status == PENDING  # type: ignore[union-attr]


def test_confirmation_within_seven_days(app: App, client: FlaskClient, clock: FixedClock) -> None:
    subscribe_via_form(client, "week@example.org")
    path = confirm_path(outbox(app)[0])
    clock.advance(days=6, hours=23)
    token = csrf_from(client, path)
    assert client.post(path, data={"csrf_token": token}).status_code == 200
    assert subscriber(app, "week@example.org").status == ACTIVE  # type: ignore[union-attr]


def test_replayed_confirmation(any_app: App, clock: FixedClock) -> None:
    """An old link must not resubscribe someone who has left since."""
    web = create_app(any_app, {"TESTING": True, "MAILER_SEND_INLINE": True})
    client = web.test_client()
    subscribe_via_form(client, "gone@example.org")
    old = confirm_path(outbox(any_app)[0])
    assert client.post(old, data={"csrf_token": csrf_from(client, old)}).status_code == 200
    sub_id = subscriber(any_app, "gone@example.org").id  # type: ignore[union-attr]
    clock.advance(minutes=5)
    assert web.test_client(use_cookies=False).post(
        unsub_path(any_app, sub_id), data=ONE_CLICK).status_code == 200

    before = snapshot(any_app)
    token = CSRF_RE.search(client.get("/subscribe").text).group(1)  # type: ignore[union-attr]
    assert client.get(old).status_code == 410
    assert client.post(old, data={"csrf_token": token}).status_code == 410
    assert snapshot(any_app) == before

    # Asking again starts a new request: the old link still does nothing, the new one works.
    clock.advance(minutes=5)
    sent_before = set(outbox(any_app))
    subscribe_via_form(client, "gone@example.org")
    assert subscriber(any_app, "gone@example.org").status == PENDING  # type: ignore[union-attr]
    assert client.post(old, data={"csrf_token": token}).status_code == 410
    assert subscriber(any_app, "gone@example.org").status == PENDING  # type: ignore[union-attr]
    [eml] = set(outbox(any_app)) - sent_before
    new = confirm_path(eml)
    assert client.post(new, data={"csrf_token": token}).status_code == 200
    assert subscriber(any_app, "gone@example.org").status == ACTIVE  # type: ignore[union-attr]


def forgeries(app: App, sub_id: int, purpose: str) -> list[str]:
    good = make_token(app.secret_key, purpose, sub_id,
                      issued_at=app.clock.now() if purpose == CONFIRM else None,
                      extra="1" if purpose == CONFIRM else "")
    other = PREFERENCES if purpose != PREFERENCES else UNSUBSCRIBE
    return [
        good[:-1] + ("A" if good[-1] != "A" else "B"),  # tampered signature
        good[: len(good) // 2],  # truncated
        good.split(".")[0],  # no signature at all
        make_token("another-key", purpose, sub_id),  # signed by someone else
        make_token(app.secret_key, other, sub_id),  # a genuine token for another purpose
        make_token(app.secret_key, purpose, sub_id + 1)[:-2] + good[-2:],  # id swapped
        "x",
        "%00",
    ]


def test_forged_unsubscribe_tokens(app: App, web: Flask) -> None:
    sub_id = add_sub(app)
    client = web.test_client(use_cookies=False)
    before = snapshot(app)
    for token in forgeries(app, sub_id, UNSUBSCRIBE):
        assert client.post(f"/unsubscribe/{token}", data=ONE_CLICK).status_code == 400, token
        page = client.get(f"/unsubscribe/{token}")
        assert page.status_code == 400 and "not valid" in page.text
    assert snapshot(app) == before


def test_forged_preferences_tokens(app: App, client: FlaskClient) -> None:
    sub_id = add_sub(app)
    token = csrf_from(client, "/subscribe")
    before = snapshot(app)
    for forged in forgeries(app, sub_id, PREFERENCES):
        assert client.get(f"/preferences/{forged}").status_code == 400
        response = client.post(f"/preferences/{forged}",
                               data={"action": "unsubscribe", "csrf_token": token})
        assert response.status_code == 400
    assert snapshot(app) == before


def test_forged_confirmation_tokens(app: App, client: FlaskClient) -> None:
    sub_id = add_sub(app, status=PENDING)
    token = csrf_from(client, "/subscribe")
    before = snapshot(app)
    for forged in forgeries(app, sub_id, CONFIRM) + [
        make_token(app.secret_key, CONFIRM, sub_id),  # no issue time
        make_token(app.secret_key, CONFIRM, sub_id, issued_at=app.clock.now(), extra="x"),
    ]:
        assert client.get(f"/confirm/{forged}").status_code == 400
        assert client.post(f"/confirm/{forged}", data={"csrf_token": token}).status_code == 400
    assert snapshot(app) == before


# ---- RFC 8058 one-click and the unsubscribe page ---------------------------------------------


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_unsubscribe(any_app: App, encoding: str) -> None:
    web = create_app(any_app, {"TESTING": True})
    sub_id = add_sub(any_app, "click@example.org")
    other_id = add_sub(any_app, "stays@example.org")
    client = web.test_client(use_cookies=False)
    path = unsub_path(any_app, sub_id)
    for _ in range(2):  # idempotent
        if encoding == "urlencoded":
            response = client.post(path, data="List-Unsubscribe=One-Click",
                                   content_type="application/x-www-form-urlencoded")
        else:
            response = client.post(path, data=ONE_CLICK, content_type="multipart/form-data")
            assert response.request.content_type.startswith("multipart/form-data")
        assert response.status_code == 200
        assert "Location" not in response.headers and "Set-Cookie" not in response.headers
    assert subscriber(any_app, "click@example.org").status == UNSUBSCRIBED  # type: ignore
    assert subscriber(any_app, "stays@example.org").status == ACTIVE  # type: ignore
    assert events(any_app, "click@example.org")[-1] == ("unsubscribed", "one-click")
    assert [k for k, _ in events(any_app, "click@example.org")].count("unsubscribed") == 1
    assert other_id != sub_id


def test_one_click_without_content_type(app: App, web: Flask) -> None:
    sub_id = add_sub(app)
    response = web.test_client(use_cookies=False).post(
        unsub_path(app, sub_id), data=b"List-Unsubscribe=One-Click", content_type="")
    assert response.status_code == 200
    assert subscriber(app, "reader@example.org").status == UNSUBSCRIBED  # type: ignore


def test_one_click_for_an_erased_subscriber(app: App, web: Flask) -> None:
    response = web.test_client(use_cookies=False).post(unsub_path(app, 4242), data=ONE_CLICK)
    assert response.status_code == 200


def test_unsubscribe_get_changes_nothing(app: App, client: FlaskClient) -> None:
    sub_id = add_sub(app)
    before = snapshot(app)
    page = client.get(unsub_path(app, sub_id))
    assert page.status_code == 200
    # One form posts here, with one button (leave); the others (the weekly instead, offered
    # by default, and only some sections) post to the preferences page
    # (tests/test_web_choices.py).
    assert page.text.count('<form method="post">') == 1 and page.text.count("<button") == 3
    assert page.text.count('<form method="post" action="/preferences/') == 2
    assert "/preferences/" in page.text
    assert client.head(unsub_path(app, sub_id)).status_code == 200
    assert snapshot(app) == before


def test_unsubscribe_button(app: App, client: FlaskClient) -> None:
    sub_id = add_sub(app)
    path = unsub_path(app, sub_id)
    token = csrf_from(client, path)
    response = client.post(path, data={"csrf_token": token})
    assert response.status_code == 200 and "You have been unsubscribed" in response.text
    assert subscriber(app, "reader@example.org").status == UNSUBSCRIBED  # type: ignore
    assert events(app, "reader@example.org")[-1] == ("unsubscribed", "page")
    assert "You are unsubscribed" in client.get(path).text


def test_unsubscribe_button_needs_csrf(app: App, client: FlaskClient) -> None:
    sub_id = add_sub(app)
    path = unsub_path(app, sub_id)
    csrf_from(client, path)
    before = snapshot(app)
    for data in ({}, {"csrf_token": "forged"}, {"List-Unsubscribe": "Yes"}):
        assert client.post(path, data=data).status_code == 400
    assert snapshot(app) == before


def test_cli_shows_web_events(app: App, web: Flask, tmp_path: Path) -> None:
    sub_id = add_sub(app, "cli@example.org")
    web.test_client(use_cookies=False).post(unsub_path(app, sub_id), data=ONE_CLICK)
    env = {"MAILER_DATABASE_URL": app.settings.database_url, "MAILER_SECRET_KEY": "x",
           "MAILER_DSN": app.settings.dsn, "MAILER_CONFIG": ""}
    result = CliRunner().invoke(cli, ["subscribers", "show", "cli@example.org"], env=env)
    assert result.exit_code == 0, result.output
    assert "unsubscribed" in result.output and "one-click" in result.output


# ---- preferences ---------------------------------------------------------------------------


def post_prefs(client: FlaskClient, path: str, **data: str):  # type: ignore[no-untyped-def]
    data.setdefault("csrf_token", csrf_from(client, path))
    return client.post(path, data=data)


@pytest.mark.parametrize("weeks", [1, 2, 4])
def test_pause_and_resume(app: App, client: FlaskClient, clock: FixedClock, weeks: int) -> None:
    sub_id = add_sub(app)
    path = prefs_path(app, sub_id)
    response = post_prefs(client, path, action="pause", weeks=str(weeks))
    assert response.status_code == 303 and response.headers["Location"].startswith(path)
    sub = subscriber(app, "reader@example.org")
    assert sub is not None and sub.status == PAUSED
    assert sub.paused_until == clock.now() + timedelta(weeks=weeks)
    assert "paused" in client.get(response.headers["Location"]).text.lower()

    response = post_prefs(client, path, action="resume")
    assert response.status_code == 303
    sub = subscriber(app, "reader@example.org")
    assert sub is not None and sub.status == ACTIVE and sub.paused_until is None
    assert [k for k, _ in events(app, "reader@example.org")][-2:] == ["paused", "resumed"]


def test_pause_ends_by_itself(app: App, client: FlaskClient, clock: FixedClock) -> None:
    sub_id = add_sub(app)
    post_prefs(client, prefs_path(app, sub_id), action="pause", weeks="1")
    with app.sessions.begin() as session:
        assert optin.reactivate_due(session, clock.now() + timedelta(days=6)) == 0
    with app.sessions.begin() as session:
        assert optin.reactivate_due(session, clock.now() + timedelta(days=7)) == 1
    assert subscriber(app, "reader@example.org").status == ACTIVE  # type: ignore
    assert events(app, "reader@example.org")[-1] == ("resumed", "pause-ended")


def test_pause_refused(app: App, client: FlaskClient) -> None:
    sub_id = add_sub(app)
    path = prefs_path(app, sub_id)
    before = snapshot(app)
    assert post_prefs(client, path, action="pause", weeks="3").status_code == 400
    assert post_prefs(client, path, action="pause", weeks="").status_code == 400
    assert post_prefs(client, path, action="explode").status_code == 400
    assert snapshot(app) == before
    left = add_sub(app, "left@example.org", UNSUBSCRIBED)
    before = snapshot(app)
    assert post_prefs(client, prefs_path(app, left), action="pause",
                      weeks="1").status_code == 409
    assert snapshot(app) == before


def test_change_name(app: App, client: FlaskClient) -> None:
    sub_id = add_sub(app, name="Ann")
    path = prefs_path(app, sub_id)
    assert post_prefs(client, path, action="name", name="  Siân  Jones ").status_code == 303
    sub = subscriber(app, "reader@example.org")
    assert sub is not None
    # The page's field is the first name, which the greeting uses; the whole name, set by
    # staff here, is left alone.
    assert (sub.first_name, sub.name) == ("Siân Jones", "Ann")
    assert 'value="Siân Jones"' in client.get(path).text


@pytest.mark.parametrize("name", ["x" * 10_240, "Eve\r\nBcc: victim@example.org", "Eve\n"])
def test_bad_name_on_preferences(app: App, client: FlaskClient, name: str) -> None:
    sub_id = add_sub(app, name="Ann")
    before = snapshot(app)
    response = post_prefs(client, prefs_path(app, sub_id), action="name", name=name)
    assert response.status_code == 400 and "There is a problem" in response.text
    assert snapshot(app) == before


def test_preferences_need_csrf(app: App, client: FlaskClient) -> None:
    sub_id = add_sub(app)
    path = prefs_path(app, sub_id)
    csrf_from(client, path)
    before = snapshot(app)
    assert client.post(path, data={"action": "unsubscribe"}).status_code == 400
    assert client.post(path, data={"action": "unsubscribe", "csrf_token": "x"}).status_code == 400
    other = create_app(app, {"TESTING": True}).test_client()  # someone else's session's token
    foreign = csrf_from(other, "/subscribe")
    assert client.post(path, data={"action": "unsubscribe",
                                   "csrf_token": foreign}).status_code == 400
    assert snapshot(app) == before


def test_unsubscribe_then_resubscribe_needs_confirmation(app: App, client: FlaskClient,
                                                          clock: FixedClock) -> None:
    sub_id = add_sub(app)
    path = prefs_path(app, sub_id)
    assert post_prefs(client, path, action="unsubscribe").status_code == 303
    assert subscriber(app, "reader@example.org").status == UNSUBSCRIBED  # type: ignore
    assert events(app, "reader@example.org")[-1] == ("unsubscribed", "page")
    assert "Subscribe again" in client.get(path).text

    clock.advance(minutes=1)
    response = post_prefs(client, path, action="resubscribe")
    assert response.status_code == 303
    assert "sent you an email" in client.get(response.headers["Location"]).text
    assert subscriber(app, "reader@example.org").status == PENDING  # type: ignore
    [eml] = outbox(app)
    confirm = confirm_path(eml)
    assert client.post(confirm, data={"csrf_token": csrf_from(client, confirm)}).status_code == 200
    assert subscriber(app, "reader@example.org").status == ACTIVE  # type: ignore
    assert post_prefs(client, path, action="resubscribe").status_code == 409


def test_missing_subscriber_pages(app: App, client: FlaskClient) -> None:
    assert client.get(prefs_path(app, 999)).status_code == 410
    page = client.get(unsub_path(app, 999))
    assert page.status_code == 200 and "not on our list" in page.text


# ---- archive, health, headers ----------------------------------------------------------------


def seed_editions(app: App) -> None:
    article = Article(guid="g1", title="Conference votes on &amp; the motion",
                      link="https://labourlist.org/2026/11/story/", author="A. Writer",
                      summary_html="<p>Summary</p>", section="News",
                      published_at=datetime(2026, 11, 25, 9, tzinfo=UTC))
    with app.sessions.begin() as session:
        for day, state in ((date(2026, 11, 25), SENT), (date(2026, 11, 24), SENT),
                           (date(2026, 11, 26), "draft")):
            view = build_view(day, [article], app.settings, subject=f"Daily {day}")
            session.add(Edition(edition_date=day, state=state, subject=f"Daily {day}",
                                window_start=datetime(2026, 11, 24, tzinfo=UTC),
                                window_end=datetime(2026, 11, 25, tzinfo=UTC),
                                archive_html=render_archive(view, app.settings)))


def test_archive(app: App, client: FlaskClient) -> None:
    seed_editions(app)
    index = client.get("/archive/")
    assert index.status_code == 200
    assert "/archive/2026-11-25" in index.text and "/archive/2026-11-24" in index.text
    assert "/archive/2026-11-26" not in index.text  # drafts are not published
    assert index.text.index("2026-11-25") < index.text.index("2026-11-24")

    page = client.get("/archive/2026-11-25")
    assert page.status_code == 200 and "Conference votes on" in page.text
    assert page.headers["Content-Security-Policy"] == EMAIL_CSP
    assert "script-src" not in EMAIL_CSP and "default-src 'none'" in EMAIL_CSP
    for leak in ("%%", "/unsubscribe/", "/preferences/", "Set-Cookie"):
        assert leak not in page.text
    assert "Set-Cookie" not in page.headers
    for missing in ("/archive/2026-11-26", "/archive/2026-11-27", "/archive/2026-13-01",
                    "/archive/20261125", "/archive/latest"):
        assert client.get(missing).status_code == 404, missing
    assert client.get("/archive/?page=9").status_code == 404
    assert client.get("/archive/?page=x").status_code == 400


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_healthz_database_down(tmp_path: Path, clock: FixedClock) -> None:
    broken = App.create(make_settings(tmp_path, database_url="sqlite:////nonexistent/dir/x.db"),
                        clock=clock)
    response = create_app(broken, {"TESTING": True}).test_client().get("/healthz")
    assert response.status_code == 503 and response.get_json()["status"] == "error"


def test_security_headers(app: App, web: Flask, client: FlaskClient) -> None:
    sub_id = add_sub(app)
    for path in ("/subscribe", "/archive/", unsub_path(app, sub_id), prefs_path(app, sub_id),
                 "/no-such-page", "/healthz"):
        response = client.get(path)
        assert response.headers["Content-Security-Policy"] == CSP, path
        assert "frame-ancestors 'none'" in CSP and "script-src" not in CSP
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    css = client.get("/static/site.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    cookie = web.test_client().get("/subscribe").headers["Set-Cookie"]
    assert cookie.startswith("__Host-") and "Secure" in cookie and "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie


def test_plain_http_cookies_are_not_secure(tmp_path: Path, clock: FixedClock) -> None:
    plain = App.create(make_settings(tmp_path, base_url="http://localhost:8000"), clock=clock)
    init_db(plain.engine)
    response = create_app(plain, {"TESTING": True}).test_client().get("/subscribe")
    assert "Secure" not in response.headers["Set-Cookie"]
    assert "Strict-Transport-Security" not in response.headers


def test_error_pages_are_readable(client: FlaskClient) -> None:
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and "Page not found" in missing.text
    wrong = client.put("/subscribe")
    assert wrong.status_code in (400, 405)
    refused = client.delete("/healthz")
    assert refused.status_code == 405 and "GET" in refused.headers["Allow"]


def test_pages_work_without_javascript(app: App, client: FlaskClient) -> None:
    sub_id = add_sub(app)
    for path in ("/subscribe", unsub_path(app, sub_id), prefs_path(app, sub_id), "/archive/"):
        text = client.get(path).text
        assert "<script" not in text and " style=" not in text and "<style" not in text
        assert '<html lang="en-GB">' in text


def test_every_area_is_registered(app: App) -> None:
    web = create_app(app, {"TESTING": True})
    assert {"public", "hooks", "staff"} <= set(web.blueprints)
    prefixes = {rule.rule.split("/")[1] for rule in web.url_map.iter_rules()}
    assert {"staff", "webhooks", "subscribe"} <= prefixes


# ---- the domain API the CLI and staff console use, and `mailer serve` ------------------------


def test_optin_subscribe_for_other_callers(app: App) -> None:
    assert optin.subscribe(app, "cli-added@example.org", "Cy", source="staff") is True
    assert len(outbox(app)) == 1
    assert events(app, "cli-added@example.org")[0] == ("subscribed", "staff")
    add_sub(app, "already@example.org")
    assert optin.subscribe(app, "already@example.org") is False
    assert len(outbox(app)) == 1
    with pytest.raises(optin.InvalidName):
        optin.subscribe(app, "x@example.org", "a\nb")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_mailer_serve_runs_under_waitress(app: App, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "MAILER_DATABASE_URL": app.settings.database_url,
           "MAILER_SECRET_KEY": "k", "MAILER_DSN": app.settings.dsn, "MAILER_HOST": "127.0.0.1",
           "MAILER_PORT": str(port), "MAILER_BASE_URL": f"http://127.0.0.1:{port}"}
    proc = subprocess.Popen([sys.executable, "-m", "mailer", "serve"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200 and json.loads(r.read()) == {"status": "ok"}
                    assert r.headers["Server"] == "labourlist-mailer"
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "mailer serve did not answer"
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()  # type: ignore[union-attr]
