"""Typed SQLAlchemy models: subscribers, articles, editions, the delivery ledger.

The ledger (`Delivery`) is unique on (edition, subscriber): that constraint, not any cursor or
counter, is what makes "exactly once per subscriber" hold across crashes and re-runs.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC, always returns aware UTC datetimes (SQLite forgets the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON}


# Subscriber statuses (PRODUCT.md). Only ACTIVE receives editions.
PENDING, ACTIVE, PAUSED, UNSUBSCRIBED, BOUNCED, COMPLAINED = (
    "pending", "active", "paused", "unsubscribed", "bounced", "complained",
)
STATUSES = (PENDING, ACTIVE, PAUSED, UNSUBSCRIBED, BOUNCED, COMPLAINED)
# How often a reader gets the round-up.
DAILY, WEEKLY = "daily", "weekly"
FREQUENCIES = (DAILY, WEEKLY)


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    #: What the greeting uses ("Good morning, Siân"); never derived from `name` at send time.
    first_name: Mapped[str] = mapped_column(String(100), default="", server_default="")
    #: DAILY or WEEKLY (the weekly digest).
    frequency: Mapped[str] = mapped_column(String(10), default="daily", server_default="daily")
    #: The `sections` the reader chose, joined by ";" in the configured order; "" means all
    #: of them. A string, not a list, so a send groups its readers by it in SQL.
    sections: Mapped[str] = mapped_column(String(400), default="", server_default="")
    #: When the welcome email went to them (once per reader, on confirming).
    welcomed_at: Mapped[datetime | None] = mapped_column(default=None)
    status: Mapped[str] = mapped_column(String(20), default=PENDING, index=True)
    source: Mapped[str] = mapped_column(String(40), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(default=None)
    paused_until: Mapped[datetime | None] = mapped_column(default=None)
    soft_bounces: Mapped[int] = mapped_column(Integer, default=0)

    events: Mapped[list[SubscriberEvent]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan", passive_deletes=True,
        order_by="SubscriberEvent.id",
    )


class SubscriberEvent(Base):
    """What happened to a subscriber and why: the audit trail for status changes."""

    __tablename__ = "subscriber_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(30))
    source: Mapped[str] = mapped_column(String(40), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    subscriber: Mapped[Subscriber] = relationship(back_populates="events")


class Suppression(Base):
    """Hashes of erased or suppressed addresses, so an import cannot silently re-add them."""

    __tablename__ = "suppressions"

    email_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Article(Base):
    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guid: Mapped[str] = mapped_column(String(500), unique=True)
    title: Mapped[str] = mapped_column(String(500))
    link: Mapped[str] = mapped_column(String(1000))
    author: Mapped[str] = mapped_column(String(300), default="")
    summary_html: Mapped[str] = mapped_column(Text, default="")
    summary_text: Mapped[str] = mapped_column(Text, default="")
    content_html: Mapped[str] = mapped_column(Text, default="")
    image_url: Mapped[str] = mapped_column(String(1000), default="")
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    section: Mapped[str] = mapped_column(String(100), default="")
    published_at: Mapped[datetime] = mapped_column(index=True)
    fetched_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class FeedState(Base):
    """Validators and health of the last fetch of a feed URL (conditional GET, `status`)."""

    __tablename__ = "feed_state"

    url: Mapped[str] = mapped_column(String(1000), primary_key=True)
    etag: Mapped[str] = mapped_column(String(500), default="")
    last_modified: Mapped[str] = mapped_column(String(100), default="")
    last_fetch_at: Mapped[datetime | None] = mapped_column(default=None)
    last_status: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_ok_at: Mapped[datetime | None] = mapped_column(default=None)


# Edition states.
DRAFT, READY, SENDING, PAUSED_SEND, SENT, SKIPPED, CANCELLED, FAILED = (
    "draft", "ready", "sending", "paused", "sent", "skipped", "cancelled", "failed",
)
# A subject test's groups have been sent; the rest of the audience waits for the send time,
# when the winning subject is chosen (`mailer.subject_test`).
TESTING = "testing"


class Edition(Base):
    __tablename__ = "editions"
    __table_args__ = (UniqueConstraint("kind", "edition_date", name="uq_editions_kind_date"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: DAILY (the weekday round-up) or WEEKLY (the digest): one edition of each kind a date.
    kind: Mapped[str] = mapped_column(String(10), default=DAILY, server_default="daily")
    edition_date: Mapped[date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(20), default=DRAFT, index=True)
    subject: Mapped[str] = mapped_column(String(300), default="")
    preheader: Mapped[str] = mapped_column(String(300), default="")
    editor_note: Mapped[str] = mapped_column(Text, default="")
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    html: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    archive_html: Mapped[str] = mapped_column(Text, default="")
    # The random key naming the per-recipient slots in `html`/`text` (mailer.placeholders).
    placeholder_key: Mapped[str] = mapped_column(String(32), default="")
    # How this edition's links were rendered (`click_tracking` when it was rendered): "off",
    # "aggregate" or "per-reader". Changing the setting affects only editions rendered later.
    click_tracking: Mapped[str] = mapped_column(String(20), default="off", server_default="off")
    audience: Mapped[int] = mapped_column(Integer, default=0)
    sent_count: Mapped[int] = mapped_column(Integer, default=0)
    failed_count: Mapped[int] = mapped_column(Integer, default=0)
    preflight: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Articles staff dropped from this edition (never re-added by a refresh).
    excluded: Mapped[list[int]] = mapped_column(JSON, default=list)
    # The "Most read" block's stories as rendered (article ids): variants reuse them.
    most_read: Mapped[list[int]] = mapped_column(JSON, default=list, server_default="[]")
    # Subject templates staff set for a subject test of this edition ([]: the settings').
    subject_variants: Mapped[list[str]] = mapped_column(JSON, default=list,
                                                        server_default="[]")
    # The subject test's record: subjects, shares, counts, rule, decision (`subject_test`).
    subject_test: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict,
                                                         server_default="{}")
    # Staff reordered or pinned: a refresh appends new articles but keeps their order.
    arranged: Mapped[bool] = mapped_column(Boolean, default=False)
    forced_reason: Mapped[str] = mapped_column(Text, default="")
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    items: Mapped[list[EditionArticle]] = relationship(
        back_populates="edition", cascade="all, delete-orphan", order_by="EditionArticle.position"
    )


class EditionArticle(Base):
    __tablename__ = "edition_articles"
    __table_args__ = (UniqueConstraint("edition_id", "article_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    edition_id: Mapped[int] = mapped_column(
        ForeignKey("editions.id", ondelete="CASCADE"), index=True
    )
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)

    edition: Mapped[Edition] = relationship(back_populates="items")
    article: Mapped[Article] = relationship()


# Delivery (ledger) states.
QUEUED, CLAIMED, DELIVERED, DFAILED, AMBIGUOUS = "queued", "claimed", "sent", "failed", "ambiguous"
# Not sent because the reader stopped receiving (unsubscribed, bounced, complained, paused,
# erased) after the snapshot and before their row was claimed: `subscribers.withdraw_queued`.
WITHDRAWN = "withdrawn"
# Not sent because nothing in the edition is in the sections the reader chose (counted apart:
# neither sent nor failed).
DSKIPPED = "skipped"
# Waiting for the end of a subject test (`mailer.subject_test`): never claimed until the
# winner is chosen, then queued with its subject.
HELD = "held"


class Delivery(Base):
    """One row per (edition, subscriber): the unit of progress of a send."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("edition_id", "subscriber_id", name="uq_deliveries_edition_subscriber"),
        # Claims read one state's rows in id order: the id in the key saves PostgreSQL a sort
        # of every queued row per claim (SQLite's index entries end in the rowid anyway).
        Index("ix_deliveries_edition_state_id", "edition_id", "state", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(Integer)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200), default="")
    first_name: Mapped[str] = mapped_column(String(100), default="", server_default="")
    #: The reader's chosen sections at the snapshot (`Subscriber.sections`): which rendering
    #: of the edition (`EditionVariant`) they get; "" is the whole edition.
    variant: Mapped[str] = mapped_column(String(400), default="", server_default="")
    state: Mapped[str] = mapped_column(String(20), default=QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str] = mapped_column(String(100), default="")
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    message_id: Mapped[str] = mapped_column(String(300), default="")
    provider_id: Mapped[str] = mapped_column(String(300), default="")
    error: Mapped[str] = mapped_column(Text, default="")
    permanent: Mapped[bool] = mapped_column(Boolean, default=False)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)


