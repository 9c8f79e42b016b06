"""Keys of the public API: made once, kept as a hash, limited to scopes, revocable.

A key is 32 random bytes, so its SHA-256 is enough to store (a slow password hash protects
guessable secrets; nobody guesses 256 bits), and a presented key is found by its hash in one
indexed lookup. The key itself is shown once, when it is made; lists show its first
characters (`prefix`) so staff can tell keys apart. Revoking is immediate: the next request
with the key is refused. `last_used_at` is written at most once a minute per key, so a busy
integration does not turn every read into a write.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailer.errors import MailerError
from mailer.models import ApiKey

SCOPES = ("subscribers:read", "subscribers:write", "editions:read", "editions:send",
          "stats:read")
KEY_PREFIX = "llm_"
USED_EVERY = timedelta(minutes=1)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,29}$")


class ApiKeyError(MailerError, ValueError):
    """The key cannot be made or changed as asked; the message says why."""


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def parse_scopes(raw: Sequence[str]) -> list[str]:
    """The scopes asked for (repeated or comma-separated), in their canonical order."""
    names = {name.strip() for item in raw for name in item.split(",") if name.strip()}
    unknown = sorted(names - set(SCOPES))
    if unknown:
        raise ApiKeyError(f"unknown scope {unknown[0]!r}: use {', '.join(SCOPES)}")
    if not names:
        raise ApiKeyError(f"give a key at least one scope ({', '.join(SCOPES)})")
    return [scope for scope in SCOPES if scope in names]


def create(session: Session, name: str, scopes: Sequence[str], *, actor: str,
           now: datetime) -> tuple[ApiKey, str]:
    """A new key: (its row, the key to show once)."""
    name = name.strip()
    if not _NAME.match(name):
        raise ApiKeyError("a key's name is 1 to 30 letters, digits, spaces, dots, dashes or "
                        "underscores, starting with a letter or digit")
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise ApiKeyError(f"a key named {name!r} exists already (revoked keys keep their name)")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, prefix=key[:12], key_hash=_digest(key),
                 scopes=parse_scopes(scopes), created_by=actor[:320], created_at=now)
    session.add(row)
    session.flush()
    return row, key


def listing(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke(session: Session, name: str, *, now: datetime) -> ApiKey:
    row = session.scalar(select(ApiKey).where(ApiKey.name == name.strip()))
    if row is None:
        raise ApiKeyError(f"no API key named {name!r}")
    if row.revoked_at is None:
        row.revoked_at = now
    return row


def authenticate(session: Session, presented: str, *, now: datetime) -> ApiKey | None:
    """The live key `presented` is, or None; notes its use (at most once a minute)."""
    if not presented.startswith(KEY_PREFIX) or len(presented) > 200:
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == _digest(presented)))
    if row is None or row.revoked_at is not None:
        return None
    if row.last_used_at is None or now - row.last_used_at >= USED_EVERY:
        session.execute(update(ApiKey).where(ApiKey.id == row.id)
                        .values(last_used_at=now).execution_options(synchronize_session=False))
        row.last_used_at = now
    return row
