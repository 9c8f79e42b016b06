"""The click writer in a process of its own (`click_writer = "process"`, the default): clicks
followed through the web app reach the database through a child process, a killed child is
replaced without losing what was buffered, and a web process killed with -9 leaves no writer
behind. (Most click tests run the writer on a thread, `tests/support/settings.py`: the rules
and the INSERT are the same code, `mailer.clicks.writer.ClickWriter`.)"""

from __future__ import annotations

import marshal
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy import select

from mailer.app import App
from mailer.clicks.recorder import ClickRecorder
from mailer.clicks.writer import FLOOD_PER_MINUTE, ClickWriter, FloodGuard, Hit, RawHit
from mailer.clicks.writer_process import NICENESS, WriterProcess, writer_for
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.models import HUMAN, Click
from mailer.web import CLICKS_KEY
from tests.support.clicks import (
    BROWSER_HEADERS,
    Copy,
    clicks_written,
    client_for,
    flush,
    follow,
    sent_edition,
)
from tests.support.environ import bare_environ
from tests.support.settings import make_settings
from tests.support.spam import free_port


@pytest.fixture
def process_app(tmp_path: Path, clock: FixedClock) -> App:
    app = App.create(make_settings(tmp_path, click_writer="process"), clock=clock)
    init_db(app.engine)
    return app


@pytest.fixture
def two_readers(process_app: App, tmp_path: Path,
                clock: FixedClock) -> Iterator[tuple[list[Copy], FlaskClient, ClickRecorder]]:
    """An edition sent to two readers five minutes ago, the web app's client and recorder
    (closed afterwards: its writer process ends with it)."""
    _, copies = sent_edition(process_app, tmp_path, readers=2)
    clock.advance(minutes=5)
    client = client_for(process_app)
    recorder = client.application.extensions[CLICKS_KEY].recorder
    try:
        yield copies, client, recorder
    finally:
        recorder.close()


def writer_of(recorder: ClickRecorder) -> WriterProcess:
    writer = recorder.writer
    assert isinstance(writer, WriterProcess)
    return writer


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether process `pid` has ended (a zombie nobody reaps counts as ended)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("at", [
    datetime(2026, 11, 26, 7, 1, 2, 345678, tzinfo=UTC),
    datetime(2099, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 3, 29, 1, 0, 0, 1, tzinfo=UTC),
])
def test_the_wire_keeps_a_hit_to_the_microsecond(at: datetime) -> None:
    hit = Hit(7, 3, at, "198.51.100.1", "Mozilla/5.0", delivery_id=12, prefetch=True,
              trap=False, test_group=2)
    assert Hit.from_raw(marshal.loads(marshal.dumps(hit.raw()))) == hit


def raw_hits(n: int, at: datetime, address: str = "198.51.100.7") -> list[RawHit]:
    return [Hit(1, 0, at, address, "Mozilla/5.0").raw() for _ in range(n)]


def test_the_flood_rule_counts_by_the_hits_own_minute() -> None:
    guard = FloodGuard()
    minute = datetime(2026, 11, 26, 7, 0, 59, 999999, tzinfo=UTC)
    batch = raw_hits(70, minute) + raw_hits(70, minute + timedelta(microseconds=1))
    batch += raw_hits(3, minute, address="203.0.113.5")
    kept = guard.admit(batch)
    assert len(kept) == 2 * FLOOD_PER_MINUTE + 3
    assert guard.admit(raw_hits(1, minute)) == []  # (the minute's count goes on)


def test_a_batch_that_was_not_written_is_not_counted_twice_by_the_flood_rule() -> None:
    """The database was away: the batch comes back, and is admitted as the first time."""
    guard = FloodGuard()
    at = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
    batch = raw_hits(FLOOD_PER_MINUTE, at)
    assert guard.admit(batch) == batch
    guard.forget(batch)
    assert guard.admit(batch) == batch
    assert guard.admit(raw_hits(1, at)) == []


