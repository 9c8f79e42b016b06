"""What staff see after "sent": clicks per link, readers against scanners, the donate ask.

`edition_stats` is the one place the figures are computed, for `mailer editions stats`
(whose JSON is a contract: issue 21 names its keys), the console's edition page and its CSV;
`click_history` is the dashboard's 30 days. Human clicks are the ones that count; every
filtered click is counted too, by reason (`mailer.clicks.classify`), so nothing is hidden.

The click rate's basis depends on what the edition could know: per-reader editions count
readers who clicked (unique deliveries), aggregate ones can only count clicks, and the JSON
says which (`click_rate_basis`). Opens, when the pixel was on, are shown apart and labelled
unreliable: image proxies open mail nobody reads and image blocking hides mail people do.

The spam complaints an edition drew are reported beside its clicks, as a rate of the copies
delivered with Gmail's and Yahoo's levels (`mailer.departures`, which also counts them for the
dashboard): staff read one report after a send, so the number a mailbox provider judges us by
is in it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, distinct, func, select
from sqlalchemy.orm import Session

from mailer import departures
from mailer.clicks.asks import AskFigures, better, edition_asks
from mailer.clicks.gifts import edition_gift_totals
from mailer.clicks.links import OFF, PER_READER
from mailer.clicks.store import load_links
from mailer.models import (
    ARCHIVE,
    ARTICLE,
    CANCELLED,
    DAILY,
    DELIVERED,
    DONATE,
    FAILED,
    HUMAN,
    OPEN,
    PAUSED_SEND,
    SENDING,
    SENT,
    SIGNUP,
    TESTING,
    Click,
    Delivery,
    Edition,
    EditionLink,
)
from mailer.subject_test import summary as subject_test_summary

#: The kinds a report lists, in the JSON's words.
REPORTED = (ARTICLE, DONATE, SIGNUP, ARCHIVE)
#: Editions that went out; and ones that stopped, perhaps after reaching some readers.
WENT_OUT = (SENDING, TESTING, PAUSED_SEND, SENT)
STOPPED = (CANCELLED, FAILED)


def edition_stats(session: Session, edition: Edition) -> dict[str, Any]:
    """The edition's figures as `mailer editions stats --json` prints them."""
    links = {link.position: link for link in load_links(session, edition.id)}
    tally: Counter[tuple[int, str]] = Counter()
    for position, verdict, n in session.execute(
            select(Click.position, Click.verdict, func.count())
            .where(Click.edition_id == edition.id).group_by(Click.position, Click.verdict)):
        tally[(position, verdict)] = n
    kind = {position: link.kind for position, link in links.items()}
    clicks = {key: n for key, n in tally.items() if kind.get(key[0]) != OPEN}
    human = sum(n for (position, verdict), n in clicks.items()
                if verdict == HUMAN and kind.get(position) in REPORTED)
    total = sum(clicks.values())
    filtered_by: Counter[str] = Counter()
    for (_, verdict), n in clicks.items():
        if verdict != HUMAN:  # (the trap link's own hits are never human: `first_verdict`)
            filtered_by[verdict] += n
    delivered = session.scalar(select(func.count()).select_from(Delivery).where(
        Delivery.edition_id == edition.id, Delivery.state == DELIVERED)) or 0
    per_reader = edition.click_tracking == PER_READER
    clickers = _unique_clickers(session, edition.id, links) if per_reader else 0
    rate_of = clickers if per_reader else human

    def human_for(wanted: str) -> int:
        return sum(n for (position, verdict), n in clicks.items()
                   if verdict == HUMAN and kind.get(position) == wanted)

    ranked = sorted((position for position, link in links.items() if link.kind in REPORTED),
                    key=lambda p: (-clicks.get((p, HUMAN), 0), p))
    listed = [{"url": links[p].url, "kind": links[p].kind, "title": links[p].title,
               "clicks_human": clicks.get((p, HUMAN), 0),
               "clicks_filtered": sum(n for (q, v), n in clicks.items() if q == p and v != HUMAN)}
              for p in ranked]
    gifts, amounts = edition_gift_totals(session, edition.id)
    complaints = departures.edition_complaints(session, edition)
    complaint_rate = departures.complaint_rate(complaints, delivered)
    stats: dict[str, Any] = {
        "edition": edition.edition_date.isoformat(),
        "kind": edition.kind,
        "subject": edition.subject,
        "state": edition.state,
        "click_tracking": edition.click_tracking,
        "delivered": delivered,
        "clicks_total": total,
        "clicks_human": human,
        "clicks_filtered": total - human,
        "filtered_by": dict(sorted(filtered_by.items())),
        "click_rate": round(rate_of / delivered, 4) if delivered else 0.0,
        "click_rate_basis": "unique_clickers" if per_reader else "clicks",
        "donate_clicks_human": human_for(DONATE),
        "signup_clicks_human": human_for(SIGNUP),
        "links": listed,
        "gifts": {"count": gifts, "amounts": {c: _money(v) for c, v in sorted(amounts.items())}},
        "donation_asks": _asks_json(edition_asks(session, edition.id, links)),
        "subject_test": subject_test_summary(edition, session),
        "complaints": complaints,
        "complaint_rate": round(complaint_rate, 6),
        "complaint_level": departures.complaint_level(complaint_rate),
    }
    if per_reader:
        stats["unique_clickers"] = clickers
    if OPEN in kind.values():
        stats["opens"] = sum(n for (position, verdict), n in tally.items()
                             if kind.get(position) == OPEN and verdict == HUMAN)
        stats["opens_reliable"] = False
    return stats


