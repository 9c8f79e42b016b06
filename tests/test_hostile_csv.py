"""Hostile and real-world CSV files, through the CLI and the staff console (issue 19).

* Cells that export defused with a leading `'` (formula-like: = + - @, tab, CR) come back
  as they were: an address may start with `=`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from mailer.app import App
from mailer.cli import cli
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.models import Subscriber
from mailer.subscribers import add
from tests.conftest import make_settings

# ---- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def app(database_url: str, tmp_path: Path, clock: FixedClock) -> Iterator[App]:
    application = App.create(make_settings(tmp_path, database_url=database_url), clock=clock)
    init_db(application.engine)
    yield application
    application.close()


def cli_env(app: App) -> dict[str, str]:
    return {"MAILER_DATABASE_URL": app.settings.database_url,
            "MAILER_SECRET_KEY": "test-secret-key"}


def names(app: App) -> dict[str, str]:
    with app.sessions() as session:
        return {email: name for email, name in session.execute(
            select(Subscriber.email, Subscriber.name))}


# ---- 11b: what export defused comes back as it was -----------------------------------------


FORMULA_LIKE = {
    "=sum@example.org": "=SUM(1)",
    "+plus@example.org": "+44 20 7946 0000",
    "-dash@example.org": "-Dash",
    "at@example.org": "@handle",
    "quoted@example.org": "'=already quoted",
    "'=apostrophe@example.org": "'Tis Me",
    "plain@example.org": "O'Brien",
}


def test_formula_like_cells_round_trip_through_cli_export_and_import(
        app: App, tmp_path: Path, clock: FixedClock) -> None:
    with app.sessions.begin() as session:
        for email, name in FORMULA_LIKE.items():
            add(session, email, name=name)
    runner = CliRunner()
    out = tmp_path / "export.csv"
    exported = runner.invoke(cli, ["subscribers", "export", "--out", str(out)], env=cli_env(app))
    assert exported.exit_code == 0, exported.output
    cells = {row["email"]: row["name"]
             for row in csv.DictReader(io.StringIO(out.read_text(encoding="utf-8")))}
    assert cells["'=sum@example.org"] == "'=SUM(1)"  # defused for spreadsheets
    assert cells["quoted@example.org"] == "''=already quoted"
    assert cells["plain@example.org"] == "O'Brien"

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    target = App.create(make_settings(fresh), clock=clock)
    init_db(target.engine)
    try:
        imported = runner.invoke(cli, ["subscribers", "import", str(out)], env=cli_env(target))
        assert imported.exit_code == 0, imported.output
        assert f"added {len(FORMULA_LIKE)}, already present 0, rejected 0" in imported.output
        assert names(target) == FORMULA_LIKE
    finally:
        target.close()
