"""The send-rate limit is shared by all workers of a send (two dispatchers, one schedule)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from mailer.app import App
from mailer.clock import Clock
from mailer.db import init_db
from mailer.dispatch import Dispatcher
from mailer.pacing import SharedRateLimiter
from tests.support.seed import seed_subscribers, start_sending, with_feed
from tests.support.settings import make_settings
from tests.support.smtpsink import SmtpSink


def test_reservations_never_overlap(tmp_path: Path, database_url: str, clock) -> None:  # type: ignore[no-untyped-def]
    app = App.create(make_settings(tmp_path, database_url=database_url), clock=clock)
    init_db(app.engine)
    limiter = SharedRateLimiter(app.engine, "rate:test", 100.0)
    starts: list[float] = []
    lock = threading.Lock()

    def reserve() -> None:
        for _ in range(10):
            start = limiter._reserve(5)
            with lock:
                starts.append(start)

    threads = [threading.Thread(target=reserve) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    starts.sort()
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # 40 slices of 5 messages at 100/s: each slice 0.05 s, none overlapping.
    assert min(gaps) >= 0.05 - 1e-3
    assert starts[-1] - starts[0] >= 39 * 0.05 - 1e-3
    app.close()


def test_two_dispatchers_share_one_rate(tmp_path: Path, database_url: str,
                                        smtp_sink: SmtpSink) -> None:
    # Real time here: leases and the rate schedule must behave as in production.
    app = App.create(make_settings(tmp_path, database_url=database_url, dsn=smtp_sink.dsn,
                                   rate_limit=40.0, batch_size=10), clock=Clock())
    init_db(app.engine)
    with_feed(app, tmp_path)
    seed_subscribers(app, 80)
    edition_id, _ = start_sending(app, app.clock.today(app.settings.tz))
    if app.engine.dialect.name == "sqlite":
        dispatchers = [Dispatcher(app, edition_id, connections=2)]
    else:
        dispatchers = [Dispatcher(app, edition_id, connections=2) for _ in range(2)]
    started = time.monotonic()
    threads = [threading.Thread(target=d.run) for d in dispatchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert sorted(smtp_sink.recipients()) == sorted(f"reader{i}@example.org" for i in range(80))
    # 80 messages at 40/s cannot take less than 79/40 s, however many workers share them.
    assert elapsed >= 79 / 40 - 0.05
    app.close()
