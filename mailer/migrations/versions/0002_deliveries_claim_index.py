"""deliveries: claim index on (edition_id, state, id)

A claim reads one state's rows of an edition in id order and stops at its batch size; with the
id in the index key that is a range read on SQLite and PostgreSQL alike, instead of a scan and
sort of the whole edition per claim.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 11:20:00
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_edition_state_id", ["edition_id", "state", "id"],
                              unique=False)
        batch_op.drop_index("ix_deliveries_edition_state")


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_edition_state", ["edition_id", "state"],
                              unique=False)
        batch_op.drop_index("ix_deliveries_edition_state_id")
