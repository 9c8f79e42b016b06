"""Operations: `mailer scheduler` (the daemon) and `mailer status` (for people and monitors).

Domain modules are imported inside the commands, so `mailer --help` and each command load only
what they use (start-up time: see `mailer.cli.common`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys

import click

from mailer.cli import output
from mailer.cli.common import fail, get_app, handle_errors


def _daemon_logging() -> None:
    """A daemon's log is its only voice: show our INFO lines unless -v already shows more,
    each with its time and module (read later, not as it happens)."""
    output.timestamped()
    mailer_log = logging.getLogger("mailer")
    if mailer_log.getEffectiveLevel() > logging.INFO:
        mailer_log.setLevel(logging.INFO)


@click.command("scheduler")
@click.option("--once-now", is_flag=True,
              help="Run the daily send job once, now, for today's edition, and exit.")
@click.pass_context
@handle_errors
def scheduler_cmd(ctx: click.Context, once_now: bool) -> None:
    """Run the built-in scheduler daemon (sends, subject tests, collection, webhooks).

    The daily send at MAILER_SEND_TIME on MAILER_SEND_DAYS in MAILER_TIMEZONE, its job kept
    in the database. Stops cleanly on SIGTERM or Ctrl-C (a send
    in progress finishes first). Safe next to cron: both take the same run lock."""
    from mailer.scheduler import run_once_now, run_scheduler

    app = get_app(ctx, schema=False)  # the daemon rides out a database that is not up yet
    _daemon_logging()
    if once_now:
        report = run_once_now(app)
        if not report.ok:
            fail(report.message)
        click.echo(report.message)
        return
    sys.exit(run_scheduler(app))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for monitoring.")
@click.pass_context
@handle_errors
def status(ctx: click.Context, as_json: bool) -> None:
    """Last edition, next run, feed health, database and transport; exit 1 if anything is wrong."""
    from mailer.status import gather, render_text

    report = gather(get_app(ctx, schema=False))
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(report), indent=2, default=str))
    else:
        click.echo(render_text(report))
    if not report.ok:
        sys.exit(1)
