"""Hostile and mistaken configuration, through the real `mailer` command (issue 19, 3, 13, 14).

The threat model in one place: status output ends up in monitoring systems, tickets and chat,
so a secret in MAILER_DSN or MAILER_DATABASE_URL must never appear in it, whatever characters
the secret holds (AWS secret keys contain '/', SMTP passwords '@' and ':'); a URL that cannot be
read is a one-line error that does not echo it; a read-only command creates nothing; and a
misspelt MAILER_* variable is not silently ignored.

Every network check points at 127.0.0.1:9 (discard; nothing listens), so nothing here leaves the
machine and each refusal is immediate.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mailer.cli import cli
from mailer.config import load_settings
from tests.support.environ import bare_environ

NOWHERE = "127.0.0.1:9"
API = f"endpoint=http://{NOWHERE}&timeout=2&max_wait=1"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what each test sets: a developer's MAILER_* variables must not change the result."""
    for key in list(os.environ):
        if key.startswith("MAILER_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MAILER_DNS_CHECK", "0")  # (no test looks a real domain up)
    monkeypatch.setenv("MAILER_DATABASE_URL", f"sqlite:///{tmp_path / 'hostile.db'}")
    monkeypatch.setenv("MAILER_DSN", f"file://{tmp_path / 'outbox'}")
    monkeypatch.setenv("MAILER_NOW", "2026-11-26T06:00:00Z")


