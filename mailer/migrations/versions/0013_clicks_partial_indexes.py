"""Partial indexes of the rare clicks: those that followed the trap, those of a reader

The flusher asks, for every batch of clicks, which of their sources followed an edition's
trap link (their other clicks are then moved to "filtered"). Trap clicks are rare; the new
`ix_clicks_trapped` holds only them, so the question is answered from a handful of entries
rather than from every click of each source, and writing an ordinary click costs nothing more.
Likewise `ix_clicks_delivery` (erasure's lookup of a reader's clicks) now holds only the clicks
of per-reader editions, the only ones with a delivery.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 07:20:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_TRAPPED = sa.text("verdict = 'trap'")  # (mailer.models.TRAPPED)
_PER_READER = sa.text("delivery_id IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_clicks_trapped", "clicks", ["edition_id", "fingerprint"],
                    sqlite_where=_TRAPPED, postgresql_where=_TRAPPED)
    op.drop_index("ix_clicks_delivery", table_name="clicks")
    op.create_index("ix_clicks_delivery", "clicks", ["delivery_id"],
                    sqlite_where=_PER_READER, postgresql_where=_PER_READER)


def downgrade() -> None:
    op.drop_index("ix_clicks_delivery", table_name="clicks")
    op.create_index("ix_clicks_delivery", "clicks", ["delivery_id"])
    op.drop_index("ix_clicks_trapped", table_name="clicks")
