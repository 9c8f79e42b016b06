"""clicks: each edition's link list, the clicks on it, donations, and the tracking mode

An edition's links now go through `/r/<token>`, a token naming the edition and a position in
its stored link list (`edition_links`), so a redirect can only ever reach a link the edition
carried. `clicks` records each followed link with a verdict (human, or filtered and why), a
daily-salted fingerprint that is cleared after 48 hours, and the delivery only for editions
sent in per-reader mode. `gifts` holds donations imported from the donation platform,
attributed to editions by the donate link's utm_content. `editions.click_tracking` is the mode
an edition was rendered with; editions rendered before this revision are "off".

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 09:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("editions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("click_tracking", sa.String(length=20), nullable=False,
                                      server_default="off"))
    op.create_table(
        "edition_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("target", sa.String(length=2500), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=True),
        sa.Column("utm_content", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["edition_id"], ["editions.id"],
                                name=op.f("fk_edition_links_edition_id_editions"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edition_links")),
        sa.UniqueConstraint("edition_id", "position", name="uq_edition_links_edition_position"),
    )
    op.create_table(
        "clicks",
        sa.Column("id", _BIGINT, nullable=False),
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verdict", sa.String(length=20), nullable=False),
        sa.Column("fingerprint", sa.String(length=32), nullable=True),
        sa.Column("delivery_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["edition_id"], ["editions.id"],
                                name=op.f("fk_clicks_edition_id_editions"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clicks")),
    )
    op.create_index("ix_clicks_edition_position", "clicks", ["edition_id", "position"])
    op.create_index("ix_clicks_edition_fingerprint", "clicks", ["edition_id", "fingerprint"])
    op.create_index("ix_clicks_delivery", "clicks", ["delivery_id"])
    op.create_index(op.f("ix_clicks_at"), "clicks", ["at"])
    op.create_table(
        "gifts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("given_on", sa.Date(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("utm_content", sa.String(length=200), nullable=False),
        sa.Column("edition_id", sa.Integer(), nullable=True),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["edition_id"], ["editions.id"],
                                name=op.f("fk_gifts_edition_id_editions"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gifts")),
        sa.UniqueConstraint("reference", name=op.f("uq_gifts_reference")),
    )
    op.create_index(op.f("ix_gifts_given_on"), "gifts", ["given_on"])
    op.create_index(op.f("ix_gifts_edition_id"), "gifts", ["edition_id"])
    op.create_index(op.f("ix_gifts_subscriber_id"), "gifts", ["subscriber_id"])


def downgrade() -> None:
    op.drop_table("gifts")
    op.drop_table("clicks")
    op.drop_table("edition_links")
    with op.batch_alter_table("editions", schema=None) as batch_op:
        batch_op.drop_column("click_tracking")
