"""`mailer`: the command line. Thin commands over the domain modules.

The root group builds one `App` (settings, clock, database) into ctx.obj; every command turns a
`MailerError` into one line on stderr and a non-zero exit (`mailer.cli.common`). Each command
module defines its commands or its subgroup with plain `click` decorators and imports nothing
from here; this module registers them all at its end, so the list of commands is in one place.
"""

from __future__ import annotations

import click

from mailer.cli import (
    apikeys,
    bounces,
    clicks,
    core,
    donations,
    editions,
    ops,
    output,
    preflight,
    serve,
    staff,
    subscribers,
    templates,
    transports,
    unsubscribes,
    webhooks,
)
from mailer.cli.common import Obj, fail
from mailer.errors import MailerError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail to stderr.")
@click.version_option(package_name="labourlist-mailer")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """LabourList's daily round-up mailer.

    Settings come from config/mailer.toml (or the file named by MAILER_CONFIG) and MAILER_<KEY>
    environment variables, e.g. MAILER_DATABASE_URL, MAILER_FEED_URL, MAILER_DSN.
    """
    output.configure(verbose)
    ctx.ensure_object(Obj)


def main() -> None:
    try:
        cli(prog_name="mailer")
    except MailerError as exc:  # raised while building the app (bad settings)
        fail(str(exc))


for command in (
    core.init, core.collect_cmd, core.preview, core.send, core.worker, core.demo,
    ops.scheduler_cmd, ops.status, preflight.preflight_cmd, serve.serve,
    bounces.bounces, clicks.clicks, donations.donations, editions.editions, staff.staff,
    subscribers.subscribers, transports.transports, unsubscribes.unsubscribes, templates.templates,
    apikeys.api_keys, webhooks.webhooks,
):
    cli.add_command(command)
output.whole_summaries(cli)
