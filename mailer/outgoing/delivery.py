"""Delivering the outbox: signed POSTs to each receiver, retried for a day, at least once.

The scheduler calls `deliver_due` every `webhook_every_seconds` (`mailer webhooks deliver`
does the same from cron or by hand), never a web request. One pass:

1. leases the due rows (pending, due, not leased by another live process) in one short
   transaction: a process killed mid-batch leaves rows whose lease runs out, and the next pass
   sends them again, so every event arrives at least once; receivers deduplicate by its id;
2. sends each receiver's rows over one kept-alive connection to the address that was judged
   (`netguard.Pinned`), each signed per Standard Webhooks with the `standardwebhooks` package
   (`webhook-id`, `webhook-timestamp`, `webhook-signature`);
3. records the outcomes every `RECORD_EVERY` deliveries, in one transaction each (so a process
   killed mid-pass sends again at most that many a receiver already has): a 2xx is delivered;
   anything else is retried on a widening schedule until the event is a day old
   (`RETRY_WINDOW`), then given up. A receiver that has failed for a whole day is disabled and
   the staff alert addresses are told.

The signature's timestamp is the wall clock's, not the app's clock: receivers compare it with
theirs to refuse replays.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from mailer import audit, netguard
from mailer.alerts import alert
from mailer.app import App
from mailer.models import HOOK_DELIVERED, HOOK_FAILED, HOOK_PENDING, HookDelivery, HookEndpoint

log = logging.getLogger("mailer.webhooks.out")

BATCH = 500
RECORD_EVERY = 100
LEASE = timedelta(seconds=120)
#: Waits between attempts (the last repeats) until the event is a day old.
BACKOFF = (5, 30, 120, 600, 1800, 3600, 7200, 14400)
DISABLE_AFTER = timedelta(hours=24)
ACTOR = "webhooks"


@dataclass
class DrainReport:
    """What one pass (or several) did: counts for the log and the CLI."""

    delivered: int = 0
    failed_attempts: int = 0
    given_up: int = 0
    disabled: list[str] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return self.delivered + self.failed_attempts

    def add(self, other: DrainReport) -> None:
        self.delivered += other.delivered
        self.failed_attempts += other.failed_attempts
        self.given_up += other.given_up
        self.disabled += other.disabled


@dataclass
class _Outcome:
    row_id: int
    attempts: int
    expires_at: datetime
    status: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def backoff(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed attempt."""
    return timedelta(seconds=BACKOFF[min(attempts, len(BACKOFF)) - 1])


def deliver_due(app: App, *, batch: int = BATCH) -> DrainReport:
    """One pass over the due rows (at most `batch`); never raises for a receiver's fault."""
    now = app.clock.now()
    with app.sessions.begin() as session:
        leased = _lease(session, now, batch)
        endpoints = {e.id: (e.url, e.secret) for e in session.scalars(
            select(HookEndpoint).where(HookEndpoint.id.in_({r.endpoint_id for r in leased})))}
        rows = [(r.id, r.endpoint_id, r.message_id, r.payload, r.attempts, r.expires_at)
                for r in leased]
    by_endpoint: dict[int, list[tuple[int, str, dict[str, object], int, datetime]]] = (
        defaultdict(list))
    for row_id, endpoint_id, message_id, payload, attempts, expires in rows:
        by_endpoint[endpoint_id].append((row_id, message_id, payload, attempts, expires))
    report = DrainReport()
    for endpoint_id, items in by_endpoint.items():
        url, secret = endpoints[endpoint_id]
        for done in _post_all(app, url, secret, items):
            report.add(_record(app, {endpoint_id: done}))
    return report


def drain(app: App, *, max_seconds: float = 60.0, batch: int = BATCH) -> DrainReport:
    """Passes until nothing is due (or `max_seconds` went by): `mailer webhooks deliver`."""
    report, started = DrainReport(), time.monotonic()
    while time.monotonic() - started < max_seconds:
        one = deliver_due(app, batch=batch)
        report.add(one)
        if one.attempted < batch:
            break
    return report


