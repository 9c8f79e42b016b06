"""The staff console over HTTP (Flask's test client): access, CSRF, throttling, every action.

Refusal tests check the status code and that nothing changed. Sends run inline
(MAILER_SEND_INLINE) into the file outbox, so a test can count the messages that went out.
"""

from __future__ import annotations

import csv
import io
import re
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.routing import Rule

from mailer import editions_control, ledger, overrides
from mailer.accounts import ADMIN, EDITOR, add_staff
from mailer.app import App
from mailer.cli import cli
from mailer.clock import FixedClock
from mailer.config import PROJECT_ROOT
from mailer.db import init_db
from mailer.edition import build_edition, get_edition
from mailer.errors import ConfigError
from mailer.models import (
    ACTIVE,
    CANCELLED,
    PAUSED_SEND,
    PENDING,
    SENDING,
    SENT,
    UNSUBSCRIBED,
    AuditEntry,
    Delivery,
    Edition,
    Meta,
    StaffUser,
    Subscriber,
    SubscriberEvent,
    Suppression,
    WebhookEvent,
)
from mailer.pipeline import run_send
from mailer.subscribers import add, email_hash, find, import_csv, set_status
from mailer.web import create_app
from tests.support.seed import eml_recipients, seed_subscribers, with_feed
from tests.support.settings import make_settings

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
DAY = date(2026, 11, 26)  # the `clock` fixture's Thursday; 06:00 London, before the 07:00 send
ADMIN_EMAIL, EDITOR_EMAIL = "admin@example.org", "editor@example.org"
PASSWORD = "correct horse battery staple"


# ---- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def app(database_url: str, tmp_path: Path, clock: FixedClock) -> Iterator[App]:
    """Every test here runs on SQLite and on PostgreSQL (conftest's `database_url`)."""
    application = App.create(make_settings(tmp_path, database_url=database_url), clock=clock)
    init_db(application.engine)
    yield application
    application.close()


@pytest.fixture
def web(app: App) -> Flask:
    with app.sessions.begin() as session:
        add_staff(session, ADMIN_EMAIL, PASSWORD, role=ADMIN)
        add_staff(session, EDITOR_EMAIL, PASSWORD, role=EDITOR)
    return create_app(app, {"TESTING": True, "MAILER_SEND_INLINE": True})


@pytest.fixture
def client(web: Flask) -> FlaskClient:
    return web.test_client()


def token(client: FlaskClient, path: str = "/staff/login") -> str:
    page = client.get(path)
    match = CSRF_RE.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path} ({page.status_code})"
    return match.group(1)


def login(client: FlaskClient, email: str = ADMIN_EMAIL, password: str = PASSWORD,
          **extra: str) -> object:
    return client.post("/staff/login", data={"csrf_token": token(client), "email": email,
                                             "password": password, **extra})


@pytest.fixture
def admin(client: FlaskClient) -> FlaskClient:
    response = login(client)
    assert response.status_code == 303  # type: ignore[attr-defined]
    return client


@pytest.fixture
def editor(client: FlaskClient) -> FlaskClient:
    response = login(client, EDITOR_EMAIL)
    assert response.status_code == 303  # type: ignore[attr-defined]
    return client


def post(client: FlaskClient, path: str, **data: str) -> object:
    """A console POST with the CSRF token of the signed-in session."""
    return client.post(path, data={"csrf_token": token(client, "/staff/"), **data})


def text(response: object) -> str:
    return response.get_data(as_text=True)  # type: ignore[attr-defined]


