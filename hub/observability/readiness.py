"""``GET /readyz``: may this replica take traffic?  Each server the hub depends on is asked
once, in parallel, each within a time limit:

- ``catalog`` — the catalog database answers ``SELECT 1``;
- ``lake`` — the Iceberg SQL catalog answers, and the warehouse can be asked for an object
  (a local folder must exist; on S3 a HEAD of a probe key must not fail — a 404 is an
  answer, a refused credential or an unreachable endpoint is not);
- ``event_log`` — the bus knows the log's position and the log answers a read of it;
- ``mqtt`` — every MQTT feed this process consumes is connected to its broker (``skipped``
  when it consumes none).

``/healthz`` stays the liveness probe: a replica whose PostgreSQL is down is alive (it
answers 503s and recovers by itself), it is just not ready.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pyiceberg.io import load_file_io
from sqlalchemy import text

log = logging.getLogger(__name__)

Hub = Any
"""``hub.assembly.context.Hub``: its ``store``, ``lake``, ``bus`` and ``log`` are asked (not
imported: this leaf imports no wing, tests/test_layering_wings.py)."""
FeedRunner = Any
"""``hub.live.feeds.FeedRunner``: its feeds' MQTT subscribers are asked."""

Outcome = Literal["ok", "failed", "skipped"]
NAMES = ("catalog", "lake", "event_log", "mqtt")
PROBE_KEY = ".blockhub-readyz"


def check_catalog(hub: Hub) -> Outcome:
    with hub.store.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return "ok"


def check_lake(hub: Hub) -> Outcome:
    lake = hub.lake
    with lake.catalog.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    warehouse = lake.warehouse.rstrip("/")
    parsed = urlparse(warehouse)
    if parsed.scheme in ("", "file"):
        if not Path(parsed.path).is_dir():
            raise FileNotFoundError(f"warehouse folder {parsed.path} is missing")
        return "ok"
    io = load_file_io(dict(lake.catalog.properties), warehouse)
    io.new_input(f"{warehouse}/{PROBE_KEY}").exists()  # raises unless the store answers
    return "ok"


def check_event_log(hub: Hub) -> Outcome:
    if not hub.bus.ready:
        raise ConnectionError("the bus has not found the event log yet")
    hub.log.last_seq()
    return "ok"


def check_mqtt(feeds: FeedRunner | None) -> Outcome:
    subscribers = [f.subscriber for f in (feeds.feeds.values() if feeds else ()) if f.subscriber]
    if not subscribers:
        return "skipped"
    if all(s.connected.is_set() for s in subscribers):
        return "ok"
    raise ConnectionError("an MQTT feed is not connected to its broker")


async def _run(name: str, check: Callable[[], Outcome], timeout_s: float) -> Outcome:
    try:
        return await asyncio.wait_for(asyncio.to_thread(check), timeout_s)
    except Exception as e:  # the cause goes to the log, never to the (unauthenticated) caller
        log.warning("readyz: %s not ready: %s", name, f"{type(e).__name__}: {e}"[:300])
        return "failed"


async def readiness(hub: Hub, feeds: FeedRunner | None, timeout_s: float) -> dict[str, Outcome]:
    """Each dependency's outcome, asked in parallel, each within ``timeout_s``."""
    checks: dict[str, Callable[[], Outcome]] = {
        "catalog": lambda: check_catalog(hub),
        "lake": lambda: check_lake(hub),
        "event_log": lambda: check_event_log(hub),
        "mqtt": lambda: check_mqtt(feeds),
    }
    outcomes = await asyncio.gather(*(_run(n, c, timeout_s) for n, c in checks.items()))
    return dict(zip(checks, outcomes, strict=True))
