"""Hostile staff sign-in: a password guesser, and a session cookie replayed (issue 19, 6 and 10).

Item 6: five wrong passwords used to lock an account for 15 minutes, so anyone who knew an
editor's address could keep them out on a send morning by guessing five times a quarter hour.
Wrong passwords now slow only the client that typed them (growing delays, capped at a minute),
a distributed attack slows every guessing client, admins hear about it once per burst, and the
editor signs in at once from a browser that has not guessed.

Item 10: signing out used to leave the signed cookie valid for its 12 hours; a copy taken
before (from a shared computer, a proxy log, a backup of a browser profile) still worked.

Everything goes through the public surface: Flask's test client against the real app, each
browser with its own REMOTE_ADDR and cookie jar, and the CLI through click's CliRunner; on
SQLite and PostgreSQL. Time moves on the FixedClock; nothing sleeps.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from mailer.accounts import ADMIN, EDITOR, add_staff, hash_password
from mailer.app import App
from mailer.cli import cli
from mailer.clock import FixedClock
from mailer.config import PROJECT_ROOT
from mailer.db import alembic_config, init_db, make_engine
from mailer.models import AuditEntry, SendLog, UTCDateTime
from mailer.web import create_app
from tests.support.settings import make_settings

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
WAIT_RE = re.compile(r"try again in (\d+) s")
NOTICE_RE = re.compile(r'id="form-error">(.*?)</div>', re.S)
ADMIN_EMAIL, EDITOR_EMAIL, OPS = "admin@example.org", "editor@example.org", "ops@example.org"
PASSWORD = "correct horse battery staple"
WRONG = "not the password at all"
ATTACKER_IP, EDITOR_IP = "203.0.113.66", "198.51.100.20"
COOKIE = "__Host-mailer"  # base_url is https


# ---- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def app(database_url: str, tmp_path: Path, clock: FixedClock) -> Iterator[App]:
    settings = make_settings(tmp_path, database_url=database_url, staff_alerts=[OPS])
    application = App.create(settings, clock=clock)
    init_db(application.engine)
    with application.sessions.begin() as session:
        add_staff(session, ADMIN_EMAIL, PASSWORD, role=ADMIN)
        add_staff(session, EDITOR_EMAIL, PASSWORD, role=EDITOR)
    yield application
    application.close()


@pytest.fixture
def web(app: App) -> Flask:
    return create_app(app, {"TESTING": True, "MAILER_SEND_INLINE": True})


def browser(web: Flask, address: str) -> FlaskClient:
    """A browser of its own (cookie jar) at client address `address`."""
    client = web.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def token(client: FlaskClient, path: str = "/staff/login") -> str:
    match = CSRF_RE.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def login(client: FlaskClient, email: str = EDITOR_EMAIL, password: str = PASSWORD
          ) -> TestResponse:
    return client.post("/staff/login", data={"csrf_token": token(client), "email": email,
                                             "password": password})


def logout(client: FlaskClient) -> TestResponse:
    return client.post("/staff/logout", data={"csrf_token": token(client, "/staff/")})


def told_to_wait(response: TestResponse) -> int:
    """The seconds the page says to wait before the next attempt (0 when it says nothing)."""
    match = WAIT_RE.search(response.get_data(as_text=True))
    return int(match.group(1)) if match else 0


def guess(client: FlaskClient, clock: FixedClock, times: int,
          email: str = EDITOR_EMAIL) -> list[int]:
    """`times` wrong passwords from `client`, each as soon as the throttle lets it through:
    a refusal's Retry-After moves the clock on. Returns the waits it was given."""
    waits: list[int] = []
    checked = 0
    while checked < times:
        response = login(client, email, WRONG)
        if response.status_code == 429:
            wait = int(response.headers["Retry-After"])
            assert 0 < wait <= 60 and told_to_wait(response) == wait
            waits.append(wait)
            clock.advance(seconds=wait)
            continue
        assert response.status_code == 401, response.status_code
        checked += 1
    return waits


