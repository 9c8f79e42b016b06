"""Opening an SMTP session: connect, EHLO, STARTTLS, AUTH, each failure as one line.

`Connector` holds what it takes to reach one server; `SmtpTransport` is one. The errors it
raises name the server and say what to change in MAILER_DSN, because they end up in front of
an operator who did not write the code.
"""

from __future__ import annotations

import contextlib
import functools
import smtplib
import socket
import ssl
from dataclasses import dataclass
from typing import Literal

from mailer.errors import TransportError
from mailer.transports.smtp.replies import ReplyReader

TlsMode = Literal["auto", "never", "required"]


@functools.lru_cache(maxsize=1)
def _local_fqdn() -> str:
    # smtplib calls socket.getfqdn() on every connection, which can block on reverse DNS.
    return socket.getfqdn() or "localhost"


@dataclass(frozen=True)
class Capabilities:
    """What the connected server offers, read once per connection rather than per message."""

    size: bool = False
    pipelining: bool = False
    eight_bit_mime: bool = False
    smtputf8: bool = False

    @classmethod
    def of(cls, conn: smtplib.SMTP) -> Capabilities:
        return cls(size=conn.has_extn("size"), pipelining=conn.has_extn("pipelining"),
                   eight_bit_mime=conn.has_extn("8bitmime"), smtputf8=conn.has_extn("smtputf8"))


class Connector:
    """What it takes to reach one SMTP server and set up a session with it."""

    host: str
    port: int
    user: str
    _password: str
    implicit_tls: bool
    starttls_mode: TlsMode
    verify_tls: bool
    timeout: float
    local_hostname: str | None

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def _scrub(self, text: str) -> str:
        # No server should echo a password back, but errors end up in logs: make sure.
        if self._password and self._password in text:
            text = text.replace(self._password, "***")
        return text

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
                f"{text_of(exc.smtp_error)}"
            ) from None
        except smtplib.SMTPServerDisconnected as exc:
            why = "timed out waiting for the greeting" if "timed out" in str(exc) else (
                "connection closed by the server")
            raise TransportError(f"cannot connect to SMTP server {where}: {why}") from None
        except ssl.SSLError as exc:
            raise TransportError(
                f"TLS with SMTP server {where} failed: {ssl_reason(exc)}"
            ) from None
        except OSError as exc:
            raise TransportError(f"cannot connect to SMTP server {where}: {reason(exc)}") from None

        steps = ["connected (TLS)" if self.implicit_tls else "connected"]
        with contextlib.suppress(OSError, AttributeError):
            # Every write is a whole command group or a whole message: nothing to coalesce,
            # and Nagle's wait for an ACK would only delay the server's answer.
            if conn.sock is not None:
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self._handshake(conn, steps)
        except BaseException:
            conn.close()
            raise
        # From here on replies are read through a reader that can tell whether a reply is
        # already buffered (nothing is pending after the handshake's last reply).
        assert conn.sock is not None  # (connected, and the handshake did not close it)
        conn.file = ReplyReader(conn.sock)
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
                    f"({exc.smtp_code} {self._scrub(text_of(exc.smtp_error))})"
                ) from None
            except smtplib.SMTPNotSupportedError:
                raise TransportError(f"SMTP server {where} does not support AUTH") from None
            steps.append(f"AUTH ok as {self.user!r}")
        except TransportError:
            raise
        except smtplib.SMTPResponseException as exc:
            raise TransportError(
                f"SMTP server {where} refused the session: {exc.smtp_code} "
                f"{self._scrub(text_of(exc.smtp_error))}"
            ) from None
        except ssl.SSLError as exc:
            raise TransportError(
                f"STARTTLS with SMTP server {where} failed: {ssl_reason(exc)}"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TransportError(
                f"SMTP server {where} closed the session during set-up: {reason(exc)}"
            ) from None

    def _hello(self, conn: smtplib.SMTP) -> None:
        code, raw = conn.ehlo()
        if not 200 <= code < 300:
            code, raw = conn.helo()
            if not 200 <= code < 300:
                raise smtplib.SMTPHeloError(code, raw)


def text_of(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())


def reason(exc: BaseException) -> str:
    """The human part of a socket/smtplib error: "Connection refused", "timed out"."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def ssl_reason(exc: ssl.SSLError) -> str:
    verify = getattr(exc, "verify_message", None)
    if verify:
        return f"certificate verification failed: {verify} (verify_tls=0 skips the check)"
    return str(exc.reason or exc)
