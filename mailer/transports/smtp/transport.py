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

import contextlib
import functools
import re
import select
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypeVar

from mailer.config import Settings
from mailer.errors import TransportError
from mailer.message import PLAIN_ADDRESS_RE
from mailer.transports.base import Outgoing, Result, Transport
from mailer.transports.dsn import Dsn
from mailer.verp import sender_for as verp_sender

TlsMode = Literal["auto", "never", "required"]
# One message's exchange as a generator returning the message's Result. It yields WAIT where
# it has written a command and waits for the reply, and READY where the server is ready for the
# message data: a pool holds it there until the connection's previous outcome is recorded.
WAIT, READY = "wait", "ready"
Steps = Generator[str, None, Result]

DEFAULT_TIMEOUT = 30.0
_MAXLINE = smtplib._MAXLINE  # (the longest reply line smtplib accepts)
AMBIGUOUS_ERROR = "connection lost after the message data was sent; outcome unknown"

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")
_NEWLINES = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def is_hard_bounce(code: int, text: str) -> bool:
    """Whether a permanent SMTP reply means the address itself is dead (suppress it).

    Enhanced status 5.1.x (bad mailbox / domain) and 5.2.1 (mailbox disabled) do; so does a
    bare 550 from servers that send no enhanced status. 5.1.7 and 5.1.8 are about *our* sender
    address: treating them as bounces would suppress the whole list over one DNS mistake.
    Everything else permanent (552 message too big, 5.7.x policy) fails this message only.
    """
    if not 500 <= code < 600:
        return False
    dead = dead_address_status(text)
    return code == 550 if dead is None else dead


def dead_address_status(text: str) -> bool | None:
    """Whether the enhanced status code that `text` starts with (5.1.1) says the address is
    dead, by `is_hard_bounce`'s rule; None when it starts with none. Bounce reports by email
    (`mailer.bounces`) carry the same codes."""
    match = _ENHANCED.match(text)
    if match is None:
        return None
    klass, subject, detail = match.groups()
    if klass != "5":
        return False
    if subject == "1":
        return detail not in {"7", "8"}
    return subject == "2" and detail == "1"


def wire_data(data: bytes) -> bytes:
    """The message as sent after DATA: CRLF line endings, dot-stuffed, ending in CRLF.CRLF.

    `wire_ready` data (see `Outgoing`) needs none of it and does not come here
    (`SmtpTransport._prepare`): on a 50 KB message even the search for a dot at a line start
    costs more than half as much as filling the message.
    """
    if data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r"):
        # Already CRLF throughout: plain byte replaces run in C and are an order of magnitude
        # cheaper than the regular expressions on a 50 KB message.
        body = data.replace(b"\r\n.", b"\r\n..") if b"\r\n." in data else data
        if body.startswith(b"."):
            body = b"." + body
    else:
        body = _LEADING_DOT.sub(b"..", _NEWLINES.sub(b"\r\n", data))
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


@functools.lru_cache(maxsize=1)
def _local_fqdn() -> str:
    # smtplib calls socket.getfqdn() on every connection, which can block on reverse DNS.
    return socket.getfqdn() or "localhost"


@dataclass(frozen=True)
class _Capabilities:
    """What the connected server offers, read once per connection rather than per message."""

    size: bool = False
    pipelining: bool = False
    eight_bit_mime: bool = False
    smtputf8: bool = False

    @classmethod
    def of(cls, conn: smtplib.SMTP) -> _Capabilities:
        return cls(size=conn.has_extn("size"), pipelining=conn.has_extn("pipelining"),
                   eight_bit_mime=conn.has_extn("8bitmime"), smtputf8=conn.has_extn("smtputf8"))


def _send_data(conn: smtplib.SMTP, data: bytes, end: bytes, tail: bytes = b"") -> bool:
    """`conn.send(data + end + tail)` without building that string: on a plain socket they go
    out in one `sendmsg` (resumed if the kernel takes only part).

    An error before `data + end` is all out raises (the server cannot have the message); one
    in `tail` (the next message's pipelined commands) returns False: this message is out and
    its reply will say what became of it.
    """
    sock = conn.sock
    if sock is None:
        raise smtplib.SMTPServerDisconnected("please run connect() first")
    if isinstance(sock, ssl.SSLSocket):  # (TLS sockets have no sendmsg)
        sock.sendall(data + end)
        try:
            if tail:
                sock.sendall(tail)
        except OSError:
            return False
        return True
    buffers = [memoryview(part) for part in (data, end, tail) if part]
    unsent_message = len(data) + len(end)
    while buffers:
        try:
            sent = sock.sendmsg(buffers)
        except OSError:
            if unsent_message > 0:
                raise
            return False
        unsent_message -= sent
        while buffers and sent >= len(buffers[0]):
            sent -= len(buffers.pop(0))
        if sent:
            buffers[0] = buffers[0][sent:]
    return True


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


