"""The default transport: each message becomes an ``.eml`` file in a directory.

A fresh install must never email anyone by accident, so ``file://outbox`` is the default DSN.
The files open in any mail client, which makes this the way to look at an edition before
switching to SMTP or a provider (after Django's file-based backend).

Each file is named after the message's Message-ID, so sending the same message again (a retry,
a resumed send) overwrites its file instead of adding a duplicate: the outbox shows exactly what
a recipient would have received. Files are written to a temporary name and renamed into place,
so a reader never sees half a message.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from mailer.config import Settings
from mailer.errors import TransportError
from mailer.transports.base import Outgoing, Result, Transport
from mailer.transports.dsn import Dsn

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")
_MAX_STEM = 120


def eml_name(message_id: str, data: bytes = b"") -> str:
    """A file name for a message: its Message-ID with only safe characters kept.

    When characters had to be replaced or the id was cut short, a short hash of the full id is
    appended so that two different ids can never share a file. A message without an id is
    named by a hash of its content.
    """
    raw = message_id.strip().strip("<>")
    if not raw:
        return f"noid-{hashlib.sha256(data).hexdigest()[:24]}.eml"
    stem = _UNSAFE.sub("_", raw).lstrip(".")
    if stem != raw or len(stem) > _MAX_STEM:
        digest = hashlib.sha256(message_id.strip().encode("utf-8", "surrogateescape"))
        stem = f"{stem[:_MAX_STEM]}-{digest.hexdigest()[:10]}"
    return f"{stem}.eml"


class FileTransport(Transport):
    """Writes one ``.eml`` per message into ``directory`` (created when missing)."""

    name = "file"
    uses_fields = False  # (the outbox writes the bytes)
    max_batch = 500

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.directory = Path(directory)
        self.fsync = fsync

    @classmethod
    def from_dsn(cls, dsn: Dsn, settings: Settings) -> FileTransport:
        """``file://PATH[?fsync=1]``: relative paths are taken from the working directory."""
        dsn.check_options({"fsync"})
        return cls(Path(dsn.path).expanduser(), fsync=dsn.bool_option("fsync", False))

    def open(self) -> bool:
        self._ensure_directory()
        return False

    def send(self, messages: list[Outgoing]) -> list[Result]:
        """Write each message; a write that fails (disk full) is a retry for that message."""
        if not messages:
            return []
        try:
            self._ensure_directory()
        except TransportError as exc:
            return [Result("retry", error=str(exc)) for _ in messages]
        results: list[Result] = []
        for message in messages:
            name = eml_name(message.message_id, message.data)
            try:
                self._write(name, message.data)
            except OSError as exc:
                results.append(Result("retry", error=f"cannot write {self.directory / name}: "
                                                     f"{exc.strerror or exc}"))
            else:
                results.append(Result("sent", provider_id=name))
        self._sync_directory()
        return results

    def check(self) -> str:
        """Confirm the directory exists (or can be made) and that files can be written there."""
        self._ensure_directory()
        try:
            with tempfile.TemporaryFile(dir=self.directory):
                pass
        except OSError as exc:
            raise TransportError(
                f"outbox directory {self.directory} is not writable: {exc.strerror or exc}"
            ) from None
        count = sum(1 for _ in self.directory.glob("*.eml"))
        return f"file {self.directory.resolve()}: writable, {count} message(s) in the outbox"

    # ---- internals ---------------------------------------------------------------------
    def _ensure_directory(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransportError(
                f"cannot create the outbox directory {self.directory}: {exc.strerror or exc}"
            ) from None
        if not self.directory.is_dir():
            raise TransportError(f"outbox path {self.directory} exists but is not a directory")

    def _write(self, name: str, data: bytes) -> None:
        # Temp file in the same directory, then os.replace: atomic on POSIX and Windows, and a
        # second write of the same message id replaces the first.
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".eml.part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if self.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, self.directory / name)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def _sync_directory(self) -> None:
        """With ``fsync=1``, make the renames durable too (POSIX only; a no-op elsewhere)."""
        if not self.fsync or not hasattr(os, "O_DIRECTORY"):
            return
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
