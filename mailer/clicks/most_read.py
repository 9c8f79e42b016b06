"""The "Most read" block: the previous days' most-clicked stories, by readers, not scanners.

Only human clicks count, so a security gateway that opens every link cannot put a story in
it; and only when the top three have at least `most_read_min_clicks` each, so a quiet day
does not promote a story two people opened.
"""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.config import Settings
from mailer.models import ARTICLE, HUMAN, Article, Click, Edition, EditionLink

SIZE = 3


def most_read_articles(session: Session, settings: Settings, day: date,
                       exclude: set[int]) -> list[Article]:
    """Up to three stories from editions of the `most_read_days` before `day`, by human
    clicks, leaving out the article ids in `exclude` (already in the new edition); none at
    all when fewer than three reach `most_read_min_clicks`."""
    since = day - timedelta(days=settings.most_read_days)
    clicks = func.count(Click.id)
    rows = session.execute(
        select(EditionLink.article_id, clicks)
        .join(Edition, Edition.id == EditionLink.edition_id)
        .join(Click, (Click.edition_id == EditionLink.edition_id)
              & (Click.position == EditionLink.position))
        .where(Edition.edition_date >= since, Edition.edition_date < day,
               EditionLink.kind == ARTICLE, EditionLink.article_id.is_not(None),
               Click.verdict == HUMAN)
        .group_by(EditionLink.article_id)
        .order_by(clicks.desc(), EditionLink.article_id.desc())
    ).all()
    top = [(article_id, count) for article_id, count in rows
           if article_id is not None and article_id not in exclude][:SIZE]
    if len(top) < SIZE or any(count < settings.most_read_min_clicks for _, count in top):
        return []
    articles = {a.id: a for a in session.scalars(
        select(Article).where(Article.id.in_([article_id for article_id, _ in top])))}
    return [articles[article_id] for article_id, _ in top if article_id in articles]