def audit_actions(app: App) -> list[str]:
    with app.sessions() as session:
        return list(session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


@pytest.fixture
def fed(app: App, tmp_path: Path) -> App:
    """The app with the bundled sample feed and five active subscribers."""
    with_feed(app, tmp_path)
    seed_subscribers(app, 5)
    return app


def example_url(rule: Rule) -> str:
    """A URL the rule matches: a date for <day>, 1 for every number, the first choice of an
    <any(...)>."""
    url = rule.rule.replace("<day>", DAY.isoformat())
    url = re.sub(r"<int:\w+>", "1", url)
    return re.sub(r'<any\("?([\w-]+)"?[^>]*>', r"\1", url)


# ---- access ----------------------------------------------------------------------------------


def test_every_staff_route_refuses_without_login(web: Flask, client: FlaskClient,
                                                 app: App) -> None:
    rules = [r for r in web.url_map.iter_rules() if r.rule.startswith("/staff")]
    assert len(rules) >= 20  # the console is registered
    with app.sessions.begin() as session:
        add(session, "reader@example.org", source="test")
    before = audit_actions(app)
    csrf = token(client)  # a real token: the refusal must come from the missing login
    checked = 0
    for rule in rules:
        if rule.endpoint == "staff.login":
            continue
        url = example_url(rule)
        methods = rule.methods or set()
        if "GET" in methods:
            response = client.get(url)
            assert response.status_code == 302, (url, response.status_code)
            assert response.headers["Location"].startswith("/staff/login"), url
            checked += 1
        if "POST" in methods:
            response = client.post(url, data={"csrf_token": csrf, "confirm": "yes",
                                              "action": "pin", "article_id": "1"})
            assert response.status_code == 303, (url, response.status_code)
            assert response.headers["Location"].startswith("/staff/login"), url
            checked += 1
    assert checked >= 25
    assert audit_actions(app) == before
    with app.sessions() as session:
        assert find(session, "reader@example.org") is not None  # erasure refused, too


def test_login_returns_to_the_page_asked_for_but_never_elsewhere(client: FlaskClient) -> None:
    response = client.get("/staff/subscribers?q=ann")
    assert response.headers["Location"] == "/staff/login?next=/staff/subscribers?q%3Dann"
    response = login(client, next="/staff/subscribers?q=ann")
    assert response.headers["Location"] == "/staff/subscribers?q=ann"  # type: ignore
    client.post("/staff/logout", data={"csrf_token": token(client, "/staff/")})
    for evil in ("https://evil.example/", "//evil.example/staff/", "/archive/",
                 "/staff/\\evil"):
        response = login(client, next=evil)
        assert response.headers["Location"] == "/staff/", evil  # type: ignore
        client.post("/staff/logout", data={"csrf_token": token(client, "/staff/")})


def test_session_cookie_is_httponly_samesite_and_secure_under_https(
        client: FlaskClient) -> None:
    response = login(client)
    cookie = response.headers["Set-Cookie"]  # type: ignore[attr-defined]
    assert cookie.startswith("__Host-mailer=")  # base_url is https
    for flag in ("HttpOnly", "SameSite=Lax", "Secure", "Path=/"):
        assert flag in cookie
    assert "Domain=" not in cookie


def test_wrong_passwords_slow_the_client_but_never_lock_the_account(
        client: FlaskClient, app: App, clock: FixedClock) -> None:
    """Growing delays per account and client (mailer.web.throttle); the hostile cases, other
    clients and the alert to admins are in test_hostile_staff_auth.py."""
    for n in range(5):
        clock.advance(seconds=4 if n else 0)  # the waits so far: 0, 1, 2, 4 s
        response = login(client, password="not the password")
        assert response.status_code == 401  # type: ignore[attr-defined]
    # Too early: even the right password is refused, unchecked, with the time to wait.
    response = login(client)
    assert response.status_code == 429  # type: ignore[attr-defined]
    assert response.headers["Retry-After"] == "8"  # type: ignore[attr-defined]
    assert "try again in 8 s" in text(response)
    assert client.get("/staff/").status_code == 302
    clock.advance(seconds=8)
    response = login(client)
    assert response.status_code == 303  # type: ignore[attr-defined]
    with app.sessions() as session:
        user = session.scalar(select(StaffUser).where(StaffUser.email == ADMIN_EMAIL))
        assert user is not None and user.locked_until is None
    actions = audit_actions(app)
    assert actions.count("login-failed") == 5 and actions[-1] == "login"


def test_unknown_address_is_refused_like_a_wrong_password(client: FlaskClient) -> None:
    wrong = login(client, password="nope nope nope")
    unknown = login(client, email="nobody@example.org")
    assert wrong.status_code == unknown.status_code == 401  # type: ignore[attr-defined]
    message = "The email address or password is not right"
    assert message in text(wrong) and message in text(unknown)


def test_sessions_end_when_the_password_changes_or_the_account_goes(
        admin: FlaskClient, app: App) -> None:
    assert admin.get("/staff/").status_code == 200
    from mailer.accounts import remove_staff, set_password

    with app.sessions.begin() as session:
        set_password(session, ADMIN_EMAIL, "a brand new password")
    assert admin.get("/staff/").status_code == 302
    assert login(admin, password="a brand new password").status_code == 303  # type: ignore
    assert admin.get("/staff/").status_code == 200
    with app.sessions.begin() as session:
        remove_staff(session, ADMIN_EMAIL)
    assert admin.get("/staff/").status_code == 302


def test_sessions_expire_after_twelve_hours(admin: FlaskClient, clock: FixedClock) -> None:
    clock.advance(hours=11)
    assert admin.get("/staff/").status_code == 200
    clock.advance(hours=2)
    assert admin.get("/staff/").status_code == 302


def test_logout_needs_a_post_and_ends_the_session(admin: FlaskClient) -> None:
    assert admin.get("/staff/logout").status_code == 405
    assert admin.post("/staff/logout").status_code == 400  # no CSRF token
    response = post(admin, "/staff/logout")
    assert response.status_code == 303  # type: ignore[attr-defined]
    assert admin.get("/staff/").status_code == 302


def test_editors_cannot_reach_admin_settings(editor: FlaskClient, app: App) -> None:
    assert editor.get("/staff/settings").status_code == 403
    response = post(editor, "/staff/settings", donation_amount="£1 a year")
    assert response.status_code == 403  # type: ignore[attr-defined]
    with app.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Meta)
                              .where(Meta.key.like("setting:%"))) == 0
    assert "Settings</a>" not in text(editor.get("/staff/"))  # not even offered
    assert editor.get("/staff/audit").status_code == 200  # everything else is open to them


def test_admins_reach_settings(admin: FlaskClient) -> None:
    page = text(admin.get("/staff/settings"))
    assert "Donation appeal" in page and "Send time" in page and EDITOR_EMAIL in page


def test_a_post_without_the_csrf_token_is_refused_with_400(admin: FlaskClient, fed: App) -> None:
    post(admin, f"/staff/editions/{DAY}/build")
    for data in ({}, {"csrf_token": "forged"}):
        response = admin.post(f"/staff/editions/{DAY}/content",
                              data={"subject": "Hijacked", "preheader": "", "editor_note": "x",
                                    **data})
        assert response.status_code == 400
        assert "This form has expired" in text(response)
    for path in ("/staff/subscribers/1/unsubscribe", f"/staff/editions/{DAY}/send",
                 "/staff/settings", "/staff/subscribers/export"):
        assert admin.post(path, data={"donation_amount": "£1"}).status_code == 400, path
    with fed.sessions() as session:
        edition = get_edition(session, DAY)
        assert edition is not None and edition.subject != "Hijacked" and edition.state != SENT
        assert find(session, "reader1@example.org").status == ACTIVE  # type: ignore


