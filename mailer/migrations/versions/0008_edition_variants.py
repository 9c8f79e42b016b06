"""deliveries.variant and edition_variants: an edition per choice of sections

A reader who chose some sections gets the edition without the others. The snapshot copies
each reader's choice into the ledger (`variant`, "" for the whole edition), and the edition is
rendered once per distinct choice into `edition_variants`; a reader whose sections have
nothing that day is recorded as "skipped". Existing rows are the whole edition.
`editions.most_read` keeps the "Most read" block's stories, so every variant shows the same.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 10:15:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("editions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("most_read", sa.JSON(), nullable=False,
                                      server_default="[]"))
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("variant", sa.String(length=400), nullable=False,
                                      server_default=""))
    op.create_table(
        "edition_variants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("variant", sa.String(length=400), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("placeholder_key", sa.String(length=32), nullable=False),
        sa.Column("articles", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["edition_id"], ["editions.id"],
                                name=op.f("fk_edition_variants_edition_id_editions"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edition_variants")),
        sa.UniqueConstraint("edition_id", "variant", name="uq_edition_variants_edition_variant"),
    )


def downgrade() -> None:
    op.drop_table("edition_variants")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("variant")
    with op.batch_alter_table("editions", schema=None) as batch_op:
        batch_op.drop_column("most_read")
