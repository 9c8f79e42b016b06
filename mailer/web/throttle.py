"""Request throttling kept in the database: limits on the subscription form, and growing
delays on staff sign-in.

Both count rows in the `rate_events` table, not in memory: every waitress thread and every
`mailer serve` process, on any machine, must see the same numbers, or an attacker multiplies
their allowance by the number of processes. Each hit is one row; counting the rows of a key
inside a sliding window is an index range scan on (key, at). Keys for addresses use a hash of
the address, so the table never holds an address in clear. On PostgreSQL a
transaction-scoped advisory lock per key makes each count-then-insert exact across processes;
SQLite's BEGIN IMMEDIATE (see `mailer.db`) already serialises writers.

**Fixed limits** (`Limit`, `hit`) guard POST /subscribe: at most so many hits per window per
client IP and per address. Rows older than the longest window are deleted as the key is
touched again, and `purge` clears everything stale (the scheduler or a cron job may call it;
nothing depends on it).

**Staff sign-in** (`Attempt`, `lock`, `wait_seconds`, `record_failure`, `record_success`):
wrong passwords slow down whoever typed them, and lock out no one.

A hard lock (so many wrong passwords close an account for a while, right password included)
would let anyone who knew an editor's address keep them out on a send morning by guessing a few
times a quarter hour. Instead, three counts of wrong passwords, each over the last
`WINDOW`, decide how long a client must wait before its next attempt:

* per (account, client): nothing after the first wrong password, then 1, 2, 4, 8 ... seconds,
  capped at `CAP_SECONDS` (`delay_after`);
* per client, over every address it tries: the same doubling once it has `CLIENT_FREE` wrong
  passwords (one client spraying many addresses, or making scrypt burn CPU);
* per account, over every client: from `ACCOUNT_BURST` wrong passwords on (a distributed
  attack), each client that got it wrong waits the full cap after each wrong password.

A client with no wrong password in the window waits for nothing, so an editor signs in at once
from their own browser whatever happens elsewhere, and no one ever waits longer than the cap.
An attempt made too early is refused before the password is checked, so refusals are cheap
and reveal nothing; the right password clears that client's count for the account. Accounts
are keyed by a hash of the address typed, whether it has an account or not, so the delays do
not tell a guesser which addresses exist.

The web view holds one transaction from `lock` through the password check to `record_failure`;
`lock` takes PostgreSQL advisory locks on the client and the account, so concurrent attempts
cannot share one slot.

The client is `request.remote_addr`, which is the proxy's address unless `trusted_proxies` is
set (then werkzeug's ProxyFix takes it from X-Forwarded-For, trusting only that many hops).
Behind an unconfigured proxy every client looks like one, and a guesser slows everyone (by
at most the cap): set `trusted_proxies`. IPv6 clients count per /64, the block one host gets.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from mailer.models import RateEvent
from mailer.subscribers import email_hash


def _advisory_lock(session: Session, key: str) -> None:
    """Serialise work on `key` until the transaction ends (PostgreSQL only)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    lock_id = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
    session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})


# ---- fixed limits: the subscription form ---------------------------------------------------

#: Rows older than this are never needed by any limit below.
RETENTION = timedelta(days=2)


@dataclass(frozen=True)
class Limit:
    """At most `count` hits per `seconds` for one key."""

    count: int
    seconds: int

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.seconds)


def ip_key(scope: str, address: str) -> str:
    return f"{scope}:ip:{address}"[:400]


def address_key(scope: str, email: str) -> str:
    return f"{scope}:addr:{email_hash(email)}"


def hit(session: Session, key: str, limits: list[Limit] | tuple[Limit, ...], *,
        now: datetime) -> bool:
    """Count one hit against `key`; False (and nothing recorded) when any limit is reached.

    Refused hits are not recorded, so a client that keeps hammering is let in again as soon as
    its older hits leave the window rather than being locked out for ever.
    """
    if not limits:
        return True
    _advisory_lock(session, key)
    longest = max(limit.seconds for limit in limits)
    session.execute(
        delete(RateEvent).where(RateEvent.key == key,
                                RateEvent.at < now - timedelta(seconds=longest))
    )
    for limit in limits:
        used = session.scalar(
            select(func.count()).select_from(RateEvent)
            .where(RateEvent.key == key, RateEvent.at > now - limit.window)
        ) or 0
        if used >= limit.count:
            return False
    session.add(RateEvent(key=key, at=now))
    session.flush()
    return True


def purge(session: Session, now: datetime, older_than: timedelta = RETENTION) -> int:
    """Delete rows no limit can still count; returns how many went."""
    result = session.execute(delete(RateEvent).where(RateEvent.at < now - older_than))
    return int(getattr(result, "rowcount", 0) or 0)


# ---- staff sign-in: growing delays, never a lock --------------------------------------------

#: The longest anyone waits between two attempts.
CAP_SECONDS = 60
#: Wrong passwords older than this are forgotten.
WINDOW = timedelta(minutes=15)
#: Wrong passwords a client may make across all addresses before it waits at all.
CLIENT_FREE = 10
#: Wrong passwords on one account, from all clients, that make it a burst: guessing clients
#: wait the full cap, and admins are alerted.
ACCOUNT_BURST = 10
#: A burst is over when the account has had no wrong password for this long; the next one
#: alerts again.
BURST_QUIET = timedelta(hours=1)
SCOPE = "staff-login"


