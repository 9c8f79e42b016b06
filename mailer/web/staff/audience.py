"""Who gets what: the active readers by frequency and sections, and an edition as the readers
of one choice of sections get it.

Readers choose daily or weekly and any of the configured sections (`mailer.choices`); an
edition leaves out the sections a reader did not choose, and a reader left with nothing is
skipped that day. Staff need to see both sides before the send: how many readers each choice
holds, and what a given choice receives (rendered as at the send, by
`variants.preview_variant`, with a fictional reader's slots and clicks that never count).
"""

from __future__ import annotations

from typing import Any

from flask import abort, render_template, request

from mailer.choices import InvalidChoice, breakdown, parse_sections
from mailer.edition import fill_preview, get_edition
from mailer.models import DAILY, WEEKLY
from mailer.variants import preview_variant
from mailer.web.context import mailer_app
from mailer.web.staff.auth import bp, login_required, parse_day, today
from mailer.web.staff.editions import email_preview


@bp.get("/audience")
@login_required
def audience() -> Any:
    """The audience by choice, and a form to preview any combination of sections."""
    app = mailer_app()
    settings = app.settings
    with app.sessions() as db:
        figures = breakdown(db, settings.sections)
    return render_template("staff/audience.html", title="Audience", figures=figures,
                           sections=settings.sections, weekly=settings.weekly_digest,
                           day=today(app))


@bp.get("/editions/<day>/preview-for")
@login_required
def preview_for(day: str) -> Any:
    """The edition of `day` (?kind=weekly for the digest) as readers who chose the
    ?section=... given get it; a page saying so when they would get nothing."""
    app = mailer_app()
    the_day = parse_day(day)
    kind = WEEKLY if request.args.get("kind") == WEEKLY else DAILY
    try:
        sections = parse_sections(request.args.getlist("section"), app.settings.sections)
    except InvalidChoice as exc:
        abort(400, str(exc))
    with app.sessions() as db:
        edition = get_edition(db, the_day, kind)
        if edition is not None:
            db.expunge(edition)
    if edition is None or not edition.html:
        abort(404)
    if sections:
        rendered, stories = preview_variant(app, edition, sections)
        if not stories:
            return render_template("staff/skipped_preview.html", title="Nothing to send",
                                   day=the_day, sections=sections, kind=kind)
        key = rendered.placeholders.key if rendered.placeholders else ""
        body = fill_preview(app.settings, edition, rendered.html, key)
    else:  # every section: the edition as it is
        body = fill_preview(app.settings, edition, edition.html)
    return email_preview(body)
