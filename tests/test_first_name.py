"""The greeting uses the reader's first name, never the whole name field.

Through the surfaces that set it (the CLI, CSV imports in our columns and Mailchimp's, the
sign-up form) and a real send through the file outbox, and the migration that gives existing
readers one.
"""

from __future__ import annotations

import io
import re
from email import message_from_bytes, policy
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy import select

from mailer.app import App
from mailer.cli import cli
from mailer.db import alembic_config, make_engine
from mailer.models import Subscriber
from mailer.pipeline import run_send
from mailer.subscribers import add, import_csv
from mailer.web import create_app
from tests.support.seed import with_feed


def greetings(outbox: Path) -> dict[str, tuple[str, str]]:
    """Each recipient's To header and the greeting line of their text part."""
    got = {}
    for path in outbox.glob("*.eml"):
        msg = message_from_bytes(path.read_bytes(), policy=policy.default)
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        line = next(li for li in text.splitlines() if li.startswith("Good morning"))
        got[msg["To"].addresses[0].addr_spec] = (str(msg["To"]), line)
    return got


def test_the_greeting_is_the_first_name_or_plain(app: App, tmp_path: Path) -> None:
    with app.sessions.begin() as s:
        add(s, "sian@example.org", name="Dr Siân Evans MP", first_name="Siân")
        add(s, "nofirst@example.org", name="Someone Withaname")
    app.settings = app.settings.replace(spamassassin_command="/nonexistent/spamassassin")
    with_feed(app, tmp_path)
    assert run_send(app, app.clock.today(app.settings.tz)).status == "sent"
    got = greetings(tmp_path / "outbox")
    assert got["sian@example.org"] == ("Dr Siân Evans MP <sian@example.org>",
                                       "Good morning, Siân")
    assert got["nofirst@example.org"][1] == "Good morning"


def test_imports_fill_the_first_name(app: App) -> None:
    ours = ("email,name,first_name\n"
            "a@example.org,Ann Abbott,Ann\n"
            "b@example.org,Bob Brown,\n"
            f"c@example.org,Cy,{'x' * 101}\n")
    mailchimp = ("Email Address,First Name,Last Name\n"
                 "d@example.org,Siân,Evans\n")
    merge_tags = "Email,FNAME,LNAME\ne@example.org,Eve,Edwards\n"
    with app.sessions.begin() as s:
        report = import_csv(s, io.StringIO(ours))
        assert report.added == 2 and [line for line, _ in report.errors] == [4]
        assert "first name is longer than 100" in report.errors[0][1]
        import_csv(s, io.StringIO(mailchimp))
        import_csv(s, io.StringIO(merge_tags))
    with app.sessions() as s:
        people = {sub.email: (sub.name, sub.first_name) for sub in s.scalars(select(Subscriber))}
    assert people == {"a@example.org": ("Ann Abbott", "Ann"),
                      "b@example.org": ("Bob Brown", ""),
                      "d@example.org": ("Siân Evans", "Siân"),
                      "e@example.org": ("Eve Edwards", "Eve")}


def test_cli_add_takes_a_first_name(app: App) -> None:
    env = {"MAILER_DATABASE_URL": app.settings.database_url}
    result = CliRunner().invoke(cli, ["subscribers", "add", "f@example.org", "--name",
                                      "Fay Fox", "--first-name", "Fay"], env=env)
    assert result.exit_code == 0, result.output
    with app.sessions() as s:
        sub = s.scalar(select(Subscriber))
        assert sub is not None and (sub.name, sub.first_name) == ("Fay Fox", "Fay")
    exported = CliRunner().invoke(cli, ["subscribers", "export"], env=env)
    assert exported.output.splitlines()[1].endswith(",Fay,daily,")


def test_existing_readers_get_a_first_name_unless_it_would_be_a_guess(
        empty_database_url: str) -> None:
    """Revision 0006 gives readers the first word of their name, except a title or an
    initial: "Good morning, Dr" is worse than "Good morning"."""
    from alembic import command

    engine = make_engine(empty_database_url)
    try:
        config = alembic_config(empty_database_url)
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0005")
        table = sa.table("subscribers", sa.column("email", sa.String),
                         sa.column("name", sa.String), sa.column("status", sa.String),
                         sa.column("source", sa.String), sa.column("soft_bounces", sa.Integer),
                         sa.column("created_at", sa.DateTime), sa.column("updated_at",
                                                                           sa.DateTime))
        names = {"a@example.org": "Siân Evans", "b@example.org": "Dr Ann Abbott",
                 "c@example.org": "J. Smith", "d@example.org": "", "e@example.org": "Cllr Bo",
                 "f@example.org": "Rhodri"}
        now = sa.func.current_timestamp()
        with engine.begin() as conn:
            for email, name in names.items():
                conn.execute(table.insert().values(email=email, name=name, status="active",
                                                   source="t", soft_bounces=0,
                                                   created_at=now, updated_at=now))
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        with engine.connect() as conn:
            got = dict(conn.execute(sa.text("SELECT email, first_name FROM subscribers")).all())
    finally:
        engine.dispose()
    assert got == {"a@example.org": "Siân", "b@example.org": "", "c@example.org": "",
                   "d@example.org": "", "e@example.org": "", "f@example.org": "Rhodri"}


def test_the_sign_up_forms_first_name_is_the_first_name(app: App) -> None:
    client = create_app(app, {"TESTING": True, "MAILER_SEND_INLINE": True}).test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/subscribe").text)
    assert token
    answer = client.post("/subscribe", data={"email": "g@example.org", "name": " Gwen ",
                                             "hp": "", "csrf_token": token.group(1)})
    assert answer.status_code in (200, 303)
    with app.sessions() as s:
        sub = s.scalar(select(Subscriber))
        assert sub is not None and (sub.name, sub.first_name) == ("Gwen", "Gwen")
