"""Right to erasure: remove a subscriber and every copy of their address we keep.

What goes: the subscriber row and its events (ON DELETE CASCADE), the address and name on
their ledger rows (the rows stay, with the subscriber id, so an edition's counts do not
change, but the address becomes "erased"), the address in SMTP error texts on those rows, and
the address and raw payload of provider webhook events about them. Their clicks on editions
sent with per-reader tracking lose the delivery they named (`clicks.delivery_id`), and their
gifts the link to them (`gifts.subscriber_id`): the clicks and gifts stay, as anonymous ones,
so an edition's click counts and donation totals do not change (docs/privacy.md). Outgoing
webhook events about them that have not gone are dropped, the payloads of those that went are
emptied, and the API's stored answers about them (Idempotency-Key replays) are deleted.

What stays: a SHA-256 hash of the address in `suppressions` (reason "erased"), so a later CSV
import or a sign-up form cannot quietly put them back on the list (the import reports the line;
the public form answers as always and sends nothing). The audit entry names the subscriber by id
only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from mailer import outbox
from mailer.models import ApiReply, Click, Delivery, Gift, Subscriber, Suppression, WebhookEvent
from mailer.subscribers import email_hash, withdraw_queued

ERASED = "erased"


@dataclass(frozen=True)
class Erasure:
    subscriber_id: int
    email_hash: str
    deliveries: int
    webhook_events: int
    #: Per-reader clicks and gifts no longer linked to them (kept, anonymous).
    clicks: int = 0
    gifts: int = 0


def erase(session: Session, sub: Subscriber, *, at: datetime | None = None) -> Erasure:
    """Erase `sub` inside the caller's transaction."""
    address, sub_id, digest = sub.email, sub.id, email_hash(sub.email)
    withdraw_queued(session, sub_id, "erased during the send")
    deliveries = session.execute(
        update(Delivery).where(Delivery.subscriber_id == sub_id)
        .values(email=ERASED, name="", first_name="",
                error=func.replace(Delivery.error, address, ERASED))
        .execution_options(synchronize_session=False)
    )
    clicks = session.execute(
        update(Click)
        .where(Click.delivery_id.in_(select(Delivery.id).where(Delivery.subscriber_id == sub_id)))
        .values(delivery_id=None).execution_options(synchronize_session=False)
    )
    gifts = session.execute(
        update(Gift).where(Gift.subscriber_id == sub_id).values(subscriber_id=None)
        .execution_options(synchronize_session=False)
    )
    hooks = session.execute(
        update(WebhookEvent).where(func.lower(WebhookEvent.email) == address)
        .values(email="", payload={})
        .execution_options(synchronize_session=False)
    )
    outbox.forget_subscriber(session, sub_id)
    session.execute(delete(ApiReply).where(ApiReply.subscriber_id == sub_id)
                    .execution_options(synchronize_session=False))
    session.execute(delete(Subscriber).where(Subscriber.id == sub_id)
                    .execution_options(synchronize_session=False))
    session.expunge(sub)
    if session.get(Suppression, digest) is None:
        suppression = Suppression(email_hash=digest, reason=ERASED)
        if at is not None:
            suppression.created_at = at
        session.add(suppression)
    session.flush()
    return Erasure(sub_id, digest, _count(deliveries), _count(hooks), _count(clicks),
                   _count(gifts))


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
