"""Hostile staff sign-in: a session cookie replayed after sign-out (issue 19, item 10).

Item 10: signing out used to leave the signed cookie valid for its 12 hours; a copy taken
before (from a shared computer, a proxy log, a backup of a browser profile) still worked.

Everything goes through the public surface: Flask's test client against the real app, each
browser with its own REMOTE_ADDR and cookie jar, and the CLI through click's CliRunner; on
SQLite and PostgreSQL. Time moves on the FixedClock; nothing sleeps.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from mailer.app import App
from mailer.cli import cli
from mailer.clock import FixedClock
from mailer.config import PROJECT_ROOT
from mailer.db import alembic_config, init_db, make_engine
from mailer.models import UTCDateTime
from mailer.staff import ADMIN, EDITOR, add_staff, hash_password
from mailer.web import create_app
from tests.conftest import make_settings

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
ADMIN_EMAIL, EDITOR_EMAIL = "admin@example.org", "editor@example.org"
PASSWORD = "correct horse battery staple"
ATTACKER_IP, EDITOR_IP = "203.0.113.66", "198.51.100.20"
COOKIE = "__Host-mailer"  # base_url is https


# ---- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def app(database_url: str, tmp_path: Path, clock: FixedClock) -> Iterator[App]:
    settings = make_settings(tmp_path, database_url=database_url)
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
        database_url: str, tmp_path: Path, clock: FixedClock) -> None:
    """A database made before revision 0003, with an account in it, upgrades with `mailer init`
    and its account signs in and out with server-side sign-out."""
    from alembic import command

    engine = make_engine(database_url)
    try:
        config = alembic_config(database_url)
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0004")  # the head before this change
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

    result = CliRunner().invoke(cli, ["init"], env={"MAILER_DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    assert "database ready at revision 0003" in result.output

    application = App.create(make_settings(tmp_path, database_url=database_url), clock=clock)
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
