"""Engine and sessions; `init_db` runs the Alembic migrations (idempotent)."""

from __future__ import annotations

import secrets
import sqlite3
import threading
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, CursorResult, Engine, Result, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mailer.errors import ConfigError, DatabaseUnreachable, MailerError
from mailer.models import Meta
from mailer.urls import sqlite_file

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain postgresql:// URLs (SQLAlchemy would default to psycopg2)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"setting database_url: cannot parse {url!r}") from None
    if parsed.get_backend_name() == "sqlite":
        busy = sqlite_busy_seconds(parsed.query.get("timeout"))
        engine = create_engine(url, connect_args={"timeout": busy})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={round(busy * 1000)}")
            cur.close()
            # Let SQLAlchemy, not the driver, decide when transactions start ...
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Connection) -> None:
            # ... and take the write lock up front: a deferred transaction that reads and then
            # writes can fail with SQLITE_BUSY when another process wrote in between.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


# How long a SQLite statement waits for another process's write lock before it fails with
# "database is locked" (a send then waits on, up to db_outage_grace: mailer/dbretry.py).
SQLITE_BUSY_SECONDS = 30.0


def sqlite_busy_seconds(value: object) -> float:
    """The busy timeout: the URL's `?timeout=` (seconds, as Python's sqlite3 takes it) or 30."""
    if value is None:
        return SQLITE_BUSY_SECONDS
    try:
        seconds = float(value)  # type: ignore[arg-type]  # any value: what float() refuses is caught
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds >= 0:
        raise ConfigError(f"setting database_url: timeout={value!r} is not a number of seconds")
    return seconds


def rowcount(result: Result[Any]) -> int:
    """The number of rows an UPDATE or DELETE run through `Session.execute` matched.

    `Session.execute` is typed to return a `Result` whatever the statement; for an UPDATE or a
    DELETE it returns the `CursorResult` that carries `rowcount` (SQLAlchemy's documentation
    says to cast), so this names that once instead of silencing the checker at each call."""
    return cast("CursorResult[Any]", result).rowcount


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> AlembicConfig:
    # Lazy: Alembic and what it pulls in cost every command, `mailer send` too, about a fifth
    # of a second, and only `mailer init` migrates.
    from alembic.config import Config as AlembicConfig  # noqa: PLC0415

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


_ALEMBIC_LOCK = threading.Lock()


def init_db(engine: Engine) -> str:
    """Create or migrate the schema to the newest revision; safe to run any number of times."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    # Alembic's migration context is module-global: one migration per process at a time.
    with _ALEMBIC_LOCK:
        return _upgrade(engine, cfg)


def _upgrade(engine: Engine, cfg: AlembicConfig) -> str:
    try:
        with engine.begin() as conn:
            if is_postgres(engine):
                # Two `mailer init` at once on one database: serialise them.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(726411)")
            cfg.attributes["connection"] = conn
            from alembic import command  # noqa: PLC0415 - lazy, as alembic_config says

            command.upgrade(cfg, "head")
    except OperationalError as exc:
        raise DatabaseUnreachable(f"database unreachable: {exc.orig}") from None
    return current_revision(engine)


def current_revision(engine: Engine) -> str:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return ""
        row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
        return row[0] if row else ""


def require_schema(engine: Engine) -> None:
    """Refuse to go on without the tables `mailer init` makes. A SQLite file that is not there
    is not opened: connecting would create it, and no command but `mailer init` may."""
    missing = sqlite_file(engine.url.render_as_string(hide_password=False))
    if missing is not None and not missing.exists():
        raise MailerError(f"database not created yet ({missing}): run `mailer init` first")
    try:
        with engine.connect() as conn:
            ok = inspect(conn).has_table("subscribers")
    except OperationalError as exc:
        raise DatabaseUnreachable(f"database unreachable: {exc.orig}") from None
    if not ok:
        raise MailerError("database has no tables yet: run `mailer init` first")


def put_meta(sessions: sessionmaker[Session], key: str, value: str,
             at: datetime | None = None) -> None:
    """Write `key`'s row in its own transaction, made or replaced. Two processes may both find
    it missing (two sends started at one instant on a new database): the one whose insert
    loses updates the other's row."""
    for attempt in (1, 2):
        try:
            with sessions.begin() as session:
                row = session.get(Meta, key)
                if row is None:
                    session.add(Meta(key=key, value=value, **({"updated_at": at} if at else {})))
                else:
                    row.value = value
                    if at is not None:
                        row.updated_at = at
            return
        except IntegrityError:
            if attempt == 2:
                raise


def instance_secret(factory: sessionmaker[Session]) -> str:
    """A random key generated once per database, used when MAILER_SECRET_KEY is not set.

    It lets a fresh install work without configuration while keeping the key out of any file in
    the repository; production sets MAILER_SECRET_KEY.
    """
    with factory.begin() as session:
        row = session.get(Meta, "instance_secret")
        if row is None:
            row = Meta(key="instance_secret", value=secrets.token_urlsafe(32))
            session.add(row)
            try:
                session.flush()
            except Exception:
                session.rollback()
                return instance_secret(factory)
        return row.value
