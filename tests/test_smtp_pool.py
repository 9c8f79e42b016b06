"""SmtpPool: N SMTP connections driven by one thread, against a real SMTP server (aiosmtpd).

The pool must give exactly the outcomes one connection gives, keep N messages in flight, let
no connection send a message's data before its previous outcome was recorded (the bound on
duplicates after a kill -9), and stop cleanly: nothing whose data went out is left unrecorded.
"""

from __future__ import annotations

from collections import Counter

import pytest

from mailer.config import Settings
from mailer.errors import TransportError
from mailer.transports import Outgoing, Result, from_dsn
from mailer.transports.smtp import SmtpPool, SmtpTransport
from tests.support.smtpsink import SmtpSink
from tests.test_transports import batch, statuses


@pytest.fixture
def settings() -> Settings:
    return Settings(from_addr="LabourList Daily <daily@labourlist.org>")


def pool_for(sink: SmtpSink, settings: Settings, n: int, options: str = "") -> SmtpPool:
    transports = [from_dsn(sink.dsn + options, settings) for _ in range(n)]
    assert all(isinstance(t, SmtpTransport) for t in transports)
    return SmtpPool(transports)  # type: ignore[arg-type]


@pytest.mark.parametrize("pipelining", [1, 0])
def test_pool_outcomes_are_a_single_connections(settings: Settings, pipelining: int) -> None:
    def rcpt(address: str, attempt: int) -> str | None:
        if address == "reader1@example.org" and attempt == 1:
            return "451 4.7.1 Try again later"
        if address == "reader2@example.org":
            return "550 5.1.1 <reader2@example.org>: No such user"
        return None

    def data(rcpts: list[str], attempt: int) -> str | None:
        return "552 5.3.4 Message too big" if rcpts == ["reader3@example.org"] else None

    with SmtpSink(rcpt_policy=rcpt, data_policy=data, pipelining=True) as sink:
        pool = pool_for(sink, settings, 3, f"&pipelining={pipelining}")
        with pool:
            results = pool.send(batch(9))
            assert pool.connected == 3
        assert statuses(results) == ["sent", "retry", "failed", "failed"] + ["sent"] * 5
        assert results[2].hard_bounce and not results[3].hard_bounce
        assert sink.connections == 3
        assert sorted(sink.recipients()) == sorted(
            f"reader{n}@example.org" for n in (0, 4, 5, 6, 7, 8))
        # The 9 messages went over all three connections, not one after another on one.
        assert set(Counter(m.connection for m in sink.messages)) == {1, 2, 3}


def test_pool_connections_send_the_next_envelope_behind_the_data(settings: Settings) -> None:
    """Each connection takes its next message as its data goes out, so that the envelope
    goes in the same write (one round trip per message); every message still goes exactly
    once, and no connection runs ahead of its recorded outcomes."""
    with SmtpSink(pipelining=True, data_delay=0.02) as sink:
        pool = pool_for(sink, settings, 3)
        recorded: list[str] = []

        def record(done: list[tuple[int, Outgoing, Result]]) -> bool:
            assert all(r.status == "sent" for _, _, r in done)
            recorded.extend(m.recipient for _, m, _ in done)
            return True

        messages = batch(30)
        with pool:
            assert pool.stream(((m.delivery_id, m) for m in messages), record) == []
    assert sorted(recorded) == sorted(sink.recipients()) == sorted(m.recipient for m in messages)
    behind = Counter(m.sent_behind for m in sink.messages)
    assert behind[b"MAIL"] >= 30 - 3 * 2, behind  # (the last of each connection has none)


def test_no_connection_sends_again_before_its_last_outcome_is_recorded(
        settings: Settings) -> None:
    with SmtpSink() as sink:
        pool = pool_for(sink, settings, 4)
        recorded: set[str] = set()
        groups: list[int] = []
        messages = batch(120)

        def record(done: list[tuple[int, Outgoing, Result]]) -> bool:
            # Each connection may have at most one message accepted and not yet recorded:
            # the one whose outcome is in `done`.
            unrecorded = Counter(m.connection for m in list(sink.messages)
                                 if m.rcpt_tos[0] not in recorded)
            assert max(unrecorded.values(), default=0) <= 1, unrecorded
            assert sum(unrecorded.values()) <= 4
            recorded.update(message.recipient for _, message, _ in done)
            groups.append(len(done))
            return True

        with pool:
            assert pool.stream(((m.delivery_id, m) for m in messages), record) == []
        assert recorded == {m.recipient for m in messages}
        assert sorted(sink.recipients()) == sorted(recorded)
        assert sum(groups) == 120 and max(groups) <= 4


