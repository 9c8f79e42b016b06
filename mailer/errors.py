"""Errors that carry a one-line, user-facing reason.

Every command catches `MailerError` at the top and prints `str(err)` as the single line a user
sees, so messages here must make sense without a traceback.
"""


class MailerError(Exception):
    """Base class: something went wrong that the user can act on."""


class DatabaseUnreachable(MailerError):
    """The database cannot be reached at all (a caller may try again later)."""


class DatabaseOutage(DatabaseUnreachable):
    """The database went away during the work and stayed away longer than `db_outage_grace`
    (`mailer.dbretry`); nothing is lost, the same command resumes once it is back."""


def one_line(exc: BaseException) -> str:
    """An error's first line, or its type's name when it says nothing."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ConfigError(MailerError, ValueError):
    """A setting is missing or malformed; the message names the key."""


class FeedError(MailerError):
    """The feed could not be fetched or parsed; nothing was changed."""


class TransportError(MailerError):
    """The transport cannot be used at all (refused connection, bad credentials, bad DSN)."""


class PreflightError(MailerError):
    """The edition failed a preflight check and was not sent."""
