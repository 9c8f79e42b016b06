"""MAILER_DSN parsing, Symfony Mailer style: one URL says where mail goes and how.

``file://outbox``, ``smtp://user:pass@host:587?timeout=30``, ``smtps://…``,
``postmark+api://TOKEN@default``. One string is easy to move between environments, and parsing
it in one place means every transport reads user, password and options the same way.

The password is a secret: it never appears in an error message or in ``repr()``, because those
end up in logs and on the staff console; the DSN is shown only through
`mailer.urls.redact_url`, which reads it with the same parser as this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from mailer.errors import TransportError
from mailer.urls import UrlError, split_url, url_scheme


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
    read by `mailer.urls.split_url`: the credentials end at the last '@', so a password or API
    secret may hold '/', '@' and ':' as they are; user and password are percent-decoded (write
    '%' as %25).
    """
    try:
        parts = split_url(dsn)
    except UrlError as exc:
        # Do not echo the value: a mangled DSN may still contain a password.
        scheme = url_scheme(dsn)
        if scheme is None:
            raise TransportError(
                "MAILER_DSN must look like scheme://…, e.g. file://outbox or "
                "smtp://user:password@smtp.example.org:587"
            ) from None
        raise TransportError(f"MAILER_DSN ({scheme}://…) cannot be read: {exc}") from None
    if parts.scheme == "file":
        path = unquote(parts.path)
        if not path:
            raise TransportError("MAILER_DSN file:// needs a directory, e.g. file://outbox")
        return Dsn(scheme="file", path=path, options=_options(parts.query))
    return Dsn(
        scheme=parts.scheme,
        user=parts.user,
        password=parts.password,
        host=parts.host.lower(),
        port=parts.port,
        path=unquote(parts.path),
        options=_options(parts.query),
    )


def _options(query: str) -> dict[str, str]:
    return {key: value for key, value in parse_qsl(query, keep_blank_values=True)}
