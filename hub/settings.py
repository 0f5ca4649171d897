"""Settings of a hub process: where state lives (:class:`StorageSettings`) plus the service."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from catalog.errors import ConfigError
from pipelines.config import StorageSettings

_REPLICA = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class Settings(StorageSettings):
    model_config = SettingsConfigDict(env_prefix="BLOCKHUB_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Replicas (docs/operations.md "Several replicas"): each `serve` process has an id of its
    # own, in its lease holder names, Redis client names, welcome frames and feed status.
    replica_id: str | None = Field(
        default=None,
        description="this replica's name (default: <hostname>-<port>); letters, digits, . _ -",
    )
    feed_lease_s: float = Field(
        default=15.0,
        gt=0,
        description="a feed's leader that stops renewing its lease is replaced after this long",
    )
    query_timeout_s: float = Field(default=30.0, gt=0)
    query_max_rows: int = Field(default=5_000_000, gt=0)
    batch_rows: int = Field(default=65_536, gt=0)
    bus_poll_s: float = Field(default=0.2, gt=0)
    feed_flush: Literal["auto", "process", "thread"] = Field(
        default="auto",
        description=(
            "where feeds' micro-batches are written to the lake: a worker process or a thread"
            " of the server; auto = a process under the blockhub command (docs/feeds.md)"
        ),
    )
    freshness_interval_s: float = Field(
        default=60.0, ge=0, description="how often datasets are checked for staleness (0: never)"
    )
    # Exchange (docs/access.md): DuckDB memory for all queries of the process together,
    # rows a `core` dataset may leave in one answer (the audit key: StorageSettings).
    query_memory_limit: str = Field(default="2GB", description="DuckDB memory_limit")
    core_max_rows: int = Field(default=10_000, gt=0)
    replica_max_rows: int = Field(
        default=200_000_000,
        ge=0,
        description="rows of latest large versions served from DuckDB-native replicas (0: none)",
    )
    # Request limits, checked before any route (docs/api.md "Limits"): 413, 414, 400.
    max_body_bytes: int = Field(
        default=1 << 20, gt=0, description="request body (manifests, SQL, grants, orders)"
    )
    feed_max_body_bytes: int = Field(
        default=16 << 20, gt=0, description="body of a feed batch (POST /v1/feeds/{id}/events)"
    )
    max_json_depth: int = Field(default=32, ge=2, le=512, description="nesting of a JSON body")
    max_url_bytes: int = Field(default=16384, ge=256, description="path and query string")
    # Per-principal limits on query and export answers (docs/api.md "Limits"): past them
    # a 429 with Retry-After.  "query": JSON/NDJSON answers of /v1/query, rows, sample and
    # blocks; "export": csv, arrow and parquet answers.
    query_concurrency: int = Field(default=8, gt=0, description="query answers in flight")
    query_rate: float = Field(default=50.0, gt=0, description="query answers per second")
    query_burst: int = Field(default=100, gt=0, description="query answers back to back")
    export_concurrency: int = Field(default=2, gt=0, description="exports in flight")
    export_rate: float = Field(default=2.0, gt=0, description="exports per second")
    export_burst: int = Field(default=10, gt=0, description="exports back to back")
    answers_max_inflight: int = Field(
        default=64, gt=0, description="query and export answers in flight, all principals"
    )
    # audit_key (the audit chain's HMAC key) is a StorageSettings field: Airflow tasks sign too.
    holidays_dir: Path | None = Field(
        default=None,
        description=(
            "folder of holiday files (<year>.yaml) for years the pinned calendar package does"
            " not cover (default: <home>/holidays; docs/operations.md)"
        ),
    )
    # dispatch (websocket, alerts, orders): docs/websocket.md, docs/dispatch.md
    ws_queue_size: int = Field(default=10_000, gt=0, description="send queue per connection")
    ws_send_buffer_bytes: int = Field(default=8 << 20, gt=0, description="unsent bytes per socket")
    ws_direct_write: bool = Field(default=True, description="write frames without a task hop")
    ws_deflate: bool = Field(
        default=False,
        description="accept permessage-deflate: smaller frames, ~3x the CPU per delivery (D36)",
    )
    ws_max_per_principal: int = Field(default=50, gt=0)
    ws_heartbeat_s: float = Field(default=15.0, gt=0)
    alert_rules: Path | None = Field(default=None, description="YAML file of alert rules")
    ops_tick_s: float = Field(default=5.0, gt=0, description="escalation/staleness/retention pass")
    events_keep_last: int | None = Field(default=1_000_000, gt=0, description="per channel")
    events_keep_s: float | None = Field(default=30 * 86400, gt=0, description="max message age")
    events_retention: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description='per channel prefix, e.g. {"feed:": {"keep_last": 10000, "keep_s": 86400}}',
    )

    # observability (docs/operations.md "Observability")
    log_level: str | None = Field(
        default=None, description="Python log level (default: INFO for serve, ERROR otherwise)"
    )
    log_format: Literal["text", "json"] | None = Field(
        default=None, description="log lines as text or JSON objects (default: json in production)"
    )
    metrics_token: SecretStr | None = Field(
        default=None, description="bearer token Prometheus sends to GET /metrics (or an admin's)"
    )
    metrics_token_file: Path | None = Field(default=None, description="file holding metrics_token")
    metrics_catalog_s: float = Field(
        default=10.0, ge=0, description="how long /metrics reuses the catalog's totals"
    )
    ready_timeout_s: float = Field(
        default=2.0, gt=0, description="time each /readyz check has before it counts as failed"
    )

    @property
    def logs_as_json(self) -> bool:
        return self.log_format == "json" or (self.log_format is None and self.production)

    def metrics_secret(self) -> str | None:
        """The metrics token, from the setting or its file (None: admins' tokens only)."""
        if self.metrics_token is not None and self.metrics_token_file is not None:
            raise ConfigError(
                "set BLOCKHUB_METRICS_TOKEN or BLOCKHUB_METRICS_TOKEN_FILE, not both",
                setting="BLOCKHUB_METRICS_TOKEN_FILE",
            )
        if self.metrics_token is not None:
            return self.metrics_token.get_secret_value().strip() or None
        if self.metrics_token_file is not None:
            try:
                return self.metrics_token_file.read_text(encoding="utf-8").strip() or None
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(
                    f"cannot read the metrics token file {self.metrics_token_file}: {e}",
                    setting="BLOCKHUB_METRICS_TOKEN_FILE",
                ) from None
        return None

    @field_validator("replica_id")
    @classmethod
    def _replica_name(cls, v: str | None) -> str | None:
        if v is not None and not _REPLICA.match(v):
            raise ValueError(
                "a replica id is 1-63 letters, digits, '.', '_' or '-', starting with a letter"
                " or digit"
            )
        return v

    @property
    def replica(self) -> str:
        """This process's replica id: the setting, else ``<hostname>-<port>`` — unique per
        container (its hostname) and per process of one machine (its port)."""
        if self.replica_id:
            return self.replica_id
        host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:50] or "hub"
        return f"{host}-{self.port}"

    @property
    def holiday_folder(self) -> Path:
        return self.holidays_dir or self.home / "holidays"
