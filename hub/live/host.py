"""What the live wing needs of the process it runs in, as a protocol.

The live wing is handed the hub's objects; it does not import the assembly that builds them
(:mod:`hub.assembly.context`, which imports the wings): :class:`hub.assembly.context.Hub` satisfies
:class:`LiveHub` structurally, and so can a test's or an embedding program's own object.
Of the exchange, live knows only its public face — who may read what (:class:`Readers`),
never how a query runs.
"""

from __future__ import annotations

from typing import Protocol

from catalog.access.effective import Access
from catalog.access.grants import GrantStore
from catalog.audit.log import AuditLog
from catalog.datasets.store import CatalogStore, DatasetRecord
from catalog.identity.store import Principal
from catalog.lake.tables import Lake
from catalog.ops.store import OpsStore
from catalog.sources.guard import SourceGuard
from eventlog.backend import LogBackend
from hub.live.bus import Bus
from hub.settings import Settings


class Readers(Protocol):
    """The exchange's answer to "what may this principal read of that dataset"."""

    def access(self, principal: Principal, dataset_id: str) -> Access: ...

    def record_access(
        self, principal: Principal, dataset_id: str
    ) -> tuple[DatasetRecord, Access]: ...


class LiveHub(Protocol):
    """The objects of a process that the live wing works with."""

    settings: Settings
    store: CatalogStore
    lake: Lake
    log: LogBackend
    bus: Bus
    ops: OpsStore

    @property
    def audit(self) -> AuditLog: ...

    @property
    def grants(self) -> GrantStore: ...

    @property
    def sources(self) -> SourceGuard: ...

    @property
    def exchange(self) -> Readers: ...

    def announce(self) -> None:
        """Publish what the catalog's outbox holds, now."""

    @classmethod
    def open(cls, settings: Settings) -> LiveHub:
        """The same objects, opened afresh from settings (a feed-flush worker process)."""
        ...
