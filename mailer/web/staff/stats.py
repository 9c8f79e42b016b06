"""Numbers for the dashboard: edition history with outcomes, list growth, the next send.

Read-only, and a handful of queries whatever the list size: the ledger is counted with one
GROUP BY over the editions shown. "Bounced" and "unsubscribed after" for an edition are the
readers it lost, as `mailer.departures` attributes them: recipients whose address bounced, or
who unsubscribed or complained, while it was the last copy they had been sent. "Spam
complaints" are those of its recipients who reported it as spam, as a rate of the copies
delivered, and the dashboard warns when the latest sent edition's rate is high.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer import departures, ledger
from mailer.app import App
from mailer.clicks.report import DayClicks
from mailer.feedback.unsubscribe_mail import KEPT_EVENT, REQUEST_EVENT
from mailer.models import (
    AMBIGUOUS,
    CLAIMED,
    DELIVERED,
    DFAILED,
    QUEUED,
    SENT,
    WITHDRAWN,
    Delivery,
    Edition,
    Subscriber,
    SubscriberEvent,
)
from mailer.optin import CONFIRMED
from mailer.schedule import next_run
from mailer.wording import plural

SIGNUP_KINDS = ("confirmed", "activated", "added")


@dataclass
class EditionRow:
    edition: Edition
    sent: int = 0
    failed: int = 0
    queued: int = 0
    unknown: int = 0
    bounced: int = 0
    unsubscribed: int = 0
    complained: int = 0

    @property
    def complaint_rate(self) -> float:
        return departures.complaint_rate(self.complained, self.sent)

    @property
    def complaint_level(self) -> str:
        return departures.complaint_level(self.complaint_rate)


def edition_history(session: Session, *, limit: int = 30, now: datetime) -> list[EditionRow]:
    """The latest editions, newest first, with ledger counts and what each one lost."""
    editions = list(session.scalars(select(Edition).order_by(Edition.edition_date.desc())
                                    .limit(limit)))
    rows = {e.id: EditionRow(e) for e in editions}
    if not rows:
        return []
    counted = session.execute(
        select(Delivery.edition_id, Delivery.state, func.count())
        .where(Delivery.edition_id.in_(rows)).group_by(Delivery.edition_id, Delivery.state))
    for edition_id, state, n in counted:
        row = rows[edition_id]
        if state == DELIVERED:
            row.sent += n
        elif state == DFAILED:
            row.failed += n
        elif state in (QUEUED, CLAIMED):
            row.queued += n
        elif state == AMBIGUOUS:
            row.unknown += n
    for edition_id, lost in departures.attribute(session, editions, now=now).items():
        rows[edition_id].bounced = lost.bounced
        rows[edition_id].unsubscribed = lost.unsubscribed
        rows[edition_id].complained = lost.complained
    return [rows[e.id] for e in editions]


def complaint_alert(history: list[EditionRow]) -> EditionRow | None:
    """The latest sent edition, when its complaint rate is above the level to watch: the
    dashboard says so at the top, since by the next send it may be too late to act."""
    latest = next((row for row in history if row.edition.state == SENT), None)
    if latest is None or latest.complaint_level == departures.OK:
        return None
    return latest


@dataclass
class DayGrowth:
    day: date
    joined: int = 0
    left: int = 0


def list_growth(session: Session, *, now: datetime, tz: ZoneInfo,
                days: int = 30) -> list[DayGrowth]:
    """Sign-ups (confirmed, or added as active by import or CLI) and departures (unsubscribed,
    bounced, complained) per local day, oldest first, today included."""
    end = now.astimezone(tz).date()
    result = [DayGrowth(end - timedelta(days=days - 1 - i)) for i in range(days)]
    index = {g.day: g for g in result}
    since = now - timedelta(days=days + 1)
    rows = session.execute(
        select(SubscriberEvent.kind, SubscriberEvent.detail, SubscriberEvent.created_at)
        .where(SubscriberEvent.created_at >= since,
               SubscriberEvent.kind.in_(SIGNUP_KINDS + departures.DEPARTURE_KINDS))
    )
    for kind, detail, at in rows:
        bucket = index.get(at.astimezone(tz).date())
        if bucket is None:
            continue
        if kind in departures.DEPARTURE_KINDS:
            bucket.left += 1
        elif kind != "added" or detail == "status active":
            bucket.joined += 1
    return result


@dataclass
class Bar:
    x: float
    y: float
    height: float
    label: str


@dataclass
class Chart:
    """Geometry for a small inline SVG (attributes only: the CSP allows no inline styles)."""

    width: int
    height: int
    baseline: float
    bar_width: float
    joined: list[Bar] = field(default_factory=list)
    left: list[Bar] = field(default_factory=list)
    peak: int = 0


def growth_chart(growth: list[DayGrowth], *, width: int = 600, height: int = 160) -> Chart:
    """Sign-ups as bars above a baseline, departures below it, scaled to the busiest day."""
    peak = max([g.joined for g in growth] + [g.left for g in growth] + [1])
    half = (height - 20) / 2
    baseline = 10 + half
    step = width / max(1, len(growth))
    bar = max(1.0, step * 0.7)
    chart = Chart(width=width, height=height, baseline=baseline, bar_width=round(bar, 1),
                  peak=peak)
    for i, g in enumerate(growth):
        x = i * step + (step - bar) / 2
        label = f"{g.day:%a %d %b}: {g.joined} joined, {g.left} left"
        up = half * g.joined / peak
        down = half * g.left / peak
        chart.joined.append(Bar(round(x, 1), round(baseline - up, 1), round(up, 1), label))
        chart.left.append(Bar(round(x, 1), round(baseline, 1), round(down, 1), label))
    return chart


def next_send(app: App, now: datetime) -> datetime | None:
    """The next scheduled send instant (the scheduler's own trigger), or None."""
    return next_run(app.settings, now)


def live_counts(session: Session, edition_id: int | None) -> dict[str, int]:
    """Ledger counts under the names the progress page uses (all 0 for no edition yet)."""
    c = ledger.counts(session, edition_id) if edition_id is not None else defaultdict(int)
    return {"sent": c[DELIVERED], "failed": c[DFAILED], "unknown": c[AMBIGUOUS],
            "queued": c[QUEUED] + c[CLAIMED], "withdrawn": c[WITHDRAWN]}


@dataclass
class NeedsAPerson:
    """An unsubscribe request by email without a token, from a reader still on the list."""

    subscriber_id: int
    email: str
    at: datetime
    detail: str


def unsubscribe_requests(session: Session, *, now: datetime,
                         days: int = 30) -> list[NeedsAPerson]:
    """Requests noted by `mailer unsubscribes ingest` in the last `days`, newest first, one per
    reader, while the reader still receives (unsubscribing them takes them off the list)."""
    rows = session.execute(
        select(Subscriber.id, Subscriber.email, SubscriberEvent.created_at,
               SubscriberEvent.detail)
        .join(SubscriberEvent, SubscriberEvent.subscriber_id == Subscriber.id)
        .where(SubscriberEvent.kind == REQUEST_EVENT,
               SubscriberEvent.created_at >= now - timedelta(days=days),
               Subscriber.status.in_(CONFIRMED))
        .order_by(SubscriberEvent.created_at.desc(), SubscriberEvent.id.desc()).limit(200))
    found: dict[int, NeedsAPerson] = {}
    for sub_id, address, at, detail in rows:
        found.setdefault(sub_id, NeedsAPerson(sub_id, address, at, detail))
    if not found:
        return []
    kept: dict[int, datetime] = {}
    for sub_id, at in session.execute(
            select(SubscriberEvent.subscriber_id, SubscriberEvent.created_at)
            .where(SubscriberEvent.kind == KEPT_EVENT,
                   SubscriberEvent.subscriber_id.in_(list(found)))):
        kept[sub_id] = max(at, kept.get(sub_id, at))
    # (set aside by staff after the latest request: not listed until another one comes)
    return [r for r in found.values() if r.subscriber_id not in kept
            or kept[r.subscriber_id] < r.at]


@dataclass
class ClickChart:
    """The dashboard's 30 days of clicks: each sent edition's click rate and donate clicks,
    as two bars side by side, each series scaled to its own highest day."""

    width: int
    height: int
    bar_width: float
    rate: list[Bar] = field(default_factory=list)
    donate: list[Bar] = field(default_factory=list)
    peak_rate: float = 0.0
    peak_donate: int = 0


def click_chart(history: list[DayClicks], *, width: int = 600, height: int = 160) -> ClickChart:
    peak_rate = max([d.click_rate for d in history] + [0.0])
    peak_donate = max([d.donate_clicks for d in history] + [0])
    step = width / max(1, len(history))
    bar = max(1.0, step * 0.35)
    chart = ClickChart(width=width, height=height, bar_width=round(bar, 1),
                       peak_rate=peak_rate, peak_donate=peak_donate)
    room = height - 10
    for i, d in enumerate(history):
        x = i * step + (step - 2 * bar) / 2
        label = (f"{d.day:%a %d %b}: click rate {d.click_rate * 100:.1f}%, "
                 f"{d.donate_clicks} donate clicks")
        up = room * d.click_rate / peak_rate if peak_rate else 0.0
        chart.rate.append(Bar(round(x, 1), round(height - up, 1), round(up, 1), label))
        up = room * d.donate_clicks / peak_donate if peak_donate else 0.0
        chart.donate.append(Bar(round(x + bar, 1), round(height - up, 1), round(up, 1), label))
    return chart


def _took(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def send_summary(edition: Edition, counts: dict[str, int], tz: Any) -> str:
    """A finished send in a sentence, as an editor would tell it."""
    parts = [f"Sent to {plural(counts['sent'], 'reader')}"]
    if edition.finished_at is not None:
        parts[0] += f" by {edition.finished_at.astimezone(tz):%H:%M}"
        if edition.started_at is not None:
            took = (edition.finished_at - edition.started_at).total_seconds()
            parts[0] += f" (it took {_took(took)})"
    if counts["failed"]:
        parts.append(f"{plural(counts['failed'], 'address', 'addresses')} could not be "
                     "delivered (their mail servers refused)")
    if counts["unknown"]:
        parts.append(f"for {plural(counts['unknown'], 'message')} the mail server's answer "
                     "was lost, so it may or may not have arrived")
    if counts["withdrawn"]:
        parts.append(f"{plural(counts['withdrawn'], 'reader')} left the list during the send "
                     "and were not sent it")
    return ". ".join(part[0].upper() + part[1:] for part in parts) + "."
