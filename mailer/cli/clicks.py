"""mailer clicks purge: the retention rules of click measurement, run now.

Domain modules are imported inside the commands, so `mailer --help` and each command load only
what they use (start-up time: see `mailer.cli.common`).
"""

from __future__ import annotations

import click

from mailer.cli.common import get_app, handle_errors


@click.group()
def clicks() -> None:
    """Click measurement's stored data (docs/privacy.md)."""


@clicks.command("purge")
@click.pass_context
@handle_errors
def purge_cmd(ctx: click.Context) -> None:
    """Apply the retention rules now: delete clicks older than click_retention_days, clear
    fingerprints (and their daily salts) older than 48 hours, delete rate-limit rows older
    than a day.

    Every send run ends with this; run it daily from cron as well (e.g. hourly), so that the
    48 hours hold on days no edition goes out. Safe to run at any time, any number of times."""
    from mailer.clicks.retention import purge

    app = get_app(ctx)
    with app.sessions.begin() as session:
        purged = purge(session, app.clock.now(), app.settings)
    click.echo(purged.summary())
