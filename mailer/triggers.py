"""What will fire the next send: the scheduler seen alive, cron seen running, or nothing.

The schedule says when the edition is due; it does not say that anything will act on it. A
newsroom that set the send time in the console but never started `mailer scheduler` (or lost
the cron line in a server move) learns it at 07:00 from readers. So both triggers leave a
trace in the `meta` table: the running scheduler a heartbeat (`beat`, when it starts and
every `settings_check_seconds` after), and `mailer send` a note each time it runs
(`note_send`). `current` reads them for the dashboard and `mailer status`.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from mailer.config import Settings
from mailer.db import put_meta
from mailer.models import Meta

HEARTBEAT = "scheduler-heartbeat"
LAST_SEND = "cli-send-ran"
#: A `mailer send` this recent counts as cron at work (a long weekend has no send days).
CRON_RECENT = timedelta(days=4)

SCHEDULER, CRON, NOTHING = "scheduler", "cron", "nothing"


@dataclass(frozen=True)
class Trigger:
    """The trigger the next send can count on (`kind`), when it was seen, and what to do."""

    kind: str
    seen_at: datetime | None = None
    who: str = ""
    warning: str = ""


def _here() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


def beat(sessions: sessionmaker[Session], now: datetime) -> None:
    """The running scheduler is alive now."""
    put_meta(sessions, HEARTBEAT, f"{now.isoformat()} {_here()}", now)


def note_send(sessions: sessionmaker[Session], now: datetime) -> None:
    """`mailer send` ran now (from cron, or by hand)."""
    put_meta(sessions, LAST_SEND, f"{now.isoformat()} {_here()}", now)


def _read(session: Session, key: str) -> tuple[datetime | None, str]:
    row = session.get(Meta, key)
    if row is None:
        return None, ""
    stamp, _, who = row.value.partition(" ")
    try:
        return datetime.fromisoformat(stamp), who
    except ValueError:
        return None, ""


def alive_within(settings: Settings) -> timedelta:
    """How old a heartbeat may be and the scheduler still count as running."""
    return max(timedelta(seconds=3 * settings.settings_check_seconds), timedelta(minutes=3))


def current(session: Session, settings: Settings, now: datetime) -> Trigger:
    beat_at, beat_who = _read(session, HEARTBEAT)
    if beat_at is not None and now - beat_at <= alive_within(settings):
        return Trigger(SCHEDULER, beat_at, beat_who)
    sent_at, sent_who = _read(session, LAST_SEND)
    if sent_at is not None and now - sent_at <= CRON_RECENT:
        return Trigger(CRON, sent_at, sent_who)
    last = (f"; the scheduler was last seen at {beat_at:%Y-%m-%d %H:%M} UTC"
            if beat_at is not None else "")
    return Trigger(NOTHING, warning=(
        "nothing will trigger the next send: no `mailer scheduler` is running and no "
        f"`mailer send` has run in the last {CRON_RECENT.days} days{last}. Start "
        "`mailer scheduler` as a service, or add the cron line (docs/operations.md)"))
