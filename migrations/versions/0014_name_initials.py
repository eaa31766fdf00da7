"""A name's first character, in rid order: `search_string (resource_type, code, left(value, 1),
rid) INCLUDE (value)` for the rows of `name` and `given`. A one-character name prefix
(`name=明`) is the commonest Chinese name search, and often the prefix of many distinct names
(明 of 72 given names among 190,000 patients): read from this index, a page is one range of
about a page of rows, however many names share the character (santong.search.query,
Compiler._initial_in_rid_order).

Partial, so that other strings do not pay for it: with name, given and family a Patient's
create wrote five more index rows, about 5 % more of PostgreSQL's time (alternating on the
kept database). Not family: a surname's first character is mostly the whole surname, one
value for the skip scan. With value INCLUDEd PostgreSQL reads the index alone, which it does
not for an expression over a column the index lacks (a page's rids: 0.15-0.22 -> 0.05-0.09 ms).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The codes are santong.search.query.NAME_INITIAL_CODES; a query names its code as a
    # literal so that PostgreSQL can match the predicate in a generic plan too.
    op.execute("CREATE INDEX search_string_initial_idx ON search_string"
               " (resource_type, code, left(value, 1), rid) INCLUDE (value)"
               " WHERE code IN ('name', 'given')")


def downgrade() -> None:
    op.execute("DROP INDEX search_string_initial_idx")
