"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, a free port, scripted misbehaviour.

Tests talk to a real server rather than patching smtplib, so what we ship is what we test. The
sink collects what it accepts and can be told to refuse recipients, refuse or delay the message
after DATA, reply 421 and hang up, drop the connection abruptly before the 354 or after the
data arrived, close connections after a number of messages (as Yahoo does), require AUTH, and
speak STARTTLS or implicit TLS with a throw-away self-signed certificate.

    with SmtpSink(rcpt_policy=lambda addr, n: "451 4.7.1 Later" if n == 1 else None) as sink:
        transport = from_dsn(sink.dsn, settings)

Policies run on the server's thread; keep them simple and thread-safe (pure functions of their
arguments are best).
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import ipaddress
import os
import ssl
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Literal
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

RcptPolicy = Callable[[str, int], str | None]
DataPolicy = Callable[[list[str], int], str | None]
DropMode = Literal["before_data", "after_data"]
TlsKind = Literal["starttls", "implicit"]


@dataclass
class Received:
    """One message the sink accepted (or, in ``SmtpSink.dropped``, received and hung up on)."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message: EmailMessage
    connection: int = 0  # which connection carried it, counting from 1
    reply: str = ""  # what the sink answered after the data
    # What the client had already sent behind the data when the sink answered it, as far as
    # it is known (with data_delay: the client had that long to send more): b"MAIL" when it
    # pipelined the next message's envelope without waiting for this reply (RFC 2920).
    sent_behind: bytes = b""


class SmtpSink:
    """aiosmtpd Controller on 127.0.0.1 with a free port; collects messages thread-safely.

    rcpt_policy(address, attempt) / data_policy(rcpt_tos, attempt) / mail_policy(address,
    attempt) return None to accept or a reply such as "451 4.7.1 Try again later" or
    "550 5.1.1 No such user". ``attempt`` counts from 1: per address for RCPT, per recipient
    list for DATA, and over all MAIL commands for MAIL. A reply starting with 421 is sent and
    the connection is then closed, as real servers do: nothing after it is answered, not even
    commands the client had already pipelined (so too after the last of max_per_connection).
    A 2xx reply from data_policy accepts the message with that text. It offers PIPELINING,
    as Postfix and the big providers do (``pipelining=False`` leaves it out).

    drop_after=N: once N messages have been accepted, the next DATA is answered by closing the
    connection abruptly, once: ``drop_mode="before_data"`` before the 354 (nothing was sent),
    ``"after_data"`` after the whole message arrived and before the final reply (the client
    cannot know whether it was delivered; the message goes to ``dropped``).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        rcpt_policy: RcptPolicy | None = None,
        data_policy: DataPolicy | None = None,
        mail_policy: RcptPolicy | None = None,
        drop_after: int | None = None,
        drop_mode: DropMode = "after_data",
        auth: tuple[str, str] | None = None,
        tls: TlsKind | None = None,
        max_per_connection: int | None = None,
        data_delay: float = 0.0,
        pipelining: bool = True,
    ) -> None:
        self.rcpt_policy = rcpt_policy
        self.data_policy = data_policy
        self.mail_policy = mail_policy
        self.drop_after = drop_after
        self.drop_mode: DropMode = drop_mode
        self.auth = auth
        self.tls = tls
        self.max_per_connection = max_per_connection
        self.data_delay = data_delay
        self.pipelining = pipelining

        self.port = 0
        self.messages: list[Received] = []
        self.dropped: list[Received] = []
        self.rejected: list[tuple[str, str]] = []  # (address or "DATA", reply) for refusals
        self.commands: list[tuple[int, str]] = []  # (connection, verb) for EHLO/MAIL/RCPT/…
        self.logins: list[str] = []  # user names that authenticated successfully

        self._lock = threading.Condition()
        self._connections = 0
        self._rcpt_attempts: Counter[str] = Counter()
        self._data_attempts: Counter[tuple[str, ...]] = Counter()
        self._mail_attempts = 0
        self._dropped_once = False
        self._controller: _Controller | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> SmtpSink:
        """Start the server thread and wait until it answers."""
        if self._controller is not None:
            return self
        smtp_kwargs: dict[str, Any] = {
            "server_hostname": "sink.test",
            "ident": "SmtpSink",
            "timeout": 30,
        }
        if self.auth is not None:
            # Plain-text AUTH is fine on the loopback; aiosmtpd would otherwise hide AUTH.
            smtp_kwargs["auth_require_tls"] = False
            smtp_kwargs["authenticator"] = self._authenticate
        ssl_context = None
        if self.tls == "starttls":
            smtp_kwargs["tls_context"] = _server_tls_context()
        elif self.tls == "implicit":
            ssl_context = _server_tls_context()
        controller = _Controller(self, _Handler(self), ssl_context=ssl_context, **smtp_kwargs)
        controller.start()
        self.port = controller.port
        with self._lock:
            self._connections = 0  # forget the controller's own start-up probe
            self.commands.clear()
        self._controller = controller
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what tests read -------------------------------------------------------------------
    @property
    def dsn(self) -> str:
        """A MAILER_DSN that reaches this sink (credentials included when AUTH is on)."""
        auth = ""
        if self.auth is not None:
            auth = f"{quote(self.auth[0], safe='')}:{quote(self.auth[1], safe='')}@"
        if self.tls == "implicit":
            return f"smtps://{auth}{self.host}:{self.port}?verify_tls=0"
        if self.tls == "starttls":
            return f"smtp://{auth}{self.host}:{self.port}?tls=1&verify_tls=0"
        return f"smtp://{auth}{self.host}:{self.port}?tls=0"

    @property
    def connections(self) -> int:
        """How many client connections the sink has accepted since start()."""
        with self._lock:
            return self._connections

    def recipients(self) -> list[str]:
        """Every delivered RCPT, with repeats (a double send shows up twice)."""
        with self._lock:
            return [rcpt for received in self.messages for rcpt in received.rcpt_tos]

    def verbs(self, verb: str) -> int:
        """How many times a command (EHLO, MAIL, RCPT, RSET, DATA, QUIT) was received."""
        with self._lock:
            return sum(1 for _, seen in self.commands if seen == verb.upper())

    def wait_for(self, count: int, timeout: float = 10) -> bool:
        """Wait until at least ``count`` messages were accepted; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
            return True

    # ---- called on the server thread -------------------------------------------------------
    def _new_connection(self) -> int:
        with self._lock:
            self._connections += 1
            return self._connections

    def _command(self, server: Any, verb: str) -> None:
        with self._lock:
            self.commands.append((getattr(server, "sink_connection", 0), verb))

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        assert self.auth is not None
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode("utf-8", "replace"),
            auth_data.password.decode("utf-8", "replace"),
        ) == self.auth
        if ok:
            with self._lock:
                self.logins.append(self.auth[0])
        return AuthResult(success=ok, handled=False)

    def _mail_reply(self, address: str) -> str | None:
        with self._lock:
            self._mail_attempts += 1
            attempt = self._mail_attempts
        return self.mail_policy(address, attempt) if self.mail_policy else None

    def _rcpt_reply(self, address: str) -> str | None:
        with self._lock:
            self._rcpt_attempts[address] += 1
            attempt = self._rcpt_attempts[address]
        reply = self.rcpt_policy(address, attempt) if self.rcpt_policy else None
        if reply is not None and not reply.startswith("2"):
            with self._lock:
                self.rejected.append((address, reply))
        return reply

    def _data_reply(self, rcpt_tos: list[str]) -> str | None:
        key = tuple(rcpt_tos)
        with self._lock:
            self._data_attempts[key] += 1
            attempt = self._data_attempts[key]
        reply = self.data_policy(list(rcpt_tos), attempt) if self.data_policy else None
        if reply is not None and not reply.startswith("2"):
            with self._lock:
                self.rejected.append(("DATA", reply))
        return reply

    def _should_drop(self, mode: DropMode) -> bool:
        with self._lock:
            if (self.drop_after is None or self.drop_mode != mode or self._dropped_once
                    or len(self.messages) < self.drop_after):
                return False
            self._dropped_once = True
            return True

    def _record(self, target: list[Received], received: Received) -> None:
        with self._lock:
            target.append(received)
            self._lock.notify_all()


class _SinkSMTP(SMTP):
    """aiosmtpd's SMTP with a connection number and the 'hang up before 354' behaviour."""

    def __init__(self, sink: SmtpSink, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.sink = sink
        self.sink_connection = sink._new_connection()
        self.accepted_here = 0
        self.hang_up_after_reply = False

    async def push(self, status: str) -> None:
        await super().push(status)
        if self.hang_up_after_reply and self.transport is not None:
            # Like a real server that closes after N messages: nothing after this reply is
            # answered, even commands the client had already pipelined.
            self.transport.close()

    async def smtp_DATA(self, arg: str) -> None:
        self.sink._command(self, "DATA")
        if self.envelope is not None and self.envelope.rcpt_tos and self.sink._should_drop(
            "before_data"
        ):
            assert self.transport is not None
            self.transport.abort()  # connection_lost() then cancels this session's task
            return
        await super().smtp_DATA(arg)


class _Handler:
    """aiosmtpd hooks: each consults the sink's policies, then accepts or refuses."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    @staticmethod
    def _reply(server: _SinkSMTP, reply: str) -> str:
        if reply.startswith("421"):
            server.hang_up_after_reply = True  # send the reply, then hang up
        return reply

    async def handle_EHLO(self, server: _SinkSMTP, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        self.sink._command(server, "EHLO")
        session.host_name = hostname
        if self.sink.pipelining:
            # aiosmtpd reads commands one line at a time from a buffered stream, so it already
            # copes with pipelined commands; advertise it like Postfix does.
            responses = [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_MAIL(self, server: _SinkSMTP, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        self.sink._command(server, "MAIL")
        if self.sink.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        reply = self.sink._mail_reply(address)
        if reply is not None and not reply.startswith("2"):
            return self._reply(server, reply)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return reply or "250 2.1.0 Ok"

    async def handle_RCPT(self, server: _SinkSMTP, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        self.sink._command(server, "RCPT")
        reply = self.sink._rcpt_reply(address)
        if reply is not None and not reply.startswith("2"):
            return self._reply(server, reply)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return reply or "250 2.1.5 Ok"

    async def handle_RSET(self, server: _SinkSMTP, session: Any, envelope: Any) -> str:
        self.sink._command(server, "RSET")
        return "250 2.0.0 Ok"

    async def handle_QUIT(self, server: _SinkSMTP, session: Any, envelope: Any) -> str:
        self.sink._command(server, "QUIT")
        return "221 2.0.0 Bye"

    async def handle_DATA(self, server: _SinkSMTP, session: Any, envelope: Any) -> str:
        sink = self.sink
        data = bytes(envelope.original_content or b"")
        received = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            data=data,
            message=_parse(data),
            connection=server.sink_connection,
        )
        if sink._should_drop("after_data"):
            sink._record(sink.dropped, received)
            assert server.transport is not None
            server.transport.abort()
            await asyncio.sleep(3600)  # cancelled by connection_lost(); no reply is ever sent
        if sink.data_delay:
            await asyncio.sleep(sink.data_delay)
        # (asyncio.StreamReader keeps what has arrived and is not read yet in _buffer)
        received.sent_behind = bytes(getattr(server._reader, "_buffer", b"")[:4])
        reply = sink._data_reply(received.rcpt_tos)
        if reply is not None and not reply.startswith("2"):
            return self._reply(server, reply)
        received.reply = reply or f"250 2.0.0 Ok: queued as {uuid.uuid4().hex[:12].upper()}"
        sink._record(sink.messages, received)
        server.accepted_here += 1
        if (sink.max_per_connection is not None and server.transport is not None
                and server.accepted_here >= sink.max_per_connection):
            server.hang_up_after_reply = True  # silently, after the 250
        return received.reply


class _Controller(Controller):
    """Binds port 0 and learns the real port before aiosmtpd's start-up probe connects."""

    def __init__(self, sink: SmtpSink, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, hostname=SmtpSink.host, port=0, **kwargs)
        self.sink = sink

    def factory(self) -> SMTP:
        return _SinkSMTP(self.sink, self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def _parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


@functools.lru_cache(maxsize=1)
def _certificate() -> tuple[bytes, bytes]:
    """A self-signed certificate for localhost/127.0.0.1 (made once per test run)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _server_tls_context() -> ssl.SSLContext:
    cert_pem, key_pem = _certificate()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # load_cert_chain() reads files only: write both to a private temporary file, then delete.
    fd, path = tempfile.mkstemp(suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(cert_pem + key_pem)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)
    return context


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A running sink that accepts everything; stopped after the test."""
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def make_smtp_sink() -> Iterator[Callable[..., SmtpSink]]:
    """Start sinks with options (``make_smtp_sink(rcpt_policy=…)``); all stopped afterwards."""
    sinks: list[SmtpSink] = []

    def make(**options: Any) -> SmtpSink:
        sink = SmtpSink(**options).start()
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.stop()


__all__ = ["Received", "SmtpSink", "make_smtp_sink", "smtp_sink"]
