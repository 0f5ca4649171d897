"""Where a blockhub installation keeps its state, read from ``BLOCKHUB_*`` variables.

Built at an edge (CLI entry, ``create_app``, an Airflow task) and passed down;
library functions never read it themselves.  The embedded defaults keep
everything in one local folder (``BLOCKHUB_HOME``): the catalog, the lake's
Iceberg catalog and data files, and the event log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import Engine

from catalog.audit.log import AuditLog
from catalog.audit.seal import AuditKeys
from catalog.datasets.store import CatalogStore
from catalog.db import make_engine
from catalog.errors import ConfigError
from catalog.lake.objectstore import S3Lake, is_s3, split_s3
from catalog.lake.tables import Lake
from catalog.sources.guard import SourceGuard, protected_places
from catalog.sources.store import Protected, SourceStore
from eventlog.backend import LogBackend, open_event_log
from pipelines.schema import adopt_with, ensure_schema

MIN_KEY_CHARS = 32


class StorageSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BLOCKHUB_", extra="ignore")

    home: Path = Field(default=Path("blockhub-data"), description="folder for embedded state")
    catalog_url: str | None = Field(default=None, description="SQLAlchemy URL of the catalog")
    lake_catalog_url: str | None = Field(default=None, description="URL of the Iceberg SQL catalog")
    warehouse: str | None = Field(
        default=None, description="where table data lives (file:// or s3://)"
    )
    # An S3 warehouse (docs/operations.md "Lake on S3"): one description for pyiceberg,
    # pyarrow and DuckDB (catalog/lake/objectstore.py).  The secret never reaches a log.
    s3_endpoint: str | None = Field(
        default=None, description="S3 endpoint URL, e.g. http://minio:9000 (unset: AWS)"
    )
    s3_region: str = Field(default="us-east-1", min_length=1, description="S3 region")
    s3_access_key_id: str | None = Field(default=None, description="S3 access key id")
    s3_access_key_id_file: Path | None = Field(
        default=None, description="file holding the S3 access key id"
    )
    s3_secret_access_key: SecretStr | None = Field(default=None, description="S3 secret key")
    s3_secret_access_key_file: Path | None = Field(
        default=None, description="file holding the S3 secret key"
    )
    s3_session_token: SecretStr | None = Field(default=None, description="S3 session token")
    s3_path_style: bool = Field(
        default=True, description="path-style addressing (MinIO, most on-premises stores)"
    )
    events_url: str | None = Field(
        default=None, description="event log: a SQLAlchemy URL, or redis://host:port/db?prefix=name"
    )
    manifests: Path | None = Field(default=None, description="folder of dataset manifests")
    suites: Path | None = Field(
        default=None, description="folder of expectation suites (default: expectations/suites)"
    )
    run_lease_s: float = Field(
        default=60.0,
        gt=0,
        description="a run whose process has not renewed its lease for this long is interrupted",
    )
    # The audit chain (docs/operations.md "Audit key"): every process that writes the
    # catalog seals entries with the same key, so it lives with the storage settings.
    env: Literal["development", "production"] | None = Field(
        default=None,
        description="production refuses to start without an audit key; unset: production "
        "when the catalog is a database server, development on the embedded SQLite file",
    )
    audit_key: SecretStr | None = Field(default=None, description="HMAC key of the audit chain")
    audit_key_file: Path | None = Field(default=None, description="file holding the audit key")
    audit_previous_keys: list[SecretStr] = Field(
        default_factory=list, description="earlier audit keys, still accepted by verify (JSON)"
    )
    audit_unkeyed_until: int = Field(
        default=0, ge=0, description="last entry written before the chain had a key"
    )

    @field_validator("home")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @property
    def catalog_db(self) -> str:
        return self.catalog_url or f"sqlite:///{self.home / 'catalog.db'}"

    @property
    def lake_db(self) -> str:
        return self.lake_catalog_url or f"sqlite:///{self.home / 'lake' / 'iceberg.db'}"

    @property
    def lake_warehouse(self) -> str:
        return self.warehouse or (self.home / "lake").as_uri()

    def s3_lake(self) -> S3Lake | None:
        """The S3 warehouse's connection, or None for a local lake; a setting that cannot
        work stops the process here, naming the variable (never the secret)."""
        if not is_s3(self.lake_warehouse):
            return None
        try:
            bucket, _ = split_s3(self.lake_warehouse)
        except ValueError:
            bucket = ""
        if not bucket:
            raise ConfigError(
                f"BLOCKHUB_WAREHOUSE {self.lake_warehouse!r} names no bucket: s3://bucket/prefix",
                setting="BLOCKHUB_WAREHOUSE",
            )
        if self.s3_endpoint is not None and urlparse(self.s3_endpoint).scheme not in (
            "http",
            "https",
        ):
            raise ConfigError(
                f"BLOCKHUB_S3_ENDPOINT {self.s3_endpoint!r} is not an http(s):// URL",
                setting="BLOCKHUB_S3_ENDPOINT",
            )
        key_id = _one_of(self.s3_access_key_id, self.s3_access_key_id_file, "ACCESS_KEY_ID")
        secret = _one_of(
            self.s3_secret_access_key.get_secret_value() if self.s3_secret_access_key else None,
            self.s3_secret_access_key_file,
            "SECRET_ACCESS_KEY",
        )
        if not key_id or not secret:
            raise ConfigError(
                "an S3 warehouse needs credentials: BLOCKHUB_S3_ACCESS_KEY_ID and "
                "BLOCKHUB_S3_SECRET_ACCESS_KEY (or their _FILE variants) — "
                "docs/operations.md, 'Lake on S3'",
                setting="BLOCKHUB_S3_SECRET_ACCESS_KEY",
            )
        token = self.s3_session_token.get_secret_value() if self.s3_session_token else None
        return S3Lake(
            endpoint=self.s3_endpoint,
            region=self.s3_region,
            access_key_id=key_id,
            secret_access_key=secret,
            session_token=token or None,
            path_style=self.s3_path_style,
        )

    def open_lake(self) -> Lake:
        """The lake (its Iceberg catalog and warehouse, S3 configured from the one place)."""
        return Lake(self.lake_db, self.lake_warehouse, s3=self.s3_lake())

    @property
    def events_db(self) -> str:
        return self.events_url or f"sqlite:///{self.home / 'events.db'}"

    def protected(self) -> Protected:
        """The hub's own places, never a source (catalog.sources.store): the home folder, the
        lake, the database files and the databases named by URL."""
        return protected_places(
            home=str(self.home),
            warehouse=self.lake_warehouse,
            database_urls=[self.catalog_db, self.lake_db, self.events_db],
        )

    def source_guard(self, store: CatalogStore, audit: AuditLog | None = None) -> SourceGuard:
        """The guard every manifest's source passes, at registration and at each read;
        reads go on the audit chain (``audit``, or the store's, sealed with its keys)."""
        return SourceGuard(SourceStore(store), self.protected(), audit or store.audit)

    @property
    def production(self) -> bool:
        """``BLOCKHUB_ENV``, or else: a catalog on a database server is a production hub."""
        if self.env is not None:
            return self.env == "production"
        return not self.catalog_db.startswith("sqlite")

    def audit_keys(self) -> AuditKeys:
        """The audit keys; a production hub without a usable key refuses to start here."""
        if self.audit_key is not None and self.audit_key_file is not None:
            raise ConfigError(
                "set BLOCKHUB_AUDIT_KEY or BLOCKHUB_AUDIT_KEY_FILE, not both",
                setting="BLOCKHUB_AUDIT_KEY_FILE",
            )
        key: str | None = None
        source = "BLOCKHUB_AUDIT_KEY"
        if self.audit_key is not None:
            key = self.audit_key.get_secret_value().strip()
        elif self.audit_key_file is not None:
            source = f"BLOCKHUB_AUDIT_KEY_FILE ({self.audit_key_file})"
            try:
                key = self.audit_key_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(
                    f"cannot read the audit key file {self.audit_key_file}: {e}",
                    setting="BLOCKHUB_AUDIT_KEY_FILE",
                ) from None
        if self.production:
            if not key:
                raise ConfigError(
                    "production mode (BLOCKHUB_ENV=production, or a catalog on a database "
                    "server) refuses to start without an audit key: set BLOCKHUB_AUDIT_KEY_FILE "
                    "(or BLOCKHUB_AUDIT_KEY) to 32 or more random characters kept outside the "
                    "catalog database — docs/operations.md, 'Audit key'",
                    setting="BLOCKHUB_AUDIT_KEY",
                )
            if len(key) < MIN_KEY_CHARS:
                raise ConfigError(
                    f"the audit key from {source} has {len(key)} characters; production "
                    f"needs at least {MIN_KEY_CHARS} (e.g. `openssl rand -hex 32`)",
                    setting="BLOCKHUB_AUDIT_KEY",
                )
        previous = tuple(k.get_secret_value().strip().encode() for k in self.audit_previous_keys)
        return AuditKeys(
            current=key.encode() if key else None,
            previous=tuple(p for p in previous if p),
            unkeyed_until=self.audit_unkeyed_until,
        )

    def open_storage(self) -> Storage:
        """Open (creating where needed) the catalog, the lake and the event log."""
        keys = self.audit_keys()  # before anything is created: a refusal leaves no trace
        self.s3_lake()  # likewise
        (self.home / "lake").mkdir(parents=True, exist_ok=True)
        store = CatalogStore(self.catalog_db, lease_s=self.run_lease_s, audit_keys=keys)
        try:
            self.check_schemas(store.engine, keys)
        except BaseException:
            store.dispose()
            raise
        store.create_all()
        return Storage(store, self.open_lake(), open_event_log(self.events_db))

    def check_schemas(self, catalog_engine: Engine, keys: AuditKeys) -> None:
        """The catalog's (and a SQL event log's) schema against this code, before anything
        is created (pipelines.schema): an older schema is upgraded in development and refused
        in production, naming ``blockhub db upgrade``."""
        auto = not self.production
        ensure_schema(catalog_engine, "catalog", auto_upgrade=auto, adopt=adopt_with(keys))
        if not self.events_db.startswith("redis"):
            engine = make_engine(self.events_db)
            try:
                ensure_schema(engine, "events", auto_upgrade=auto)
            finally:
                engine.dispose()


def _one_of(value: str | None, file: Path | None, name: str) -> str | None:
    """A credential from ``BLOCKHUB_S3_<name>`` or the file ``BLOCKHUB_S3_<name>_FILE``
    names (Docker/Kubernetes secrets), not both."""
    if value is not None and file is not None:
        raise ConfigError(
            f"set BLOCKHUB_S3_{name} or BLOCKHUB_S3_{name}_FILE, not both",
            setting=f"BLOCKHUB_S3_{name}_FILE",
        )
    if file is None:
        return value.strip() if value else None
    try:
        return file.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"cannot read BLOCKHUB_S3_{name}_FILE ({file}): {type(e).__name__}",
            setting=f"BLOCKHUB_S3_{name}_FILE",
        ) from None


@dataclass
class Storage:
    store: CatalogStore
    lake: Lake
    log: LogBackend

    def close(self) -> None:
        self.store.dispose()
        self.log.dispose()