def test_stop_finishes_messages_in_flight_and_abandons_the_rest(settings: Settings) -> None:
    with SmtpSink() as sink:
        pool = pool_for(sink, settings, 3)
        recorded: list[str] = []
        source = iter((m.delivery_id, m) for m in batch(50))

        def record(done: list[tuple[int | None, Outgoing, Result]]) -> bool:
            assert all(r.status == "sent" for _, _, r in done)
            recorded.extend(m.recipient for _, m, _ in done)
            return len(recorded) < 10

        with pool:
            abandoned = pool.stream(source, record)
        untaken = list(source)
        # Everything the server accepted was recorded; nothing was sent twice; every message
        # is accounted for exactly once: recorded, abandoned (nothing of it sent) or untaken.
        assert sorted(sink.recipients()) == sorted(recorded)
        assert len(set(recorded)) == len(recorded) >= 10
        keys = ([int(r[len("reader"):].split("@")[0]) for r in recorded] + abandoned
                + [k for k, _ in untaken])
        assert sorted(keys) == list(range(50))
        assert len(recorded) <= 10 + 3  # at most one more per connection, already on its way


def test_server_gone_ends_the_stream_with_retries_and_no_connection(settings: Settings) -> None:
    sink = SmtpSink().start()
    pool = pool_for(sink, settings, 3, "&timeout=5")
    outcomes: list[Result] = []

    def record(done: list[tuple[int | None, Outgoing, Result]]) -> bool:
        outcomes.extend(r for _, _, r in done)
        if len(outcomes) >= 6:
            sink.stop()
        return True

    source = iter((m.delivery_id, m) for m in batch(40))
    try:
        pool.open()
        pool.stream(source, record)
    finally:
        sink.stop()
        pool.close()
    assert pool.connected == 0
    sent = [r for r in outcomes if r.status == "sent"]
    # A message whose data was out when the server went has an unknown fate: one per
    # connection at most, delivered or not.
    unknown = [r for r in outcomes if r.status == "ambiguous"]
    assert len(unknown) <= 3
    assert 6 <= len(sent) <= len(sink.recipients()) <= len(sent) + len(unknown)
    assert {r.status for r in outcomes} <= {"sent", "retry", "ambiguous"}
    assert any(r.error.startswith("SMTP server unavailable") for r in outcomes)
    assert len(list(source)) > 0  # the rest were never taken: they stay queued


def test_pool_open_fails_only_when_its_first_connection_cannot_open(
        settings: Settings) -> None:
    with SmtpSink() as sink:
        dead = from_dsn("smtp://127.0.0.1:9?tls=0&timeout=2", settings)
        pool = SmtpPool([from_dsn(sink.dsn, settings), dead])  # type: ignore[list-item]
        with pool:
            assert pool.connected == 1
            results = pool.send(batch(4))
        # The connection that cannot open drops out after one retry; the other carries on.
        assert statuses(results).count("retry") == 1
        assert statuses(results).count("sent") == 3


