"""`mailer donations import`: the donation platform's export, attributed to editions.

Real components: the CLI through click's runner, on a SQLite file and on PostgreSQL, over an
edition built by `build_edition` (its donate link is what a gift's utm_content names)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from mailer.app import App
from mailer.cli import cli
from mailer.clicks.gifts import edition_gift_totals, parse_amount, parse_date
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.edition import build_edition
from mailer.models import ACTIVE, DELIVERED, QUEUED, Delivery, Edition, Gift, Subscriber
from tests.support.seed import add_article
from tests.support.settings import make_settings

NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
ASK = "donate-20261126-standard"  # the donate link's utm_content of the edition below


def make_world(database_url: str, tmp_path: Path, tracking: str = "per-reader") -> App:
    """An App on `database_url` with today's edition built (per-reader: gifts can link)."""
    app = App.create(make_settings(tmp_path, database_url=database_url,
                                   click_tracking=tracking), clock=FixedClock(NOW))
    init_db(app.engine)
    add_article(app, "a-story")
    build_edition(app, date(2026, 11, 26))
    return app


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[App]:
    app = make_world(database_url, tmp_path)
    yield app
    app.close()


@pytest.fixture
def sqlite_world(tmp_path: Path) -> Iterator[App]:
    """For what is about the file, not the database."""
    app = make_world(f"sqlite:///{tmp_path / 'test.db'}", tmp_path)
    yield app
    app.close()


def edition_id(app: App) -> int:
    with app.sessions() as session:
        found = session.scalar(select(Edition.id))
    assert found is not None
    return found


def deliver(app: App, email: str, state: str = DELIVERED) -> int:
    """A subscriber with a ledger row for the edition in `state`; their id."""
    edition = edition_id(app)
    with app.sessions.begin() as session:
        sub = Subscriber(email=email, status=ACTIVE, source="test")
        session.add(sub)
        session.flush()
        session.add(Delivery(edition_id=edition, subscriber_id=sub.id, email=email,
                             state=state))
        return sub.id


def run_import(app: App, path: Path) -> Result:
    return CliRunner().invoke(cli, ["donations", "import", str(path)],
                              env={"MAILER_DATABASE_URL": app.settings.database_url})


def gifts(app: App) -> list[Gift]:
    with app.sessions() as session:
        return list(session.scalars(select(Gift).order_by(Gift.id)))


def test_import_attributes_reports_bad_lines_and_is_idempotent(world: App, tmp_path: Path,
                                                              ) -> None:
    export = tmp_path / "export.csv"
    # The platform's own spelling of the headers, extra columns, a byte order mark.
    export.write_text(
        "Donor Name,Date,Amount,Currency,UTM_Content,Campaign\n"
        f"A Donor,2026-11-26,12.50,GBP,{ASK},x\n"          # 2
        f"B Donor,2026-11-26,£5,gbp,{ASK},x\n"             # 3
        f"C Donor,2026-11-26,£5,GBP,{ASK},x\n"             # 4: same as 3, another gift
        "D Donor,26/11/2026,\"1,000.00\",GBP,,x\n"          # 5: not from an edition
        f"E Donor,2026-11-26,12;50,GBP,{ASK},x\n"          # 6: bad amount
        f"F Donor,2026-02-30,10,GBP,{ASK},x\n"             # 7: bad date
        f"G Donor,2026-11-26,10,pounds,{ASK},x\n"          # 8: bad currency
        f"H Donor,2026-11-26,-10,GBP,{ASK},x\n"            # 9: a refund
        f"I Donor,2026-11-26,€10,GBP,{ASK},x\n"            # 10: symbol and column disagree
        f"J Donor,2026-11-26T09:30:00Z,20,EUR,{ASK},x\n",  # 11
        encoding="utf-8-sig")

    first = run_import(world, export)
    assert first.exit_code == 1
    assert first.stdout.splitlines() == [
        "added 5 gifts (4 attributed to an edition, 0 to a reader), already imported 0, "
        "rejected 5"]
    errors = first.stderr.splitlines()
    assert [e.split(":")[0] for e in errors[:5]] == [f"line {n}" for n in range(6, 11)]
    assert "12;50" in errors[0] and "2026-02-30" in errors[1] and "pounds" in errors[2]
    assert "refund" in errors[3] and "EUR" in errors[4]
    assert errors[5].startswith("error: 5 rows rejected")

    stored = gifts(world)
    assert [(g.given_on, g.amount_minor, g.currency) for g in stored] == [
        (date(2026, 11, 26), 1250, "GBP"), (date(2026, 11, 26), 500, "GBP"),
        (date(2026, 11, 26), 500, "GBP"), (date(2026, 11, 26), 100000, "GBP"),
        (date(2026, 11, 26), 2000, "EUR")]
    ed = edition_id(world)
    assert [g.edition_id for g in stored] == [ed, ed, ed, None, ed]
    assert len({g.reference for g in stored}) == 5
    with world.sessions() as session:
        assert edition_gift_totals(session, ed) == (
            4, {"EUR": Decimal("20.00"), "GBP": Decimal("22.50")})
        assert edition_gift_totals(session, ed + 1) == (0, {})

    again = run_import(world, export)
    assert again.exit_code == 1  # the same bad rows, still reported
    assert again.stdout.startswith("added 0 gifts (0 attributed to an edition, 0 to a reader), "
                                   "already imported 5, rejected 5")
    assert len(gifts(world)) == 5

    # A later export that repeats these gifts and adds a third £5 one: only that one is new.
    later = tmp_path / "later.csv"
    later.write_text("date,amount,currency,utm_content\n"
                     + f"2026-11-26,5.00,GBP,{ASK}\n" * 3, encoding="utf-8")
    result = run_import(world, later)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("added 1 gifts (1 attributed")
    assert "already imported 2, rejected 0" in result.stdout


