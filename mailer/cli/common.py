"""What every command module shares: the lazily built `App`, the one-line error exit and the
exit statuses. The root group (`mailer.cli`) and the command modules import this module; it
imports none of them.

Commands import the domain modules they need inside the command, not here: `mailer --help` and
a command's start-up then load only what that command uses (SQLAlchemy, the web app, rich), and
`mailer send` starts SpamAssassin that much sooner (docs/sending.md has the measurement).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import click

from mailer.errors import DatabaseOutage, FeedError, MailerError, PreflightError, one_line

if TYPE_CHECKING:
    from mailer.app import App
    from mailer.config import Settings

F = TypeVar("F", bound=Callable[..., Any])


class Obj:
    """Lazily-built application: `--help` and config errors never touch the database."""

    def __init__(self) -> None:
        self._app: App | None = None
        self._settings: Settings | None = None
        self.schema_checked = False

    @property
    def settings(self) -> Settings:
        """The settings from the file and environment, without the database (and its imports)
        or the staff overrides in it."""
        if self._settings is None:
            from mailer.config import load_settings  # not for `--help`: see the module docstring

            self._settings = load_settings()
        return self._settings

    @property
    def app(self) -> App:
        if self._app is None:
            from mailer.app import App  # SQLAlchemy and the database: only when a command needs it

            self._app = App.create(self.settings)
        return self._app


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


# Distinct exit statuses, so cron wrappers and monitoring can tell failures apart.
EXIT_LATE, EXIT_FEED, EXIT_PREFLIGHT, EXIT_STOPPED = 3, 4, 5, 6
# sysexits.h EX_TEMPFAIL, as the ingest commands use it: the database went away and stayed
# away past db_outage_grace; nothing is lost, the same command resumes once it is back.
EXIT_DATABASE_OUTAGE = 75


def exit_code_for(exc: MailerError) -> int:
    # Lazy: mailer.pipeline pulls in SQLAlchemy and the transports, which `mailer --help`
    # must not load; a LateSend can only come from a command that has imported it already.
    from mailer.pipeline import LateSend

    if isinstance(exc, DatabaseOutage):
        return EXIT_DATABASE_OUTAGE
    if isinstance(exc, LateSend):
        return EXIT_LATE
    if isinstance(exc, FeedError):
        return EXIT_FEED
    if isinstance(exc, PreflightError):
        return EXIT_PREFLIGHT
    return 1


def handle_errors(func: F) -> F:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MailerError as exc:
            fail(one_line(exc), exit_code_for(exc))
        return None

    return cast(F, wrapper)


def get_app(ctx: click.Context, *, schema: bool = True) -> App:
    """The application, its database checked to have the tables `mailer init` makes (a
    one-line error otherwise, and a SQLite file that is not there is not created). Only the
    commands that make the database, or report on it, pass ``schema=False``."""
    obj: Obj = ctx.ensure_object(Obj)
    app = obj.app
    if schema and not obj.schema_checked:
        from mailer.db import require_schema  # SQLAlchemy: see `Obj.app`

        require_schema(app.engine)
        obj.schema_checked = True
    return app


def get_settings(ctx: click.Context) -> Settings:
    obj: Obj = ctx.ensure_object(Obj)
    return obj.settings


def kind_option(func: F) -> F:
    """`--kind daily|weekly`: which edition of a date a command means."""
    return click.option("--kind", type=click.Choice(["daily", "weekly"]), default="daily",
                        show_default=True,
                        help="The daily round-up or the weekly digest.")(func)