def test_staff_pages_may_frame_only_their_own_previews(admin: FlaskClient, fed: App) -> None:
    post(admin, f"/staff/editions/{DAY}/build")
    page = admin.get(f"/staff/editions/{DAY}")
    assert "frame-src 'self'" in page.headers["Content-Security-Policy"]
    # (scripts: the console's own files only, never inline)
    assert "script-src 'self';" in page.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in page.headers["Content-Security-Policy"]
    preview = admin.get(f"/staff/editions/{DAY}/preview")
    assert preview.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert "frame-ancestors 'self'" in preview.headers["Content-Security-Policy"]
    assert "script" not in preview.headers["Content-Security-Policy"]
    # The public pages keep their stricter policy.
    public = admin.get("/subscribe")
    assert "frame-src" not in public.headers["Content-Security-Policy"]
    assert public.headers["X-Frame-Options"] == "DENY"


# ---- editions --------------------------------------------------------------------------------


def test_edition_page_edit_preview_test_send_and_history(admin: FlaskClient, fed: App,
                                                         tmp_path: Path) -> None:
    page = text(admin.get(f"/staff/editions/{DAY}"))
    assert "No edition for this date yet" in page
    response = post(admin, f"/staff/editions/{DAY}/build")
    assert response.status_code == 303  # type: ignore[attr-defined]
    page = text(admin.get(f"/staff/editions/{DAY}"))
    assert "Edition built: 12 articles" in page and "Send now…" in page

    note = "Strike news first today.\n\nSee you tomorrow."
    response = post(admin, f"/staff/editions/{DAY}/content", subject="A special subject",
                    preheader="", editor_note=note)
    assert response.status_code == 303  # type: ignore[attr-defined]
    preview = text(admin.get(f"/staff/editions/{DAY}/preview"))
    assert "Strike news first today." in preview and "%%" not in preview
    page = text(admin.get(f"/staff/editions/{DAY}"))
    assert "Strike news first today." in page.split('id="text-part"')[1]  # the text part

    with fed.sessions() as session:
        edition = get_edition(session, DAY)
        assert edition is not None
        first, second, third = [item.article_id for item in edition.items[:3]]
    post(admin, f"/staff/editions/{DAY}/articles", action="down", article_id=str(first))
    post(admin, f"/staff/editions/{DAY}/articles", action="pin", article_id=str(third))
    post(admin, f"/staff/editions/{DAY}/articles", action="drop", article_id=str(first))
    with fed.sessions() as session:
        edition = get_edition(session, DAY)
        assert edition is not None
        order = [item.article_id for item in edition.items]
        assert order[:2] == [second, third] and first not in order
        assert edition.arranged and edition.excluded == [first]
        assert [i.pinned for i in edition.items][:2] == [False, True]
    # Fetching again keeps the edits: nothing dropped comes back.
    post(admin, f"/staff/editions/{DAY}/build")
    with fed.sessions() as session:
        edition = get_edition(session, DAY)
        assert edition is not None and first not in [i.article_id for i in edition.items]
        assert edition.subject == "A special subject" and "Strike news" in edition.editor_note
    post(admin, f"/staff/editions/{DAY}/articles", action="restore", article_id=str(first))
    with fed.sessions() as session:
        assert first in [i.article_id for i in get_edition(session, DAY).items]  # type: ignore

    # A test send: to me, marked, and nothing in the ledger.
    response = post(admin, f"/staff/editions/{DAY}/test", to="me")
    assert response.status_code == 303  # type: ignore[attr-defined]
    outbox = tmp_path / "outbox"
    assert eml_recipients(outbox) == {ADMIN_EMAIL: 1}
    message = next(outbox.glob("*.eml")).read_text()
    assert "Subject: [TEST] A special subject" in message
    post(admin, f"/staff/editions/{DAY}/test", addresses="a@example.org, b@example.org")
    assert eml_recipients(outbox)["b@example.org"] == 1
    response = post(admin, f"/staff/editions/{DAY}/test", addresses="not-an-address")
    assert "Not valid email addresses: not-an-address" in text(admin.get(f"/staff/editions/{DAY}"))
    with fed.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0

    # Send now: the confirm page shows the audience, then the send runs to the end.
    confirm = text(admin.get(f"/staff/editions/{DAY}/send"))
    assert '<strong id="audience">5</strong>' in confirm
    response = post(admin, f"/staff/editions/{DAY}/send")
    assert response.headers["Location"] == f"/staff/editions/{DAY}/progress"  # type: ignore
    progress = admin.get(f"/staff/editions/{DAY}/progress")
    assert "Refresh" not in progress.headers  # finished: no more reloading
    body = text(progress)
    assert 'id="sent-count">5<' in body and 'id="total">5<' in body and ">sent<" in body
    assert sum(1 for r in eml_recipients(outbox) if r.startswith("reader")) == 5

    dashboard = text(admin.get("/staff/"))
    row = dashboard.split("Thu 26 Nov 2026</a>")[1].split("</tr>")[0]
    assert [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(
        r'<td class="num">(.*?)</td>', row, re.S)] == ["5", "0", "0", "0", "0 (0.00%)"]
    # Frozen once sent.
    post(admin, f"/staff/editions/{DAY}/content", subject="Too late", preheader="",
         editor_note="")
    assert "can no longer change" in text(admin.get(f"/staff/editions/{DAY}"))
    with fed.sessions() as session:
        assert get_edition(session, DAY).subject == "A special subject"  # type: ignore

    actions = audit_actions(fed)
    for expected in ("edition-built", "edition-edited", "edition-arranged", "test-sent",
                     "send-started", "send-finished"):
        assert expected in actions, expected


