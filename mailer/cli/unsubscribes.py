"""mailer unsubscribes ingest: unsubscribe requests by email (feedback/unsubscribe_mail.py).

Domain modules are imported inside the commands, so `mailer --help` and each command load only
what they use (start-up time: see `mailer.cli.common`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from mailer.cli.common import handle_errors
from mailer.cli.inbound import ingest_all, message_sources, sources_of

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.orm import Session

    from mailer.app import App
    from mailer.feedback.inbound import Outcome


@click.group()
def unsubscribes() -> None:
    """Unsubscribe requests that come by email (List-Unsubscribe's mailto)."""


@unsubscribes.command("ingest")
@message_sources
@click.pass_context
@handle_errors
def ingest_cmd(ctx: click.Context, files: tuple[Path, ...], maildir: Path | None) -> None:
    """Unsubscribe the readers whose emails to unsubscribe_mailto carry their token.

    Mail clients send "unsubscribe TOKEN" there when a reader uses the List-Unsubscribe
    mailto. With no FILES and no --maildir, one message is read from standard input (an MTA's
    pipe; see docs/web.md). Messages without a valid token (a person's own words, a forgery)
    change nothing and are listed as unmatched, with their From, for staff to act on. If the
    database cannot be written the exit status is 75 (EX_TEMPFAIL), so the MTA keeps the
    message; in a Maildir it stays in new/.
    """
    from mailer.feedback.unsubscribe_mail import ingest

    def handle(app: App, session: Session, raw: bytes, now: datetime) -> list[Outcome]:
        return ingest(session, raw, now, secret=app.secret_key)

    ingest_all(ctx, sources_of(files, maildir), handle)
