"""mailer staff add|list|remove|set-password|set-role|disable|allow-erase: staff accounts.

Admins also manage accounts in the console (`mailer.web.staff.team`); the command line is the
way in when no admin can sign in. Each change is written to the audit log as done by
``cli:<user>``.

Domain modules are imported inside the commands, so `mailer --help` and each command load only
what they use (start-up time: see `mailer.cli.common`).
"""

from __future__ import annotations

import getpass
import sys

import click

from mailer.cli.common import fail, get_app, handle_errors


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "cli"


def _read_password(from_stdin: bool) -> str:
    """One line from stdin (scripts, provisioning) or a hidden prompt asked twice."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            fail("no password on stdin")
        return line.rstrip("\r\n")
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


@click.group()
def staff() -> None:
    """Staff console accounts (editor or admin)."""


@staff.command("add")
@click.argument("email")
@click.option("--role", type=click.Choice(["editor", "admin"]), default="editor",
              show_default=True, help="admin can also change the console's settings.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of stdin instead of prompting.")
@click.pass_context
@handle_errors
def add_cmd(ctx: click.Context, email: str, role: str, password_stdin: bool) -> None:
    """Create an account (the password is prompted for, or read from stdin)."""
    from mailer import audit
    from mailer.accounts import add_staff

    app = get_app(ctx)
    password = _read_password(password_stdin)
    with app.sessions.begin() as session:
        user = add_staff(session, email, password, role=role, at=app.clock.now())
        audit.record(session, _actor(), "staff-added", f"staff:{user.email}", f"role {role}",
                     at=app.clock.now())
        click.echo(f"added {user.email} ({user.role})")


@staff.command("list")
@click.pass_context
@handle_errors
def list_cmd(ctx: click.Context) -> None:
    """Every account with its role and last login."""
    from mailer.accounts import list_staff

    app = get_app(ctx)
    with app.sessions() as session:
        users = list_staff(session)
    if not users:
        click.echo("no staff accounts yet: add one with `mailer staff add EMAIL --role admin`",
                   err=True)
    for user in users:
        last = f"{user.last_login_at:%Y-%m-%d %H:%M}Z" if user.last_login_at else "never"
        extra = ("\tdisabled" if user.disabled_at else "") + (
            "\tmay erase" if user.can_erase and user.role != "admin" else "")
        click.echo(f"{user.email}\t{user.role}\tlast login {last}{extra}")


@staff.command("remove")
@click.argument("email")
@click.pass_context
@handle_errors
def remove_cmd(ctx: click.Context, email: str) -> None:
    """Delete an account; its open sessions stop working at once."""
    from mailer import audit
    from mailer.accounts import remove_staff

    app = get_app(ctx)
    address = email.strip().lower()
    with app.sessions.begin() as session:
        remove_staff(session, address)
        audit.record(session, _actor(), "staff-removed", f"staff:{address}", at=app.clock.now())
    click.echo(f"removed {address}")


@staff.command("set-password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of stdin instead of prompting.")
@click.pass_context
@handle_errors
def set_password_cmd(ctx: click.Context, email: str, password_stdin: bool) -> None:
    """Replace a password (also ends every session of the account)."""
    from mailer import audit
    from mailer.accounts import set_password

    app = get_app(ctx)
    password = _read_password(password_stdin)
    with app.sessions.begin() as session:
        user = set_password(session, email, password)
        audit.record(session, _actor(), "password-set", f"staff:{user.email}",
                     at=app.clock.now())
        click.echo(f"password changed for {user.email}")


@staff.command("set-role")
@click.argument("email")
@click.argument("role", type=click.Choice(["editor", "admin"]))
@click.pass_context
@handle_errors
def set_role_cmd(ctx: click.Context, email: str, role: str) -> None:
    """Make an account an editor or an admin."""
    from mailer import audit
    from mailer.accounts import set_role

    app = get_app(ctx)
    with app.sessions.begin() as session:
        user = set_role(session, email, role)
        audit.record(session, _actor(), "role-set", f"staff:{user.email}", f"role {role}",
                     at=app.clock.now())
        click.echo(f"{user.email} is now {role}")


@staff.command("disable")
@click.argument("email")
@click.option("--enable", is_flag=True, help="Turn the account back on instead.")
@click.pass_context
@handle_errors
def disable_cmd(ctx: click.Context, email: str, enable: bool) -> None:
    """Turn an account off (it cannot sign in; its sessions end), or back on with --enable."""
    from mailer import audit
    from mailer.accounts import disable_staff, enable_staff

    app = get_app(ctx)
    with app.sessions.begin() as session:
        user = (enable_staff(session, email) if enable
                else disable_staff(session, email, now=app.clock.now()))
        audit.record(session, _actor(), "staff-enable" if enable else "staff-disable",
                     f"staff:{user.email}", at=app.clock.now())
        click.echo(f"{user.email} {'enabled' if enable else 'disabled'}")


@staff.command("allow-erase")
@click.argument("email")
@click.option("--deny", is_flag=True, help="Take the right away instead.")
@click.pass_context
@handle_errors
def allow_erase_cmd(ctx: click.Context, email: str, deny: bool) -> None:
    """Let an editor erase subscribers (admins always may), or stop them with --deny."""
    from mailer import audit
    from mailer.accounts import set_can_erase

    app = get_app(ctx)
    with app.sessions.begin() as session:
        user = set_can_erase(session, email, not deny)
        audit.record(session, _actor(), "staff-deny-erase" if deny else "staff-allow-erase",
                     f"staff:{user.email}", at=app.clock.now())
        click.echo(f"{user.email} {'may no longer' if deny else 'may now'} erase subscribers")
