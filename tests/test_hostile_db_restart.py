"""A database restart in the middle of a send is an event, not an outage.

Real `mailer send` and `mailer worker` processes, a real SMTP server slow enough that the cut
lands mid-way, and the real database cut from another connection: on PostgreSQL every backend
of the send's database terminated and new connections refused for a few seconds (as a
restart does, without restarting the server other tests use); on SQLite the write lock held
past the busy timeout. The send must finish on its own, write the outcomes of what the server
had accepted once the database is back, send nobody a second copy beyond the messages in
flight, and say so in one line per outage, never a traceback. Past `db_outage_grace` it stops
with one line and exit status 75, and a rerun finishes the job.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from mailer import ledger
from mailer.app import App
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.dbretry import OutageRetry, is_outage
from mailer.errors import DatabaseOutage
from mailer.models import CLAIMED, Delivery, Edition
from mailer.pipeline import run_send
from mailer.sample import write_sample_feed
from tests.support import pg
from tests.support.environ import bare_environ
from tests.support.seed import seed_subscribers, start_sending, with_feed
from tests.support.settings import make_settings
from tests.support.smtpsink import SmtpSink

NOW = datetime(2026, 11, 26, 6, 50, tzinfo=UTC)
DAY = date(2026, 11, 26)
ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 2  # per process


def _environ(database_url: str, dsn: str, feed: Path, **extra: str) -> dict[str, str]:
    env = bare_environ()
    env.update({
        "MAILER_DATABASE_URL": database_url, "MAILER_DSN": dsn, "MAILER_FEED_URL": str(feed),
        "MAILER_NOW": NOW.isoformat(), "MAILER_SECRET_KEY": "restart-test",
        "MAILER_BASE_URL": "https://mail.example.org",
        "MAILER_CONFIG": str(ROOT / "config" / "mailer.toml"),
        "MAILER_CONNECTIONS": str(CONNECTIONS),
    })
    env.update(extra)
    return env


def _prepare(tmp: Path, database_url: str, n: int) -> Path:
    app = App.create(make_settings(tmp, database_url=database_url), clock=FixedClock(NOW))
    init_db(app.engine)
    seed_subscribers(app, n)
    app.close()
    return write_sample_feed(tmp / "feed.xml", NOW)


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mailer", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"still running after {timeout}s:\n{out}{err}") from None
    return proc.returncode, out + err


def _wait_for_messages(sink: SmtpSink, count: int, proc: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + 30
    while len(sink.messages) < count and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the send ended before the cut"
    return len(sink.messages)


@contextmanager
def _postgres_down(database_url: str) -> Iterator[None]:
    """What a restart does to one database: every connection cut, new ones refused, until
    the block ends (without restarting the server other tests share)."""
    name = database_url.rsplit("/", 1)[1]
    admin_url = pg.base_url()
    assert admin_url is not None
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            cut = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchone()
            assert cut is not None and cut[0] > 0, "no connection of the send to cut"
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def _ledger(database_url: str, tmp: Path) -> tuple[dict[str, int], str | None]:
    app = App.create(make_settings(tmp, database_url=database_url))
    with app.sessions() as s:
        states = dict(s.execute(select(Delivery.state, func.count())  # type: ignore[arg-type]
                                .group_by(Delivery.state)).all())
        edition = s.scalar(select(Edition.state))
    app.close()
    return states, edition


def _duplicates(sink: SmtpSink, n: int) -> int:
    got = Counter(sink.recipients())
    assert len(got) == n, f"{n - len(got)} subscribers got nothing"
    return sum(count - 1 for count in got.values())


def _one_outage(output: str) -> None:
    """The outage in the log: one line when it began, one when it ended; no traceback."""
    assert "Traceback" not in output, output
    assert output.count("database unavailable (") == 1, output
    assert output.count("database back after") == 1, output


@pytest.mark.postgres
def test_postgres_restart_mid_send_with_two_workers(tmp_path: Path, pg_url: str) -> None:
    n = 2400
    feed = _prepare(tmp_path, pg_url, n)
    with SmtpSink(data_delay=0.008) as sink:
        env = _environ(pg_url, sink.dsn, feed)
        send = _start(env, "send")
        _wait_for_messages(sink, 50, send)  # the edition is sending: workers join it
        workers = [_start(env, "worker", "--once", "--poll", "0.2") for _ in range(2)]
        at_cut = _wait_for_messages(sink, n // 3, send)
        with _postgres_down(pg_url):
            time.sleep(3.0)
            during = len(sink.messages)
        code, output = _finish(send)
        finished = [_finish(w) for w in workers]
        assert code == 0, output
        assert sink.wait_for(n, timeout=10)
        time.sleep(0.3)  # (nothing more may arrive)
        duplicates = _duplicates(sink, n)
    # At most the messages in flight when the connections were cut: one per connection.
    assert duplicates <= CONNECTIONS * 3, duplicates
    assert at_cut < n and during < n, (at_cut, during)
    _one_outage(output)
    for worker_code, worker_output in finished:
        assert worker_code == 0, worker_output
        assert "Traceback" not in worker_output, worker_output
        assert worker_output.count("database unavailable (") <= 1, worker_output
    states, edition = _ledger(pg_url, tmp_path)
    assert states == {"sent": n} and edition == "sent", (states, edition)
    print(f"cut after {at_cut} of {n}; {during} by the end of the outage; "
          f"{duplicates} duplicates")


@pytest.mark.postgres
def test_postgres_down_past_the_grace_exits_75_and_a_rerun_finishes(
        tmp_path: Path, pg_url: str) -> None:
    n = 1500
    feed = _prepare(tmp_path, pg_url, n)
    with SmtpSink(data_delay=0.005) as sink:
        env = _environ(pg_url, sink.dsn, feed, MAILER_DB_OUTAGE_GRACE="1.5")
        send = _start(env, "send")
        _wait_for_messages(sink, 50, send)
        worker = _start(env, "worker", "--once", "--poll", "0.2")
        _wait_for_messages(sink, n // 3, send)
        with _postgres_down(pg_url):
            finished = [_finish(send, timeout=30), _finish(worker, timeout=30)]
        for code, output in finished:  # the send, then the worker
            assert code == 75, output
            errors = [line for line in output.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, output
            assert "database unavailable for more than 1.5 s" in errors[0], output
            assert "Traceback" not in output, output
            assert output.count("database unavailable (") == 1, output
        rerun = subprocess.run([sys.executable, "-m", "mailer", "send"], env=env, cwd=ROOT,
                               capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        duplicates = _duplicates(sink, n)
    # The outcomes that waited in memory when the send gave up are lost with it, as in a
    # kill -9: at most one message per connection goes again.
    assert duplicates <= CONNECTIONS * 2, duplicates
    states, edition = _ledger(pg_url, tmp_path)
    assert states == {"sent": n} and edition == "sent", (states, edition)


def test_sqlite_locked_past_the_busy_timeout_mid_send(tmp_path: Path) -> None:
    n = 1500
    path = tmp_path / "db.sqlite"
    url = f"sqlite:///{path}?timeout=0.5"  # (the busy timeout, 30 s by default)
    feed = _prepare(tmp_path, url, n)
    with SmtpSink(data_delay=0.005) as sink:
        env = _environ(url, sink.dsn, feed)
        send = _start(env, "send")
        at_cut = _wait_for_messages(sink, n // 3, send)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        time.sleep(2.5)  # five busy timeouts
        holder.execute("COMMIT")
        holder.close()
        code, output = _finish(send)
        assert code == 0, output
        duplicates = _duplicates(sink, n)
    assert duplicates == 0, duplicates
    assert at_cut < n
    _one_outage(output)
    assert "database is locked" in output, output
    states, edition = _ledger(url, tmp_path)
    assert states == {"sent": n} and edition == "sent", (states, edition)


# ---- a lease that ran out during a long outage -----------------------------------------------

def test_rows_taken_over_while_the_database_was_out_are_left_to_their_taker(
        app: App, tmp_path: Path, make_smtp_sink) -> None:  # type: ignore[no-untyped-def]
    """An outage longer than the lease: another worker may take over the rest of our claim
    the moment the database is back. The lease renewal says which rows are still ours; the
    stream sends none of the others (they would otherwise go twice)."""
    sink = make_smtp_sink(data_delay=0.003)
    app.settings = app.settings.replace(dsn=sink.dsn, connections=1, lease_seconds=5)
    with_feed(app, tmp_path)
    seed_subscribers(app, 1000)  # one claim; renewed after lease_seconds / 3 of sending
    outcome: list[str] = []
    sending = threading.Thread(target=lambda: outcome.append(run_send(app, DAY).status))
    sending.start()
    try:
        deadline = time.monotonic() + 20
        while len(sink.messages) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        with app.sessions.begin() as s:  # the taker: rows 801-1000, not yet sent
            taken = s.execute(update(Delivery).where(Delivery.state == CLAIMED,
                                                     Delivery.id > 800)
                              .values(claimed_by="elsewhere:1:x:0")).rowcount
        assert taken == 200
        while len(sink.messages) < 800 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(1.0)  # (the send now waits for the taker's rows)
        assert len(sink.messages) == 800
        with app.sessions.begin() as s:  # the taker sent them
            s.execute(update(Delivery).where(Delivery.claimed_by == "elsewhere:1:x:0")
                      .values(state="sent"))
    finally:
        sending.join(timeout=20)
    assert outcome == ["sent"]
    got = Counter(sink.recipients())
    assert len(got) == 800 and max(got.values()) == 1


def test_renew_says_which_rows_are_still_ours_and_orphans_go_back(
        tmp_path: Path, database_url: str, clock: FixedClock) -> None:
    app = App.create(make_settings(tmp_path, database_url=database_url), clock=clock)
    init_db(app.engine)
    with_feed(app, tmp_path)
    seed_subscribers(app, 6)
    edition_id, mine = start_sending(app, DAY, claimed_by="me", claims=4)
    ids = [c.id for c in mine]
    with app.sessions.begin() as s:  # another worker took two of them over
        s.execute(update(Delivery).where(Delivery.id.in_(ids[2:])).values(claimed_by="them"))
    with app.sessions.begin() as s:
        assert ledger.renew(s, "me", ids, app.clock.now(), 60) == set(ids[:2])
        # "me" holds no claim now (a claim whose commit it never saw): its rows go back.
        assert ledger.release_orphans(s, edition_id, "me") == 2
        counts = ledger.counts(s, edition_id)
    assert (counts["queued"], counts["claimed"]) == (4, 2)
    app.close()


# ---- the rule and the retry, without a server ------------------------------------------------

def _locked() -> OperationalError:
    return OperationalError("UPDATE deliveries ...", {}, sqlite3.OperationalError(
        "database is locked"))


def test_what_counts_as_an_outage() -> None:
    assert is_outage(_locked())
    assert is_outage(sqlite3.OperationalError("database is locked"))
    assert not is_outage(sqlite3.OperationalError("no such table: deliveries"))
    assert is_outage(psycopg.errors.AdminShutdown("terminating connection"))
    assert is_outage(psycopg.OperationalError("connection failed: refused"))
    assert not is_outage(psycopg.errors.UniqueViolation("duplicate key"))
    assert not is_outage(ValueError("database is locked"))


def test_retry_waits_out_an_outage_with_one_line_each_way(
        caplog: pytest.LogCaptureFixture) -> None:
    retry = OutageRetry(grace=5)
    attempts: list[float] = []

    def flaky() -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 4:
            raise _locked()
        return "done"

    # Two threads meet the same outage: still one line when it begins, one when it ends.
    other: list[str] = []
    thread = threading.Thread(target=lambda: other.append(retry.run(flaky)))
    with caplog.at_level(logging.WARNING, logger="mailer.db"):
        thread.start()
        assert retry.run(flaky) == "done"
        thread.join()
    assert other == ["done"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("database unavailable (database is locked)")
    assert lines[1].startswith("database back after")

    def wrong() -> None:
        raise sqlite3.OperationalError("no such table: deliveries")

    with pytest.raises(sqlite3.OperationalError):  # not an outage: at once, no retry
        retry.run(wrong)


def test_a_stale_connection_after_the_outage_is_not_a_second_one(
        caplog: pytest.LogCaptureFixture) -> None:
    """A thread that held a connection through the outage meets its error after another
    thread saw the database back: ridden out, but no second pair of lines."""
    retry = OutageRetry(grace=5)
    failures = iter([True, False, True, False])

    def flaky() -> str:
        if next(failures):
            raise psycopg.errors.AdminShutdown("terminating connection")
        return "done"

    with caplog.at_level(logging.WARNING, logger="mailer.db"):
        assert retry.run(flaky) == "done"
        assert retry.run(flaky) == "done"  # the aftershock
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert retry.outages == 2  # still counted: the dispatcher looks for orphaned claims


def test_retry_gives_up_after_the_grace() -> None:
    retry = OutageRetry(grace=0.5)
    started = time.monotonic()

    def down() -> None:
        raise _locked()

    with pytest.raises(DatabaseOutage, match=r"for more than 0.5 s: database is locked"):
        retry.run(down)
    assert 0.5 <= time.monotonic() - started < 2
    # Another thread meeting the same outage gives up at once: the grace is the outage's.
    with pytest.raises(DatabaseOutage):
        retry.run(down)
    assert time.monotonic() - started < 2
