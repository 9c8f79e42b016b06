"""mailer api-keys add|list|revoke: keys of the public API (docs/api.md).

A key is printed once, when it is made, and kept only as a hash. Each change is written to
the audit log as done by ``cli:<user>``. Domain modules are imported inside the commands, so
`mailer --help` stays quick (`mailer.cli.common`).
"""

from __future__ import annotations

import click

from mailer.cli.common import get_app, handle_errors
from mailer.cli.staff import _actor


@click.group("api-keys")
def api_keys() -> None:
    """Keys of the public API (/api/v1).

    Made, listed and revoked here, or by admins in the staff console."""


@api_keys.command("add")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, required=True,
              help="subscribers:read, subscribers:write, editions:read, editions:send or "
                   "stats:read (repeat for several).")
@click.pass_context
@handle_errors
def add_cmd(ctx: click.Context, name: str, scopes: tuple[str, ...]) -> None:
    """Make a key; it is printed once and cannot be shown again."""
    from mailer import apikeys, audit

    app = get_app(ctx)
    with app.sessions.begin() as session:
        row, key = apikeys.create(session, name, scopes, actor=_actor(), now=app.clock.now())
        audit.record(session, _actor(), "api-key-added", f"api-key:{row.name}",
                     "scopes " + " ".join(row.scopes), at=app.clock.now())
    click.echo(key)
    click.echo(f"API key {row.name!r} ({', '.join(row.scopes)}): keep it now; it is stored "
               "only as a hash and cannot be shown again.", err=True)


@api_keys.command("list")
@click.pass_context
@handle_errors
def list_cmd(ctx: click.Context) -> None:
    """Every key: name, start of the key, scopes, last use, revoked."""
    from mailer import apikeys

    app = get_app(ctx)
    with app.sessions() as session:
        rows = apikeys.listing(session)
    if not rows:
        click.echo("no API keys")
    for row in rows:
        used = f"{row.last_used_at:%Y-%m-%d %H:%M}Z" if row.last_used_at else "never"
        state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "live"
        click.echo(f"{row.name:<30} {row.prefix}...  {state:<18} last used {used:<18} "
                   f"{' '.join(row.scopes)}")


@api_keys.command("revoke")
@click.argument("name")
@click.pass_context
@handle_errors
def revoke_cmd(ctx: click.Context, name: str) -> None:
    """Revoke a key at once (its next request is refused)."""
    from mailer import apikeys, audit

    app = get_app(ctx)
    with app.sessions.begin() as session:
        row = apikeys.revoke(session, name, now=app.clock.now())
        audit.record(session, _actor(), "api-key-revoked", f"api-key:{row.name}",
                     at=app.clock.now())
    click.echo(f"API key {row.name!r} revoked")
