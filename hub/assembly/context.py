"""The objects a blockhub process works with, built once from settings at the edge."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from catalog.access.grants import GrantStore
from catalog.audit.log import AuditLog
from catalog.datasets.manifest import Manifest, load_manifest
from catalog.datasets.pipelinestate import PipelineState
from catalog.datasets.store import CatalogStore, DatasetRecord, Run
from catalog.domain.clock import Clock, SystemClock
from catalog.domain.workdays import (
    WorkCalendar,
    beijing_date,
    coverage_warning,
    official_calendar,
    package_calendar,
)
from catalog.identity.store import SYSTEM, Actor
from catalog.lake.tables import Lake
from catalog.ops.store import OpsStore
from catalog.sources.guard import SourceGuard
from eventlog.backend import LogBackend
from hub.exchange.engine import Exchange
from hub.live.bus import Bus
from hub.settings import Settings
from pipelines.ingest import ProgressFn, run_ingest
from pipelines.notify import announce

log = logging.getLogger(__name__)


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
    clock: Clock = field(default_factory=SystemClock)
    calendar: WorkCalendar = field(default_factory=package_calendar)
    _exchange: Exchange | None = field(default=None, repr=False)
    _grants: GrantStore | None = field(default=None, repr=False)
    _guard: SourceGuard | None = field(default=None, repr=False)

    @classmethod
    def open(cls, settings: Settings, *, clock: Clock | None = None) -> Hub:
        clock = clock or SystemClock()
        # A broken holiday file stops the process here, naming the file and the field: a
        # wrong calendar would move every access request's deadline without a word.
        folder = settings.holiday_folder
        calendar = official_calendar(folder)
        warning = coverage_warning(calendar, beijing_date(clock.now()), folder)
        if warning:
            log.warning(warning)
        st = settings.open_storage()
        name_clients = getattr(st.log, "name_clients", None)
        if name_clients is not None:  # the Redis log: its connections carry the replica id
            name_clients(f"blockhub:{settings.replica}")
        bus = Bus(st.log, poll_s=settings.bus_poll_s, queue_size=settings.ws_queue_size)
        ops = OpsStore(st.store.engine, audit=st.store.audit)
        return cls(
            settings=settings,
            store=st.store,
            lake=st.lake,
            log=st.log,
            bus=bus,
            ops=ops,
            clock=clock,
            calendar=calendar,
        )

    @property
    def grants(self) -> GrantStore:
        if self._grants is None:
            self._grants = GrantStore(self.store, calendar=self.calendar, clock=self.clock)
        return self._grants

    @property
    def audit(self) -> AuditLog:
        """The catalog's audit chain (the store's: state changes commit with its entries)."""
        return self.store.audit

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

    @property
    def sources(self) -> SourceGuard:
        """The agencies' file roots and connection profiles, and the check every manifest's
        source passes at registration and at each read (catalog.sources.store)."""
        if self._guard is None:
            self._guard = self.settings.source_guard(self.store, self.audit)
        return self._guard

    def register(self, manifest: Manifest, *, file: str, by: Actor = SYSTEM) -> DatasetRecord:
        """Register (or update) a dataset once its source is one its agency was given;
        a refused source raises :class:`~catalog.errors.SourceRefused` naming ``file``
        and the field, and nothing is registered.  ``by`` is recorded on the audit chain."""
        self.sources.check(manifest, file=file)
        record = self.store.register_dataset(manifest, by=by)
        PipelineState(self.store).reinstate(manifest.id, by=by)  # registering again: wanted
        return record

    def register_manifests(self, folder: Path | None = None) -> list[Manifest]:
        """Register every manifest of a folder (the settings' folder by default)."""
        root = folder or self.settings.manifests
        if root is None:
            return []
        files = sorted([*root.glob("*.yaml"), *root.glob("*.yml")])
        loaded = [(load_manifest(f), str(f)) for f in files]
        for m, f in loaded:  # every file checked before any is registered
            self.sources.check(m, file=f)
        for m, _ in loaded:
            self.store.register_dataset(m)  # a retired one stays retired: not asked for
        return [m for m, _ in loaded]

    def ingest(
        self,
        dataset_id: str,
        *,
        trigger: str = "manual",
        progress: ProgressFn | None = None,
    ) -> Run:
        manifest = self.store.get_dataset(dataset_id).manifest
        PipelineState(self.store).check_active(dataset_id)
        return run_ingest(
            manifest,
            store=self.store,
            lake=self.lake,
            publisher=self.bus.publish,
            guard=self.sources,
            trigger=trigger,
            progress=progress,
            suites_dir=self.settings.suites,
        )

    def announce(self) -> None:
        """Publish what the catalog's outbox holds, now, best effort (after a change whose
        events were staged in its transaction; a serving hub's drainer retries the rest)."""
        announce(self.store, self.bus.publish)

    def close(self) -> None:
        if self._exchange is not None:
            self._exchange.close()
        self.store.dispose()
        self.log.dispose()
