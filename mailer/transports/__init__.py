"""Transports: where rendered messages go, chosen by MAILER_DSN.

``from_dsn(settings.dsn, settings)`` is the one way the rest of the mailer gets a transport.
Schemes map to factories in a small registry so provider modules (Postmark, SendGrid, …) can
add themselves with ``register()`` without this package importing them, and therefore without
their optional dependencies being needed by people who send through SMTP or to files.

A scheme nobody has registered yet is looked up once as a module of this package named after
it (``postmark+api`` → ``mailer.transports.postmark``), which registers itself on import.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable

from mailer.config import Settings
from mailer.errors import TransportError
from mailer.transports.base import Outgoing, Result, Status, Transport
from mailer.transports.dsn import Dsn, parse_dsn
from mailer.transports.file import FileTransport
from mailer.transports.smtp import SmtpTransport

Factory = Callable[[Dsn, Settings], Transport]

_REGISTRY: dict[str, Factory] = {}

# Named in the "unsupported transport" message even before their modules are imported.
_ADVERTISED = ("file", "smtp", "smtps", "postmark+api", "sendgrid+api", "mailgun+api", "ses+api")


def register(scheme: str, factory: Factory) -> None:
    """Make ``scheme://`` DSNs build transports with ``factory`` (a later call replaces)."""
    _REGISTRY[scheme.lower()] = factory


def registered_schemes() -> list[str]:
    """Schemes that can be used right now, in registration order."""
    return list(_REGISTRY)


def from_dsn(dsn: str, settings: Settings) -> Transport:
    """Build the transport a DSN names; raise TransportError with a one-line reason."""
    parsed = parse_dsn(dsn)
    factory = _REGISTRY.get(parsed.scheme) or _load_plugin(parsed.scheme)
    if factory is None:
        advertised = list(dict.fromkeys([*_ADVERTISED, *_REGISTRY]))
        choices = ", ".join(f"{name}://" for name in advertised)
        raise TransportError(
            f"unsupported transport {parsed.scheme!r} in MAILER_DSN (use {choices})"
        )
    return factory(parsed, settings)


def _load_plugin(scheme: str) -> Factory | None:
    """Import ``mailer.transports.<name>`` for ``<name>+api`` (or ``<name>``) if it exists."""
    name = scheme.split("+", 1)[0]
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name in {"base", "dsn"}:
        return None
    module = f"{__name__}.{name}"
    if importlib.util.find_spec(module) is None:
        return None
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:  # an optional dependency of that provider (boto3, …)
        raise TransportError(
            f"the {scheme}:// transport needs the Python package {exc.name!r}, "
            "which is not installed"
        ) from None
    return _REGISTRY.get(scheme)


register("file", FileTransport.from_dsn)
register("smtp", SmtpTransport.from_dsn)
register("smtps", SmtpTransport.from_dsn)

__all__ = [
    "Dsn",
    "Factory",
    "FileTransport",
    "Outgoing",
    "Result",
    "SmtpTransport",
    "Status",
    "Transport",
    "TransportError",
    "from_dsn",
    "parse_dsn",
    "register",
    "registered_schemes",
]
