"""The per-recipient ledger: audience snapshot, claims with leases, outcomes.

This is the exactly-once heart. A row moves queued -> claimed -> sent | failed | ambiguous, and
a row is marked sent only after the transport confirmed it, so a crash can at worst leave a
claimed row whose fate is decided on reclaim. Rows are never re-created: the unique
(edition, subscriber) constraint makes a second snapshot or a second trigger a no-op.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Dialect,
    bindparam,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from mailer import outbox
from mailer.db import rowcount
from mailer.locks import holder_alive
from mailer.models import (
    ACTIVE,
    AMBIGUOUS,
    BOUNCED,
    CLAIMED,
    DAILY,
    DELIVERED,
    DFAILED,
    DSKIPPED,
    HELD,
    PAUSED_SEND,
    QUEUED,
    SENDING,
    SENT,
    TESTING,
    WITHDRAWN,
    Delivery,
    Edition,
    Subscriber,
    UTCDateTime,
)
from mailer.subscribers import set_status
from mailer.transports.base import Result

RETRY_BASE_SECONDS = 2.0
RETRY_CAP_SECONDS = 300.0


class Claim(NamedTuple):
    """A claimed row, as the sending thread needs it (a tuple: a send makes one per
    recipient, and a frozen dataclass costs several times as much to make)."""

    id: int
    subscriber_id: int
    email: str
    name: str
    attempts: int
    first_name: str = ""
    variant: str = ""  # the reader's sections: which rendering they get ("" the whole)


ASK_MARK = "|"
GROUP_MARK = "#"  # a subject test group's rows end in "#<group>" (`hold_for_test`)
ASK_MULTIPLIER, ASK_PRIME, ASK_MIX_PRIME = 2654435761, 1000003, 999983


def audience(frequency: str | None) -> list[ColumnElement[bool]]:
    """Who an edition goes to: the active readers of `frequency` (None: every active
    reader, which is the daily's audience while the weekly digest is not offered)."""
    where = [Subscriber.status == ACTIVE]
    if frequency is not None:
        where.append(Subscriber.frequency == frequency)
    return where


def snapshot(session: Session, edition: Edition, frequency: str | None = None,
             asks: Sequence[str] = ()) -> int:
    """Queue every reader of the edition's audience (`audience`) not already in the ledger:
    one set-based INSERT ... SELECT. Each row's `variant` names the rendering the reader
    gets: their sections, and with several donation `asks`, "|name" for any but the first,
    chosen by a hash of (reader, edition) (`ask_of`)."""
    s = Subscriber
    source = select(
        literal(edition.id), s.id, s.email, s.name, s.first_name,
        s.sections + ask_of(s.id, edition.id, asks), literal(QUEUED),
        literal(0), literal(""), literal(""), literal(""), literal(""), literal(False),
    ).where(
        *audience(frequency),
        ~exists().where(Delivery.edition_id == edition.id, Delivery.subscriber_id == s.id),
    )
    cols = ["edition_id", "subscriber_id", "email", "name", "first_name", "variant", "state",
            "attempts", "claimed_by", "message_id", "provider_id", "error", "permanent"]

    def queued() -> int:
        return session.scalar(select(func.count()).where(Delivery.edition_id == edition.id)) or 0

    before = queued()
    session.connection().execute(insert(Delivery).from_select(cols, source))
    # (rowcount of INSERT ... SELECT is not reliable across drivers: count instead.)
    return queued() - before


def ask_of(reader: ColumnElement[int] | InstrumentedAttribute[int], edition_id: int,
           asks: Sequence[str]) -> ColumnElement[str]:
    """The donation ask a reader sees in an edition, as a variant suffix ("" for the first
    ask). Integer arithmetic both databases do alike, with no product past 2^63: (reader,
    edition) folded modulo a prime, then squared modulo another, so the split is even, a
    resumed send gets the same answer, and a reader's ask in one edition says nothing about
    the next (a linear hash alone would alternate readers between asks)."""
    if len(asks) < 2:
        return literal("")

    def big(value: int) -> ColumnElement[int]:  # (PostgreSQL would do int4 arithmetic)
        return literal(value, BigInteger)

    folded = (cast(reader, BigInteger) * big(ASK_MULTIPLIER) + big(edition_id * 40503)) \
        % big(ASK_PRIME)
    bucket = (folded * folded + folded * big(7919) + big(12345)) % big(ASK_MIX_PRIME) \
        % big(len(asks))
    return case(*[(bucket == i, literal(f"{ASK_MARK}{name}")) for i, name in enumerate(asks)
                  if i], else_=literal(""))


def split_variant(variant: str) -> tuple[str, str]:
    """A ledger variant as (sections, ask name; "" for the first ask), whatever its test
    group (`test_group_of`)."""
    sections, _, ask = without_group(variant).partition(ASK_MARK)
    return sections, ask


def test_group_of(variant: str) -> int:
    """The subject test group a ledger variant belongs to (0: none)."""
    _, mark, group = variant.rpartition(GROUP_MARK)
    return int(group) if mark and group.isdigit() else 0


def without_group(variant: str) -> str:
    """The variant as readers outside any test group would have it."""
    head, mark, group = variant.rpartition(GROUP_MARK)
    return head if mark and group.isdigit() else variant


def hold_for_test(session: Session, edition_id: int, groups: int, size: int,
                  rng: random.Random) -> list[int]:
    """Put `size` random queued readers in each of `groups` subject test groups (their
    variant gains "#<group>") and hold every other queued row until the test is decided
    (`release_held`). The sizes of the groups as made."""
    ids = list(session.scalars(select(Delivery.id).where(Delivery.edition_id == edition_id,
                                                         Delivery.state == QUEUED)
                               .order_by(Delivery.id)))
    rng.shuffle(ids)
    sizes = []
    for group in range(1, groups + 1):
        chosen = ids[(group - 1) * size:group * size]
        sizes.append(len(chosen))
        for start in range(0, len(chosen), 500):
            session.execute(
                update(Delivery).where(Delivery.id.in_(chosen[start:start + 500]))
                .values(variant=Delivery.variant + literal(f"{GROUP_MARK}{group}"))
                .execution_options(synchronize_session=False))
    session.execute(
        update(Delivery).where(Delivery.edition_id == edition_id, Delivery.state == QUEUED,
                               ~Delivery.variant.contains(GROUP_MARK, autoescape=True))
        .values(state=HELD).execution_options(synchronize_session=False))
    return sizes


def release_held(session: Session, edition_id: int) -> int:
    """Queue the rows a subject test held back (the test is decided)."""
    return int(rowcount(session.execute(
        update(Delivery).where(Delivery.edition_id == edition_id, Delivery.state == HELD)
        .values(state=QUEUED).execution_options(synchronize_session=False))) or 0)


def claim(session: Session, edition_id: int, worker: str, limit: int, now: datetime,
          lease_seconds: int) -> list[Claim]:
    """Claim up to `limit` due rows: claims whose lease ran out first, then queued rows.

    Each kind is one index range of (edition_id, state, id), read in id order and stopped at
    `limit`, so a claim costs the same at the first row of a million as at the last (one
    query with an OR over both kinds scans and sorts the whole edition every time).
    PostgreSQL: FOR UPDATE SKIP LOCKED lets any number of workers claim disjoint rows. SQLite
    has one writer at a time (and one dispatcher, enforced by the dispatch lock), so a plain
    subquery is enough there.
    """
    d = Delivery
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        # (The one dispatcher gives every claim back through `back_to_queue` when it starts,
        # so it never takes over another's expired claim.)
        return _claim_sqlite(session, edition_id, worker, limit, now, lease_seconds)
    # A claim whose lease ran out (a worker on another machine went silent) is taken over
    # below without passing through the queue: withdraw the ones whose reader left meanwhile
    # first (`back_to_queue`). Only expired claims are read, through the (edition, state, id)
    # index: rarely any.
    session.execute(
        update(d).where(d.edition_id == edition_id, d.state == CLAIMED, d.lease_until < now,
                        ~_still_active())
        .values(state=WITHDRAWN, error=LEFT_DURING_SEND, permanent=True, claimed_by="",
                lease_until=None)
        .execution_options(synchronize_session=False))
    postgres = dialect == "postgresql"
    claims: list[Claim] = []
    for state, due in (
        (CLAIMED, d.lease_until < now),
        (QUEUED, or_(d.next_attempt_at.is_(None), d.next_attempt_at <= now)),
    ):
        want = limit - len(claims)
        if want <= 0:
            break
        pick = (select(d.id).where(d.edition_id == edition_id, d.state == state, due)
                .order_by(d.id).limit(want))
        if postgres:
            pick = pick.with_for_update(skip_locked=True)
        stmt = (
            update(d)
            .where(d.id.in_(pick.scalar_subquery()))
            .values(state=CLAIMED, claimed_by=worker,
                    lease_until=now + timedelta(seconds=lease_seconds))
            .returning(d.id, d.subscriber_id, d.email, d.name, d.attempts, d.first_name,
                       d.variant)
            .execution_options(synchronize_session=False)
        )
        claims.extend(Claim(*row) for row in session.connection().execute(stmt))
    return sorted(claims, key=lambda c: c.id)


_SQLITE_CLAIM = (
    "UPDATE deliveries SET state='claimed', claimed_by=?, lease_until=? WHERE id IN "
    "(SELECT id FROM deliveries WHERE edition_id=? AND state=? AND {due} ORDER BY id LIMIT ?) "
    "RETURNING id, subscriber_id, email, name, attempts, first_name, variant"
)
_SQLITE_CLAIMS = (
    (CLAIMED, _SQLITE_CLAIM.format(due="lease_until < ?")),
    (QUEUED, _SQLITE_CLAIM.format(due="(next_attempt_at IS NULL OR next_attempt_at <= ?)")),
)


def _claim_sqlite(session: Session, edition_id: int, worker: str, limit: int, now: datetime,
                  lease_seconds: int) -> list[Claim]:
    """`claim` for SQLite, the same two statements written for the driver: the ORM's
    statement building and row handling cost four times the query itself, per row, and a
    send claims every row once. Runs inside the session's transaction."""
    raw = session.connection().connection.dbapi_connection
    assert raw is not None
    lease_until = sqlite_time(now + timedelta(seconds=lease_seconds))
    when = sqlite_time(now)
    claims: list[Claim] = []
    for state, sql in _SQLITE_CLAIMS:
        want = limit - len(claims)
        if want <= 0:
            break
        rows = raw.execute(sql, (worker, lease_until, edition_id, state, when, want))
        claims.extend(Claim(*row) for row in rows)
    return sorted(claims, key=lambda c: c.id)


def sqlite_time(moment: datetime) -> str:
    """A datetime as `UTCDateTime` stores it on SQLite (naive UTC text that sorts in time
    order), for SQL that goes straight to the driver; a tenth of strftime's cost."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


LEFT_DURING_SEND = "left the list during the send"


def _still_active() -> Any:
    """Whether a delivery's reader still receives (correlated, inside an UPDATE of it)."""
    return exists().where(Subscriber.id == Delivery.subscriber_id, Subscriber.status == ACTIVE)


def back_to_queue() -> dict[str, Any]:
    """The values that give a claimed row back: queued again, or withdrawn when its reader
    stopped receiving while it was claimed (`subscribers.withdraw_queued` leaves claimed rows
    alone, so the row is checked here, on its way back)."""
    still_active = _still_active()
    return {"state": case((still_active, QUEUED), else_=WITHDRAWN),
            "error": case((still_active, Delivery.error), else_=LEFT_DURING_SEND),
            "permanent": case((still_active, Delivery.permanent), else_=True),
            "claimed_by": "", "lease_until": None}


def recover_dead_claims(session: Session, edition_id: int) -> int:
    """Return to the queue rows claimed by processes on this machine that no longer exist."""
    claimers = session.scalars(
        select(Delivery.claimed_by).where(Delivery.edition_id == edition_id,
                                          Delivery.state == CLAIMED).distinct()
    ).all()
    dead = [c for c in claimers if not holder_alive(c)]
    if not dead:
        return 0
    result = session.execute(
        update(Delivery)
        .where(Delivery.edition_id == edition_id, Delivery.state == CLAIMED,
               Delivery.claimed_by.in_(dead))
        .values(**back_to_queue())
        .execution_options(synchronize_session=False)
    )
    return int(rowcount(result) or 0)


def release(session: Session, worker: str, ids: list[int]) -> None:
    """Give claimed rows back untouched (pause, shutdown, transport unavailable)."""
    if not ids:
        return
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(ids), Delivery.claimed_by == worker, Delivery.state == CLAIMED)
        .values(**back_to_queue())
        .execution_options(synchronize_session=False)
    )