def alert_mails(app: App) -> list[tuple[str, str]]:
    """(To, Subject) of every staff alert in the file outbox."""
    folder = Path(app.settings.dsn.removeprefix("file://"))
    messages = [message_from_bytes(p.read_bytes()) for p in sorted(folder.glob("*.eml"))]
    return [(str(m["To"]), str(m["Subject"])) for m in messages if m["X-Mailer-Alert"]]


def audited(app: App, action: str) -> list[AuditEntry]:
    with app.sessions() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


# ---- item 6: guessing slows the guesser, never locks the editor out --------------------------


def test_fifty_wrong_passwords_from_one_client_leave_the_editor_free_elsewhere(
        web: Flask, clock: FixedClock) -> None:
    attacker = browser(web, ATTACKER_IP)
    waits = guess(attacker, clock, 50)
    assert waits and max(waits) == 60  # slowed to one guess a minute, never longer

    editor = browser(web, EDITOR_IP)
    response = login(editor)  # at once: this browser has guessed nothing
    assert response.status_code == 303
    assert editor.get("/staff/").status_code == 200

    # The attacker's address itself: even the right password waits out the delay (it is not
    # checked meanwhile), then works within the minute.
    early = login(attacker)
    assert early.status_code == 429
    wait = int(early.headers["Retry-After"])
    assert 0 < wait <= 60
    clock.advance(seconds=wait)
    assert login(attacker).status_code == 303
    assert attacker.get("/staff/").status_code == 200


