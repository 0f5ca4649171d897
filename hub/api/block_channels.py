"""``block:<code>`` websocket channels: live events of every dataset that falls in a block.

A block channel is a filtered view, not a channel of the event log: subscribing to
``block:520102`` subscribes (on its own bus subscription) to ``dataset:<id>`` and
``feed:<id>`` of every dataset the caller may read that has a region-like block key, and
forwards the messages that fall in the block (children included) as
``{"type": "message", "channel": "block:520102", "offset": n, "event", "data", "source"}``
with ``data.block_rows`` (rows of the message inside the block) and ``data.regions``
narrowed to the block.  Offsets count per connection and channel; block channels are live
(``since`` is refused): replay comes from the underlying ``dataset:``/``feed:`` channels.
The read rights are those of the dataset channels: checked when subscribing (a dataset
joins the block channel only if the reader sees its region key's column unmasked: the
block a row falls in is that column's value, or for an address key the region resolved
from it), and for every message on the
reader's current access — the row filter keeps rows outside it out, counts and
``regions`` are narrowed or withheld as on the ``dataset:`` channel, and the payload is
disclosed by :func:`hub.live.channels.disclose_message` (catalog/access/disclosure.py), the one
rule of every outbound path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import WebSocket

from catalog.access import disclosure
from catalog.datasets.manifest import Manifest
from catalog.domain.channels import (
    dataset_channel,
    feed_channel,
    is_block_channel,
    is_feed_channel,
    name_of,
)
from catalog.errors import HubError, InvalidRequest
from catalog.identity.store import Principal
from eventlog.message import Message
from hub.api.common.errors import error_message
from hub.assembly.context import Hub
from hub.exchange.blocks import (
    block_channel,
    block_key,
    message_regions,
    region_prefix,
    rows_in_block,
)
from hub.live.channels import disclose_message, source_view
from hub.live.subscription import Notice, Subscription

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]


class BlockChannels:
    """The ``block:`` subscriptions of one websocket connection."""

    def __init__(self, hub: Hub, principal: Principal, send: Send) -> None:
        self.hub = hub
        self.principal = principal
        self.send = send
        self._subs: dict[str, tuple[Subscription, asyncio.Task[None]]] = {}

    async def add(self, channel: str, since: Any = None) -> dict[str, Any]:
        """Subscribe; returns the ``subscribed`` reply (with the datasets it covers)."""
        if since is not None:
            raise InvalidRequest(
                "block channels are live: replay from the dataset:/feed: channels instead",
                channel=channel,
            )
        name, region = block_channel(name_of(channel))
        if name in self._subs:
            self.remove(name)
        accesses = await asyncio.to_thread(self.hub.exchange.accesses, self.principal)
        readable = await asyncio.to_thread(self.hub.exchange.readable, self.principal)
        manifests: dict[str, Manifest] = {}
        for d in readable.values():
            key = block_key(d.manifest, "region")
            access = accesses.get(d.id)
            if key is None or access is None:
                continue
            # The block a row falls in is its key's value (an address key: the region
            # resolved from the address): routable only if the reader sees that source
            # column unmasked — else subscribing per block would reveal the masked part.
            if disclosure.shown_as_stored(access, key.column):
                manifests[d.id] = d.manifest
        sub = self.hub.bus.subscription()
        for dataset_id in manifests:
            await sub.add(dataset_channel(dataset_id))
            await sub.add(feed_channel(dataset_id))
        task = asyncio.create_task(self._pump(name, region_prefix(region), sub, manifests))
        self._subs[name] = (sub, task)
        return {
            "type": "subscribed",
            "channel": name,
            "head": 0,
            "epoch": self.hub.log.epoch,
            "datasets": sorted(manifests),
        }

    def remove(self, channel: str) -> bool:
        entry = self._subs.pop(channel, None)
        if entry is None:
            return False
        sub, task = entry
        task.cancel()
        sub.close()
        return True

    def close(self) -> None:
        for channel in list(self._subs):
            self.remove(channel)

    async def _pump(
        self,
        channel: str,
        prefix: str,
        sub: Subscription,
        manifests: dict[str, Manifest],
    ) -> None:
        offset = 0
        try:
            async for item in sub:
                if isinstance(item, Notice):
                    continue
                out = self._shown(item, prefix, manifests)
                if out is None:
                    continue
                offset += 1
                await self.send({**item.to_wire(), "channel": channel, "offset": offset, **out})
        except asyncio.CancelledError:
            raise
        except HubError as e:
            log.warning("block channel %s stopped: %s", channel, e.message)
        except Exception as e:  # a slow consumer, a closed socket: end this channel only
            log.info("block channel %s stopped: %r", channel, e)
            self._subs.pop(channel, None)
            sub.close()
            with contextlib.suppress(Exception):
                stopped = f"{channel} stopped ({type(e).__name__}); subscribe again"
                await self.send(
                    error_message(503, "block_channel_stopped", stopped, channel=channel)
                )

    def _shown(
        self, msg: Message, prefix: str, manifests: dict[str, Manifest]
    ) -> dict[str, Any] | None:
        """The message as this reader sees it inside the block, or None."""
        dataset_id = name_of(msg.channel)
        view = source_view(self.hub, self.principal, dataset_id)
        if not view.access.readable:
            return None
        if is_feed_channel(msg.channel) and not disclosure.row_visible(view.access, msg.data):
            return None
        data = disclose_message(self.hub, self.principal, msg)
        if data is None:
            return None
        regions = message_regions(msg, manifests.get(dataset_id))
        if msg.type == "dataset.updated":
            # Only the rows per region the reader may count (narrowed by its row filter).
            shown_regions = data.get("regions")
            regions = dict(shown_regions) if isinstance(shown_regions, dict) else {}
        inside = {code: n for code, n in regions.items() if code.startswith(prefix)}
        n = rows_in_block(inside, prefix)
        if not n:
            return None
        data = dict(data)
        if "regions" in data:
            data["regions"] = inside
        data["block_rows"] = n
        return {"data": data, "dataset": dataset_id}


# -- the hook the websocket endpoint calls --------------------------------------------------


def _for(ws: WebSocket, hub: Hub, principal: Principal) -> BlockChannels:
    channels: BlockChannels | None = getattr(ws.state, "block_channels", None)
    if channels is None:

        async def send(obj: dict[str, Any]) -> None:
            await ws.send_text(orjson.dumps(obj, default=str).decode())

        channels = BlockChannels(hub, principal, send)
        ws.state.block_channels = channels
    return channels


def is_block_op(op: Any, channel: Any) -> bool:
    return op in ("subscribe", "unsubscribe") and is_block_channel(str(channel))


async def block_op(ws: WebSocket, hub: Hub, principal: Principal, msg: dict[str, Any]) -> None:
    """Handle ``subscribe``/``unsubscribe`` of a ``block:`` channel (errors raise HubError)."""
    channels = _for(ws, hub, principal)
    channel = str(msg["channel"])
    if msg["op"] == "subscribe":
        reply = await channels.add(channel, msg.get("since"))
    else:
        name, _ = block_channel(name_of(channel))
        channels.remove(name)
        reply = {"type": "unsubscribed", "channel": name}
    await ws.send_text(orjson.dumps(reply, default=str).decode())


def close_block_channels(ws: WebSocket) -> None:
    channels: BlockChannels | None = getattr(ws.state, "block_channels", None)
    if channels is not None:
        channels.close()