class RunLock(Base):
    """A named lock with a lease: one dispatcher per edition on SQLite, run lock for cron."""

    __tablename__ = "run_locks"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200), default="")
    lease_until: Mapped[datetime] = mapped_column()
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)


class Meta(Base):
    """Instance-wide key/value settings (generated secret key, staff overrides)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SendLog(Base):
    """Test sends and alerts: messages that are not part of the ledger, kept for the record."""

    __tablename__ = "send_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    edition_id: Mapped[int | None] = mapped_column(Integer, default=None)
    recipients: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StaffUser(Base):
    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(20), default="editor")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(default=None)
    #: The hard lock's state, unused since sign-in is throttled (`mailer.web.throttle`); the
    #: columns stay so a process still running older code during an upgrade keeps working.
    #: A later migration can drop them.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    #: Written into the session cookie at sign-in and compared on every request; signing out
    #: and a password change add one, ending every cookie of the account issued before.
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: An admin turned the account off: it cannot sign in (None: in use).
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)
    #: An editor an admin allowed to erase subscribers (admins always may).
    can_erase: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class AuditEntry(Base):
    """Who did what and when (sends, tests, edits, subscriber changes)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(60))
    target: Mapped[str] = mapped_column(String(300), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class WebhookEvent(Base):
    """Provider events as received; unique per provider event id so replays apply once."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("provider", "event_id", name="uq_webhook_events_provider_event"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(30))
    event_id: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(30))
    email: Mapped[str] = mapped_column(String(320), default="")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class RateEvent(Base):
    """Hits against a rate-limit key (per IP, per address), shared by every web process."""

    __tablename__ = "rate_events"
    __table_args__ = (Index("ix_rate_events_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(400))
    at: Mapped[datetime] = mapped_column()


# Kinds of an edition's links (`EditionLink.kind`). TRAP and OPEN are never shown to a person:
# the scanner trap link and the open pixel, kept in the same list so one token format serves.
ARTICLE, DONATE, SIGNUP, ARCHIVE, TRAP, OPEN = (
    "article", "donate", "signup", "archive", "trap", "open",
)
LINK_KINDS = (ARTICLE, DONATE, SIGNUP, ARCHIVE, TRAP, OPEN)


class EditionLink(Base):
    """One link of a rendered edition: what `/r/<token>` may redirect to, and nothing else.

    A token names (edition, position); the redirect goes to `target` as stored here, so no
    token can send a reader anywhere the edition did not link to.
    """

    __tablename__ = "edition_links"
    __table_args__ = (
        UniqueConstraint("edition_id", "position", name="uq_edition_links_edition_position"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    #: The link as the feed or the settings gave it, without our UTM parameters (reports).
    url: Mapped[str] = mapped_column(String(2000))
    #: Where a click goes: `url` with the UTM parameters, as the untracked email would link.
    target: Mapped[str] = mapped_column(String(2500))
    title: Mapped[str] = mapped_column(String(500), default="")
    article_id: Mapped[int | None] = mapped_column(Integer, default=None)
    utm_content: Mapped[str] = mapped_column(String(200), default="")


# Click verdicts. HUMAN counts; every other verdict is "filtered", each naming why.
HUMAN, BOT, PREFETCH, TRAPPED, BURST = "human", "bot", "prefetch", "trap", "burst"
#: Before the edition's send started: staff previews and test sends.
PREVIEW = "preview"
FILTERED = (BOT, PREFETCH, TRAPPED, BURST, PREVIEW)


class Click(Base):
    """One followed link (or, with the open pixel on, one image load of kind OPEN).

    No IP address and no user agent is stored. `fingerprint` is a hash of both with a salt
    that changes every day and is deleted after 48 hours (`mailer.clicks.fingerprint`); it is
    set to NULL with it, after which nobody can tell two clicks' sources apart. `delivery_id`
    is set only for editions sent with `click_tracking = "per-reader"`.
    """

    __tablename__ = "clicks"
    __table_args__ = (
        Index("ix_clicks_edition_position", "edition_id", "position"),
        Index("ix_clicks_edition_fingerprint", "edition_id", "fingerprint"),
        # Only per-reader clicks have a delivery (erasure looks them up): the others, nearly
        # all of them, cost this index nothing.
        Index("ix_clicks_delivery", "delivery_id",
              sqlite_where=text("delivery_id IS NOT NULL"),
              postgresql_where=text("delivery_id IS NOT NULL")),
        # Only the trap's clicks (rare): which sources followed it, without reading every
        # click of each source (`mailer.clicks.classify.apply_rules`).
        Index("ix_clicks_trapped", "edition_id", "fingerprint",
              sqlite_where=text("verdict = 'trap'"), postgresql_where=text("verdict = 'trap'")),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(index=True)
    verdict: Mapped[str] = mapped_column(String(20), default=HUMAN)
    fingerprint: Mapped[str | None] = mapped_column(String(32), default=None)
    delivery_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    #: The subject test group whose copy carried the link (0: not in a test).
    test_group: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Gift(Base):
    """A donation from the donation platform's export (`mailer donations import`).

    Attributed to an edition through the donate link's utm_content; linked to a subscriber
    only for per-reader editions whose reader gave from their subscribed address. The donor's
    address itself is never stored.
    """

    __tablename__ = "gifts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: What makes a row of an export the same gift when the file is imported again.
    reference: Mapped[str] = mapped_column(String(200), unique=True)
    given_on: Mapped[date] = mapped_column(Date, index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)  # pence, cents
    currency: Mapped[str] = mapped_column(String(3))
    utm_content: Mapped[str] = mapped_column(String(200), default="")
    edition_id: Mapped[int | None] = mapped_column(
        ForeignKey("editions.id", ondelete="SET NULL"), default=None, index=True
    )
    subscriber_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)


class EditionVariant(Base):
    """The edition as readers who chose some sections get it: rendered once per distinct
    choice in the audience, with its own per-reader slots; the whole edition is the edition's
    own `html`/`text`."""

    __tablename__ = "edition_variants"
    __table_args__ = (
        UniqueConstraint("edition_id", "variant", name="uq_edition_variants_edition_variant"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    variant: Mapped[str] = mapped_column(String(400))
    html: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    placeholder_key: Mapped[str] = mapped_column(String(32), default="")
    articles: Mapped[int] = mapped_column(Integer, default=0)
    #: A subject test group's subject line ("": the edition's subject).
    subject: Mapped[str] = mapped_column(String(300), default="", server_default="")


class ApiKey(Base):
    """A key of the public API (`mailer api-keys`): only its SHA-256 is kept."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    #: The key's first characters, shown in lists so staff can tell keys apart.
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_by: Mapped[str] = mapped_column(String(320), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class ApiReply(Base):
    """The answer to a POST carrying an `Idempotency-Key`, replayed for 24 hours."""

    __tablename__ = "api_replies"
    __table_args__ = (UniqueConstraint("key_id", "idempotency_key",
                                       name="uq_api_replies_key_id_idempotency_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer, default=0)  # 0: still being answered
    body: Mapped[str] = mapped_column(Text, default="")
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: The reader the answer is about, so erasing them erases the stored answer too.
    subscriber_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class HookEndpoint(Base):
    """A receiver of our outgoing webhooks: its URL, the events it wants and its secret."""

    __tablename__ = "hook_endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: The Standard Webhooks signing secret ("whsec_..."): needed to sign, so not hashed.
    secret: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(200), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: When its deliveries started failing (None while it answers); 24 h of it disables it.
    failing_since: Mapped[datetime | None] = mapped_column(default=None)
    disabled_reason: Mapped[str] = mapped_column(String(500), default="")


# States of an outgoing webhook delivery (`HookDelivery.state`).
HOOK_PENDING, HOOK_DELIVERED, HOOK_FAILED = "pending", "delivered", "failed"


class HookDelivery(Base):
    """The outbox: one event for one endpoint, written in the transaction of the change."""

    __tablename__ = "hook_deliveries"
    __table_args__ = (Index("ix_hook_deliveries_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The Standard Webhooks `webhook-id` ("msg_..."): one per event, the same for every
    #: endpoint and every retry, so receivers deduplicate by it.
    message_id: Mapped[str] = mapped_column(String(40), index=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("hook_endpoints.id", ondelete="CASCADE"),
                                             index=True)
    event_type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    subscriber_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    state: Mapped[str] = mapped_column(String(12), default=HOOK_PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: Retries stop after this (24 h after the event, or after "send again").
    expires_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: A delivering process's lease: a process killed mid-batch leaves rows that come back.
    leased_until: Mapped[datetime | None] = mapped_column(default=None)
    last_status: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(String(500), default="")
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
