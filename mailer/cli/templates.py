"""mailer templates copy|list: the newsroom's editable email templates (mailer/templating.py)."""

from __future__ import annotations

import click

from mailer.cli.common import get_settings, handle_errors
from mailer.templating import copy_templates, template_files


@click.group()
def templates() -> None:
    """The email templates: bundled defaults, overridden file by file from templates_dir."""


@templates.command("copy")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--force", is_flag=True, help="Overwrite files already in templates_dir.")
@click.pass_context
@handle_errors
def copy_cmd(ctx: click.Context, names: tuple[str, ...], force: bool) -> None:
    """Copy the bundled email templates (or only those NAMEd, e.g. edition.mjml.j2) into
    templates_dir (MAILER_TEMPLATES_DIR, default ./templates) to edit them there.

    A file there replaces the bundled one of the same name; delete it to go back to the
    default. Nothing is copied when a file is already there, unless --force.
    """
    for path in copy_templates(get_settings(ctx), names, force=force):
        click.echo(f"copied {path}")


@templates.command("list")
@click.pass_context
@handle_errors
def list_cmd(ctx: click.Context) -> None:
    """Each email template and the file a render uses for it."""
    for item in template_files(get_settings(ctx)):
        click.echo(f"{item.name:<28} {'override' if item.overridden else 'bundled':<8} "
                   f"{item.used}")
