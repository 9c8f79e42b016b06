"""The subject test: test groups in the ledger, their subjects and their clicks

A subject test sends each subject line to a random share of the audience before the send
time; the rest wait in the ledger as "held" rows until the winner is chosen. Each group's
rendering carries its subject (`edition_variants.subject`, "" for the edition's own) and
click tokens that name the group, so clicks are counted per group (`clicks.test_group`, 0
outside a test) without naming any reader. `editions.subject_variants` holds the subject
templates staff set for one edition; `editions.subject_test` records the test: the subjects,
shares, counts, the rule and the decision.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 23:55:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("editions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject_variants", sa.JSON(), nullable=False,
                                      server_default="[]"))
        batch_op.add_column(sa.Column("subject_test", sa.JSON(), nullable=False,
                                      server_default="{}"))
    with op.batch_alter_table("edition_variants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject", sa.String(length=300), nullable=False,
                                      server_default=""))
    with op.batch_alter_table("clicks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("test_group", sa.Integer(), nullable=False,
                                      server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("clicks", schema=None) as batch_op:
        batch_op.drop_column("test_group")
    with op.batch_alter_table("edition_variants", schema=None) as batch_op:
        batch_op.drop_column("subject")
    with op.batch_alter_table("editions", schema=None) as batch_op:
        batch_op.drop_column("subject_test")
        batch_op.drop_column("subject_variants")
