"""The objects a blockhub process works with, built once from settings at the edge."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from catalog.audit import AuditLog
from catalog.eventlog import LogBackend
from catalog.grants import GrantStore
from catalog.lake import Lake
from catalog.manifest import Manifest, load_manifests
from catalog.opsstore import OpsStore
from catalog.store import CatalogStore, Run
from hub.bus import Bus
from hub.exchange import Exchange
from hub.settings import Settings
from pipelines.ingest import ProgressFn, run_ingest


def local_root(warehouse: str) -> str | None:
    """The local folder of a file:// warehouse (DuckDB's sandbox allows only it)."""
    parsed = urlparse(warehouse)
    if parsed.scheme in ("", "file"):
        return str(Path(parsed.path).resolve())
    return None


@dataclass
class Hub:
    settings: Settings
    store: CatalogStore
    lake: Lake
    log: LogBackend
    bus: Bus
    ops: OpsStore
    _exchange: Exchange | None = field(default=None, repr=False)
    _grants: GrantStore | None = field(default=None, repr=False)
    _audit: AuditLog | None = field(default=None, repr=False)

    @classmethod
    def open(cls, settings: Settings) -> Hub:
        st = settings.open_storage()
        bus = Bus(st.log, poll_s=settings.bus_poll_s, queue_size=settings.ws_queue_size)
        ops = OpsStore(st.store.engine)
        return cls(settings=settings, store=st.store, lake=st.lake, log=st.log, bus=bus, ops=ops)

    @property
    def grants(self) -> GrantStore:
        if self._grants is None:
            self._grants = GrantStore(self.store)
        return self._grants

    @property
    def audit(self) -> AuditLog:
        if self._audit is None:
            key = self.settings.audit_key
            self._audit = AuditLog(self.store, key=key.encode() if key else None)
        return self._audit

    @property
    def exchange(self) -> Exchange:
        if self._exchange is None:
            self._exchange = Exchange(
                self.store,
                lake_root=local_root(self.settings.lake_warehouse),
                batch_rows=self.settings.batch_rows,
                memory_limit=self.settings.query_memory_limit,
                grants=self.grants,
                audit=self.audit,
                replica_folder=self.settings.home / "cache",
                replica_max_rows=self.settings.replica_max_rows,
            )
        return self._exchange

    def register_manifests(self, folder: Path | None = None) -> list[Manifest]:
        """Register every manifest of a folder (the settings' folder by default)."""
        root = folder or self.settings.manifests
        if root is None:
            return []
        manifests = load_manifests(root)
        for m in manifests:
            self.store.register_dataset(m)
        return manifests

    def ingest(
        self,
        dataset_id: str,
        *,
        trigger: str = "manual",
        progress: ProgressFn | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Run:
        manifest = self.store.get_dataset(dataset_id).manifest
        return run_ingest(
            manifest,
            store=self.store,
            lake=self.lake,
            publisher=self.bus.publish,
            env=dict(os.environ) if env is None else env,
            trigger=trigger,
            progress=progress,
            suites_dir=self.settings.suites,
        )

    def close(self) -> None:
        if self._exchange is not None:
            self._exchange.close()
        self.store.dispose()
        self.log.dispose()
