"""A throw-away PostgreSQL database per test, on the real server (MAILER_TEST_POSTGRES_URL).

Each test gets its own database, so concurrent test runs never see each other's rows.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


@functools.cache
def base_url() -> str | None:
    """The server's URL, or None when it cannot be reached (asked once per run)."""
    url = os.environ.get("MAILER_TEST_POSTGRES_URL", DEFAULT)
    if url.lower() in ("", "0", "off", "none"):
        return None
    try:
        with psycopg.connect(url, connect_timeout=3):
            return url
    except psycopg.OperationalError:
        return None


_TEMPLATE: str | None = None


def migrated_template() -> str:
    """The name of a database migrated to the newest revision, made once per test run and
    copied for each test that wants one (`fresh_database(migrated=True)`): a copy takes a
    fraction of running every migration again. Dropped when the run ends (`drop_template`)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        from mailer.db import init_db, make_engine  # noqa: PLC0415 - only with PostgreSQL

        url = base_url()
        if url is None:
            raise RuntimeError("no PostgreSQL")
        name = f"mailer_tmpl_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        engine = make_engine(f"{url.rsplit('/', 1)[0]}/{name}")
        try:
            init_db(engine)
        finally:
            engine.dispose()  # (a template is copied only while nobody is connected to it)
        _TEMPLATE = name
    return _TEMPLATE


def drop_template() -> None:
    global _TEMPLATE
    url = base_url()
    if _TEMPLATE is None or url is None:
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{_TEMPLATE}" WITH (FORCE)')
    _TEMPLATE = None


@contextmanager
def fresh_database(*, migrated: bool = False) -> Iterator[str]:
    """A new database for one test: empty, or `migrated` (a copy of `migrated_template`)."""
    url = base_url()
    if url is None:
        raise RuntimeError("no PostgreSQL")
    name = f"mailer_t_{uuid.uuid4().hex[:12]}"
    template = f' TEMPLATE "{migrated_template()}"' if migrated else ""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{template}')
    prefix = url.rsplit("/", 1)[0]
    try:
        yield f"{prefix}/{name}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
