"""The Python client against a real server: replay across forced disconnects."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from hub.assembly.context import Hub
from hub.client import ClientFatal, HubClient


def test_client_reconnects_and_replays_without_loss(
    live: str, hub: Hub, tokens: dict[str, str]
) -> None:
    n = 1500

    def publish() -> None:
        for i in range(n):
            hub.bus.publish("orders:gy_dsj", "order.note", {"i": i})
            if i % 50 == 0:
                time.sleep(0.01)

    async def main() -> list[int]:
        got: list[int] = []
        async with HubClient(f"ws://{live}/v1/ws", tokens["operator"], backoff_s=0.05) as c:
            await c.subscribe("orders:gy_dsj", since=0)
            threading.Thread(target=publish, daemon=True).start()
            async for frame in c:
                assert frame["type"] == "message", frame
                got.append(frame["data"]["i"])
                if len(got) in (300, 700, 1100):
                    assert c._ws is not None
                    c._ws.transport.abort()  # the network drops, no close handshake
                if len(got) == n:
                    break
            assert c.reconnects == 3
        return got

    assert asyncio.run(asyncio.wait_for(main(), 60)) == list(range(n))


def test_client_stops_on_bad_token(live: str) -> None:
    async def main() -> None:
        async with HubClient(f"ws://{live}/v1/ws", "bh_x_y"):
            pass

    with pytest.raises(ClientFatal, match="unknown token"):
        asyncio.run(main())