def sent_edition_stats(session: Session, edition: Edition) -> dict[str, Any] | None:
    """`edition_stats` for an edition readers received: one sending, paused or sent, or
    cancelled or failed after delivering to someone (its readers click all the same); None
    for one that never went out, which has nothing to report."""
    if edition.state not in WENT_OUT + STOPPED:
        return None
    stats = edition_stats(session, edition)
    return stats if edition.state in WENT_OUT or stats["delivered"] else None


def _unique_clickers(session: Session, edition_id: int, links: dict[int, Any]) -> int:
    reported = [position for position, link in links.items() if link.kind in REPORTED]
    return session.scalar(select(func.count(distinct(Click.delivery_id))).where(
        Click.edition_id == edition_id, Click.verdict == HUMAN,
        Click.delivery_id.is_not(None), Click.position.in_(reported))) or 0


def _asks_json(figures: list[AskFigures]) -> list[dict[str, Any]]:
    best = better(figures)
    return [{"name": f.name, "shown": f.shown, "clicks_human": f.clicks_human,
             "clicks_filtered": f.clicks_filtered, "click_rate": round(f.rate, 4),
             "interval_95": [round(x, 4) for x in f.interval], "better": f.name == best,
             "gifts": f.gifts,
             "amount": {c: _money(v) for c, v in sorted(f.amounts.items())}} for f in figures]


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


@dataclass(frozen=True)
class DayClicks:
    """One sent edition on the dashboard's chart."""

    day: date
    delivered: int
    click_rate: float
    click_rate_basis: str
    donate_clicks: int


def click_history(session: Session, today: date, days: int = 30) -> list[DayClicks]:
    """The sent editions of the last `days` days whose clicks were measured, oldest first.

    The same figures as `edition_stats` (tests/test_click_reports.py holds them equal), in two
    queries whatever the number of editions, since the dashboard asks on every visit: delivered
    is the edition's `sent_count`, which is its ledger's delivered rows, written when its send
    finished. Editions sent with click tracking off are left out: a 0% there measures nothing.
    """
    editions = session.execute(
        select(Edition.id, Edition.edition_date, Edition.click_tracking, Edition.sent_count)
        .where(Edition.state == SENT, Edition.click_tracking != OFF, Edition.kind == DAILY,
               Edition.edition_date > today - timedelta(days=days),
               Edition.edition_date <= today)
        .order_by(Edition.edition_date)).all()
    if not editions:
        return []
    reported = EditionLink.kind.in_(REPORTED)
    figures = {edition_id: (human, donate, clickers) for edition_id, human, donate, clickers
               in session.execute(
                   select(Click.edition_id, func.count().filter(reported),
                          func.count().filter(EditionLink.kind == DONATE),
                          func.count(distinct(Click.delivery_id)).filter(reported))
                   .join(EditionLink, and_(EditionLink.edition_id == Click.edition_id,
                                           EditionLink.position == Click.position))
                   .where(Click.edition_id.in_([e.id for e in editions]),
                          Click.verdict == HUMAN)
                   .group_by(Click.edition_id))}
    out = []
    for edition_id, day, mode, delivered in editions:
        human, donate, clickers = figures.get(edition_id, (0, 0, 0))
        per_reader = mode == PER_READER
        rate_of = clickers if per_reader else human
        out.append(DayClicks(day, delivered, round(rate_of / delivered, 4) if delivered else 0.0,
                             "unique_clickers" if per_reader else "clicks", donate))
    return out


def readers_who_clicked(session: Session, edition_id: int) -> list[tuple[str, str, int]]:
    """(address, first name, human clicks) of each reader who clicked, most clicks first: for
    re-engaging readers, only from per-reader editions (aggregate clicks name nobody), and
    never an erased reader (erasure unlinks their clicks)."""
    rows = session.execute(
        select(Delivery.email, Delivery.first_name, func.count(Click.id))
        .join(Click, Click.delivery_id == Delivery.id)
        .where(Click.edition_id == edition_id, Delivery.edition_id == edition_id,
               Click.verdict == HUMAN)
        .group_by(Delivery.email, Delivery.first_name)
        .order_by(func.count(Click.id).desc(), Delivery.email))
    return [(email, first, n) for email, first, n in rows]
