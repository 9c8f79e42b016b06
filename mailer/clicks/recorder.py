"""Counting off the request path: clicks are buffered in memory and handed twice a
second, by one thread per web process, to the writer: a child process of its own
(`mailer.clicks.writer_process`, the default) or `mailer.clicks.writer.ClickWriter` on that
thread, which then shares the interpreter lock with the request threads.

A redirect never waits for the database: `record` appends to a bounded buffer and returns.
The writer makes the fingerprints, applies the scanner rules and commits. When the database
is away the hits stay buffered (up to `MAX_BUFFER`) and are written when it is back. What a
crash or a kill loses is what was buffered, a fraction of a second of clicks: docs/privacy.md
and docs/clicks.md say so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mailer.clicks.writer import BatchWriter, ClickWriter, RawHit
from mailer.clicks.writer_process import WriterAway, WriterGone

log = logging.getLogger(__name__)

#: Half a second: each batch is one transaction for the writer, and fewer, larger ones cost it
#: less CPU a click (it shares the cores with the redirects and a send); the web process does
#: no work per hit to hand a batch over, so a larger one costs the redirects no more.
FLUSH_SECONDS = 0.5
HOUSEKEEPING_SECONDS = 3600.0
MAX_BUFFER = 100_000


class ClickRecorder:
    """The buffer and its flusher thread (started with the first hit)."""

    def __init__(self, sessions: sessionmaker[Session], *, writer: BatchWriter | None = None,
                 flush_seconds: float = FLUSH_SECONDS, max_buffer: int = MAX_BUFFER,
                 housekeeping: Callable[[], object] | None = None,
                 housekeeping_seconds: float = HOUSEKEEPING_SECONDS) -> None:
        self._sessions = sessions
        # Run on the flusher's thread every `housekeeping_seconds` (the retention purge): the
        # web app makes the fingerprints, so it sees they go after 48 hours without cron.
        self._housekeeping = housekeeping
        self._housekeeping_seconds = housekeeping_seconds
        # Where the batches are written: on this thread (`ClickWriter`), or in a process of
        # its own (`mailer.clicks.writer_process`, what `click_writer = "process"` chooses).
        self._writer: BatchWriter = writer or ClickWriter(sessions)
        self._buffer: deque[RawHit] = deque()
        self._max = max_buffer
        self._flush_seconds = flush_seconds
        self._lock = threading.Lock()      # the buffer
        self._flushing = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._in_flight = 0  # taken from the buffer by the flush under way
        self.dropped = 0

    def record(self, hit: RawHit) -> None:
        with self._lock:
            if len(self._buffer) >= self._max:
                self.dropped += 1  # the database has been away a long time: counts are lost
                return
            self._buffer.append(hit)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="click-flusher",
                                                daemon=True)
                self._thread.start()

    def pending(self) -> int:
        """Hits not written yet: buffered, or in the batch being written now."""
        with self._lock:
            return len(self._buffer) + self._in_flight

    def flush(self) -> int:
        """Write what is buffered; how many clicks were written (0 if the database is away,
        in which case they stay buffered for the next flush)."""
        with self._flushing:
            with self._lock:
                hits = list(self._buffer)
                self._buffer.clear()
                self._in_flight = len(hits)
            if not hits:
                return 0
            try:
                return self._write(hits)
            finally:
                with self._lock:
                    self._in_flight = 0

    def _write(self, hits: list[RawHit]) -> int:
        """Hand the batch to the writer; how many were written (see `flush`)."""
        try:
            self._writer.write(hits)
        except (SQLAlchemyError, WriterAway) as exc:
            log.warning("%d click(s) not written yet (%s); kept for the next flush",
                        len(hits), exc if isinstance(exc, WriterAway)
                        else type(exc).__name__)
            with self._lock:
                self._in_flight = 0  # (back in the buffer: counted there)
                room = max(0, self._max - len(self._buffer))
                self._buffer.extendleft(reversed(hits[:room]))
                self.dropped += len(hits) - min(room, len(hits))
            return 0
        except WriterGone as exc:
            log.error("%d click(s) lost: %s", len(hits), exc)
            with self._lock:
                self.dropped += len(hits)
            return 0
        return len(hits)

    def _run(self) -> None:
        last_housekeeping = time.monotonic()
        while True:
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the flusher must outlive any one bad batch
                log.exception("click flush failed")
            if (self._housekeeping is not None
                    and time.monotonic() - last_housekeeping >= self._housekeeping_seconds):
                last_housekeeping = time.monotonic()
                try:
                    self._housekeeping()
                except Exception:  # noqa: BLE001 - a database away now is retried next time
                    log.warning("click housekeeping failed; retried in an hour", exc_info=True)

    @property
    def writer(self) -> BatchWriter:
        return self._writer

    def close(self) -> None:
        """Flush what is left (a clean shutdown loses nothing), then stop the writer."""
        try:
            self.flush()
        finally:
            self._writer.close()
