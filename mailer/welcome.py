"""The welcome email: once per reader, when they confirm, if `welcome_email` is on.

It tells the reader what they will get and when, links the latest sent edition in the archive,
and says how to change their choices (their own preferences link); like an edition it carries
a one-click unsubscribe link and the List-Unsubscribe headers (RFC 8058), because it goes to a
list member as part of the list.

Exactly once per reader, whoever confirms at the same moment: a sender first *claims* the
welcome with one conditional UPDATE (``welcomed_at = now WHERE id = ? AND welcomed_at IS NULL
AND status = 'active'``) and only the transaction that changed the row sends. Two confirms at
once (two tabs, a double click, two servers) both get here; on PostgreSQL the second UPDATE
waits for the first's row lock and then matches nothing, on SQLite the write transactions
take turns (BEGIN IMMEDIATE, `mailer.db`). Readers who confirmed before there was a welcome
email are never sent one: they are not confirming any more.

The claim is made before the send, so a crash or a refused message leaves the welcome
claimed and unsent rather than ever sent twice: the outcome, sent or not, is recorded in
`send_log` (kind "welcome") and the reader's history, and logged. Nothing here raises to the
caller (the confirmation page must not fail because a mail server did).

Never to a suppressed address or a reader who is not active. The templates are
`welcome.mjml.j2` and `welcome.txt.j2`, read through `mailer.templating`, so a newsroom's
`templates/` replaces them file by file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from mailer.app import App
from mailer.choices import split
from mailer.config import Settings
from mailer.db import rowcount
from mailer.message import MessageTemplate, new_message_id
from mailer.models import ACTIVE, SENT, WEEKLY, Edition, SendLog, Subscriber
from mailer.placeholders import Placeholders
from mailer.render import archive_url, compile_mjml, tidy_text, weekly_day
from mailer.subscribers import is_suppressed, record_event
from mailer.templating import render_template
from mailer.tokens import PREFERENCES, UNSUBSCRIBE, make_token
from mailer.transports import from_dsn
from mailer.transports.base import Outgoing, Result

log = logging.getLogger("mailer.welcome")

WELCOME_HTML = "welcome.mjml.j2"
WELCOME_TEXT = "welcome.txt.j2"
KIND = "welcome"


@dataclass(frozen=True)
class Reader:
    """What the welcome needs of a reader, read in the transaction that claimed it."""

    id: int
    email: str
    name: str
    first_name: str
    frequency: str
    sections: list[str]


@dataclass(frozen=True)
class Latest:
    """The latest sent edition, for the archive link."""

    id: int
    day: date
    subject: str
    weekly: bool = False


def send_welcome(app: App, subscriber_id: int) -> str:
    """Claim and send the reader's welcome; what happened, for logs and tests: "off"
    (`welcome_email` is false), "skipped" (already welcomed, not active, suppressed or gone),
    "sent" or "failed" (recorded in `send_log` and the reader's history)."""
    if not app.settings.welcome_email:
        return "off"
    now = app.clock.now()
    try:
        with app.sessions.begin() as session:
            claimed = claim(session, subscriber_id, now)
    except Exception:  # a database error: the caller's page must not break for a welcome
        log.exception("welcome for subscriber %s not claimed", subscriber_id)
        return "failed"
    if claimed is None:
        return "skipped"
    reader, latest = claimed
    try:
        outgoing = build(app.settings, app.secret_key, reader, latest, now)
        with from_dsn(app.settings.dsn, app.settings) as transport:
            [result] = transport.send([outgoing])
    except Exception as exc:  # rendering, a template typo, an unusable transport
        log.exception("welcome for subscriber %s could not be sent", reader.id)
        result = Result("failed", error=f"{type(exc).__name__}: {exc}")
    if result.status != "sent":
        log.warning("welcome for subscriber %s not accepted: %s %s", reader.id, result.status,
                    result.error.replace(reader.email, "<address>"))
    _record(app, reader, latest, result, now)
    return "sent" if result.status == "sent" else "failed"


def claim(session: Session, subscriber_id: int,
          now: datetime) -> tuple[Reader, Latest | None] | None:
    """Mark the welcome as the caller's to send; None when it is not to be sent (someone
    else claimed it first, the reader is not active, the address is suppressed)."""
    sub = session.get(Subscriber, subscriber_id)
    if sub is None or sub.status != ACTIVE or sub.welcomed_at is not None:
        return None
    if is_suppressed(session, sub.email):
        return None
    won = session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber_id, Subscriber.welcomed_at.is_(None),
               Subscriber.status == ACTIVE)
        .values(welcomed_at=now)
        .execution_options(synchronize_session=False)
    )
    if rowcount(won) != 1:
        return None
    # A weekly reader's own kind first, if one has gone out yet.
    mine = case((Edition.kind == sub.frequency, 0), else_=1)
    row = session.execute(
        select(Edition.id, Edition.edition_date, Edition.subject, Edition.kind)
        .where(Edition.state == SENT)
        .order_by(mine, Edition.edition_date.desc(), Edition.id.desc()).limit(1)
    ).first()
    latest = (Latest(row.id, row.edition_date, row.subject, row.kind == WEEKLY)
              if row is not None else None)
    reader = Reader(sub.id, sub.email, sub.name, sub.first_name, sub.frequency,
                    split(sub.sections))
    return reader, latest


