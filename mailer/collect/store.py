"""Collect's writes: the articles and the feed's state, each run's in one transaction.

All article writes happen in one transaction, so an unreachable or malformed feed changes
nothing. The conditional-GET validators (ETag, Last-Modified) are saved in the same transaction
as the articles they describe: saving them after a failed run would make the next run get a 304
and never see those articles. A failure is recorded in `FeedState` in a transaction of its own
so that `mailer status` can show it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from mailer.app import App
from mailer.collect.entries import Item, column_length
from mailer.collect.fetch import FetchRun
from mailer.models import Article, FeedState

log = logging.getLogger(__name__)

ETAG_MAX = column_length(FeedState, "etag")
LAST_MODIFIED_MAX = column_length(FeedState, "last_modified")


def validators(app: App, url: str) -> tuple[str, str]:
    """The ETag and Last-Modified the last successful run saved for `url` ("" when none)."""
    with app.sessions() as session:
        state = session.get(FeedState, url)
        if state is None:
            return "", ""
        return state.etag, state.last_modified


def record_success(app: App, url: str, now: datetime, run: FetchRun) -> None:
    """Note a run that stored nothing (a 304), with its validators."""

    def work(session: Session) -> None:
        _apply_success(_state(session, url), now, run)

    _retrying(app, work)


def record_failure(app: App, url: str, now: datetime, message: str, status: int) -> None:
    """Note the failure for `mailer status`, leaving validators and articles untouched."""

    def work(session: Session) -> None:
        state = _state(session, url)
        state.last_fetch_at = now
        state.last_status = status
        state.last_error = message

    try:
        _retrying(app, work)
    except SQLAlchemyError:
        log.exception("could not record the feed error for %s", url)


def store(app: App, url: str, now: datetime, run: FetchRun, items: list[Item]) -> tuple[int, int]:
    """Insert new articles, update edited ones and save the validators, all in one
    transaction; (new, updated)."""
    counts = (0, 0)

    def work(session: Session) -> None:
        nonlocal counts
        counts = _upsert(session, items, now)
        _apply_success(_state(session, url), now, run)

    _retrying(app, work)
    return counts


def _state(session: Session, url: str) -> FeedState:
    state = session.get(FeedState, url)
    if state is None:
        state = FeedState(url=url, etag="", last_modified="", last_status=0, last_error="")
        session.add(state)
    return state


def _apply_success(state: FeedState, now: datetime, run: FetchRun) -> None:
    state.last_fetch_at = now
    state.last_status = run.status
    state.last_error = ""
    state.last_ok_at = now
    if not run.not_modified and not run.local:
        # Exactly as received, or not at all: a truncated validator would never match.
        state.etag = run.etag if len(run.etag) <= ETAG_MAX else ""
        state.last_modified = (
            run.last_modified if len(run.last_modified) <= LAST_MODIFIED_MAX else ""
        )


def _retrying(app: App, work: Callable[[Session], None]) -> None:
    """Run `work` in one transaction; once more if a concurrent collect inserted the same key."""
    for attempt in (1, 2, 3):
        try:
            with app.sessions.begin() as session:
                work(session)
            return
        except IntegrityError:
            if attempt == 3:
                raise
            time.sleep(0.05 * attempt)


def _upsert(session: Session, items: list[Item], now: datetime) -> tuple[int, int]:
    existing: dict[str, Article] = {}
    guids = [item.guid for item in items]
    for start in range(0, len(guids), 500):
        chunk = guids[start:start + 500]
        for stored in session.scalars(select(Article).where(Article.guid.in_(chunk))):
            existing[stored.guid] = stored
    new = updated = 0
    for item in items:
        article = existing.get(item.guid)
        if article is None:
            session.add(Article(guid=item.guid, published_at=item.published_at, fetched_at=now,
                                updated_at=now, **item.editable()))
            new += 1
            continue
        changed = False
        for name, value in item.editable().items():
            if getattr(article, name) != value:
                setattr(article, name, value)
                changed = True
        if changed:
            article.updated_at = now
            updated += 1
    session.flush()
    return new, updated
