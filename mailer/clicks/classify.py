"""Scanners are not readers: which clicks count, and why the others do not.

A click is filtered when
* it is a prefetch (`Purpose: prefetch` and its relatives): no one chose to follow it;
* its user agent is a known crawler or scanner (crawlerdetect's maintained list), or empty;
* it came before the edition's send began: a staff preview or a test send;
* it is the trap link, which no person can see, reach with a keyboard or hear from a screen
  reader: whatever follows it is a machine, and every other click of its fingerprint on that
  edition is moved to "filtered" with it, earlier or later;
* it is part of a burst: `BURST_LINKS` different links from one fingerprint within
  `BURST_SECONDS`, soon after the edition went out (`SOON_AFTER` of the end of its send), the
  way a security gateway opens a message's links on delivery.
Everything else is a reader's click.

The flusher classifies a batch in memory (`Classifier`), keeping each fingerprint's recent
clicks for the burst rule, so a reader's click costs no query of its own; the trap rule is one
set-based UPDATE per edition and flush, which also catches a trap seen by another web process.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache

from crawlerdetect.crawlerdetect import get_compiled_crawler_regex, get_compiled_exclusions_regex
from sqlalchemy import literal_column, select, update
from sqlalchemy.orm import Session

from mailer.models import BOT, BURST, HUMAN, PREFETCH, PREVIEW, TRAPPED, Click

BURST_LINKS = 3
BURST_SECONDS = 2.0
SOON_AFTER = timedelta(minutes=30)
_PREFETCH_HEADERS = ("HTTP_PURPOSE", "HTTP_SEC_PURPOSE", "HTTP_X_PURPOSE", "HTTP_X_MOZ")
_CRAWLERS = get_compiled_crawler_regex()
_EXCLUSIONS = get_compiled_exclusions_regex()
_FINGERPRINT_CHUNK = 500


def is_prefetch(environ: dict[str, object]) -> bool:
    """Browsers and proxies say so when they fetch ahead of a person."""
    for header in _PREFETCH_HEADERS:
        value = environ.get(header)
        if value:
            said = str(value).lower()
            if "prefetch" in said or "preview" in said:
                return True
    return False


@lru_cache(maxsize=16384)
def is_bot(user_agent: str) -> bool:
    """A crawler, scanner or HTTP library by its user agent; no user agent at all too.

    crawlerdetect's own test, in two steps: its exclusions (the tokens every browser carries,
    versions included) are removed, then its 1,400 crawler patterns are searched in what is
    left. The search is the costly part, and what is left is the same for every version of a
    browser, so it is remembered by what is left: a new browser build costs the removal
    alone (docs/performance.md has the figures)."""
    agent = user_agent.strip()
    if not agent:
        return True
    rest = _EXCLUSIONS.sub("", agent)
    return bool(rest) and _crawler_in(rest)


@lru_cache(maxsize=16384)
def _crawler_in(rest: str) -> bool:
    return _CRAWLERS.search(rest) is not None


def first_verdict(*, prefetch: bool, user_agent: str, trap: bool) -> str:
    """What a click is before its neighbours are looked at."""
    if prefetch:
        return PREFETCH
    if trap:
        return TRAPPED
    if is_bot(user_agent):
        return BOT
    return HUMAN


@dataclass
class _Recent:
    """One fingerprint's clicks on one edition, as far as the rules need them."""

    trapped: bool = False
    humans: list[tuple[datetime, int]] = field(default_factory=list)  # (at, position)


@dataclass
class Verdicts:
    """A batch's outcome: each click's verdict, and the bursts to mark among earlier rows."""

    verdicts: list[str]
    bursts: list[tuple[int, str, datetime, datetime]]  # (edition, fingerprint, from, to)


class Classifier:
    """The rules, applied in memory with what this process has seen lately."""

    def __init__(self) -> None:
        self._recent: dict[tuple[int, str], _Recent] = {}

    def classify(self, rows: list[tuple[int, int, datetime, str, str]],
                 sent: dict[int, tuple[datetime | None, datetime | None]]) -> Verdicts:
        """`rows` are (edition, position, at, fingerprint, first verdict); `sent` is each
        edition's (send began, send ended)."""
        verdicts: list[str] = []
        bursts: list[tuple[int, str, datetime, datetime]] = []
        for edition_id, position, at, fp, verdict in rows:
            began, ended = sent[edition_id]
            if verdict == HUMAN and (began is None or at < began):
                verdict = PREVIEW
            recent = self._recent.setdefault((edition_id, fp), _Recent())
            if verdict == TRAPPED:
                recent.trapped = True
            elif verdict == HUMAN and recent.trapped:
                verdict = TRAPPED
            elif verdict == HUMAN:
                window = _burst_window(recent, at, position, ended or began)
                if window is not None:
                    bursts.append((edition_id, fp, *window))
                    verdict = BURST
            verdicts.append(verdict)
        self._forget(max((r[2] for r in rows), default=None))
        return Verdicts(verdicts, bursts)

    def _forget(self, now: datetime | None) -> None:
        """Fingerprints quiet for longer than the burst window need only their trap flag."""
        if now is None or len(self._recent) < 10_000:
            return
        horizon = now - timedelta(seconds=BURST_SECONDS)
        self._recent = {key: value for key, value in self._recent.items()
                        if value.trapped or (value.humans and value.humans[-1][0] >= horizon)}


def _burst_window(recent: _Recent, at: datetime, position: int,
                  sent: datetime | None) -> tuple[datetime, datetime] | None:
    """Add a human click; the (from, to) of a burst it completes, if it does."""
    span = timedelta(seconds=BURST_SECONDS)
    recent.humans = [(t, p) for t, p in recent.humans if at - t <= span] + [(at, position)]
    if sent is not None and at - span > sent + SOON_AFTER:
        return None
    if len({p for _, p in recent.humans}) < BURST_LINKS:
        return None
    return recent.humans[0][0], at


def apply_rules(session: Session, edition_id: int, fingerprints: Iterable[str],
                bursts: list[tuple[int, str, datetime, datetime]]) -> None:
    """The rules' effect on rows already written: a burst's earlier clicks, and every click
    of a fingerprint that followed the trap (here or in another web process).

    Which sources followed the trap is read from the trap's own clicks alone (a partial
    index holds only them, `ix_clicks_trapped`), and only those sources' clicks are updated:
    the flush's other sources, nearly all of them, cost no read of their earlier clicks."""
    for burst_edition, fp, start, end in bursts:
        if burst_edition == edition_id:
            session.execute(
                update(Click).where(Click.edition_id == edition_id, Click.fingerprint == fp,
                                    Click.verdict == HUMAN, Click.at >= start, Click.at <= end)
                .values(verdict=BURST).execution_options(synchronize_session=False))
    # (The verdict as a literal: a planner can use a partial index only for a condition it
    # can see implies the index's own, which a bound parameter does not show.)
    candidates = sorted(set(fingerprints))
    for i in range(0, len(candidates), _FINGERPRINT_CHUNK):
        trapped = {fp for fp in session.scalars(
            select(Click.fingerprint).where(
                Click.edition_id == edition_id, Click.verdict == literal_column(f"'{TRAPPED}'"),
                Click.fingerprint.in_(candidates[i:i + _FINGERPRINT_CHUNK]))) if fp}
        if trapped:
            session.execute(
                update(Click)
                .where(Click.edition_id == edition_id, Click.fingerprint.in_(trapped),
                       Click.verdict.in_((HUMAN, BURST)))
                .values(verdict=TRAPPED).execution_options(synchronize_session=False))
