"""Which edition readers left after: bounces and unsubscribes (complaints among them) per edition.

A departure counts for the edition whose send started last before it, if that edition was
sent to the reader: between two sends the latest one is what readers were reacting to, and a
reader it never reached (they left before their copy went: `WITHDRAWN`) did not leave because
of it. A reader counts once per edition and bucket, so an address that unsubscribes and then
complains is one reader lost, not two.

The dashboard's edition history asks on every visit, so this is a handful of queries whatever
the list size: departure events are rare, and are fetched once and placed in Python rather than
joined once per edition.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.models import (
    BOUNCED,
    COMPLAINED,
    UNSUBSCRIBED,
    WITHDRAWN,
    Delivery,
    Edition,
    SubscriberEvent,
)

#: The subscriber events that mean a reader stopped receiving.
DEPARTURE_KINDS = (UNSUBSCRIBED, BOUNCED, COMPLAINED)
_CHUNK = 500  # subscriber ids per IN (...): well under every database's parameter limit


@dataclass
class Departures:
    """The readers one edition lost."""

    bounced: int = 0
    #: Readers who asked to stop, by unsubscribing or by complaining.
    unsubscribed: int = 0


def attribute(session: Session, editions: Sequence[Edition], *,
              now: datetime | None = None) -> dict[int, Departures]:
    """Each of `editions`' departures, by edition id (zeros for one that lost nobody).

    Only these editions' sends divide time: pass every edition that started in the period of
    interest, or a departure after an edition left out is put on the one before it. Events
    after `now` are ignored (a fixed clock in tests and replays; None: all of them)."""
    found = {e.id: Departures() for e in editions}
    started = sorted((e.started_at, e.id) for e in editions if e.started_at is not None)
    if not started:
        return found
    starts = [at for at, _ in started]
    events = session.execute(
        select(SubscriberEvent.subscriber_id, SubscriberEvent.kind, SubscriberEvent.created_at)
        .where(SubscriberEvent.created_at >= starts[0],
               SubscriberEvent.kind.in_(DEPARTURE_KINDS))
    ).all()
    if not events:
        return found
    received = _received(session, list(found), list({sub_id for sub_id, _, _ in events}))
    counted: set[tuple[int, int, str]] = set()
    for sub_id, kind, at in events:
        if now is not None and at > now:
            continue
        index = bisect.bisect_right(starts, at) - 1
        if index < 0:
            continue
        edition_id = started[index][1]
        if (edition_id, sub_id) not in received:
            continue
        bucket = "bounced" if kind == BOUNCED else "unsubscribed"
        if (edition_id, sub_id, bucket) in counted:
            continue
        counted.add((edition_id, sub_id, bucket))
        if bucket == "bounced":
            found[edition_id].bounced += 1
        else:
            found[edition_id].unsubscribed += 1
    return found


def _received(session: Session, edition_ids: list[int],
              subscriber_ids: list[int]) -> set[tuple[int, int]]:
    """(edition id, subscriber id) of the copies sent, or meant to be, to these readers."""
    received: set[tuple[int, int]] = set()
    for chunk in range(0, len(subscriber_ids), _CHUNK):
        received.update((edition_id, sub_id) for edition_id, sub_id in session.execute(
            select(Delivery.edition_id, Delivery.subscriber_id)
            .where(Delivery.edition_id.in_(edition_ids),
                   Delivery.subscriber_id.in_(subscriber_ids[chunk:chunk + _CHUNK]),
                   Delivery.state != WITHDRAWN)))  # (they left before it reached them)
    return received
