"""mailer editions list|show|stats|pause|resume|cancel|requeue-ambiguous.

Domain modules are imported inside the commands, so `mailer --help` and each command load only
what they use (start-up time: see `mailer.cli.common`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import click

from mailer.cli.common import fail, get_app, handle_errors, kind_option
from mailer.cli.core import parse_day

if TYPE_CHECKING:
    from sqlalchemy import CursorResult

    from mailer.app import App
    from mailer.models import Edition


@click.group()
def editions() -> None:
    """Inspect and control editions (safe while workers run)."""


def _load(app: App, day: str, kind: str = "daily") -> Edition:
    from mailer.ledger import load_edition

    the_day = parse_day(day)
    edition = load_edition(app.sessions, the_day, kind) if the_day else None
    if edition is None:
        fail(f"no {_name(day, kind)}")
    return edition


def _name(day: object, kind: str) -> str:
    return f"{'weekly ' if kind == 'weekly' else ''}edition {day}"


@editions.command("list")
@click.option("--limit", default=30, show_default=True)
@click.pass_context
@handle_errors
def list_cmd(ctx: click.Context, limit: int) -> None:
    """The latest editions with their counts."""
    from mailer import ledger
    from mailer.edition import list_editions

    app = get_app(ctx)
    with app.sessions() as session:
        for ed in list_editions(session, limit):
            c = ledger.counts(session, ed.id)
            click.echo(f"{ed.edition_date}  {ed.kind:<6} {ed.state:<9} sent {c['sent']:>7}  "
                       f"failed {c['failed']:>5}  queued {c['queued'] + c['claimed']:>7}  "
                       f"unknown {c['ambiguous']:>3}  withdrawn {c['withdrawn']:>4}  "
                       f"{ed.subject}")


@editions.command("show")
@click.argument("day")
@kind_option
@click.pass_context
@handle_errors
def show_cmd(ctx: click.Context, day: str, kind: str) -> None:
    """One edition: window, articles, ledger counts."""
    from mailer import ledger
    from mailer.edition import edition_articles

    app = get_app(ctx)
    ed = _load(app, day, kind)
    tz = app.settings.tz
    with app.sessions() as session:
        c = ledger.counts(session, ed.id)
        articles = edition_articles(session, ed.id)
    click.echo(f"{_name(ed.edition_date, kind)}: {ed.state}  subject: {ed.subject}")
    click.echo(f"window: {ed.window_start.astimezone(tz):%Y-%m-%d %H:%M} to "
               f"{ed.window_end.astimezone(tz):%Y-%m-%d %H:%M %Z}")
    click.echo("ledger: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    if ed.forced_reason:
        click.echo(f"forced: {ed.forced_reason}")
    for a in articles:
        click.echo(f"  [{a.section}] {a.title} ({a.published_at.astimezone(tz):%d %b %H:%M})")


def _transition(app: App, day: str, kind: str, control: Callable[..., object]) -> bool:
    """Apply one of `mailer.editions_control`'s conditional state changes to DAY's edition."""
    ed = _load(app, day, kind)
    return bool(control(app.sessions, ed.id))


@editions.command("pause")
@click.argument("day")
@kind_option
@click.pass_context
@handle_errors
def pause_cmd(ctx: click.Context, day: str, kind: str) -> None:
    """Stop claiming new recipients; messages in flight finish and are recorded."""
    from mailer import editions_control

    app = get_app(ctx)
    if not _transition(app, day, kind, editions_control.pause):
        fail(f"{_name(day, kind)} is not sending")
    click.echo(f"{_name(day, kind)} paused")


@editions.command("resume")
@click.argument("day")
@click.option("--detach", is_flag=True, help="Only mark it sending; let workers do the rest.")
@kind_option
@click.pass_context
@handle_errors
def resume_cmd(ctx: click.Context, day: str, detach: bool, kind: str) -> None:
    """Resume a paused edition and send the rest from this process."""
    from mailer import editions_control
    from mailer.pipeline import run_send

    app = get_app(ctx)
    if not _transition(app, day, kind, editions_control.resume):
        fail(f"{_name(day, kind)} is not paused")
    click.echo(f"{_name(day, kind)} resumed")
    if not detach:
        outcome = run_send(app, parse_day(day), collect_first=False, kind=kind)
        if not outcome.ok:
            fail(outcome.message)
        click.echo(outcome.message)


@editions.command("cancel")
@click.argument("day")
@kind_option
@click.pass_context
@handle_errors
def cancel_cmd(ctx: click.Context, day: str, kind: str) -> None:
    """Cancel: nobody else receives it; what was sent stays recorded."""
    from mailer import editions_control

    app = get_app(ctx)
    if not _transition(app, day, kind, editions_control.cancel):
        fail(f"{_name(day, kind)} cannot be cancelled in its state")
    click.echo(f"{_name(day, kind)} cancelled")


@editions.command("requeue-ambiguous")
@click.argument("day")
@kind_option
@click.pass_context
@handle_errors
def requeue_cmd(ctx: click.Context, day: str, kind: str) -> None:
    """Re-send rows whose outcome is unknown (connection lost after the data was sent).

    Only after checking the server's logs: these recipients may already have the message.
    """
    from sqlalchemy import update

    from mailer.models import AMBIGUOUS, QUEUED, SENDING, SENT, Delivery, Edition

    app = get_app(ctx)
    ed = _load(app, day, kind)
    with app.sessions.begin() as session:
        result = session.execute(
            update(Delivery).where(Delivery.edition_id == ed.id, Delivery.state == AMBIGUOUS)
            .values(state=QUEUED, claimed_by="", next_attempt_at=None)
        )
        n = cast("CursorResult[Any]", result).rowcount  # an UPDATE's result has a rowcount
        if n:
            session.execute(update(Edition).where(Edition.id == ed.id, Edition.state == SENT)
                            .values(state=SENDING))
    click.echo(f"requeued {n} messages; run `mailer send --date {day} --kind {kind}` "
               "to send them")


@editions.command("stats")
@click.argument("day")
@click.option("--json", "as_json", is_flag=True, help="The figures as JSON (for scripts).")
@kind_option
@click.pass_context
@handle_errors
def stats_cmd(ctx: click.Context, day: str, as_json: bool, kind: str) -> None:
    """What readers clicked in an edition: stories ranked by readers' clicks, the donate and
    sign-up clicks, what was filtered as scanners (docs/clicks.md), and the spam complaints
    it drew (docs/operations.md)."""
    import json

    from mailer.clicks.report import edition_stats

    app = get_app(ctx)
    edition = _load(app, day, kind)
    with app.sessions() as session:
        figures = edition_stats(session, edition)
    if as_json:
        click.echo(json.dumps(figures, indent=2, ensure_ascii=False))
        return
    for line in _stats_lines(figures):
        click.echo(line)


def _subject_test_lines(test: dict[str, Any] | None) -> list[str]:
    """The subject test in a few lines (docs/subject-test.md): each group, and the decision."""
    if not test:
        return []
    if test.get("state") == "not-run":
        return [f"subject test: not run ({test.get('reason', '')})"]
    lines = [f"subject test ({test.get('state')}):"]
    for g in test.get("groups", []):
        lines.append(f"  {g['group']}. {g['clickers']} of {g['sent']} clicked "
                     f"({g['rate'] * 100:.2f}%): {g['subject']}")
    if test.get("state") == "decided":
        lines.append(f"  winner {test['winner']}: {test['reason']}")
    return lines


def _stats_lines(s: dict[str, Any]) -> list[str]:
    basis = "readers who clicked" if s["click_rate_basis"] == "unique_clickers" else "clicks"
    filtered = ", ".join(f"{why} {n}" for why, n in s["filtered_by"].items()) or "none"
    lines = [
        f"edition {s['edition']} ({s['state']}, click tracking {s['click_tracking']}): "
        f"{s['subject']}",
        f"delivered {s['delivered']}; clicks: {s['clicks_total']} in all, "
        f"{s['clicks_human']} by readers, "
        f"{s['clicks_filtered']} filtered ({filtered}); click rate "
        f"{s['click_rate'] * 100:.1f}% ({basis} / delivered)",
        f"donate clicks {s['donate_clicks_human']}; sign-up clicks "
        f"{s['signup_clicks_human']}; gifts {s['gifts']['count']}"
        + "".join(f", {amount} {currency}" for currency, amount in
                  s["gifts"]["amounts"].items()),
    ]
    lines.append(_complaints_line(s))
    if "opens" in s:
        lines.append(f"opens {s['opens']} (unreliable: image proxies and blocking)")
    lines += _subject_test_lines(s.get("subject_test"))
    lines.append(f"{'readers':>8} {'filtered':>8}  link")
    lines += [f"{row['clicks_human']:>8} {row['clicks_filtered']:>8}  {row['kind']}: "
              f"{row['title'] or row['url']}" for row in s["links"]]
    return lines


def _complaints_line(s: dict[str, Any]) -> str:
    """The spam complaints, with what their rate means for Gmail and Yahoo when it is high."""
    from mailer.departures import complaint_words

    words = complaint_words(s["complaint_level"])
    return (f"spam complaints {s['complaints']} ({s['complaint_rate'] * 100:.2f}% of delivered"
            + (f", {words})" if words else ")"))
