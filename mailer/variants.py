"""An edition for each choice of sections: rendered once per distinct choice, at the snapshot.

Readers who chose some sections get the edition without the others (`edition.shown_view`:
a daily edition's other sections left out, a weekly digest's top stories within theirs).
The snapshot copies each reader's choice into the ledger (`Delivery.variant`); this module
then renders the edition once per distinct choice in that audience, never per reader, and
stores each rendering with its own per-reader slots (`EditionVariant`), which the
`Personaliser` fills like the whole edition. Every variant keeps the edition's links, so one
link list (and one set of click tokens) serves them all.

A reader whose sections have no story that day is recorded as skipped (neither sent nor
failed). A reader none of whose sections is configured any more gets the whole edition, and
a warning in their history says why.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, literal, select, update
from sqlalchemy.orm import Session

from mailer.app import App
from mailer.choices import split
from mailer.clicks.links import OFF, PER_READER, tracked_view
from mailer.clicks.store import load_links
from mailer.clicks.tokens import LinkSigner
from mailer.edition import edition_view, shown_view
from mailer.models import (
    DSKIPPED,
    QUEUED,
    Delivery,
    Edition,
    EditionVariant,
    SubscriberEvent,
    UTCDateTime,
)
from mailer.placeholders import Placeholders
from mailer.render import Rendered, render_edition

NOTHING_TODAY = "nothing in the reader's sections today"
SECTIONS_GONE = "sections-gone"


@dataclass(frozen=True)
class Variants:
    rendered: int = 0   # distinct choices rendered
    skipped: int = 0    # readers with nothing in their sections
    widened: int = 0    # readers whose sections are all gone: the whole edition


def render_variants(app: App, session: Session, edition: Edition) -> Variants:
    """Render the snapshot's distinct choices of sections (in the caller's transaction)."""
    chosen = list(session.scalars(
        select(Delivery.variant).where(Delivery.edition_id == edition.id,
                                       Delivery.variant != "").distinct()))
    if not chosen:
        return Variants()
    settings = app.settings
    view = edition_view(session, settings, edition)
    configured = {name.casefold(): name for name in settings.sections}
    mode = edition.click_tracking
    links = list(load_links(session, edition.id)) if mode != OFF else []
    signer = LinkSigner(app.secret_key) if mode != OFF else None
    rendered = skipped = widened = 0
    for variant in sorted(chosen):
        sections = [configured[n.casefold()] for n in split(variant) if n.casefold() in configured]
        rows = (Delivery.edition_id == edition.id, Delivery.variant == variant)
        if not sections:
            widened += _widen(session, edition, variant)
            continue
        shown = shown_view(edition, view, settings, sections)
        if not shown.articles:
            skipped += _count(session.execute(
                update(Delivery).where(*rows, Delivery.state == QUEUED)
                .values(state=DSKIPPED, permanent=True, error=NOTHING_TODAY)
                .execution_options(synchronize_session=False)))
            continue
        placeholders = Placeholders.new()
        if signer is not None:
            shown = tracked_view(shown, links, edition_id=edition.id,
                                 base_url=settings.base_url, signer=signer,
                                 reader_slot=placeholders.click if mode == PER_READER else "")
        out = render_edition(shown, settings, placeholders)
        session.add(EditionVariant(edition_id=edition.id, variant=variant, html=out.html,
                                   text=out.text, placeholder_key=placeholders.key,
                                   articles=len(shown.articles)))
        rendered += 1
    session.flush()
    return Variants(rendered, skipped, widened)


def preview_variant(app: App, edition: Edition, sections: list[str]) -> tuple[Rendered, int]:
    """The edition as a reader who chose `sections` (parsed, `mailer.choices`) would get it,
    and its number of stories, for previews; nothing is stored. With no stories (such
    readers get nothing that day) the rendering is returned all the same, for a look."""
    settings = app.settings
    with app.sessions() as session:
        edition = session.merge(edition, load=True)
        view = shown_view(edition, edition_view(session, settings, edition), settings,
                          sections)
        links = list(load_links(session, edition.id)) if edition.click_tracking != OFF else []
    placeholders = Placeholders.new()
    stories = len(view.articles)
    if links:
        view = tracked_view(view, links, edition_id=edition.id, base_url=settings.base_url,
                            signer=LinkSigner(app.secret_key),
                            reader_slot=placeholders.click
                            if edition.click_tracking == PER_READER else "")
    return render_edition(view, settings, placeholders), stories


def _widen(session: Session, edition: Edition, variant: str) -> int:
    """Readers whose chosen sections are all gone from the configuration: the whole edition,
    and a line in their history (set-based: one statement each, whatever their number)."""
    rows = (Delivery.edition_id == edition.id, Delivery.variant == variant)
    session.execute(insert(SubscriberEvent).from_select(
        ["subscriber_id", "kind", "source", "detail", "created_at"],
        select(Delivery.subscriber_id, literal(SECTIONS_GONE), literal("send"),
               literal(f"none of the sections they chose ({variant.replace(';', ', ')}) "
                       f"is offered any more: sent the whole edition {edition.edition_date}"),
               literal(edition.started_at or edition.created_at, UTCDateTime()))
        .where(*rows)))
    return _count(session.execute(
        update(Delivery).where(*rows).values(variant="")
        .execution_options(synchronize_session=False)))


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