def mailer(*args: str, **env: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def fragments(secret: str) -> list[str]:
    """The secret and each piece of it between URL delimiters: none may be shown."""
    return [secret, *(p for p in re.split(r"[/@:%?#]", secret) if len(p) >= 4)]


def assert_hidden(secret: str, text: str) -> None:
    for piece in fragments(secret):
        assert piece not in text, f"{piece!r} shown in:\n{text}"


def assert_one_line_error(result: Result, starts: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {starts}"), lines[0]
    return lines[0]


# ---- 3: secrets in MAILER_DSN ------------------------------------------------------------------

SMTP_PASSWORD = "Zq7v/Wx@Lm9:Rt4k"
AWS_SECRET = "wJalrXUt/nFEMIK7+MDENG/bPxRfiCY"
POSTMARK_TOKEN = "d5f1e3c2-7a4b-4e1f-9c3d-b2a1f0e9d8c7"
SENDGRID_KEY = "SG.Hx7qLp2/Zr@Kw9vN.Ty6uB/4mJq"

DSNS = [
    pytest.param(f"smtp://mailer:{SMTP_PASSWORD}@{NOWHERE}?tls=0&timeout=2", SMTP_PASSWORD,
                 f"smtp://mailer:***@{NOWHERE}?tls=0&timeout=2", id="smtp-raw-password"),
    pytest.param(f"smtp://mailer%40labourlist.org:Zq7v%2FWx%40Lm9%3ARt4k@{NOWHERE}?tls=0",
                 "Zq7v%2FWx%40Lm9%3ARt4k", f"smtp://mailer@labourlist.org:***@{NOWHERE}?tls=0",
                 id="smtp-encoded-password"),
    pytest.param(f"ses+api://AKIAHOSTILE7EXAMPLE:{AWS_SECRET}@default?region=eu-west-2&{API}",
                 "AKIAHOSTILE7EXAMPLE:" + AWS_SECRET,
                 f"ses+api://***:***@default?region=eu-west-2&{API}", id="ses-id-and-secret"),
    pytest.param(f"postmark+api://{POSTMARK_TOKEN}@default?{API}", POSTMARK_TOKEN,
                 f"postmark+api://***@default?{API}", id="postmark-token"),
    pytest.param(f"sendgrid+api://{SENDGRID_KEY}@default?{API}", SENDGRID_KEY,
                 f"sendgrid+api://***@default?{API}", id="sendgrid-key"),
    pytest.param(f"postmark+api://{POSTMARK_TOKEN}?{API}", POSTMARK_TOKEN,
                 f"postmark+api://***?{API}", id="postmark-token-without-at"),
    pytest.param(f"smtp://mailer:{SMTP_PASSWORD}@{NOWHERE}:notaport", SMTP_PASSWORD,
                 "<unparsable URL>", id="smtp-bad-port"),
]


@pytest.mark.parametrize(("dsn", "secret", "shown"), DSNS)
def test_status_never_shows_a_dsn_secret(dsn: str, secret: str, shown: str) -> None:
    as_json = mailer("status", "--json", MAILER_DSN=dsn)
    report = json.loads(as_json.output)
    assert report["transport"]["dsn"] == shown
    assert report["transport"]["reachable"] is False
    text = mailer("status", MAILER_DSN=dsn)
    assert f"transport: UNREACHABLE ({shown})" in text.output
    for result in (as_json, text):
        assert result.exit_code == 1
        assert_hidden(secret, result.output)


@pytest.mark.parametrize(("dsn", "secret", "shown"), DSNS)
def test_transports_check_never_shows_a_dsn_secret(dsn: str, secret: str, shown: str) -> None:
    result = mailer("transports", "check", "--dsn", dsn)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert_hidden(secret, result.output)
    if shown != "<unparsable URL>":
        assert result.output.startswith(f"checking {shown}\n")


def test_a_raw_secret_reaches_the_transport_whole() -> None:
    """Parsing and redaction share one reading: the credentials end at the last '@', so a raw
    AWS secret with '/' is not cut at the '/' (which left no key id, and SES silently fell back
    to boto3's own credential chain)."""
    from mailer.transports import parse_dsn

    ses = parse_dsn(f"ses+api://AKIAHOSTILE7EXAMPLE:{AWS_SECRET}@default?region=eu-west-2")
    assert (ses.user, ses.password, ses.host) == ("AKIAHOSTILE7EXAMPLE", AWS_SECRET, "default")
    smtp = parse_dsn(f"smtp://mailer:{SMTP_PASSWORD}@{NOWHERE}")
    assert (smtp.user, smtp.password, smtp.host, smtp.port) == (
        "mailer", SMTP_PASSWORD, "127.0.0.1", 9)


# ---- 3: MAILER_DATABASE_URL --------------------------------------------------------------------

DB_SECRET = "Pg7v/Se:cr3tX"


def test_status_never_shows_the_database_password() -> None:
    url = f"postgresql://mailer:{DB_SECRET}@{NOWHERE}/daily?connect_timeout=2"
    report = json.loads(mailer("status", "--json", MAILER_DATABASE_URL=url).output)
    assert report["database"]["url"] == f"postgresql://mailer:***@{NOWHERE}/daily?connect_timeout=2"
    assert report["database"]["reachable"] is False
    for args in (["status"], ["status", "--json"]):
        result = mailer(*args, MAILER_DATABASE_URL=url)
        assert result.exit_code == 1
        assert_hidden(DB_SECRET, result.output)


def test_a_password_in_the_database_url_query_is_hidden_too() -> None:
    url = f"postgresql://mailer@{NOWHERE}/daily?password=Qx9secretpw&connect_timeout=2"
    result = mailer("status", "--json", MAILER_DATABASE_URL=url)
    assert json.loads(result.output)["database"]["url"] == (
        f"postgresql://mailer@{NOWHERE}/daily?password=***&connect_timeout=2")
    assert "Qx9secretpw" not in result.output


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["init"]])
@pytest.mark.parametrize(
    ("url", "secret"),
    [
        pytest.param("post gres://mailer:Hunter2pw@db/daily", "Hunter2pw", id="garbled-scheme"),
        pytest.param("mailer:Hunter2pw@db/daily", "Hunter2pw", id="no-scheme"),
        pytest.param("postgresql://mailer:Hunter2pw@db:notaport/daily", "Hunter2pw",
                     id="non-numeric-port"),
        pytest.param("postgresql://mailer:Hunter2pw@db:99999/daily", "Hunter2pw",
                     id="port-out-of-range"),
        pytest.param("postgresql://mailer:Hunter2pw@db/daily#x", "Hunter2pw", id="fragment"),
        # SQLAlchemy would read the host as 'Tail99x@db': say so rather than connect there
        pytest.param("postgresql://mailer:Pg7@Tail99x@db/daily", "Pg7@Tail99x",
                     id="raw-at-in-password"),
    ],
)
def test_an_unreadable_database_url_is_one_line_and_not_echoed(
        url: str, secret: str, command: list[str]) -> None:
    line = assert_one_line_error(mailer(*command, MAILER_DATABASE_URL=url),
                                 "setting database_url:")
    assert_hidden(secret, line)


@pytest.mark.parametrize("scheme", ["mysql", "oracle", "mssql+pyodbc", "postgresql+psycopg2"])
@pytest.mark.parametrize("command", [["status"], ["init"]])
def test_an_unsupported_database_names_the_supported_ones(scheme: str,
                                                          command: list[str]) -> None:
    line = assert_one_line_error(
        mailer(*command, MAILER_DATABASE_URL=f"{scheme}://mailer:Hunter2pw@db/daily"),
        f"setting database_url: {scheme}:// is not supported")
    assert "SQLite" in line and "PostgreSQL" in line
    assert "Hunter2pw" not in line


# ---- 13: a read-only command creates nothing ---------------------------------------------------


def _bare_env() -> dict[str, str]:
    return bare_environ()


def _run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailer", *args], cwd=cwd,
                          env={**_bare_env(), **env}, capture_output=True, text=True,
                          timeout=60, check=False)


