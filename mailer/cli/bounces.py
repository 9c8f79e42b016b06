"""mailer bounces ingest: bounce reports by email for SMTP (mailer/feedback/bounces.py).

Domain modules are imported inside the commands, so `mailer --help` and each command load only
what they use (start-up time: see `mailer.cli.common`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from mailer.cli.common import fail, handle_errors
from mailer.cli.inbound import ingest_all, message_sources, sources_of

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.orm import Session

    from mailer.app import App
    from mailer.feedback.inbound import Outcome


@click.group()
def bounces() -> None:
    """Bounce reports that come back by email (SMTP transport)."""


@bounces.command("ingest")
@message_sources
@click.option("--recipient", metavar="ADDRESS", default="",
              help="The address the mail system delivered the message to (Postfix: "
                   "${original_recipient}), for VERP; otherwise read from its "
                   "X-Original-To, Delivered-To, Envelope-To and To headers.")
@click.pass_context
@handle_errors
def ingest_cmd(ctx: click.Context, files: tuple[Path, ...], maildir: Path | None,
               recipient: str) -> None:
    """Apply delivery status reports (RFC 3464) to the subscribers they are about.

    With no FILES and no --maildir, one message is read from standard input: what an MTA's
    pipe gives (see docs/providers.md: the MTA's bare environment needs MAILER_CONFIG). A hard
    bounce marks the subscriber bounced; other failures count as soft bounces. Messages that
    are not reports, or are about messages we did not send, change nothing and still exit 0
    (an MTA would otherwise bounce the bounce). If the database cannot be written the exit
    status is 75 (EX_TEMPFAIL), so the MTA keeps the message and tries again; in a Maildir the
    message stays in new/. With bounce_verp on, bounces in any shape that reach a message's
    own envelope sender (bounces+TOKEN@...) are applied by the status code in their text.
    """
    from mailer.feedback.bounces import ingest

    sources = sources_of(files, maildir)
    if recipient and len(sources) != 1:
        fail("--recipient names where one message was delivered: give one FILE or standard "
             "input, not a Maildir or several files")

    def handle(app: App, session: Session, raw: bytes, now: datetime) -> list[Outcome]:
        return ingest(session, raw, now, soft_bounce_limit=app.settings.soft_bounce_limit,
                      bounce_address=app.settings.envelope_sender, recipient=recipient)

    ingest_all(ctx, sources, handle)
