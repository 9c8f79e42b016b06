"""Provider webhooks: verify the request, map its events to one event type, apply them once.

Each provider is one module here, named as its URL (``/webhooks/<name>``), and exposes the same
two plain functions, testable without Flask (django-anymail's shape):

* ``verify(request, settings, now) -> Verified``: the provider's own check (basic auth, ECDSA,
  HMAC, SNS certificate), raising `WebhookRejected` before anything is read as an event, then
  the body read as JSON through `read_json`;
* ``parse(body) -> list[Event]``: the verified body mapped, through plain dicts, to `Event`s of
  the few `EventKind`s (unknown provider events become ``UNKNOWN``, never an error);

and ``PARSED_BEFORE_VERIFIED``: whether its signature is inside the JSON (so a stranger's body
is parsed before it is verified, and the route allows a smaller body). `events.apply` is the
only code that changes a subscriber; the Flask route is `mailer.web.hooks`.

Adding a provider is one module here: `names` lists this package's modules and `load` imports
one by name, the way the transport registry finds ``mailer.transports.<name>``, so no route
or list changes elsewhere.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from mailer.feedback import jsonbody
from mailer.feedback.events import WebhookRejected

#: What a provider's name (its module's and its URL's) may look like.
NAME = re.compile(r"[a-z][a-z0-9_]*")


class Headers(Protocol):
    """What `verify` needs of request headers (werkzeug's, or a dict in a test)."""

    def get(self, key: str, /) -> str | None: ...


@dataclass(frozen=True)
class WebhookRequest:
    """What a provider's `verify` may look at, taken from the HTTP request by the route."""

    read_body: Callable[[], bytes]  # the body exactly as received (signatures cover it)
    headers: Headers  # the request's own, whose names are case-insensitive
    username: str | None = None  # HTTP basic auth, when the request carries it
    password: str | None = None

    @property
    def body(self) -> bytes:
        """Read on first use, not before: a provider that checks credentials first (Postmark)
        refuses a stranger's oversize post with its 401/403 without reading it (not a 413)."""
        return self.read_body()


@dataclass(frozen=True)
class Verified:
    """A request that passed its provider's checks.

    `nonce`: a one-time value to claim in the same transaction as the events (Mailgun's
    signature token). `answer`: the whole reply for a request that carries no events (SNS's
    subscription handshake), which the route sends as it is instead of applying anything."""

    body: Any  # the body read as JSON
    nonce: str = ""
    answer: dict[str, Any] | None = None


class ProviderUnavailable(WebhookRejected):
    """The provider's module exists but a package it needs is not installed: a 503 with
    the install hint (the provider retries, and succeeds once the package is there)."""

    def __init__(self, name: str, package: str | None) -> None:
        super().__init__(503, f"the {name} webhook needs the Python package {package!r}, "
                              "which is not installed")


def names() -> list[str]:
    """The providers there are: this package's modules, listed without importing them (so
    the route matches only their names, and a provider's missing package is a 503 at its own
    URL rather than an error for all)."""
    return sorted(found.name for found in pkgutil.iter_modules(__path__)
                  if not found.ispkg and NAME.fullmatch(found.name))


def load(name: str) -> ModuleType | None:
    """The provider module called `name`, or None when there is no such provider.

    Raises ProviderUnavailable when the module exists but one of its imports is missing."""
    if not NAME.fullmatch(name):
        return None
    module = f"{__name__}.{name}"
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise ProviderUnavailable(name, exc.name) from None


def read_json(body: bytes) -> Any:
    """The body as JSON, nested at most `jsonbody.MAX_DEPTH` deep, or a 400 (a hostile body is
    not an error of ours: the route logs the refusal as one line)."""
    try:
        return jsonbody.loads(body)
    except jsonbody.JsonRefused as exc:
        raise WebhookRejected(400, str(exc)) from None
