"""Workers: claim -> fill -> send -> record, with retries, a shared rate limit and progress.

The dispatcher holds no SQL of its own beyond the ledger's functions and knows transports only
through their small interface: each worker streams its claimed rows through
`Transport.stream`. A transport that drives all N connections from one thread (SMTP's pool,
`Transport.pooled`) gets one worker, which writes the outcomes that arrive together in one
go; other transports get a worker thread per connection. Either way one process-wide token
bucket keeps the overall rate.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from mailer import ledger
from mailer.app import App
from mailer.dbretry import OutageRetry, is_outage, outage_reason
from mailer.errors import DatabaseOutage, MailerError, TransportError
from mailer.locks import LeaseLock, holder_id
from mailer.models import DELIVERED, PAUSED_SEND, SENDING, Edition
from mailer.pacing import Pacer, SharedRateLimiter
from mailer.personalise import Personaliser
from mailer.sent_record import SentJournal, SentRecorder
from mailer.transports import from_dsn
from mailer.transports.base import Outgoing, Pause, Result, StreamStopped, Transport

log = logging.getLogger("mailer.dispatch")

T = TypeVar("T")

TRANSPORT_WAIT_SECONDS = 120.0
# This many permanent failures in a row, with no success in between, pauses the edition.
MAX_CONSECUTIVE_FAILURES = 25
# Rows a pooled stream (SMTP) claims at a time, at least. A stream claims its next batch without
# stopping, so a bigger claim idles no connection; each claim is a transaction (on SQLite
# with the fold of the sent journal), whose cost per message falls as the claim grows
# (docs/sending.md).
STREAM_CLAIM_ROWS = 1000
# On SQLite "sent" outcomes wait in the sent journal until a fold, which each claim does; a
# slow relay takes minutes over a claim (1,000 rows at 10 a second), so a stream also folds
# when this long has passed: what others see (the staff progress page, `mailer editions
# show`) is never further behind. At full speed the claims come first and this never runs.
JOURNAL_FOLD_SECONDS = 1.0


class DispatchBusy(MailerError):
    """Another dispatcher already holds this edition (SQLite allows one at a time)."""


@dataclass
class Progress:
    audience: int = 0
    done_before: int = 0
    tally: ledger.Tally = field(default_factory=ledger.Tally)
    started: float = field(default_factory=time.monotonic)
    stopped_reason: str = ""

    @property
    def sent(self) -> int:
        return self.done_before + self.tally.sent

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.tally.sent / elapsed if elapsed > 0 else 0.0


class Dispatcher:
    """Sends one edition with N worker threads until its ledger has nothing due."""

    def __init__(self, app: App, edition_id: int, *, connections: int | None = None,
                 transport_factory: Callable[[], Transport] | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 worker_tag: str = "send", outages: OutageRetry | None = None) -> None:
        self.app = app
        self.edition_id = edition_id
        self.connections = connections or app.settings.connections
        self.transport_factory = transport_factory or (
            lambda: from_dsn(app.settings.dsn, app.settings)
        )
        self.on_progress = on_progress
        self.worker_base = holder_id(worker_tag)
        self.stop = threading.Event()
        self.limiter = (SharedRateLimiter(app.engine, f"rate:{edition_id}", app.settings.rate_limit)
                        if app.settings.rate_limit > 0 else None)
        self.progress = Progress()
        self.lock = threading.Lock()
        self.errors: list[str] = []
        self._state = ""
        self._state_at = 0.0
        self.consecutive_failures = 0
        self.pooled = False  # one worker drives every connection (see `_plan_workers`)
        # SMTP on SQLite: "sent" outcomes go to a file first (see SentJournal).
        # Usable only by the one SMTP thread (one writer), until a write to it fails.
        self.journal: SentJournal | None = None
        self.journal_usable = False
        self.folded_at = 0.0  # (monotonic) when the journal was last folded
        # SQLite has one writer: threads queue on a Python lock instead of on SQLite's busy
        # handler, whose sleeps would cost milliseconds per message.
        self.write_lock: Any = (threading.Lock() if app.engine.dialect.name == "sqlite"
                                else contextlib.nullcontext())
        # Every unit of database work goes through this: a database restart is waited out
        # (up to db_outage_grace) instead of stopping the send. `mailer worker` shares its own
        # between the editions it joins, so an outage is one line per process.
        self.outages = outages or OutageRetry(app.settings.db_outage_grace)
        self.outage: DatabaseOutage | None = None  # set when a worker gave up waiting

    # ---- helpers -----------------------------------------------------------------------
    def _edition_state_cached(self) -> str:
        """The edition's state, looked up at most every half second (pause/cancel latency)."""
        now = time.monotonic()
        with self.lock:
            if now - self._state_at < 0.5 and self._state:
                return self._state
        state = self._edition_state()
        with self.lock:
            self._state, self._state_at = state, now
        return state

    def _edition_state(self) -> str:
        def read() -> str:
            with self.app.sessions() as session:
                return ledger.edition_state(session, self.edition_id)

        return self.outages.run(read)

    def _write(self, work: Callable[[Session], T]) -> T:
        """`work` in a write transaction of its own, run again through a database outage."""
        def unit() -> T:
            with self.write_lock, self.app.sessions.begin() as session:
                return work(session)

        return self.outages.run(unit)

    def _finish_if_done(self) -> bool:
        """Mark the edition sent once no row is queued or claimed (whoever sees it first)."""
        return self._write(lambda session: ledger.finish_if_done(
            session, self.edition_id, self.app.clock.now()))

    def _folded(self, work: Callable[[Session], T]) -> T:
        """`work` in a write transaction that begins by writing the sent journal's outcomes
        into the ledger (so no row is claimed, released or counted while its outcome waits
        there); the journal is emptied once the transaction has committed, and the whole is
        run again through a database outage (folding twice changes nothing)."""
        def unit() -> T:
            with self.write_lock, self.app.sessions.begin() as session:
                if self.journal is not None:
                    self.journal.fold(session)
                result = work(session)
            if self.journal is not None:
                self.journal.clear()
            self.folded_at = time.monotonic()
            return result

        return self.outages.run(unit)

    def _fold_now(self) -> None:
        """The sent journal's outcomes into the ledger, in a transaction of their own."""
        self._folded(lambda session: None)

    def _claim(self, worker: str, batch: int) -> list[ledger.Claim]:
        """Claim up to `batch` due rows, folding the journal in the same transaction first so
        that no row is claimed again while its outcome waits there."""
        return self._folded(lambda session: ledger.claim(
            session, self.edition_id, worker, batch, self.app.clock.now(),
            self.app.settings.lease_seconds))

    # ---- the worker ----------------------------------------------------------------------
    def _plan_workers(self) -> tuple[int, Callable[[], Transport]]:
        """How many worker threads, and what each one sends with: one thread driving every
        connection when the transport pools them (`Transport.pooled`), else one per
        connection."""
        factory = self.transport_factory
        pooled = factory().pooled(factory, self.connections)  # (constructing does not connect)
        self.pooled = pooled is not None
        if pooled is not None:
            return 1, pooled
        return self.connections, factory

    def _worker(self, index: int, personaliser: Personaliser,
                factory: Callable[[], Transport]) -> None:
        worker = f"{self.worker_base}:{index}"
        settings = self.app.settings
        transport: Transport | None = None
        unavailable_since: float | None = None
        recorder = SentRecorder(self.app.engine, worker)
        try:
            while not self.stop.is_set():
                state = self._edition_state_cached()
                if state != SENDING:
                    return
                if transport is None:
                    try:
                        transport = factory()
                        transport.open()
                        unavailable_since = None
                    except TransportError as exc:
                        transport = None
                        unavailable_since = unavailable_since or time.monotonic()
                        waited = time.monotonic() - unavailable_since
                        if waited > TRANSPORT_WAIT_SECONDS:
                            self._fail(f"{exc}; gave up after {waited:.0f}s, "
                                       "queued messages are kept: run the send again to resume")
                            return
                        log.warning("transport unavailable (%s); retrying", exc)
                        self.stop.wait(min(10.0, 1.0 + waited / 4))
                        continue
                # A claim covers at least one full provider call (Postmark 500, SendGrid and
                # Mailgun 1,000); for one-message transports, batch_size rows (a pooled
                # stream at least STREAM_CLAIM_ROWS).
                batch = max(1, settings.batch_size, transport.max_batch)
                if self.pooled:
                    batch = max(batch, STREAM_CLAIM_ROWS)
                if settings.rate_limit > 0:
                    # Keep a batch well inside its lease at the configured rate.
                    share = settings.rate_limit * settings.lease_seconds / 4 / self.connections
                    batch = max(1, min(batch, int(share)))
                claims = self._claim(worker, batch)
                if not claims:
                    if self._idle_wait(worker):
                        return
                    continue
                transport = self._stream_claims(worker, claims, transport, personaliser,
                                                recorder, batch)
        finally:
            recorder.close()
            if transport is not None:
                _close_quietly(transport)

    def _release(self, worker: str, claims: list[ledger.Claim]) -> None:
        """Give claimed rows back to the queue (paused, stopped, transport gone)."""
        if claims:
            ids = [c.id for c in claims]
            self._folded(lambda session: ledger.release(session, worker, ids))

    def _renew(self, worker: str, claims: list[ledger.Claim]) -> set[int]:
        """Renew the lease on rows still in hand; the ids of those that are still ours."""
        ids = [c.id for c in claims]
        now, lease = self.app.clock.now(), self.app.settings.lease_seconds
        return self._write(lambda session: ledger.renew(session, worker, ids, now, lease))

    def _pacer(self, count: int) -> Pacer:
        """This batch's slice of the shared rate limit (a database write)."""
        assert self.limiter is not None
        limiter = self.limiter
        return self.outages.run(lambda: limiter.pacer(count))

    def _record(self, worker: str, outcomes: list[tuple[ledger.Claim, str, Result]],
                recorder: SentRecorder) -> bool:
        """Write outcomes to the ledger and the tally; False when the edition was just paused
        for too many failures in a row. Through a database outage the outcomes wait here, in
        memory, and the caller with them (an SMTP stream sends nothing more meanwhile): a
        message the server accepted is written as sent once the database is back, never
        given back to the queue."""
        settings = self.app.settings
        if all(r.status == "sent" for _, _, r in outcomes):
            rows = [(c.id, mid, r.provider_id) for c, mid, r in outcomes]
            recorded = -1
            if self.journal is not None and self.journal_usable:
                try:
                    self.journal.append(worker, rows, self.app.clock.now())
                    recorded = len(rows)  # (one dispatcher on SQLite: the rows are ours)
                except OSError as exc:
                    log.warning("cannot write the sent journal (%s); committing each "
                                "outcome instead", exc)
                    self.journal_usable = False
            if recorded < 0:
                now = self.app.clock.now()

                def mark_sent() -> int:
                    with self.write_lock:
                        return recorder.sent_many(rows, now)

                recorded = self.outages.run(mark_sent)
            tally = ledger.Tally(sent=recorded, lost=len(outcomes) - recorded)
        else:
            def record(session: Session) -> ledger.Tally:
                ledger.commit_without_waiting(session)
                return ledger.record(session, worker, outcomes, self.app.clock.now(),
                                     settings.max_attempts)

            tally = self._write(record)
        with self.lock:
            self.progress.tally.add(tally)
            if tally.sent:
                self.consecutive_failures = 0
            else:
                self.consecutive_failures += tally.failed - tally.bounced
            too_many = self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES
        if too_many:
            last = next((r.error for _, _, r in reversed(outcomes) if r.error), "")
            self._pause_for_errors(last)
        return not too_many

    def _record_unbuildable(self, worker: str, c: ledger.Claim, exc: ValueError) -> None:
        """A message that cannot be built for this recipient fails it alone: the recipient's
        problem, not ours, so it does not count towards pausing the edition."""
        outcome = [(c, "", Result("failed", error=f"cannot build: {exc}"))]
        tally = self._write(lambda session: ledger.record(
            session, worker, outcome, self.app.clock.now(), self.app.settings.max_attempts))
        with self.lock:
            self.progress.tally.add(tally)

    def _stream_claims(self, worker: str, claims: list[ledger.Claim], transport: Transport,
                       personaliser: Personaliser, recorder: SentRecorder,
                       batch: int) -> Transport | None:
        """Send claimed rows through `transport.stream`, recording each round of outcomes in
        one write (a commit, or on SQLite a line each in the sent journal) before the
        transport goes on: a provider call's results, or the answers several SMTP servers
        gave together (the pool fills the next message while servers work on the others).

        The next batch is claimed as soon as this one is all under way, inside the same
        stream: ending the stream at every batch would leave a pool's connections idle while
        the last messages of each batch finish (docs/sending.md has the figures).
        """
        settings = self.app.settings
        with_fields = transport.uses_fields
        current = claims  # the batch messages are being taken from
        taken = 0
        claimed_at = time.monotonic()
        # Rows of `current` another worker took over when our lease ran out during a long
        # database outage (a renewal did not find them ours): theirs to send, not ours.
        taken_over: set[int] = set()

        def messages() -> Iterator[tuple[ledger.Claim, Outgoing] | Pause]:
            nonlocal current, taken, claimed_at
            while current:
                pacer = self._pacer(len(current)) if self.limiter else None
                for c in current:
                    if pacer is not None and (delay := pacer.delay()) > 0:
                        # The pool waits for the slot in its poll, reading answers meanwhile
                        # (a sleep here would hold every server waiting for a message's data).
                        yield Pause(delay)
                    taken += 1
                    if taken_over and c.id in taken_over:
                        continue
                    try:
                        message = personaliser.outgoing(c, with_fields)
                    except ValueError as exc:  # e.g. an address the message cannot carry
                        self._record_unbuildable(worker, c, exc)
                        continue
                    if pacer is not None:
                        pacer.advance()
                    yield c, message
                current, taken, claimed_at = self._claim_more(worker, batch), 0, time.monotonic()
                taken_over.clear()

        def record(done: list[tuple[ledger.Claim, Outgoing, Result]]) -> bool:
            nonlocal claimed_at
            if not self._record(worker, [(c, m.message_id, r) for c, m, r in done], recorder):
                return False
            if (self.journal is not None and self.journal_usable
                    and time.monotonic() - self.folded_at > JOURNAL_FOLD_SECONDS):
                self._fold_now()
            if time.monotonic() - claimed_at > settings.lease_seconds / 3:
                # A slow batch keeps its rows: renew the lease (rows already recorded are no
                # longer claimed and are left alone) so no other worker sends them again.
                rest = current[taken:]
                ours = self._renew(worker, rest)
                taken_over.update(c.id for c in rest if c.id not in ours)
                claimed_at = time.monotonic()
            return not self.stop.is_set() and self._edition_state_cached() == SENDING

        try:
            abandoned = transport.stream(messages(), record)
        except StreamStopped as exc:
            # Bad API key, quota exhausted: no recipient can be reached; stop, keep every
            # unsent row queued for a later run.
            self._release(worker, exc.unsent + current[taken:])
            self._fail(str(exc))
            return transport
        # The ledger is complete whenever no stream runs: the journal folded, and the rows
        # not sent (paused, cancelled, stopped, or no connection left) given back.
        unsent = [c.id for c in abandoned + current[taken:]]
        self._folded(lambda session: ledger.release(session, worker, unsent))
        if transport.lost:  # (its connection is gone: reconnect with a new transport)
            _close_quietly(transport)
            return None
        return transport

    def _claim_more(self, worker: str, batch: int) -> list[ledger.Claim]:
        """The stream's next batch: none once the send is stopping, paused or cancelled."""
        if self.stop.is_set() or self._edition_state_cached() != SENDING:
            return []
        return self._claim(worker, batch)

    def _idle_wait(self, worker: str) -> bool:
        """Nothing claimable now: finished, or wait for retries / other workers' leases.

        After a database outage, rows still claimed by this worker, which holds none here, are
        a claim whose commit went through unseen: they go back to the queue rather than wait
        for their lease."""
        def look(session: Session) -> tuple[dict[str, int], Any]:
            ledger.recover_dead_claims(session, self.edition_id)
            if self.outages.outages:
                ledger.release_orphans(session, self.edition_id, worker)
            return (ledger.counts(session, self.edition_id),
                    ledger.next_due(session, self.edition_id))

        c, due = self._write(look)
        if not c["queued"] and not c["claimed"]:
            return True
        now = self.app.clock.now()
        wait = 0.5 if due is None else (due - now).total_seconds()
        # Waiting out a retry back-off may be skipped by a test clock; waiting for another
        # worker's lease may not (jumping over it would fake that worker's death).
        self.app.clock.wait(self.stop, min(1.0, max(0.05, wait)),
                            may_jump=due is not None and not c["claimed"])
        return False

    def _pause_for_errors(self, last_error: str) -> None:
        """Every recent message failed without a single success: the problem is ours (a
        rejected sender, revoked credentials), not the recipients'. Pause rather than burn
        through the whole list marking everyone failed (listmonk's "pause after N errors")."""
        self._write(lambda session: ledger.pause_send(
            session, self.edition_id,
            f"paused after {MAX_CONSECUTIVE_FAILURES} consecutive failures; "
            f"last error: {last_error}"))
        with self.lock:  # every worker of this process stops claiming at once
            self._state, self._state_at = PAUSED_SEND, time.monotonic()
        log.error("paused after %s consecutive failures: %s", MAX_CONSECUTIVE_FAILURES,
                  last_error)

    def _fail(self, reason: str) -> None:
        with self.lock:
            self.errors.append(reason)
            self.progress.stopped_reason = reason
        self.stop.set()

    # ---- run ------------------------------------------------------------------------------
    def run(self) -> Progress:
        # Worker threads mix socket waits with short bursts of Python; the default 5 ms GIL
        # switch interval lets one thread's burst stall the others' replies (convoy effect).
        previous_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(previous_interval, 0.0005))
        try:
            return self._run_with_lock()
        finally:
            sys.setswitchinterval(previous_interval)

    def _run_with_lock(self) -> Progress:
        sqlite_lock: LeaseLock | None = None
        if self.app.engine.dialect.name == "sqlite":
            sqlite_lock = LeaseLock(self.app.sessions, self.app.clock,
                                    f"dispatch:{self.edition_id}", lease_seconds=60)
            if not sqlite_lock.try_acquire():
                raise DispatchBusy(
                    f"edition is already being sent by {sqlite_lock.current_holder()} "
                    "(SQLite allows one dispatcher; use PostgreSQL for more workers)"
                )
        try:
            return self._run()
        finally:
            if sqlite_lock is not None:
                try:
                    sqlite_lock.release()
                except Exception as exc:
                    if not is_outage(exc):
                        raise
                    # (the database is still out: the lock's lease runs out instead, and a
                    # run on this machine takes it at once once this process has exited)

    def _run(self) -> Progress:
        self.journal = SentJournal.for_edition(self.app.engine, self.edition_id)
        try:
            return self._run_journalled()
        finally:
            journal, self.journal = self.journal, None
            if journal is not None:
                # Normally folded already; after an error, whatever is left goes in now.
                try:
                    with self.app.sessions.begin() as session:
                        journal.fold(session)
                except Exception as exc:  # noqa: BLE001 - keep the error that got us here
                    if is_outage(exc):
                        log.warning("the sent journal %s keeps its outcomes for the next run "
                                    "of this edition (%s)", journal.path,
                                    outage_reason(exc))
                    else:
                        log.exception("could not fold the sent journal %s; the next run of "
                                      "this edition will", journal.path)
                    journal.close()
                else:
                    journal.close(remove=True)

    def _start(self, session: Session) -> tuple[Edition, dict[str, int]]:
        """A run that died may have left outcomes in its journal: they go in first (this runs
        inside `_folded`), then (on SQLite we hold the only dispatch lock) any claim left
        behind belongs to a dead run and goes back to the queue."""
        edition = ledger.detached_edition(session, self.edition_id)
        if edition is None:
            raise MailerError(f"no edition with id {self.edition_id}")
        if self.app.engine.dialect.name == "sqlite":
            ledger.requeue_claims(session, self.edition_id)
        else:
            ledger.recover_dead_claims(session, self.edition_id)
        return edition, ledger.counts(session, self.edition_id)

    def _run_journalled(self) -> Progress:
        edition, c = self._folded(self._start)
        self.progress.audience = sum(c.values())
        self.progress.done_before = c[DELIVERED]
        personaliser = self.outages.run(lambda: Personaliser.for_edition(self.app, edition))
        workers, factory = self._plan_workers()
        # Only a pooled stream writes the journal: one thread, one writer.
        self.journal_usable = self.pooled
        threads = [
            threading.Thread(target=self._worker_guarded, args=(i, personaliser, factory),
                             name=f"dispatch-{i}", daemon=True)
            for i in range(workers)
        ]
        previous_term = None
        if threading.current_thread() is threading.main_thread():
            # SIGTERM (systemd stop, a deploy): finish the messages in flight, give the rest of
            # the claimed rows back, and exit; a later run or another worker resumes.
            def on_term(signum: int, frame: Any) -> None:
                self._fail("stopped by SIGTERM; queued messages are kept: run the send again "
                           "to resume")

            previous_term = signal.signal(signal.SIGTERM, on_term)
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.25)
                if self.on_progress:
                    self.on_progress(self.progress)
        except KeyboardInterrupt:
            self._fail("interrupted; queued messages are kept: run the send again to resume")
            for t in threads:
                t.join(timeout=30)
        finally:
            if previous_term is not None:
                signal.signal(signal.SIGTERM, previous_term)
        if self.outage is not None:
            raise self.outage
        self._fold_now()  # (every worker has stopped)
        if not self.errors and self._edition_state() == SENDING:
            self._finish_if_done()
        if self.on_progress:
            self.on_progress(self.progress)
        return self.progress

    def _worker_guarded(self, index: int, personaliser: Personaliser,
                        factory: Callable[[], Transport]) -> None:
        try:
            self._worker(index, personaliser, factory)
        except DatabaseOutage as exc:
            # Past db_outage_grace: every worker gives up at once (they share the outage's
            # start); the outcomes not yet written are those of the messages in flight.
            with self.lock:
                if self.outage is None:
                    self.outage = DatabaseOutage(
                        f"{exc}; queued messages are kept: run the send again once it is back")
            self._fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - a worker's crash must stop the send cleanly
            log.exception("worker %s failed", index)
            self._fail(f"worker failed: {exc}")


def _close_quietly(transport: Transport) -> None:
    try:
        transport.close()
    except Exception:  # noqa: BLE001 - closing must never hide the real outcome
        pass
