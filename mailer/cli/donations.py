"""mailer donations import: the donation platform's export, attributed to editions.

Domain modules are imported inside the commands, so `mailer --help` and each command load only
what they use (start-up time: see `mailer.cli.common`).
"""

from __future__ import annotations

import sys
from typing import BinaryIO

import click

from mailer.cli.common import get_app, handle_errors


@click.group()
def donations() -> None:
    """Gifts from the donation platform, attributed to the edition that asked."""


@donations.command("import")
@click.argument("csv_file", type=click.File("rb"))
@click.pass_context
@handle_errors
def import_cmd(ctx: click.Context, csv_file: BinaryIO) -> None:
    """Import the donation platform's CSV export: date, amount, currency, utm_content, and
    optionally email and reference (or id); other columns are ignored.

    A gift whose utm_content is an edition's donate link counts for that edition; in
    per-reader mode, one from a reader's address is linked to them (the address is not
    stored). Importing the same file again adds nothing. Bad rows are reported by line, the
    good ones imported; the exit status is 1 if any row was rejected."""
    from mailer.clicks.gifts import import_gifts
    from mailer.subscribers import csv_text

    app = get_app(ctx)
    stream = csv_text(csv_file)
    with app.sessions.begin() as session:
        report = import_gifts(session, stream, at=app.clock.now())
    click.echo(report.summary())
    for line in list(report.lines())[1:]:
        click.echo(line, err=True)
    if not report.ok:
        click.echo(f"error: {len(report.errors)} rows rejected; fix them and import the file "
                   "again (rows already imported are not added twice)", err=True)
        sys.exit(1)
