"""Staff control of one edition: pause, resume, cancel a send; edit, pin, reorder, drop.

Shared by `mailer editions ...` and the staff console so both doors follow one set of rules.

State changes are conditional UPDATEs (``... WHERE state IN (...)``): whichever of two staff,
a CLI and the dispatcher acts first wins, the other learns "nothing changed", and no state is
ever overwritten blindly. Content edits are allowed only while the edition is still a draft
(or failed before sending): they lock the edition row, re-check its state, change it and render
the email again in the same transaction, so a send that starts at the same moment sends either
the old content or the new one, never a mixture, and every later change is refused.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from mailer.app import App
from mailer.edition import EDITABLE, refresh_items, render_into
from mailer.errors import MailerError
from mailer.models import (
    CANCELLED,
    DAILY,
    DRAFT,
    FAILED,
    PAUSED_SEND,
    SENDING,
    WEEKLY,
    Edition,
    EditionArticle,
)

#: Which states each control may leave from.
PAUSABLE = (SENDING,)
RESUMABLE = (PAUSED_SEND,)
CANCELLABLE = (DRAFT, FAILED, SENDING, PAUSED_SEND)

MAX_SUBJECT = 300
MAX_NOTE = 5000

ArrangeAction = Literal["pin", "unpin", "up", "down", "top", "drop", "restore"]
ARRANGE_ACTIONS: tuple[str, ...] = ("pin", "unpin", "up", "down", "top", "drop", "restore")


class NotEditable(MailerError):
    """The edition has started sending (or is finished): its content is frozen."""


class EditRefused(MailerError, ValueError):
    """An edit that cannot be applied (a line break in the subject, an unknown article)."""


# ---- send controls -------------------------------------------------------------------------


def transition(sessions: sessionmaker[Session], edition_id: int, from_states: tuple[str, ...],
               to: str) -> bool:
    """Move the edition to `to` only if it is in one of `from_states`; True when it moved."""
    with sessions.begin() as session:
        result = session.execute(
            update(Edition).where(Edition.id == edition_id, Edition.state.in_(from_states))
            .values(state=to)
        )
        return bool(getattr(result, "rowcount", 0))


def pause(sessions: sessionmaker[Session], edition_id: int) -> bool:
    """Stop claiming new recipients; messages already in flight finish and are recorded."""
    return transition(sessions, edition_id, PAUSABLE, PAUSED_SEND)


def resume(sessions: sessionmaker[Session], edition_id: int) -> bool:
    """Mark a paused edition sending again; a dispatcher (run_send, a worker) does the rest."""
    return transition(sessions, edition_id, RESUMABLE, SENDING)


def cancel(sessions: sessionmaker[Session], edition_id: int) -> bool:
    """Nobody else receives it; what was already sent stays recorded."""
    return transition(sessions, edition_id, CANCELLABLE, CANCELLED)


# ---- content -------------------------------------------------------------------------------


def _locked_draft(session: Session, day: date, kind: str) -> Edition:
    edition = session.scalar(select(Edition).where(Edition.kind == kind,
                                                   Edition.edition_date == day)
                             .with_for_update())
    name = f"{'weekly ' if kind == WEEKLY else ''}edition {day}"
    if edition is None:
        raise EditRefused(f"there is no {name} yet")
    if edition.state not in EDITABLE:
        raise NotEditable(f"{name} is {edition.state}: its content can no longer change")
    return edition


def _line(name: str, value: str, limit: int) -> str:
    if "\r" in value or "\n" in value:
        raise EditRefused(f"the {name} must be one line")
    value = " ".join(value.split())
    if len(value) > limit:
        raise EditRefused(f"the {name} must be at most {limit} characters")
    return value


def edit_text(app: App, day: date, *, subject: str, preheader: str, editor_note: str,
              kind: str = DAILY) -> bool:
    """Set subject, preheader and editor's note and render again; False when nothing changed.

    An empty subject or preheader goes back to the configured default.
    """
    subject = _line("subject", subject, MAX_SUBJECT)
    preheader = _line("preheader", preheader, MAX_SUBJECT)
    note = editor_note.replace("\r\n", "\n").strip()
    if len(note) > MAX_NOTE:
        raise EditRefused(f"the editor's note must be at most {MAX_NOTE} characters")
    if any(ord(ch) < 32 and ch not in "\n\t" for ch in note):
        raise EditRefused("the editor's note must not contain control characters")
    with app.sessions.begin() as session:
        edition = _locked_draft(session, day, kind)
        if (edition.subject, edition.preheader, edition.editor_note) == (subject, preheader,
                                                                         note):
            return False
        edition.subject, edition.preheader, edition.editor_note = subject, preheader, note
        render_into(app, session, edition)
    return True


def set_subject_lines(app: App, day: date, lines: list[str]) -> bool:
    """Plan a subject test on one daily edition: 1 to 3 challenger subject templates (the
    fields of `subject`) against the edition's own subject; none to go back to the settings
    (`docs/subject-test.md`). False when nothing changed."""
    cleaned = [_line("subject line", line, MAX_SUBJECT) for line in lines]
    cleaned = list(dict.fromkeys(line for line in cleaned if line))
    if len(cleaned) > 3:
        raise EditRefused("a subject test takes at most 3 subject lines besides the "
                          "edition's own")
    with app.sessions.begin() as session:
        edition = _locked_draft(session, day, DAILY)
        if list(edition.subject_variants or []) == cleaned:
            return False
        edition.subject_variants = cleaned
    return True


def arrange(app: App, day: date, article_id: int, action: str, kind: str = DAILY) -> None:
    """Pin, unpin, move (up, down, to the top), drop or restore one article, then render.

    Pinned articles stay whatever the feed does; any manual change marks the edition
    `arranged`, so a later refresh appends new articles at the end instead of re-sorting.
    Dropped articles are remembered in `excluded` and never come back by themselves.
    """
    if action not in ARRANGE_ACTIONS:
        raise EditRefused(f"unknown action {action!r}")
    with app.sessions.begin() as session:
        edition = _locked_draft(session, day, kind)
        items = list(edition.items)
        index = next((i for i, item in enumerate(items) if item.article_id == article_id), None)
        excluded = list(edition.excluded or [])
        if action == "restore":
            if article_id not in excluded:
                raise EditRefused("that article was not dropped from this edition")
            excluded.remove(article_id)
            edition.excluded = excluded
            session.flush()
            refresh_items(session, edition)
            session.refresh(edition, ["items"])
            if all(item.article_id != article_id for item in edition.items):
                raise EditRefused("that article cannot come back: it is now outside the "
                                  "edition's window or in another edition")
        else:
            if index is None:
                raise EditRefused("that article is not in this edition")
            item = items[index]
            if action == "pin":
                item.pinned = True
            elif action == "unpin":
                item.pinned = False
            elif action == "drop":
                excluded.append(article_id)
                edition.excluded = excluded
                items.pop(index)
            else:
                target = {"up": index - 1, "down": index + 1, "top": 0}[action]
                target = max(0, min(len(items) - 1, target))
                items.insert(target, items.pop(index))
            _renumber(session, edition, items)
        edition.arranged = True
        session.flush()
        render_into(app, session, edition)


def reorder(app: App, day: date, article_ids: list[int], kind: str = DAILY) -> None:
    """Put the edition's articles in the order given (a drag and drop in the console), then
    render. The list must hold exactly the edition's articles: a page that was open while
    someone else dropped or restored one is refused, not half applied."""
    with app.sessions.begin() as session:
        edition = _locked_draft(session, day, kind)
        items = {item.article_id: item for item in edition.items}
        if sorted(article_ids) != sorted(items):
            raise EditRefused("the edition's articles changed since the page was loaded: "
                              "reload it and arrange them again")
        _renumber(session, edition, [items[article_id] for article_id in article_ids])
        edition.arranged = True
        session.flush()
        render_into(app, session, edition)


def _renumber(session: Session, edition: Edition, order: list[EditionArticle]) -> None:
    """Rewrite the article list in `order` (removing any that are not in it)."""
    keep = [(item.article_id, item.pinned) for item in order]
    edition.items.clear()
    session.flush()
    for position, (article_id, pinned) in enumerate(keep):
        edition.items.append(EditionArticle(article_id=article_id, position=position,
                                            pinned=pinned))
    session.flush()
