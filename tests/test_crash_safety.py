"""kill -9 at random points, and several worker processes on PostgreSQL: exactly once.

These start real `mailer` processes, so they exercise what production runs: the run lock, the
dispatch lock, lease recovery of a dead process's claims and the ledger's guarded updates.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailer.app import App
from mailer.clock import FixedClock
from mailer.db import init_db
from mailer.models import Delivery, Edition
from mailer.sample import write_sample_feed
from tests.support.environ import bare_environ
from tests.support.seed import eml_recipients, seed_subscribers
from tests.support.settings import make_settings
from tests.support.smtpsink import SmtpSink

NOW = datetime(2026, 11, 26, 6, 50, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent
# Kill points per test: 4 in the suite, one round of the four-at-a-time pool (each a random
# moment in its own quarter of the send, `_stratum`: every quarter is hit on every run);
# MAILER_KILL_TRIALS=100 for a deeper run before a release.
TRIALS = int(os.environ.get("MAILER_KILL_TRIALS", "4"))
SPAM: dict[str, str] = {}  # the run's spamd, when there is one (see `_spamd`)


@pytest.fixture(autouse=True)
def _spamd(spamd_command: str | None) -> Iterator[None]:
    """Every `mailer send` here asks the run's one spamd (`spamc`) for its preflight score
    instead of loading SpamAssassin's rules in a Perl process of its own: seconds of CPU per
    process, forty processes a test, on two cores. The check itself is the same."""
    if spamd_command is not None:
        SPAM["MAILER_SPAMASSASSIN_COMMAND"] = spamd_command
    yield
    SPAM.clear()


def _environ(database_url: str, dsn: str, feed: Path, **extra: str) -> dict[str, str]:
    env = bare_environ()
    env.update({
        "MAILER_DATABASE_URL": database_url, "MAILER_DSN": dsn, "MAILER_FEED_URL": str(feed),
        "MAILER_NOW": NOW.isoformat(), "MAILER_SECRET_KEY": "kill-test",
        "MAILER_BASE_URL": "https://mail.example.org",
        "MAILER_CONFIG": str(ROOT / "config" / "mailer.toml"),
        **SPAM,
    })
    env.update(extra)
    return env


def _prepare(tmp: Path, database_url: str, n: int) -> Path:
    app = App.create(make_settings(tmp, database_url=database_url), clock=FixedClock(NOW))
    init_db(app.engine)
    seed_subscribers(app, n)
    app.close()
    return write_sample_feed(tmp / "feed.xml", NOW)


def _send(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "mailer", "send"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _stratum(rng: random.Random, n: int, trials: int, low: float, high: float) -> float:
    """A random point of the `n`th of `trials` equal parts of [low, high): the trials of a
    test spread over the whole range, however few they are."""
    width = (high - low) / trials
    return low + width * (n + rng.random())


def _kill_then_rerun(env: dict[str, str], rng: random.Random, n: int,
                     wait: Callable[[subprocess.Popen[bytes]], None] | None = None) -> None:
    """Start a send, kill -9 it when `wait` returns (by default after 0.2 to 2.2 s: trial
    `n`'s part of that range), send again to the end."""
    proc = _send(env)
    if wait is None:
        time.sleep(_stratum(rng, n, TRIALS, 0.2, 2.2))
    else:
        wait(proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run([sys.executable, "-m", "mailer", "send"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr


def _trials(run: Callable[[int, random.Random], None], seed: int, trials: int = TRIALS) -> None:
    """Independent trials (own database, outbox, sink), four at a time: mostly waiting."""
    seeds = random.Random(seed)
    rngs = [random.Random(seeds.random()) for _ in range(trials)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(run, trial, rngs[trial]) for trial in range(trials)]:
            future.result()


@pytest.mark.slow
def test_kill_9_file_transport_exactly_once(tmp_path: Path) -> None:
    def trial(n: int, rng: random.Random) -> None:
        tmp = tmp_path / f"t{n}"
        tmp.mkdir()
        feed = _prepare(tmp, f"sqlite:///{tmp / 'db.sqlite'}", 150)
        outbox = tmp / "outbox"
        env = _environ(f"sqlite:///{tmp / 'db.sqlite'}", f"file://{outbox}", feed,
                       MAILER_RATE_LIMIT="150", MAILER_CONNECTIONS="2")
        _kill_then_rerun(env, rng, n)
        got = eml_recipients(outbox)
        assert len(got) == 150, f"trial {n}: {len(got)} recipients"
        assert max(got.values()) == 1, f"trial {n}: duplicates {got.most_common(3)}"

    _trials(trial, 20261126)


@pytest.mark.slow
def test_kill_9_smtp_no_one_missed_duplicates_bounded(tmp_path: Path) -> None:
    connections = 2
    worst: list[int] = []

    def trial(n: int, rng: random.Random) -> None:
        tmp = tmp_path / f"t{n}"
        tmp.mkdir()
        feed = _prepare(tmp, f"sqlite:///{tmp / 'db.sqlite'}", 150)
        with SmtpSink() as sink:
            env = _environ(f"sqlite:///{tmp / 'db.sqlite'}", sink.dsn, feed,
                           MAILER_RATE_LIMIT="150", MAILER_CONNECTIONS=str(connections))
            _kill_then_rerun(env, rng, n)
            got = Counter(sink.recipients())
        assert len(got) == 150, f"trial {n}: someone was missed"
        duplicates = sum(count - 1 for count in got.values())
        worst.append(duplicates)
        assert duplicates <= connections, f"trial {n}: {duplicates} duplicates"

    _trials(trial, 8058)
    print(f"duplicates per trial over {TRIALS} trials: {sorted(worst)} (bound {connections})")


@pytest.mark.slow
def test_kill_9_smtp_at_full_speed_duplicates_bounded(tmp_path: Path) -> None:
    """No rate limit, four connections, killed after a random number of messages arrived:
    outcomes are written a round at a time (on SQLite to the sent journal), and a kill
    between a server's 250 and that write must still cost at most one copy per connection."""
    connections, audience = 4, 600
    trials = min(TRIALS, 6)  # (the sinks share this process: a full-speed trial is slow)
    worst: list[int] = []
    killed_at: list[int] = []

    def trial(n: int, rng: random.Random) -> None:
        tmp = tmp_path / f"f{n}"
        tmp.mkdir()
        feed = _prepare(tmp, f"sqlite:///{tmp / 'db.sqlite'}", audience)
        with SmtpSink() as sink:
            env = _environ(f"sqlite:///{tmp / 'db.sqlite'}", sink.dsn, feed,
                           MAILER_CONNECTIONS=str(connections))
            target = int(_stratum(rng, n, trials, 1, audience))

            def until_target(proc: subprocess.Popen[bytes]) -> None:
                deadline = time.monotonic() + 60
                while len(sink.messages) < target and proc.poll() is None \
                        and time.monotonic() < deadline:
                    time.sleep(0.001)
                # (a send that already ended was not killed mid-send)
                killed_at.append(len(sink.messages) if proc.poll() is None else audience)

            _kill_then_rerun(env, rng, n, until_target)
            got = Counter(sink.recipients())
        assert len(got) == audience, f"trial {n}: someone was missed"
        duplicates = sum(count - 1 for count in got.values())
        worst.append(duplicates)
        assert duplicates <= connections, f"trial {n}: {duplicates} duplicates"

    _trials(trial, 2920, trials)
    print(f"duplicates per trial over {trials} trials: {sorted(worst)} (bound {connections}); "
          f"killed after {sorted(killed_at)} of {audience} messages")
    assert sum(0 < k < audience for k in killed_at) >= trials // 2, killed_at  # mid-send


@pytest.mark.slow
@pytest.mark.postgres
def test_four_workers_and_send_on_postgres_exactly_once(tmp_path: Path, pg_url: str) -> None:
    n = 2000  # 40 claim batches: every worker claims many times, against the others
    feed = _prepare(tmp_path, pg_url, n)
    with SmtpSink() as sink:
        env = _environ(pg_url, sink.dsn, feed, MAILER_CONNECTIONS="2",
                       MAILER_BATCH_SIZE="50")
        workers = [subprocess.Popen([sys.executable, "-m", "mailer", "worker", "--poll", "0.2"],
                                    env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.STDOUT) for _ in range(4)]
        try:
            sender = subprocess.run([sys.executable, "-m", "mailer", "send"], env=env, cwd=ROOT,
                                    capture_output=True, text=True, timeout=600)
            assert sender.returncode == 0, sender.stdout + sender.stderr
            assert sink.wait_for(n, timeout=60)
            time.sleep(1.0)  # let workers finish anything in flight
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                try:
                    w.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    w.kill()
        got = Counter(sink.recipients())
    assert len(got) == n and max(got.values()) == 1
    app = App.create(make_settings(tmp_path, database_url=pg_url))
    with app.sessions() as s:
        claimers = s.scalar(select(func.count(func.distinct(
            func.split_part(Delivery.claimed_by, ":", 2)))))
        state = s.scalar(select(Edition.state))
    app.close()
    assert state == "sent"
    print(f"processes that sent part of the edition: {claimers}")