def test_pressing_send_twice_while_cron_fires_sends_each_subscriber_once(
        admin: FlaskClient, fed: App, tmp_path: Path) -> None:
    seed_subscribers(fed, 40, prefix="more")
    post(admin, f"/staff/editions/{DAY}/build")
    csrf = token(admin, "/staff/")
    web_client = admin.application.test_client()
    with admin.session_transaction() as source, web_client.session_transaction() as copy:
        copy.update(source)
    results: list[object] = []

    def press(client: FlaskClient) -> None:
        results.append(client.post(f"/staff/editions/{DAY}/send", data={"csrf_token": csrf}))

    def cron() -> None:
        results.append(run_send(fed, DAY, collect_first=False))

    threads = [threading.Thread(target=press, args=(admin,)),
               threading.Thread(target=press, args=(web_client,)),
               threading.Thread(target=cron)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    post(admin, f"/staff/editions/{DAY}/send")  # and once more, afterwards
    counts = eml_recipients(tmp_path / "outbox")
    assert len(counts) == 45 and set(counts.values()) == {1}
    with fed.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 45
        assert get_edition(session, DAY).state == SENT  # type: ignore[union-attr]


def _sending(app: App) -> Edition:
    """Today's edition mid-send: built, ledger snapshotted, state `sending`."""
    edition = build_edition(app, DAY)
    with app.sessions.begin() as session:
        row = session.get(Edition, edition.id)
        assert row is not None
        row.state = SENDING
        row.audience = ledger.snapshot(session, row)
    return edition


def test_pause_resume_and_cancel_from_the_progress_page(admin: FlaskClient, fed: App,
                                                        tmp_path: Path) -> None:
    edition = _sending(fed)
    page = admin.get(f"/staff/editions/{DAY}/progress")
    assert page.headers["Refresh"] == "2"  # reloads itself while sending
    assert 'id="sent-count">0<' in text(page) and "Pause</button>" in text(page)
    post(admin, f"/staff/editions/{DAY}/pause")
    with fed.sessions() as session:
        assert session.get(Edition, edition.id).state == PAUSED_SEND  # type: ignore
    page = text(admin.get(f"/staff/editions/{DAY}/progress"))
    assert "Resume</button>" in page and "Cancel the rest" in page
    post(admin, f"/staff/editions/{DAY}/pause")  # not sending: nothing changes
    assert "Nothing changed: the edition is paused." in text(
        admin.get(f"/staff/editions/{DAY}/progress"))
    post(admin, f"/staff/editions/{DAY}/resume")  # resumes and (inline) sends the rest
    with fed.sessions() as session:
        assert session.get(Edition, edition.id).state == SENT  # type: ignore
    assert len(eml_recipients(tmp_path / "outbox")) == 5
    post(admin, f"/staff/editions/{DAY}/cancel")
    with fed.sessions() as session:
        assert session.get(Edition, edition.id).state == SENT  # type: ignore
    assert {"send-paused", "send-resumed"} <= set(audit_actions(fed))
    assert "send-cancelled" not in audit_actions(fed)


def test_a_reader_who_leaves_during_the_send_shows_on_the_progress_page(
        admin: FlaskClient, fed: App, tmp_path: Path) -> None:
    edition = _sending(fed)
    assert editions_control.pause(fed.sessions, edition.id)
    assert "Left the list during the send" not in text(
        admin.get(f"/staff/editions/{DAY}/progress"))
    with fed.sessions.begin() as session:
        reader = find(session, "reader3@example.org")
        assert reader is not None
        set_status(session, reader, UNSUBSCRIBED, source="one-click", at=fed.clock.now())
    page = text(admin.get(f"/staff/editions/{DAY}/progress"))
    assert "Left the list during the send" in page and 'id="withdrawn-count">1<' in page
    assert '<progress max="5" value="1"' in page  # (accounted for, like a sent one)
    post(admin, f"/staff/editions/{DAY}/resume")
    assert set(eml_recipients(tmp_path / "outbox")) == {
        f"reader{i}@example.org" for i in (0, 1, 2, 4)}
    assert "left the list during the send 1" in text(admin.get(f"/staff/editions/{DAY}"))


def test_unsubscribe_requests_without_a_token_wait_on_the_dashboard(admin: FlaskClient,
                                                                    fed: App) -> None:
    from mailer.feedback import unsubscribe_mail

    assert "Unsubscribe requests that need a person" not in text(admin.get("/staff/"))
    mail = (b"From: Reader Two <reader2@example.org>\r\nTo: unsubscribe@labourlist.org\r\n"
            b"Subject: please stop\r\nMessage-ID: <r2@example.org>\r\n\r\nNo more, thanks.\r\n")
    with fed.sessions.begin() as session:
        [outcome] = unsubscribe_mail.ingest(session, mail, fed.clock.now(),
                                            secret=fed.secret_key)
    assert outcome.status == "unmatched"
    page = text(admin.get("/staff/"))
    assert "Unsubscribe requests that need a person" in page
    with fed.sessions() as session:
        reader = find(session, "reader2@example.org")
        assert reader is not None
    assert f'href="/staff/subscribers/{reader.id}">reader2@example.org</a>' in page
    assert "please stop" in page
    # Staff read it and it was not a request to leave: set aside, until another one comes.
    kept = post(admin, f"/staff/subscribers/{reader.id}/keep")
    assert kept.headers["Location"] == "/staff/"  # type: ignore[attr-defined]
    assert "Unsubscribe requests that need a person" not in text(admin.get("/staff/"))
    assert "subscriber-kept" in audit_actions(fed)
    fed.clock.advance(minutes=5)  # type: ignore[attr-defined]
    with fed.sessions.begin() as session:
        unsubscribe_mail.ingest(session, mail.replace(b"<r2@", b"<r2-again@"),
                                fed.clock.now(), secret=fed.secret_key)
    assert "Unsubscribe requests that need a person" in text(admin.get("/staff/"))
    post(admin, f"/staff/subscribers/{reader.id}/unsubscribe")  # staff act on it
    with fed.sessions() as session:
        reader = find(session, "reader2@example.org")
        assert reader is not None and reader.status == UNSUBSCRIBED
    assert "Unsubscribe requests that need a person" not in text(admin.get("/staff/"))


def test_cancel_a_paused_send(admin: FlaskClient, fed: App) -> None:
    edition = _sending(fed)
    assert editions_control.pause(fed.sessions, edition.id)
    post(admin, f"/staff/editions/{DAY}/cancel")
    with fed.sessions() as session:
        assert session.get(Edition, edition.id).state == CANCELLED  # type: ignore
    assert "send-cancelled" in audit_actions(fed)


def test_a_send_refused_by_preflight_says_why_and_sends_nothing(tmp_path: Path,
                                                                clock: FixedClock) -> None:
    # An SMTP transport with links to a local base URL: preflight refuses to send.
    settings = make_settings(tmp_path, base_url="http://127.0.0.1:8000",
                             dsn="smtp://127.0.0.1:9")
    app = App.create(settings, clock=clock)
    init_db(app.engine)
    with_feed(app, tmp_path)
    seed_subscribers(app, 2)
    with app.sessions.begin() as session:
        add_staff(session, ADMIN_EMAIL, PASSWORD, role=ADMIN)
    client = create_app(app, {"TESTING": True, "MAILER_SEND_INLINE": True}).test_client()
    login(client)
    post(client, f"/staff/editions/{DAY}/build")
    post(client, f"/staff/editions/{DAY}/send")
    page = text(client.get(f"/staff/editions/{DAY}/progress"))
    assert "The send did not go ahead" in page and "preflight failed" in page
    with app.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
        assert get_edition(session, DAY).state == "draft"  # type: ignore[union-attr]
    assert audit_actions(app)[-1] == "send-failed"
    # The edition page now shows what preflight found.
    assert "that would stop the send" in text(client.get(f"/staff/editions/{DAY}"))
    app.close()


def test_a_late_send_needs_a_reason(admin: FlaskClient, fed: App,
                                    clock: FixedClock) -> None:
    post(admin, f"/staff/editions/{DAY}/build")
    clock.set(datetime(2026, 11, 26, 11, 0, tzinfo=UTC))  # four hours after 07:00
    confirm = text(admin.get(f"/staff/editions/{DAY}/send"))
    assert "This edition is late" in confirm and "required" in confirm
    post(admin, f"/staff/editions/{DAY}/send")
    assert '--force --reason "why it is late"' in text(
        admin.get(f"/staff/editions/{DAY}/progress")).replace("&#34;", '"')
    post(admin, f"/staff/editions/{DAY}/send", reason="the feed was down until 10:30")
    with fed.sessions() as session:
        edition = get_edition(session, DAY)
        assert edition is not None and edition.state == SENT
        assert edition.forced_reason == "the feed was down until 10:30"


def test_dashboard_counts_bounces_and_unsubscribes_after_an_edition(admin: FlaskClient,
                                                                   fed: App,
                                                                   clock: FixedClock) -> None:
    run_send(fed, DAY)
    clock.advance(hours=3)
    with fed.sessions.begin() as session:
        for address, status in (("reader1@example.org", UNSUBSCRIBED),
                                ("reader2@example.org", "bounced"),
                                ("reader3@example.org", "complained")):
            sub = find(session, address)
            assert sub is not None
            set_status(session, sub, status, source="webhook", at=clock.now())
        add(session, "new@example.org", source="web", at=clock.now())
    page = text(admin.get("/staff/"))
    row = page.split("Thu 26 Nov 2026</a>")[1].split("</tr>")[0]
    cells = [re.sub(r"<[^>]+>", "", c).strip()
             for c in re.findall(r'<td class="num">(.*?)</td>', row, re.S)]
    # sent, failed, bounced, unsubscribed after (complaints among them), spam complaints
    assert cells[:4] == ["5", "0", "1", "2"]
    assert " ".join(cells[4].split()).startswith("1 (20.00%, above Gmail")
    assert "3 left" in page or "left (3)" in page
    assert "Next scheduled send" in page and "Fri 27 Nov, 07:00" in page


# ---- subscribers -----------------------------------------------------------------------------


def test_subscriber_search_filter_and_paging(admin: FlaskClient, app: App) -> None:
    seed_subscribers(app, 120)
    with app.sessions.begin() as session:
        add(session, "ann.other@example.org", name="Ann Percent%", source="test")
        add(session, "waiting@example.org", status=PENDING, source="test")
    page = text(admin.get("/staff/subscribers"))
    assert "122 subscribers." in page and "Page 1 of 3" in page
    assert "Page 3 of 3" in text(admin.get("/staff/subscribers?page=3"))
    assert admin.get("/staff/subscribers?page=9").status_code == 404
    page = text(admin.get("/staff/subscribers?q=percent%25"))
    assert "1 subscriber found" in page and "ann.other@example.org" in page
    page = text(admin.get("/staff/subscribers?q=reader11"))  # reader11, reader110..119
    assert "11 subscribers found" in page
    page = text(admin.get("/staff/subscribers?status=pending"))
    assert "1 subscriber found" in page and "waiting@example.org" in page
    assert admin.get("/staff/subscribers?status=nonsense").status_code == 400


def test_unsubscribe_and_resubscribe_with_confirmation(admin: FlaskClient, app: App,
                                                       tmp_path: Path) -> None:
    with app.sessions.begin() as session:
        sub, _ = add(session, "sam@example.org", name="Sam", source="test")
        sub_id = sub.id
    page = text(admin.get(f"/staff/subscribers/{sub_id}"))
    assert "sam@example.org" in page and "added" in page
    post(admin, f"/staff/subscribers/{sub_id}/unsubscribe")
    with app.sessions() as session:
        assert session.get(Subscriber, sub_id).status == UNSUBSCRIBED  # type: ignore
    post(admin, f"/staff/subscribers/{sub_id}/resubscribe")
    with app.sessions() as session:
        sub = session.get(Subscriber, sub_id)
        assert sub is not None and sub.status == PENDING  # until they confirm
        kinds = [(e.kind, e.source) for e in sub.events]
    assert ("unsubscribed", "staff") in kinds and ("confirmation-sent", "staff") in kinds
    assert eml_recipients(tmp_path / "outbox") == {"sam@example.org": 1}
    page = text(admin.get(f"/staff/subscribers/{sub_id}"))
    assert "subscriber-unsubscribed" in page and "subscriber-resubscribe" in page
    post(admin, f"/staff/subscribers/{sub_id}/unsubscribe")
    post(admin, f"/staff/subscribers/{sub_id}/resubscribe")  # a second request, a new email
    assert eml_recipients(tmp_path / "outbox") == {"sam@example.org": 2}
    with app.sessions.begin() as session:
        sub = session.get(Subscriber, sub_id)
        assert sub is not None
        set_status(session, sub, ACTIVE, source="confirm")
    post(admin, f"/staff/subscribers/{sub_id}/resubscribe")  # already subscribed: refused
    assert "You are already subscribed." in text(admin.get(f"/staff/subscribers/{sub_id}"))
    assert eml_recipients(tmp_path / "outbox") == {"sam@example.org": 2}


def test_erasure_removes_the_person_and_keeps_only_a_hash(admin: FlaskClient, fed: App,
                                                          clock: FixedClock) -> None:
    run_send(fed, DAY)
    address = "reader2@example.org"
    with fed.sessions.begin() as session:
        sub = find(session, address)
        assert sub is not None
        sub_id = sub.id
        set_status(session, sub, UNSUBSCRIBED, source="webhook", at=clock.now())
        session.add(WebhookEvent(provider="postmark", event_id="e1", kind="unsubscribe",
                                 email=address, payload={"Recipient": address}))
    page = text(admin.get(f"/staff/subscribers/{sub_id}/erase"))
    assert "cannot be undone" in page and "1 delivery record" in page
    post(admin, f"/staff/subscribers/{sub_id}/erase")  # the box was not ticked
    with fed.sessions() as session:
        assert session.get(Subscriber, sub_id) is not None
    response = post(admin, f"/staff/subscribers/{sub_id}/erase", confirm="yes")
    assert response.headers["Location"] == "/staff/subscribers"  # type: ignore[attr-defined]

    with fed.sessions() as session:
        assert session.get(Subscriber, sub_id) is None
        assert session.scalar(select(func.count()).select_from(SubscriberEvent)
                              .where(SubscriberEvent.subscriber_id == sub_id)) == 0
        delivery = session.scalar(select(Delivery).where(Delivery.subscriber_id == sub_id))
        assert delivery is not None and (delivery.email, delivery.name) == ("erased", "")
        assert delivery.state == "sent"  # the edition's counts do not change
        hook = session.scalar(select(WebhookEvent))
        assert hook is not None and hook.email == "" and hook.payload == {}
        suppression = session.get(Suppression, email_hash(address))
        assert suppression is not None and suppression.reason == "erased"
        entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "subscriber-erased"))
        assert entry is not None and entry.target == f"subscriber:{sub_id}"
        for row in session.scalars(select(AuditEntry)):
            assert address not in f"{row.actor} {row.target} {row.detail}"
        # An import cannot quietly bring them back; the line says why.
        report = import_csv(session, io.StringIO(f"email\n{address}\nfresh@example.org\n"))
        assert report.added == 1 and report.errors[0][0] == 2
        assert "erased or suppressed" in report.errors[0][1]
    assert admin.get(f"/staff/subscribers/{sub_id}").status_code == 404


