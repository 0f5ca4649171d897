"""Notify: the events a committed version announces, and their relay to the event log.

The events are staged in the catalog's outbox in the same transaction as the change
(catalog/outbox.py) and published from there; :func:`announce` drains the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from catalog.datasets.manifest import Manifest
from catalog.datasets.store import CatalogStore, Version
from catalog.domain.channels import dataset_channel
from catalog.outbox import Event
from eventlog.message import Publisher

log = logging.getLogger(__name__)


def version_event(
    version: Version,
    manifest: Manifest,
    regions: Mapping[str, int] | None = None,
    quality: Mapping[str, Any] | None = None,
) -> Event:
    """The ``dataset.updated`` announcing a committed version on the dataset's channel, with
    the quality gate's summary and, for datasets with block keys, the rows added per region
    code (which lets block channels route it)."""
    data: dict[str, Any] = {
        "dataset": manifest.id,
        "version": version.version,
        "snapshot_id": str(version.snapshot_id),
        "rows_added": version.rows_added,
        "total_rows": version.total_rows,
        "committed_at": version.committed_at.isoformat(),
        "run_id": version.run_id,
    }
    if regions:
        data["regions"] = dict(regions)
    if quality is not None:
        data["quality"] = dict(quality)
    return Event(
        dataset_channel(manifest.id),
        "dataset.updated",
        data,
        {"agency": manifest.agency, "dataset": manifest.id, "version": version.version},
        ref=f"version:{manifest.id}:{version.version}",
    )


def announce(store: CatalogStore, publisher: Publisher | None) -> None:
    """Publish what the catalog's outbox holds (the events of what was just committed, and
    any left from before), best effort: what the log does not take now stays in the outbox
    until the next drain — a serving hub's, or the next run's.  Never raises: the commit
    these events belong to has happened, whatever the log's state."""
    if publisher is None:
        return
    try:
        drained = store.outbox.drain(publisher)
    except Exception as e:
        log.warning("events not published yet (%s); they wait in the catalog's outbox", e)
        return
    if drained.error is not None:
        log.warning(
            "event log unavailable (%s): %s event(s) wait in the catalog's outbox; a serving "
            "hub publishes them once the log is back",
            drained.error,
            "some" if drained.pending < 0 else drained.pending,
        )
