"""The bytes an SMTP session writes: message data after DATA, and pipelined envelopes."""

from __future__ import annotations

import re
import smtplib
import ssl

_NEWLINES = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def wire_data(data: bytes) -> bytes:
    """The message as sent after DATA: CRLF line endings, dot-stuffed, ending in CRLF.CRLF.

    `wire_ready` data (see `Outgoing`) needs none of it and does not come here
    (`SmtpTransport.prepare`): on a 50 KB message even the search for a dot at a line start
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


def envelope(sender: str, recipient: str, options: list[str]) -> bytes:
    """MAIL, RCPT and DATA as one pipelined group (plain ASCII addresses only)."""
    extra = (" " + " ".join(options)) if options else ""
    return f"MAIL FROM:<{sender}>{extra}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode(
        "ascii")


def send_data(conn: smtplib.SMTP, data: bytes, end: bytes, tail: bytes = b"") -> bool:
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