def test_status_in_an_empty_folder_creates_nothing_and_says_so(tmp_path: Path) -> None:
    text = _run(tmp_path, "status")
    as_json = _run(tmp_path, "status", "--json")
    assert list(tmp_path.iterdir()) == []  # no subscribers.db, no outbox
    assert text.returncode == 1 and "Traceback" not in text.stderr
    assert "PROBLEM: database not created yet: run `mailer init`" in text.stdout
    assert "database: not created yet (sqlite:///subscribers.db): run `mailer init`" in text.stdout
    assert "feed: unknown (database not created yet)" in text.stdout
    assert "reachable" not in text.stdout
    report = json.loads(as_json.stdout)
    assert report["database"]["state"] == "not created"
    assert report["database"]["reachable"] is False
    assert report["feed"]["state"] == "unknown (database not created yet)"


def test_status_on_a_database_without_tables_words_both_lines_alike(tmp_path: Path) -> None:
    (tmp_path / "subscribers.db").touch()
    result = _run(tmp_path, "status")
    assert result.returncode == 1
    assert "PROBLEM: database has no tables yet: run `mailer init`" in result.stdout
    assert ("database: reachable, no tables yet (sqlite:///subscribers.db): run `mailer init`"
            in result.stdout)
    assert "feed: unknown (database has no tables yet)" in result.stdout


@pytest.mark.parametrize("command", [
    ("subscribers", "list"), ("subscribers", "export"), ("editions", "list"),
    ("editions", "show", "2026-11-26"), ("staff", "list"), ("collect",), ("preview",),
])
def test_other_commands_in_an_empty_folder_create_no_database(
        tmp_path: Path, command: tuple[str, ...]) -> None:
    """Only `mailer init` makes the database: the rest say so in one line, make nothing."""
    url = f"sqlite:///{tmp_path / 'never.db'}"
    result = CliRunner().invoke(cli, list(command), env={"MAILER_DATABASE_URL": url})
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "database not created yet" in result.output and "mailer init" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "never.db").exists()


def test_transports_check_in_an_empty_folder_creates_no_database(tmp_path: Path) -> None:
    result = mailer("transports", "check",
                    MAILER_DATABASE_URL=f"sqlite:///{tmp_path / 'never.db'}")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "never.db").exists()


# ---- 14: misspelt MAILER_* variables -----------------------------------------------------------


def test_a_misspelt_variable_warns_once_naming_the_closest_key(tmp_path: Path) -> None:
    result = _run(tmp_path, "init", MAILER_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}",
                  MAILER_FEED_URLL="https://typo-value.example/feed/",
                  MAILER_XYZZY="plugh-value")
    assert result.returncode == 0, result.stderr  # a warning, not an error
    warnings = [line for line in result.stderr.splitlines() if "not a mailer setting" in line]
    assert len(warnings) == 2, result.stderr
    typo = next(line for line in warnings if "MAILER_FEED_URLL" in line)
    assert "did you mean MAILER_FEED_URL?" in typo
    other = next(line for line in warnings if "MAILER_XYZZY" in line)
    assert "did you mean" not in other
    assert "typo-value" not in result.stderr and "plugh-value" not in result.stderr


def test_mailer_variables_that_are_not_settings_do_not_warn(tmp_path: Path) -> None:
    legitimate = {
        "MAILER_CONFIG": str(Path(__file__).resolve().parent.parent / "config" / "mailer.toml"),
        "MAILER_NOW": "2026-11-26T06:00:00Z",
        "MAILER_TEST_POSTGRES_URL": "postgresql://postgres@127.0.0.1:9/test",
        "MAILER_KILL_TRIALS": "3",
        "MAILER_SCREENSHOT_DIR": str(tmp_path / "shots"),
        "MAILER_FROM": "Daily <daily@example.org>",
        "MAILER_FROM_ADDR": "Daily <daily@example.org>",
        "MAILER_HOST": "127.0.0.1",
        "MAILER_PORT": "8001",
        "MAILER_SECRET_KEY": "k" * 32,
        "MAILER_SMTP_PASSWORD": "pw",
        "MAILER_POSTMARK_WEBHOOK_PASSWORD": "pw",
        "MAILER_COLLECT_EVERY_MINUTES": "30",
    }
    result = _run(tmp_path, "init", MAILER_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}",
                  **legitimate)
    assert result.returncode == 0, result.stderr
    assert "not a mailer setting" not in result.stderr


def test_the_warning_is_given_once_per_process(caplog: pytest.LogCaptureFixture) -> None:
    env = {"MAILER_SEND_TMIE": "07:00", "MAILER_DATABASE_URL": "sqlite:///x.db"}
    with caplog.at_level(logging.WARNING, logger="mailer.config"):
        load_settings(env)
        load_settings(env)
    assert [r.getMessage() for r in caplog.records] == [
        "environment variable MAILER_SEND_TMIE is not a mailer setting and is ignored; "
        "did you mean MAILER_SEND_TIME?"]
