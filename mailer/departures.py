"""Which edition readers left after: bounces, unsubscribes and spam complaints per edition.

A departure counts for the latest edition sent to that reader whose send started before it,
within `WINDOW` of that start: what a reader reacts to is the last copy they got, and a daily
reader's complaint on a Saturday, after the weekly digest they do not take started, is about
Friday's edition, not the digest. An edition never reached (they left before their copy went:
`WITHDRAWN`) is not one they left because of. A reader counts once per edition and bucket, so
an address that unsubscribes and then complains is one reader lost, not two.

Complaints are also counted on their own, as a rate of the copies delivered: the figure Gmail
and Yahoo hold bulk senders to. Only a reader whose copy was delivered (or whose server's
answer was lost: a complaint proves it arrived) counts, so the rate never counts a reader its
denominator leaves out.

The dashboard's edition history asks on every visit, so this is a handful of queries whatever
the list size: departure events are rare, and are fetched once and placed in Python rather than
joined once per edition.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.models import (
    AMBIGUOUS,
    BOUNCED,
    COMPLAINED,
    DELIVERED,
    UNSUBSCRIBED,
    WITHDRAWN,
    Delivery,
    Edition,
    SubscriberEvent,
)

#: The subscriber events that mean a reader stopped receiving.
DEPARTURE_KINDS = (UNSUBSCRIBED, BOUNCED, COMPLAINED)
_CHUNK = 500  # subscriber ids per IN (...): well under every database's parameter limit
#: How long after its send started a departure can still be put on an edition: complaints
#: and bounces arrive within days; a reader paused for months who leaves is not reacting to it.
WINDOW = timedelta(days=30)

# Spam complaints per copy delivered. Gmail's and Yahoo's bulk-sender rules (February 2024)
# ask senders to stay under 0.1% and filter those above 0.3%; docs/operations.md ("Spam
# complaints") says where these show. A rate equal to a limit is still within it.
#: Above this rate: an alert (watch the list, and how readers joined it).
COMPLAINT_ALERT_RATE = 0.001
#: Above this rate: an error (Gmail and Yahoo start sending the edition to spam).
COMPLAINT_ERROR_RATE = 0.003
OK, ALERT, ERROR = "ok", "alert", "error"
#: The ledger states of a copy whose reader can have complained of it.
ARRIVED = (DELIVERED, AMBIGUOUS)
#: What each level means, in the words the CLI and the console use.
COMPLAINT_WORDS = {
    OK: "",
    ALERT: f"above {COMPLAINT_ALERT_RATE:.1%}: watch it",
    ERROR: f"above Gmail's and Yahoo's {COMPLAINT_ERROR_RATE:.1%} limit",
}


@dataclass
class Departures:
    """The readers one edition lost."""

    bounced: int = 0
    #: Readers who asked to stop, by unsubscribing or by complaining.
    unsubscribed: int = 0
    #: Readers who reported it as spam (also in `unsubscribed`), among those it was delivered to.
    complained: int = 0


def complaint_rate(complaints: int, delivered: int) -> float:
    """Complaints per copy delivered; 0 when nothing was delivered (nothing to complain of)."""
    return complaints / delivered if delivered else 0.0


def complaint_level(rate: float) -> str:
    """OK, ALERT or ERROR for a complaint rate, against the bulk senders' limits."""
    if rate > COMPLAINT_ERROR_RATE:
        return ERROR
    if rate > COMPLAINT_ALERT_RATE:
        return ALERT
    return OK


def complaint_words(level: str) -> str:
    """What a complaint level means, for a reader of the figures ("" when all is well)."""
    return COMPLAINT_WORDS[level]


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
        while index >= 0 and (started[index][1], sub_id) not in received:
            index -= 1  # (an edition this reader was not sent: the one before it)
        if index < 0 or at - starts[index] > WINDOW:
            continue
        edition_id = started[index][1]
        state = received[(edition_id, sub_id)]
        lost = found[edition_id]
        bucket = "bounced" if kind == BOUNCED else "unsubscribed"
        if (edition_id, sub_id, bucket) not in counted:
            counted.add((edition_id, sub_id, bucket))
            if bucket == "bounced":
                lost.bounced += 1
            else:
                lost.unsubscribed += 1
        if (kind == COMPLAINED and state in ARRIVED
                and (edition_id, sub_id, COMPLAINED) not in counted):
            counted.add((edition_id, sub_id, COMPLAINED))
            lost.complained += 1
    return found


def _received(session: Session, edition_ids: list[int],
              subscriber_ids: list[int]) -> dict[tuple[int, int], str]:
    """The ledger state of each copy sent, or meant to be, to these readers, by (edition id,
    subscriber id)."""
    received: dict[tuple[int, int], str] = {}
    for chunk in range(0, len(subscriber_ids), _CHUNK):
        rows = session.execute(
            select(Delivery.edition_id, Delivery.subscriber_id, Delivery.state)
            .where(Delivery.edition_id.in_(edition_ids),
                   Delivery.subscriber_id.in_(subscriber_ids[chunk:chunk + _CHUNK]),
                   Delivery.state != WITHDRAWN))  # (they left before it reached them)
        received.update(((edition_id, sub_id), state) for edition_id, sub_id, state in rows)
    return received


def edition_complaints(session: Session, edition: Edition) -> int:
    """The spam complaints attributed to one edition, as on the dashboard: the editions
    started within `WINDOW` after it decide which of its readers' complaints are about a later
    copy."""
    if edition.started_at is None:
        return 0
    following = list(session.scalars(
        select(Edition).where(Edition.started_at > edition.started_at,
                              Edition.started_at <= edition.started_at + WINDOW)))
    return attribute(session, [edition, *following])[edition.id].complained
