"""Settings of a hub process: where state lives (:class:`StorageSettings`) plus the service."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pipelines.config import StorageSettings


class Settings(StorageSettings):
    model_config = SettingsConfigDict(env_prefix="BLOCKHUB_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    query_timeout_s: float = Field(default=30.0, gt=0)
    query_max_rows: int = Field(default=5_000_000, gt=0)
    batch_rows: int = Field(default=65_536, gt=0)
    bus_poll_s: float = Field(default=0.2, gt=0)
    freshness_interval_s: float = Field(
        default=60.0, ge=0, description="how often datasets are checked for staleness (0: never)"
    )
    # Exchange (docs/access.md): DuckDB memory for all queries of the process together,
    # rows a `core` dataset may leave in one answer, the audit chain's HMAC key.
    query_memory_limit: str = Field(default="2GB", description="DuckDB memory_limit")
    core_max_rows: int = Field(default=10_000, gt=0)
    audit_key: str | None = Field(default=None, description="HMAC key of the audit chain")
