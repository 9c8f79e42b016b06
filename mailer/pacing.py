"""A send-rate limit shared by every worker of a send, on any machine.

Each worker reserves a slice of the global schedule for a batch with one atomic UPDATE on a
row of `meta` ("the next free instant"), then paces its own messages inside that slice. One
database round trip per batch, exact across processes, and nothing to coordinate beyond the
database the workers already share.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError


class SharedRateLimiter:
    def __init__(self, engine: Engine, key: str, rate: float) -> None:
        self.engine = engine
        self.key = key
        self.rate = rate
        self.sqlite = engine.dialect.name == "sqlite"
        self._local = threading.Lock()

    def _reserve(self, count: int) -> float:
        """Reserve `count` message slots; return the instant (epoch seconds) the slice starts."""
        now = time.time()
        span = count / self.rate
        if self.sqlite:
            update = text(
                "UPDATE meta SET value = CAST(max(CAST(value AS REAL), :now) + :span AS TEXT) "
                "WHERE key = :key RETURNING CAST(value AS REAL)"
            )
        else:
            update = text(
                "UPDATE meta SET value = (GREATEST(value::float8, :now) + :span)::text "
                "WHERE key = :key RETURNING value::float8"
            )
        with self._local, self.engine.begin() as conn:
            row = conn.execute(update, {"now": now, "span": span, "key": self.key}).first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            text("INSERT INTO meta (key, value, updated_at) "
                                 "VALUES (:key, :value, CURRENT_TIMESTAMP)"),
                            {"key": self.key, "value": repr(now + span)},
                        )
                    return now
                except IntegrityError:
                    row = conn.execute(update, {"now": now, "span": span,
                                                "key": self.key}).first()
            assert row is not None
            return float(row[0]) - span

    def pacer(self, count: int) -> Pacer:
        return Pacer(self._reserve(count), 1.0 / self.rate)


class Pacer:
    """Hands out the reserved slots of one batch: the caller waits out `delay()` before each
    message (a transport's stream does, on a `Pause`), then takes the slot with `advance()`."""

    def __init__(self, start: float, interval: float) -> None:
        self.next = start
        self.interval = interval

    def delay(self) -> float:
        """Seconds until the next slot is due (0 or less: now)."""
        return self.next - time.time()

    def advance(self, count: int = 1) -> None:
        """Use `count` slots."""
        self.next += self.interval * count
