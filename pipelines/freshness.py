"""Freshness: a dataset whose last good publish is older than its ``update_frequency``.

``freshness`` answers for one dataset (pure); ``check_freshness`` walks every dataset,
keeps the staleness episode in the catalog and publishes ``dataset.stale`` once per
episode — when a dataset turns stale — not on every check.  A new publish ends the
episode; the next time it goes stale is a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from catalog.datasets.quality import QualityStore
from catalog.datasets.store import CatalogStore, DatasetRecord, Version
from catalog.domain.channels import dataset_channel
from catalog.outbox import Event
from eventlog.message import Publisher
from pipelines.notify import announce


@dataclass(frozen=True)
class FreshnessStatus:
    dataset_id: str
    update_frequency: str | None
    last_published_at: datetime | None
    stale: bool
    stale_since: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset_id,
            "update_frequency": self.update_frequency,
            "last_published_at": self.last_published_at.isoformat()
            if self.last_published_at
            else None,
            "stale": self.stale,
            "stale_since": self.stale_since.isoformat() if self.stale_since else None,
        }


def freshness(
    record: DatasetRecord, latest: Version | None, now: datetime | None = None
) -> FreshnessStatus:
    """Whether a dataset is stale now; a never-published one counts from registration."""
    now = now or datetime.now(UTC)
    window = record.manifest.freshness_window
    last = latest.committed_at if latest else None
    if window is None:
        return FreshnessStatus(record.id, None, last, False, None)
    due = (last or record.registered_at) + window
    stale = now > due
    return FreshnessStatus(
        record.id, record.manifest.update_frequency, last, stale, due if stale else None
    )


def check_freshness(
    store: CatalogStore,
    publisher: Publisher | None,
    *,
    quality: QualityStore | None = None,
    now: datetime | None = None,
) -> list[FreshnessStatus]:
    """Check every dataset; announce the ones that just turned stale."""
    qstore = quality or store.quality
    latest = store.latest_versions()
    statuses = []
    for record in store.list_datasets():
        status = freshness(record, latest.get(record.id), now)
        if status.update_frequency is None:
            continue
        statuses.append(status)
        state = qstore.freshness(record.id)
        if status.stale and (state is None or state.stale_since is None):
            # Announced (``dataset.stale``, through the outbox: in the transaction that
            # records the stale state) only where there is someone to tell.
            announced = None
            events = []
            if publisher is not None:
                announced = now or datetime.now(UTC)
                events.append(
                    Event(
                        dataset_channel(record.id),
                        "dataset.stale",
                        status.to_dict(),
                        {"agency": record.agency_id, "dataset": record.id},
                    )
                )
            qstore.set_freshness(
                record.id, stale_since=status.stale_since, announced_at=announced, events=events
            )
        elif not status.stale and state is not None and state.stale_since is not None:
            qstore.set_freshness(record.id, stale_since=None, announced_at=None)
    announce(store, publisher)
    return statuses
