"""A resource's string index rows are found by rid and parameter together, so testing one
resource for a string match (a walk over ids that tests each row, santong.search.engine) is
one index lookup instead of reading all of the resource's string rows (a Patient has 20–30).

The index replaces the one on rid alone: it serves everything that did (a resource's rows are
deleted by rid on update), at a few bytes more per row.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX search_string_rid_code_idx ON search_string (rid, code)")
    op.execute("DROP INDEX search_string_rid_idx")


def downgrade() -> None:
    op.execute("CREATE INDEX search_string_rid_idx ON search_string (rid)")
    op.execute("DROP INDEX search_string_rid_code_idx")