def build(settings: Settings, secret: str, reader: Reader, latest: Latest | None,
          now: datetime) -> Outgoing:
    """The reader's welcome, ready for the transport: rendered for them alone (it is one
    email, not an edition), with an edition's headers (List-Id, List-Unsubscribe with the
    one-click POST and the mailto) through the same `MessageTemplate`."""
    base = settings.base_url.rstrip("/")
    unsubscribe_url = f"{base}/unsubscribe/{make_token(secret, UNSUBSCRIBE, reader.id)}"
    preferences_url = f"{base}/preferences/{make_token(secret, PREFERENCES, reader.id)}"
    context = _context(settings, reader, latest, unsubscribe_url, preferences_url)
    template = MessageTemplate.build(
        settings=settings, subject=context["subject"],
        html=compile_mjml(render_template(settings, WELCOME_HTML, context)),
        text=tidy_text(render_template(settings, WELCOME_TEXT, context)),
        date=now, placeholders=Placeholders.new())
    message_id = new_message_id(settings, f"welcome.s{reader.id}")
    values = dict(email=reader.email, name=reader.name, unsubscribe_url=unsubscribe_url,
                  preferences_url=preferences_url, message_id=message_id,
                  first_name=reader.first_name)
    return Outgoing(recipient=reader.email, message_id=message_id,
                    data=template.fill(**values), fields=template.fields(**values),
                    wire_ready=True)


def _context(settings: Settings, reader: Reader, latest: Latest | None, unsubscribe_url: str,
             preferences_url: str) -> dict[str, Any]:
    brand = settings.from_addr.partition("<")[0].strip().strip('"') or "LabourList Daily"
    base = settings.base_url.rstrip("/")
    first = " ".join(reader.first_name.split())
    if reader.frequency == WEEKLY:
        kind, when = "the weekly round-up", f"every {weekly_day(settings.weekly_send)} morning"
    else:
        kind, when = "the daily email", "every weekday morning, from the next edition"
    if reader.sections:
        names = reader.sections
        chosen = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        what = f"{kind} with {chosen} only"
    else:
        what = f"{kind} with every section"
    return {
        "subject": f"Welcome to {brand}",
        "brand": brand,
        "postal_address": settings.postal_address,
        "greeting": f"Welcome, {first}" if first else "Welcome",
        "first_name": first,
        "what_you_get": what,
        "when": when,
        "latest_url": archive_url(settings, latest.day, weekly=latest.weekly) if latest else "",
        "latest_subject": latest.subject if latest else "",
        "archive_url": f"{base}/archive/",
        "preferences_url": preferences_url,
        "unsubscribe_url": unsubscribe_url,
    }


def _record(app: App, reader: Reader, latest: Latest | None, result: Result,
            now: datetime) -> None:
    """The outcome in `send_log` and the reader's history. The address is kept out of both
    (the log names the subscriber by id, an error quoting the address has it masked), so an
    erasure, which deletes the history with the subscriber, leaves no copy behind."""
    detail = "ok" if result.status == "sent" else (
        f"{result.status}: {result.error}".replace(reader.email, "<address>")[:1000])
    try:
        with app.sessions.begin() as session:
            session.add(SendLog(kind=KIND, edition_id=latest.id if latest else None,
                                recipients=f"subscriber {reader.id}", detail=detail,
                                created_at=now))
            sub = session.get(Subscriber, reader.id)
            if sub is not None:
                event = "welcomed" if result.status == "sent" else "welcome-failed"
                record_event(session, sub, event, source=KIND,
                             detail="" if result.status == "sent" else detail, at=now)
    except Exception:
        log.exception("welcome outcome for subscriber %s not recorded: %s", reader.id, detail)
