"""Many SMTP connections driven by one thread (`SmtpPool`), and a stream's state (`_Stream`).

Each message's exchange is a generator (`Connection.steps`) that stops wherever it waits for
its server; the pool advances whichever exchange's server has answered, so one thread keeps N
connections busy and every outcome rule stays the transport's own.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Generator, Iterable, Sequence
from typing import Generic, Protocol, TypeVar

from mailer.dkimsign import Signer
from mailer.errors import TransportError
from mailer.transports.base import Outgoing, Pause, Record, Result, Transport
from mailer.transports.smtp.signahead import SignedAhead

K = TypeVar("K")
# Messages signed ahead of the pool per connection: enough to keep the signing thread busy
# while the pool writes, few enough that a stop hands back little (`SignedAhead`).
SIGN_AHEAD = 4

# One message's exchange as a generator returning the message's Result. It yields WAIT where
# it has written a command and waits for the reply, and READY where the server is ready for the
# message data: a pool holds it there until the connection's previous outcome is recorded.
WAIT, READY = "wait", "ready"
Steps = Generator[str, None, Result]


def run_steps(steps: Steps) -> Result:
    """Run one message's exchange to the end: a plain blocking send."""
    try:
        while True:
            next(steps)
    except StopIteration as done:
        return done.value


class Connection(Protocol):
    """What the pool needs of one connection (`SmtpTransport` is one)."""

    name: str
    timeout: float
    upcoming: Outgoing | None
    signer: Signer | None  # DKIM: messages are signed ahead of the pool (`SignedAhead`)

    @property
    def connected(self) -> bool: ...
    @property
    def sock(self) -> socket.socket | None: ...
    @property
    def chains(self) -> bool: ...
    @property
    def unavailable(self) -> str: ...
    def open(self) -> bool: ...
    def close(self) -> None: ...
    def check(self) -> str: ...
    def steps(self, message: Outgoing) -> Steps: ...
    def discard(self) -> None: ...


class SmtpPool(Transport):
    """N SMTP connections driven by one thread, each message's exchange advancing as soon as
    its server answers (`stream`).

    One thread rather than one per connection: with the GIL, threads spend as long handing
    the interpreter to each other as sending. Every outcome rule is
    `SmtpTransport`'s own (its `steps`), and while one server works on a message the thread
    prepares the next one for another connection.
    """

    def __init__(self, transports: Sequence[Connection]) -> None:
        if not transports:
            raise ValueError("an SMTP pool needs at least one connection")
        self.transports = list(transports)
        self.name = self.transports[0].name
        self.max_batch = len(self.transports)
        self.uses_fields = False  # (the bytes are all SMTP sends)

    def __repr__(self) -> str:
        return f"<SmtpPool {len(self.transports)} x {self.transports[0]!r}>"

    def open(self) -> bool:
        """Open every connection at the same time; only the first one's failure is an error
        (the others connect on their first message, and drop out of the stream if they cannot).

        Each opening waits for the server's greeting and replies (EHLO, STARTTLS, AUTH): one
        after another, 32 connections to a relay 50 ms away would take seconds before the first
        message, on every send and after every reconnection of the pool.
        """
        outcomes: list[bool | TransportError] = [False] * len(self.transports)

        def open_one(index: int) -> None:
            try:
                outcomes[index] = self.transports[index].open()
            except TransportError as exc:
                outcomes[index] = exc

        others = [threading.Thread(target=open_one, args=(i,), name=f"smtp-open-{i}",
                                   daemon=True) for i in range(1, len(self.transports))]
        for thread in others:
            thread.start()
        open_one(0)
        for thread in others:
            thread.join()
        first = outcomes[0]
        if isinstance(first, TransportError):
            for transport in self.transports[1:]:
                transport.close()  # the caller sees a failed open: leave nothing open
            raise first
        return any(outcome is True for outcome in outcomes)

    def close(self) -> None:
        for transport in self.transports:
            transport.close()

    def check(self) -> str:
        return self.transports[0].check()

    @property
    def connected(self) -> int:
        return sum(t.connected for t in self.transports)

    @property
    def lost(self) -> bool:
        """No connection is left: the stream ended for want of one (see `stream`)."""
        return not self.connected

    def send(self, messages: list[Outgoing]) -> list[Result]:
        results: list[Result | None] = [None] * len(messages)

        def keep(done: list[tuple[int, Outgoing, Result]]) -> bool:
            for i, _, result in done:
                results[i] = result
            return True

        self.stream(enumerate(messages), keep)
        unsent = Result("retry", error="SMTP server unavailable: no connection could be opened")
        return [r or unsent for r in results]

    def stream(self, items: Iterable[tuple[K, Outgoing] | Pause],
               record: Record[K]) -> list[K]:
        """Send `items` over the pool until they run out or `record` returns False.

        `record` gets every finished message (with its key) before that message's connection
        sends another message's data (the next envelope may already be on its way), so a crash
        can leave at most one message per connection sent but unrecorded. It is called
        whenever no answer is waiting to be handled, or a connection needs it, with everything
        finished so far: several messages when several servers answered together, which the
        caller writes in one go. When `record` says stop, messages whose
        data is on its way are finished and recorded; the others are abandoned (their
        connections dropped, nothing of them delivered) and their keys returned; items not
        yet taken stay in `items`. A connection that cannot be (re)opened drops out of this
        stream after its message is recorded as a retry; when none is left the stream ends
        too (see `connected`).

        When its connection pipelines, the next item is taken as a message's data goes out,
        so that its envelope goes in the same write (`SmtpTransport.upcoming`); if the stream
        stops first, that item is abandoned with the others and its connection dropped.
        A source that must wait before its next item (a rate limit's next slot) yields a
        `Pause` instead of sleeping: the pool takes nothing more until then, and goes on
        reading answers, recording outcomes and sending the data of messages already under
        way meanwhile.
        """
        signer = self.transports[0].signer
        if signer is None:
            return _Stream(self.transports, items, record).run()
        ahead = SignedAhead(items, signer, window=SIGN_AHEAD * len(self.transports))
        try:
            return _Stream(self.transports, ahead, record).run() + ahead.unsent()
        finally:
            ahead.close()


