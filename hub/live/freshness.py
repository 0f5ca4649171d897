"""The hub's periodic freshness check (started in the app's lifespan)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from hub.live.host import LiveHub
from pipelines.freshness import check_freshness

log = logging.getLogger(__name__)


async def _loop(hub: LiveHub, interval_s: float) -> None:
    while True:
        try:
            await asyncio.to_thread(check_freshness, hub.store, hub.bus.publish)
        except Exception:  # a failed check must not stop the next ones
            log.exception("freshness check failed")
        await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def freshness_task(hub: LiveHub, interval_s: float) -> AsyncIterator[None]:
    """Run the check every ``interval_s`` seconds while the block runs (0 turns it off)."""
    if interval_s <= 0:
        yield
        return
    task = asyncio.create_task(_loop(hub, interval_s), name="blockhub-freshness")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
