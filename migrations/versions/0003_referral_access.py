"""Referral access grants: which organization may see which patient's record, and why.

Owned by the referral workflow (santong.workflow.access): a row is written when a referral
Task is accepted and the patient's sharing Consent covers the receiving organization; the
authorization layer reads them to build its access filter.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "referral_access",
        sa.Column("task_id", sa.Text, primary_key=True),  # the accepted referral Task
        sa.Column("organization_id", sa.Text, nullable=False),  # who may see
        sa.Column("patient_id", sa.Text, nullable=False),  # whose record
        sa.Column("consent_id", sa.Text, nullable=False),  # under which sharing Consent
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),  # the referral was called off
    )
    op.create_index("referral_access_organization_idx", "referral_access",
                    ["organization_id", "patient_id"])


def downgrade() -> None:
    op.drop_table("referral_access")
