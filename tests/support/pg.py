"""A throw-away PostgreSQL database per test, on the real server (MAILER_TEST_POSTGRES_URL).

Each test gets its own database, so concurrent test runs never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def base_url() -> str | None:
    url = os.environ.get("MAILER_TEST_POSTGRES_URL", DEFAULT)
    if url.lower() in ("", "0", "off", "none"):
        return None
    try:
        with psycopg.connect(url, connect_timeout=3):
            return url
    except psycopg.OperationalError:
        return None


@contextmanager
def fresh_database() -> Iterator[str]:
    url = base_url()
    if url is None:
        raise RuntimeError("no PostgreSQL")
    name = f"mailer_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    prefix = url.rsplit("/", 1)[0]
    try:
        yield f"{prefix}/{name}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
