"""Spam complaints per edition: which edition a complaint counts for, the rate and its levels
in `mailer editions stats` (JSON and plain), and the dashboard's alert.

Editions and their ledger rows are written directly (a thousand delivered copies, without
sending them); complaints come in through the webhooks' own path, `feedback.events.apply`,
which sets the reader's status and writes the event the attribution reads.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import insert, select

from mailer import departures
from mailer.app import App
from mailer.cli import cli
from mailer.clicks.report import edition_stats, sent_edition_stats
from mailer.feedback.events import apply
from mailer.models import (
    DAILY,
    DELIVERED,
    DFAILED,
    DRAFT,
    SENT,
    WITHDRAWN,
    Delivery,
    Edition,
    Subscriber,
)
from tests.support.seed import seed_subscribers
from tests.support.staff import signed_in_admin

MON, TUE, WED = date(2026, 11, 23), date(2026, 11, 24), date(2026, 11, 25)


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def ids(app: App) -> dict[str, int]:
    with app.sessions() as session:
        return {email: sub_id for email, sub_id in
                session.execute(select(Subscriber.email, Subscriber.id))}


def sent(app: App, day: date, states: dict[str, str]) -> Edition:
    """`day`'s daily edition, sent from 07:00 that day; `states`: each reader's ledger row."""
    readers = ids(app)
    with app.sessions.begin() as session:
        edition = Edition(kind=DAILY, edition_date=day, state=SENT, subject=f"News {day}",
                          window_start=at(day, 0) - timedelta(days=1), window_end=at(day, 6),
                          started_at=at(day, 7), finished_at=at(day, 7) + timedelta(minutes=5),
                          sent_count=sum(s == DELIVERED for s in states.values()))
        session.add(edition)
        session.flush()
        if states:
            session.execute(insert(Delivery), [
                {"edition_id": edition.id, "subscriber_id": readers[email], "email": email,
                 "state": state} for email, state in states.items()])
        session.expunge(edition)
    return edition


def complain(app: App, email: str, when: datetime) -> None:
    with app.sessions.begin() as session:
        assert apply(session, "postmark", f"complaint-{email}", "complaint", email,
                     {"RecordType": "SpamComplaint"}, when)


def unsubscribe(app: App, email: str, when: datetime) -> None:
    with app.sessions.begin() as session:
        assert apply(session, "postmark", f"unsubscribe-{email}", "unsubscribe", email, {}, when)


def test_a_complaint_counts_for_the_last_edition_sent_to_its_reader(app: App) -> None:
    a, b, c, d, e = seed_subscribers(app, 5)
    monday = sent(app, MON, {a: DELIVERED, b: DELIVERED, c: DELIVERED, d: DFAILED,
                             e: DELIVERED})
    tuesday = sent(app, TUE, {a: DELIVERED, b: WITHDRAWN})
    complain(app, c, at(MON, 12))  # Monday's window
    unsubscribe(app, e, at(MON, 8))
    complain(app, e, at(MON, 9))  # one reader lost, and one complaint
    complain(app, d, at(MON, 13))  # Monday's copy never reached them
    complain(app, a, at(TUE, 9))  # after Tuesday's send started: Tuesday's
    # Tuesday's copy was withdrawn (not sent them): the last copy they got was Monday's, as
    # for a daily reader complaining after a weekly digest they do not take started.
    complain(app, b, at(TUE, 10))

    with app.sessions() as session:
        lost = departures.attribute(session, [monday, tuesday])
        assert lost[monday.id] == departures.Departures(bounced=0, unsubscribed=4, complained=3)
        assert lost[tuesday.id] == departures.Departures(bounced=0, unsubscribed=1, complained=1)
        # One edition alone finds the later sends itself, and the same counts.
        assert departures.edition_complaints(session, monday) == 3
        assert departures.edition_complaints(session, tuesday) == 1
        # A complaint later than `now` (a fixed clock) is not counted yet.
        assert departures.attribute(session, [monday, tuesday],
                                    now=at(TUE, 9))[tuesday.id].complained == 1
        assert departures.attribute(session, [monday, tuesday],
                                    now=at(MON, 23))[tuesday.id].complained == 0


def test_a_departure_long_after_a_readers_last_copy_is_not_put_on_it(app: App) -> None:
    a, b = seed_subscribers(app, 2)
    monday = sent(app, MON, {a: DELIVERED, b: DELIVERED})
    complain(app, a, at(MON, 7) + departures.WINDOW - timedelta(minutes=1))
    complain(app, b, at(MON, 7) + departures.WINDOW + timedelta(minutes=1))
    with app.sessions() as session:
        assert departures.edition_complaints(session, monday) == 1


def test_nothing_delivered_is_a_rate_of_zero(app: App) -> None:
    (a,) = seed_subscribers(app, 1)
    edition = sent(app, MON, {a: DFAILED})
    complain(app, a, at(MON, 9))
    with app.sessions() as session:
        stats = edition_stats(session, edition)
    assert (stats["delivered"], stats["complaints"]) == (0, 0)
    assert (stats["complaint_rate"], stats["complaint_level"]) == (0.0, "ok")


@pytest.fixture
def thousand(app: App) -> tuple[list[str], Edition]:
    """A thousand readers, Wednesday's edition delivered to each."""
    readers = seed_subscribers(app, 1000)
    return readers, sent(app, WED, dict.fromkeys(readers, DELIVERED))


