"""mailer subscribers add|import|export|list|unsubscribe|show.

Domain modules are imported inside the commands, so `mailer --help` and each command load only
what they use (start-up time: see `mailer.cli.common`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

import click

from mailer.cli.common import fail, get_app, handle_errors


@click.group()
def subscribers() -> None:
    """Look after the subscriber list."""


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="Display name (the To header).")
@click.option("--first-name", default="", help="First name, for the greeting.")
@click.option("--frequency", type=click.Choice(["daily", "weekly"]), default="daily",
              show_default=True, help="The daily round-up or the weekly digest.")
@click.option("--sections", default="",
              help='Sections to receive, separated by ";" (e.g. "News;Comment"); default all.')
@click.option("--status", default="active", show_default=True,
              type=click.Choice(["active", "pending"]),
              help="active for an already-confirmed address, pending to await confirmation.")
@click.pass_context
@handle_errors
def add_cmd(ctx: click.Context, email: str, name: str, first_name: str, frequency: str,
            sections: str, status: str) -> None:
    """Add one subscriber."""
    from mailer.choices import parse_sections
    from mailer.subscribers import add

    app = get_app(ctx)
    chosen = parse_sections(sections, app.settings.sections)
    with app.sessions.begin() as session:
        sub, created = add(session, email, name=name, first_name=first_name, status=status,
                           source="cli", at=app.clock.now(), frequency=frequency,
                           sections=chosen)
        click.echo(f"{'added' if created else 'already present'}: {sub.email} ({sub.status})")


@subscribers.command("import")
@click.argument("csv_file", type=click.File("rb"))
@click.pass_context
@handle_errors
def import_cmd(ctx: click.Context, csv_file: BinaryIO) -> None:
    """Import a CSV (email,name,status or a Mailchimp export). Bad rows are reported by line.

    UTF-8 or Excel's Windows-1252, found from the file. Rows are committed 1,000 at a time,
    so a send, the web app and webhooks keep writing while a big list comes in."""
    from mailer.subscribers import csv_text, import_csv_batched

    app = get_app(ctx)
    report = import_csv_batched(app.sessions, csv_text(csv_file), at=app.clock.now(),
                                sections=app.settings.sections)
    lines = list(report.lines())
    click.echo(lines[0])
    for line in lines[1:]:
        click.echo(line, err=True)


@subscribers.command("export")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="File (default stdout).")
@click.option("--status", help="Only this status.")
@click.pass_context
@handle_errors
def export_cmd(ctx: click.Context, out: Path | None, status: str | None) -> None:
    """Write the list as CSV: email,name,status,created_at,confirmed_at,first_name,
    frequency,sections."""
    from mailer.subscribers import export_rows, write_csv

    app = get_app(ctx)
    with app.sessions() as session:
        if out is None:
            write_csv(export_rows(session, status), sys.stdout)
        else:
            with out.open("w", encoding="utf-8", newline="") as fh:
                n = write_csv(export_rows(session, status), fh)
            click.echo(f"wrote {n} subscribers to {out}", err=True)


@subscribers.command("list")
@click.option("--status", help="Only this status.")
@click.option("--search", help="Match address or name.")
@click.option("--limit", default=50, show_default=True)
@click.pass_context
@handle_errors
def list_cmd(ctx: click.Context, status: str | None, search: str | None, limit: int) -> None:
    """List subscribers and the totals per status."""
    from sqlalchemy import func, or_, select

    from mailer.models import Subscriber
    from mailer.subscribers import counts

    app = get_app(ctx)
    with app.sessions() as session:
        query = select(Subscriber).order_by(Subscriber.id)
        if status:
            query = query.where(Subscriber.status == status)
        if search:
            like = f"%{search.lower()}%"
            query = query.where(or_(Subscriber.email.like(like),
                                    func.lower(Subscriber.name).like(like)))
        for sub in session.scalars(query.limit(limit)):
            click.echo(f"{sub.email}\t{sub.name}\t{sub.status}\t{sub.created_at:%Y-%m-%d}")
        totals = counts(session)
    click.echo("totals: " + ", ".join(f"{k} {v}" for k, v in totals.items()), err=True)


@subscribers.command("unsubscribe")
@click.argument("email")
@click.pass_context
@handle_errors
def unsubscribe_cmd(ctx: click.Context, email: str) -> None:
    """Unsubscribe an address (recorded as done by staff)."""
    from mailer.models import UNSUBSCRIBED
    from mailer.subscribers import find, set_status

    app = get_app(ctx)
    with app.sessions.begin() as session:
        sub = find(session, email)
        if sub is None:
            fail(f"no subscriber {email.strip().lower()}")
        assert sub is not None
        changed = set_status(session, sub, UNSUBSCRIBED, source="staff", at=app.clock.now())
        click.echo(f"{sub.email}: {'unsubscribed' if changed else 'was already unsubscribed'}")


@subscribers.command("show")
@click.argument("email")
@click.pass_context
@handle_errors
def show_cmd(ctx: click.Context, email: str) -> None:
    """One subscriber and their event history."""
    from mailer.subscribers import find

    app = get_app(ctx)
    with app.sessions() as session:
        sub = find(session, email)
        if sub is None:
            fail(f"no subscriber {email.strip().lower()}")
        assert sub is not None
        click.echo(f"{sub.email}  name={sub.name!r}  status={sub.status}  "
                   f"created={sub.created_at:%Y-%m-%d %H:%M}Z")
        for ev in sub.events:
            extra = f" ({ev.detail})" if ev.detail else ""
            click.echo(f"  {ev.created_at:%Y-%m-%d %H:%M:%S}Z  {ev.kind:<13} "
                       f"{ev.source}{extra}")


@subscribers.command("erase")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
@handle_errors
def erase_cmd(ctx: click.Context, email: str, yes: bool) -> None:
    """Right to erasure: delete the subscriber and their events; keep only a hash."""
    from mailer import audit
    from mailer.erasure import erase
    from mailer.subscribers import find

    app = get_app(ctx)
    if not yes:
        click.confirm(f"Erase {email.strip().lower()} permanently?", abort=True)
    with app.sessions.begin() as session:
        sub = find(session, email)
        if sub is None:
            fail(f"no subscriber {email.strip().lower()}")
        assert sub is not None
        result = erase(session, sub, at=app.clock.now())
        audit.record(session, "cli", "subscriber-erased",
                     audit.subscriber_target(result.subscriber_id),
                     f"address hash {result.email_hash[:12]}…", at=app.clock.now())
    click.echo(f"erased subscriber {result.subscriber_id}")
