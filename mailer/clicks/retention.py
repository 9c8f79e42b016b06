"""What click measurement keeps, kept no longer than docs/privacy.md says.

`purge` is the daily housekeeping: every send run ends with it (`mailer.pipeline.run_send`,
so cron's `mailer send` and the scheduler's daily job both run it), and `mailer clicks purge`
runs it alone, for the days no edition goes out. It is cheap when there is nothing to do and
idempotent, so running it more often changes nothing:

* clicks older than `click_retention_days` are deleted (per-reader clicks' link to a delivery
  goes with them), and gifts given before then lose their link to a subscriber (the gift and
  its edition stay: totals do not change);
* fingerprints older than 48 hours are cleared, and the daily salts they were made with
  deleted (`mailer.clicks.fingerprint.purge_salts`), so nobody can recompute or compare them;
* rate-limit rows (`rate_events`, which hold client IP addresses) older than a day are
  deleted: no limit counts further back (the longest window, POST /subscribe's, is a day);
* outgoing webhook deliveries (which carry readers' addresses) are deleted 30 days after the
  event once delivered or given up, and the API's stored answers (Idempotency-Key replays)
  after the 24 hours they are replayed for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from mailer.clicks.fingerprint import KEEP_DAYS, purge_salts
from mailer.config import Settings
from mailer.models import HOOK_PENDING, ApiReply, Click, Gift, HookDelivery, RateEvent

#: How long a click keeps its fingerprint (as long as its salt may still exist).
FINGERPRINT_KEEP = timedelta(days=KEEP_DAYS)
#: How long a rate-limit row is kept: the longest limit's window (`mailer.web.public`).
RATE_EVENTS_KEEP = timedelta(days=1)
#: How long a finished webhook delivery is kept (the console shows a receiver's recent ones).
WEBHOOK_KEEP = timedelta(days=30)
#: How long an API answer is replayed for an Idempotency-Key.
API_REPLY_KEEP = timedelta(days=1)


@dataclass(frozen=True)
class Purged:
    """How many rows each rule removed or cleared."""

    clicks: int = 0
    fingerprints: int = 0
    salts: int = 0
    gift_links: int = 0
    rate_events: int = 0
    webhook_deliveries: int = 0
    api_replies: int = 0

    def summary(self) -> str:
        return (f"deleted {self.clicks} old clicks, cleared {self.fingerprints} fingerprints, "
                f"deleted {self.salts} daily salts, unlinked {self.gift_links} old gifts from "
                f"readers, deleted {self.rate_events} rate-limit rows, "
                f"{self.webhook_deliveries} old webhook deliveries and {self.api_replies} "
                "stored API answers")


def purge(session: Session, now: datetime, settings: Settings) -> Purged:
    """Apply every retention rule as of `now`, inside the caller's transaction."""
    kept_from = now - timedelta(days=settings.click_retention_days)
    clicks = session.execute(delete(Click).where(Click.at < kept_from)
                             .execution_options(synchronize_session=False))
    # (`at >= kept_from`: the rows older than that were deleted just now.)
    fingerprints = session.execute(
        update(Click).where(Click.at < now - FINGERPRINT_KEEP, Click.at >= kept_from,
                            Click.fingerprint.is_not(None))
        .values(fingerprint=None).execution_options(synchronize_session=False))
    salts = purge_salts(session, now.astimezone(UTC).date())
    gift_links = session.execute(
        update(Gift).where(Gift.given_on < kept_from.date(), Gift.subscriber_id.is_not(None))
        .values(subscriber_id=None).execution_options(synchronize_session=False))
    rate_events = session.execute(delete(RateEvent).where(RateEvent.at < now - RATE_EVENTS_KEEP)
                                  .execution_options(synchronize_session=False))
    hooks = session.execute(
        delete(HookDelivery).where(HookDelivery.state != HOOK_PENDING,
                                   HookDelivery.created_at < now - WEBHOOK_KEEP)
        .execution_options(synchronize_session=False))
    replies = session.execute(delete(ApiReply).where(ApiReply.created_at < now - API_REPLY_KEEP)
                              .execution_options(synchronize_session=False))
    return Purged(_count(clicks), _count(fingerprints), salts, _count(gift_links),
                  _count(rate_events), _count(hooks), _count(replies))


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
