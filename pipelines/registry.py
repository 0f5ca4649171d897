"""Which datasets get an Airflow DAG: what the DAG file asks the catalog at every parse.

Kept apart from :mod:`pipelines.steps` so that parsing imports only the catalog's tables
(the dag-processor re-parses it every 30 s by default; the steps import the whole ingest
flow and the quality gate: GX, seconds on a busy machine).
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from catalog.datasets.manifest import Manifest
from catalog.datasets.pipelinestate import PipelineState
from catalog.datasets.store import CatalogStore

log = logging.getLogger(__name__)

#: Connectors of live feeds: fed by ``blockhub serve`` (docs/feeds.md), never by runs.
FEED_CONNECTORS = ("mqtt", "push")


def pipeline_manifests(catalog_url: str) -> list[Manifest]:
    """The manifests that get a DAG: registered, not retired, not a live feed.  Read-only
    and cheap: a catalog that does not exist yet (no SQLite file, no tables) has none, and
    nothing is created."""
    sqlite_file = catalog_url.removeprefix("sqlite:///")
    if sqlite_file != catalog_url and not Path(sqlite_file).is_file():
        return []
    store = CatalogStore(catalog_url)
    try:
        manifests = PipelineState(store).active_manifests()
    except SQLAlchemyError as e:
        log.warning("no blockhub DAGs: the catalog cannot be read (%s)", type(e).__name__)
        return []
    finally:
        store.engine.dispose()
    return [m for m in manifests if m.source.connector not in FEED_CONNECTORS]