def renew(session: Session, worker: str, ids: list[int], now: datetime,
          lease_seconds: int) -> set[int]:
    """Extend our lease on rows we still hold; return their ids. A row missing from them was
    taken over by another worker after our lease ran out (a database outage longer than the
    lease): it is theirs to send now, not ours."""
    if not ids:
        return set()
    return set(session.scalars(
        update(Delivery)
        .where(Delivery.id.in_(ids), Delivery.claimed_by == worker, Delivery.state == CLAIMED)
        .values(lease_until=now + timedelta(seconds=lease_seconds))
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    ))


def release_orphans(session: Session, edition_id: int, worker: str) -> int:
    """Give back rows claimed by `worker` that it does not know it holds: a claim whose commit
    went through while its connection died, so the worker never saw the rows. Call it only
    where the worker holds no claim; they would otherwise wait for their lease to run out."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.edition_id == edition_id, Delivery.state == CLAIMED,
               Delivery.claimed_by == worker)
        .values(**back_to_queue())
        .execution_options(synchronize_session=False)
    )
    return int(rowcount(result) or 0)


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter: spreads retries so a recovering server is not
    hit by every worker at the same instant."""
    ceiling = min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * (2 ** max(0, attempt - 1)))
    return random.uniform(ceiling / 2, ceiling)


