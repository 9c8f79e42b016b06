"""Readers' choices on the web: the sign-up form, the preferences page and the unsubscribe
page's offers (send me the weekly instead, only these sections), over HTTP (Flask's test
client), and choosing sections on the preferences page in a real Chromium.

The RFC 8058 one-click POST stays one click: no options, whatever else the body carries.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from mailer.app import App
from mailer.clock import Clock
from mailer.db import init_db
from mailer.models import ACTIVE, PENDING, UNSUBSCRIBED, WEEKLY, Subscriber, SubscriberEvent
from mailer.subscribers import add
from mailer.web import create_app
from tests.support.browser import CHROMIUM, LiveServer, browser_tab
from tests.support.settings import make_settings
from tests.test_web_public import (
    CSRF_RE,
    ONE_CLICK,
    add_sub,
    confirm_path,
    csrf_from,
    events,
    outbox,
    prefs_path,
    snapshot,
    subscriber,
    unsub_path,
)


@pytest.fixture
def web(app: App) -> Flask:
    app.settings = app.settings.replace(weekly_digest=True)  # the weekly choice offered
    return create_app(app, {"TESTING": True, "MAILER_SEND_INLINE": True})


@pytest.fixture
def client(web: Flask) -> FlaskClient:
    return web.test_client()


def choices(app: App, email: str) -> tuple[str, str, str]:
    sub = subscriber(app, email)
    assert sub is not None
    return sub.status, sub.frequency, sub.sections


def sign_up(client: FlaskClient, **fields: Any) -> Any:
    data = {"email": "reader@example.org", "name": "Siân", "hp": "",
            "csrf_token": csrf_from(client, "/subscribe"), **fields}
    return client.post("/subscribe", data=data)


# ---- the sign-up form ----------------------------------------------------------------------


def test_sign_up_form_offers_the_choices_accessibly(client: FlaskClient) -> None:
    page = client.get("/subscribe").text
    assert page.count("<fieldset") == 2 and "<legend>How often</legend>" in page
    assert "<legend>Sections</legend>" in page
    for section in ("News", "Comment", "Analysis", "Columnist"):
        assert re.search(rf'<input type="checkbox" id="([^"]+)" name="sections" '
                         rf'value="{section}" checked>\s*<label for="\1">{section}</label>', page)
    assert re.search(r'id="signup-daily" name="frequency" value="daily" checked', page)
    assert "<script" not in page


def test_choices_made_at_sign_up_last_through_confirmation(app: App,
                                                           client: FlaskClient) -> None:
    response = sign_up(client, frequency="weekly", sections=["comment", "News"],
                       sections_shown="1")
    assert response.status_code == 200 and "Check your inbox" in response.text
    assert choices(app, "reader@example.org") == (PENDING, WEEKLY, "News;Comment")
    path = confirm_path(outbox(app)[0])
    done = client.post(path, data={"csrf_token": csrf_from(client, path)})
    assert done.status_code == 200 and "You are subscribed" in done.text
    assert choices(app, "reader@example.org") == (ACTIVE, WEEKLY, "News;Comment")


@pytest.mark.parametrize("ticked", [[], ["News", "Comment", "Analysis", "Columnist"]])
def test_all_or_no_sections_ticked_means_all(app: App, client: FlaskClient,
                                             ticked: list[str]) -> None:
    assert sign_up(client, sections=ticked, sections_shown="1").status_code == 200
    assert choices(app, "reader@example.org") == (PENDING, "daily", "")


def test_the_embed_without_choices_gets_the_defaults(app: App, web: Flask) -> None:
    anonymous = web.test_client(use_cookies=False)
    response = anonymous.post("/subscribe", data={"email": "embed@example.org", "hp": ""})
    assert response.status_code == 200
    assert choices(app, "embed@example.org") == (PENDING, "daily", "")
    response = anonymous.post("/subscribe", data={"email": "embed2@example.org", "hp": "",
                                                  "frequency": "weekly",
                                                  "sections": "Analysis"})
    assert response.status_code == 200
    assert choices(app, "embed2@example.org") == (PENDING, WEEKLY, "Analysis")


@pytest.mark.parametrize("fields", [{"frequency": "hourly"},
                                    {"sections": ["News", "Sport"], "sections_shown": "1"}])
def test_an_unknown_choice_is_refused_at_the_door(app: App, client: FlaskClient,
                                                  fields: dict[str, Any]) -> None:
    before = snapshot(app)
    response = sign_up(client, **fields)
    assert response.status_code == 400 and "Please choose again" in response.text
    assert ("hourly" in response.text) or ("Sport" in response.text)
    assert 'value="reader@example.org"' in response.text  # the form keeps what was typed
    assert snapshot(app) == before


def test_a_pending_reader_asking_again_changes_the_choices(app: App,
                                                           client: FlaskClient) -> None:
    sign_up(client, frequency="weekly", sections=["News"], sections_shown="1")
    sign_up(client, frequency="daily", sections=["Comment"], sections_shown="1")
    assert choices(app, "reader@example.org") == (PENDING, "daily", "Comment")


def test_the_form_cannot_change_a_confirmed_readers_choices(app: App,
                                                            client: FlaskClient) -> None:
    """Anyone can type an address into the form: only the reader's own link changes them."""
    add_sub(app, "reader@example.org", ACTIVE)
    before = snapshot(app)
    assert sign_up(client, frequency="weekly", sections=["News"],
                   sections_shown="1").status_code == 200
    assert choices(app, "reader@example.org") == (ACTIVE, "daily", "")
    assert snapshot(app) == before


