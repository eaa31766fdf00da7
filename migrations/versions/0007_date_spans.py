"""Date index rows carry their code's span (earliest and latest bound of all the resource's
values of that code) and the span's length class, indexed so that a two-sided date range
(`date=ge2024-05-01&date=lt2024-06-01`, `date=2024-05`) starts from the spans near its window:
one index range per length class. Before, neither bound alone was selective and PostgreSQL
walked a type's resources testing both: a month with few matches read every Encounter.

Existing rows are filled in here (a rewrite of search_date: on a large database this takes a
while and holds the table's lock).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE search_date ADD COLUMN span_low timestamptz,"
               " ADD COLUMN span_high timestamptz, ADD COLUMN span_bucket smallint")
    # As santong.search.index.with_spans and span_bucket: a span of n seconds (rounded up)
    # is in bucket floor(log2(n)) (numeric log: exact at powers of two).
    op.execute(
        "UPDATE search_date d SET span_low = s.first, span_high = s.last,"
        " span_bucket = floor(log(2::numeric, greatest(1, ceil(extract(epoch FROM"
        " s.last - s.first)))))::smallint"
        " FROM (SELECT rid, code, min(least(low, high)) AS first,"
        " max(greatest(low, high)) AS last FROM search_date GROUP BY rid, code) s"
        " WHERE s.rid = d.rid AND s.code = d.code")
    op.execute("ALTER TABLE search_date ALTER COLUMN span_low SET NOT NULL,"
               " ALTER COLUMN span_high SET NOT NULL, ALTER COLUMN span_bucket SET NOT NULL")
    op.execute("CREATE INDEX search_date_span_idx ON search_date"
               " (resource_type, code, span_bucket, span_low) INCLUDE (span_high, rid)")


def downgrade() -> None:
    op.execute("DROP INDEX search_date_span_idx")
    op.execute("ALTER TABLE search_date DROP COLUMN span_low, DROP COLUMN span_high,"
               " DROP COLUMN span_bucket")
