"""subscribers and deliveries: first_name, what the greeting uses

The greeting said "Good morning, <name>" with the whole name field ("Good morning, Dr Siân
Evans MP"). Readers now have a first name of their own, from the sign-up form's "First name",
an import's first_name (or Mailchimp's First Name / FNAME) or `--first-name`; the ledger keeps
a copy, as it does of the name, so a send fills the greeting without reading subscribers.

Existing subscribers get the first word of their name, unless it is a title (Mr, Dr, Cllr ...)
or a single letter, in which case they are greeted plainly: a wrong first name is worse than
none. Deliveries already in the ledger keep an empty first name (their editions are sent).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 09:55:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TITLES = {"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "professor", "sir", "dame", "lord",
          "lady", "rev", "revd", "cllr", "councillor", "rt", "hon", "the", "fr", "capt"}


def first_word(name: str) -> str:
    words = name.split()
    if not words:
        return ""
    word = words[0].strip(".,")
    if len(word) < 2 or word.lower() in TITLES:
        return ""
    return word[:100]


def upgrade() -> None:
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("first_name", sa.String(length=100), nullable=False,
                                      server_default=""))
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("first_name", sa.String(length=100), nullable=False,
                                      server_default=""))
    subscribers = sa.table("subscribers", sa.column("id", sa.Integer),
                           sa.column("name", sa.String), sa.column("first_name", sa.String))
    conn = op.get_bind()
    rows = conn.execute(sa.select(subscribers.c.id, subscribers.c.name)
                        .where(subscribers.c.name != "")).all()
    values = [{"sub_id": sub_id, "first": first} for sub_id, name in rows
              if (first := first_word(name or ""))]
    if values:  # one executemany, not a statement per reader
        conn.execute(subscribers.update().where(subscribers.c.id == sa.bindparam("sub_id"))
                     .values(first_name=sa.bindparam("first")), values)


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("first_name")
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.drop_column("first_name")
