"""Reading an SMTP server's replies, and telling whether the next one is already here.

A pipelined message reads four replies, usually arriving together: `getreply` takes the usual
one-line reply from a buffer without smtplib's per-line overhead, and `reply_buffered` lets an
exchange wait on its socket only when the next reply is not here yet.
"""

from __future__ import annotations

import smtplib
import socket
import ssl

# (the longest reply line smtplib accepts: private, so not in typeshed)
_MAXLINE: int = smtplib._MAXLINE  # type: ignore[attr-defined]  # private to smtplib


class ReplyReader:
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


def reply_buffered(conn: smtplib.SMTP) -> bool:
    """Whether the next reply can be read without waiting (a reader that cannot tell: yes,
    read it as smtplib would, blocking)."""
    reader = conn.file
    return reader.has_line() if isinstance(reader, ReplyReader) else True


def getreply(conn: smtplib.SMTP) -> tuple[int, bytes]:
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
