"""The weekly digest: its own edition kind, for the readers who chose it.

Real sends through the file outbox: a daily edition on Thursday that readers click (through
the real redirect), then Saturday's digest ranked by those human clicks, within each
reader's sections; a week with no daily editions (ranked by recency); weeks in which the
clocks change; exactly once; readers moving between kinds; the CLI and the archive.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from mailer import ledger
from mailer.app import App
from mailer.cli import cli
from mailer.clock import FixedClock
from mailer.db import make_engine
from mailer.edition import window_for
from mailer.errors import MailerError
from mailer.models import (
    DAILY,
    SENDING,
    WEEKLY,
    WITHDRAWN,
    Article,
    Delivery,
    Edition,
)
from mailer.pipeline import run_send
from mailer.schedule import weekly_trigger
from mailer.scheduler import JOB_ID, WEEKLY_JOB_ID, build_scheduler, run_daily
from mailer.subscribers import add, find, set_choices
from tests.support.clicks import clicks_written, client_for, flush, follow, read_outbox
from tests.support.seed import with_feed

SECTIONS = ["News", "Comment"]
THURSDAY = date(2026, 11, 26)
SATURDAY = date(2026, 11, 28)


def _article(app: App, guid: str, section: str, published: datetime) -> None:
    with app.sessions.begin() as session:
        session.add(Article(guid=guid, title=f"Story {guid}", section=section,
                            link=f"https://labourlist.org/2026/11/{guid}/", author="Staff",
                            summary_text=f"About {guid}.", categories=[section],
                            published_at=published))


def _weekly_app(app: App, **settings: object) -> App:
    app.settings = app.settings.replace(
        sections=SECTIONS, weekly_digest=True, weekly_stories=3, click_tracking="aggregate",
        spamassassin_command="/nonexistent/spamassassin", **settings)
    return app


def _readers(app: App) -> None:
    with app.sessions.begin() as session:
        add(session, "daily@example.org")
        add(session, "weekly@example.org", frequency=WEEKLY)
        add(session, "comment@example.org", frequency=WEEKLY, sections=["Comment"])


def _titles(copy_text: str) -> list[str]:
    """The stories in a text part, in order, once each (the lead's title is the preheader too)."""
    return list(dict.fromkeys(line.split("Story ", 1)[1].split()[0]
                              for line in copy_text.splitlines()
                              if "Story " in line and "About" not in line))


@pytest.fixture
def clicked_week(app: App, clock: FixedClock, tmp_path: Path) -> App:
    """Thursday's daily edition sent and clicked by readers; the clock on Saturday 08:00."""
    _weekly_app(app)
    _readers(app)
    wednesday = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    for n, section in enumerate(["News", "News", "Comment", "Comment"], start=1):
        _article(app, f"d{n}", section, wednesday + timedelta(hours=n))
    clock.set(datetime(2026, 11, 26, 7, 0, tzinfo=UTC))
    assert run_send(app, THURSDAY, collect_first=False).status == "sent"
    daily = {c.email: c for c in read_outbox(tmp_path / "outbox")}
    assert set(daily) == {"daily@example.org"}  # weekly readers do not get the daily
    clock.advance(hours=1)
    client = client_for(app)
    links = {url: _story_of(daily["daily@example.org"].text, url)
             for url in daily["daily@example.org"].text_links if "/r/" in url}
    wanted = {"d3": 3, "d2": 1}  # clicks by different readers, minutes apart
    reader = 0
    for url, guid in links.items():
        for _ in range(wanted.get(guid or "", 0)):
            reader += 1
            assert follow(client, url, address=f"198.51.100.{reader}").status_code == 302
            clock.advance(minutes=3)
    flush(client)
    assert clicks_written(app) == 4
    _article(app, "f1", "News", datetime(2026, 11, 27, 10, 0, tzinfo=UTC))  # Friday, unclicked
    _article(app, "old", "News", datetime(2026, 11, 21, 7, 0, tzinfo=UTC))  # before the week
    for path in (tmp_path / "outbox").glob("*.eml"):
        path.unlink()
    clock.set(datetime(2026, 11, 28, 8, 0, tzinfo=UTC))
    return app


def _story_of(text: str, url: str) -> str | None:
    """The guid of the story whose link `url` is: its title is at most three lines above."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if url in line)
    above = [line for line in lines[max(0, at - 3):at] if "Story " in line]
    return above[-1].split("Story ", 1)[1].split()[0] if above else None


def test_weekly_ranked_by_readers_clicks_within_each_readers_sections(
        clicked_week: App, tmp_path: Path) -> None:
    app = clicked_week
    outcome = run_send(app, SATURDAY, collect_first=False, kind=WEEKLY)
    assert outcome.status == "sent", outcome
    assert outcome.message.startswith("weekly edition 2026-11-28: sent 2")
    copies = {c.email: c for c in read_outbox(tmp_path / "outbox")}
    assert set(copies) == {"weekly@example.org", "comment@example.org"}
    # The top three by human clicks, then by recency; nothing from before the week.
    titles = _titles(copies["weekly@example.org"].text)
    assert titles[0] == "d3" and set(titles) == {"d3", "d2", "f1"}  # (grouped by section)
    assert "Story old" not in copies["weekly@example.org"].text
    # Within the reader's sections: their best story leads, then the rest of theirs.
    assert _titles(copies["comment@example.org"].text)[:2] == ["d3", "d4"]
    assert "Story d2" not in copies["comment@example.org"].text
    assert "the week’s top stories" in copies["weekly@example.org"].text
    with app.sessions() as session:
        weekly = session.scalar(select(Edition).where(Edition.kind == WEEKLY))
        assert weekly is not None and weekly.subject.startswith("LabourList Weekly")
        assert weekly.window_end - weekly.window_start == timedelta(days=7)
    # Its stories' links are tracked like the daily's, in every reader's pick.
    client = client_for(app)
    tracked = [u for u in copies["comment@example.org"].text_links if "/r/" in u]
    assert tracked and all(follow(client, u).status_code == 302 for u in tracked)
    # Exactly once: a second trigger sends nothing more; the daily of that date is separate.
    again = run_send(app, SATURDAY, collect_first=False, kind=WEEKLY)
    assert again.status == "already-sent"
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2


def test_a_week_without_daily_editions_is_ranked_by_recency(
        app: App, clock: FixedClock, tmp_path: Path) -> None:
    _weekly_app(app)
    _readers(app)
    for n in range(5):
        _article(app, f"w{n}", SECTIONS[n % 2], datetime(2026, 11, 23 + n, 9, tzinfo=UTC))
    clock.set(datetime(2026, 11, 28, 8, 0, tzinfo=UTC))
    assert run_send(app, SATURDAY, collect_first=False, kind=WEEKLY).status == "sent"
    copies = {c.email: c for c in read_outbox(tmp_path / "outbox")}
    titles = _titles(copies["weekly@example.org"].text)
    assert titles[0] == "w4" and set(titles) == {"w4", "w3", "w2"}  # (grouped by section)
    # The Comment reader: the two Comment stories of the week, newest first.
    assert _titles(copies["comment@example.org"].text)[:2] == ["w3", "w1"]


@pytest.mark.parametrize(("day", "hours", "utc_send"), [
    (date(2027, 4, 3), 167, datetime(2027, 4, 3, 7, 0, tzinfo=UTC)),   # clocks went forward
    (date(2027, 11, 6), 169, datetime(2027, 11, 6, 8, 0, tzinfo=UTC)),  # clocks went back
])
def test_weekly_window_is_seven_local_days_across_clock_changes(
        app: App, day: date, hours: int, utc_send: datetime) -> None:
    _weekly_app(app)
    with app.sessions() as session:
        window = window_for(session, app.settings, day, WEEKLY)
    assert window.end == utc_send  # 08:00 London, whatever the offset
    assert window.end - window.start == timedelta(hours=hours)
    assert window.start.astimezone(app.settings.tz).hour == 8


def test_weekly_send_at_its_local_time_in_a_dst_week(
        app: App, clock: FixedClock, tmp_path: Path) -> None:
    _weekly_app(app)
    _readers(app)
    # Saturday 27 March 2027 08:00 GMT is the window's start; the send is 08:00 BST.
    _article(app, "before", "News", datetime(2027, 3, 27, 7, 59, tzinfo=UTC))
    _article(app, "first", "News", datetime(2027, 3, 27, 8, 0, tzinfo=UTC))
    _article(app, "last", "News", datetime(2027, 4, 3, 6, 59, tzinfo=UTC))
    clock.set(datetime(2027, 4, 3, 7, 0, tzinfo=UTC))
    assert run_send(app, date(2027, 4, 3), collect_first=False, kind=WEEKLY).status == "sent"
    text = {c.email: c.text for c in read_outbox(tmp_path / "outbox")}["weekly@example.org"]
    assert "Story first" in text and "Story last" in text and "Story before" not in text


def test_late_guard_and_the_off_switch(app: App, clock: FixedClock) -> None:
    _weekly_app(app)
    _readers(app)
    _article(app, "x", "News", datetime(2026, 11, 27, 9, tzinfo=UTC))
    clock.set(datetime(2026, 11, 28, 14, 0, tzinfo=UTC))  # six hours after 08:00
    with pytest.raises(MailerError, match="weekly edition 2026-11-28 was due at 08:00"):
        run_send(app, SATURDAY, collect_first=False, kind=WEEKLY)
    app.settings = app.settings.replace(weekly_digest=False)
    with pytest.raises(MailerError, match="weekly digest is off"):
        run_send(app, SATURDAY, collect_first=False, kind=WEEKLY, force=True, reason="x")


def test_readers_who_move_between_kinds_mid_send_are_withdrawn(
        app: App, clock: FixedClock) -> None:
    _weekly_app(app)
    _readers(app)
    _article(app, "x", "News", datetime(2026, 11, 25, 12, tzinfo=UTC))
    clock.set(datetime(2026, 11, 26, 7, 0, tzinfo=UTC))
    outcome = run_send(app, THURSDAY, collect_first=False, dry_run=True)
    assert outcome.audience == 1  # the daily goes to daily readers only
    with app.sessions.begin() as session:
        edition = session.scalar(select(Edition).where(Edition.kind == DAILY))
        assert edition is not None
        edition.state = SENDING  # as a send does before its workers start
        ledger.snapshot(session, edition, DAILY)
    with app.sessions.begin() as session:
        reader = find(session, "daily@example.org")
        assert reader is not None
        assert set_choices(session, reader, frequency=WEEKLY, source="preferences")
    with app.sessions() as session:
        state = session.scalar(select(Delivery.state).where(
            Delivery.email == "daily@example.org"))
    assert state == WITHDRAWN


def test_cli_kind_and_the_archive(clicked_week: App, tmp_path: Path) -> None:
    app = clicked_week
    runner = CliRunner()
    s = app.settings  # the same settings, as a user's shell would give them
    env = {"MAILER_DATABASE_URL": s.database_url, "MAILER_SECRET_KEY": s.secret_key,
           "MAILER_FEED_URL": s.feed_url, "MAILER_NOW": app.clock.now().isoformat(),
           "MAILER_TEMPLATES_DIR": s.templates_dir, "MAILER_DSN": s.dsn,
           "MAILER_BASE_URL": s.base_url, "MAILER_SECTIONS": ",".join(SECTIONS),
           "MAILER_WEEKLY_DIGEST": "true", "MAILER_WEEKLY_STORIES": "3",
           "MAILER_SPAMASSASSIN_COMMAND": s.spamassassin_command}
    out = tmp_path / "weekly.html"
    result = runner.invoke(cli, ["preview", "--kind", "weekly", "--date", "2026-11-28",
                                 "--no-collect", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "preview of weekly edition 2026-11-28" in result.output
    result = runner.invoke(cli, ["send", "--kind", "weekly", "--date", "2026-11-28",
                                 "--no-collect"], env=env)
    assert result.exit_code == 0, result.output
    listing = runner.invoke(cli, ["editions", "list"], env=env).output
    assert "2026-11-28  weekly sent" in listing and "2026-11-26  daily  sent" in listing
    shown = runner.invoke(cli, ["editions", "show", "2026-11-28", "--kind", "weekly"], env=env)
    assert shown.exit_code == 0 and "weekly edition 2026-11-28: sent" in shown.output
    client = client_for(app)
    weekly_page = client.get("/archive/weekly/2026-11-28")
    assert weekly_page.status_code == 200 and b"Story d3" in weekly_page.data
    assert client.get("/archive/2026-11-28").status_code == 404  # no daily that Saturday
    index = client.get("/archive/").get_data(as_text=True)
    assert "/archive/weekly/2026-11-28" in index and "/archive/2026-11-26" in index
    feed = client.get("/archive/feed.xml").get_data(as_text=True)
    assert "https://mail.example.org/archive/weekly/2026-11-28" in feed


def test_the_scheduler_fires_the_weekly_once_a_week_at_local_time(
        app: App, clock: FixedClock, tmp_path: Path) -> None:
    _weekly_app(app)
    engine = make_engine(app.settings.database_url)
    try:
        ids = {job.id for job in build_scheduler(app, engine).get_jobs()}
        assert {JOB_ID, WEEKLY_JOB_ID} <= ids
        app.settings = app.settings.replace(weekly_digest=False)
        assert WEEKLY_JOB_ID not in {job.id for job in build_scheduler(app, engine).get_jobs()}
    finally:
        engine.dispose()
    trigger = weekly_trigger(app.settings)
    fire = trigger.get_next_fire_time(None, datetime(2027, 3, 20, 9, tzinfo=UTC))
    fires = []
    while fire is not None and len(fires) < 3:
        fires.append(fire.astimezone(UTC))
        fire = trigger.get_next_fire_time(fire, fire)
    assert fires == [datetime(2027, 3, 27, 8, tzinfo=UTC), datetime(2027, 4, 3, 7, tzinfo=UTC),
                     datetime(2027, 4, 10, 7, tzinfo=UTC)]
    # The scheduled run itself: late past the guard, it is refused and staff are told.
    app.settings = app.settings.replace(weekly_digest=True)
    _readers(app)
    _article(app, "x", "News", datetime(2026, 11, 27, 9, tzinfo=UTC))
    clock.set(datetime(2026, 11, 28, 14, 0, tzinfo=UTC))
    report = run_daily(app, SATURDAY, kind=WEEKLY)
    assert report.status == "late" and "weekly edition 2026-11-28" in report.message
    clock.set(datetime(2026, 11, 28, 8, 0, tzinfo=UTC))
    with_feed(app, tmp_path)  # (the scheduled run collects first)
    assert run_daily(app, SATURDAY, kind=WEEKLY).status == "sent"


def test_migration_keeps_editions_daily_and_lets_a_digest_share_their_date(
        tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from mailer.db import alembic_config, init_db

    columns = ("edition_date, state, subject, preheader, editor_note, window_start, "
               "window_end, html, text, archive_html, placeholder_key, click_tracking, "
               "audience, sent_count, failed_count, preflight, excluded, most_read, arranged, "
               "forced_reason, note, created_at")
    values = ("'2026-11-28', 'sent', 's', '', '', '2026-11-27 07:00:00', "
              "'2026-11-28 07:00:00', '', '', '', '', 'off', 0, 0, 0, '{}', '[]', '[]', 0, "
              "'', '', '2026-11-28 07:00:00'")
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    try:
        cfg = alembic_config(url)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0008")  # a database as the previous release left it
            conn.execute(text(f"INSERT INTO editions ({columns}) VALUES ({values})"))
        assert init_db(engine) >= "0009"  # (and any later migration)
        with engine.begin() as conn:
            assert conn.execute(text("SELECT kind FROM editions")).scalar_one() == DAILY
            conn.execute(text(f"INSERT INTO editions (kind, {columns}) "
                              f"VALUES ('weekly', {values})"))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(f"INSERT INTO editions (kind, {columns}) "
                              f"VALUES ('daily', {values})"))
    finally:
        engine.dispose()
