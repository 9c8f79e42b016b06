"""Shared set-up for send tests: subscribers, a feed, an edition mid-send."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from email import message_from_bytes, policy
from email.utils import parseaddr
from pathlib import Path

from sqlalchemy import insert, select

from mailer import ledger
from mailer.app import App
from mailer.models import ACTIVE, SENDING, Article, Edition, Subscriber
from mailer.pipeline import run_send
from mailer.sample import write_sample_feed


def seed_subscribers(app: App, n: int, *, prefix: str = "reader") -> list[str]:
    """Insert n active subscribers in one statement (fast for thousands)."""
    now = app.clock.now()
    rows = [{"email": f"{prefix}{i}@example.org", "name": f"Reader {i}",
             "first_name": f"Reader{i}", "status": ACTIVE, "source": "test",
             "created_at": now, "updated_at": now, "confirmed_at": now, "soft_bounces": 0}
            for i in range(n)]
    with app.sessions.begin() as session:
        session.execute(insert(Subscriber), rows)
    return [r["email"] for r in rows]


def with_feed(app: App, tmp_path: Path) -> App:
    feed = write_sample_feed(tmp_path / "feed.xml", app.clock.now())
    app.settings = app.settings.replace(feed_url=str(feed))
    return app


def eml_recipients(outbox: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in outbox.glob("*.eml"):
        msg = message_from_bytes(path.read_bytes(), policy=policy.default)
        counts[parseaddr(str(msg["To"]))[1]] += 1
    return counts


def add_article(app: App, guid: str, *, hours_ago: float = 1.0, title: str = "A story") -> None:
    """Store one article published `hours_ago` before the clock's now."""
    with app.sessions.begin() as session:
        session.add(Article(guid=guid, title=title, link=f"https://labourlist.org/{guid}/",
                            author="Staff", summary_text="Summary.", section="News",
                            categories=["News"],
                            published_at=app.clock.now() - timedelta(hours=hours_ago)))


def start_sending(app: App, day: date, *, claimed_by: str = "",
                  claims: int = 0) -> tuple[int, list[ledger.Claim]]:
    """Build `day`'s edition and put it in `sending` with its audience snapshotted, as a send
    does before its workers start; optionally `claimed_by` takes `claims` rows first (a
    worker that then dies). Returns the edition id and those claims."""
    assert run_send(app, day, dry_run=True).status == "dry-run"
    with app.sessions.begin() as s:
        ed = s.scalar(select(Edition))
        assert ed is not None
        ed.state = SENDING
        ledger.snapshot(s, ed)
        taken = (ledger.claim(s, ed.id, claimed_by, claims, app.clock.now(),
                              app.settings.lease_seconds) if claims else [])
        return ed.id, taken
