"""Current versions' JSON kept uncompressed up to a page: `resource` with `toast_tuple_target
= 8160` (PostgreSQL's largest), so a row is compressed or moved out of line only past ~8 KB
instead of ~2 KB.

Every read and search of a resource whose row passed 2 KB decompressed it (pglz): 80 % of
the benchmark's Patients (2.0 KB of JSON on average). On the kept 10,000-patient database, a
family-name search's first page (20 Patients) cost PostgreSQL 0.39-0.40 ms of CPU with them
compressed and 0.35-0.37 ms without, alternating on the same rows; a create compresses once
(its history row) instead of twice. The price is disk: those Patients' rows 1.3 -> 2.0 KB.
`resource_history` keeps the default (it grows with every version, and is read rarely).

Rows written before keep their compression until they are next written.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-27
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE resource SET (toast_tuple_target = 8160)")


def downgrade() -> None:
    op.execute("ALTER TABLE resource RESET (toast_tuple_target)")