@dataclass
class Tally:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    ambiguous: int = 0
    bounced: int = 0
    lost: int = 0  # outcome arrived after our claim was taken over (lease expired)

    def add(self, other: Tally) -> None:
        # (field by field: a send adds one per round of answers, and a loop over the
        # dataclass's fields with getattr/setattr cost several microseconds each time)
        self.sent += other.sent
        self.failed += other.failed
        self.retried += other.retried
        self.ambiguous += other.ambiguous
        self.bounced += other.bounced
        self.lost += other.lost


def record(session: Session, worker: str, outcomes: list[tuple[Claim, str, Result]],
           now: datetime, max_attempts: int) -> Tally:
    """Write each outcome, guarded by our claim so a late answer cannot overwrite another's."""
    tally = Tally()
    d = Delivery
    guard = (d.claimed_by == worker, d.state == CLAIMED)
    sent_rows: list[dict[str, Any]] = []
    for c, message_id, result in outcomes:
        if result.status == "sent":
            sent_rows.append({"b_id": c.id, "b_worker": worker, "b_pid": result.provider_id[:300],
                              "b_mid": message_id, "b_now": now, "b_att": c.attempts + 1})
            continue
        values: dict[str, Any] = {"error": result.error[:2000], "message_id": message_id,
                                  "attempts": c.attempts + 1, "lease_until": None}
        if result.status == "retry":
            if c.attempts + 1 >= max_attempts:
                why = f"gave up after {c.attempts + 1} attempts: {result.error}"
                values.update(state=DFAILED, permanent=False, error=why[:2000])
                tally.failed += 1
            else:
                values.update(state=QUEUED, claimed_by="",
                              next_attempt_at=now + timedelta(seconds=backoff(c.attempts + 1)))
                tally.retried += 1
        elif result.status == "ambiguous":
            values.update(state=AMBIGUOUS)
            tally.ambiguous += 1
        else:
            values.update(state=DFAILED, permanent=True)
            tally.failed += 1
        changed = rowcount(session.execute(
            update(d).where(d.id == c.id, *guard).values(**values)
            .execution_options(synchronize_session=False)
        ))
        if not changed:
            tally.lost += 1
            continue
        if result.status == "failed" and result.hard_bounce:
            sub = session.get(Subscriber, c.subscriber_id)
            if sub is not None and sub.status == ACTIVE:
                set_status(session, sub, result.suppress_reason or BOUNCED, source="dispatch",
                           detail=result.error[:500], at=now)
                tally.bounced += 1
    if sent_rows:
        stmt = (
            update(d)
            .where(d.id == bindparam("b_id"), d.claimed_by == bindparam("b_worker"),
                   d.state == CLAIMED)
            .values(state=DELIVERED, provider_id=bindparam("b_pid"),
                    message_id=bindparam("b_mid"), sent_at=bindparam("b_now"),
                    attempts=bindparam("b_att"), lease_until=None, error="")
            .execution_options(synchronize_session=False)
        )
        conn = session.connection()
        changed = conn.execute(stmt, sent_rows).rowcount
        if changed is None or changed < 0:
            changed = len(sent_rows)
        tally.sent += changed
        tally.lost += len(sent_rows) - changed
    return tally