def test_csv_import_with_per_line_report_and_export(admin: FlaskClient, app: App) -> None:
    body = ("email,name,status\n"
            "new1@example.org,New One,\n"
            "not an address,Bad,\n"
            "new2@example.org,New Two,pending\n"
            "new3@example.org,,nonsense\n")
    response = admin.post("/staff/subscribers/import", data={
        "csrf_token": token(admin, "/staff/subscribers/import"),
        "csv": (io.BytesIO(body.encode()), "list.csv")}, content_type="multipart/form-data")
    page = text(response)
    assert response.status_code == 200
    assert "Added 2 subscribers; 2 lines were not imported." in page
    assert 'class="notice notice-warn"' in page
    assert "<td class=\"num\">3</td>" in page and "<td class=\"num\">5</td>" in page
    with app.sessions() as session:
        assert find(session, "new1@example.org").status == ACTIVE  # type: ignore
        assert find(session, "new2@example.org").status == PENDING  # type: ignore

    bad = admin.post("/staff/subscribers/import", data={
        "csrf_token": token(admin, "/staff/subscribers/import"),
        "csv": (io.BytesIO(b"name\nno email column\n"), "x.csv")},
        content_type="multipart/form-data")
    assert bad.status_code == 400 and "Nothing was imported" in text(bad)

    assert admin.get("/staff/subscribers/export").status_code == 405  # a POST only
    export = post(admin, "/staff/subscribers/export", status="active")
    assert export.headers["Content-Type"].startswith("text/csv")  # type: ignore
    assert "attachment" in export.headers["Content-Disposition"]  # type: ignore
    rows = list(csv.reader(io.StringIO(text(export))))
    assert rows[0][:4] == ["email", "name", "status", "created_at"]
    assert [r[0] for r in rows[1:]] == ["new1@example.org"]
    assert {"subscribers-imported", "subscribers-exported"} <= set(audit_actions(app))


