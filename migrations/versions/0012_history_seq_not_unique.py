"""History rows lose the unique index on `seq`: no statement looks a version up by it (history
pages by `(last_updated, seq)`, which its own indexes cover), and the identity that draws it
never repeats. One index fewer written with every version.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE resource_history DROP CONSTRAINT resource_history_seq_key")


def downgrade() -> None:
    op.execute("ALTER TABLE resource_history ADD CONSTRAINT resource_history_seq_key"
               " UNIQUE (seq)")
