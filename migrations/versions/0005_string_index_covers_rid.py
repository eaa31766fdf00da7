"""The string index carries the resource's rid (INCLUDE), so the matches of a string search
are read from the index alone; before, each matching index row cost a heap fetch.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX search_string_value_idx")
    op.execute("CREATE INDEX search_string_value_idx ON search_string "
               "(resource_type, code, value text_pattern_ops) INCLUDE (rid)")


def downgrade() -> None:
    op.execute("DROP INDEX search_string_value_idx")
    op.execute("CREATE INDEX search_string_value_idx ON search_string "
               "(resource_type, code, value text_pattern_ops)")
