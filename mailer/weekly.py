"""The weekly digest's stories: the week's articles, best first by readers' clicks.

The digest is for readers who chose one email a week, so it carries what the daily readers
read most: human clicks (never scanners', `mailer.clicks.classify`) on the week's daily
editions. A week with no click counts (measurement off, or nothing clicked yet) is ranked by
recency. Each reader then gets the top `weekly_stories` within their sections
(`render.top_stories`); the edition keeps a larger pool, so a reader of one section still
gets a full digest.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.models import ARTICLE, DAILY, HUMAN, Article, Click, Edition, EditionLink

#: Stories kept in a weekly edition, ranked: enough for any one reader's sections.
POOL = 100


def rank(session: Session, articles: Sequence[Article]) -> list[Article]:
    """`articles` by human clicks on daily editions, then by recency; at most `POOL`."""
    ids = [a.id for a in articles]
    clicks: dict[int, int] = {}
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(EditionLink.article_id, func.count(Click.id))
            .join(Edition, Edition.id == EditionLink.edition_id)
            .join(Click, (Click.edition_id == EditionLink.edition_id)
                  & (Click.position == EditionLink.position))
            .where(Edition.kind == DAILY, EditionLink.kind == ARTICLE,
                   EditionLink.article_id.in_(ids[start:start + 500]), Click.verdict == HUMAN)
            .group_by(EditionLink.article_id))
        clicks.update({article_id: count for article_id, count in rows if article_id})
    by_recency = sorted(articles, key=lambda a: (a.published_at, a.id), reverse=True)
    return sorted(by_recency, key=lambda a: -clicks.get(a.id, 0))[:POOL]  # (a stable sort)
