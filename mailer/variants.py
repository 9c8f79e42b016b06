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
from mailer.ledger import ASK_MARK, GROUP_MARK, split_variant, test_group_of
from mailer.models import (
    DSKIPPED,
    HELD,
    QUEUED,
    Delivery,
    Edition,
    EditionVariant,
    SubscriberEvent,
    UTCDateTime,
)
from mailer.placeholders import Placeholders
from mailer.render import Rendered, render_edition, with_ask

NOTHING_TODAY = "nothing in the reader's sections today"
SECTIONS_GONE = "sections-gone"


@dataclass(frozen=True)
class Variants:
    rendered: int = 0   # distinct choices rendered
    skipped: int = 0    # readers with nothing in their sections
    widened: int = 0    # readers whose sections are all gone: the whole edition


def render_variants(app: App, session: Session, edition: Edition) -> Variants:
    """Render the snapshot's distinct renderings, each a choice of sections, a donation ask
    (`ledger.split_variant`) and, in a subject test, a group with its subject and its
    click tokens (`ledger.test_group_of`), in the caller's transaction."""
    chosen = set(session.scalars(
        select(Delivery.variant).where(Delivery.edition_id == edition.id,
                                       Delivery.variant != "").distinct()))
    if not chosen:
        return Variants()
    settings = app.settings
    renderer = _Renderer(app, session, edition)
    configured = {name.casefold(): name for name in settings.sections}
    skipped = widened = 0
    for variant in sorted(chosen):
        part, ask = split_variant(variant)
        group = test_group_of(variant)
        sections = [configured[n.casefold()] for n in split(part) if n.casefold() in configured]
        rows = (Delivery.edition_id == edition.id, Delivery.variant == variant)
        if part and not sections:  # all their sections are gone: the whole edition
            whole = (f"{ASK_MARK}{ask}" if ask else "") + (f"{GROUP_MARK}{group}" if group
                                                            else "")
            widened += _widen(session, edition, variant, whole)
            if whole and whole not in chosen and whole not in renderer.done:
                renderer.render(whole, None, ask, group)
            continue
        if variant in renderer.done:
            continue
        if not renderer.render(variant, sections or None, ask, group):
            skipped += _count(session.execute(
                update(Delivery).where(*rows, Delivery.state.in_((QUEUED, HELD)))
                .values(state=DSKIPPED, permanent=True, error=NOTHING_TODAY)
                .execution_options(synchronize_session=False)))
    session.flush()
    return Variants(renderer.rendered, skipped, widened)


class _Renderer:
    """Renders and stores one variant of an edition at a time, sharing the edition's view
    and link list."""

    def __init__(self, app: App, session: Session, edition: Edition) -> None:
        self.settings = app.settings
        self.session = session
        self.edition = edition
        self.view = edition_view(session, self.settings, edition)
        self.asks = {ask.name: ask for ask in self.settings.asks}
        mode = edition.click_tracking
        self.links = list(load_links(session, edition.id)) if mode != OFF else []
        self.signer = LinkSigner(app.secret_key) if mode != OFF else None
        self.subjects: list[str] = list((edition.subject_test or {}).get("subjects", []))
        self.rendered = 0
        self.done: set[str] = set()

    def render(self, variant: str, sections: list[str] | None, ask: str,
               group: int = 0) -> bool:
        """Store the rendering for `variant`; False when it has no story (nothing to send).
        A subject test group's copy has its subject and tokens that name the group."""
        self.done.add(variant)
        settings, edition = self.settings, self.edition
        shown = shown_view(edition, self.view, settings, sections)
        if ask in self.asks:  # (an ask gone from the settings since: the first one)
            shown = with_ask(shown, settings, self.asks[ask])
        if not shown.articles:
            return False
        placeholders = Placeholders.new()
        if self.signer is not None:
            mode = edition.click_tracking
            shown = tracked_view(shown, self.links, edition_id=edition.id,
                                 base_url=settings.base_url, signer=self.signer,
                                 reader_slot=placeholders.click if mode == PER_READER else "",
                                 test_group=group)
        out = render_edition(shown, settings, placeholders)
        subject = self.subjects[group - 1] if 0 < group <= len(self.subjects) else ""
        self.session.add(EditionVariant(edition_id=edition.id, variant=variant, html=out.html,
                                        text=out.text, placeholder_key=placeholders.key,
                                        articles=len(shown.articles), subject=subject))
        self.rendered += 1
        return True


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


def _widen(session: Session, edition: Edition, variant: str, whole: str) -> int:
    """Readers whose chosen sections are all gone from the configuration: the whole edition,
    and a line in their history (set-based: one statement each, whatever their number)."""
    rows = (Delivery.edition_id == edition.id, Delivery.variant == variant)
    session.execute(insert(SubscriberEvent).from_select(
        ["subscriber_id", "kind", "source", "detail", "created_at"],
        select(Delivery.subscriber_id, literal(SECTIONS_GONE), literal("send"),
               literal(f"none of the sections they chose ({_named(variant)}) "
                       f"is offered any more: sent the whole edition {edition.edition_date}"),
               literal(edition.started_at or edition.created_at, UTCDateTime()))
        .where(*rows)))
    return _count(session.execute(
        update(Delivery).where(*rows).values(variant=whole)
        .execution_options(synchronize_session=False)))


def _named(variant: str) -> str:
    return split_variant(variant)[0].replace(";", ", ")


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