def test_per_reader_gift_links_a_delivered_reader_and_stores_no_address(world: App,
                                                                        tmp_path: Path) -> None:
    reader = deliver(world, "reader@example.org")
    deliver(world, "queued@example.org", QUEUED)  # never sent the edition
    export = tmp_path / "export.csv"
    export.write_text(
        "date,amount,currency,utm_content,email\n"
        f"2026-11-26,10,GBP,{ASK}, Reader@Example.org \n"   # normalised as subscribers are
        f"2026-11-26,11,GBP,{ASK},queued@example.org\n"
        f"2026-11-26,12,GBP,{ASK},stranger@example.org\n"
        f"2026-11-26,13,GBP,{ASK},not an address\n"
        "2026-11-26,14,GBP,donate-20261125-standard,reader@example.org\n", encoding="utf-8")
    result = run_import(world, export)
    assert result.exit_code == 0, result.output
    assert "added 5 gifts (4 attributed to an edition, 1 to a reader)" in result.stdout
    assert [g.subscriber_id for g in gifts(world)] == [reader, None, None, None, None]
    for gift in gifts(world):
        assert "@" not in " ".join(str(v) for v in vars(gift).values())
    assert "example.org" not in result.output


def test_aggregate_edition_links_nobody(database_url: str, tmp_path: Path) -> None:
    app = make_world(database_url, tmp_path, "aggregate")
    try:
        deliver(app, "reader@example.org")
        export = tmp_path / "export.csv"
        export.write_text(f"date,amount,currency,utm_content,email\n"
                          f"2026-11-26,10,GBP,{ASK},reader@example.org\n", encoding="utf-8")
        assert run_import(app, export).exit_code == 0
        assert [(g.edition_id, g.subscriber_id) for g in gifts(app)] == [(edition_id(app), None)]
    finally:
        app.close()


def test_excel_windows_1252_and_the_platforms_own_ids(sqlite_world: App, tmp_path: Path,
                                                       ) -> None:
    world = sqlite_world
    export = tmp_path / "excel.csv"
    export.write_bytes(
        ("Reference,Date,Amount,Currency,utm_content\r\n"
         f"tx-1,26/11/2026 08:15,£7.50,GBP,{ASK}\r\n"
         f"tx-2,26/11/2026 08:15,£7.50,GBP,{ASK}\r\n"
         f"tx-1,26/11/2026 08:15,£7.50,GBP,{ASK}\r\n"   # the same id twice in one file
         f",26/11/2026,£1,GBP,{ASK}\r\n").encode("cp1252"))
    result = run_import(world, export)
    assert result.exit_code == 1
    assert "added 2 gifts" in result.stdout
    assert result.stderr.splitlines()[:2] == [
        "line 4: reference 'tx-1' repeats line 2",
        "line 5: no reference (the file has a reference column)"]
    assert [(g.reference, g.amount_minor) for g in gifts(world)] == [("ref:tx-1", 750),
                                                                      ("ref:tx-2", 750)]
    assert "already imported 2" in run_import(world, export).stdout
    assert len(gifts(world)) == 2


def test_a_file_without_the_columns_imports_nothing(sqlite_world: App, tmp_path: Path,
                                                   ) -> None:
    world = sqlite_world
    export = tmp_path / "export.csv"
    export.write_text("date,amount,email\n2026-11-26,10,a@example.org\n", encoding="utf-8")
    result = run_import(world, export)
    assert result.exit_code == 1
    assert result.stderr.strip() == ("error: the CSV has no currency, utm_content column "
                                     "(it needs date, amount, currency, utm_content; "
                                     "email is optional)")
    picture = tmp_path / "picture.csv"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert run_import(world, picture).exit_code == 1
    assert gifts(world) == []


@pytest.mark.parametrize(("text", "currency", "expected"), [
    ("12.50", "GBP", (1250, "")), ("£12.50", "", (1250, "GBP")), ("12.5", "GBP", (1250, "")),
    (" 1,250 ", "GBP", (125000, "")), ("€0.01", "EUR", (1, "EUR")), ("$3", "USD", (300, "")),
    ("9.99 GBP", "GBP", (999, "")), ("0.07", "GBP", (7, "")),
])
def test_amounts_are_exact(text: str, currency: str, expected: tuple[int, str]) -> None:
    assert parse_amount(text, currency) == expected


@pytest.mark.parametrize("text", ["", "12,50", "1.005", "abc", "0", "-3", "1e3", "£", "12.50.1"])
def test_amounts_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(text, "GBP")


def test_dates() -> None:
    assert parse_date("2026-11-26") == (date(2026, 11, 26), "2026-11-26")
    assert parse_date("26/11/2026 08:15") == (date(2026, 11, 26), "2026-11-26T08:15:00")
    assert parse_date("2026-11-26T23:30:00+00:00")[0] == date(2026, 11, 26)
    for bad in ("11/26/2026", "yesterday", "2026-13-01"):
        with pytest.raises(ValueError):
            parse_date(bad)


def test_help() -> None:
    result = CliRunner().invoke(cli, ["donations", "import", "--help"])
    assert result.exit_code == 0 and "utm_content" in result.output
