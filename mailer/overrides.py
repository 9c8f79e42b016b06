"""Settings staff may change from the console, stored in the database over config/mailer.toml.

The newsroom changes the donation appeal, the sender's display name or the send time far more
often than anyone edits a deployed file, so an admin can override a short allow-list of keys
from the settings page. Each override is one `Meta` row (``setting:<key>``). Every value goes
through `Settings.replace` (the same validation as the file and the environment) plus a few
checks of its own, so a bad value is refused with the key named and nothing is stored.

Only the keys in `FIELDS` can ever be overridden: a stray ``setting:database_url`` row, however
it got there, is ignored, and secrets, the database and the transport are not on the list.

`App.create` applies the stored overrides when it builds the settings; a process that is
already running (the scheduler daemon) re-reads them with `refresh`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any, Protocol
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from mailer.asks import parse_asks
from mailer.config import SECRET_KEYS, Settings
from mailer.errors import ConfigError
from mailer.models import Meta
from mailer.subscribers import InvalidAddress, normalise_email
from mailer.urls import sqlite_file

log = logging.getLogger("mailer.overrides")

PREFIX = "setting:"
#: Keys that must never be settable from the web, whatever `FIELDS` says.
FORBIDDEN = frozenset(SECRET_KEYS | {"database_url", "dsn", "base_url", "templates_dir"})


@dataclass(frozen=True)
class Field:
    """One overridable setting as the settings page shows it."""

    key: str
    label: str
    hint: str
    max_length: int
    multiline: bool = False
    #: Shown on the Settings page (False: its own console page edits it).
    on_settings_page: bool = True


FIELDS: tuple[Field, ...] = (
    Field("donation_copy", "Donation appeal",
          "The sentence or two above the donate button.", 600, multiline=True),
    Field("donation_amount", "Suggested amount", "For example “£10 a month”.", 60),
    Field("donation_url", "Donation link", "An https:// address.", 500),
    Field("sender_name", "Sender name",
          "The name readers see in their inbox; the sending address itself stays as "
          "configured (it must match the domain's SPF and DKIM).", 80),
    Field("reply_to", "Reply-to address", "Where readers' replies go.", 320),
    Field("send_time", "Send time", "24-hour clock, in the configured time zone, e.g. 07:00.",
          5),
    Field("send_days", "Send days", "Like mon-fri, or mon,wed,fri.", 60),
    Field("paused_asks", "Paused donation asks",
          "Names of donation asks shown to nobody, separated by commas; empty for none. "
          "The Donation asks page pauses and resumes them too.", 400),
    Field("donation_asks", "Donation asks",
          "The asks tested against each other, as the Donation asks page edits them.", 20000,
          on_settings_page=False),
)
KEYS = tuple(f.key for f in FIELDS)
_BY_KEY = {f.key: f for f in FIELDS}
assert not FORBIDDEN & set(KEYS)

_NAME_BAD = re.compile(r'["<>\\]')


def current_value(settings: Settings, key: str) -> str:
    """The value a field shows for these settings (the sender name is read out of from_addr;
    the donation asks as JSON)."""
    if key == "sender_name":
        return parseaddr(settings.from_addr)[0]
    if key == "donation_asks":
        return json.dumps(settings.donation_asks, ensure_ascii=False, sort_keys=True)
    return str(getattr(settings, key))


def _one_line(key: str, value: str) -> None:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ConfigError(f"setting {key}: must be one line without control characters")


def clean(key: str, raw: str) -> str:
    """Check one submitted value; ConfigError naming the key when it is not acceptable."""
    if key in FORBIDDEN or key not in _BY_KEY:
        raise ConfigError(f"setting {key}: cannot be changed from the console")
    field = _BY_KEY[key]
    value = raw.replace("\r\n", "\n").strip()
    if key == "donation_asks":  # (a JSON list of tables, checked like the file's)
        if len(value) > field.max_length:
            raise ConfigError(f"setting {key}: at most {field.max_length} characters")
        try:
            tables = json.loads(value or "[]")
        except ValueError:
            raise ConfigError(f"setting {key}: not a JSON list of asks") from None
        if not isinstance(tables, list):
            raise ConfigError(f"setting {key}: not a JSON list of asks")
        parse_asks(tables)
        return json.dumps(tables, ensure_ascii=False, sort_keys=True)
    if key == "paused_asks":  # (may be empty: no ask paused)
        _one_line(key, value)
        if len(value) > field.max_length:
            raise ConfigError(f"setting {key}: at most {field.max_length} characters")
        return ", ".join(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    if not value:
        raise ConfigError(f"setting {key}: must not be empty")
    if len(value) > field.max_length:
        raise ConfigError(f"setting {key}: at most {field.max_length} characters")
    if field.multiline:
        if any((ord(ch) < 32 and ch != "\n") or ord(ch) == 127 for ch in value):
            raise ConfigError(f"setting {key}: must not contain control characters")
        value = " ".join(value.split())  # one paragraph in the email
    else:
        _one_line(key, value)
    if key == "donation_url":
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"setting {key}: must be an absolute http(s) address")
    elif key == "sender_name":
        if _NAME_BAD.search(value):
            raise ConfigError(f'setting {key}: must not contain " < > or \\')
    elif key == "reply_to":
        try:
            value = normalise_email(value)
        except InvalidAddress as exc:
            raise ConfigError(f"setting {key}: {exc}") from None
    elif key == "send_days":
        value = value.lower().replace(" ", "")
    return value


def _replacements(settings: Settings, values: Mapping[str, str]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key == "sender_name":
            address = parseaddr(settings.from_addr)[1]
            changes["from_addr"] = f'"{value}" <{address}>' if value else address
        elif key == "donation_asks":
            changes[key] = json.loads(value or "[]")
        else:
            changes[key] = value
    return changes


def apply(settings: Settings, overrides: Mapping[str, str]) -> Settings:
    """`settings` with the overrides applied, each validated; a stored value that no longer
    validates (the file changed under it) is skipped with a warning rather than stopping every
    command from starting."""
    result = settings
    for key, raw in overrides.items():
        try:
            result = result.replace(**_replacements(result, {key: clean(key, raw)}))
        except ConfigError as exc:
            log.warning("ignoring the stored override of %s: %s", key, exc)
    return result


def load_overrides(sessions: sessionmaker[Session]) -> dict[str, str]:
    """The stored overrides, allow-listed keys only."""
    with sessions() as session:
        rows = session.execute(select(Meta.key, Meta.value).where(Meta.key.like(f"{PREFIX}%")))
        found = {key.removeprefix(PREFIX): value for key, value in rows}
    return {key: found[key] for key in KEYS if key in found}


def with_overrides(settings: Settings, sessions: sessionmaker[Session]) -> Settings:
    """What `App.create` calls: the settings with the database's overrides, or unchanged when
    the database has no tables yet (before `mailer init`) or cannot be reached (the command
    itself will then say so). A SQLite file that is not there is not opened: connecting would
    create it, and a read-only command (`mailer status`) must leave the folder as it was."""
    path = sqlite_file(settings.database_url)
    if path is not None and not path.exists():
        return settings
    try:
        overrides = load_overrides(sessions)
    except Exception as exc:  # noqa: BLE001 - no schema / unreachable: no overrides
        log.debug("no setting overrides loaded: %s", exc)
        return settings
    return apply(settings, overrides) if overrides else settings


def save_overrides(session: Session, configured: Settings, current: Settings,
                   values: Mapping[str, str]) -> tuple[Settings, dict[str, tuple[str, str]]]:
    """Validate `values` together (send time and days belong together) and store them.

    `configured` is the file and environment settings (what "no override" means: a value equal
    to it removes the override); `current` is what is in force now. Returns the new settings
    and {key: (old, new)} for each key that changed. Raises ConfigError naming the first bad
    key, having stored nothing.
    """
    cleaned = {key: clean(key, raw) for key, raw in values.items()}
    stored = {row.key.removeprefix(PREFIX): row for row in session.scalars(
        select(Meta).where(Meta.key.in_([PREFIX + k for k in KEYS])))}
    overrides = {k: v.value for k, v in stored.items()}
    merged = {key: value for key, value in {**overrides, **cleaned}.items()
              if value != current_value(configured, key)}
    new = configured.replace(**_replacements(configured, merged))  # ConfigError names the key
    changed: dict[str, tuple[str, str]] = {}
    for key, value in cleaned.items():
        old = current_value(current, key)
        if value == current_value(configured, key):
            if key in stored:
                session.delete(stored[key])
        elif key in stored:
            stored[key].value = value
        else:
            session.add(Meta(key=PREFIX + key, value=value))
        if old != current_value(new, key):
            changed[key] = (old, current_value(new, key))
    session.flush()
    return new, changed


def save_override(session: Session, configured: Settings, current: Settings, key: str,
                  value: str) -> Settings:
    """Store one override (validated); returns the settings now in force."""
    new, _ = save_overrides(session, configured, current, {key: value})
    return new


def clear_overrides(session: Session) -> None:
    """Back to the file for every key."""
    session.execute(delete(Meta).where(Meta.key.in_([PREFIX + k for k in KEYS])))


class Running(Protocol):
    """What `refresh` needs of a running `mailer.app.App`. Named by shape, not imported:
    `App.create` calls `with_overrides`, so `mailer.app` imports this module."""

    settings: Settings
    configured: Settings | None
    sessions: sessionmaker[Session]


def refresh(app: Running) -> Settings:
    """Re-read the overrides into a long-running process's App (the scheduler daemon before
    each job and every `settings_check_seconds`) and return the settings now in force.

    Every overridable key starts again from its configured value (so an override removed in
    the console ends here too, not at the next restart) and the stored overrides go on top;
    everything else the process runs with is kept (a setting changed in code: tests, `mailer
    demo`). A database that cannot be read leaves the settings as they are.
    """
    try:
        stored = load_overrides(app.sessions)
    except Exception as exc:  # noqa: BLE001 - keep running on what we have
        log.warning("could not re-read the setting overrides (%s); keeping the current ones",
                    exc)
        return app.settings
    base = app.settings
    if app.configured is not None:
        base = _as_configured(base, app.configured)
    app.settings = apply(base, stored)
    return app.settings


def _as_configured(settings: Settings, configured: Settings) -> Settings:
    """`settings` with every overridable key back at its configured value."""
    values = {key: current_value(configured, key) for key in KEYS
              if current_value(settings, key) != current_value(configured, key)}
    return settings.replace(**_replacements(settings, values)) if values else settings
