"""Articles -> one edition: choose the window's articles, order them, render once.

An edition is unique per (kind, date): the daily round-up, and the weekly digest, whose
window is the seven days up to its send time and whose stories are ranked by readers'
clicks (`mailer.weekly`). Until it starts sending it is a draft that each build
refreshes (new articles appended, staff edits kept); once sending starts its content is frozen.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import and_, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.app import App
from mailer.clicks.links import OFF, PER_READER, link_list, site_home, tracked_view
from mailer.clicks.most_read import most_read_articles
from mailer.clicks.store import save_links
from mailer.clicks.tokens import LinkSigner
from mailer.clock import Window, edition_window, send_datetime
from mailer.config import Settings
from mailer.message import greeting_for
from mailer.models import (
    CANCELLED,
    DAILY,
    DRAFT,
    FAILED,
    PAUSED_SEND,
    SENDING,
    SENT,
    SKIPPED,
    WEEKLY,
    Article,
    Edition,
    EditionArticle,
)
from mailer.placeholders import CLICK, GREETING, PREFERENCES_URL, UNSUBSCRIBE_URL, Placeholders
from mailer.render import (
    EditionView,
    build_view,
    render_archive,
    render_edition,
    top_stories,
    variant_view,
)
from mailer.weekly import rank

# Editions whose window counts as "covered": the next edition starts where they ended.
COVERED = (SENT, SENDING, PAUSED_SEND, SKIPPED)
# States in which an edition's content may still change.
EDITABLE = (DRAFT, FAILED)


def send_instant(settings: Settings, day: date, kind: str = DAILY) -> datetime:
    hour_minute = settings.weekly_hour_minute if kind == WEEKLY else settings.send_hour_minute
    return send_datetime(day, hour_minute, settings.tz)


def get_edition(session: Session, day: date, kind: str = DAILY) -> Edition | None:
    return session.scalar(select(Edition).where(Edition.kind == kind,
                                                Edition.edition_date == day))


def previous_end(session: Session, day: date) -> datetime | None:
    """Where the last daily edition before `day` ended (weekly digests do not count)."""
    return session.scalar(
        select(Edition.window_end)
        .where(Edition.kind == DAILY, Edition.edition_date < day, Edition.state.in_(COVERED))
        .order_by(Edition.edition_date.desc())
        .limit(1)
    )


def window_for(session: Session, settings: Settings, day: date, kind: str = DAILY) -> Window:
    """A daily edition starts where the last one ended; a weekly digest covers the seven
    local days up to its send time (167 or 169 hours in a week the clocks change)."""
    if kind == WEEKLY:
        return Window(send_instant(settings, day - timedelta(days=7), WEEKLY),
                      send_instant(settings, day, WEEKLY))
    return edition_window(send_instant(settings, day), previous_end(session, day),
                          settings.window_hours, settings.window_cap_hours)


def candidate_articles(session: Session, edition: Edition) -> list[Article]:
    """Articles in the window that no other (live) edition of its kind has already carried;
    a weekly digest's ranked by readers' clicks (`mailer.weekly`)."""
    taken_elsewhere = exists().where(
        EditionArticle.article_id == Article.id,
        EditionArticle.edition_id != edition.id,
        EditionArticle.edition_id.in_(
            select(Edition.id).where(Edition.state != CANCELLED, Edition.kind == edition.kind)
        ),
    )
    query = select(Article).where(
        and_(Article.published_at >= edition.window_start,
             Article.published_at < edition.window_end),
        ~taken_elsewhere,
    ).order_by(Article.published_at.desc(), Article.id.desc())
    excluded = set(edition.excluded or [])
    articles = [a for a in session.scalars(query) if a.id not in excluded]
    return rank(session, articles) if edition.kind == WEEKLY else articles


def refresh_items(session: Session, edition: Edition) -> None:
    """Bring the edition's article list up to date with the window (drafts only)."""
    candidates = candidate_articles(session, edition)
    wanted = {a.id for a in candidates}
    current = list(edition.items)
    if edition.arranged:
        keep = [item for item in current if item.article_id in wanted or item.pinned]
        have = {item.article_id for item in keep}
        extra = [a for a in candidates if a.id not in have]
        order = [item.article_id for item in keep] + [a.id for a in extra]
    else:
        pinned = [item.article_id for item in current if item.pinned]
        order = pinned + [a.id for a in candidates if a.id not in set(pinned)]
    pinned_ids = {item.article_id for item in current if item.pinned}
    if [item.article_id for item in current] == order:
        return
    edition.items.clear()
    session.flush()
    for position, article_id in enumerate(order):
        edition.items.append(EditionArticle(article_id=article_id, position=position,
                                            pinned=article_id in pinned_ids))
    session.flush()


