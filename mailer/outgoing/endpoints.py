"""The receivers of our webhooks: registering, listing, enabling and removing them.

A receiver's URL is the admin's to type, and we POST to it from the server that holds the
list, so it gets the rule the link check has (`mailer.netguard`): https only (http too with
`allow_local_links`, for staging), and never an address that resolves to loopback, the
private network or a metadata service. It is checked here when registered and again before
each batch is delivered, as a name can be pointed elsewhere later.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailer import netguard
from mailer.config import Settings
from mailer.errors import MailerError
from mailer.models import HOOK_PENDING, HookDelivery, HookEndpoint
from mailer.outbox import EVENT_TYPES, RETRY_WINDOW

ALL_EVENTS = "*"


class EndpointError(MailerError, ValueError):
    """The endpoint cannot be registered as given; the message says what to change."""


def new_secret() -> str:
    """A Standard Webhooks signing secret: "whsec_" and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def parse_events(raw: Sequence[str]) -> list[str]:
    """The event names asked for (comma-separated or repeated); ["*"] for all of them."""
    names = [name.strip() for item in raw for name in item.split(",") if name.strip()]
    if not names or ALL_EVENTS in names:
        return [ALL_EVENTS]
    unknown = [name for name in names if name not in EVENT_TYPES]
    if unknown:
        raise EndpointError(f"unknown event {unknown[0]!r}: use {', '.join(EVENT_TYPES)} "
                            f"or {ALL_EVENTS}")
    return sorted(set(names), key=EVENT_TYPES.index)


def check_url(url: str, settings: Settings) -> str:
    """The URL if we may POST to it, else EndpointError saying why."""
    url = url.strip()
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        raise EndpointError(f"{url!r} is not a valid URL") from None
    if scheme != "https" and not (scheme == "http" and settings.allow_local_links):
        raise EndpointError("a webhook URL must start with https:// (http:// only with "
                            "allow_local_links, for staging)")
    if len(url) > 2000:
        raise EndpointError("a webhook URL must be at most 2,000 characters")
    try:
        netguard.Pinned(url, allow_local=settings.allow_local_links).close()
    except netguard.Refused as exc:
        raise EndpointError(f"webhooks are not sent there: {exc}") from None
    except netguard.Unreachable as exc:
        raise EndpointError(f"{exc}") from None
    return url


def add(session: Session, url: str, events: Sequence[str], settings: Settings, *,
        description: str = "", now: datetime) -> HookEndpoint:
    """Register a receiver; its secret is on the returned row (show it once)."""
    endpoint = HookEndpoint(url=check_url(url, settings), events=parse_events(events),
                            secret=new_secret(), description=description.strip()[:200],
                            enabled=True, created_at=now)
    session.add(endpoint)
    session.flush()
    return endpoint


def listing(session: Session) -> list[HookEndpoint]:
    return list(session.scalars(select(HookEndpoint).order_by(HookEndpoint.id)))


def get(session: Session, endpoint_id: int) -> HookEndpoint:
    endpoint = session.get(HookEndpoint, endpoint_id)
    if endpoint is None:
        raise EndpointError(f"no webhook endpoint {endpoint_id}")
    return endpoint


def set_enabled(session: Session, endpoint_id: int, enabled: bool) -> HookEndpoint:
    """Turn a receiver off, or back on (its failures forgotten: it is given a fresh day)."""
    endpoint = get(session, endpoint_id)
    endpoint.enabled = enabled
    if enabled:
        endpoint.failing_since = None
        endpoint.disabled_reason = ""
    return endpoint


def remove(session: Session, endpoint_id: int) -> None:
    """Remove a receiver and its outbox rows."""
    session.delete(get(session, endpoint_id))


def recent(session: Session, endpoint_id: int, limit: int = 50) -> list[HookDelivery]:
    return list(session.scalars(select(HookDelivery)
                                .where(HookDelivery.endpoint_id == endpoint_id)
                                .order_by(HookDelivery.id.desc()).limit(limit)))


def send_again(session: Session, delivery_id: int, *, now: datetime) -> HookDelivery:
    """Queue a delivery again at once (same event id, so the receiver can tell), with a
    fresh day of retries."""
    delivery = session.get(HookDelivery, delivery_id)
    if delivery is None:
        raise EndpointError(f"no webhook delivery {delivery_id}")
    if not delivery.payload:
        raise EndpointError("this event was about a reader who has been erased: it is gone")
    session.execute(update(HookDelivery).where(HookDelivery.id == delivery_id).values(
        state=HOOK_PENDING, next_attempt_at=now, expires_at=now + RETRY_WINDOW,
        leased_until=None))
    session.refresh(delivery)
    return delivery
