"""DKIM signing ahead of the SMTP pool (mailer/transports/smtp/signahead.py): what it reads
of the source, what it hands back when a stream stops, and signed copies a real SMTP server
receives (verified end to end by tests/test_dkim.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from mailer.config import Settings
from mailer.dkimsign import Key, Signer
from mailer.transports import Outgoing, from_dsn
from mailer.transports.base import Pause
from mailer.transports.smtp import SmtpPool, SmtpTransport
from mailer.transports.smtp.signahead import SignedAhead
from tests.support.smtpsink import SmtpSink


@pytest.fixture
def signer(ed_key: ed25519.Ed25519PrivateKey) -> Signer:
    return Signer("labourlist.example", [Key("ed", "ed25519-sha256", ed_key)])


def message(i: int) -> Outgoing:
    data = (f"From: daily@labourlist.example\r\nTo: reader{i}@example.org\r\n"
            f"Subject: {i}\r\nMessage-ID: <{i}@labourlist.example>\r\n\r\nHello {i}\r\n")
    return Outgoing(f"reader{i}@example.org", f"<{i}@labourlist.example>", data.encode(),
                    wire_ready=True)


class Source:
    """Items as the dispatcher yields them, counting how many were taken."""

    def __init__(self, items: list[tuple[int, Outgoing] | Pause]) -> None:
        self.items = items
        self.taken = 0

    def __iter__(self) -> Iterator[tuple[int, Outgoing] | Pause]:
        for item in self.items:
            self.taken += 1
            yield item


def test_it_signs_ahead_but_never_reads_past_a_pause(signer: Signer) -> None:
    pause = Pause(0.5)
    source = Source([(1, message(1)), (2, message(2)), pause, (3, message(3))])
    ahead = SignedAhead(source, signer, window=8)
    out = iter(ahead)
    key, first = next(out)  # type: ignore[misc]
    assert key == 1 and first.signed and first.data.startswith(b"DKIM-Signature: v=1;")
    assert source.taken == 3  # (1, 2 and the pause: not 3, whose turn the pause decides)
    assert next(out)[0] == 2  # type: ignore[index]
    assert next(out) is pause
    assert source.taken == 3
    assert next(out)[0] == 3  # type: ignore[index]
    assert next(out, None) is None
    ahead.close()


def test_the_window_bounds_what_is_taken_and_unsent_names_it(signer: Signer) -> None:
    source = Source([(i, message(i)) for i in range(20)])
    ahead = SignedAhead(source, signer, window=4)
    out = iter(ahead)
    assert next(out)[0] == 0  # type: ignore[index]
    assert source.taken == 4
    assert ahead.unsent() == [1, 2, 3]
    ahead.close()


def test_a_stopped_pooled_stream_loses_no_key(signer: Signer) -> None:
    """Every key is sent, handed back as abandoned, or still in the source: none is left
    claimed by a signature made ahead and never sent."""
    settings = Settings(from_addr="Daily <daily@labourlist.example>")
    with SmtpSink() as sink:
        transports = [from_dsn(sink.dsn, settings) for _ in range(2)]
        for transport in transports:
            assert isinstance(transport, SmtpTransport)
            transport.signer = signer
        pool = SmtpPool(transports)  # type: ignore[arg-type]
        items = [(i, message(i)) for i in range(40)]
        source = Source(items)  # type: ignore[arg-type]
        recorded: list[int] = []

        def record(done: list[tuple[int, Outgoing, object]]) -> bool:
            recorded.extend(key for key, _, _ in done)
            return len(recorded) < 5

        abandoned = pool.stream(source, record)  # type: ignore[arg-type]
        pool.close()
        assert sink.wait_for(len(recorded))
    never_taken = [key for key, _ in items[source.taken:]]
    assert sorted(recorded + abandoned + never_taken) == list(range(40))
    assert len(abandoned) >= 1  # (signed ahead, then handed back)
    assert all(m.data.startswith(b"DKIM-Signature:") for m in sink.messages)
