"""Scanners are not readers: which clicks count, and why the others do not.

A click is filtered when
* it is a prefetch (`Purpose: prefetch` and its relatives): no one chose to follow it;
* its user agent is a known crawler or scanner (crawlerdetect's maintained list), or empty;
* it is the trap link, which no person can see, reach with a keyboard or hear from a screen
  reader: whatever follows it is a machine, and every other click of its fingerprint on that
  edition is moved to "filtered" with it, earlier or later;
* it is part of a burst: `BURST_LINKS` different links from one fingerprint within
  `BURST_SECONDS`, soon after the edition went out (`SOON_AFTER` of the end of its send), the
  way a security gateway opens a message's links on delivery.
Everything else is a reader's click.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache

from crawlerdetect import CrawlerDetect
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailer.models import BOT, BURST, HUMAN, PREFETCH, TRAPPED, Click, Edition

BURST_LINKS = 3
BURST_SECONDS = 2.0
SOON_AFTER = timedelta(minutes=30)
_PREFETCH_HEADERS = ("HTTP_PURPOSE", "HTTP_SEC_PURPOSE", "HTTP_X_PURPOSE", "HTTP_X_MOZ")
_detector = CrawlerDetect()


def is_prefetch(environ: dict[str, object]) -> bool:
    """Browsers and proxies say so when they fetch ahead of a person."""
    return any("prefetch" in str(environ.get(h, "")).lower()
               or "preview" in str(environ.get(h, "")).lower() for h in _PREFETCH_HEADERS)


@lru_cache(maxsize=4096)
def is_bot(user_agent: str) -> bool:
    """A crawler, scanner or HTTP library by its user agent; no user agent at all too."""
    if not user_agent.strip():
        return True
    return bool(_detector.isCrawler(user_agent))


def first_verdict(*, prefetch: bool, user_agent: str, trap: bool) -> str:
    """What a click is before its neighbours are looked at."""
    if prefetch:
        return PREFETCH
    if trap:
        return TRAPPED
    if is_bot(user_agent):
        return BOT
    return HUMAN


def reclassify(session: Session, edition_id: int, fingerprint: str) -> None:
    """Apply the trap and burst rules to one fingerprint's clicks on one edition."""
    clicks = list(session.scalars(
        select(Click).where(Click.edition_id == edition_id, Click.fingerprint == fingerprint)
        .order_by(Click.at, Click.id)))
    if any(c.verdict == TRAPPED for c in clicks):
        # The trap is the surest sign: it takes over from the burst rule's verdict too.
        ids = [c.id for c in clicks if c.verdict in (HUMAN, BURST)]
        if ids:
            session.execute(update(Click).where(Click.id.in_(ids)).values(verdict=TRAPPED))
        return
    humans = [c for c in clicks if c.verdict == HUMAN]
    if len({c.position for c in humans}) < BURST_LINKS:
        return
    edition = session.get(Edition, edition_id)
    sent = (edition.finished_at or edition.started_at) if edition else None
    burst = _burst(humans, latest=(sent + SOON_AFTER) if sent else None)
    if burst:
        session.execute(update(Click).where(Click.id.in_(burst)).values(verdict=BURST))


def _burst(clicks: list[Click], latest: datetime | None) -> list[int]:
    """The ids of clicks inside any window of `BURST_SECONDS` holding `BURST_LINKS` distinct
    links, when the window starts no later than `latest` (soon after the send)."""
    found: set[int] = set()
    span = timedelta(seconds=BURST_SECONDS)
    for i, first in enumerate(clicks):
        if latest is not None and first.at > latest:
            break
        window = [c for c in clicks[i:] if c.at - first.at <= span]
        if len({c.position for c in window}) >= BURST_LINKS:
            found.update(c.id for c in window)
    return sorted(found)