def test_pool_opens_its_connections_at_the_same_time(settings: Settings) -> None:
    """A server that greets nobody until all five connections are in: opened one after
    another, the first would wait for a greeting that never comes (and time out)."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    clients: list[socket.socket] = []

    def serve() -> None:
        server.settimeout(5)
        while len(clients) < 5:
            try:
                clients.append(server.accept()[0])
            except TimeoutError:
                return
        for client in clients:
            client.sendall(b"220 test ESMTP\r\n")
            threading.Thread(target=answer, args=(client,), daemon=True).start()

    def answer(client: socket.socket) -> None:
        reader = client.makefile("rb")
        for line in reader:
            if line[:4].upper() == b"EHLO":
                client.sendall(b"250-test\r\n250 PIPELINING\r\n")
            elif line[:4].upper() == b"QUIT":
                client.sendall(b"221 bye\r\n")
                break

    greeter = threading.Thread(target=serve, daemon=True)
    greeter.start()
    pool = SmtpPool([from_dsn(f"smtp://127.0.0.1:{port}?tls=0&timeout=2", settings)  # type: ignore[misc]
                     for _ in range(5)])
    try:
        assert pool.open() is True
        assert pool.connected == 5
    finally:
        pool.close()
        for client in clients:
            client.close()
        server.close()
    greeter.join(timeout=5)


def test_a_failed_pool_open_leaves_no_connection_open(settings: Settings) -> None:
    with SmtpSink() as sink:
        dead = from_dsn("smtp://127.0.0.1:9?tls=0&timeout=2", settings)
        pool = SmtpPool([dead] + [from_dsn(sink.dsn, settings) for _ in range(3)])  # type: ignore[list-item]
        with pytest.raises(TransportError):
            pool.open()
        assert pool.connected == 0


def test_a_silent_server_times_out_per_connection_without_holding_up_the_rest(
        settings: Settings) -> None:
    import time

    with SmtpSink(data_delay=3) as sink:
        pool = pool_for(sink, settings, 3, "&timeout=0.5")
        with pool:
            start = time.monotonic()
            results = pool.send(batch(3))
            elapsed = time.monotonic() - start
    # Each connection waited its own half second for the verdict, at the same time: the
    # outcome is unknown (the data went out), and nobody waited for the others in turn.
    assert statuses(results) == ["ambiguous"] * 3
    assert elapsed < 1.4, elapsed


def _stop_at_round(settings: Settings, pipelining: bool, stop_at: int) -> None:
    with SmtpSink(pipelining=pipelining) as sink:
        pool = pool_for(sink, settings, 4)
        recorded: list[str] = []
        calls = 0
        source = iter((m.delivery_id, m) for m in batch(60))

        def record(done: list[tuple[int | None, Outgoing, Result]]) -> bool:
            nonlocal calls
            calls += 1
            recorded.extend(m.recipient for _, m, r in done if r.status == "sent")
            return calls < stop_at

        with pool:
            abandoned = pool.stream(source, record)
        delivered = set(sink.recipients())
        assert not delivered & {f"reader{k}@example.org" for k in abandoned}, stop_at
        assert sorted(delivered) == sorted(recorded), stop_at


@pytest.mark.parametrize("pipelining", [False, True])
def test_a_message_whose_data_went_out_is_never_abandoned(settings: Settings,
                                                          pipelining: bool) -> None:
    """Stopping at any round: an exchange that was held back at the data (its connection's
    previous outcome not yet recorded) and then let go has sent its data; if the stream is
    stopped while it waits for its final reply, it must be finished and recorded, not returned
    as abandoned (which would put a delivered message back in the queue)."""
    for stop_at in range(1, 25):
        _stop_at_round(settings, pipelining, stop_at)


def test_a_failing_source_leaves_no_connection_in_the_middle_of_a_message(
        settings: Settings) -> None:
    """The source raising (a database error while claiming the next batch) ends the stream
    with that error; connections caught after a 354 are dropped, so closing the pool does not
    send a QUIT into a message and wait out the timeout."""
    import time

    with SmtpSink() as sink:
        pool = pool_for(sink, settings, 3, "&timeout=5")
        recorded: list[str] = []

        def source():  # type: ignore[no-untyped-def]
            for m in batch(12):
                yield m.delivery_id, m
            raise RuntimeError("database is locked")

        def record(done: list[tuple[int | None, Outgoing, Result]]) -> bool:
            recorded.extend(m.recipient for _, m, r in done if r.status == "sent")
            return True

        pool.open()
        with pytest.raises(RuntimeError, match="database is locked"):
            pool.stream(source(), record)
        started = time.monotonic()
        pool.close()
        assert time.monotonic() - started < 2
        assert set(recorded) <= set(sink.recipients())
        assert len(sink.recipients()) <= len(recorded) + 3  # (one per connection at most)


def test_a_pausing_source_does_not_hold_up_answers(settings: Settings) -> None:
    """A rate limit's wait is a `Pause` from the source, not a sleep: meanwhile the pool reads
    answers and records outcomes (a sleep would hold them, and hold servers at their 354),
    and a pause with nothing under way does not end the stream."""
    import time

    from mailer.transports.base import Pause

    messages = batch(4)
    recorded_at: dict[str, float] = {}
    with SmtpSink() as sink:
        pool = pool_for(sink, settings, 2)
        started = time.monotonic()

        def source():  # type: ignore[no-untyped-def]
            yield messages[0].delivery_id, messages[0]
            yield messages[1].delivery_id, messages[1]
            yield Pause(0.5)
            yield messages[2].delivery_id, messages[2]
            yield Pause(0.3)
            yield messages[3].delivery_id, messages[3]

        def record(done: list[tuple[int | None, Outgoing, Result]]) -> bool:
            assert all(r.status == "sent" for _, _, r in done)
            recorded_at.update((m.recipient, time.monotonic() - started) for _, m, _ in done)
            return True

        with pool:
            assert pool.stream(source(), record) == []
        assert sorted(sink.recipients()) == sorted(m.recipient for m in messages)
    first, second, third, fourth = (recorded_at[m.recipient] for m in messages)
    assert first < 0.4 and second < 0.4  # recorded during the pause, not after it
    assert third >= 0.5 and fourth >= 0.8
