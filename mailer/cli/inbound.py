"""The reading loop that `mailer bounces ingest` and `mailer unsubscribes ingest` share: one
message from standard input (an MTA's pipe), FILES, or a Maildir's new messages; each applied
in its own transaction; EX_TEMPFAIL (75) while the database cannot be written, so the MTA
keeps the message (in a Maildir it stays in new/)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from mailer.cli.common import fail, get_app
from mailer.errors import DatabaseUnreachable, one_line
from mailer.feedback.inbound import STATUSES, Outcome

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.orm import Session

    from mailer.app import App

# sysexits.h EX_TEMPFAIL: an MTA that pipes a message to us keeps it and tries again later.
EXIT_TEMPFAIL = 75

Handler = Callable[["App", "Session", bytes, "datetime"], list[Outcome]]
F = TypeVar("F", bound=Callable[..., object])


def message_sources(command: F) -> F:
    """FILES and --maildir, the sources every ingest command reads."""
    command = click.option(
        "--maildir", type=click.Path(exists=True, file_okay=False, path_type=Path),
        help="Read the new messages of this Maildir, moving each to cur/ once applied.",
    )(command)
    return click.argument("files", nargs=-1, type=click.Path(
        exists=True, dir_okay=False, path_type=Path))(command)


def sources_of(files: tuple[Path, ...],
               maildir: Path | None) -> list[tuple[str, Path | None, Path | None]]:
    """(name, the file or None for stdin, where it is filed once applied: a Maildir's cur/)."""
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
    return sources


def ingest_all(ctx: click.Context, sources: list[tuple[str, Path | None, Path | None]],
               handle: Handler) -> None:
    """Apply each message with `handle`, print one line per outcome and a summary."""
    from sqlalchemy.exc import SQLAlchemyError

    from mailer.db import require_schema

    app = get_app(ctx, schema=False)
    try:
        require_schema(app.engine)
    except DatabaseUnreachable as exc:
        fail(f"{exc}; the message is kept, try again later", EXIT_TEMPFAIL)
    counts: dict[str, int] = {}
    for name, path, filed in sources:
        # (one message at a time: a Maildir is never read into memory whole)
        raw = path.read_bytes() if path is not None else sys.stdin.buffer.read()
        try:
            with app.sessions.begin() as session:
                outcomes = handle(app, session, raw, app.clock.now())
        except SQLAlchemyError as exc:
            fail(f"{name}: cannot write to the database ({one_line(exc)}); the message is "
                 "kept, try again later", EXIT_TEMPFAIL)
        if path is not None and filed is not None:
            path.rename(filed)
        for outcome in outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
            click.echo(f"{name}: {outcome.status}: {outcome.detail}")
    summary = ", ".join(f"{counts.get(k, 0)} {k}" for k in STATUSES)
    click.echo(f"{len(sources)} message(s): {summary}")
