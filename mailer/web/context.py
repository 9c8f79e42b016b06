"""The `App` behind the current request, for every blueprint.

It lives below `mailer.web` (the factory) so the views can reach it without importing the
module that imports them: `create_app` stores the `App` under `EXTENSION_KEY`, the views read it
back with `mailer_app()`.
"""

from __future__ import annotations

from flask import current_app

from mailer.app import App

EXTENSION_KEY = "mailer"


def mailer_app() -> App:
    """The `App` behind the current request (settings, clock, sessions, secret key)."""
    app: App = current_app.extensions[EXTENSION_KEY]
    return app
