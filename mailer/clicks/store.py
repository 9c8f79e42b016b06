"""Edition link lists in the database, and in process memory for the redirect.

The redirect must work while the database is down or being migrated: a reader's click always
reaches its story. So each web process keeps every link list it has read (they never change
once an edition is sent, and a year of them is a few megabytes), loads the recent ones when it
starts, and only asks the database about an edition it has not seen, or again after
`RECHECK_SECONDS` so that a deleted edition stops redirecting. When the database cannot
answer, what is in memory is used as it is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import date, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mailer.clicks.links import Link
from mailer.models import Edition, EditionLink

log = logging.getLogger(__name__)

RECHECK_SECONDS = 300.0
#: How long a process remembers that an edition has no links, before asking again.
MISSING_SECONDS = 30.0


def save_links(session: Session, edition_id: int, links: Sequence[Link]) -> None:
    """Replace the edition's link list (a draft is re-rendered as its content changes)."""
    session.execute(delete(EditionLink).where(EditionLink.edition_id == edition_id))
    session.add_all(
        EditionLink(edition_id=edition_id, position=link.position, kind=link.kind, url=link.url,
                    target=link.target, title=link.title, article_id=link.article_id,
                    utm_content=link.utm_content)
        for link in links
    )
    session.flush()


def load_links(session: Session, edition_id: int) -> list[Link]:
    rows = session.scalars(select(EditionLink).where(EditionLink.edition_id == edition_id)
                           .order_by(EditionLink.position))
    return [_link(row) for row in rows]


def _link(row: EditionLink) -> Link:
    return Link(row.position, row.kind, row.url, row.target, row.title, row.article_id,
                row.utm_content)


class LinkCache:
    """Link lists by edition id, shared by a web process's threads."""

    def __init__(self, sessions: sessionmaker[Session],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._sessions = sessions
        self._monotonic = monotonic
        self._lists: dict[int, tuple[float, dict[int, Link]]] = {}
        self._lock = threading.Lock()
        self._refreshing: set[int] = set()

    def preload(self, since: date) -> int:
        """Read the link lists of editions dated `since` or later; how many were read.
        A database that cannot answer is logged, not raised: lists load on demand later."""
        try:
            with self._sessions() as session:
                rows = session.execute(
                    select(EditionLink).join(Edition, Edition.id == EditionLink.edition_id)
                    .where(Edition.edition_date >= since)
                ).scalars().all()
                lists: dict[int, dict[int, Link]] = {}
                for row in rows:
                    lists.setdefault(row.edition_id, {})[row.position] = _link(row)
        except SQLAlchemyError as exc:
            log.warning("link lists not preloaded (%s); they load on the first click",
                        type(exc).__name__)
            return 0
        now = self._monotonic()
        with self._lock:
            for edition_id, links in lists.items():
                self._lists[edition_id] = (now, links)
        return len(lists)

    def get(self, edition_id: int, position: int) -> Link | None:
        """The link, or None when the edition (or the position) is unknown."""
        links = self._links(edition_id)
        return links.get(position) if links else None

    def _links(self, edition_id: int) -> dict[int, Link] | None:
        """Known lists are answered from memory at once; a stale one is re-read on a thread
        (so a slow or locked database never holds up a click) and an unknown one now."""
        now = self._monotonic()
        with self._lock:
            cached = self._lists.get(edition_id)
            stale = cached is not None and now - cached[0] >= (
                RECHECK_SECONDS if cached[1] else MISSING_SECONDS)
            if stale and cached and cached[1] and edition_id not in self._refreshing:
                self._refreshing.add(edition_id)
                threading.Thread(target=self._refresh, args=(edition_id,), daemon=True,
                                 name=f"links-{edition_id}").start()
        if cached is not None and (cached[1] or not stale):
            return cached[1]
        return self._refresh(edition_id, missing=cached is None)

    def _refresh(self, edition_id: int, missing: bool = False) -> dict[int, Link] | None:
        try:
            with self._sessions() as session:
                links = {link.position: link for link in load_links(session, edition_id)}
        except SQLAlchemyError as exc:
            if missing:
                log.warning("edition %s's links are not in memory and the database cannot "
                            "answer (%s)", edition_id, type(exc).__name__)
            return None
        finally:
            with self._lock:
                self._refreshing.discard(edition_id)
        with self._lock:
            self._lists[edition_id] = (self._monotonic(), links)
        return links


def recent_since(today: date, days: int) -> date:
    return today - timedelta(days=days)