def test_a_real_sized_csv_upload_is_accepted(admin: FlaskClient, app: App) -> None:
    lines = ["email,name"] + [f"bulk{i}@example.org,Bulk Reader {i}" for i in range(3000)]
    body = "\n".join(lines).encode()
    assert len(body) > 64 * 1024  # bigger than any ordinary form may be
    response = admin.post("/staff/subscribers/import", data={
        "csrf_token": token(admin, "/staff/subscribers/import"),
        "csv": (io.BytesIO(body), "bulk.csv")}, content_type="multipart/form-data")
    assert response.status_code == 200
    assert "Added 3,000 subscribers." in text(response)
    # ... but an ordinary form still may not be that big.
    assert admin.post("/staff/subscribers/export",
                      data={"csrf_token": "x", "pad": "y" * 70000}).status_code == 413


# ---- settings --------------------------------------------------------------------------------


def _settings_form(app: App, **changes: str) -> dict[str, str]:
    values = {key: overrides.current_value(app.settings, key) for key in overrides.KEYS}
    values.update(changes)
    return values


def test_settings_are_stored_and_applied_to_a_new_app(admin: FlaskClient, app: App) -> None:
    response = post(admin, "/staff/settings", **_settings_form(
        app, donation_amount="£12 a month", sender_name="LabourList Morning",
        send_time="06:45", reply_to="Letters@Example.org"))
    assert response.status_code == 303  # type: ignore[attr-defined]
    # In force at once in this process ...
    assert app.settings.donation_amount == "£12 a month"
    assert app.settings.from_addr == '"LabourList Morning" <daily@labourlist.org>'
    assert app.settings.reply_to == "letters@example.org"
    # ... and in any App built later from the same configuration.
    fresh = App.create(app.configured, clock=app.clock)
    try:
        assert fresh.settings.donation_amount == "£12 a month"
        assert fresh.settings.send_time == "06:45"
        assert fresh.settings.from_addr == '"LabourList Morning" <daily@labourlist.org>'
        assert fresh.settings.donation_copy == app.configured.donation_copy  # type: ignore
    finally:
        fresh.close()
    with app.sessions() as session:
        stored = dict(session.execute(select(Meta.key, Meta.value)
                                      .where(Meta.key.like("setting:%"))).all())
    assert stored == {"setting:donation_amount": "£12 a month",
                      "setting:sender_name": "LabourList Morning",
                      "setting:send_time": "06:45", "setting:reply_to": "letters@example.org"}
    assert audit_actions(app).count("setting-changed") == 4
    page = text(admin.get("/staff/settings"))
    assert "changed here" in page and "Configuration file: “07:00”" in page

    # Setting a value back to the file's removes the override.
    post(admin, "/staff/settings", **_settings_form(app, send_time="07:00"))
    with app.sessions() as session:
        assert session.get(Meta, "setting:send_time") is None
    post(admin, "/staff/settings", action="reset")
    assert app.settings.donation_amount == app.configured.donation_amount  # type: ignore


