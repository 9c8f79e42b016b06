"""What click measurement keeps about readers, and how it goes: erasure and retention
(docs/privacy.md). Real components: a per-reader edition sent through the file outbox, its
links followed through the web app, on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer.app import App
from mailer.clicks.gifts import edition_gift_totals, import_gifts
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.erasure import erase
from mailer.models import Click, Delivery, Edition, Gift
from mailer.subscribers import find
from tests.support.clicks import client_for, flush, follow, sent_edition
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
    assert flush(client) == 2
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
    assert [g.subscriber_id for g in gifts] == [None, find_id(app, kept)]
    assert all(g.edition_id == edition for g in gifts)
    assert gone_id not in {g.subscriber_id for g in gifts}


def find_id(app: App, email: str) -> int:
    with app.sessions() as session:
        sub = find(session, email)
        assert sub is not None
        return sub.id
