"""SMTP transport: one connection, many messages, and a precise outcome for each.

After Django's SMTP backend, one connection is opened by ``open()`` and reused for every message
and batch. Unlike ``smtplib.send_message``, each message is sent with the low-level commands
(MAIL, RCPT, DATA, then the final reply) so that we know *where* something went wrong:

* a refusal (4xx / 5xx) is a clean retry or failure for that recipient;
* a connection lost before the message data was completely sent cannot have delivered
  anything, so it is a safe retry;
* a connection lost after the data was sent, while waiting for the server's verdict, may or may
  not have delivered: that is ``ambiguous`` and must never be re-sent blindly (a blind retry is
  how listmonk and others double-send).

``send()`` never raises: a server that goes away mid-batch turns the rest of the batch into
retries, so results for the messages already sent are never lost. Only ``open()`` and
``check()`` raise ``TransportError`` (refused connection, failed TLS, bad credentials).

One transport object serves one worker: it is not thread-safe.
"""

from __future__ import annotations

import smtplib
import socket
import time
from collections.abc import Callable, Generator
from typing import NamedTuple

from mailer.config import Settings
from mailer.dkimsign import Signer
from mailer.errors import TransportError
from mailer.mime import PLAIN_ADDRESS_RE
from mailer.smtp_status import is_hard_bounce
from mailer.transports.base import Outgoing, Result, Status, Transport
from mailer.transports.dsn import Dsn
from mailer.transports.smtp.connect import Capabilities, Connector, TlsMode, reason
from mailer.transports.smtp.pool import READY, WAIT, SmtpPool, Steps, run_steps
from mailer.transports.smtp.replies import getreply, reply_buffered
from mailer.transports.smtp.wire import envelope, send_data, wire_data
from mailer.verp import sender_for as verp_sender

DEFAULT_TIMEOUT = 30.0
AMBIGUOUS_ERROR = "connection lost after the message data was sent; outcome unknown"


class _Prepared(NamedTuple):
    """One message's bytes, envelope sender and MAIL options; `plain` when both addresses go
    into MAIL and RCPT as they are; `pipelined` when its envelope can also go as one RFC 2920
    group; `refused` when it cannot be sent over this connection at all. (A tuple: one per
    message, and a frozen dataclass costs several times as much to make.)"""

    data: bytes
    end: bytes
    sender: str
    options: list[str]
    plain: bool
    pipelined: bool
    refused: Result | None = None


class _StaleConnection(Exception):
    """A reused connection turned out to be closed before this message started."""


