"""The click writer in a process of its own, fed through a socket by the web process's flusher.

The writer's work (fingerprints, the scanner rules, building the INSERT) is Python that holds
the interpreter lock, and in the web process it takes that lock from the redirects: under a
burst of readers it costs more redirects than the work itself is worth, because every turn it
takes makes the request threads wait. In a child process it runs on another core, at a lower
priority, and the web process keeps only the buffer and the hand-over, a `marshal` of plain
tuples.

The child is `python -c` started with `subprocess` and one end of a socket pair (not
`multiprocessing`, whose children re-import the parent's main module); it ends when the socket
closes, so a web process killed with -9 leaves no writer behind. One batch at a time: the
parent sends the hits (the redirects' own `RawHit` tuples) and waits for the answer: ("ok",
n); ("away", error) when the database cannot be reached, and the parent keeps the batch for
later, as with the writer on a thread; or ("error", text).

A child that had answered and then dies with a batch loses that batch, which may or may not
have been committed: sent again it could be counted twice, and a lost half second of
clicks is what docs/clicks.md already allows for a crash. The next batch starts a new child.
A child that ends before its first answer wrote nothing, and the batch goes to a new one; when
that happens `START_FAILURES` times in a row (an interpreter that cannot start us, as under
some application servers), the clicks are written on the web process's thread instead.
"""

from __future__ import annotations

import logging
import marshal
import os
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mailer.clicks.writer import BatchWriter, ClickWriter, RawHit
from mailer.config import Settings
from mailer.db import make_engine, session_factory
from mailer.urls import sqlite_file

log = logging.getLogger(__name__)

#: How often a parent waiting for an answer checks that the child is still there.
_ALIVE_SECONDS = 1.0
#: The child's scheduling niceness, relative to the web process's.
NICENESS = 10
#: Children that end before their first answer, in a row, before the thread takes over.
START_FAILURES = 3
#: The directory `mailer` is imported from here, which the child imports it from too.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_CHILD = "import sys; from mailer.clicks.writer_process import serve_writer; " \
         "serve_writer(int(sys.argv[1]))"


class WriterAway(Exception):
    """The writer process could not reach the database: nothing of the batch was written."""


class WriterGone(Exception):
    """The writer process ended (or failed) with the batch: it is lost, not written twice."""


def shares_database(database_url: str) -> bool:
    """Whether another process can open this database: not an in-memory SQLite one (nor a
    `file:` URI, which may name memory too)."""
    try:
        backend = make_url(database_url).get_backend_name()
    except ArgumentError:
        return False
    return backend != "sqlite" or sqlite_file(database_url) is not None


def writer_for(settings: Settings, sessions: sessionmaker[Session]) -> BatchWriter:
    """The writer `click_writer` asks for; on this thread when no other process could open
    the database."""
    if settings.click_writer == "process" and shares_database(settings.database_url):
        return WriterProcess(settings.database_url, fallback=ClickWriter(sessions))
    return ClickWriter(sessions)


class WriterProcess:
    """The parent's end: `write` as `ClickWriter.write` does, in the child process."""

    def __init__(self, database_url: str, fallback: BatchWriter) -> None:
        self._url = database_url
        # Where batches go once children have failed `START_FAILURES` times in a row without
        # answering once (an interpreter that cannot run `-c`, as under some app servers).
        self._fallback = fallback
        self._lock = threading.Lock()  # one batch in the pipe at a time
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._answered = False  # the running child has answered at least once
        self._failed_starts = 0
        self.on_fallback = False

    def write(self, batch: list[RawHit]) -> None:
        payload = marshal.dumps(batch)  # (plain tuples: no work per hit in the web process)
        with self._lock:
            kind, detail = self._exchange(payload)
        if kind == "fallback":
            self._fallback.write(batch)
        elif kind == "away":
            raise WriterAway(str(detail))
        elif kind != "ok":
            raise WriterGone(f"the click writer process failed: {detail}")

    def _exchange(self, payload: bytes) -> tuple[str, object]:
        """Send the batch to a child and return its answer. A child that had answered before
        and ends now may have written the batch: it is given up (`WriterGone`). One that ends
        before its first answer wrote nothing, and the batch goes to a new child; after
        `START_FAILURES` of those in a row, to the fallback for good."""
        while not self.on_fallback:
            try:
                conn = self._connection()
                conn.send_bytes(payload)
                answer = self._answer(conn)
            except (EOFError, OSError) as exc:
                self._stop()  # (the next child starts unanswered: `_connection`)
                if self._answered:
                    raise WriterGone(
                        f"the click writer process ended ({exc or 'no answer'})") from exc
                self._failed_starts += 1
                if self._failed_starts >= START_FAILURES:
                    log.warning("the click writer process ended %d times without answering "
                                "(%s); clicks are written on the web process's thread from "
                                "now on", START_FAILURES, exc or "no answer")
                    self.on_fallback = True
                continue
            self._answered, self._failed_starts = True, 0
            return answer
        return ("fallback", None)

    def _answer(self, conn: Connection) -> tuple[str, object]:
        while not conn.poll(_ALIVE_SECONDS):
            if self._process is None or self._process.poll() is not None:
                raise EOFError("it exited")
        kind, detail = marshal.loads(conn.recv_bytes())
        return str(kind), detail

    def _connection(self) -> Connection:
        if self._conn is not None and self._process is not None and self._process.poll() is None:
            return self._conn
        self._stop()
        ours, theirs = socket.socketpair()
        with ours, theirs:
            # The same `mailer` as this process's, whatever the working directory; the
            # database address goes through the socket, not the command line `ps` shows.
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                [_PACKAGE_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])}
            process = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(theirs.fileno())], env=env,
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
            conn = Connection(os.dup(ours.fileno()))
        conn.send_bytes(marshal.dumps(self._url))
        self._process, self._conn, self._answered = process, conn, False
        return conn

    def _stop(self) -> None:
        conn, process = self._conn, self._process
        self._conn = self._process = None
        if conn is not None:
            conn.close()  # the child sees the socket close and ends
        if process is not None:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    @property
    def pid(self) -> int | None:
        """The child's process id while one runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def close(self) -> None:
        with self._lock:
            self._stop()


def serve_writer(fd: int) -> None:
    """The child's loop: the database address, then a batch in and its answer out, until the
    parent closes the socket (or dies: the kernel closes it then)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # Behind the redirects (and a send) when the cores are all busy: a click can wait a
    # moment in the buffer, a reader cannot.
    os.nice(NICENESS)
    logging.basicConfig(level=logging.WARNING, format="click-writer: %(levelname)s %(message)s")
    conn = Connection(fd)
    try:
        engine = make_engine(str(marshal.loads(conn.recv_bytes())))
    except (EOFError, OSError):
        return
    writer = ClickWriter(session_factory(engine), in_web_process=False)
    try:
        while True:
            try:
                payload = conn.recv_bytes()
            except (EOFError, OSError):
                return
            batch = marshal.loads(payload)
            try:
                writer.write(batch)
                answer: tuple[str, int | str] = ("ok", len(batch))
            except SQLAlchemyError as exc:
                answer = ("away", type(exc).__name__)
            except Exception as exc:  # noqa: BLE001 - answered, and the loop goes on
                log.exception("a batch of %d click(s) could not be written", len(batch))
                answer = ("error", f"{type(exc).__name__}: {exc}")
            conn.send_bytes(marshal.dumps(answer))
    finally:
        engine.dispose()
