"""Version counters of cached definitions (santong.storage.versions).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "definition_version",
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(table, [{"kind": "profiles", "version": 0},
                           {"kind": "search-parameters", "version": 0}])


def downgrade() -> None:
    op.drop_table("definition_version")
