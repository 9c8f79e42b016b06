"""`mailer`: the command line. Thin commands over the domain modules.

The root group builds one `App` (settings, clock, database) into ctx.obj; every command turns a
`MailerError` into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from mailer.errors import MailerError, one_line

F = TypeVar("F", bound=Callable[..., Any])


class Obj:
    """Lazily-built application: `--help` and config errors never touch the database."""

    def __init__(self) -> None:
        self._app: Any = None
        self._settings: Any = None
        self.schema_checked = False

    @property
    def settings(self) -> Any:
        """The settings from the file and environment, without the database (and its imports)
        or the staff overrides in it."""
        if self._settings is None:
            from mailer.config import load_settings

            self._settings = load_settings()
        return self._settings

    @property
    def app(self) -> Any:
        if self._app is None:
            from mailer.app import App

            self._app = App.create(self.settings)
        return self._app


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


# Distinct exit statuses, so cron wrappers and monitoring can tell failures apart.
EXIT_LATE, EXIT_FEED, EXIT_PREFLIGHT, EXIT_STOPPED = 3, 4, 5, 6
# sysexits.h EX_TEMPFAIL, as the ingest commands use it: the database went away and stayed
# away past db_outage_grace; nothing is lost, the same command resumes once it is back.
EXIT_DATABASE_OUTAGE = 75


def exit_code_for(exc: MailerError) -> int:
    from mailer.errors import DatabaseOutage, FeedError, PreflightError

    if isinstance(exc, DatabaseOutage):
        return EXIT_DATABASE_OUTAGE
    if type(exc).__name__ == "LateSend":
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

    return wrapper  # type: ignore[return-value]


def get_app(ctx: click.Context, *, schema: bool = True) -> Any:
    """The application, its database checked to have the tables `mailer init` makes (a
    one-line error otherwise, and a SQLite file that is not there is not created). Only the
    commands that make the database, or report on it, pass ``schema=False``."""
    obj: Obj = ctx.ensure_object(Obj)
    app = obj.app
    if schema and not obj.schema_checked:
        from mailer.db import require_schema

        require_schema(app.engine)
        obj.schema_checked = True
    return app


def get_settings(ctx: click.Context) -> Any:
    obj: Obj = ctx.ensure_object(Obj)
    return obj.settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail to stderr.")
@click.version_option(package_name="labourlist-mailer")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """LabourList's daily round-up mailer.

    Settings come from config/mailer.toml (or the file named by MAILER_CONFIG) and MAILER_<KEY>
    environment variables, e.g. MAILER_DATABASE_URL, MAILER_FEED_URL, MAILER_DSN.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.ensure_object(Obj)


def main() -> None:
    try:
        cli(prog_name="mailer")
    except MailerError as exc:  # raised while building the app (bad settings)
        fail(str(exc))


def _register_commands() -> None:
    """Import every module of this package: each one adds its commands to `cli`."""
    import importlib
    import pkgutil

    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")


_register_commands()
