"""Resource tables: current versions and history.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resource",
        sa.Column("rid", sa.BigInteger, sa.Identity(always=True), nullable=False, unique=True),
        sa.Column("resource_type", sa.Text, nullable=False),
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("content", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("resource_type", "id", name="resource_pkey"),
    )
    op.create_table(
        "resource_history",
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), nullable=False, unique=True),
        sa.Column("resource_type", sa.Text, nullable=False),
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint(
            "resource_type", "id", "version_id", name="resource_history_pkey"
        ),
    )
    op.create_index("resource_history_system_idx", "resource_history", ["last_updated", "seq"])
    op.create_index(
        "resource_history_type_idx", "resource_history", ["resource_type", "last_updated", "seq"]
    )


def downgrade() -> None:
    op.drop_table("resource_history")
    op.drop_table("resource")