def counts(session: Session, edition_id: int) -> dict[str, int]:
    rows = session.execute(
        select(Delivery.state, func.count()).where(Delivery.edition_id == edition_id)
        .group_by(Delivery.state)
    )
    # (HELD, rows waiting for a subject test's decision, only when there are any)
    result = {QUEUED: 0, CLAIMED: 0, DELIVERED: 0, DFAILED: 0, AMBIGUOUS: 0, WITHDRAWN: 0,
              DSKIPPED: 0}
    result.update({state: n for state, n in rows})
    return result


def next_due(session: Session, edition_id: int) -> datetime | None:
    """When the earliest not-yet-due row becomes claimable (retry backoff, foreign lease)."""
    d = Delivery
    q1 = select(func.min(d.next_attempt_at)).where(d.edition_id == edition_id, d.state == QUEUED)
    q2 = select(func.min(d.lease_until)).where(d.edition_id == edition_id, d.state == CLAIMED)
    times = [t for t in (session.scalar(q1), session.scalar(q2)) if t is not None]
    if not times:
        return None
    dialect = session.get_bind().dialect
    return min(_read_time(t, dialect) for t in times)


def _read_time(value: Any, dialect: Dialect) -> datetime:
    """A time read back from the database as an aware UTC datetime (a datetime or its text)."""
    if not isinstance(value, datetime):
        return _parse(value)
    converted = UTCDateTime().process_result_value(value, dialect)
    assert converted is not None  # (only None reads back as None)
    return converted