def test_an_in_memory_database_keeps_the_writer_on_a_thread(tmp_path: Path) -> None:
    memory = make_settings(tmp_path, click_writer="process", database_url="sqlite://")
    app = App.create(memory)
    try:
        assert isinstance(writer_for(app.settings, app.sessions), ClickWriter)
    finally:
        app.close()


def test_clicks_are_written_by_a_child_process_which_is_replaced_when_killed(
        process_app: App, two_readers: tuple[list[Copy], FlaskClient, ClickRecorder],
        clock: FixedClock) -> None:
    app = process_app
    copies, client, recorder = two_readers
    assert follow(client, copies[0].text_links[0], address="198.51.100.1").status_code == 302
    flush(client)
    assert clicks_written(app) == 1
    first = writer_of(recorder).pid
    assert first is not None and first != os.getpid()
    # behind the redirects when the cores are busy
    assert os.getpriority(os.PRIO_PROCESS, first) == min(
        19, os.getpriority(os.PRIO_PROCESS, 0) + NICENESS)

    os.kill(first, signal.SIGKILL)  # (as the OOM killer would)
    assert gone(first)
    clock.advance(minutes=5)
    assert follow(client, copies[1].text_links[1], address="198.51.100.2").status_code == 302
    flush(client)
    assert clicks_written(app) == 2
    assert recorder.dropped == 0
    second = writer_of(recorder).pid
    assert second is not None and second != first
    with app.sessions() as s:
        assert set(s.scalars(select(Click.verdict))) == {HUMAN}
    recorder.close()  # (the fixture closes it too, when the test fails first)
    assert writer_of(recorder).pid is None
    assert gone(second)


def test_a_child_that_cannot_start_hands_the_clicks_to_the_thread(
        process_app: App, two_readers: tuple[list[Copy], FlaskClient, ClickRecorder],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """An interpreter that cannot run the child (here one that exits at once, as an
    application server's binary would): after `START_FAILURES` children that never answered,
    the clicks are written on the web process's thread, none lost."""
    copies, client, recorder = two_readers
    monkeypatch.setattr(sys, "executable", "/bin/false")
    for n, copy in enumerate(copies):
        assert follow(client, copy.text_links[0], address=f"198.51.100.{n}").status_code == 302
    flush(client)
    assert clicks_written(process_app) == 2 and recorder.dropped == 0
    assert writer_of(recorder).on_fallback
    assert "written on the web process's thread" in caplog.text


def test_a_web_process_killed_with_minus_9_leaves_no_writer_behind(
        process_app: App, tmp_path: Path, clock: FixedClock) -> None:
    app = process_app
    _, copies = sent_edition(app, tmp_path, readers=1)
    port = free_port()
    env = {**bare_environ(), "MAILER_DATABASE_URL": app.settings.database_url,
           "MAILER_SECRET_KEY": app.settings.secret_key, "MAILER_HOST": "127.0.0.1",
           "MAILER_PORT": str(port), "MAILER_BASE_URL": app.settings.base_url,
           "MAILER_NOW": (clock.now() + timedelta(minutes=10)).isoformat()}
    serve = subprocess.Popen([sys.executable, "-m", "mailer", "serve"], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path = copies[0].text_links[0].removeprefix(app.settings.base_url)
    try:
        deadline = time.monotonic() + 20
        while clicks_written(app) == 0:
            assert serve.poll() is None, serve.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no click was written"
            try:
                answer = requests.get(f"http://127.0.0.1:{port}{path}", timeout=2,
                                      headers=BROWSER_HEADERS, allow_redirects=False)
                assert answer.status_code == 302
            except requests.ConnectionError:
                pass  # not listening yet
            time.sleep(0.2)
        children = [int(pid) for task in Path(f"/proc/{serve.pid}/task").iterdir()
                    for pid in (task / "children").read_text().split()]
        assert children, "the click writer runs in a child process of `mailer serve`"
        serve.send_signal(signal.SIGKILL)
        serve.wait(10)
        assert all(gone(child) for child in children)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(10)
        serve.stderr.close()  # type: ignore[union-attr]
