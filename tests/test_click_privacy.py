"""What click measurement keeps about readers, and how it goes: erasure and retention
(docs/privacy.md). Real components: a per-reader edition sent through the file outbox, its
links followed through the web app, on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from mailer.app import App
from mailer.cli import cli
from mailer.clicks.fingerprint import PREFIX
from mailer.clicks.gifts import edition_gift_totals, import_gifts
from mailer.clicks.retention import Purged, purge
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.erasure import erase
from mailer.models import Click, Delivery, Edition, Gift, Meta, RateEvent
from mailer.subscribers import find
from tests.support.clicks import clicks_written, client_for, flush, follow, sent_edition
from tests.support.settings import make_settings

NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)


@pytest.fixture
def db_app(database_url: str, tmp_path: Path) -> Iterator[App]:
    app = App.create(make_settings(tmp_path, database_url=database_url), clock=FixedClock(NOW))
    init_db(app.engine)
    yield app
    app.close()


def per_reader_clicks(app: App, tmp_path: Path) -> int:
    """Send a per-reader edition to two readers, each of whom follows a story link and gives
    through the donate link; the edition's id."""
    day, copies = sent_edition(app, tmp_path, readers=2, click_tracking="per-reader")
    client = client_for(app)
    for n, copy in enumerate(copies):
        assert follow(client, copy.text_links[0], address=f"198.51.100.{n}").status_code == 302
    flush(client)
    assert clicks_written(app) == 2
    export = io.StringIO("date,amount,currency,utm_content,email\n" + "".join(
        f"{day},{5 + n},GBP,donate-{day:%Y%m%d}-standard,{copy.email}\n"
        for n, copy in enumerate(copies)))
    with app.sessions.begin() as session:
        assert import_gifts(session, export, at=app.clock.now()).linked == 2
        edition = session.scalar(select(Edition.id))
    assert edition is not None
    return edition


def test_erasure_unlinks_clicks_and_gifts_and_keeps_the_counts(db_app: App,
                                                               tmp_path: Path) -> None:
    app = db_app
    edition = per_reader_clicks(app, tmp_path)
    with app.sessions() as session:
        delivery = {d.email: d.id for d in session.scalars(select(Delivery))}
        totals = edition_gift_totals(session, edition)
    gone, kept = sorted(delivery)

    with app.sessions.begin() as session:
        sub = find(session, gone)
        assert sub is not None
        gone_id = sub.id
        result = erase(session, sub, at=app.clock.now())
    assert (result.clicks, result.gifts) == (1, 1)

    with app.sessions() as session:
        clicks = list(session.scalars(select(Click).where(Click.edition_id == edition)))
        gifts = list(session.scalars(select(Gift).order_by(Gift.amount_minor)))
        assert edition_gift_totals(session, edition) == totals  # figures do not change
    assert len(clicks) == 2
    assert sorted(c.delivery_id for c in clicks if c.delivery_id) == [delivery[kept]]
    with app.sessions() as session:  # the ledger keeps no name of theirs either
        row = session.get(Delivery, delivery[gone])
        assert row is not None and (row.email, row.name, row.first_name) == ("erased", "", "")
    assert [g.subscriber_id for g in gifts] == [None, find_id(app, kept)]
    assert all(g.edition_id == edition for g in gifts)
    assert gone_id not in {g.subscriber_id for g in gifts}


def find_id(app: App, email: str) -> int:
    with app.sessions() as session:
        sub = find(session, email)
        assert sub is not None
        return sub.id


def count(app: App, model: Any, *where: Any) -> int:
    with app.sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def salts(app: App) -> list[str]:
    with app.sessions() as session:
        return sorted(k.removeprefix(PREFIX) for k in session.scalars(
            select(Meta.key).where(Meta.key.like(f"{PREFIX}%"))))


def test_retention_rules(db_app: App, tmp_path: Path) -> None:
    """Each rule on its own clock: the 48 hours of fingerprints and salts (through the CLI, at
    MAILER_NOW), the retention days of clicks and of gifts' links, a day of rate-limit rows;
    a second run finds nothing left to do."""
    app = db_app
    edition = per_reader_clicks(app, tmp_path)
    old = NOW - timedelta(days=app.settings.click_retention_days, hours=1)
    with app.sessions.begin() as session:
        session.add(Click(edition_id=edition, position=0, at=old, fingerprint="f" * 32))
        session.add(Gift(reference="ref:old", given_on=old.date() - timedelta(days=1),
                         amount_minor=100,
                         currency="GBP", edition_id=edition, subscriber_id=1))
        session.add_all([RateEvent(key="subscribe-ip:198.51.100.0", at=NOW - timedelta(hours=25)),
                         RateEvent(key="subscribe-ip:198.51.100.0", at=NOW - timedelta(hours=23))])
    assert salts(app) == ["2026-11-26"]
    assert count(app, Click, Click.fingerprint.is_not(None)) == 3

    with app.sessions.begin() as session:
        first = purge(session, NOW + timedelta(hours=1), app.settings)
    assert first == Purged(clicks=1, fingerprints=0, salts=0, gift_links=1, rate_events=1)
    assert count(app, Click) == 2 and count(app, RateEvent) == 1
    assert count(app, Gift, Gift.subscriber_id.is_not(None)) == 2  # this edition's gifts
    assert count(app, Gift) == 3

    # Two days on, from the command line: the fingerprints and their salt go, the clicks stay.
    env = {"MAILER_DATABASE_URL": app.settings.database_url,
           "MAILER_NOW": (NOW + timedelta(hours=48, minutes=1)).isoformat()}
    result = CliRunner().invoke(cli, ["clicks", "purge"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout == ("deleted 0 old clicks, cleared 2 fingerprints, deleted 1 daily "
                             "salts, unlinked 0 old gifts from readers, deleted 1 rate-limit "
                             "rows, 0 old webhook deliveries and 0 stored API answers\n")
    assert salts(app) == []
    assert count(app, Click, Click.fingerprint.is_not(None)) == 0
    assert count(app, Click, Click.delivery_id.is_not(None)) == 2  # per-reader: until erased
    with app.sessions.begin() as session:
        assert purge(session, NOW + timedelta(hours=49), app.settings) == Purged()


def test_a_send_run_ends_with_the_purge(app: App, tmp_path: Path) -> None:
    """The daily housekeeping needs no job of its own: each send (cron's `mailer send`, the
    scheduler's run, the console's button) ends with it."""
    today = app.clock.now()
    with app.sessions.begin() as session:
        session.add(Meta(key=f"{PREFIX}{date(2026, 11, 20).isoformat()}", value="00" * 16))
        session.add(RateEvent(key="subscribe-ip:198.51.100.0", at=today - timedelta(days=3)))
    sent_edition(app, tmp_path, readers=1)
    assert salts(app) == [] and count(app, RateEvent) == 0
