"""init, collect, preview, send, worker, demo.

Domain modules are imported inside the commands, so `mailer --help` and each command load only
what they use (start-up time: see `mailer.cli.common`).
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import nullcontext
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mailer.cli.common import (
    EXIT_STOPPED,
    fail,
    get_app,
    get_settings,
    handle_errors,
    kind_option,
)
from mailer.errors import FeedError

if TYPE_CHECKING:
    from collections.abc import Callable

    from mailer.app import App
    from mailer.dispatch import Progress
    from mailer.models import Edition
    from mailer.pipeline import SendOutcome


def parse_day(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2026-11-26") from None


@click.command()
@click.pass_context
@handle_errors
def init(ctx: click.Context) -> None:
    """Create or migrate the database (idempotent)."""
    from mailer.db import init_db

    app = get_app(ctx, schema=False)
    revision = init_db(app.engine)
    click.echo(f"database ready at revision {revision} ({app.engine.url.render_as_string()})")


@click.command("collect")
@click.pass_context
@handle_errors
def collect_cmd(ctx: click.Context) -> None:
    """Fetch the feed and store new or edited articles."""
    from mailer.collect import collect

    app = get_app(ctx)
    result = collect(app)
    if result.not_modified:
        click.echo("feed not modified since the last fetch")
    else:
        click.echo(f"collected: {result.new} new, {result.updated} updated, "
                   f"{result.skipped} skipped, {result.pages} page(s)")


def build_for_inspection(app: App, day: str | None, *, collect_first: bool,
                         kind: str = "daily") -> tuple[date, Edition]:
    """The day's edition, built or refreshed for `preview` and `preflight`: a feed that cannot
    be fetched is only a warning there, since the stored articles can still be looked at."""
    from mailer.edition import build_edition
    from mailer.pipeline import collect_for, default_day

    the_day = parse_day(day) or default_day(app)
    if collect_first:
        try:
            collect_for(app, the_day, kind)
        except FeedError as exc:
            click.echo(f"warning: could not collect ({exc}); using stored articles", err=True)
    return the_day, build_edition(app, the_day, kind=kind)


@click.command()
@click.option("--date", "day", help="Edition date (YYYY-MM-DD); default today.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the HTML here (default preview-DATE.html).")
@click.option("--no-collect", is_flag=True, help="Use stored articles only.")
@click.option("--sections", default="",
              help='As a reader who chose these sections gets it ("News;Comment").')
@kind_option
@click.pass_context
@handle_errors
def preview(ctx: click.Context, day: str | None, out: Path | None, no_collect: bool,
            sections: str, kind: str) -> None:
    """Build the edition and write its HTML (and text part) to files."""
    from mailer.choices import parse_sections
    from mailer.edition import fill_preview
    from mailer.variants import preview_variant

    app = get_app(ctx)
    chosen = parse_sections(sections, app.settings.sections)
    the_day, edition = build_for_inspection(app, day, collect_first=not no_collect, kind=kind)
    html, text, key = edition.html, edition.text, ""
    if chosen:
        variant, stories = preview_variant(app, edition, chosen)
        assert variant.placeholders is not None
        html, text, key = variant.html, variant.text, variant.placeholders.key
        if not stories:
            click.echo(f"note: nothing in {', '.join(chosen)} today: such readers get no "
                       "email", err=True)
    out = out or Path(f"preview-{'weekly-' if kind == 'weekly' else ''}{the_day}.html")
    out.write_text(fill_preview(app.settings, edition, html, key), encoding="utf-8")
    text_path = out.with_suffix(".txt")
    text_path.write_text(fill_preview(app.settings, edition, text, key), encoding="utf-8")
    size = len(html.encode())
    name = f"{'weekly ' if kind == 'weekly' else ''}edition {the_day}"
    click.echo(f"preview of {name} ({edition.state}): HTML {out} ({size / 1024:.1f} KB),"
               f" text part {text_path}")


def _progress_printer(
    total_hint: int = 0,
) -> tuple[Callable[[Progress], None], Callable[[], None]]:
    """Rich live progress on a terminal; a plain log line every few seconds otherwise."""
    if sys.stdout.isatty():
        from rich.progress import BarColumn, TaskID, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        bar = Bar(TextColumn("[bold]sending"), BarColumn(),
                       TextColumn("{task.completed}/{task.total} sent"),
                       TextColumn("{task.fields[failed]} failed"),
                       TextColumn("{task.fields[rate]:.0f}/s"), TimeRemainingColumn())
        state: dict[str, TaskID] = {}

        def update(p: Progress) -> None:
            if "task" not in state:
                bar.start()
                state["task"] = bar.add_task("send", total=p.audience or None, failed=0, rate=0.0)
            bar.update(state["task"], completed=p.sent, total=p.audience or None,
                       failed=p.tally.failed, rate=p.rate)

        def stop() -> None:
            if "task" in state:
                bar.stop()

        return update, stop
    last = [0.0]

    def plain(p: Progress) -> None:
        now = time.monotonic()
        if now - last[0] >= 5:
            last[0] = now
            click.echo(f"progress: {p.sent}/{p.audience} sent, {p.tally.failed} failed, "
                       f"{p.rate:.0f}/s")

    return plain, lambda: None


def _summary(outcome: SendOutcome) -> None:
    if outcome.details and sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title="Send summary")
        d = outcome.details
        columns = ["sent", "failed", "ambiguous", "queued"] + (
            ["withdrawn"] if d.get("withdrawn") else [])
        for col in columns:
            table.add_column(col, justify="right")
        table.add_row(*(str(d.get(k, 0)) for k in columns))
        Console().print(table)


@click.command()
@click.option("--date", "day", help="Edition date (YYYY-MM-DD); default today.")
@click.option("--test-to", multiple=True, help="Send a marked test to these addresses only.")
@click.option("--dry-run", is_flag=True, help="Build and check; send nothing.")
@click.option("--force", is_flag=True, help="Send even if late or failing preflight.")
@click.option("--reason", default="", help="Why --force was needed (logged).")
@click.option("--connections", type=int, help="Parallel transport connections.")
@click.option("--no-collect", is_flag=True, help="Do not fetch the feed first.")
@click.option("--subject-test", is_flag=True,
              help="Send only the subject test's groups (test_minutes before send_time); "
                   "the send at send_time decides it. Nothing to do when none is planned.")
@kind_option
@click.pass_context
@handle_errors
def send(ctx: click.Context, day: str | None, test_to: tuple[str, ...], dry_run: bool,
         force: bool, reason: str, connections: int | None, no_collect: bool,
         subject_test: bool, kind: str) -> None:
    """Collect, build and send the edition for a date, exactly once per subscriber."""
    from mailer.preflight import spamassassin

    # SpamAssassin loads its rules while this process starts and the edition is collected
    # and built: the preflight check then waits for its scan alone (a test send has none).
    warm = (nullcontext() if test_to
            else spamassassin.warmed(spamassassin.configured_command(get_settings(ctx))))
    with warm:
        app = get_app(ctx)
        from mailer.dbretry import outage_as_error
        from mailer.pipeline import run_send

        if force and not reason and not test_to and not dry_run:
            fail("--force needs --reason \"...\" (it is logged on the edition)")
        if not test_to and not dry_run:
            _note_send(app)
        update, stop = _progress_printer()
        try:
            # (the dispatch waits out a database restart itself; one before it is one line)
            with outage_as_error("run the send again once it is back"):
                outcome = run_send(app, parse_day(day), dry_run=dry_run, force=force,
                                   reason=reason, test_to=test_to,
                                   collect_first=not no_collect, on_progress=update,
                                   connections=connections, kind=kind,
                                   test_phase=subject_test)
        finally:
            stop()
    _summary(outcome)
    if not outcome.ok:
        fail(outcome.message, EXIT_STOPPED)
    click.echo(outcome.message)


def _note_send(app: App) -> None:
    """Leave the trace by which the dashboard and `mailer status` know cron is at work."""
    from mailer import triggers
    from mailer.dbretry import is_outage

    try:
        triggers.note_send(app.sessions, app.clock.now())
    except Exception as exc:  # the send itself reports a database that is down
        if not is_outage(exc):
            raise


@click.command()
@click.option("--once", is_flag=True, help="Exit when no edition is sending.")
@click.option("--poll", default=5.0, show_default=True, help="Seconds between looks for work.")
@click.option("--connections", type=int, help="Parallel transport connections.")
@click.pass_context
@handle_errors
def worker(ctx: click.Context, once: bool, poll: float, connections: int | None) -> None:
    """An extra send worker: joins any edition that is sending (PostgreSQL: from any machine).
    It waits out a database restart of up to db_outage_grace seconds (exit status 75 past it)."""
    from sqlalchemy import select

    from mailer.dbretry import OutageRetry, outage_as_error
    from mailer.dispatch import DispatchBusy, Dispatcher
    from mailer.models import SENDING, Edition

    app = get_app(ctx)
    click.echo(f"worker {os.getpid()} started")
    outages = OutageRetry(app.settings.db_outage_grace)  # (one per process: one log line)

    def sending() -> list[int]:
        with app.sessions() as session:
            return list(session.scalars(select(Edition.id).where(Edition.state == SENDING)))

    while True:
        ids = outages.run(sending)
        for edition_id in ids:
            try:
                with outage_as_error("start the worker again once it is back"):
                    progress = Dispatcher(app, edition_id, connections=connections,
                                          worker_tag="worker", outages=outages).run()
            except DispatchBusy as exc:
                click.echo(str(exc))
                continue
            click.echo(f"edition {edition_id}: this worker sent {progress.tally.sent}, "
                       f"failed {progress.tally.failed}")
        if once and not ids:
            return
        if once:
            continue
        time.sleep(poll)


DEMO_STAFF = "demo@example.org"


@click.command()
@click.option("--dir", "workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("demo-output"), show_default=True,
              help="Where the database, feed, outbox and preview go.")
@click.option("--serve", "serve_after", is_flag=True,
              help="Build the edition without sending it, then open the staff console on "
                   "the demo database (a staff password is printed once).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="With --serve: the port on 127.0.0.1.")
@click.pass_context
@handle_errors
def demo(ctx: click.Context, workdir: Path, serve_after: bool, port: int) -> None:
    """A self-contained run: bundled sample feed, demo subscribers, file outbox.

    With --serve, the edition is built and checked but not sent, and the web app starts on
    the demo database: sign in to the console, look the edition over and press Send now."""
    from mailer.app import App
    from mailer.clock import Clock
    from mailer.config import load_settings
    from mailer.db import init_db
    from mailer.pipeline import run_send
    from mailer.preflight import spamassassin
    from mailer.sample import SAMPLE_SUBSCRIBERS, write_sample_feed
    from mailer.subscribers import add

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    clock = Clock.from_env()
    base = load_settings()
    # As `mailer send` does: SpamAssassin loads its rules while the demo is set up and the
    # edition built.
    with spamassassin.warmed(spamassassin.configured_command(base)):
        local_now = clock.local_now(base.tz)
        # The demo edition is due "now", so the sample articles (dated in the hours before) are in
        # its window whatever the time of day.
        send_at = (local_now + timedelta(minutes=1)).strftime("%H:%M")
        run_id = datetime.now().strftime("%Y%m%d%H%M%S")
        db_path = workdir / f"demo-{run_id}.db"
        settings = base.replace(
            database_url=f"sqlite:///{db_path}",
            feed_url=str(workdir / "sample-feed.xml"),
            dsn=f"file://{workdir / 'outbox' / run_id}",
            secret_key=base.secret_key or "demo-secret-key-not-for-production",
            send_time=send_at, send_days="mon-sun",
            **({"base_url": f"http://127.0.0.1:{port}", "late_send_hours": 23.0}
               if serve_after else {}),
        )
        write_sample_feed(Path(settings.feed_url), clock.now())
        app = App.create(settings, clock=clock)
        init_db(app.engine)
        with app.sessions.begin() as session:
            for email, name in SAMPLE_SUBSCRIBERS:
                add(session, email, name=name, source="demo")
        outcome = run_send(app, clock.today(settings.tz), dry_run=serve_after)
    outbox = Path(settings.dsn.removeprefix("file://"))
    preview_path = workdir / f"preview-{run_id}.html"
    with app.sessions() as session:
        from mailer.edition import get_edition

        edition = get_edition(session, clock.today(settings.tz))
        if edition is not None:
            preview_path.write_text(edition.archive_html or edition.html, encoding="utf-8")
    click.echo(outcome.message)
    click.echo(f"messages:  {outbox} ({len(list(outbox.glob('*.eml')))} .eml files)")
    click.echo(f"preview:   {preview_path}")
    click.echo(f"database:  {db_path}")
    if not outcome.ok:
        fail(outcome.message)
    if serve_after:
        _serve_demo(app, port)


def _serve_demo(app: App, port: int) -> None:
    """The console on the demo database, with an admin account made for this run."""
    from waitress import serve as waitress_serve

    from mailer.accounts import ADMIN, add_staff, new_password
    from mailer.web import create_app

    password = new_password()
    with app.sessions.begin() as session:
        add_staff(session, DEMO_STAFF, password, role=ADMIN, at=app.clock.now())
    click.echo(f"\nstaff console: http://127.0.0.1:{port}/staff/  sign in as {DEMO_STAFF} "
               f"with the password {password} (shown once)\n"
               "today's edition is built and checked, not sent: open it and press Send now "
               "(the messages go to the outbox above). Ctrl-C stops the server.")
    waitress_serve(create_app(app), host="127.0.0.1", port=port, threads=4,
                   ident="labourlist-mailer-demo")
