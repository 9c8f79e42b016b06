"""Staff accounts: who may use the console, with what role, and how they prove it.

Two roles: an `editor` runs the daily edition and looks after the list; an `admin` can also
change the settings the console overrides (donation copy, sender, send time). Accounts are
made with the CLI (`mailer staff add`), never from the web, so a stolen session cannot mint a
new account.

Passwords are hashed with scrypt (memory-hard, so a leaked table is expensive to attack). This
module only says whether a password is right; sign-in attempts are throttled in the web layer
(`mailer.web.throttle`: growing delays per account and client, never a lock, so no one can keep
a colleague out by guessing). An unknown address costs the same hash check as a known one, so
response times do not reveal who has an account.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from mailer.errors import MailerError
from mailer.models import StaffUser
from mailer.subscribers import InvalidAddress, normalise_email

EDITOR, ADMIN = "editor", "admin"
ROLES = (EDITOR, ADMIN)
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # scrypt of a megabyte "password" is a cheap denial of service otherwise
HASH_METHOD = "scrypt"

_DUMMY_HASH: list[str] = []


class StaffError(MailerError):
    """A staff account operation that cannot be done (duplicate, unknown, weak password)."""


class LoginRefused(MailerError):
    """Wrong address or password: deliberately one message for both.

    `account` is the account's address when there is one (for the throttle's alert to admins,
    never for the page)."""

    def __init__(self, account: str | None = None) -> None:
        super().__init__("The email address or password is not right.")
        self.account = account


def hash_password(password: str) -> str:
    """A slow, salted hash (scrypt via werkzeug)."""
    return generate_password_hash(password, method=HASH_METHOD)


def check_password(password_hash: str, password: str) -> bool:
    """Constant-time comparison of a password against its stored hash."""
    if len(password) > MAX_PASSWORD:
        return False
    return check_password_hash(password_hash, password)


def validate_password(password: str) -> str:
    """Refuse passwords too short to survive an online guess or too long to hash cheaply."""
    if len(password) < MIN_PASSWORD:
        raise StaffError(f"password must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise StaffError(f"password must be at most {MAX_PASSWORD} characters")
    if password != password.strip() or "\n" in password or "\r" in password:
        raise StaffError("password must not start or end with spaces or contain line breaks")
    return password


def password_version(user: StaffUser) -> str:
    """A short fingerprint of the stored hash, kept in the session cookie next to the session
    generation: an account removed and made again may get the old id back with its generation
    at 0, and a hash changed behind our back (SQL by hand) ends sessions all the same."""
    return hashlib.sha256(f"{user.id}:{user.password_hash}".encode()).hexdigest()[:16]


def _address(email: str) -> str:
    try:
        return normalise_email(email)
    except InvalidAddress as exc:
        raise StaffError(str(exc)) from None


def get_by_email(session: Session, email: str) -> StaffUser | None:
    return session.scalar(select(StaffUser).where(StaffUser.email == email.strip().lower()))


def add_staff(session: Session, email: str, password: str, *, role: str = EDITOR,
              at: datetime | None = None) -> StaffUser:
    """Create an account; StaffError when the address is taken or the password is weak."""
    if role not in ROLES:
        raise StaffError(f"role must be one of {', '.join(ROLES)}")
    address = _address(email)
    if get_by_email(session, address) is not None:
        raise StaffError(f"{address} already has a staff account")
    user = StaffUser(email=address, password_hash=hash_password(validate_password(password)),
                     role=role)
    if at is not None:
        user.created_at = at
    session.add(user)
    session.flush()
    return user


def list_staff(session: Session) -> list[StaffUser]:
    return list(session.scalars(select(StaffUser).order_by(StaffUser.email)))


def _require(session: Session, email: str) -> StaffUser:
    user = get_by_email(session, email)
    if user is None:
        raise StaffError(f"no staff account {email.strip().lower()}")
    return user


def remove_staff(session: Session, email: str) -> None:
    """Delete an account; its sessions stop working on their next request."""
    session.delete(_require(session, email))
    session.flush()


def set_password(session: Session, email: str, password: str) -> StaffUser:
    """Replace the password and end every session of the account: whoever needed the new
    password may be locking out someone who had the old one."""
    user = _require(session, email)
    user.password_hash = hash_password(validate_password(password))
    end_sessions(session, user.id)
    return user


def end_sessions(session: Session, user_id: int) -> None:
    """End every session of the account on the server: its generation goes up by one, so each
    cookie issued before (which carries the old number) is refused from its next request.

    One UPDATE adding to the stored value, not a read and a write, so two sign-outs at once
    both count. Sign-out calls this: a cookie copied before it must not outlive it.
    """
    session.execute(update(StaffUser).where(StaffUser.id == user_id)
                    .values(session_generation=StaffUser.session_generation + 1)
                    .execution_options(synchronize_session="fetch"))


def disable_staff(session: Session, email: str, *, now: datetime) -> StaffUser:
    """Turn an account off: it cannot sign in, and its sessions end at their next request.
    Kept (not removed) so the audit log's entries still name a known account."""
    user = _require(session, email)
    if user.disabled_at is None:
        user.disabled_at = now
        end_sessions(session, user.id)
    return user


def enable_staff(session: Session, email: str) -> StaffUser:
    user = _require(session, email)
    user.disabled_at = None
    return user


def set_can_erase(session: Session, email: str, allowed: bool) -> StaffUser:
    """Let an editor erase subscribers, or stop them (admins always may)."""
    user = _require(session, email)
    user.can_erase = allowed
    return user


def may_erase(role: str, can_erase: bool) -> bool:
    """Erasure cannot be undone, so editors need an admin's grant (docs/staff.md)."""
    return role == ADMIN or can_erase


def new_password() -> str:
    """A password an admin passes on once (the account's owner changes it with the CLI)."""
    return secrets.token_urlsafe(12)


def set_role(session: Session, email: str, role: str) -> StaffUser:
    if role not in ROLES:
        raise StaffError(f"role must be one of {', '.join(ROLES)}")
    user = _require(session, email)
    user.role = role
    return user


@dataclass(frozen=True)
class LoginResult:
    user_id: int
    email: str
    role: str
    version: str
    generation: int


def _dummy_hash() -> str:
    if not _DUMMY_HASH:
        _DUMMY_HASH.append(hash_password("not a real password, only for timing"))
    return _DUMMY_HASH[0]


def authenticate(session: Session, email: str, password: str, *, now: datetime) -> LoginResult:
    """Check a password; LoginRefused (one message for every cause) when it is not right.

    No counting or locking here: the caller throttles attempts by the address typed and the
    client (`mailer.web.throttle`), before this is called and after it refuses.
    """
    address = email.strip().lower()
    user = get_by_email(session, address) if address and len(address) <= 320 else None
    if user is None:
        check_password(_dummy_hash(), password)  # same cost as a real check
        raise LoginRefused()
    if not check_password(user.password_hash, password) or user.disabled_at is not None:
        raise LoginRefused(account=user.email)
    user.last_login_at = now
    session.flush()
    return LoginResult(user.id, user.email, user.role, password_version(user),
                       user.session_generation)
