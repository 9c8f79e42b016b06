"""Collect: fetch the WordPress feed, page back through the window, store each article once.

The stage in four steps, each in its own module:

- `fetch`: every page, HTTP or a local file, under one `feed_timeout` deadline for the whole
  fetch (a server that drips a byte a second never trips a read timeout).
- `feed`: each page's bytes to feedparser entries (RSS2, Atom 1.0 and RSS 1.0 alike), or a
  one-line reason it is not a feed.
- `entries` (with `clean`, the one nh3 allow-list): the entries worth storing, every field
  sanitised and cut to its column.
- `store`: the articles and the feed's validators, in one transaction.

Every page is fetched and parsed before anything is written, so an unreachable or malformed
feed changes nothing ("nothing lost or half-done"); the failure is recorded in `FeedState` in a
transaction of its own so that `mailer status` can show it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mailer.app import App
from mailer.collect.entries import items_from_entries
from mailer.collect.feed import FeedFailure
from mailer.collect.fetch import fetch_pages
from mailer.collect.store import record_failure, record_success, store, validators

log = logging.getLogger(__name__)


@dataclass
class CollectResult:
    pages: int  # feed pages fetched (0 when the first page answered 304)
    new: int  # articles inserted
    updated: int  # existing guids whose stored fields changed (edited posts)
    skipped: int  # items skipped (Daily email category, bad link, no date, before `since`)
    not_modified: bool  # first page answered 304
    status: int  # HTTP status of the first page (0 for a local file)


def collect(app: App, *, since: datetime | None = None) -> CollectResult:
    """Fetch app.settings.feed_url and store its articles.

    `since` (aware) is how far back to page: ?paged=2, 3 ... are followed while the oldest item
    on the last page fetched is still newer than `since`, up to settings.feed_max_pages; a 404
    on a later page means the end. Items older than `since` are skipped. Defaults to
    now - window_cap_hours, the furthest back any edition window can reach.

    Raises FeedError (one line) when the feed cannot be fetched or parsed; then no article is
    written and the error is recorded in FeedState.
    """
    settings = app.settings
    now = app.clock.now()
    if since is None:
        since = now - timedelta(hours=settings.window_cap_hours)
    elif since.tzinfo is None:
        raise ValueError("collect(since=...) needs an aware datetime")
    since = since.astimezone(UTC)
    url = settings.feed_url.strip()

    etag, last_modified = validators(app, url)
    try:
        run = fetch_pages(url, settings, since, etag=etag, last_modified=last_modified)
    except FeedFailure as exc:
        record_failure(app, url, now, str(exc), exc.status)
        raise

    if run.not_modified:
        record_success(app, url, now, run)
        log.info("feed %s not modified (304)", url)
        return CollectResult(pages=0, new=0, updated=0, skipped=0, not_modified=True,
                             status=run.status)

    items, skipped = items_from_entries(run.entries, settings, since)
    new, updated = store(app, url, now, run, items)
    log.info("feed %s: %d page(s), %d new, %d updated, %d skipped",
             url, run.pages, new, updated, skipped)
    return CollectResult(pages=run.pages, new=new, updated=updated, skipped=skipped,
                         not_modified=False, status=run.status)