def render_into(app: App, session: Session, edition: Edition) -> None:
    """Render HTML, text and the archive page once for the edition's current content.

    With click measurement on, the email's links go through `/r/<token>` (the edition's link
    list is stored with it); the archive page keeps the site's own links. A weekly digest's
    link list covers its whole pool, so every reader's pick of it is tracked."""
    session.refresh(edition, ["items"])
    settings = app.settings
    articles = [item.article for item in edition.items]
    most_read = (most_read_articles(session, settings, edition.edition_date,
                                    {a.id for a in articles})
                 if settings.most_read_block and edition.kind == DAILY else [])
    edition.most_read = [a.id for a in most_read]
    pool = _view(edition, articles, most_read, settings)
    view = shown_view(edition, pool, settings)
    if not edition.subject:
        edition.subject = view.subject
    # (The preheader is not stored: unless staff set one, it follows the lead and the note.)
    placeholders = Placeholders.new()
    mode = settings.click_tracking
    links = (link_list(pool, home=site_home(settings), open_pixel=settings.open_tracking)
             if mode != OFF else [])
    save_links(session, edition.id, links)
    email_view = view if mode == OFF else tracked_view(
        view, links, edition_id=edition.id, base_url=settings.base_url,
        signer=LinkSigner(app.secret_key),
        reader_slot=placeholders.click if mode == PER_READER else "")
    rendered = render_edition(email_view, settings, placeholders)
    edition.html = rendered.html
    edition.text = rendered.text
    edition.placeholder_key = placeholders.key
    edition.click_tracking = mode
    edition.archive_html = render_archive(view, settings)


def edition_view(session: Session, settings: Settings, edition: Edition) -> EditionView:
    """The view `render_into` rendered the edition from, again (its variants start here):
    for a weekly digest, its whole pool (`shown_view` picks from it)."""
    session.refresh(edition, ["items"])
    ids = list(edition.most_read or [])
    found = ({a.id: a for a in session.scalars(select(Article).where(Article.id.in_(ids)))}
             if ids else {})
    return _view(edition, [item.article for item in edition.items],
                 [found[i] for i in ids if i in found], settings)


def shown_view(edition: Edition, view: EditionView, settings: Settings,
               sections: list[str] | None = None) -> EditionView:
    """What a reader who chose `sections` (None: all) gets of the edition's `view`: for a
    daily edition the view without the other sections; for a weekly digest its top
    `weekly_stories` within them."""
    if edition.kind == WEEKLY:
        return top_stories(view, [item.article_id for item in edition.items],
                           settings.weekly_stories, sections or ())
    return view if sections is None else variant_view(view, sections)


def _view(edition: Edition, articles: list[Article], most_read: list[Article],
          settings: Settings) -> EditionView:
    return build_view(edition.edition_date, articles, settings, subject=edition.subject,
                      preheader=edition.preheader, editor_note=edition.editor_note,
                      most_read=most_read, weekly=edition.kind == WEEKLY)


def fill_preview(settings: Settings, edition: Edition, body: str, key: str = "") -> str:
    """A rendered part as a reader with no name would see it, with links that lead nowhere
    real (a preview must never carry anyone's unsubscribe token). `key` names the slots of a
    rendering other than the edition's own (a variant's preview)."""
    key = key or edition.placeholder_key
    if not key:
        return body  # never rendered: there are no slots
    base = settings.base_url.rstrip("/")
    return Placeholders(key).fill(body, {
        GREETING: greeting_for(""),  # what a reader with no name gets
        UNSUBSCRIBE_URL: f"{base}/unsubscribe/PREVIEW",
        PREFERENCES_URL: f"{base}/preferences/PREVIEW",
        CLICK: "",  # no reader: clicks before the send count as previews (mailer.clicks)
    })


def build_edition(app: App, day: date, *, close_window_at: datetime | None = None,
                  kind: str = DAILY) -> Edition:
    """Create or refresh the edition of `kind` for `day` and render it.

    `close_window_at` (the dispatch moment) ends the window early when a send starts before
    its scheduled time, so articles published after the send are left for the next edition.
    """
    # The link signer's key is read before the transaction below takes SQLite's write lock:
    # a database with no MAILER_SECRET_KEY makes its key in a transaction of its own.
    app.secret_key  # noqa: B018
    with app.sessions.begin() as session:
        edition = get_edition(session, day, kind)
        if edition is None:
            window = window_for(session, app.settings, day, kind)
            edition = Edition(kind=kind, edition_date=day, state=DRAFT,
                              window_start=window.start, window_end=window.end,
                              created_at=app.clock.now())
            session.add(edition)
            try:
                with session.begin_nested():
                    session.flush()
            except IntegrityError:
                edition = get_edition(session, day, kind)
                assert edition is not None
        if edition.state in EDITABLE:
            window = window_for(session, app.settings, day, kind)
            edition.window_start = window.start
            edition.window_end = window.end
            if close_window_at is not None and close_window_at < edition.window_end:
                edition.window_end = max(close_window_at, edition.window_start)
            refresh_items(session, edition)
            render_into(app, session, edition)
        session.flush()
        session.expunge(edition)
    return edition


def edition_articles(session: Session, edition_id: int) -> list[Article]:
    return list(session.scalars(
        select(Article).join(EditionArticle, EditionArticle.article_id == Article.id)
        .where(EditionArticle.edition_id == edition_id).order_by(EditionArticle.position)
    ))


def list_editions(session: Session, limit: int = 30, kind: str | None = None) -> list[Edition]:
    """The latest editions, newest first (of one kind when `kind` is given)."""
    pick = select(Edition).order_by(Edition.edition_date.desc(), Edition.kind)
    if kind is not None:
        pick = pick.where(Edition.kind == kind)
    return list(session.scalars(pick.limit(limit)))
