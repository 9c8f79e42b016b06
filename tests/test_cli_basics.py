"""CLI contract: init is idempotent on both databases, --help everywhere, one-line errors."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from mailer.cli import cli
from mailer.config import BUNDLED_TEMPLATES

COMMANDS = [
    [], ["init"], ["collect"], ["preview"], ["send"], ["worker"], ["demo"], ["subscribers"],
    ["subscribers", "add"], ["subscribers", "import"], ["subscribers", "export"],
    ["subscribers", "list"], ["subscribers", "unsubscribe"], ["editions"], ["scheduler"],
    ["serve"], ["status"], ["bounces"], ["bounces", "ingest"], ["donations"],
    ["donations", "import"], ["clicks"], ["clicks", "purge"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "mailer")
def test_every_command_has_help(args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_init_is_idempotent(database_url: str) -> None:
    runner = CliRunner()
    env = {"MAILER_DATABASE_URL": database_url}
    first = runner.invoke(cli, ["init"], env=env)
    second = runner.invoke(cli, ["init"], env=env)
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert "database ready at revision" in second.output


def test_migrations_build_exactly_the_models_schema(database_url: str) -> None:
    """What `mailer init` creates is what the models describe: a model change without its
    migration (or the reverse) shows up here, on SQLite and on PostgreSQL."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from mailer.db import init_db, make_engine
    from mailer.models import Base

    engine = make_engine(database_url)
    try:
        init_db(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_commands_before_init_say_so(tmp_path: Path) -> None:
    env = {"MAILER_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    result = CliRunner().invoke(cli, ["subscribers", "list"], env=env)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"error: database not created yet ({tmp_path / 'empty.db'}): run `mailer init` first")
    assert not (tmp_path / "empty.db").exists()
    (tmp_path / "empty.db").touch()
    result = CliRunner().invoke(cli, ["subscribers", "list"], env=env)
    assert result.exit_code == 1
    assert result.output.strip() == "error: database has no tables yet: run `mailer init` first"


def test_bad_setting_is_one_line_naming_the_key() -> None:
    result = CliRunner().invoke(cli, ["init"], env={"MAILER_SEND_TIME": "7am"})
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: setting send_time:")
    assert len(result.output.strip().splitlines()) == 1


def test_subscribers_round_trip_through_the_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"MAILER_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}
    assert runner.invoke(cli, ["init"], env=env).exit_code == 0
    csv_file = tmp_path / "in.csv"
    csv_file.write_text("email,name\nann@example.org,Ann\nbroken,Bob\n", encoding="utf-8")
    imported = runner.invoke(cli, ["subscribers", "import", str(csv_file)], env=env)
    assert imported.exit_code == 0
    assert "added 1" in imported.output and "line 3:" in imported.output
    added = runner.invoke(cli, ["subscribers", "add", "bob@example.org", "--name", "Bob"], env=env)
    assert added.exit_code == 0 and "added" in added.output
    bad = runner.invoke(cli, ["subscribers", "add", "not an address"], env=env)
    assert bad.exit_code == 1 and bad.output.startswith("error: not a valid email address")
    gone = runner.invoke(cli, ["subscribers", "unsubscribe", "ann@example.org"], env=env)
    assert gone.exit_code == 0 and "unsubscribed" in gone.output
    exported = runner.invoke(cli, ["subscribers", "export"], env=env)
    lines = exported.output.strip().splitlines()
    assert lines[0] == ("email,name,status,created_at,confirmed_at,first_name,frequency,"
                        "sections")
    assert any(line.startswith("ann@example.org,Ann,unsubscribed,") for line in lines)
    shown = runner.invoke(cli, ["subscribers", "show", "ann@example.org"], env=env)
    assert "unsubscribed" in shown.output and "staff" in shown.output


def test_demo_runs_on_embedded_defaults(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--dir", str(tmp_path / "demo")], env={})
    assert result.exit_code == 0, result.output
    assert "sent 5" in result.output
    assert len(list((tmp_path / "demo" / "outbox").rglob("*.eml"))) == 5


def test_demo_serve_opens_the_console_on_a_sendable_edition(tmp_path: Path) -> None:
    """`mailer demo --serve`: the edition built, not sent; the console up with an admin whose
    password is printed once; signing in with it shows the edition with its Send button."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, "-m", "mailer", "demo", "--serve", "--port", str(port), "--dir",
         str(tmp_path / "d")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        cwd=tmp_path, env={**os.environ, "MAILER_SPAMASSASSIN_COMMAND": "/nonexistent/sa"})
    try:
        assert child.stdout is not None
        lines = [child.stdout.readline() for _ in range(6)]
        console = next(line for line in lines if line.startswith("staff console:"))
        password = re.search(r"with the password (\S+) \(shown once\)", console)
        assert password and "would send to 5 subscribers" in "".join(lines)
        base = f"http://127.0.0.1:{port}"
        with requests.Session() as browser:
            for _ in range(100):
                try:
                    page = browser.get(f"{base}/staff/login", timeout=5)
                    break
                except requests.ConnectionError:
                    time.sleep(0.1)
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert csrf
            signed = browser.post(f"{base}/staff/login", data={
                "csrf_token": csrf.group(1), "email": "demo@example.org",
                "password": password.group(1)})
            assert "Dashboard" in signed.text
            edition = browser.get(f"{base}/staff/today").text
            assert "Send now" in edition and 'id="edition-state">sent<' not in edition
        assert not list((tmp_path / "d" / "outbox").rglob("*.eml"))  # nothing sent yet
    finally:
        child.terminate()
        child.wait(10)


def test_the_command_line_speaks_in_plain_lines(tmp_path: Path) -> None:
    """Preflight's warnings in `mailer demo` are `warning:` lines, without the logger's
    timestamp and module; `--help` lists every command with its whole first sentence."""
    demo = subprocess.run([sys.executable, "-m", "mailer", "demo", "--dir", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
                          env={**os.environ, "MAILER_SPAMASSASSIN_COMMAND": "/nonexistent/sa"})
    assert demo.returncode == 0, demo.stderr
    lines = demo.stderr.splitlines()
    assert "warning: edition " in demo.stderr and "/nonexistent/sa not installed" in demo.stderr
    assert all(line.startswith(("warning: ", "error: ")) for line in lines), lines
    for group in ([], ["editions"], ["subscribers"], ["webhooks"]):
        listing = CliRunner().invoke(cli, [*group, "--help"]).output.split("Commands:", 1)[1]
        assert "..." not in listing
        entries = re.split(r"\n  (?=\S)", listing.strip())
        assert all(entry.rstrip().endswith((".", ")")) for entry in entries), entries


def test_an_installed_mailer_carries_everything_it_loads(tmp_path: Path) -> None:
    """A wheel (what `pip install .` makes, unlike the editable install of the README) must
    hold the templates, the web pages' static files and the migrations: they once lived
    outside the package and an installed `mailer demo` could not find its template."""
    root = Path(__file__).resolve().parent.parent
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    shutil.copytree(root / "mailer", source / "mailer",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                            str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True, timeout=240, check=False)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = root / "mailer"
    needed = [path.relative_to(root).as_posix()
              for folder in (BUNDLED_TEMPLATES, package / "migrations")
              for path in folder.rglob("*")
              if path.is_file() and "__pycache__" not in path.parts]
    assert any(n.endswith("templates/edition.mjml.j2") for n in needed)
    assert any(n.endswith("static/site.css") for n in needed)
    assert [n for n in needed if n not in names] == []
    assert BUNDLED_TEMPLATES.is_relative_to(package)  # (the default looks there)


def test_erase_from_the_cli_leaves_only_a_hash(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"MAILER_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}
    assert runner.invoke(cli, ["init"], env=env).exit_code == 0
    assert runner.invoke(cli, ["subscribers", "add", "eve@example.org"], env=env).exit_code == 0
    erased = runner.invoke(cli, ["subscribers", "erase", "eve@example.org", "--yes"], env=env)
    assert erased.exit_code == 0, erased.output
    listing = runner.invoke(cli, ["subscribers", "list"], env=env)
    assert "eve@example.org" not in listing.output
    again = runner.invoke(cli, ["subscribers", "add", "eve@example.org"], env=env)
    assert again.exit_code == 1 and "erased" in again.output