# ---- the preferences page ------------------------------------------------------------------


def post(client: FlaskClient, path: str, page: str | None = None, **data: Any) -> Any:
    token = csrf_from(client, page or path)
    return client.post(path, data={"csrf_token": token, **data})


def test_preferences_page_changes_frequency_and_sections(app: App,
                                                         client: FlaskClient) -> None:
    sub_id = add_sub(app)
    path = prefs_path(app, sub_id)
    page = client.get(path).text
    assert 'name="action" value="choices"' in page and "all sections" in page
    response = post(client, path, action="choices", frequency="weekly",
                    sections=["Comment", "Analysis"], sections_shown="1")
    assert response.status_code == 303 and response.location.endswith("done=choices")
    assert choices(app, "reader@example.org") == (ACTIVE, WEEKLY, "Comment;Analysis")
    assert events(app, "reader@example.org")[-1] == ("choices-changed", "preferences")

    page = client.get(response.location).text
    assert "Your choices are saved" in page and "Comment, Analysis only" in page
    assert "once a week, on Saturday morning" in page
    assert re.search(r'value="weekly" checked', page)
    assert re.search(r'value="Comment" checked', page)
    assert not re.search(r'value="News" checked', page)

    # No box ticked is every section again; the same choices twice change nothing.
    post(client, path, action="choices", frequency="weekly", sections_shown="1")
    assert choices(app, "reader@example.org") == (ACTIVE, WEEKLY, "")
    again = post(client, path, action="choices", frequency="weekly", sections_shown="1")
    assert again.location.endswith("done=unchanged")


def test_preferences_refuse_unknown_choices_and_missing_csrf(app: App,
                                                             client: FlaskClient) -> None:
    sub_id = add_sub(app)
    path = prefs_path(app, sub_id)
    before = snapshot(app)
    bad = post(client, path, action="choices", sections=["Sport"], sections_shown="1")
    assert bad.status_code == 400 and "unknown section" in bad.text
    bad = post(client, path, action="choices", frequency="monthly")
    assert bad.status_code == 400 and "unknown frequency" in bad.text
    forged = client.post(path, data={"action": "choices", "frequency": "weekly"})
    assert forged.status_code == 400 and "This form has expired" in forged.text
    assert snapshot(app) == before


# ---- the unsubscribe page's offers -----------------------------------------------------------


def test_unsubscribe_page_offers_weekly_and_sections_before_the_leave_button(
        app: App, client: FlaskClient) -> None:
    sub_id = add_sub(app)
    page = client.get(unsub_path(app, sub_id)).text
    weekly = page.index("Send me the weekly instead")
    sections = page.index("Only these sections")
    leave = page.index('class="danger">Unsubscribe</button>')
    assert weekly < sections < leave
    prefs = prefs_path(app, sub_id)
    assert page.count(f'action="{prefs}"') == 2  # both offers go to the preferences handling


def test_send_me_the_weekly_instead(app: App, client: FlaskClient) -> None:
    sub_id = add_sub(app)
    with app.sessions.begin() as session:
        session.get_one(Subscriber, sub_id).sections = "News"
    unsubscribe_page = unsub_path(app, sub_id)
    response = post(client, prefs_path(app, sub_id), page=unsubscribe_page,
                    action="choices", via="unsubscribe", frequency="weekly")
    assert response.status_code == 303
    assert choices(app, "reader@example.org") == (ACTIVE, WEEKLY, "News")  # sections kept
    assert events(app, "reader@example.org")[-1] == ("choices-changed", "unsubscribe-page")
    # A weekly reader is not offered the weekly again.
    assert "Send me the weekly instead" not in client.get(unsubscribe_page).text


