"""mailer bounces ingest: bounce reports by email, for the SMTP transport (mailer/bounces.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mailer.cli import cli, fail, get_app, handle_errors
from mailer.errors import DatabaseUnreachable, one_line

# sysexits.h EX_TEMPFAIL: an MTA that pipes a message to us keeps it and tries again later.
EXIT_TEMPFAIL = 75


@cli.group()
def bounces() -> None:
    """Bounce reports that come back by email (SMTP transport)."""


@bounces.command("ingest")
@click.argument("files", nargs=-1,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--maildir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Read the new messages of this Maildir, moving each to cur/ once applied.")
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
    from sqlalchemy.exc import SQLAlchemyError

    from mailer.bounces import ingest
    from mailer.db import require_schema

    app = get_app(ctx)
    try:
        require_schema(app.engine)
    except DatabaseUnreachable as exc:
        fail(f"{exc}; the message is kept, try again later", EXIT_TEMPFAIL)
    # (name, the file or None for stdin, where it is filed once applied: a Maildir's cur/)
    sources: list[tuple[str, Path | None, Path | None]] = []
    if maildir is not None:
        new, cur = maildir / "new", maildir / "cur"
        if not new.is_dir() or not cur.is_dir():
            fail(f"{maildir} is not a Maildir (it needs new/ and cur/)")
        sources += [(path.name, path, cur / f"{path.name}:2,S")
                    for path in sorted(new.iterdir()) if path.is_file()]
    sources += [(str(path), path, None) for path in files]
    if maildir is None and not files:
        sources.append(("stdin", None, None))
    if recipient and len(sources) != 1:
        fail("--recipient names where one message was delivered: give one FILE or standard "
             "input, not a Maildir or several files")
    counts: dict[str, int] = {}
    for name, path, filed in sources:
        raw = path.read_bytes() if path is not None else sys.stdin.buffer.read()
        try:
            with app.sessions.begin() as session:
                outcomes = ingest(session, raw, app.clock.now(),
                                  soft_bounce_limit=app.settings.soft_bounce_limit,
                                  bounce_address=app.settings.envelope_sender,
                                  recipient=recipient)
        except SQLAlchemyError as exc:
            fail(f"{name}: cannot write to the database ({one_line(exc)}); the message is "
                 "kept, try again later", EXIT_TEMPFAIL)
        if path is not None and filed is not None:
            path.rename(filed)
        for outcome in outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
            click.echo(f"{name}: {outcome.status}: {outcome.detail}")
    summary = ", ".join(f"{counts.get(k, 0)} {k}"
                        for k in ("applied", "duplicate", "unmatched", "ignored"))
    click.echo(f"{len(sources)} message(s): {summary}")
