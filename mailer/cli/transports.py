"""mailer transports check|dkim-records.

Domain modules are imported inside the commands, so `mailer --help` and each command load only
what they use (start-up time: see `mailer.cli.common`).
"""

from __future__ import annotations

import click

from mailer.cli.common import get_app, handle_errors


@click.group()
def transports() -> None:
    """Where mail goes (MAILER_DSN): SMTP, files or a provider's API."""


@transports.command("check")
@click.option("--dsn", "dsn", default=None, metavar="DSN",
              help="Check this DSN instead of the configured one (MAILER_DSN).")
@click.pass_context
@handle_errors
def check_cmd(ctx: click.Context, dsn: str | None) -> None:
    """Verify the transport's settings and credentials without sending anything.

    SMTP: connect, EHLO, STARTTLS and AUTH, then QUIT. Providers: their credential endpoint
    (Postmark server and message stream, SendGrid key scopes, Mailgun domain, SES account and
    quota). Exits non-zero with a one-line reason when something is wrong.
    """
    from mailer.transports import from_dsn, parse_dsn
    from mailer.urls import redact_url

    settings = get_app(ctx, schema=False).settings
    value = dsn or settings.dsn
    parse_dsn(value)  # one line saying what is wrong, before anything is shown
    click.echo(f"checking {redact_url(value)}")
    transport = from_dsn(value, settings)
    click.echo(transport.check())


@transports.command("dkim-records")
@click.pass_context
@handle_errors
def dkim_records_cmd(ctx: click.Context) -> None:
    """The DNS TXT records that publish the configured DKIM keys (docs/sending.md)."""
    from mailer.cli.common import fail
    from mailer.dkimsign import load_keys
    from mailer.preflight.dnsrecords import txt

    settings = get_app(ctx, schema=False).settings
    keys = load_keys(settings)
    if not keys:
        fail("DKIM signing is off: set dkim_domain, a selector and MAILER_DKIM_PRIVATE_KEY "
             "(docs/sending.md)")
    for key in keys:
        click.echo(txt(f"{key.selector}._domainkey.{settings.dkim_domain}",
                       key.public_record()))