def test_the_guessing_client_waits_longer_after_each_wrong_password(
        web: Flask, clock: FixedClock) -> None:
    attacker = browser(web, ATTACKER_IP)
    told: list[int] = []
    for _ in range(10):
        response = login(attacker, password=WRONG)
        assert response.status_code == 401
        told.append(told_to_wait(response))
        wait = told[-1]
        if wait:
            early = login(attacker)  # the right password, too early: refused unchecked
            assert early.status_code == 429 and early.headers["Retry-After"] == str(wait)
            assert f"try again in {wait} s" in early.get_data(as_text=True)
            clock.advance(seconds=wait - 1)
            assert login(attacker, password=WRONG).status_code == 429
            clock.advance(seconds=1)
    assert told == [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert login(attacker).status_code == 303  # its minute is up: the right password works
    # A wrong password costs a hash check and an audit entry; a refusal costs neither.
    assert len(audited(web.extensions["mailer"], "login-failed")) == 10


def test_unknown_addresses_get_the_same_delays_as_real_ones(web: Flask,
                                                            clock: FixedClock) -> None:
    """The throttle must not tell a guesser which addresses have accounts."""
    pages = {}
    for address, email in (("192.0.2.1", EDITOR_EMAIL), ("192.0.2.2", "nobody@example.org")):
        client = browser(web, address)
        told = []
        for _ in range(4):
            response = login(client, email, WRONG)
            told.append((response.status_code, told_to_wait(response)))
            clock.advance(seconds=told[-1][1])
        early = login(client, email, WRONG)
        notice = NOTICE_RE.search(early.get_data(as_text=True))
        pages[email] = (told, early.status_code, notice.group(1) if notice else "")
    assert pages[EDITOR_EMAIL] == pages["nobody@example.org"]
    assert pages[EDITOR_EMAIL] == ([(401, 0), (401, 1), (401, 2), (401, 4)], 401,
                                   pages[EDITOR_EMAIL][2])
    assert "try again in 8 s" in pages[EDITOR_EMAIL][2]


def test_a_distributed_attack_slows_every_guessing_client_but_not_a_clean_one(
        web: Flask, clock: FixedClock) -> None:
    guessers = [browser(web, f"203.0.113.{n}") for n in range(1, 31)]
    for client in guessers:  # one wrong password each: no single client looks busy
        assert login(client, password=WRONG).status_code == 401
    # The account as a whole is under attack: every client that guessed waits a full minute
    # before its next try, instead of trying again at once.
    again = login(guessers[0], password=WRONG)
    assert again.status_code == 429 and int(again.headers["Retry-After"]) == 60
    # The editor, from a browser that has not guessed, signs in at once.
    assert login(browser(web, EDITOR_IP)).status_code == 303
    # The editor who mistyped once in the middle of it waits at most that minute.
    clock.advance(seconds=60)
    assert login(guessers[-1]).status_code == 303


def test_one_client_trying_many_addresses_is_slowed_too(web: Flask, clock: FixedClock) -> None:
    sprayer = browser(web, ATTACKER_IP)
    for n in range(10):
        assert login(sprayer, f"guess{n}@example.org", WRONG).status_code == 401
    refused = login(sprayer, "guess-next@example.org", WRONG)  # a fresh address: still refused
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert login(browser(web, EDITOR_IP)).status_code == 303  # elsewhere, nothing changed


def test_parallel_guesses_cannot_share_one_slot(web: Flask, clock: FixedClock) -> None:
    """Six requests at the same moment, from the same address, after its delay ran out: the
    throttle lets exactly one password check through (across threads, and across processes
    on PostgreSQL, whose advisory lock is what serialises them)."""
    for _ in range(4):
        response = login(browser(web, ATTACKER_IP), password=WRONG)
        clock.advance(seconds=told_to_wait(response))
    clients = [browser(web, ATTACKER_IP) for _ in range(6)]
    tokens = [token(client) for client in clients]
    codes: list[int] = []
    start = threading.Barrier(len(clients))

    def attempt(client: FlaskClient, csrf: str) -> None:
        start.wait()
        response = client.post("/staff/login", data={"csrf_token": csrf,
                                                     "email": EDITOR_EMAIL, "password": WRONG})
        codes.append(response.status_code)

    threads = [threading.Thread(target=attempt, args=pair) for pair in zip(clients, tokens,
                                                                          strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(codes) == [401, 429, 429, 429, 429, 429]


def test_admins_are_alerted_once_per_burst(web: Flask, app: App, clock: FixedClock) -> None:
    attacker = browser(web, ATTACKER_IP)
    guess(attacker, clock, 3)  # a colleague mistyping: nobody is told
    assert alert_mails(app) == [] and audited(app, "login-alert") == []
    guess(attacker, clock, 12)  # a real burst
    for wave in range(2):  # it goes on, from fresh addresses, for well over an hour
        clock.advance(minutes=50)
        for n in range(10):
            guesser = browser(web, f"192.0.2.{wave * 10 + n + 1}")
            assert login(guesser, password=WRONG).status_code == 401
    mails = alert_mails(app)
    assert len(mails) == 1, mails
    to, subject = mails[0]
    assert to == OPS and EDITOR_EMAIL in subject
    with app.sessions() as session:
        logged = list(session.scalars(select(SendLog.detail).where(SendLog.kind == "alert")))
    assert len(logged) == 1 and EDITOR_EMAIL in logged[0]
    [entry] = audited(app, "login-alert")
    assert entry.target == f"staff:{EDITOR_EMAIL}" and ATTACKER_IP in entry.detail

    # Admins see it on their dashboard; editors do not get the panel.
    admin = browser(web, "198.51.100.99")
    assert login(admin, ADMIN_EMAIL).status_code == 303
    page = admin.get("/staff/").get_data(as_text=True)
    assert 'id="login-alerts"' in page and EDITOR_EMAIL in page
    editor = browser(web, EDITOR_IP)
    assert login(editor).status_code == 303
    assert 'id="login-alerts"' not in editor.get("/staff/").get_data(as_text=True)

    # Quiet for over an hour, then it starts again: that is a new burst, and a new alert.
    clock.advance(hours=1, minutes=1)
    guess(attacker, clock, 12)
    assert len(alert_mails(app)) == 2 and len(audited(app, "login-alert")) == 2


# ---- item 10: signing out ends the session on the server -----------------------------------


def test_a_cookie_captured_before_sign_out_is_refused_after_it(web: Flask) -> None:
    editor = browser(web, EDITOR_IP)
    assert login(editor).status_code == 303
    other_tab = browser(web, EDITOR_IP)  # the same account signed in elsewhere
    assert login(other_tab).status_code == 303
    cookie = editor.get_cookie(COOKIE)
    assert cookie is not None
    stolen = cookie.value

    assert logout(editor).status_code == 303
    thief = browser(web, ATTACKER_IP)
    thief.set_cookie(COOKIE, stolen)
    response = thief.get("/staff/subscribers")
    assert response.status_code == 302 and "/staff/login" in response.headers["Location"]
    assert thief.get("/staff/").status_code == 302
    # Signing out ends every session of the account (the generation is per account).
    assert other_tab.get("/staff/").status_code == 302
    # A fresh sign-in works, and its cookie is the one that counts now.
    assert login(editor).status_code == 303
    assert editor.get("/staff/").status_code == 200
    thief.set_cookie(COOKIE, stolen)
    assert thief.get("/staff/").status_code == 302


def test_a_cookie_captured_before_a_password_change_is_refused_after_it(
        web: Flask, app: App) -> None:
    editor = browser(web, EDITOR_IP)
    assert login(editor).status_code == 303
    stolen = editor.get_cookie(COOKIE).value  # type: ignore[union-attr]
    env = {"MAILER_DATABASE_URL": app.settings.database_url, "MAILER_DSN": app.settings.dsn,
           "MAILER_SECRET_KEY": "test-secret-key", "MAILER_BASE_URL": app.settings.base_url,
           "MAILER_FEED_URL": app.settings.feed_url,
           "MAILER_CONFIG": str(PROJECT_ROOT / "config" / "mailer.toml")}
    result = CliRunner().invoke(cli, ["staff", "set-password", EDITOR_EMAIL, "--password-stdin"],
                                input="a brand new password\n", env=env)
    assert result.exit_code == 0, result.output
    thief = browser(web, ATTACKER_IP)
    thief.set_cookie(COOKIE, stolen)
    assert thief.get("/staff/").status_code == 302
    assert editor.get("/staff/").status_code == 302
    assert login(editor, password="a brand new password").status_code == 303


def test_migration_gives_existing_accounts_a_session_generation(
        empty_database_url: str, tmp_path: Path, clock: FixedClock) -> None:
    """A database made before revision 0004, with an account in it, upgrades with `mailer init`
    and its account signs in and out with server-side sign-out."""
    from alembic import command

    engine = make_engine(empty_database_url)
    try:
        config = alembic_config(empty_database_url)
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0003")  # the head before this change
        accounts = sa.table("staff_users", sa.column("email", sa.String),
                            sa.column("password_hash", sa.String), sa.column("role", sa.String),
                            sa.column("created_at", UTCDateTime()),
                            sa.column("failed_logins", sa.Integer))
        with engine.begin() as conn:
            conn.execute(accounts.insert().values(
                email=EDITOR_EMAIL, password_hash=hash_password(PASSWORD), role=EDITOR,
                created_at=clock.now(), failed_logins=0))
    finally:
        engine.dispose()

    result = CliRunner().invoke(cli, ["init"], env={"MAILER_DATABASE_URL": empty_database_url})
    assert result.exit_code == 0, result.output
    assert "database ready at revision" in result.output  # the head, 0004 or later

    application = App.create(make_settings(tmp_path, database_url=empty_database_url),
                              clock=clock)
    try:
        web = create_app(application, {"TESTING": True})
        editor = browser(web, EDITOR_IP)
        assert login(editor).status_code == 303
        stolen = editor.get_cookie(COOKIE).value  # type: ignore[union-attr]
        assert logout(editor).status_code == 303
        thief = browser(web, ATTACKER_IP)
        thief.set_cookie(COOKIE, stolen)
        assert thief.get("/staff/").status_code == 302
    finally:
        application.close()


def test_the_product_hashes_staff_passwords_with_full_strength_scrypt() -> None:
    """The suite hashes with a cheap scrypt (tests/support/fasthash.py); the product must not."""
    from werkzeug.security import generate_password_hash

    from tests.support.fasthash import PRODUCTION

    assert PRODUCTION == "scrypt"
    assert generate_password_hash("a long passphrase", method=PRODUCTION).startswith(
        "scrypt:32768:8:1$")
