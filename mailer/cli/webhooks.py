"""mailer webhooks add|list|enable|disable|remove|deliveries|send-again|deliver: outgoing
webhooks (docs/webhooks.md).

A receiver's signing secret is printed once, when it is added. The scheduler delivers the
outbox every `webhook_every_seconds`; `deliver` does it now (for cron without the scheduler,
or by hand). Changes are written to the audit log as done by ``cli:<user>``.
"""

from __future__ import annotations

import click

from mailer.cli.common import get_app, handle_errors
from mailer.cli.staff import _actor


@click.group("webhooks")
def webhooks() -> None:
    """Outgoing webhooks to other systems.

    Receivers of subscriber and edition events, signed per Standard Webhooks."""


@webhooks.command("add")
@click.argument("url")
@click.option("--event", "events", multiple=True,
              help="An event to send (repeat; default all): subscriber.created, "
                   "subscriber.confirmed, subscriber.updated, subscriber.unsubscribed, "
                   "subscriber.bounced, subscriber.complained, edition.sent, edition.failed.")
@click.option("--description", default="", help="What the receiver is (shown in lists).")
@click.pass_context
@handle_errors
def add_cmd(ctx: click.Context, url: str, events: tuple[str, ...], description: str) -> None:
    """Register a receiver; its signing secret is printed once."""
    from mailer import audit
    from mailer.outgoing import endpoints

    app = get_app(ctx)
    with app.sessions.begin() as session:
        row = endpoints.add(session, url, events, app.settings, description=description,
                            now=app.clock.now())
        audit.record(session, _actor(), "webhook-added", f"webhook:{row.id}",
                     f"{row.url} ({', '.join(row.events)})", at=app.clock.now())
        endpoint_id, secret, names = row.id, row.secret, ", ".join(row.events)
    click.echo(secret)
    click.echo(f"webhook {endpoint_id} -> {url} ({names}): verify with this secret; it "
               "cannot be shown again.", err=True)


@webhooks.command("list")
@click.pass_context
@handle_errors
def list_cmd(ctx: click.Context) -> None:
    """Every receiver, with its state and failures."""
    from mailer.outgoing import endpoints

    app = get_app(ctx)
    with app.sessions() as session:
        rows = endpoints.listing(session)
    if not rows:
        click.echo("no webhook endpoints")
    for row in rows:
        state = "enabled" if row.enabled else f"DISABLED ({row.disabled_reason or 'by staff'})"
        failing = (f", failing since {row.failing_since:%Y-%m-%d %H:%M}Z"
                   if row.failing_since else "")
        click.echo(f"{row.id:>3}  {row.url}  {', '.join(row.events)}  {state}{failing}")


def _switch(ctx: click.Context, endpoint_id: int, enabled: bool) -> None:
    from mailer import audit
    from mailer.outgoing import endpoints

    app = get_app(ctx)
    with app.sessions.begin() as session:
        row = endpoints.set_enabled(session, endpoint_id, enabled)
        audit.record(session, _actor(), "webhook-enabled" if enabled else "webhook-disabled",
                     f"webhook:{row.id}", row.url, at=app.clock.now())
    click.echo(f"webhook {endpoint_id} {'enabled' if enabled else 'disabled'}")


@webhooks.command("enable")
@click.argument("endpoint_id", type=int)
@click.pass_context
@handle_errors
def enable_cmd(ctx: click.Context, endpoint_id: int) -> None:
    """Turn a receiver back on (after it was disabled for failing)."""
    _switch(ctx, endpoint_id, True)


@webhooks.command("disable")
@click.argument("endpoint_id", type=int)
@click.pass_context
@handle_errors
def disable_cmd(ctx: click.Context, endpoint_id: int) -> None:
    """Stop sending to a receiver (events keep queueing for it)."""
    _switch(ctx, endpoint_id, False)


@webhooks.command("remove")
@click.argument("endpoint_id", type=int)
@click.pass_context
@handle_errors
def remove_cmd(ctx: click.Context, endpoint_id: int) -> None:
    """Remove a receiver and its queued events."""
    from mailer import audit
    from mailer.outgoing import endpoints

    app = get_app(ctx)
    with app.sessions.begin() as session:
        url = endpoints.get(session, endpoint_id).url
        endpoints.remove(session, endpoint_id)
        audit.record(session, _actor(), "webhook-removed", f"webhook:{endpoint_id}", url,
                     at=app.clock.now())
    click.echo(f"webhook {endpoint_id} removed")


@webhooks.command("deliveries")
@click.argument("endpoint_id", type=int)
@click.option("--limit", type=int, default=20, show_default=True)
@click.pass_context
@handle_errors
def deliveries_cmd(ctx: click.Context, endpoint_id: int, limit: int) -> None:
    """A receiver's recent deliveries, newest first."""
    from mailer.outgoing import endpoints

    app = get_app(ctx)
    with app.sessions() as session:
        endpoints.get(session, endpoint_id)
        rows = endpoints.recent(session, endpoint_id, limit)
    for row in rows:
        answer = f"HTTP {row.last_status}" if row.last_status else (row.last_error or "-")
        click.echo(f"{row.id:>6}  {row.created_at:%Y-%m-%d %H:%M:%S}Z  {row.event_type:<24} "
                   f"{row.state:<9} tries {row.attempts}  {answer}  {row.message_id}")


@webhooks.command("send-again")
@click.argument("delivery_id", type=int)
@click.pass_context
@handle_errors
def send_again_cmd(ctx: click.Context, delivery_id: int) -> None:
    """Queue one delivery again now (same event id)."""
    from mailer import audit
    from mailer.outgoing import endpoints

    app = get_app(ctx)
    with app.sessions.begin() as session:
        row = endpoints.send_again(session, delivery_id, now=app.clock.now())
        audit.record(session, _actor(), "webhook-resent", f"webhook:{row.endpoint_id}",
                     f"delivery {row.id} ({row.event_type}, {row.message_id})",
                     at=app.clock.now())
    click.echo(f"delivery {delivery_id} queued again")


@webhooks.command("deliver")
@click.option("--max-seconds", type=float, default=60.0, show_default=True,
              help="Stop after this long even if more is due.")
@click.pass_context
@handle_errors
def deliver_cmd(ctx: click.Context, max_seconds: float) -> None:
    """Deliver what the outbox holds now (the scheduler does this every few seconds)."""
    from mailer.outgoing.delivery import drain

    report = drain(get_app(ctx), max_seconds=max_seconds)
    click.echo(f"delivered {report.delivered}, failed attempts {report.failed_attempts}, "
               f"given up {report.given_up}"
               + (f", disabled {', '.join(report.disabled)}" if report.disabled else ""))