@pytest.mark.parametrize(("key", "value", "message"), [
    ("send_time", "25:00", "Send time: "),
    ("send_days", "someday", "Send days: "),
    ("donation_url", "javascript:alert(1)", "Donation link: "),
    ("reply_to", "not an address", "Reply-to address: "),
    ("sender_name", 'Evil" <x@evil.example>', "Sender name: "),
    ("donation_amount", "£10\r\nBcc: everyone@example.org", "Suggested amount: "),
])
def test_bad_settings_are_refused_with_the_field_named(admin: FlaskClient, app: App, key: str,
                                                    value: str, message: str) -> None:
    before = app.settings
    response = post(admin, "/staff/settings", **_settings_form(app, **{key: value}))
    assert response.status_code == 400  # type: ignore[attr-defined]
    assert message in text(response) and 'aria-invalid="true"' in text(response)
    assert f"setting {key}" not in text(response)  # the label, not the internal key
    assert app.settings == before
    with app.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Meta)
                              .where(Meta.key.like("setting:%"))) == 0


def test_overrides_never_touch_secrets_the_database_or_the_transport(app: App) -> None:
    configured = app.settings
    for key in ("secret_key", "database_url", "dsn", "smtp_password", "base_url"):
        with app.sessions.begin() as session, pytest.raises(ConfigError, match=key):
            overrides.save_override(session, configured, configured, key, "x://y")
    # A row planted by other means is ignored.
    with app.sessions.begin() as session:
        session.add(Meta(key="setting:database_url", value="sqlite:///elsewhere.db"))
        session.add(Meta(key="setting:dsn", value="smtp://evil.example"))
        session.add(Meta(key="setting:donation_amount", value="£5 a week"))
    fresh = App.create(configured, clock=app.clock)
    try:
        assert fresh.settings.database_url == configured.database_url
        assert fresh.settings.dsn == configured.dsn
        assert fresh.settings.donation_amount == "£5 a week"
    finally:
        fresh.close()


