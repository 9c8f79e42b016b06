"""staff_users: session_generation, so signing out ends a session on the server too

The console's session is Flask's signed cookie; signing out only asked the browser to forget
it, and a copy taken before (a shared computer, a proxy log) stayed valid for its 12 hours.
Each account now has a generation number, written into the cookie at sign-in and compared on
every request; signing out and a password change add one to it, which ends every cookie of
the account issued before. Existing accounts start at 0; cookies issued before this revision
carry no generation and are refused, so everyone signs in once more after the upgrade.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 18:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("session_generation", sa.Integer(), nullable=False,
                                      server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.drop_column("session_generation")