def delay_after(failures: int) -> int:
    """Seconds a client waits after its `failures`-th wrong password on one account: 0, 1, 2,
    4 ... up to the cap. The first is free: everyone mistypes."""
    if failures <= 1:
        return 0
    return min(CAP_SECONDS, 2 ** min(failures - 2, 16))


def client_delay(failures: int) -> int:
    """Seconds a client waits after `failures` wrong passwords over all addresses."""
    if failures < CLIENT_FREE:
        return 0
    return min(CAP_SECONDS, 2 ** min(failures - CLIENT_FREE, 16))


def client_of(address: str | None) -> str:
    """The client as the throttle counts it: an IPv4 address, or an IPv6 /64 (a single
    connection usually comes with a whole /64 to rotate through)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return (address or "unknown")[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(frozen=True)
class Attempt:
    """One sign-in attempt: which account (a hash of the address typed) from which client."""

    account: str
    client: str

    @classmethod
    def of(cls, email: str, remote_addr: str | None) -> Attempt:
        return cls(email_hash(email[:320]), client_of(remote_addr))

    @property
    def pair_key(self) -> str:
        return f"{SCOPE}:pair:{self.account}:{self.client}"

    @property
    def account_key(self) -> str:
        return f"{SCOPE}:account:{self.account}"

    @property
    def client_key(self) -> str:
        return f"{SCOPE}:client:{self.client}"

    @property
    def burst_key(self) -> str:
        return f"{SCOPE}:burst:{self.account}"


@dataclass(frozen=True)
class Failure:
    """What a wrong password led to."""

    wait: int  # seconds before this client may try this account again
    burst_started: bool  # the first wrong password of a new burst on a real account: alert
    account_failures: int  # on this account, from every client, within WINDOW
    clients: int  # distinct clients among them


def lock(session: Session, attempt: Attempt) -> None:
    """Serialise attempts from this client and on this account until the transaction ends
    (PostgreSQL; always client first, then account, so two locks never deadlock)."""
    for key in (attempt.client_key, attempt.account_key):
        _advisory_lock(session, key)


def _failures(session: Session, key: str, now: datetime) -> tuple[int, datetime | None]:
    count, last = session.execute(
        select(func.count(), func.max(RateEvent.at))
        .where(RateEvent.key == key, RateEvent.at > now - WINDOW)
    ).one()
    return int(count or 0), last


def _remaining(last: datetime | None, delay: int, now: datetime) -> int:
    if last is None or delay <= 0:
        return 0
    return max(0, math.ceil((last + timedelta(seconds=delay) - now).total_seconds()))


def wait_seconds(session: Session, attempt: Attempt, now: datetime) -> int:
    """Seconds before this client may try this account again (0: check the password now)."""
    pair, pair_last = _failures(session, attempt.pair_key, now)
    spread, client_last = _failures(session, attempt.client_key, now)
    wait = _remaining(client_last, client_delay(spread), now)
    if pair:
        delay = delay_after(pair)
        if _failures(session, attempt.account_key, now)[0] >= ACCOUNT_BURST:
            delay = CAP_SECONDS
        wait = max(wait, _remaining(pair_last, delay, now))
    return wait


def record_failure(session: Session, attempt: Attempt, now: datetime, *,
                   known: bool) -> Failure:
    """Count a wrong password (in the caller's transaction, which must commit it even though
    the sign-in is refused). `known` says the address has an account: only those alert."""
    keys = (attempt.pair_key, attempt.account_key, attempt.client_key)
    session.execute(delete(RateEvent).where(RateEvent.key.in_(keys),
                                            RateEvent.at <= now - WINDOW))
    session.add_all([RateEvent(key=key, at=now) for key in keys])
    session.flush()
    account, _ = _failures(session, attempt.account_key, now)
    started = known and _burst(session, attempt, now, account)
    clients = 0
    if started:
        prefix = f"{SCOPE}:pair:{attempt.account}:"
        clients = session.scalar(
            select(func.count(func.distinct(RateEvent.key)))
            .where(RateEvent.key.startswith(prefix, autoescape=True),
                   RateEvent.at > now - WINDOW)
        ) or 0
    return Failure(wait_seconds(session, attempt, now), started, account, clients)


def _burst(session: Session, attempt: Attempt, now: datetime, account_failures: int) -> bool:
    """True when this wrong password starts a burst (time to alert admins).

    A burst starts when the account reaches `ACCOUNT_BURST` wrong passwords in the window, and
    goes on while wrong passwords keep coming less than `BURST_QUIET` apart: its marker row is
    renewed by each one, so an attack that lasts all day alerts once, not once an hour.
    """
    ongoing = session.scalar(select(func.max(RateEvent.at)).where(
        RateEvent.key == attempt.burst_key, RateEvent.at > now - BURST_QUIET))
    if ongoing is None and account_failures < ACCOUNT_BURST:
        return False
    session.execute(delete(RateEvent).where(RateEvent.key == attempt.burst_key))
    session.add(RateEvent(key=attempt.burst_key, at=now))
    return ongoing is None


def record_success(session: Session, attempt: Attempt) -> None:
    """The right password: this client starts afresh on this account. What it did to other
    accounts, and what others did to this one, still counts."""
    session.execute(delete(RateEvent).where(RateEvent.key == attempt.pair_key))