@dataclass(frozen=True)
class Pause:
    """Yielded by an `SmtpPool.stream` source instead of an item: no item for `seconds`."""

    seconds: float


class _StaleConnection(Exception):
    """A reused connection turned out to be closed before this message started."""


class SmtpTransport(Transport):
    """Sends through an SMTP server (``smtp://`` with STARTTLS, ``smtps://`` implicit TLS)."""

    max_batch = 50

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
        self._caps = _Capabilities()
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
        )

    def __repr__(self) -> str:
        return f"<SmtpTransport {self.name}://{self.where} user={self.user!r}>"

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

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
        self._caps = _Capabilities.of(self._conn)
        return True

    def close(self) -> None:
        if self._chained is not None:
            # The server took the next DATA and waits for that message: a QUIT now would go
            # in as its first line (and smtplib would take the MAIL reply still unread for
            # QUIT's). Hang up instead; nothing of that message was sent.
            self._discard()
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except (OSError, smtplib.SMTPException):
            pass
        finally:
            conn.close()

    def check(self) -> str:
        """Connect on a separate connection, go as far as AUTH, QUIT; say what happened."""
        conn, steps = self._connect()
        try:
            conn.quit()
        except (OSError, smtplib.SMTPException):
            pass
        finally:
            conn.close()
        return f"{self.name} {self.where}: {', '.join(steps)}"

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
            self._discard()  # another message's envelope is on the wire: start afresh
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
    def _prepare(self, message: Outgoing) -> _Prepared:
        """What the exchange of `message` writes, worked out once (also ahead of its turn,
        when its envelope goes out with the previous message's data)."""
        if message.wire_ready:
            # 7-bit, CRLF, no line to dot-stuff: the data as it is, then the terminator,
            # written together without copying 50 KB into one string (`_send_data`).
            data, end = message.data, b".\r\n"
        else:
            data, end = wire_data(message.data), b""
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

    @staticmethod
    def _envelope(sender: str, recipient: str, options: list[str]) -> bytes:
        """MAIL, RCPT and DATA as one pipelined group (plain ASCII addresses only)."""
        extra = (" " + " ".join(options)) if options else ""
        return f"MAIL FROM:<{sender}>{extra}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode(
            "ascii")

    def _deliver(self, message: Outgoing, *, may_be_stale: bool) -> Steps:
        conn = self._conn
        assert conn is not None
        data_sent = False
        tail_lost = False
        try:
            conn.command_encoding = "ascii"
            chained, self._chained = self._chained, None
            written = chained is not None and chained[0] is message
            prepared = chained[1] if written and chained is not None else self._prepare(message)
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
                ahead = self._prepare(upcoming)
                if ahead.pipelined:  # (never when refused)
                    tail = self._envelope(ahead.sender, upcoming.recipient, ahead.options)
                    self._chained = (upcoming, ahead)
            try:
                tail_lost = not _send_data(conn, data, end, tail)
            except OSError as exc:
                # The terminating "." never got through, so the server cannot have accepted it.
                self._discard()
                return Result("retry", error=f"connection lost while sending the message data: "
                                             f"{_reason(exc)}")
            data_sent = True
            if tail_lost:
                self._chained = None  # (the connection is dropped once this reply is read)
            yield WAIT

            try:
                code, text = self._reply(_getreply(conn))
            except OSError:
                self._discard()
                return Result("ambiguous", error=AMBIGUOUS_ERROR)
            if tail_lost:
                self._discard()  # half a pipelined envelope may be on the wire: start afresh
            if code == -1:  # an unreadable reply: we cannot tell what the server decided
                self._discard()
                return Result("ambiguous", error=f"{AMBIGUOUS_ERROR} (unreadable reply)")
            if 200 <= code < 300:
                return Result("sent", provider_id=text)
            if code == 421:
                self._discard()
            status = "failed" if 500 <= code < 600 else "retry"
            hard = is_hard_bounce(code, text)
            return Result(status, error=f"{code} {text}", hard_bounce=hard,
                          suppress_reason="bounced" if hard else "")
        except _StaleConnection:
            raise
        except Exception as exc:  # never lose the results of the messages already sent
            self._discard()
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
            self._discard()
            if may_be_stale:
                raise _StaleConnection from exc
            return Result("retry", error=f"connection lost at MAIL FROM: {_reason(exc)}")
        if not 200 <= code < 300:
            return self._refused(code, f"MAIL FROM refused: {code} {text}", hard=False)

        try:
            if plain:
                rcpt = yield from _ask(conn, "rcpt", f"TO:<{recipient}>")
            else:
                rcpt = conn.rcpt(recipient)
            code, text = self._reply(rcpt)
        except OSError as exc:
            self._discard()
            return Result("retry", error=f"connection lost at RCPT TO: {_reason(exc)}")
        if not 200 <= code < 300:
            return self._refused(code, f"{code} {text}", hard=is_hard_bounce(code, text))

        try:
            code, text = self._reply((yield from _ask(conn, "DATA", "")))
        except OSError as exc:
            self._discard()
            return Result("retry", error=f"connection lost at DATA: {_reason(exc)}")
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
                conn.send(self._envelope(sender, recipient, options))
                yield WAIT
            elif not _reply_buffered(conn):
                yield WAIT
            mail = _getreply(conn)
        except OSError as exc:
            self._discard()
            if may_be_stale:
                raise _StaleConnection from exc
            return Result("retry", error=f"connection lost at MAIL FROM: {_reason(exc)}")
        rcpt: tuple[int, bytes] | None = None
        try:
            if not _reply_buffered(conn):
                yield WAIT  # (a server may answer a pipelined group one reply at a time)
            rcpt = _getreply(conn)
            if not _reply_buffered(conn):
                yield WAIT
            data = _getreply(conn)
        except OSError as exc:
            self._discard()
            # A refusal read before the hang-up says why (a 421 announces it; a 550 is still
            # a bounce): the outcome is the refusal's.
            return self._envelope_refused(mail, rcpt) or Result(
                "retry", error=f"connection lost at RCPT TO/DATA: {_reason(exc)}")
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
                self._discard()
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
            self._discard()  # the server is closing the connection (or talking nonsense)
        else:
            self._rset()
        status = "failed" if 500 <= code < 600 else "retry"
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
            self._discard()

    def _discard(self) -> None:
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

    def _scrub(self, text: str) -> str:
        # No server should echo a password back, but errors end up in logs: make sure.
        if self._password and self._password in text:
            text = text.replace(self._password, "***")
        return text

    # ---- connecting ------------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self) -> tuple[smtplib.SMTP, list[str]]:
        """A ready connection and the steps it went through, or TransportError."""
        where = self.where
        local = self.local_hostname or _local_fqdn()
        try:
            if self.implicit_tls:
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, local_hostname=local, timeout=self.timeout,
                    context=self._ssl_context(),
                )
            else:
                conn = smtplib.SMTP(self.host, self.port, local_hostname=local,
                                    timeout=self.timeout)
        except smtplib.SMTPConnectError as exc:
            raise TransportError(
                f"SMTP server {where} refused the connection: {exc.smtp_code} "
                f"{_text(exc.smtp_error)}"
            ) from None
        except smtplib.SMTPServerDisconnected as exc:
            why = "timed out waiting for the greeting" if "timed out" in str(exc) else (
                "connection closed by the server")
            raise TransportError(f"cannot connect to SMTP server {where}: {why}") from None
        except ssl.SSLError as exc:
            raise TransportError(
                f"TLS with SMTP server {where} failed: {_ssl_reason(exc)}"
            ) from None
        except OSError as exc:
            raise TransportError(f"cannot connect to SMTP server {where}: {_reason(exc)}") from None

        steps = ["connected (TLS)" if self.implicit_tls else "connected"]
        with contextlib.suppress(OSError, AttributeError):
            # Every write is a whole command group or a whole message: nothing to coalesce,
            # and Nagle's wait for an ACK would only delay the server's answer.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self._handshake(conn, steps)
        except BaseException:
            conn.close()
            raise
        # From here on replies are read through a reader that can tell whether a reply is
        # already buffered (nothing is pending after the handshake's last reply).
        conn.file = _ReplyReader(conn.sock)  # type: ignore[assignment]
        return conn, steps

    def _handshake(self, conn: smtplib.SMTP, steps: list[str]) -> None:
        where = self.where
        try:
            self._hello(conn)
            steps.append("EHLO ok")
            encrypted = self.implicit_tls
            if not self.implicit_tls and self.starttls_mode != "never":
                if conn.has_extn("starttls"):
                    conn.starttls(context=self._ssl_context())
                    self._hello(conn)  # capabilities must be asked again over TLS
                    steps.append("STARTTLS ok")
                    encrypted = True
                elif self.starttls_mode == "required":
                    raise TransportError(
                        f"SMTP server {where} does not offer STARTTLS, which tls=1 in MAILER_DSN "
                        "requires"
                    )
                else:
                    steps.append("no STARTTLS offered")
            if not self.user:
                steps.append("no AUTH")
                return
            if not encrypted and self.starttls_mode == "auto":
                # tls=auto: encryption when the server offers it, but never the password in
                # clear text (a man in the middle who strips STARTTLS from the EHLO reply would
                # read it). Saying tls=0 is how an operator accepts that on a trusted network.
                raise TransportError(
                    f"SMTP server {where} does not offer STARTTLS: refusing to send the "
                    f"password for user {self.user!r} in clear text (tls=0 in MAILER_DSN "
                    "allows it, on a network you trust; smtps:// encrypts from the start)"
                )
            if not conn.has_extn("auth"):
                hint = "" if self.implicit_tls or self.starttls_mode != "never" else (
                    " (many servers offer AUTH only after STARTTLS: remove tls=0)")
                raise TransportError(
                    f"SMTP server {where} does not offer AUTH, but MAILER_DSN has credentials "
                    f"for user {self.user!r}{hint}"
                )
            try:
                conn.login(self.user, self._password)
            except smtplib.SMTPAuthenticationError as exc:
                raise TransportError(
                    f"SMTP server refused the login for user {self.user!r} "
                    f"({exc.smtp_code} {self._scrub(_text(exc.smtp_error))})"
                ) from None
            except smtplib.SMTPNotSupportedError:
                raise TransportError(f"SMTP server {where} does not support AUTH") from None
            steps.append(f"AUTH ok as {self.user!r}")
        except TransportError:
            raise
        except smtplib.SMTPResponseException as exc:
            raise TransportError(
                f"SMTP server {where} refused the session: {exc.smtp_code} "
                f"{self._scrub(_text(exc.smtp_error))}"
            ) from None
        except ssl.SSLError as exc:
            raise TransportError(
                f"STARTTLS with SMTP server {where} failed: {_ssl_reason(exc)}"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TransportError(
                f"SMTP server {where} closed the session during set-up: {_reason(exc)}"
            ) from None

    def _hello(self, conn: smtplib.SMTP) -> None:
        code, raw = conn.ehlo()
        if not 200 <= code < 300:
            code, raw = conn.helo()
            if not 200 <= code < 300:
                raise smtplib.SMTPHeloError(code, raw)


def _ask(conn: smtplib.SMTP, command: str, args: str) -> Generator[str, None,
                                                                     tuple[int, bytes]]:
    """Write one command, yield while the server answers, return its reply."""
    conn.putcmd(command, args)
    yield WAIT
    return _getreply(conn)


class _ReplyReader:
    """`conn.file` for our connections: the line reader smtplib expects (`readline`,
    `close`), which can also say whether a whole reply line is already buffered, so that an
    exchange waits on its socket only when the next reply is not here yet."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""  # received and, from `pos` on, not read yet
        self.pos = 0

    def readline(self, limit: int = -1) -> bytes:
        buffer, pos = self.buffer, self.pos
        end = buffer.find(b"\n", pos) + 1
        if end and (limit < 0 or end - pos <= limit):
            self.pos = end  # a line already here (a pipelined group's replies come together)
            return buffer[pos:end]
        if pos == len(buffer):
            chunk = self.sock.recv(65536)
            end = chunk.find(b"\n") + 1
            if end == len(chunk) and (limit < 0 or end <= limit):
                return chunk  # one whole reply line per read (or b"": closed)
            buffer = chunk
        else:
            buffer = buffer[pos:]
        while True:
            end = buffer.find(b"\n") + 1
            if end and (limit < 0 or end <= limit):
                break
            if 0 <= limit <= len(buffer):
                end = limit
                break
            chunk = self.sock.recv(65536)
            if not chunk:  # closed: what is left, as a file would return it
                end = len(buffer)
                break
            buffer += chunk
        self.buffer, self.pos = buffer, end
        return buffer[:end]

    def has_line(self) -> bool:
        if self.buffer.find(b"\n", self.pos) >= 0:
            return True
        # TLS may hold decrypted bytes that the socket no longer shows as readable.
        return isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0

    def close(self) -> None:
        self.buffer, self.pos = b"", 0


def _reply_buffered(conn: smtplib.SMTP) -> bool:
    """Whether the next reply can be read without waiting (a reader that cannot tell: yes,
    read it as smtplib would, blocking)."""
    reader = conn.file
    return reader.has_line() if isinstance(reader, _ReplyReader) else True


def _getreply(conn: smtplib.SMTP) -> tuple[int, bytes]:
    """`smtplib.SMTP.getreply`, same results and errors, at a fraction of its cost for the
    usual one-line reply: a pipelined message reads four replies. (One difference: a code
    that is not three digits, such as " 25", is unreadable (-1) here, where smtplib's int()
    would make 25 of it.)"""
    file = conn.file
    if file is None:
        return conn.getreply()
    lines: list[bytes] = []
    while True:
        try:
            line = file.readline(_MAXLINE + 1)
        except OSError as exc:
            conn.close()
            raise smtplib.SMTPServerDisconnected(f"Connection unexpectedly closed: {exc}") from exc
        if not line:
            conn.close()
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        if len(line) > _MAXLINE:
            conn.close()
            raise smtplib.SMTPResponseException(500, "Line too long.")
        if not lines and line[3:4] == b" " and line[:3].isdigit():
            return int(line[:3]), line[4:].strip(b" \t\r\n")  # the usual one-line reply
        lines.append(line[4:].strip(b" \t\r\n"))
        code = line[:3]
        if not (code.isdigit() and len(code) == 3):
            return -1, b"\n".join(lines)
        if line[3:4] != b"-":
            return int(code), b"\n".join(lines) if len(lines) > 1 else lines[0]


def run_steps(steps: Steps) -> Result:
    """Run one message's exchange to the end: a plain blocking send."""
    try:
        while True:
            next(steps)
    except StopIteration as done:
        return done.value


K = TypeVar("K")


class SmtpPool(Transport):
    """N SMTP connections driven by one thread, each message's exchange advancing as soon as
    its server answers (`stream`).

    Threads, one per connection, were the first design; with the GIL they spent as much time
    handing the interpreter to each other as sending. Here every outcome rule is
    `SmtpTransport`'s own (its `steps`), and while one server works on a message the thread
    prepares the next one for another connection.
    """

    def __init__(self, transports: Sequence[SmtpTransport]) -> None:
        if not transports:
            raise ValueError("an SMTP pool needs at least one connection")
        self.transports = list(transports)
        self.name = self.transports[0].name
        self.max_batch = len(self.transports)

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
               record: Callable[[list[tuple[K, Outgoing, Result]]], bool]) -> list[K]:
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
        source = iter(items)
        idle = list(range(len(self.transports)))
        waiting: dict[int, tuple[K, Outgoing, Steps]] = {}  # for its server's reply
        held: dict[int, tuple[K, Outgoing, Steps]] = {}  # ready for data, not yet allowed
        finished: list[tuple[int, K, Outgoing, Result]] = []  # outcomes not recorded yet
        unrecorded: set[int] = set()  # the connections of those outcomes
        waiting_since: dict[int, float] = {}
        sending: set[int] = set()  # connections whose message data has gone out
        abandoned: list[K] = []
        upcoming: dict[int, tuple[K, Outgoing]] = {}  # taken to go behind a message's data
        poller = select.poll()
        fds: dict[int, int] = {}  # socket file descriptor -> connection
        watched: dict[int, int] = {}  # connection -> its file descriptor in the poller
        stopping = False  # no more items: the source ran out or `record` said stop
        resume_at = 0.0  # (monotonic) the source paused: take nothing before then

        def take() -> tuple[K, Outgoing] | None:
            nonlocal stopping, resume_at
            if stopping or time.monotonic() < resume_at:
                return None
            item = next(source, None)
            if isinstance(item, Pause):
                resume_at = time.monotonic() + item.seconds
                return None
            stopping = item is None
            return item

        def paused() -> float:
            """Seconds until the source's pause ends, when an idle connection waits for it."""
            return resume_at - time.monotonic() if idle and not stopping else 0.0

        def go_ahead(slot: int) -> None:
            """The exchange on `slot` goes on to send its data: from here on it is finished
            and recorded whatever happens, never abandoned."""
            sending.add(slot)
            transport = self.transports[slot]
            if transport.chains and slot not in upcoming:
                item = take()
                if item is not None:
                    upcoming[slot] = item
                    transport.upcoming = item[1]

        def run(slot: int, key: K, message: Outgoing, steps: Steps) -> None:
            """Advance one exchange as far as it can go without waiting."""
            while True:
                try:
                    step = next(steps)
                except StopIteration as done:
                    finished.append((slot, key, message, done.value))
                    unrecorded.add(slot)
                    sending.discard(slot)
                    if not self.transports[slot].unavailable:
                        idle.append(slot)  # its next envelope may go out at once
                    return
                if step == READY:
                    if slot in unrecorded:
                        held[slot] = (key, message, steps)
                        return
                    go_ahead(slot)
                    continue
                sock = self.transports[slot].sock
                waiting[slot] = (key, message, steps)
                waiting_since[slot] = time.monotonic()
                if sock is not None:
                    fd = sock.fileno()
                    fds[fd], watched[slot] = slot, fd
                    poller.register(fd, select.POLLIN)
                return

        def unwatch(slot: int) -> None:
            fd = watched.pop(slot, None)
            if fd is not None:
                del fds[fd]
                poller.unregister(fd)

        def abandon(slot: int) -> K:
            """Give up an exchange whose data has not been sent: nothing of it was delivered."""
            key, _, steps = held.pop(slot, None) or waiting.pop(slot)
            unwatch(slot)
            steps.close()
            self.transports[slot]._discard()
            return key

        try:
            while True:
                for slot in [s for s in idle if s in upcoming]:
                    idle.remove(slot)
                    key, message = upcoming.pop(slot)
                    run(slot, key, message, self.transports[slot].steps(message))
                while idle:
                    item = take()
                    if item is None:
                        break
                    slot = idle.pop(0)
                    run(slot, item[0], item[1], self.transports[slot].steps(item[1]))
                # A connection may not send data before its last outcome is written, and time
                # with no answer to handle is free for writing: write every outcome there is,
                # in one go (the fewer left unwritten, the fewer a crash repeats).
                due = bool(finished) and (bool(held) or len(finished) >= len(self.transports))
                events = poller.poll(0) if waiting and not due else []
                if due or (finished and not events):
                    done, finished = finished, []
                    unrecorded.clear()
                    if not record([(key, message, result) for _, key, message, result in done]):
                        stopping = True
                        for slot in [*held, *(s for s in waiting if s not in sending)]:
                            abandoned.append(abandon(slot))
                        abandoned.extend(key for key, _ in upcoming.values())
                        upcoming.clear()
                    for slot in list(held):
                        go_ahead(slot)
                        run(slot, *held.pop(slot))
                    continue
                if not waiting and (pause := paused()) > 0:
                    time.sleep(pause)  # nothing under way: only the source's slot to wait for
                    continue
                if not waiting:
                    # (A connection left holding the envelope of an abandoned item hangs up
                    # at its next message or at close: `steps`, `close`.)
                    abandoned.extend(key for key, _ in upcoming.values())
                    return abandoned
                if not events:
                    deadline = min(waiting_since[s] + self.transports[s].timeout for s in waiting)
                    wait = deadline - time.monotonic()
                    if (pause := paused()) > 0:
                        wait = min(wait, pause)
                    events = poller.poll(max(0.0, wait) * 1000)
                ready = [fds[fd] for fd, _ in events if fd in fds]
                now = time.monotonic()
                # A server silent for longer than its timeout: let that exchange time out now,
                # as a blocking read would have, without holding up the other connections.
                overdue = [s for s in waiting if s not in ready
                           and now - waiting_since[s] >= self.transports[s].timeout]
                for slot in ready + overdue:
                    if slot in waiting:
                        unwatch(slot)
                        sock = self.transports[slot].sock
                        if slot in overdue and sock is not None:
                            sock.settimeout(0.001)
                        run(slot, *waiting.pop(slot))
                        if slot in overdue and sock is not None and sock.fileno() != -1:
                            sock.settimeout(self.transports[slot].timeout)
        except BaseException:
            # (a failing source or `record`): no connection may be left mid-exchange, where
            # a QUIT at close would be taken for message text and wait out the timeout.
            for slot in {*waiting, *held, *sending}:
                self.transports[slot]._discard()
            raise


def _text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())


def _reason(exc: BaseException) -> str:
    """The human part of a socket/smtplib error: "Connection refused", "timed out"."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _ssl_reason(exc: ssl.SSLError) -> str:
    verify = getattr(exc, "verify_message", None)
    if verify:
        return f"certificate verification failed: {verify} (verify_tls=0 skips the check)"
    return str(exc.reason or exc)