def test_only_these_sections_from_the_unsubscribe_page(app: App, client: FlaskClient) -> None:
    sub_id = add_sub(app)
    response = post(client, prefs_path(app, sub_id), page=unsub_path(app, sub_id),
                    action="choices", via="unsubscribe", sections=["Analysis"],
                    sections_shown="1")
    assert response.status_code == 303
    assert choices(app, "reader@example.org") == (ACTIVE, "daily", "Analysis")


@pytest.mark.parametrize("body", [
    "List-Unsubscribe=One-Click",
    "List-Unsubscribe=One-Click&action=choices&frequency=weekly&sections=News",
])
def test_one_click_stays_one_click(app: App, web: Flask, body: str) -> None:
    sub_id = add_sub(app)
    mail_client = web.test_client(use_cookies=False)
    response = mail_client.post(unsub_path(app, sub_id), data=body,
                                content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200 and response.text == "You have been unsubscribed.\n"
    assert "Set-Cookie" not in response.headers
    assert choices(app, "reader@example.org") == (UNSUBSCRIBED, "daily", "")
    with app.sessions() as session:
        kinds = session.scalars(select(SubscriberEvent.source)
                                .where(SubscriberEvent.subscriber_id == sub_id)).all()
    assert "one-click" in kinds and "unsubscribe-page" not in kinds


def test_the_leave_button_still_leaves(app: App, client: FlaskClient) -> None:
    sub_id = add_sub(app)
    path = unsub_path(app, sub_id)
    token = CSRF_RE.search(client.get(path).text).group(1)  # type: ignore[union-attr]
    response = client.post(path, data={"csrf_token": token})
    assert response.status_code == 200 and "You have been unsubscribed" in response.text
    assert choices(app, "reader@example.org") == (UNSUBSCRIBED, "daily", "")
    assert "Only these sections" not in client.get(path).text  # nothing offered after leaving


def test_one_click_body_alone_is_enough(app: App, web: Flask) -> None:
    """ONE_CLICK (the helpers' dict) sent as a form, as the providers do."""
    sub_id = add_sub(app)
    response = web.test_client(use_cookies=False).post(unsub_path(app, sub_id), data=ONE_CLICK)
    assert response.status_code == 200
    assert choices(app, "reader@example.org")[0] == UNSUBSCRIBED


# ---- in a real browser ---------------------------------------------------------------------


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[LiveServer, App]]:
    holder: dict[str, App] = {}

    def build(url: str) -> Any:
        app = App.create(make_settings(tmp_path, base_url=url, weekly_digest=True),
                         clock=Clock())
        init_db(app.engine)
        holder["app"] = app
        return create_app(app)

    server = LiveServer(build)
    yield server, holder["app"]
    server.stop()
    holder["app"].close()


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_choosing_sections_in_chromium(live: tuple[LiveServer, App]) -> None:
    server, app = live
    with app.sessions.begin() as session:
        sub, _ = add(session, "browser@example.org", status=ACTIVE, source="test")
        sub_id = sub.id
    with browser_tab(timeout_ms=15_000) as tab:
        tab.goto(server.url + prefs_path(app, sub_id))
        tab.get_by_role("radio", name="Once a week").check()
        tab.get_by_role("checkbox", name="News").uncheck()
        tab.get_by_role("checkbox", name="Columnist").uncheck()
        tab.get_by_role("button", name="Save choices").click()
        tab.get_by_text("Your choices are saved").wait_for()
        assert tab.get_by_role("checkbox", name="Comment").is_checked()
        assert not tab.get_by_role("checkbox", name="News").is_checked()
        assert tab.console_errors == []
    assert choices(app, "browser@example.org") == (ACTIVE, WEEKLY, "Comment;Analysis")


def test_the_weekly_is_not_offered_when_it_is_not_sent(app: App) -> None:
    """With `weekly_digest` off (a newsroom that sends no digest), no page offers it and a
    crafted form cannot choose it: a reader would keep getting the daily."""
    app.settings = app.settings.replace(weekly_digest=False)
    client = create_app(app, {"TESTING": True, "MAILER_SEND_INLINE": True}).test_client()
    assert 'value="weekly"' not in client.get("/subscribe").text
    sub_id = add_sub(app)
    assert "Send me the weekly instead" not in client.get(unsub_path(app, sub_id)).text
    path = prefs_path(app, sub_id)
    token = csrf_from(client, path)
    client.post(path, data={"csrf_token": token, "action": "choices", "frequency": "weekly"})
    assert choices(app, "reader@example.org")[1] == "daily"
