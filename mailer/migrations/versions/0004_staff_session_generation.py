"""staff_users: session_generation, so signing out ends a session on the server too

The console's session is Flask's signed cookie; signing out only asked the browser to forget
it, and a copy taken before (a shared computer, a proxy log) stayed valid for its 12 hours.
Each account now has a generation number, written into the cookie at sign-in and compared on
every request; signing out and a password change add one to it, which ends every cookie of
the account issued before. Existing accounts start at 0; cookies issued before this revision
carry no generation and are refused, so everyone signs in once more after the upgrade.

This revision follows 0004 (which was written first and already revises 0002), so the chain
stays linear for databases already at 0004: 0001, 0002, 0004, 0003.

Revision ID: 0003
Revises: 0004
Create Date: 2026-12-03 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("session_generation", sa.Integer(), nullable=False,
                                      server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.drop_column("session_generation")
