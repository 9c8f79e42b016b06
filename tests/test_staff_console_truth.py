"""The console tells the truth about what happens next: what will trigger the send (the
scheduler's heartbeat, cron's last `mailer send`, or nothing, with the fix), the next edition
to prepare, and a send in words from the moment it starts to its plain-language end."""
# ruff: noqa: F811 - the console's fixtures come from tests/test_staff_web.py by import

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import overrides, triggers
from mailer.app import App
from mailer.cli import cli
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.models import EditionArticle, Meta
from mailer.web.staff import send
from tests.support.settings import make_settings
from tests.test_staff_web import (  # noqa: F401 - fixtures
    DAY,
    admin,
    app,
    client,
    fed,
    post,
    text,
    token,
    web,
)


def status_json(app: App) -> dict[str, object]:
    env = {"MAILER_DATABASE_URL": app.settings.database_url, "MAILER_SECRET_KEY": "k",
           "MAILER_DSN": app.settings.dsn, "MAILER_NOW": app.clock.now().isoformat()}
    result = CliRunner().invoke(cli, ["status", "--json"], env=env)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_the_dashboard_and_status_say_what_will_trigger_the_send(admin: FlaskClient,
                                                                 app: App) -> None:
    page = text(admin.get("/staff/"))
    assert "Nothing will send it" in page and "mailer scheduler" in page
    report = status_json(app)
    assert report["trigger"]["kind"] == "nothing"  # type: ignore[index]
    assert any("nothing will trigger the next send" in w for w in report["warnings"])  # type: ignore[union-attr]
    triggers.beat(app.sessions, app.clock.now())
    page = text(admin.get("/staff/"))
    assert "By the scheduler (running on" in page and "Nothing will send it" not in page
    assert status_json(app)["trigger"]["kind"] == "scheduler"  # type: ignore[index]
    now = app.clock.now()
    triggers.beat(app.sessions, now - timedelta(minutes=10))  # the daemon stopped since
    assert "Nothing will send it" in text(admin.get("/staff/"))
    triggers.note_send(app.sessions, now - timedelta(days=3))  # cron, on Monday
    page = text(admin.get("/staff/"))
    assert "By cron: the last <code>mailer send</code> ran" in page
    triggers.note_send(app.sessions, now - timedelta(days=5))
    assert "Nothing will send it" in text(admin.get("/staff/"))


def test_a_real_mailer_send_leaves_the_trace_cron_is_known_by(fed: App) -> None:
    env = {"MAILER_DATABASE_URL": fed.settings.database_url, "MAILER_SECRET_KEY": "k",
           "MAILER_DSN": fed.settings.dsn, "MAILER_FEED_URL": fed.settings.feed_url,
           "MAILER_NOW": fed.clock.now().isoformat(),
           "MAILER_SPAMASSASSIN_COMMAND": "/nonexistent/spamassassin"}
    assert CliRunner().invoke(cli, ["send"], env=env).exit_code == 0
    with fed.sessions() as session:
        assert triggers.current(session, fed.settings, fed.clock.now()).kind == triggers.CRON


