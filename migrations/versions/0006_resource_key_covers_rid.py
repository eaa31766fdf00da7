"""The resource key (type, id) carries rid and deleted (INCLUDE): a search that walks a
type's resources in id order (a dense string match, a `_has`) reads them from the index alone
and fetches only the page's rows; before, every walked row cost a heap fetch of the whole row.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _replace_key(include: str) -> None:
    op.execute(f"CREATE UNIQUE INDEX resource_pkey_new ON resource (resource_type, id){include}")
    op.execute("ALTER TABLE resource DROP CONSTRAINT resource_pkey")
    # The index takes the constraint's name (resource_pkey), which storage looks for.
    op.execute("ALTER TABLE resource ADD CONSTRAINT resource_pkey PRIMARY KEY"
               " USING INDEX resource_pkey_new")


def upgrade() -> None:
    _replace_key(" INCLUDE (rid, deleted)")


def downgrade() -> None:
    _replace_key("")
