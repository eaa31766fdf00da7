"""Search index tables: one per search parameter type, keyed by resource.rid.

Rows hold the current version's values only; a write replaces them in the same transaction.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _table(name: str, *columns: sa.Column) -> None:
    op.create_table(
        name,
        sa.Column("rid", sa.BigInteger, nullable=False),
        sa.Column("resource_type", sa.Text, nullable=False),
        sa.Column("code", sa.Text, nullable=False),
        *columns,
    )
    op.create_index(f"{name}_rid_idx", name, ["rid"])


def upgrade() -> None:
    _table(
        "search_string",
        sa.Column("value", sa.Text, nullable=False),  # normalised: case and accents folded
        sa.Column("exact", sa.Text, nullable=False),
    )
    # text_pattern_ops: LIKE 'prefix%' uses the index whatever the database collation.
    op.execute("CREATE INDEX search_string_value_idx ON search_string "
               "(resource_type, code, value text_pattern_ops)")
    _table(
        "search_token",
        sa.Column("system", sa.Text),
        sa.Column("value", sa.Text),
        sa.Column("text", sa.Text),  # normalised display / text, for :text
        sa.Column("type_system", sa.Text),  # Identifier.type, for :of-type
        sa.Column("type_code", sa.Text),
    )
    op.create_index("search_token_value_idx", "search_token",
                    ["resource_type", "code", "value", "system"])
    _table(
        "search_reference",
        sa.Column("target_type", sa.Text),
        sa.Column("target_id", sa.Text),
        sa.Column("url", sa.Text),  # absolute or canonical references, as written
        sa.Column("identifier_system", sa.Text),
        sa.Column("identifier_value", sa.Text),
    )
    op.create_index("search_reference_target_idx", "search_reference",
                    ["resource_type", "code", "target_id", "target_type"])
    # For _revinclude and _has: who points at this resource?
    op.create_index("search_reference_pointing_idx", "search_reference",
                    ["target_type", "target_id", "code"])
    _table(
        "search_date",
        sa.Column("low", sa.DateTime(timezone=True), nullable=False),
        sa.Column("high", sa.DateTime(timezone=True), nullable=False),  # exclusive
    )
    op.create_index("search_date_low_idx", "search_date", ["resource_type", "code", "low"])
    op.create_index("search_date_high_idx", "search_date", ["resource_type", "code", "high"])
    _table(
        "search_number",
        sa.Column("value", sa.Numeric, nullable=False),
        sa.Column("low", sa.Numeric, nullable=False),
        sa.Column("high", sa.Numeric, nullable=False),  # exclusive
    )
    op.create_index("search_number_idx", "search_number", ["resource_type", "code", "value"])
    _table(
        "search_quantity",
        sa.Column("system", sa.Text),
        sa.Column("unit", sa.Text),  # the code, else the human unit
        sa.Column("value", sa.Numeric, nullable=False),
        sa.Column("low", sa.Numeric, nullable=False),
        sa.Column("high", sa.Numeric, nullable=False),
        sa.Column("canonical_unit", sa.Text),  # UCUM canonical form, when known
        sa.Column("canonical_value", sa.Numeric),
    )
    op.create_index("search_quantity_idx", "search_quantity", ["resource_type", "code", "value"])
    _table("search_uri", sa.Column("value", sa.Text, nullable=False))
    op.execute("CREATE INDEX search_uri_value_idx ON search_uri "
               "(resource_type, code, value text_pattern_ops)")
    _table(
        "search_composite",
        # One row per composite match: each component's index values, as JSON.
        sa.Column("components", sa.dialects.postgresql.JSONB, nullable=False),
    )
    op.create_index("search_composite_idx", "search_composite", ["resource_type", "code"])
    # Full text for _text (narrative) and _content (the whole resource).
    _table(
        "search_text",
        sa.Column("document", sa.dialects.postgresql.TSVECTOR, nullable=False),
    )
    op.execute("CREATE INDEX search_text_document_idx ON search_text USING gin (document)")


def downgrade() -> None:
    for name in ("search_text", "search_composite", "search_uri", "search_quantity",
                 "search_number", "search_date", "search_reference", "search_token",
                 "search_string"):
        op.drop_table(name)
