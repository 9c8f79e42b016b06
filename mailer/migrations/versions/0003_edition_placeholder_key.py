"""editions: placeholder_key, the random key naming an edition's per-recipient slots

Rendered editions used fixed placeholder names (``%%UNSUBSCRIBE_URL%%`` ...) that text from a
feed could spell out; each edition now names its slots with a random key of its own
(mailer.placeholders). Editions rendered before this revision get a key here and their stored
bodies are rewritten to it, so a send under way at the upgrade finishes; editions that can
still change are rendered again, with a fresh key, before they send.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 18:00:00
"""
import secrets

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_LEGACY = {
    "%%GREETING%%": "%%GREETING_{key}%%",
    "%%UNSUBSCRIBE_URL%%": "%%UNSUBSCRIBE_URL_{key}%%",
    "%%PREFERENCES_URL%%": "%%PREFERENCES_URL_{key}%%",
}


def upgrade() -> None:
    with op.batch_alter_table("editions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("placeholder_key", sa.String(length=32), nullable=False,
                                      server_default=""))
    editions = sa.table("editions", sa.column("id", sa.Integer), sa.column("html", sa.Text),
                        sa.column("text", sa.Text), sa.column("placeholder_key", sa.String))
    conn = op.get_bind()
    for row in conn.execute(sa.select(editions.c.id, editions.c.html, editions.c.text)).all():
        key = secrets.token_hex(16)
        html, text = row.html or "", row.text or ""
        for old, new in _LEGACY.items():
            html = html.replace(old, new.format(key=key))
            text = text.replace(old, new.format(key=key))
        conn.execute(editions.update().where(editions.c.id == row.id)
                     .values(html=html, text=text, placeholder_key=key))


def downgrade() -> None:
    with op.batch_alter_table("editions", schema=None) as batch_op:
        batch_op.drop_column("placeholder_key")
