"""mailer serve: the web app (public pages, webhooks, staff console) under waitress.

Domain modules are imported inside the commands, so `mailer --help` and each command load only
what they use (start-up time: see `mailer.cli.common`).
"""

from __future__ import annotations

from typing import Any

import click

from mailer.cli.common import get_app, handle_errors
from mailer.config import Settings


def waitress_options(settings: Settings, threads: int) -> dict[str, Any]:
    """How `mailer serve` runs waitress. Waitress clears X-Forwarded-For and friends unless
    told not to; behind `trusted_proxies` proxies they must reach the app, whose ProxyFix
    trusts only that many hops (`mailer.web.create_app`), or every reader would seem to come
    from the proxy (one fingerprint, one throttle for everyone). With no proxy they are
    cleared: a client could otherwise claim any address."""
    return {"threads": threads, "ident": "labourlist-mailer",
            "clear_untrusted_proxy_headers": settings.trusted_proxies == 0}


@click.command()
@click.option("--host", default=None,
              help="Interface to listen on (default: setting host, env MAILER_HOST).")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="TCP port (default: setting port, env MAILER_PORT).")
@click.option("--threads", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Worker threads serving requests.")
@click.pass_context
@handle_errors
def serve(ctx: click.Context, host: str | None, port: int | None, threads: int) -> None:
    """Run the web app with waitress, a production WSGI server.

    Put it behind a TLS-terminating proxy and set MAILER_BASE_URL to the public https URL:
    links in emails use it, and cookies are marked Secure when it is https.
    """
    # Only this command needs the web app and waitress (Flask, every view): see the docstring.
    from waitress import serve as waitress_serve

    from mailer.web import CLICKS_KEY, create_app

    app = get_app(ctx)
    host = host or app.settings.host
    port = port or app.settings.port
    web = create_app(app)
    clicks = web.extensions[CLICKS_KEY]
    # Recent editions' links in memory now, so their redirects work even if the database
    # goes away before anyone clicks (mailer.clicks.store).
    loaded = clicks.preload(app.clock.now().date())
    click.echo(f"serving on http://{host}:{port}/ (public URL {app.settings.base_url}; "
               f"{loaded} editions' links loaded)", err=True)
    try:
        waitress_serve(web, host=host, port=port, **waitress_options(app.settings, threads))
    finally:
        clicks.recorder.close()  # write the last second's clicks
