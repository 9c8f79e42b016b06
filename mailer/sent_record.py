"""Writing "sent" outcomes on the hot path: the SQLite journal file and the direct recorder.

A connection may carry its next message only once its last outcome is durable (the bound on
duplicates after a kill -9), so "sent" is written once per round of answers, millions of
times a day: through the ORM that would cost more than the rest of the send. These two
write it straight to the driver, or first to a file; every other outcome goes through
`ledger.record`.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from mailer.ledger import sqlite_time

log = logging.getLogger("mailer.ledger")


def _sent_sql(mark: str) -> str:
    """Mark one claimed row sent: (provider id, message id, time, row id, claimer)."""
    return (f"UPDATE deliveries SET state='sent', provider_id={mark}, message_id={mark}, "
            f"sent_at={mark}, attempts=attempts+1, lease_until=NULL, error='' "
            f"WHERE id={mark} AND claimed_by={mark} AND state='claimed'")


class SentJournal:
    """"Sent" outcomes of one SQLite dispatcher, appended to a file beside the database and
    written into `deliveries` in one transaction per claim batch (`fold`).

    SMTP may send a connection's next message only once its last outcome is durable (the bound
    on duplicates after a kill -9). A SQLite commit for every round of answers costs the sending
    thread a large share of its time (docs/sending.md); one `write` to this file costs far
    less and is just as durable when the process dies: both sit in the kernel's page cache until it
    writes them back, and neither survives a power cut (SQLite's synchronous=NORMAL does not
    sync each commit either).

    One file per edition (`<database>-sent-<edition id>`), written only by the dispatcher that
    holds the edition's dispatch lock, folded before each claim (in the claim's transaction,
    so no row is claimed again while its outcome waits here), at the end of each run of
    sending and, for a dispatcher that died, by the next one before it returns that
    dispatcher's claims to the queue. Folding is idempotent (each row is guarded by its claim)
    and a line without its newline (a write cut short) is ignored. Until a fold, other
    processes see up to one claim batch of these rows as still claimed.
    """

    SQL = _sent_sql("?")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        # What this journal appended since the last `clear`, as `fold` writes it: folding
        # then need not read back and parse what it wrote (a good part of a fold's cost). None
        # while the file may hold lines of a run that died: the next fold reads the file.
        self._appended: list[tuple[str, str, str, int, str]] | None = (
            [] if os.fstat(self._fd).st_size == 0 else None)

    @classmethod
    def for_edition(cls, engine: Any, edition_id: int) -> SentJournal | None:
        """The journal of a file-backed SQLite database (None on PostgreSQL or in memory)."""
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        try:
            return cls(Path(f"{database}-sent-{edition_id}"))
        except OSError as exc:  # (SQLite's own -wal file needs the same directory)
            log.warning("no sent journal beside the database (%s): committing each outcome",
                        exc)
            return None

    def append(self, worker: str, rows: list[tuple[int, str, str]], now: datetime) -> None:
        """Make (claim id, message id, provider id) rows durable as sent; OSError if the
        file cannot take them (the caller then commits them to the database instead)."""
        when = sqlite_time(now)
        params = [(_one_field(pid[:300]), _one_field(mid), when, cid, worker)
                  for cid, mid, pid in rows]
        data = "".join(f"{cid}\t{worker}\t{mid}\t{pid}\t{when}\n"
                       for pid, mid, when, cid, worker in params).encode("utf-8")
        if os.write(self._fd, data) != len(data):
            raise OSError("short write to the sent journal")
        if self._appended is not None:
            self._appended.extend(params)

    def fold(self, session: Session) -> int:
        """Write every complete line into the ledger, inside the caller's transaction; call
        `clear` once it has committed. Returns the number of rows that changed."""
        params = self._appended if self._appended is not None else self._read()
        if not params:
            return 0
        raw = session.connection().connection.dbapi_connection
        assert raw is not None
        changed: int = raw.executemany(self.SQL, params).rowcount
        return changed

    def clear(self) -> None:
        """Empty the file once its lines are committed (appends go on at the new end)."""
        os.ftruncate(self._fd, 0)
        self._appended = []

    def _read(self) -> list[tuple[str, str, str, int, str]]:
        """The file's complete lines as `fold` writes them (after a run that died)."""
        try:
            content = self.path.read_bytes()
        except FileNotFoundError:
            return []
        params = []
        for line in content.split(b"\n")[:-1]:  # (text after the last newline is torn)
            fields = line.decode("utf-8", "replace").split("\t")
            if len(fields) != 5 or not fields[0].isdigit():
                log.warning("sent journal %s: skipping an unreadable line", self.path)
                continue
            cid, worker, mid, pid, when = fields
            params.append((pid, mid, when, int(cid), worker))
        return params

    def close(self, *, remove: bool = False) -> None:
        os.close(self._fd)
        if remove:
            self.path.unlink(missing_ok=True)


def _one_field(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")


class SentRecorder:
    """The hot path: mark sent rows in one short transaction, with minimal overhead.

    Recording SMTP messages as soon as the server accepted them, before the same connection
    carries another, is what bounds duplicates after a kill -9 to one per connection; doing
    it through the ORM costs many times more than this, and one commit for a whole round of
    connections less again. Other outcomes
    (rare) use `record`.
    """

    def __init__(self, engine: Any, worker: str) -> None:
        self.worker = worker
        self.engine = engine
        self.conn: Any = None  # connected at the first write, and again after an error
        self.sqlite = engine.dialect.name == "sqlite"
        self.sql = _sent_sql("?" if self.sqlite else "%s")

    def _connect(self) -> Any:
        conn = self.engine.connect()
        if not self.sqlite:
            # A killed client loses nothing committed; only a database crash could, and then
            # the claim's lease brings the row back.
            conn.exec_driver_sql("SET synchronous_commit TO off")
            conn.commit()
        self.conn = conn
        return conn

    def sent_many(self, rows: list[tuple[int, str, str]], now: datetime) -> int:
        """Mark (claim id, message id, provider id) rows sent, all or none; return how many
        were still ours to mark (a row whose lease ran out may have been taken over, or the
        rows were marked by an earlier call whose commit went through unseen). After an error
        the next call starts on a new connection: this one may be dead (a database restart)."""
        conn = self.conn if self.conn is not None else self._connect()
        try:
            return self._sent_many(conn, rows, now)
        except Exception:
            self.close()
            raise

    def _sent_many(self, conn: Any, rows: list[tuple[int, str, str]], now: datetime) -> int:
        if self.sqlite:
            # Straight to the driver (the engine leaves transaction control to us on SQLite):
            # a fraction of the cost of going through SQLAlchemy, per message.
            when = sqlite_time(now)
            raw = conn.connection.dbapi_connection
            assert raw is not None
            params = [(pid[:300], mid, when, cid, self.worker) for cid, mid, pid in rows]
            if len(params) == 1:
                # One statement in autocommit mode is its own atomic, durable transaction.
                one: int = raw.execute(self.sql, params[0]).rowcount
                return one
            raw.execute("BEGIN IMMEDIATE")
            try:
                changed: int = raw.executemany(self.sql, params).rowcount
                raw.execute("COMMIT")
            except BaseException:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                raise
            return changed
        result = conn.exec_driver_sql(
            self.sql, [(pid[:300], mid, now, cid, self.worker) for cid, mid, pid in rows])
        conn.commit()
        changed = result.rowcount
        return len(rows) if changed is None or changed < 0 else changed

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a dead connection has nothing left to close
                pass
