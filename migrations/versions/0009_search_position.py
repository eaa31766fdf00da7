"""Positions for the special parameter `near` (Location.position, WGS84 degrees), searched by a
latitude range from the index and the exact great-circle distance.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "search_position",
        sa.Column("rid", sa.BigInteger, nullable=False),
        sa.Column("resource_type", sa.Text, nullable=False),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("latitude", sa.Float, nullable=False),
        sa.Column("longitude", sa.Float, nullable=False),
    )
    op.create_index("search_position_rid_idx", "search_position", ["rid"])
    op.create_index("search_position_idx", "search_position",
                    ["resource_type", "code", "latitude", "longitude"])
    # Locations stored before: their positions are indexed by POST /fhir/$reindex.


def downgrade() -> None:
    op.drop_table("search_position")
