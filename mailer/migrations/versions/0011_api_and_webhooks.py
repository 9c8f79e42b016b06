"""The public API's keys and replayed answers, and the outbox of outgoing webhooks

`api_keys` holds each key's SHA-256 (never the key), its scopes and when it was last used;
`api_replies` the answers to POSTs that carried an Idempotency-Key (kept 24 hours).
`hook_endpoints` are the receivers staff registered; `hook_deliveries` is the outbox: one row
per event and endpoint, written in the transaction of the change it reports, then delivered
by the scheduler (or `mailer webhooks deliver`) with retries for 24 hours.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 04:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "api_replies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], ondelete="CASCADE",
                                name=op.f("fk_api_replies_key_id_api_keys")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_replies")),
        sa.UniqueConstraint("key_id", "idempotency_key",
                            name="uq_api_replies_key_id_idempotency_key"),
    )
    op.create_index(op.f("ix_api_replies_subscriber_id"), "api_replies", ["subscriber_id"])
    op.create_index(op.f("ix_api_replies_created_at"), "api_replies", ["created_at"])
    op.create_table(
        "hook_endpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_reason", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hook_endpoints")),
    )
    op.create_table(
        "hook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["endpoint_id"], ["hook_endpoints.id"], ondelete="CASCADE",
                                name=op.f("fk_hook_deliveries_endpoint_id_hook_endpoints")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hook_deliveries")),
    )
    op.create_index("ix_hook_deliveries_due", "hook_deliveries", ["state", "next_attempt_at"])
    op.create_index(op.f("ix_hook_deliveries_message_id"), "hook_deliveries", ["message_id"])
    op.create_index(op.f("ix_hook_deliveries_endpoint_id"), "hook_deliveries", ["endpoint_id"])
    op.create_index(op.f("ix_hook_deliveries_subscriber_id"), "hook_deliveries",
                    ["subscriber_id"])


def downgrade() -> None:
    op.drop_table("hook_deliveries")
    op.drop_table("hook_endpoints")
    op.drop_table("api_replies")
    op.drop_table("api_keys")