@pytest.mark.postgres
def test_a_first_note_raced_by_another_process_updates_its_row(
        pg_url: str, tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `mailer send` started at one instant on a new PostgreSQL database both find no
    note: the one whose insert loses must update the other's row, not fail the send. (On
    SQLite the first one's write transaction holds the database from its look.)"""
    app = App.create(make_settings(tmp_path, database_url=pg_url), clock=clock)
    init_db(app.engine)
    now = clock.now()
    looked = Session.get

    def get_then_raced(self: Session, entity: Any, ident: Any, **kwargs: Any) -> Any:
        found = looked(self, entity, ident, **kwargs)
        if found is None and entity is Meta:  # the other process writes the row now
            with app.sessions.begin() as other:
                other.add(Meta(key=ident, value="earlier elsewhere", updated_at=now))
        return found

    try:
        monkeypatch.setattr(Session, "get", get_then_raced)
        triggers.note_send(app.sessions, now)
        monkeypatch.undo()
        with app.sessions() as session:
            row = session.get(Meta, triggers.LAST_SEND)
            assert row is not None and row.value.startswith(now.isoformat())
    finally:
        app.close()


def test_prepare_the_next_edition_from_the_dashboard_and_the_edition(admin: FlaskClient) -> None:
    # Thursday 26 November: the next edition is Friday's, and Friday's next is Monday's.
    assert 'href="/staff/editions/2026-11-27" id="next-edition-link"' in text(admin.get("/staff/"))
    friday = text(admin.get("/staff/editions/2026-11-27"))
    assert 'href="/staff/editions/2026-11-30" id="next-edition-link"' in friday
    assert "Prepare the next edition" in friday


def test_progress_says_starting_then_tells_the_finished_send_in_words(
        admin: FlaskClient, fed: App, web: Flask) -> None:
    fed.settings = fed.settings.replace(spamassassin_command="/nonexistent/spamassassin")
    registry = send.registry(web)
    registry.jobs[("daily", DAY)] = send.SendJob(day=DAY, actor="admin", kind="send")
    starting = text(admin.get(f"/staff/editions/{DAY}/progress"))
    assert "Starting: preparing 5 recipients…" in starting and "Sent 0 of 0" not in starting
    registry.jobs.clear()
    post(admin, f"/staff/editions/{DAY}/build")
    assert post(admin, f"/staff/editions/{DAY}/send").status_code == 303  # type: ignore[attr-defined]
    done = text(admin.get(f"/staff/editions/{DAY}/progress"))
    assert "Sent to 5 readers by " in done and "(it took " in done
    assert "failed 0" not in done  # not the command line's summary


def test_send_time_has_a_time_picker_and_send_days_a_box_a_day(admin: FlaskClient,
                                                                app: App) -> None:
    page = text(admin.get("/staff/settings"))
    assert 'id="send_time" name="send_time" type="time"' in page
    boxes = re.findall(r'name="send_day" value="(\w+)"( checked)?', page)
    assert [(day, bool(on)) for day, on in boxes] == [
        ("mon", True), ("tue", True), ("wed", True), ("thu", True), ("fri", True),
        ("sat", False), ("sun", False)]
    form = {key: overrides.current_value(app.settings, key) for key in overrides.KEYS}
    form.pop("send_days")
    same = admin.post("/staff/settings", data={
        **form, "csrf_token": token(admin, "/staff/"), "send_days_picker": "1",
        "send_day": ["mon", "tue", "wed", "thu", "fri"]})
    assert same.status_code == 303 and app.settings.send_days == "mon-fri"
    with app.sessions() as session:
        assert session.get(Meta, "setting:send_days") is None  # nothing changed
    changed = admin.post("/staff/settings", data={
        **form, "csrf_token": token(admin, "/staff/"), "send_days_picker": "1",
        "send_day": ["mon", "wed", "fri"]})
    assert changed.status_code == 303 and app.settings.send_days == "mon,wed,fri"
    none = admin.post("/staff/settings", data={
        **form, "csrf_token": token(admin, "/staff/"), "send_days_picker": "1"})
    assert none.status_code == 400 and "Send days: must not be empty" in text(none)


def test_the_whole_story_order_is_saved_in_one_post(admin: FlaskClient, fed: App) -> None:
    post(admin, f"/staff/editions/{DAY}/build")
    with fed.sessions() as session:
        ids = [row[0] for row in session.execute(
            select(EditionArticle.article_id).order_by(EditionArticle.position))]
    assert len(ids) >= 3
    reverse = ",".join(map(str, reversed(ids)))
    json_post = {"csrf_token": token(admin, "/staff/"), "order": reverse}
    saved = admin.post(f"/staff/editions/{DAY}/order", data=json_post,
                       headers={"Accept": "application/json"})
    assert saved.status_code == 200 and len(saved.get_json()["version"]) == 12
    with fed.sessions() as session:
        assert [row[0] for row in session.execute(
            select(EditionArticle.article_id).order_by(EditionArticle.position))] == ids[::-1]
    stale = admin.post(f"/staff/editions/{DAY}/order", headers={"Accept": "application/json"},
                       data={**json_post, "order": ",".join(map(str, ids[1:]))})
    assert stale.status_code == 409 and "reload" in stale.get_json()["error"]
    as_form = post(admin, f"/staff/editions/{DAY}/order", order=",".join(map(str, ids)))
    assert as_form.status_code == 303  # type: ignore[attr-defined]
