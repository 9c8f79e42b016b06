"""editions.kind: the daily round-up and the weekly digest

The weekly digest is an edition of its own kind, so a date may now carry both a daily and
a weekly edition: the unique key becomes (kind, edition_date). Existing editions are daily.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 17:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("editions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=10), nullable=False,
                                      server_default="daily"))
        batch_op.drop_constraint("uq_editions_edition_date", type_="unique")
        batch_op.create_unique_constraint("uq_editions_kind_date", ["kind", "edition_date"])


def downgrade() -> None:
    # (Fails while a weekly edition shares its date with a daily one: delete it first.)
    with op.batch_alter_table("editions", schema=None) as batch_op:
        batch_op.drop_constraint("uq_editions_kind_date", type_="unique")
        batch_op.create_unique_constraint("uq_editions_edition_date", ["edition_date"])
        batch_op.drop_column("kind")
