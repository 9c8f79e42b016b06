"""Readers' choices at the doors that set them: the CLI and CSV imports.

Section names are matched to the configured `sections` without regard to case, stored in the
configured spelling, and "every section" is stored as all (so a section added later reaches
the readers who wanted everything); anything else is refused by name, per line in an import.
"""

from __future__ import annotations

import io

from click.testing import CliRunner
from sqlalchemy import select

from mailer.app import App
from mailer.choices import describe, parse_sections, split
from mailer.cli import cli
from mailer.models import Subscriber, SubscriberEvent
from mailer.subscribers import add, import_csv, set_choices

SECTIONS = ["News", "Comment", "Analysis", "Columnist"]


def people(app: App) -> dict[str, tuple[str, list[str]]]:
    with app.sessions() as s:
        return {sub.email: (sub.frequency, split(sub.sections))
                for sub in s.scalars(select(Subscriber))}


def test_import_reads_frequency_and_sections_and_reports_every_wrong_column(app: App) -> None:
    rows = ("email,first_name,frequency,sections\n"
            "a@example.org,Ann,weekly,comment;NEWS\n"
            "b@example.org,Bob,,\n"
            "c@example.org,Cy,fortnightly,News\n"
            "d@example.org,Di,daily,News;Sport\n"
            f"e@example.org,{'E' * 101},daily,News\n"
            "not-an-address,Fi,daily,News\n"
            "g@example.org,Gwen,DAILY,news;comment;analysis;columnist\n")
    with app.sessions.begin() as s:
        report = import_csv(s, io.StringIO(rows), sections=SECTIONS)
    assert report.added == 3
    reasons = dict(report.errors)
    assert sorted(reasons) == [4, 5, 6, 7]
    assert "unknown frequency 'fortnightly'" in reasons[4]
    assert "unknown section 'Sport'" in reasons[5] and "News, Comment" in reasons[5]
    assert "first name is longer" in reasons[6]
    assert "not a valid email address" in reasons[7]
    assert people(app) == {"a@example.org": ("weekly", ["News", "Comment"]),
                           "b@example.org": ("daily", []),
                           "g@example.org": ("daily", [])}


def test_cli_add_takes_frequency_and_sections(app: App) -> None:
    env = {"MAILER_DATABASE_URL": app.settings.database_url}
    runner = CliRunner()
    ok = runner.invoke(cli, ["subscribers", "add", "h@example.org", "--frequency", "weekly",
                             "--sections", "Analysis;comment"], env=env)
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(cli, ["subscribers", "add", "i@example.org", "--sections", "Sport"],
                        env=env)
    assert bad.exit_code != 0 and "unknown section 'Sport'" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    assert people(app) == {"h@example.org": ("weekly", ["Comment", "Analysis"])}
    exported = runner.invoke(cli, ["subscribers", "export"], env=env)
    assert exported.output.splitlines()[1].endswith(",weekly,Comment;Analysis")


def test_a_change_of_choices_is_in_the_readers_history(app: App) -> None:
    with app.sessions.begin() as s:
        sub, _ = add(s, "j@example.org")
        chosen = parse_sections(["comment"], SECTIONS)
        assert set_choices(s, sub, frequency="weekly", sections=chosen, source="preferences")
        assert not set_choices(s, sub, frequency="weekly", sections=chosen, source="again")
    with app.sessions() as s:
        events = [(e.kind, e.detail) for e in s.scalars(select(SubscriberEvent))]
    assert ("choices-changed", "weekly, Comment") in events
    assert describe("daily", ["News", "Comment", "Analysis"]) == (
        "daily, News, Comment and Analysis")