class SmtpTransport(Connector, Transport):
    """Sends through an SMTP server (``smtp://`` with STARTTLS, ``smtps://`` implicit TLS)."""

    max_batch = 50
    uses_fields = False  # (the bytes are all SMTP sends)

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        sender: str,
        user: str = "",
        password: str = "",
        implicit_tls: bool = False,
        starttls: TlsMode = "auto",
        verify_tls: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        local_hostname: str | None = None,
        pipelining: bool = True,
        verp: bool = False,
        signer: Signer | None = None,
    ) -> None:
        if not host:
            raise TransportError("MAILER_DSN for SMTP needs a host, e.g. smtp://smtp.example.org:587")
        if password and not user:
            raise TransportError("MAILER_DSN has an SMTP password but no user name")
        if implicit_tls and starttls == "never":
            raise TransportError("MAILER_DSN: smtps:// always uses TLS; tls=0 contradicts it")
        if not sender or "@" not in sender:
            raise TransportError("setting from_addr: no address to use as the SMTP envelope sender")
        self.host = host
        self.port = port or (465 if implicit_tls else 25)
        self.sender = sender
        self._plain_sender = bool(PLAIN_ADDRESS_RE.fullmatch(sender))  # MAIL FROM as it is
        self.verp = verp  # each delivery's own envelope sender (`mailer.verp`)
        self.signer = signer  # DKIM (`mailer.dkimsign`), when configured
        self.user = user
        self._password = password
        self.implicit_tls = implicit_tls
        self.starttls_mode: TlsMode = starttls
        self.verify_tls = verify_tls
        self.timeout = timeout
        self.local_hostname = local_hostname
        self.pipelining = pipelining
        self.name = "smtps" if implicit_tls else "smtp"
        self._conn: smtplib.SMTP | None = None
        self._caps = Capabilities()
        self._unavailable = ""
        # Set by the caller just before a message's data goes out: the message this
        # connection sends next, whose envelope may go in the same write (see `_deliver`).
        self.upcoming: Outgoing | None = None
        # The message whose envelope is on the wire behind the last data, and its bytes.
        self._chained: tuple[Outgoing, _Prepared] | None = None

    @classmethod
    def from_dsn(cls, dsn: Dsn, settings: Settings) -> SmtpTransport:
        """Build from ``smtp://`` / ``smtps://``; the password may come from MAILER_SMTP_PASSWORD.

        Like Symfony Mailer, ``smtp://`` defaults to port 25, ``smtps://`` to 465, and
        ``smtp://host:465`` means implicit TLS because nothing else works on that port.
        """
        dsn.check_options({"tls", "verify_tls", "timeout", "local_hostname", "pipelining"})
        implicit = dsn.scheme == "smtps" or (dsn.scheme == "smtp" and dsn.port == 465)
        mode: TlsMode = "auto"
        if "tls" in dsn.options and dsn.options["tls"].strip().lower() != "auto":
            mode = "required" if dsn.bool_option("tls", True) else "never"
        password = dsn.password or (settings.smtp_password if dsn.user else "")
        return cls(
            dsn.host,
            dsn.port,
            sender=settings.envelope_sender,
            user=dsn.user,
            password=password,
            implicit_tls=implicit,
            starttls=mode,
            verify_tls=dsn.bool_option("verify_tls", True),
            timeout=dsn.float_option("timeout", DEFAULT_TIMEOUT),
            pipelining=dsn.bool_option("pipelining", True),
            local_hostname=dsn.options.get("local_hostname") or None,
            verp=settings.bounce_verp,
            signer=Signer.of(settings),
        )

    def __repr__(self) -> str:
        return f"<SmtpTransport {self.name}://{self.where} user={self.user!r}>"

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def sock(self) -> socket.socket | None:
        """The connection's socket, for a pool waiting on many connections at once."""
        return self._conn.sock if self._conn is not None else None

    @property
    def chains(self) -> bool:
        """Whether this connection pipelines, so that a message's envelope can go out behind
        the previous message's data (`upcoming`)."""
        return self.pipelining and self._caps.pipelining

    @property
    def unavailable(self) -> str:
        """Why the last message could not even connect ("" when it could)."""
        return self._unavailable

    # ---- Transport interface -------------------------------------------------------------
    def open(self) -> bool:
        """Connect, EHLO, STARTTLS, AUTH; raise TransportError with a one-line reason."""
        if self._conn is not None:
            return False
        self._conn, _ = self._connect()
        self._caps = Capabilities.of(self._conn)
        return True

    def close(self) -> None:
        if self._chained is not None:
            # The server took the next DATA and waits for that message: a QUIT now would go
            # in as its first line (and smtplib would take the MAIL reply still unread for
            # QUIT's). Hang up instead; nothing of that message was sent.
            self.discard()
        conn, self._conn = self._conn, None
        if conn is not None:
            _hang_up(conn)

    def check(self) -> str:
        """Connect on a separate connection, go as far as AUTH, QUIT; say what happened."""
        conn, steps = self._connect()
        _hang_up(conn)
        return f"{self.name} {self.where}: {', '.join(steps)}"

    def pooled(self, factory: Callable[[], Transport],
               connections: int) -> Callable[[], Transport]:
        """All connections go to one thread (`SmtpPool`): with the GIL, N threads spend as
        long handing the interpreter to each other as sending."""
        def connection() -> SmtpTransport:
            transport = factory()
            assert isinstance(transport, SmtpTransport)
            return transport

        return lambda: SmtpPool([connection() for _ in range(connections)])

    def send(self, messages: list[Outgoing]) -> list[Result]:
        """One Result per message, in order; never raises (see the module docstring)."""
        results: list[Result] = []
        self._unavailable = ""
        for i, message in enumerate(messages):
            if self._unavailable:
                results.append(Result("retry", error=self._unavailable))
                continue
            self.upcoming = messages[i + 1] if i + 1 < len(messages) else None
            results.append(run_steps(self.steps(message)))
        self.upcoming = None
        return results

    def steps(self, message: Outgoing) -> Steps:
        """Send one message, yielding each time it waits for the server (see `SmtpPool`).

        Run to the end with `run_steps` it is a plain blocking send. It connects if needed,
        and reconnects once if a reused connection turns out to have been closed by the server
        before this message started (idle timeouts), which cannot have delivered anything.
        """
        self._unavailable = ""
        if self._chained is not None and self._chained[0] is not message:
            self.discard()  # another message's envelope is on the wire: start afresh
        for attempt in (1, 2):
            fresh = self._conn is None
            if fresh:
                try:
                    self.open()
                except TransportError as exc:
                    self._unavailable = f"SMTP server unavailable: {exc}"
                    return Result("retry", error=self._unavailable)
            try:
                return (yield from self._deliver(message,
                                                 may_be_stale=not fresh and attempt == 1))
            except _StaleConnection:
                continue  # the server had closed a reused connection: reconnect once
        raise AssertionError("a fresh connection is never stale")  # pragma: no cover

    # ---- one message -----------------------------------------------------------------------
    def prepare(self, message: Outgoing) -> _Prepared:
        """What the exchange of `message` writes, worked out once (also ahead of its turn,
        when its envelope goes out with the previous message's data)."""
        raw = message.data
        if self.signer is not None and not message.signed:
            raw = self.signer.sign(raw, now=int(time.time()))
        if message.wire_ready:
            # 7-bit, CRLF, no line to dot-stuff: the data as it is, then the terminator,
            # written together without copying 50 KB into one string (`_send_data`).
            data, end = raw, b".\r\n"
        else:
            data, end = wire_data(raw), b""
        options: list[str] = []
        caps = self._caps
        sender = self.sender
        if self.verp and message.delivery_id is not None:
            sender = verp_sender(sender, message.message_id)
        if not (sender.isascii() and message.recipient.isascii()):
            if not caps.smtputf8:
                return _Prepared(data, end, sender, options, False, False, Result(
                    "failed", error="the address is not ASCII and the SMTP server does not "
                                    "offer SMTPUTF8"))
            options.append("SMTPUTF8")  # smtplib then encodes commands as UTF-8
        if caps.size:
            options.append(f"SIZE={len(data) + len(end)}")
        if caps.eight_bit_mime and not message.wire_ready and not data.isascii():
            options.append("BODY=8BITMIME")
        plain = bool("SMTPUTF8" not in options and self._plain_sender
                     and PLAIN_ADDRESS_RE.fullmatch(message.recipient))
        return _Prepared(data, end, sender, options, plain, plain and self.chains)

    def _deliver(self, message: Outgoing, *, may_be_stale: bool) -> Steps:
        conn = self._conn
        assert conn is not None
        data_sent = False
        tail_lost = False
        try:
            conn.command_encoding = "ascii"
            chained, self._chained = self._chained, None
            written = chained is not None and chained[0] is message
            prepared = chained[1] if written and chained is not None else self.prepare(message)
            if prepared.refused is not None:
                return prepared.refused
            data, end, options = prepared.data, prepared.end, prepared.options
            if prepared.pipelined:
                refused = yield from self._pipelined_envelope(
                    conn, prepared.sender, message.recipient, options,
                    may_be_stale=may_be_stale, written=written)
            else:
                refused = yield from self._stepwise_envelope(
                    conn, prepared.sender, message.recipient, options, plain=prepared.plain,
                    may_be_stale=may_be_stale)
            if refused is not None:
                return refused

            yield READY
            # RFC 2920: the next message's MAIL, RCPT and DATA may follow this one's data in
            # the same write, so a connection waits for one round trip per message, not two.
            # Nothing of the next message is sent before its own 354 and its own turn.
            tail = b""
            upcoming, self.upcoming = self.upcoming, None
            if upcoming is not None:
                ahead = self.prepare(upcoming)
                if ahead.pipelined:  # (never when refused)
                    tail = envelope(ahead.sender, upcoming.recipient, ahead.options)
                    self._chained = (upcoming, ahead)
            try:
                tail_lost = not send_data(conn, data, end, tail)
            except OSError as exc:
                # The terminating "." never got through, so the server cannot have accepted it.
                self.discard()
                return Result("retry", error=f"connection lost while sending the message data: "
                                             f"{reason(exc)}")
            data_sent = True
            if tail_lost:
                self._chained = None  # (the connection is dropped once this reply is read)
            yield WAIT

            try:
                code, text = self._reply(getreply(conn))
            except OSError:
                self.discard()
                return Result("ambiguous", error=AMBIGUOUS_ERROR)
            if tail_lost:
                self.discard()  # half a pipelined envelope may be on the wire: start afresh
            if code == -1:  # an unreadable reply: we cannot tell what the server decided
                self.discard()
                return Result("ambiguous", error=f"{AMBIGUOUS_ERROR} (unreadable reply)")
            if 200 <= code < 300:
                return Result("sent", provider_id=text)
            if code == 421:
                self.discard()
            status: Status = "failed" if 500 <= code < 600 else "retry"
            hard = is_hard_bounce(code, text)
            return Result(status, error=f"{code} {text}", hard_bounce=hard,
                          suppress_reason="bounced" if hard else "")
        except _StaleConnection:
            raise
        except Exception as exc:  # never lose the results of the messages already sent
            self.discard()
            status = "ambiguous" if data_sent else "retry"
            return Result(status, error=f"unexpected error: {type(exc).__name__}: {exc}")

    def _stepwise_envelope(self, conn: smtplib.SMTP, sender: str, recipient: str,
                           options: list[str], *,
                           plain: bool, may_be_stale: bool) -> Generator[str, None,
                                                                          Result | None]:
        """MAIL, RCPT, DATA one at a time; None when the server is ready for the data.

        Plain ASCII addresses (every address we send from or to was validated at the door) are
        written directly; anything else goes through smtplib's own quoting.
        """
        extra = (" " + " ".join(options)) if options else ""
        try:
            if plain:
                mail = yield from _ask(conn, "mail", f"FROM:<{sender}>{extra}")
            else:
                mail = conn.mail(sender, options)
            code, text = self._reply(mail)
        except OSError as exc:  # smtplib's exceptions are OSErrors too
            self.discard()
            if may_be_stale:
                raise _StaleConnection from exc
            return Result("retry", error=f"connection lost at MAIL FROM: {reason(exc)}")
        if not 200 <= code < 300:
            return self._refused(code, f"MAIL FROM refused: {code} {text}", hard=False)

        try:
            if plain:
                rcpt = yield from _ask(conn, "rcpt", f"TO:<{recipient}>")
            else:
                rcpt = conn.rcpt(recipient)
            code, text = self._reply(rcpt)
        except OSError as exc:
            self.discard()
            return Result("retry", error=f"connection lost at RCPT TO: {reason(exc)}")
        if not 200 <= code < 300:
            return self._refused(code, f"{code} {text}", hard=is_hard_bounce(code, text))

        try:
            code, text = self._reply((yield from _ask(conn, "DATA", "")))
        except OSError as exc:
            self.discard()
            return Result("retry", error=f"connection lost at DATA: {reason(exc)}")
        if code != 354:
            return self._refused(code, f"DATA refused: {code} {text}", hard=False)
        return None

    def _pipelined_envelope(self, conn: smtplib.SMTP, sender: str, recipient: str,
                            options: list[str], *,
                            may_be_stale: bool, written: bool = False) -> Generator[
                                str, None, Result | None]:
        """RFC 2920: MAIL, RCPT and DATA in one write, then their three replies in order.

        Outcomes are exactly those of the stepwise exchange: a refused MAIL or RCPT is final
        for this message (the server then refuses DATA too), and nothing of the message has
        been sent until DATA's 354 arrived, so any failure up to here is safe to retry.
        `written`: the commands already went out behind the previous message's data.
        """
        try:
            if not written:
                conn.send(envelope(sender, recipient, options))
                yield WAIT
            elif not reply_buffered(conn):
                yield WAIT
            mail = getreply(conn)
        except OSError as exc:
            self.discard()
            if may_be_stale:
                raise _StaleConnection from exc
            return Result("retry", error=f"connection lost at MAIL FROM: {reason(exc)}")
        rcpt: tuple[int, bytes] | None = None
        try:
            if not reply_buffered(conn):
                yield WAIT  # (a server may answer a pipelined group one reply at a time)
            rcpt = getreply(conn)
            if not reply_buffered(conn):
                yield WAIT
            data = getreply(conn)
        except OSError as exc:
            self.discard()
            # A refusal read before the hang-up says why (a 421 announces it; a 550 is still
            # a bounce): the outcome is the refusal's.
            return self._envelope_refused(mail, rcpt) or Result(
                "retry", error=f"connection lost at RCPT TO/DATA: {reason(exc)}")
        envelope_ok = 200 <= mail[0] < 300 and 200 <= rcpt[0] < 300
        if data[0] == 354 and envelope_ok:
            return None  # (the replies' text matters only when something was refused)
        data_code, data_text = self._reply(data)
        if data_code == 354:
            # A server should refuse DATA without a valid recipient; if it did not, close the
            # (empty) message so the conversation stays in step, then reset below.
            try:
                conn.send(b".\r\n")
                conn.getreply()
            except OSError:
                self.discard()
        refused = self._envelope_refused(mail, rcpt)
        if refused is not None:
            return refused
        if data_code != 354:
            return self._refused(data_code, f"DATA refused: {data_code} {data_text}",
                                 hard=False)
        return None

    def _envelope_refused(self, mail: tuple[int, bytes],
                          rcpt: tuple[int, bytes] | None) -> Result | None:
        """The outcome of a refused MAIL, else of a refused RCPT (which may be a bounce);
        None when neither was refused (`rcpt` None: its reply never came)."""
        if not 200 <= mail[0] < 300:
            code, text = self._reply(mail)
            return self._refused(code, f"MAIL FROM refused: {code} {text}", hard=False)
        if rcpt is not None and not 200 <= rcpt[0] < 300:
            code, text = self._reply(rcpt)
            return self._refused(code, f"{code} {text}", hard=is_hard_bounce(code, text))
        return None

    def _refused(self, code: int, error: str, *, hard: bool) -> Result:
        """A refused MAIL/RCPT/DATA command: reset the transaction (or drop on 421)."""
        if code == 421 or code == -1:
            self.discard()  # the server is closing the connection (or talking nonsense)
        else:
            self._rset()
        status: Status = "failed" if 500 <= code < 600 else "retry"
        return Result(status, error=error, hard_bounce=hard,
                      suppress_reason="bounced" if hard else "")

    def _rset(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            code, _ = conn.rset()
        except (OSError, smtplib.SMTPException):
            code = -1
        if not 200 <= code < 300:
            self.discard()

    def discard(self) -> None:
        """Drop the connection without QUIT; the next message reconnects."""
        self._chained = None
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    def _reply(self, reply: tuple[int, bytes | str]) -> tuple[int, str]:
        code, raw = reply
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return code, self._scrub(" ".join(text.split()))


def _ask(conn: smtplib.SMTP, command: str, args: str) -> Generator[str, None,
                                                                     tuple[int, bytes]]:
    """Write one command, yield while the server answers, return its reply."""
    conn.putcmd(command, args)
    yield WAIT
    return getreply(conn)


def _hang_up(conn: smtplib.SMTP) -> None:
    """QUIT politely, and close the socket whatever the server says (or fails to)."""
    try:
        conn.quit()
    except (OSError, smtplib.SMTPException):
        pass
    finally:
        conn.close()