def _parse(value: Any) -> datetime:
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def message_id_for(secret: str, edition: Edition, delivery_id: int, domain: str) -> str:
    """Deterministic per ledger row: a retry or a re-send after a crash reuses the same id, so the
    file outbox overwrites rather than duplicates and receivers can de-duplicate; a keyed hash
    keeps ids unguessable across editions. (A send makes many: use `MessageIds`.)"""
    return MessageIds(secret, edition, domain).make(delivery_id)


class MessageIds:
    """The Message-IDs of one edition's rows (`message_id_for`), keyed hash set up once."""

    def __init__(self, secret: str, edition: Edition, domain: str) -> None:
        self._mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
        self._edition_id = edition.id
        self._prefix = f"<{edition.edition_date:%Y%m%d}."
        self._suffix = f"@{domain}>"

    def make(self, delivery_id: int) -> str:
        mac = self._mac.copy()
        mac.update(f"{self._edition_id}:{delivery_id}".encode())
        return f"{self._prefix}{delivery_id}.{mac.hexdigest()[:12]}{self._suffix}"


# ---- the edition's row, for the dispatcher ---------------------------------------------------
def edition_state(session: Session, edition_id: int) -> str:
    """The edition's state ("" when it is gone): workers look it up to stop on pause/cancel."""
    return session.scalar(select(Edition.state).where(Edition.id == edition_id)) or ""


