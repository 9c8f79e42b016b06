"""How each donation ask did: readers shown, human donate clicks, gifts, and whether one is
better than the others with the intervals to say so.

An edition's asks are its DONATE links (one per live ask, named in their utm_content; the
first is the one readers with no ask suffix saw, `ledger.split_variant`). A rate comes with a
95% Wilson score interval, which behaves at the small counts a morning's donate clicks are;
an ask is marked better only when its interval lies wholly above every other ask's, so a
lucky morning is not read as a finding.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.clicks.links import Link, donate_ask
from mailer.clicks.store import load_links
from mailer.ledger import split_variant
from mailer.models import (
    DELIVERED,
    DONATE,
    HUMAN,
    PAUSED_SEND,
    SENDING,
    SENT,
    TESTING,
    Click,
    Delivery,
    Edition,
    Gift,
)

Z95 = 1.959964


@dataclass
class AskFigures:
    name: str
    shown: int = 0
    clicks_human: int = 0
    clicks_filtered: int = 0
    gifts: int = 0
    amounts: dict[str, Decimal] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.clicks_human / self.shown if self.shown else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.clicks_human, self.shown)


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (0, 1 with no trials)."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def better(figures: Iterable[AskFigures]) -> str | None:
    """The ask whose interval lies wholly above every other's, if one does."""
    asks = [f for f in figures if f.shown]
    if len(asks) < 2:
        return None
    best = max(asks, key=lambda f: f.rate)
    low = best.interval[0]
    return best.name if all(low > other.interval[1] for other in asks if other is not best) \
        else None


def edition_asks(session: Session, edition_id: int, links: dict[int, Link]) -> list[AskFigures]:
    """Per ask of one edition, in the order its links were made (the first is the default)."""
    donate = {position: donate_ask(link.utm_content) for position, link in sorted(links.items())
              if link.kind == DONATE}
    figures = {name: AskFigures(name) for name in dict.fromkeys(donate.values()) if name}
    if not figures:
        return []
    first = next(iter(figures))
    for variant, n in session.execute(
            select(Delivery.variant, func.count()).where(
                Delivery.edition_id == edition_id, Delivery.state == DELIVERED)
            .group_by(Delivery.variant)):
        name = split_variant(variant)[1] or first
        if name in figures:
            figures[name].shown += n
    tally: Counter[tuple[int, bool]] = Counter()
    for position, verdict, n in session.execute(
            select(Click.position, Click.verdict, func.count())
            .where(Click.edition_id == edition_id, Click.position.in_(list(donate)))
            .group_by(Click.position, Click.verdict)):
        tally[(position, verdict == HUMAN)] += n
    for (position, human), n in tally.items():
        ask = figures.get(donate[position])
        if ask is not None and human:
            ask.clicks_human += n
        elif ask is not None:
            ask.clicks_filtered += n
    for content, currency, n, minor in session.execute(
            select(Gift.utm_content, Gift.currency, func.count(), func.sum(Gift.amount_minor))
            .where(Gift.edition_id == edition_id)
            .group_by(Gift.utm_content, Gift.currency)):
        ask = figures.get(donate_ask(str(content or "")))
        if ask is not None:
            ask.gifts += n
            ask.amounts[currency] = ask.amounts.get(currency, Decimal(0)) + \
                Decimal(int(minor or 0)).scaleb(-2)
    return list(figures.values())


def asks_over(session: Session, since: date, until: date) -> list[AskFigures]:
    """Each ask's figures summed over the editions sent from `since` to `until` (dates,
    inclusive), for the console's period view: readers, clicks and gifts add up across
    editions, and the interval is that of the sums."""
    total: dict[str, AskFigures] = {}
    editions = session.scalars(select(Edition.id).where(
        Edition.state.in_((SENT, SENDING, TESTING, PAUSED_SEND)), Edition.click_tracking != "off",
        Edition.edition_date >= since, Edition.edition_date <= until)).all()
    for edition_id in editions:
        links = {link.position: link for link in load_links(session, edition_id)}
        for figures in edition_asks(session, edition_id, links):
            into = total.setdefault(figures.name, AskFigures(figures.name))
            into.shown += figures.shown
            into.clicks_human += figures.clicks_human
            into.clicks_filtered += figures.clicks_filtered
            into.gifts += figures.gifts
            for currency, amount in figures.amounts.items():
                into.amounts[currency] = into.amounts.get(currency, Decimal(0)) + amount
    return sorted(total.values(), key=lambda f: f.name)
