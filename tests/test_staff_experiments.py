"""The console's experiment pages: donation asks over a period (pause, resume) and an
edition's subject test (plan the lines, see the groups and the decision)."""
# ruff: noqa: F811 - the console's fixtures come from tests/test_staff_web.py by import

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import select

from mailer.app import App
from mailer.asks import live
from mailer.models import Edition
from mailer.pipeline import run_send
from tests.support.clicks import client_for, flush, follow, read_outbox
from tests.support.seed import seed_subscribers, with_feed
from tests.test_staff_web import (  # noqa: F401 - fixtures
    DAY,
    admin,
    app,
    audit_actions,
    client,
    editor,
    post,
    text,
    token,
    web,
)

ASKS = [{"name": "monthly", "copy": "Ask A: every month.", "amount": "£10 a month"},
        {"name": "one-off", "copy": "Ask B: once.", "amount": "£25", "label": "Give"}]


def test_asks_page_shows_each_ask_over_a_period_and_admins_pause_one(
        admin: FlaskClient, app: App, tmp_path: Path) -> None:
    app.settings = app.settings.replace(donation_asks=ASKS, click_tracking="aggregate",
                                        spamassassin_command="/nonexistent/spamassassin")
    with_feed(app, tmp_path)
    app.configured = app.settings  # as if from the configuration file
    seed_subscribers(app, 40)
    assert run_send(app, DAY).status == "sent"
    readers = client_for(app)
    copies = read_outbox(tmp_path / "outbox")
    clicked = 0
    for n, copy in enumerate(copies[:12]):
        line = next(x for x in copy.text.splitlines() if x.startswith(("Donate £10", "Give £25")))
        assert follow(readers, line.split(": ", 1)[1], address=f"198.51.100.{n + 1}"
                      ).status_code == 302
        clicked += 1
        app.clock.advance(minutes=3)  # type: ignore[attr-defined]
    flush(readers)
    page = text(admin.get("/staff/asks"))
    assert "Donation asks" in page and "monthly" in page and "one-off" in page
    rows = page.split('id="asks"', 1)[1].split("</table>", 1)[0]
    shown = [int(cell.split("<", 1)[0]) for cell in rows.split('<td class="num">')[1:]]
    # (per row: readers shown, donate clicks, gifts)
    assert shown[0] + shown[3] == 40 and shown[1] + shown[4] == clicked
    assert "No ask is better yet" in page
    later = DAY + timedelta(days=1)
    before = text(admin.get(f"/staff/asks?since={later}&until={later}"))
    assert before.count('<td class="num">0</td>') == 6  # a period with no edition
    assert admin.post("/staff/asks/one-off/pause", data={
        "csrf_token": token(admin, "/staff/asks")}).status_code == 303
    assert [a.name for a in live(app.settings.asks)] == ["monthly"]
    assert "ask-paused" in audit_actions(app)
    assert "paused" in text(admin.get("/staff/asks"))
    assert "one-off" in text(admin.get("/staff/settings"))  # listed with the settings
    post(admin, "/staff/asks/one-off/resume")
    assert [a.name for a in live(app.settings.asks)] == ["monthly", "one-off"]


def test_editors_see_the_asks_but_cannot_pause_them(editor: FlaskClient, app: App) -> None:
    app.settings = app.settings.replace(donation_asks=ASKS)
    assert ">Pause<" not in text(editor.get("/staff/asks"))
    response = editor.post("/staff/asks/one-off/pause",
                           data={"csrf_token": token(editor, "/staff/asks")})
    assert response.status_code == 403
    assert len(live(app.settings.asks)) == 2


def test_plan_a_subject_test_and_see_its_groups_and_decision(
        admin: FlaskClient, app: App, tmp_path: Path) -> None:
    app.settings = app.settings.replace(click_tracking="aggregate",
                                        spamassassin_command="/nonexistent/spamassassin")
    with_feed(app, tmp_path)
    seed_subscribers(app, 600)
    post(admin, f"/staff/editions/{DAY}/build")
    post(admin, f"/staff/editions/{DAY}/subject-test", line1="Today: {lead_title}", line2="",
         line3="")
    with app.sessions() as session:
        edition = session.scalar(select(Edition))
        assert edition is not None and edition.subject_variants == ["Today: {lead_title}"]
    assert "subject-test-planned" in audit_actions(app)
    page = text(admin.get(f"/staff/editions/{DAY}"))
    assert 'value="Today: {lead_title}"' in page
    too_many = post(admin, f"/staff/editions/{DAY}/subject-test", line1="a\nb")
    assert too_many.status_code == 303  # type: ignore[attr-defined]
    assert run_send(app, DAY, test_phase=True).status == "testing"
    page = text(admin.get(f"/staff/editions/{DAY}"))
    assert 'id="subject-groups"' in page and "The test groups have their email" in page
    assert page.count("<td class=\"num\">60</td>") == 2  # delivered, per group
    app.clock.advance(minutes=60)  # type: ignore[attr-defined]
    assert run_send(app, DAY).status == "sent"
    page = text(admin.get(f"/staff/editions/{DAY}"))
    assert "Decided:" in page and "winner" in page and "Rule: one-sided" in page


def test_admins_add_and_change_asks_in_the_console(admin: FlaskClient, app: App) -> None:
    app.settings = app.settings.replace(donation_asks=ASKS)
    app.configured = app.settings
    post(admin, "/staff/asks", name="plea", copy="Ask C: the  site needs you.", amount="£5",
         label="Give", position="after-lead")
    asks = {a.name: a for a in app.settings.asks}
    assert set(asks) == {"monthly", "one-off", "plea"}
    assert (asks["plea"].copy, asks["plea"].button, asks["plea"].position) == (
        "Ask C: the site needs you.", "Give £5", "after-lead")
    post(admin, "/staff/asks", name="monthly", copy="Ask A, reworded.", amount="£12 a month")
    asks = {a.name: a for a in app.settings.asks}
    assert asks["monthly"].copy == "Ask A, reworded." and asks["monthly"].amount == "£12 a month"
    refused = post(admin, "/staff/asks", name="no spaces allowed", copy="x")
    assert refused.status_code == 303  # type: ignore[attr-defined]
    assert len(app.settings.asks) == 3  # nothing saved
    assert audit_actions(app).count("ask-added") == 1
    assert "ask-changed" in audit_actions(app)
    # Stored like any override: a new process sees them, the Settings page does not list them.
    fresh = App.create(app.configured)
    try:
        assert [a.name for a in fresh.settings.asks] == ["monthly", "one-off", "plea"]
    finally:
        fresh.close()
    assert 'name="donation_asks"' not in text(admin.get("/staff/settings"))


def test_editors_cannot_change_asks(editor: FlaskClient, app: App) -> None:
    response = editor.post("/staff/asks", data={"csrf_token": token(editor, "/staff/asks"),
                                                "name": "x", "copy": "y"})
    assert response.status_code == 403
    assert [a.name for a in app.settings.asks] == [app.settings.donation_ask]