def detached_edition(session: Session, edition_id: int) -> Edition | None:
    """The edition, detached from `session` so that its columns stay readable once the
    session has closed (see `load_edition`)."""
    edition = session.get(Edition, edition_id)
    if edition is not None:
        session.expunge(edition)
    return edition


def load_edition(sessions: sessionmaker[Session], day: date,
                 kind: str = DAILY) -> Edition | None:
    """The edition for `day`, or None, read in a session of its own and detached from it.

    Callers (the CLI, the web views, the pipeline, the dispatcher) read its columns long
    after that session closed, and must never write through it by accident.
    """
    with sessions() as session:
        edition = session.scalar(select(Edition).where(Edition.kind == kind,
                                                       Edition.edition_date == day))
        if edition is not None:
            session.expunge(edition)
        return edition


def requeue_claims(session: Session, edition_id: int) -> None:
    """Every claimed row of the edition back to the queue: on SQLite the one dispatcher, at
    its start, knows any claim left behind belongs to a run that died."""
    session.execute(
        update(Delivery)
        .where(Delivery.edition_id == edition_id, Delivery.state == CLAIMED)
        .values(**back_to_queue())
    )


def finish_if_done(session: Session, edition_id: int, now: datetime) -> bool:
    """Mark a sending edition sent, with its counts, once no row is queued or claimed; with
    rows held for a subject test, mark it testing instead (the test groups are out)."""
    c = counts(session, edition_id)
    if c["queued"] or c["claimed"]:
        return False
    if c.get(HELD):
        session.execute(update(Edition).where(Edition.id == edition_id,
                                              Edition.state == SENDING)
                        .values(state=TESTING))
        return True
    done = session.execute(
        update(Edition).where(Edition.id == edition_id, Edition.state == SENDING)
        .values(state=SENT, finished_at=now,
                sent_count=c[DELIVERED], failed_count=c["failed"] + c["ambiguous"])
    )
    if rowcount(done):
        edition = session.get(Edition, edition_id)
        if edition is not None:
            outbox.emit(session, outbox.EDITION_SENT, {
                "id": edition_id, "date": edition.edition_date.isoformat(),
                "kind": edition.kind, "subject": edition.subject,
                "counts": {"sent": c[DELIVERED], "failed": c["failed"],
                           "unknown": c["ambiguous"], "withdrawn": c["withdrawn"],
                           "skipped": c.get("skipped", 0)}}, at=now)
    return True


def pause_send(session: Session, edition_id: int, note: str) -> None:
    """Pause a sending edition, saying why (the note shows in status and on the staff pages)."""
    session.execute(
        update(Edition).where(Edition.id == edition_id, Edition.state == SENDING)
        .values(state=PAUSED_SEND, note=note[:2000])
    )


def commit_without_waiting(session: Session) -> None:
    """On PostgreSQL, let this transaction's commit return before it reaches the disk: a
    database crash could lose it, and then the claim's lease brings the rows back."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection().exec_driver_sql("SET LOCAL synchronous_commit = off")