def test_app_create_before_init_has_no_overrides(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    app = App.create(settings)
    try:
        assert app.settings == settings
    finally:
        app.close()


# ---- audit log -------------------------------------------------------------------------------


def test_audit_log_page_filters_and_links(admin: FlaskClient, app: App) -> None:
    with app.sessions.begin() as session:
        sub, _ = add(session, "linked@example.org", source="test")
        sub_id = sub.id
    post(admin, f"/staff/subscribers/{sub_id}/unsubscribe")
    page = text(admin.get("/staff/audit"))
    assert "subscriber-unsubscribed" in page and f'href="/staff/subscribers/{sub_id}"' in page
    assert "linked@example.org" in page  # shown next to the id while they exist
    page = text(admin.get("/staff/audit?action=login"))
    assert "subscriber-unsubscribed</td>" not in page and "1 entry." in page


# ---- CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(app: App) -> Iterator[dict[str, str]]:
    yield {"MAILER_DATABASE_URL": app.settings.database_url, "MAILER_DSN": app.settings.dsn,
           "MAILER_SECRET_KEY": "test-secret-key", "MAILER_BASE_URL": app.settings.base_url,
           "MAILER_FEED_URL": app.settings.feed_url,
           "MAILER_CONFIG": str(PROJECT_ROOT / "config" / "mailer.toml")}


def test_staff_cli_add_list_set_password_remove(cli_env: dict[str, str], app: App) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["staff", "add", "New@Example.org", "--role", "admin",
                                 "--password-stdin"], input="a good long password\n", env=cli_env)
    assert result.exit_code == 0, result.output
    assert "added new@example.org (admin)" in result.output
    result = runner.invoke(cli, ["staff", "add", "new@example.org", "--password-stdin"],
                           input="another good password\n", env=cli_env)
    assert result.exit_code == 1 and "already has a staff account" in result.output
    result = runner.invoke(cli, ["staff", "add", "short@example.org", "--password-stdin"],
                           input="short\n", env=cli_env)
    assert result.exit_code == 1 and "at least 10 characters" in result.output
    result = runner.invoke(cli, ["staff", "add", "prompted@example.org"],
                           input="prompted password\nprompted password\n", env=cli_env)
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["staff", "list"], env=cli_env)
    assert "new@example.org\tadmin\tlast login never" in result.output
    assert "prompted@example.org\teditor" in result.output

    web = create_app(app, {"TESTING": True})
    client = web.test_client()
    assert login(client, "new@example.org", "a good long password").status_code == 303  # type: ignore
    result = runner.invoke(cli, ["staff", "set-password", "new@example.org",
                                 "--password-stdin"], input="the replacement pw\n", env=cli_env)
    assert result.exit_code == 0, result.output
    assert client.get("/staff/").status_code == 302  # the old session ended
    assert login(client, "new@example.org", "the replacement pw").status_code == 303  # type: ignore
    result = runner.invoke(cli, ["staff", "set-role", "new@example.org", "editor"], env=cli_env)
    assert result.exit_code == 0 and client.get("/staff/settings").status_code == 403
    result = runner.invoke(cli, ["staff", "remove", "new@example.org"], env=cli_env)
    assert result.exit_code == 0 and client.get("/staff/").status_code == 302
    result = runner.invoke(cli, ["staff", "remove", "new@example.org"], env=cli_env)
    assert result.exit_code == 1 and "no staff account new@example.org" in result.output
    assert {"staff-added", "password-set", "role-set", "staff-removed"} <= set(
        audit_actions(app))


def test_editions_cli_controls_share_the_domain_rules(cli_env: dict[str, str], fed: App) -> None:
    runner = CliRunner()
    build_edition(fed, DAY)
    result = runner.invoke(cli, ["editions", "pause", DAY.isoformat()], env=cli_env)
    assert result.exit_code == 1 and "is not sending" in result.output
    with fed.sessions.begin() as session:
        edition = get_edition(session, DAY)
        assert edition is not None
        edition.state = SENDING
    result = runner.invoke(cli, ["editions", "pause", DAY.isoformat()], env=cli_env)
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["editions", "cancel", DAY.isoformat()], env=cli_env)
    assert result.exit_code == 0, result.output
    with fed.sessions() as session:
        assert get_edition(session, DAY).state == CANCELLED  # type: ignore[union-attr]


def test_a_running_process_picks_up_overrides_with_refresh(app: App) -> None:
    """What a long-running process (the scheduler daemon) calls before each job."""
    configured = app.settings
    other = App.create(configured, clock=app.clock)  # another process, started earlier
    try:
        with app.sessions.begin() as session:
            overrides.save_override(session, configured, configured, "donation_amount",
                                    "£3 a week")
        assert other.settings.donation_amount == configured.donation_amount
        assert overrides.refresh(other).donation_amount == "£3 a week"
        assert other.settings.donation_amount == "£3 a week"
    finally:
        other.close()
