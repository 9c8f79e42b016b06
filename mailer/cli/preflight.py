"""preflight: check an edition the way `mailer send` will, before it is time to send.

Domain modules are imported inside the commands, so `mailer --help` and each command load only
what they use (start-up time: see `mailer.cli.common`).
"""

from __future__ import annotations

from pathlib import Path

import click

from mailer.cli.common import (
    EXIT_PREFLIGHT,
    fail,
    get_app,
    get_settings,
    handle_errors,
    kind_option,
)
from mailer.cli.core import build_for_inspection


@click.command("preflight")
@click.option("--date", "day", help="Edition date (YYYY-MM-DD); default today.")
@click.option("--check-links", is_flag=True,
              help="Also request every article and image URL and report dead ones.")
@click.option("--screenshots", "shots", type=click.Path(file_okay=False, path_type=Path),
              help="Render the email in headless Chromium (375/800 px, light/dark, images "
                   "off) and save PNGs in this directory.")
@click.option("--no-collect", is_flag=True, help="Use stored articles only.")
@click.option("--dns", "dns", is_flag=True,
              help="Look the sending domain's SPF, DKIM, DMARC and MX records up now "
                   "(otherwise the day's kept result is used, as `mailer send` does).")
@kind_option
@click.pass_context
@handle_errors
def preflight_cmd(ctx: click.Context, day: str | None, check_links: bool, shots: Path | None,
                  no_collect: bool, dns: bool, kind: str) -> None:
    """Build the edition and run the pre-send checks on a sample message.

    Prints one line per finding, with the record to publish where DNS is at fault; exits 5
    (as `mailer send` does on a refusal) when any is an error, which is exactly when `mailer
    send` would refuse the edition (unless --force --reason "...").
    """
    from mailer import preflight
    from mailer.edition import EDITABLE
    from mailer.preflight import spamassassin

    with spamassassin.warmed(spamassassin.configured_command(get_settings(ctx))):
        app = get_app(ctx)
        the_day, edition = build_for_inspection(app, day, collect_first=not no_collect,
                                                kind=kind)
        report = preflight.run_checks(app, edition, check_links=check_links,
                                      dns="fresh" if dns else "daily")
    if edition.state in EDITABLE:
        preflight.record(app, edition, report)  # the console shows the latest result
    name = f"{'weekly ' if kind == 'weekly' else ''}edition {the_day}"
    click.echo(f"preflight of {name} ({edition.state}): {edition.subject}")
    for finding in report.findings:
        click.echo(finding.line())
        if finding.fix:
            click.echo(f"    fix: {finding.fix}")
    if report.domain is not None:
        for line in report.domain["passed"]:
            click.echo(f"ok: {line}")
    if report.spam_score is not None:
        fired = ", ".join(f"{r.name} ({r.score:g})" for r in report.rules) or "none"
        click.echo(f"spamassassin: score {report.spam_score:g} "
                   f"(limit {report.spam_threshold:g}); rules: {fired}")
    if shots is not None:
        html = preflight.sample_message(app, edition).html
        for path in preflight.render_screenshots(html, shots, prefix=f"{the_day}-"):
            click.echo(f"screenshot: {path}")
    counts = f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)"
    if not report.ok:
        fail(f"preflight failed: {counts}; `mailer send` would refuse this edition",
             EXIT_PREFLIGHT)
    click.echo(f"preflight passed: {counts}")
