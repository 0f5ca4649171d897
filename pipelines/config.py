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

from catalog.eventlog import LogBackend, open_event_log
from catalog.lake import Lake
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

    def open_storage(self) -> Storage:
        """Open (creating where needed) the catalog, the lake and the event log."""
        (self.home / "lake").mkdir(parents=True, exist_ok=True)
        store = CatalogStore(self.catalog_db)
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
