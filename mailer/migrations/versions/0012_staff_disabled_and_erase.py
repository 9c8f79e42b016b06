"""Staff accounts an admin can disable, and the right to erase subscribers

`staff_users.disabled_at`: an admin turned the account off (it cannot sign in; its sessions
ended); None for an account in use. `staff_users.can_erase`: an editor an admin allowed to
erase subscribers (admins always may).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 04:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("can_erase", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.drop_column("can_erase")
        batch_op.drop_column("disabled_at")
