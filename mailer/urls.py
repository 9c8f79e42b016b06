"""URLs that carry credentials (MAILER_DSN, MAILER_DATABASE_URL): one reading, one redaction.

Both settings hold a user name and password, and both get shown: `mailer status` (whose output
ends up in monitoring systems and tickets), `mailer transports check`, error messages. So both
are read by one parser, `split_url`, and every display goes through `redact_url`, which rebuilds
the URL from that parse without its secrets. A value that does not parse is shown as
`UNPARSABLE` and never echoed: a mangled URL may still hold a password. No regular expression
over the raw string decides what is secret.

Secrets are often pasted as they are (AWS secret keys contain '/', SMTP passwords '@' and ':'),
so the credentials end at the *last* '@' and the user name at the first ':' after the scheme.
Percent-encoding ('@' as %40, '/' as %2F) still works and is needed for a '%' in a password, or
for an '@' in an option's value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mailer.errors import ConfigError

UNPARSABLE = "<unparsable URL>"
SUPPORTED_DATABASES = ("SQLite (sqlite:///subscribers.db) or PostgreSQL "
                       "(postgresql://user:password@host/dbname)")
# Backend -> the drivers that are installed with the mailer ("" is the backend's default).
_DATABASES = {"sqlite": {"", "pysqlite"}, "postgresql": {"", "psycopg"}, "postgres": {""}}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_PORT = re.compile(r"[0-9]{1,5}")
# Query values shown as *** (libpq takes ?password=, a provider option might take a key).
_SECRET_OPTION = re.compile(r"pass|secret|token|key", re.IGNORECASE)


class UrlError(ValueError):
    """A URL that cannot be read; the message says why and never quotes the URL."""


@dataclass(frozen=True)
class UrlParts:
    """A URL as `split_url` reads it: user and password percent-decoded, the rest as written."""

    scheme: str
    user: str = ""
    password: str = field(default="", repr=False)
    has_credentials: bool = False  # an '@' was there, even if user and password are empty
    host: str = ""  # as written; an IPv6 address without its brackets
    port: int | None = None
    path: str = ""
    query: str = ""

    def __repr__(self) -> str:
        # Spelled out so that the password never reaches a log through repr().
        return f"UrlParts({self.redacted()!r})"

    def redacted(self) -> str:
        """The URL without its secrets. API transports carry the key in the user part, and
        with no '@' a key pasted alone sits where the host goes: those are masked too."""
        if self.scheme == "file":
            return f"file://{self.path}" + (f"?{self._query()}" if self.query else "")
        api = self.scheme.endswith("+api")
        auth = ""
        if self.has_credentials:
            auth = "***" if api and self.user else quote(self.user, safe="@")
            auth += ":***@" if self.password else "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        if api and not self.has_credentials and host not in ("", "default"):
            host = "***"
        port = "" if self.port is None else f":{self.port}"
        query = f"?{self._query()}" if self.query else ""
        return f"{self.scheme}://{auth}{host}{port}{self.path}{query}"

    def _query(self) -> str:
        pairs = parse_qsl(self.query, keep_blank_values=True)
        return "&".join(f"{key}={'***' if _SECRET_OPTION.search(key) else value}"
                        for key, value in pairs)


def split_url(text: str) -> UrlParts:
    """Read ``scheme://[user[:password]@]host[:port][/path][?query]``; raise UrlError.

    ``file://`` and URLs without an authority (``sqlite:///x.db``, ``sqlite://``) are a path
    and a query only.
    """
    value = (text or "").strip()
    match = _SCHEME.match(value)
    if match is None:
        raise UrlError("it does not start with scheme://")
    scheme, rest = match.group(1).lower(), value[match.end():]
    if scheme == "file" or not rest or rest.startswith("/"):
        location, _, query = rest.partition("?")
        return UrlParts(scheme, path=location, query=query)
    userinfo, at, located = rest.rpartition("@")
    user, _, password = userinfo.partition(":")
    end = min((i for i in (located.find("/"), located.find("?")) if i >= 0),
              default=len(located))
    hostport, remainder = located[:end], located[end:]
    path, _, query = remainder.partition("?")
    _no_fragment(hostport + remainder)
    host, port = _host_port(hostport)
    return UrlParts(scheme, user=unquote(user), password=unquote(password),
                    has_credentials=bool(at), host=host, port=port, path=path, query=query)


def url_scheme(text: str) -> str | None:
    """The scheme, lower-cased (safe to show: it is letters, digits and '+.-'), or None."""
    match = _SCHEME.match((text or "").strip())
    return match.group(1).lower() if match else None


def redact_url(text: str) -> str:
    """The one way a DSN or database URL is shown: parsed and rebuilt without its secrets."""
    try:
        return split_url(text).redacted()
    except UrlError:
        return UNPARSABLE


def check_database_url(url: str) -> None:
    """Raise ConfigError, in one line that never quotes the URL, unless the mailer can use it.

    Why here and not at connection time: SQLAlchemy echoes what it cannot parse, fails on a
    non-numeric port with a traceback, and imports a driver we do not ship for mysql:// and
    the like; and it ends the password at the first '@', so 'pa@ss' would send 'ss@host' (the
    tail of the password) to DNS and into the error message.
    """
    try:
        parts = split_url(url)
    except UrlError as exc:
        raise ConfigError(f"setting database_url: cannot be read ({exc}); expected "
                          f"{SUPPORTED_DATABASES}") from None
    backend, _, driver = parts.scheme.partition("+")
    if driver not in _DATABASES.get(backend, ()):
        raise ConfigError(f"setting database_url: {parts.scheme}:// is not supported; use "
                          f"{SUPPORTED_DATABASES}")
    try:
        theirs = make_url(url.strip())
    except (ArgumentError, ValueError):
        theirs = None
    ours = (parts.user, parts.password, parts.host, parts.port)
    if theirs is None or ours != (theirs.username or "", theirs.password or "",
                                  theirs.host or "", theirs.port):
        raise ConfigError("setting database_url: cannot be read as written; percent-encode "
                          "'@' as %40, '/' as %2F and ':' as %3A in the user name and password")


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names (relative to the working directory), or None for another
    database, an in-memory one or a ``file:`` URI. Read-only commands look before connecting,
    because connecting to a SQLite file that is not there creates it."""
    try:
        parts = split_url(url)
    except UrlError:
        return None
    if parts.scheme.partition("+")[0] != "sqlite" or parts.has_credentials or parts.host:
        return None
    database = unquote(parts.path.removeprefix("/"))
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _no_fragment(text: str) -> None:
    if "#" in text:  # a fragment means nothing here, and a '#' is most likely a pasted secret's
        raise UrlError("'#' outside the user name and password")


def _host_port(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        host, bracket, after = hostport[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise UrlError("the IPv6 address is not closed with ']'")
        port_text = after[1:]
    else:
        host, _, port_text = hostport.partition(":")
    if not port_text:
        return host, None
    if not _PORT.fullmatch(port_text) or int(port_text) > 65535:
        raise UrlError("the port is not a number from 0 to 65535")
    return host, int(port_text)