class _Stream(Generic[K]):
    """One `SmtpPool.stream` call's state: which connection is doing what, and the outcomes
    not recorded yet. Its methods are the steps of the pool's event loop (`run`)."""

    __slots__ = ("transports", "size", "source", "record", "idle", "waiting", "held",
                 "finished", "unrecorded", "waiting_since", "sending", "abandoned",
                 "upcoming", "poller", "fds", "watched", "stopping", "resume_at")

    def __init__(self, transports: list[Connection],
                 items: Iterable[tuple[K, Outgoing] | Pause], record: Record[K]) -> None:
        self.transports = transports
        self.size = len(transports)
        self.source = iter(items)
        self.record = record
        self.idle = list(range(len(transports)))
        self.waiting: dict[int, tuple[K, Outgoing, Steps]] = {}  # for its server's reply
        self.held: dict[int, tuple[K, Outgoing, Steps]] = {}  # ready for data, not yet allowed
        self.finished: list[tuple[int, K, Outgoing, Result]] = []  # outcomes not recorded yet
        self.unrecorded: set[int] = set()  # the connections of those outcomes
        self.waiting_since: dict[int, float] = {}
        self.sending: set[int] = set()  # connections whose message data has gone out
        self.abandoned: list[K] = []
        self.upcoming: dict[int, tuple[K, Outgoing]] = {}  # taken to go behind a message's data
        self.poller = select.poll()
        self.fds: dict[int, int] = {}  # socket file descriptor -> connection
        self.watched: dict[int, int] = {}  # connection -> its file descriptor in the poller
        self.stopping = False  # no more items: the source ran out or `record` said stop
        self.resume_at = 0.0  # (monotonic) the source paused: take nothing before then

    def run(self) -> list[K]:
        """The event loop: start exchanges, record outcomes, wait for answers; return the
        keys of abandoned items."""
        try:
            while True:
                self.start_idle()
                # A connection may not send data before its last outcome is written, and time
                # with no answer to handle is free for writing: write every outcome there is,
                # in one go (the fewer left unwritten, the fewer a crash repeats).
                finished, waiting = self.finished, self.waiting
                due = bool(finished) and (bool(self.held) or len(finished) >= self.size)
                events = self.poller.poll(0) if waiting and not due else []
                if due or (finished and not events):
                    self.record_finished()
                    continue
                if not waiting and (pause := self.paused()) > 0:
                    time.sleep(pause)  # nothing under way: only the source's slot to wait for
                    continue
                if not waiting:
                    # (A connection left holding the envelope of an abandoned item hangs up
                    # at its next message or at close: `steps`, `close`.)
                    self.abandoned.extend(key for key, _ in self.upcoming.values())
                    return self.abandoned
                self.answered(events or self.wait())
        except BaseException:
            # (a failing source or `record`): no connection may be left mid-exchange, where
            # a QUIT at close would be taken for message text and wait out the timeout.
            for slot in {*self.waiting, *self.held, *self.sending}:
                self.transports[slot].discard()
            raise

    def take(self) -> tuple[K, Outgoing] | None:
        if self.stopping or time.monotonic() < self.resume_at:
            return None
        item = next(self.source, None)
        if isinstance(item, Pause):
            self.resume_at = time.monotonic() + item.seconds
            return None
        self.stopping = item is None
        return item

    def paused(self) -> float:
        """Seconds until the source's pause ends, when an idle connection waits for it."""
        return self.resume_at - time.monotonic() if self.idle and not self.stopping else 0.0

    def start_idle(self) -> None:
        """Start an exchange on every idle connection that has an item: first those whose
        item's envelope already went out behind their last data, then new items."""
        idle, upcoming = self.idle, self.upcoming
        for slot in [s for s in idle if s in upcoming]:
            idle.remove(slot)
            key, message = upcoming.pop(slot)
            self.advance(slot, key, message, self.transports[slot].steps(message))
        while idle:
            item = self.take()
            if item is None:
                break
            slot = idle.pop(0)
            self.advance(slot, item[0], item[1], self.transports[slot].steps(item[1]))

    def record_finished(self) -> None:
        """Hand every finished outcome to `record`, then let held connections send data."""
        done, self.finished = self.finished, []
        self.unrecorded.clear()
        if not self.record([(key, message, result) for _, key, message, result in done]):
            self.stopping = True
            sending = self.sending
            for slot in [*self.held, *(s for s in self.waiting if s not in sending)]:
                self.abandoned.append(self.abandon(slot))
            self.abandoned.extend(key for key, _ in self.upcoming.values())
            self.upcoming.clear()
        held = self.held
        for slot in list(held):
            self.go_ahead(slot)
            self.advance(slot, *held.pop(slot))

    def wait(self) -> list[tuple[int, int]]:
        """Wait for an answer, until the first exchange's timeout or the source's pause ends."""
        transports = self.transports
        waiting_since = self.waiting_since
        deadline = min(waiting_since[s] + transports[s].timeout for s in self.waiting)
        wait = deadline - time.monotonic()
        if (pause := self.paused()) > 0:
            wait = min(wait, pause)
        return self.poller.poll(max(0.0, wait) * 1000)

    def answered(self, events: list[tuple[int, int]]) -> None:
        """Advance the exchanges whose servers answered, and those that timed out."""
        fds, waiting, transports = self.fds, self.waiting, self.transports
        ready = [fds[fd] for fd, _ in events if fd in fds]
        now = time.monotonic()
        # A server silent for longer than its timeout: let that exchange time out now,
        # as a blocking read would have, without holding up the other connections.
        overdue = [s for s in waiting if s not in ready
                   and now - self.waiting_since[s] >= transports[s].timeout]
        for slot in ready + overdue:
            if slot in waiting:
                self.unwatch(slot)
                sock = transports[slot].sock
                if slot in overdue and sock is not None:
                    sock.settimeout(0.001)
                self.advance(slot, *waiting.pop(slot))
                if slot in overdue and sock is not None and sock.fileno() != -1:
                    sock.settimeout(transports[slot].timeout)

    def go_ahead(self, slot: int) -> None:
        """The exchange on `slot` goes on to send its data: from here on it is finished
        and recorded whatever happens, never abandoned."""
        self.sending.add(slot)
        transport = self.transports[slot]
        if transport.chains and slot not in self.upcoming:
            item = self.take()
            if item is not None:
                self.upcoming[slot] = item
                transport.upcoming = item[1]

    def advance(self, slot: int, key: K, message: Outgoing, steps: Steps) -> None:
        """Advance one exchange as far as it can go without waiting."""
        while True:
            try:
                step = next(steps)
            except StopIteration as done:
                self.finished.append((slot, key, message, done.value))
                self.unrecorded.add(slot)
                self.sending.discard(slot)
                if not self.transports[slot].unavailable:
                    self.idle.append(slot)  # its next envelope may go out at once
                return
            if step == READY:
                if slot in self.unrecorded:
                    self.held[slot] = (key, message, steps)
                    return
                self.go_ahead(slot)
                continue
            sock = self.transports[slot].sock
            self.waiting[slot] = (key, message, steps)
            self.waiting_since[slot] = time.monotonic()
            if sock is not None:
                fd = sock.fileno()
                self.fds[fd], self.watched[slot] = slot, fd
                self.poller.register(fd, select.POLLIN)
            return

    def unwatch(self, slot: int) -> None:
        fd = self.watched.pop(slot, None)
        if fd is not None:
            del self.fds[fd]
            self.poller.unregister(fd)

    def abandon(self, slot: int) -> K:
        """Give up an exchange whose data has not been sent: nothing of it was delivered."""
        held = self.held.pop(slot, None)
        key, _, steps = held if held is not None else self.waiting.pop(slot)
        self.unwatch(slot)
        steps.close()
        self.transports[slot].discard()
        return key
