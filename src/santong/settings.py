"""Server settings, from `SANTONG_*` environment variables (CLI flags override them)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SANTONG_", extra="ignore")

    # Unset: an embedded PostgreSQL (pgserver) is started under data_dir.
    database_url: str | None = None
    data_dir: Path = Path(".santong")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # The FHIR base as clients see it (behind a proxy); derived from each request when unset.
    public_base_url: str | None = None
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # Entries in one batch/transaction Bundle; more get 413.
    max_bundle_entries: int = Field(default=10000, ge=1)
    default_page_size: int = Field(default=20, ge=1)
    max_page_size: int = Field(default=1000, ge=1)
    # Resources a search may add through _include/_revinclude (across :iterate rounds).
    max_include_results: int = Field(default=1000, ge=0)
    # `_explain=true` on a search returns its SQL and plan; for administrators only.
    allow_explain: bool = False
    # Database connections per server process. Requests beyond it wait for one: opening and
    # closing connections per request (pool overflow) costs more than the wait.
    db_pool_size: int = Field(default=10, ge=1)
    # Seconds a client is told to wait (Retry-After) when the database is unreachable.
    retry_after_seconds: int = 5
    log_json: bool = False
    log_level: str = "info"
    # Seconds uvicorn waits for in-flight requests on shutdown.
    graceful_shutdown_seconds: int = 30
    # Server processes; 0 (the default) is one per CPU, at most 4. One Python process is
    # CPU-bound well below what PostgreSQL can take, and all state lives in the database.
    workers: int = Field(default=0, ge=0)
    # With several processes: one whose event loop has not answered the supervisor for this
    # many seconds (blocked, deadlocked, stopped) is killed and replaced; 0 turns it off.
    worker_healthcheck_seconds: float = Field(default=30.0, ge=0)
    # Profiles every written resource of a type must meet: "Patient=url,Observation=url2".
    required_profiles: str = ""
    # Store the bundled three-connections FHIR package (fhir_profiles/) in the database at
    # start-up: its profiles, terminology, SearchParameters and NamingSystems.
    load_bundled_package: bool = True
    # Another FHIR package folder (conformance resources at its top level) stored likewise.
    profiles_dir: Path | None = None


def worker_count(settings: Settings) -> int:
    return settings.workers or min(os.cpu_count() or 1, 4)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
