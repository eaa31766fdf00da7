"""Searches without `_sort` list resources in the order they were created (their rid), not by
id, and two indexes give that order:

- `resource (resource_type, rid) INCLUDE (id, deleted)`: a search that walks a type's resources
  in order (a dense match, a `_has`) reads them from this index alone, as it read the key
  index before (0006); in rid order the walk also meets the heap and the index rows of the
  same resources close together.
- the string value index has rid as its last key column instead of INCLUDEd (0005): the
  rows of one value come in rid order, so a page of a name search is read from the index
  (santong.search.engine, the matches of a prefix in order) instead of a walk.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX resource_type_rid_idx ON resource (resource_type, rid)"
               " INCLUDE (id, deleted)")
    op.execute("DROP INDEX search_string_value_idx")
    op.execute("CREATE INDEX search_string_value_idx ON search_string "
               "(resource_type, code, value text_pattern_ops, rid)")


def downgrade() -> None:
    op.execute("DROP INDEX search_string_value_idx")
    op.execute("CREATE INDEX search_string_value_idx ON search_string "
               "(resource_type, code, value text_pattern_ops) INCLUDE (rid)")
    op.execute("DROP INDEX resource_type_rid_idx")
