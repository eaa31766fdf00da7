"""Alembic migrations, applied by `santong migrate` and at start-up."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection


def migrations_dir() -> Path:
    packaged = Path(__file__).resolve().parent.parent / "migrations"  # in an installed wheel
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "migrations"  # in a source checkout


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Bring the schema to the newest revision (blocking; runs its own event loop)."""
    command.upgrade(alembic_config(url), "head")


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("postgresql+asyncpg://")).get_current_head()


async def current_revision(connection: AsyncConnection) -> str | None:
    return await connection.run_sync(
        lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
    )
