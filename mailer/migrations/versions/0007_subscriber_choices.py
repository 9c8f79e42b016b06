"""subscribers: frequency, sections and welcomed_at, the readers' own choices

Readers choose daily or weekly, and which of the configured sections they want, stored as
their names joined by ";" (empty means all of them, which is what every existing reader gets;
a string rather than a JSON list so a send can group readers by it in SQL). `welcomed_at` records the
welcome email, sent once, on confirming: existing readers confirmed before there was one and
are never sent it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("frequency", sa.String(length=10), nullable=False,
                                      server_default="daily"))
        batch_op.add_column(sa.Column("sections", sa.String(length=400), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("welcomed_at", sa.DateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.drop_column("welcomed_at")
        batch_op.drop_column("sections")
        batch_op.drop_column("frequency")
