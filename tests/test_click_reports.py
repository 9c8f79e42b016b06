"""What staff read after "sent": `mailer editions stats` and the console's click report.

Real clicks through the real redirect after a real send (tests/support/clicks.py): readers
with browser headers, a gateway that follows every link, the trap among them; then the
figures through the CLI (JSON and text), the edition page, its CSV and the dashboard.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import select, update

from mailer.app import App
from mailer.cli import cli
from mailer.clicks.report import click_history
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.models import AuditEntry, Delivery, Edition, EditionLink, Gift
from tests.support.clicks import Copy, client_for, flush, follow, sent_edition
from tests.support.settings import make_settings
from tests.support.staff import signed_in_admin

GATEWAY = {"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                         "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"}


def clicked(app: App, tmp_path: Path, clock: FixedClock, mode: str) -> tuple[str, list[Copy]]:
    """Four readers; reader 0 clicks the lead twice, reader 1 the lead and the donate button,
    reader 2 the sign-up prompt; a gateway follows every link of reader 3's copy."""
    day, copies = sent_edition(app, tmp_path, readers=4, click_tracking=mode)
    with app.sessions() as s:
        kinds = {row.position: row.kind for row in s.scalars(select(EditionLink))}
    client = client_for(app)

    def link(copy: Copy, kind: str) -> str:
        from mailer.clicks.tokens import LinkSigner
        signer = LinkSigner("test-secret-key")
        return next(u for u in copy.text_links
                    if kinds[signer.read(u.rsplit("/r/", 1)[1]).position] == kind)

    for url in dict.fromkeys(copies[3].html_links):
        follow(client, url, headers=GATEWAY, address="192.0.2.1")
    plan = [(0, "article"), (0, "article"), (1, "article"), (1, "donate"), (2, "signup")]
    for reader, kind in plan:
        clock.advance(minutes=5)
        follow(client, link(copies[reader], kind), address=f"198.51.100.{reader}")
    flush(client)
    return day.isoformat(), copies


def stats(app: App, day: str, *flags: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["editions", "stats", day, *flags],
                                env={"MAILER_DATABASE_URL": app.settings.database_url})
    return result.exit_code, result.output


@pytest.fixture
def db_app(database_url: str, tmp_path: Path, clock: FixedClock) -> Iterator[App]:
    """An App on SQLite and on PostgreSQL: the report's grouped queries run on both."""
    application = App.create(make_settings(tmp_path, database_url=database_url), clock=clock)
    init_db(application.engine)
    yield application
    application.close()


@pytest.mark.parametrize("mode", ["aggregate", "per-reader"])
def test_stats_json_counts_readers_and_sets_scanners_apart(db_app: App, tmp_path: Path,
                                                           clock: FixedClock, mode: str) -> None:
    app = db_app
    day, _ = clicked(app, tmp_path, clock, mode)
    code, out = stats(app, day, "--json")
    assert code == 0, out
    s = json.loads(out)
    assert s["delivered"] == 4
    assert s["clicks_human"] == 5
    assert s["clicks_total"] == s["clicks_human"] + s["clicks_filtered"]
    assert s["clicks_filtered"] >= 10 and set(s["filtered_by"]) == {"trap"}
    assert sum(s["filtered_by"].values()) == s["clicks_filtered"]
    assert s["donate_clicks_human"] == 1 and s["signup_clicks_human"] == 1
    if mode == "per-reader":  # three readers of four clicked
        assert (s["click_rate_basis"], s["click_rate"], s["unique_clickers"]) == (
            "unique_clickers", 0.75, 3)
    else:
        assert (s["click_rate_basis"], s["click_rate"]) == ("clicks", 1.25)
    top = s["links"][0]
    assert top["kind"] == "article" and top["clicks_human"] == 3
    assert "utm_" not in top["url"] and top["title"]
    assert [row["clicks_human"] for row in s["links"]] == sorted(
        (row["clicks_human"] for row in s["links"]), reverse=True)
    assert {row["kind"] for row in s["links"]} == {"article", "donate", "signup", "archive"}
    assert sum(row["clicks_human"] for row in s["links"]) == s["clicks_human"]
    assert s["gifts"] == {"count": 0, "amounts": {}}
    assert "opens" not in s
    with app.sessions() as session:  # the dashboard's series agrees with the report
        assert [astuple(d) for d in click_history(session, clock.today(app.settings.tz))] == [
            (clock.today(app.settings.tz), 4, s["click_rate"], s["click_rate_basis"], 1)]
    code, text = stats(app, day)
    assert code == 0 and "5 by readers" in text and "donate clicks 1" in text
    assert f"{s['clicks_total']} in all" in text


def test_an_unknown_day_is_one_line_and_exit_1(app: App) -> None:
    code, out = stats(app, "2026-01-01")
    assert (code, out.strip().count("\n")) == (1, 0) and "2026-01-01" in out, out


def test_history_leaves_out_editions_sent_without_click_tracking(
        app: App, tmp_path: Path, clock: FixedClock) -> None:
    clicked(app, tmp_path, clock, "aggregate")
    today = clock.today(app.settings.tz)
    with app.sessions.begin() as session:
        assert [d.click_rate for d in click_history(session, today)] == [1.25]
        edition = session.scalars(select(Edition)).one()
        edition.click_tracking = "off"  # (as if rendered with click_tracking = "off")
        session.flush()
        assert click_history(session, today) == []


