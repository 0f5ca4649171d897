"""Where a blockhub installation keeps its state, read from ``BLOCKHUB_*`` variables.

Built at an edge (CLI entry, ``create_app``, an Airflow task) and passed down;
library functions never read it themselves.  The embedded defaults keep
everything in one local folder (``BLOCKHUB_HOME``): the catalog, the lake's
Iceberg catalog and data files, and the event log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from catalog.audit import AuditLog
from catalog.eventlog import LogBackend, open_event_log
from catalog.lake import Lake
from catalog.sources import Protected, SourceGuard, SourceStore, protected_places
from catalog.store import CatalogStore


class StorageSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BLOCKHUB_", extra="ignore")

    home: Path = Field(default=Path("blockhub-data"), description="folder for embedded state")
    catalog_url: str | None = Field(default=None, description="SQLAlchemy URL of the catalog")
    lake_catalog_url: str | None = Field(default=None, description="URL of the Iceberg SQL catalog")
    warehouse: str | None = Field(
        default=None, description="where table data lives (file:// or s3://)"
    )
    events_url: str | None = Field(
        default=None, description="event log: a SQLAlchemy URL, or redis://host:port/db?prefix=name"
    )
    manifests: Path | None = Field(default=None, description="folder of dataset manifests")
    suites: Path | None = Field(
        default=None, description="folder of expectation suites (default: expectations/suites)"
    )
    audit_key: str | None = Field(default=None, description="HMAC key of the audit chain")
    run_lease_s: float = Field(
        default=60.0,
        gt=0,
        description="a run whose process has not renewed its lease for this long is interrupted",
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

    @property
    def events_db(self) -> str:
        return self.events_url or f"sqlite:///{self.home / 'events.db'}"

    def protected(self) -> Protected:
        """The hub's own places, never a source (catalog.sources): the home folder, the
        lake, the database files and the databases named by URL."""
        return protected_places(
            home=str(self.home),
            warehouse=self.lake_warehouse,
            database_urls=[self.catalog_db, self.lake_db, self.events_db],
        )

    def source_guard(self, store: CatalogStore, audit: AuditLog | None = None) -> SourceGuard:
        """The guard every manifest's source passes, at registration and at each read;
        reads go on the audit chain (``audit``, or one opened here with the key)."""
        if audit is None:
            audit = AuditLog(store, key=self.audit_key.encode() if self.audit_key else None)
        return SourceGuard(SourceStore(store), self.protected(), audit)

    def open_storage(self) -> Storage:
        """Open (creating where needed) the catalog, the lake and the event log."""
        (self.home / "lake").mkdir(parents=True, exist_ok=True)
        store = CatalogStore(self.catalog_db, lease_s=self.run_lease_s)
        store.create_all()
        return Storage(
            store, Lake(self.lake_db, self.lake_warehouse), open_event_log(self.events_db)
        )


@dataclass
class Storage:
    store: CatalogStore
    lake: Lake
    log: LogBackend

    def close(self) -> None:
        self.store.dispose()
        self.log.dispose()
