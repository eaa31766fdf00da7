"""The resource tables.

`resource` holds the current version of every resource (one row per type and id, also for
deleted ones, so ids are never reused and versions keep counting); `resource_history` holds
every version, including deletions (content NULL). Resource JSON is stored as text: it is
returned to clients byte for byte, and text is cheaper than jsonb to write and read back
(see shared performance baselines). Search indexes will live in tables of their own, keyed
by `resource.rid`.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
)

metadata = MetaData()

resource = Table(
    "resource",
    metadata,
    Column("rid", BigInteger, Identity(always=True), nullable=False, unique=True),
    Column("resource_type", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("deleted", Boolean, nullable=False, server_default="false"),
    Column("content", Text, nullable=True),
    PrimaryKeyConstraint("resource_type", "id", name="resource_pkey"),
)

resource_history = Table(
    "resource_history",
    metadata,
    # Global insertion order: the tie-breaker for history ordering and paging cursors.
    Column("seq", BigInteger, Identity(always=True), nullable=False),
    Column("resource_type", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("method", Text, nullable=False),
    Column("content", Text, nullable=True),
    PrimaryKeyConstraint("resource_type", "id", "version_id", name="resource_history_pkey"),
    Index("resource_history_system_idx", "last_updated", "seq"),
    Index("resource_history_type_idx", "resource_type", "last_updated", "seq"),
)
