"""Subscriber list: validation, CSV import/export, events, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from mailer.app import App
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.errors import MailerError
from mailer.models import ACTIVE, PENDING, Suppression
from mailer.subscribers import (
    InvalidAddress,
    add,
    clean_name,
    email_hash,
    export_csv_text,
    find,
    import_csv,
    normalise_email,
)
from tests.support.settings import make_settings


@pytest.fixture
def db_app(tmp_path: Path, database_url: str, clock: FixedClock):  # type: ignore[no-untyped-def]
    app = App.create(make_settings(tmp_path, database_url=database_url), clock=clock)
    init_db(app.engine)
    yield app
    app.close()


def test_normalise_and_refuse_bad_addresses() -> None:
    assert normalise_email("  Ann@Example.ORG ") == "ann@example.org"
    for bad in ["", "no-at-sign", "a@b", "x@y.com\r\nBcc: z@q.com", "a" * 400 + "@x.org",
                "two@@example.org"]:
        with pytest.raises(InvalidAddress):
            normalise_email(bad)
    assert clean_name("  Siân \t Jones ") == "Siân Jones"
    assert "\n" not in clean_name("Eve\r\nBcc: x@y")
    with pytest.raises(MailerError):
        clean_name("x" * 10_000)


def test_import_reports_bad_lines_and_keeps_good(db_app: App) -> None:
    csv_text = (
        "email,name,status\n"
        "ann@example.org,Ann,\n"          # line 2: active by default
        "not-an-address,Bob,\n"           # line 3: bad
        "cat@example.org,Cat,pending\n"   # line 4
        "dan@example.org,Dan,royalty\n"   # line 5: bad status
        "ANN@example.org,Ann again,\n"    # line 6: duplicate of line 2
        "eve@example.org,Eve,active,extra\n"  # line 7: too many fields
    )
    with db_app.sessions.begin() as s:
        report = import_csv(s, io.StringIO(csv_text))
    assert report.added == 2
    assert [line for line, _ in report.errors] == [3, 5, 7]
    assert dict(report.errors)[5] == ("unknown status 'royalty' (one of: pending, active, paused, "
                                      "unsubscribed, bounced, complained, or Mailchimp's "
                                      "subscribed)")
    with db_app.sessions.begin() as s:
        again = import_csv(s, io.StringIO(csv_text))
        assert again.added == 0  # idempotent
        assert find(s, "ann@example.org").status == ACTIVE  # type: ignore[union-attr]
        assert find(s, "cat@example.org").status == PENDING  # type: ignore[union-attr]


def test_import_mailchimp_export(db_app: App) -> None:
    csv_text = ("Email Address,First Name,Last Name,MEMBER_RATING\n"
                "sian@example.org,Siân,Jones,2\nbob@example.org,Bob,,1\nrené@example.org,René,,1\n")
    with db_app.sessions.begin() as s:
        report = import_csv(s, io.StringIO(csv_text))
        assert report.added == 2 and [line for line, _ in report.errors] == [4]
        assert find(s, "sian@example.org").name == "Siân Jones"  # type: ignore[union-attr]


def test_import_without_email_column_is_refused(db_app: App) -> None:
    with db_app.sessions.begin() as s, pytest.raises(MailerError, match="email"):
        import_csv(s, io.StringIO("name\nAnn\n"))


def test_export_round_trip_and_formula_defused(db_app: App) -> None:
    with db_app.sessions.begin() as s:
        add(s, "ann@example.org", name="=HYPERLINK(\"x\")")
        add(s, "bob@example.org", name="Bob", status=PENDING)
    with db_app.sessions() as s:
        text = export_csv_text(s)
    assert text.splitlines()[0] == ("email,name,status,created_at,confirmed_at,first_name,"
                                    "frequency,sections")
    assert "'=HYPERLINK" in text
    with db_app.sessions.begin() as s:
        assert import_csv(s, io.StringIO(text)).unchanged == 2


def test_suppressed_address_cannot_be_re_added(db_app: App) -> None:
    with db_app.sessions.begin() as s:
        s.add(Suppression(email_hash=email_hash("gone@example.org"), reason="erased"))
    with db_app.sessions.begin() as s:
        report = import_csv(s, io.StringIO("email\ngone@example.org\n"))
    assert report.added == 0 and report.errors and "erased" in report.errors[0][1]