def test_opens_are_apart_and_labelled_unreliable_and_gifts_are_counted(
        app: App, tmp_path: Path, clock: FixedClock, staff: FlaskClient) -> None:
    day, copies = sent_edition(app, tmp_path, readers=2, open_tracking=True)
    pixels = [next(u for u in copy.html_links if "/o/" in u) for copy in copies]
    client = client_for(app)
    for reader, pixel in enumerate(pixels):
        clock.advance(minutes=3)
        assert follow(client, pixel, address=f"198.51.100.{reader}").status_code == 200
    clock.advance(minutes=3)
    follow(client, copies[0].text_links[0], address="198.51.100.0")
    flush(client)
    with app.sessions.begin() as session:
        edition = session.scalars(select(Edition)).one()
        session.add_all([
            Gift(reference=f"g{n}", given_on=clock.today(app.settings.tz), amount_minor=minor,
                 currency="GBP", edition_id=edition.id) for n, minor in enumerate((1000, 550))])
    code, out = stats(app, day.isoformat(), "--json")
    s = json.loads(out)
    assert (s["opens"], s["opens_reliable"], s["clicks_total"], s["clicks_human"]) == (
        2, False, 1, 1)
    assert s["gifts"] == {"count": 2, "amounts": {"GBP": "15.50"}}
    assert "unreliable" in stats(app, day.isoformat())[1]
    page = staff.get(f"/staff/editions/{day.isoformat()}").get_data(as_text=True)
    assert "Opens: 2 (unreliable" in page
    assert re.search(r"gifts attributed\s*<strong>2</strong>, 15.50 GBP", page)


@pytest.fixture
def staff(app: App) -> FlaskClient:
    return signed_in_admin(app, MAILER_SEND_INLINE=True)


def test_the_console_shows_the_ranking_the_csv_and_the_30_days(
        app: App, tmp_path: Path, clock: FixedClock, staff: FlaskClient) -> None:
    day, _ = clicked(app, tmp_path, clock, "aggregate")
    page = staff.get(f"/staff/editions/{day}").get_data(as_text=True)
    assert "What readers clicked" in page and 'id="link-clicks"' in page
    assert "Donate button <strong>1</strong>" in page
    assert re.search(r"(\d+) filtered as scanners or previews\s*\(trap \1\);\s*\d+ in all", page)
    rows = re.findall(r'<td class="num">(\d+)</td>\s*<td><svg class="bar"', page)
    assert rows[0] == "3" and [int(r) for r in rows] == sorted(map(int, rows), reverse=True)
    answer = staff.get(f"/staff/editions/{day}/clicks.csv")
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    table = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert table[0]["rank"] == "1" and table[0]["clicks_human"] == "3"
    assert staff.get("/staff/editions/2026-01-01/clicks.csv").status_code == 404
    # An aggregate edition's clicks name nobody: no list of readers.
    assert staff.get(f"/staff/editions/{day}/clickers.csv").status_code == 404
    dashboard = staff.get("/staff/").get_data(as_text=True)
    assert 'id="click-history"' in dashboard and "125.0%" in dashboard


def test_a_title_that_is_a_formula_is_defused_in_the_csv(
        app: App, tmp_path: Path, clock: FixedClock, staff: FlaskClient) -> None:
    day, _ = clicked(app, tmp_path, clock, "aggregate")
    with app.sessions.begin() as s:
        row = s.scalars(select(EditionLink).where(EditionLink.kind == "article")).first()
        assert row is not None
        row.title = '=HYPERLINK("https://evil.example/","x")'
        assert s.scalar(select(Delivery.id)) is not None
    text = staff.get(f"/staff/editions/{day}/clicks.csv").get_data(as_text=True)
    assert "'=HYPERLINK" in text and ",=HYPERLINK" not in text


def test_a_send_stopped_part_way_still_shows_what_its_readers_clicked(
        app: App, tmp_path: Path, clock: FixedClock, staff: FlaskClient) -> None:
    day, _ = clicked(app, tmp_path, clock, "aggregate")
    with app.sessions.begin() as s:
        s.scalars(select(Edition)).one().state = "cancelled"
    page = staff.get(f"/staff/editions/{day}").get_data(as_text=True)
    assert "What readers clicked" in page and "Donate button <strong>1</strong>" in page
    with app.sessions.begin() as s:  # stopped before anyone received it: nothing to report
        s.execute(update(Delivery).values(state="failed"))
    assert "What readers clicked" not in staff.get(f"/staff/editions/{day}").get_data(
        as_text=True)


def test_per_reader_editions_say_who_clicked_to_admins_only(
        app: App, tmp_path: Path, clock: FixedClock, staff: FlaskClient) -> None:
    """Per-reader measurement exists for re-engagement: an admin downloads the readers who
    clicked (audited); an aggregate edition's clicks name nobody (404)."""
    day, _ = clicked(app, tmp_path, clock, "per-reader")
    page = staff.get(f"/staff/editions/{day}").get_data(as_text=True)
    assert "Download the readers who clicked" in page
    answer = staff.get(f"/staff/editions/{day}/clickers.csv")
    assert answer.status_code == 200
    table = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert [(r["email"], r["clicks_human"]) for r in table] == [
        ("reader0@example.org", "2"), ("reader1@example.org", "2"), ("reader2@example.org", "1")]
    assert "reader3@example.org" not in answer.get_data(as_text=True)  # the gateway's copy
    with app.sessions() as s:
        assert "clickers-exported" in set(s.scalars(select(AuditEntry.action)))