def editions_stats(app: App, *flags: str) -> str:
    result = CliRunner().invoke(cli, ["editions", "stats", WED.isoformat(), *flags],
                                env={"MAILER_DATABASE_URL": app.settings.database_url})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(("complaints", "rate", "level"), [
    (0, 0.0, "ok"), (1, 0.001, "ok"), (2, 0.002, "alert"), (3, 0.003, "alert"),
    (4, 0.004, "error")])
def test_the_json_gives_the_rate_and_its_level_at_the_limits(
        app: App, thousand: tuple[list[str], Edition], complaints: int, rate: float,
        level: str) -> None:
    readers, edition = thousand
    for email in readers[:complaints]:
        complain(app, email, at(WED, 9))
    figures = json.loads(editions_stats(app, "--json"))
    assert figures["delivered"] == 1000
    assert (figures["complaints"], figures["complaint_rate"],
            figures["complaint_level"]) == (complaints, rate, level)
    with app.sessions() as session:  # what the API and the console's edition page show
        assert sent_edition_stats(session, edition) == figures


def test_the_plain_output_says_what_the_rate_means(
        app: App, thousand: tuple[list[str], Edition]) -> None:
    readers, _ = thousand
    assert "spam complaints 0 (0.00% of delivered)\n" in editions_stats(app)
    for email in readers[:2]:
        complain(app, email, at(WED, 9))
    assert ("spam complaints 2 (0.20% of delivered, above 0.1%: watch it)\n"
            in editions_stats(app))
    for email in readers[2:4]:
        complain(app, email, at(WED, 10))
    assert ("spam complaints 4 (0.40% of delivered, above Gmail's and Yahoo's 0.3% limit)\n"
            in editions_stats(app))


@pytest.fixture
def staff(app: App) -> FlaskClient:
    return signed_in_admin(app)


def alert(page: str) -> str | None:
    found = re.search(r'<div class="notice ([\w-]+)" role="alert" id="complaint-alert">'
                      r"(.*?)</div>", page, re.S)
    if found is None:
        return None
    return f"{found.group(1)}: " + " ".join(re.sub(r"<[^>]+>", " ", found.group(2)).split())


def history_cell(page: str, label: str) -> str:
    row = page.split(f"{label}</a>")[1].split("</tr>")[0]
    cell = re.findall(r'<td class="num">(.*?)</td>', row, re.S)[-1]
    return " ".join(re.sub(r"<[^>]+>", "", cell).split())


def test_the_dashboard_alerts_on_the_latest_sent_editions_rate(
        app: App, thousand: tuple[list[str], Edition], staff: FlaskClient) -> None:
    readers, _ = thousand
    with app.sessions.begin() as session:  # today's, not sent yet: the alert is Wednesday's
        session.add(Edition(kind=DAILY, edition_date=WED + timedelta(days=1), state=DRAFT,
                            window_start=at(WED, 6), window_end=at(WED, 23)))
    complain(app, readers[0], at(WED, 9))
    page = staff.get("/staff/").get_data(as_text=True)
    assert alert(page) is None  # 0.1% is within the limit
    assert history_cell(page, "Wed 25 Nov 2026") == "1 (0.10%)"

    complain(app, readers[1], at(WED, 10))
    page = staff.get("/staff/").get_data(as_text=True)
    shown = alert(page)
    assert shown is not None and shown.startswith("notice-warn: Spam complaints are rising")
    assert "2 readers of the Wednesday 25 November edition reported it as spam: 0.20% " \
           "of the 1,000 copies delivered. That is above 0.1%" in shown
    assert history_cell(page, "Wed 25 Nov 2026") == "2 (0.20%, above 0.1%: watch it)"

    for email in readers[2:4]:
        complain(app, email, at(WED, 11))
    page = staff.get("/staff/").get_data(as_text=True)
    shown = alert(page)
    assert shown is not None and shown.startswith("notice-error: Spam complaints above")
    assert "0.40% of the 1,000 copies delivered. That is above 0.3%" in shown
    assert history_cell(page, "Wed 25 Nov 2026").startswith("4 (0.40%, above Gmail")
    edition_page = staff.get(f"/staff/editions/{WED.isoformat()}").get_data(as_text=True)
    assert re.search(r'<p id="complaints">Spam complaints <strong>4</strong>\s+'
                     r"\(0.40% of delivered, <strong>above Gmail", edition_page)


def test_a_newer_edition_within_the_limit_ends_the_alert(
        app: App, thousand: tuple[list[str], Edition], staff: FlaskClient) -> None:
    readers, _ = thousand
    for email in readers[:4]:
        complain(app, email, at(WED, 9))
    assert alert(staff.get("/staff/").get_data(as_text=True)) is not None
    sent(app, WED + timedelta(days=1), dict.fromkeys(readers[4:], DELIVERED))
    assert alert(staff.get("/staff/").get_data(as_text=True)) is None
