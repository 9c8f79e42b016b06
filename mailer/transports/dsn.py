"""MAILER_DSN parsing, Symfony Mailer style: one URL says where mail goes and how.

``file://outbox``, ``smtp://user:pass@host:587?timeout=30``, ``smtps://…``,
``postmark+api://TOKEN@default``. One string is easy to move between environments, and parsing
it in one place means every transport reads user, password and options the same way.

The password is a secret: it never appears in an error message, in ``repr()`` or in
``Dsn.redacted()``, because those end up in logs and on the staff console.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from mailer.errors import TransportError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class Dsn:
    """The parts of a transport DSN; user and password are already percent-decoded."""

    scheme: str
    user: str = ""
    password: str = field(default="", repr=False)
    host: str = ""
    port: int | None = None
    path: str = ""
    options: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        # Spelled out so that a future field can never leak the password through repr().
        secret = "'***'" if self.password else "''"
        return (
            f"Dsn(scheme={self.scheme!r}, user={self.user!r}, password={secret}, "
            f"host={self.host!r}, port={self.port!r}, path={self.path!r}, "
            f"options={self.options!r})"
        )

    def redacted(self) -> str:
        """The DSN as a URL with the password masked: safe for logs and status output."""
        if self.scheme == "file":
            return f"file://{self.path}"
        auth = ""
        if self.user or self.password:
            # For the API transports the "user" part is the API key itself.
            auth = "***" if self.scheme.endswith("+api") else quote(self.user, safe="")
            if self.password:
                auth += ":***"
            auth += "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        query = "&".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.scheme}://{auth}{host}{port}{self.path}" + (f"?{query}" if query else "")

    def bool_option(self, name: str, default: bool) -> bool:
        """Read a yes/no option such as ``verify_tls=0``; a typo fails rather than guessing."""
        raw = self.options.get(name)
        if raw is None or raw == "":
            return default
        value = raw.strip().lower()
        if value in {"1", "true", "yes", "on"}:
            return True
        if value in {"0", "false", "no", "off"}:
            return False
        raise TransportError(f"MAILER_DSN option {name}={raw!r} is not a yes/no value (use 1 or 0)")

    def float_option(self, name: str, default: float) -> float:
        """Read a positive number option such as ``timeout=30``."""
        raw = self.options.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise TransportError(f"MAILER_DSN option {name}={raw!r} must be a positive number")
        return value

    def check_options(self, known: set[str] | frozenset[str]) -> None:
        """Fail on an option the transport does not know: a typo must not be ignored silently."""
        unknown = sorted(set(self.options) - set(known))
        if unknown:
            raise TransportError(
                f"MAILER_DSN option {unknown[0]!r} is not understood by {self.scheme}:// "
                f"(known: {', '.join(sorted(known)) or 'none'})"
            )


def parse_dsn(dsn: str) -> Dsn:
    """Split a DSN into its parts, or raise TransportError naming what is wrong.

    ``file://`` keeps everything after the ``//`` as a path, so ``file://outbox`` is the
    relative directory ``outbox`` and ``file:///var/mail/outbox`` is absolute. Other schemes are
    read as URLs: user and password are percent-decoded (write ``@`` as ``%40``, ``#`` as ``%23``).
    """
    text = (dsn or "").strip()
    match = _SCHEME.match(text)
    if not match:
        # Do not echo the value: a mangled DSN may still contain a password.
        raise TransportError(
            "MAILER_DSN must look like scheme://…, e.g. file://outbox or "
            "smtp://user:password@smtp.example.org:587"
        )
    scheme = match.group(1).lower()
    rest = text[match.end():]

    if scheme == "file":
        location, _, query = rest.partition("?")
        path = unquote(location)
        if not path:
            raise TransportError("MAILER_DSN file:// needs a directory, e.g. file://outbox")
        return Dsn(scheme="file", path=path, options=_options(query))

    unreadable = TransportError(
        f"MAILER_DSN ({scheme}://…) cannot be read: check host and port, and percent-encode "
        "special characters in the user name and password ('@' as %40, '#' as %23, "
        "'/' as %2F, '?' as %3F, ':' as %3A)"
    )
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise unreadable from None  # the ValueError text may quote part of the password
    if parts.fragment:
        raise unreadable
    return Dsn(
        scheme=scheme,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        host=parts.hostname or "",
        port=port,
        path=unquote(parts.path),
        options=_options(parts.query),
    )


def _options(query: str) -> dict[str, str]:
    return {key: value for key, value in parse_qsl(query, keep_blank_values=True)}