def _lease(session: Session, now: datetime, batch: int) -> list[HookDelivery]:
    pick = (select(HookDelivery)
            .join(HookEndpoint, HookEndpoint.id == HookDelivery.endpoint_id)
            .where(HookDelivery.state == HOOK_PENDING, HookDelivery.next_attempt_at <= now,
                   HookEndpoint.enabled.is_(True),
                   or_(HookDelivery.leased_until.is_(None), HookDelivery.leased_until < now))
            .order_by(HookDelivery.id).limit(batch))
    if session.get_bind().dialect.name == "postgresql":
        pick = pick.with_for_update(of=HookDelivery, skip_locked=True)
    rows = list(session.scalars(pick))
    if rows:
        session.execute(update(HookDelivery)
                        .where(HookDelivery.id.in_([r.id for r in rows]))
                        .values(leased_until=now + LEASE)
                        .execution_options(synchronize_session=False))
    return rows


def _post_all(app: App, url: str, secret: str,
              items: list[tuple[int, str, dict[str, object], int, datetime]],
              ) -> Iterator[list[_Outcome]]:
    """POST the items to one receiver over one connection; their outcomes, `RECORD_EVERY`
    at a time (the caller records each lot before the next is sent)."""
    outcomes = [_Outcome(row_id, attempts + 1, expires)
                for row_id, _, _, attempts, expires in items]
    signer = Webhook(secret)
    settings = app.settings
    try:
        pinned = netguard.Pinned(url, allow_local=settings.allow_local_links,
                                 timeout=settings.webhook_timeout)
    except (netguard.Refused, netguard.Unreachable) as exc:
        for outcome in outcomes:
            outcome.error = str(exc)[:500]
        yield outcomes
        return
    done = 0
    try:
        for n, (outcome, (_, message_id, payload, _, _)) in enumerate(
                zip(outcomes, items, strict=True), 1):
            body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
            stamp = datetime.now(UTC)
            headers = {"Content-Type": "application/json", "User-Agent": settings.user_agent,
                       "webhook-id": message_id,
                       "webhook-timestamp": str(int(stamp.timestamp())),
                       "webhook-signature": signer.sign(message_id, stamp, body)}
            try:
                outcome.status = pinned.post(body, headers)
                if not outcome.ok:
                    outcome.error = f"HTTP {outcome.status}"
            except netguard.Unreachable as exc:
                outcome.error = str(exc)[:500]
            if n % RECORD_EVERY == 0:
                yield outcomes[done:n]
                done = n
        if done < len(outcomes):
            yield outcomes[done:]
    finally:
        pinned.close()


def _record(app: App, outcomes: dict[int, list[_Outcome]]) -> DrainReport:
    report, now = DrainReport(), app.clock.now()
    disabled: list[tuple[str, str]] = []
    with app.sessions.begin() as session:
        for endpoint_id, results in outcomes.items():
            _record_rows(session, results, now, report)
            endpoint = session.get(HookEndpoint, endpoint_id)
            if endpoint is None:
                continue
            if any(outcome.ok for outcome in results):
                endpoint.failing_since = None
            elif results:
                endpoint.failing_since = endpoint.failing_since or now
                if endpoint.enabled and now - endpoint.failing_since >= DISABLE_AFTER:
                    why = f"every delivery failed for 24 hours (last: {results[-1].error})"
                    endpoint.enabled, endpoint.disabled_reason = False, why[:500]
                    audit.record(session, ACTOR, "webhook-disabled",
                                 f"webhook:{endpoint_id}", f"{endpoint.url}: {why}", at=now)
                    disabled.append((endpoint.url, why))
    for url, why in disabled:
        report.disabled.append(url)
        alert(app, f"webhook endpoint disabled: {url}",
              f"Webhooks to {url} were disabled: {why}.\n\nFix the receiver, then turn it "
              "back on in the staff console (Webhooks) or with `mailer webhooks enable`. "
              "Events not delivered within a day of happening were given up.")
    return report


def _record_rows(session: Session, results: list[_Outcome], now: datetime,
                 report: DrainReport) -> None:
    values = []
    for outcome in results:
        row: dict[str, object] = {
            "id": outcome.row_id, "attempts": outcome.attempts, "leased_until": None,
            "last_status": outcome.status, "last_error": outcome.error}
        if outcome.ok:
            row.update(state=HOOK_DELIVERED, delivered_at=now)
            report.delivered += 1
        else:
            report.failed_attempts += 1
            retry_at = now + backoff(outcome.attempts)
            if retry_at > outcome.expires_at:
                row.update(state=HOOK_FAILED)
                report.given_up += 1
            else:
                row.update(next_attempt_at=retry_at)
        values.append(row)
    if values:
        session.execute(update(HookDelivery), values)
