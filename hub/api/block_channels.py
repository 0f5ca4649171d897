"""``block:<code>`` websocket channels: live events of every dataset that falls in a block.

A block channel is a filtered view, not a channel of the event log: subscribing to
``block:520102`` subscribes (on its own bus subscription) to ``dataset:<id>`` and
``feed:<id>`` of every dataset the caller may read that has a region-like block key, and
forwards the messages that fall in the block (children included) as
``{"type": "message", "channel": "block:520102", "offset": n, "event", "data", "source"}``
with ``data.block_rows`` (rows of the message inside the block) and ``data.regions``
narrowed to the block.  Offsets count per connection and channel; block channels are live
(``since`` is refused): replay comes from the underlying ``dataset:``/``feed:`` channels.
The read rights are those of the dataset channels, checked when subscribing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import WebSocket

from catalog.errors import HubError, InvalidRequest
from catalog.eventlog import Message
from catalog.identifiers import mask_id_number, mask_name, mask_phone
from catalog.manifest import Manifest
from catalog.store import DatasetRecord, Principal
from hub.blocks import block_channel, block_key, message_regions, region_prefix, rows_in_block
from hub.bus import Notice, Subscription
from hub.context import Hub

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
        name, region = block_channel(channel.partition(":")[2])
        if name in self._subs:
            self.remove(name)
        readable = await asyncio.to_thread(self.hub.exchange.readable, self.principal)
        records = {
            d.id: d for d in readable.values() if block_key(d.manifest, "region") is not None
        }
        manifests = {d: r.manifest for d, r in records.items()}
        sub = self.hub.bus.subscription()
        for dataset_id in manifests:
            await sub.add(f"dataset:{dataset_id}")
            await sub.add(f"feed:{dataset_id}")
        unmasked = {
            d for d, r in records.items() if self.principal.is_admin or owns(self.principal, r)
        }
        task = asyncio.create_task(
            self._pump(name, region_prefix(region), sub, manifests, unmasked)
        )
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
        unmasked: set[str],
    ) -> None:
        offset = 0
        try:
            async for item in sub:
                if isinstance(item, Notice):
                    continue
                out = _in_block(item, prefix, manifests)
                if out is None:
                    continue
                if out["dataset"] not in unmasked:
                    out["data"] = mask_payload(out["data"], manifests[out["dataset"]])
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
                await self.send(
                    {
                        "type": "error",
                        "ok": False,
                        "status": 503,
                        "code": "block_channel_stopped",
                        "error": f"{channel} stopped ({type(e).__name__}); subscribe again",
                        "channel": channel,
                    }
                )


_MASKS = {"phone": mask_phone, "id_number": mask_id_number, "name": mask_name}


def owns(principal: Principal, record: DatasetRecord) -> bool:
    return principal.agency_id == record.agency_id


def mask_payload(data: dict[str, Any], manifest: Manifest) -> dict[str, Any]:
    """A feed event's personal fields masked as for a consumer (PIPL; the usual masks, and
    the whole value starred for other kinds).  Grants that lift masking are the exchange
    issue's; until they exist here, every other agency's reader gets the masked form."""
    personal = manifest.personal_columns
    out = dict(data)
    for field_name, kind in personal.items():
        value = out.get(field_name)
        if isinstance(value, str) and value:
            out[field_name] = _MASKS.get(kind, lambda v: "*" * len(v))(value)
    row = out.get("row")
    if isinstance(row, dict):
        out["row"] = mask_payload(row, manifest)
    return out


def _in_block(msg: Message, prefix: str, manifests: dict[str, Manifest]) -> dict[str, Any] | None:
    dataset_id = msg.channel.partition(":")[2]
    regions = message_regions(msg, manifests.get(dataset_id))
    inside = {code: n for code, n in regions.items() if code.startswith(prefix)}
    n = rows_in_block(inside, prefix)
    if not n:
        return None
    data = dict(msg.data)
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
    return op in ("subscribe", "unsubscribe") and str(channel).startswith("block:")


async def block_op(ws: WebSocket, hub: Hub, principal: Principal, msg: dict[str, Any]) -> None:
    """Handle ``subscribe``/``unsubscribe`` of a ``block:`` channel (errors raise HubError)."""
    channels = _for(ws, hub, principal)
    channel = str(msg["channel"])
    if msg["op"] == "subscribe":
        reply = await channels.add(channel, msg.get("since"))
    else:
        name, _ = block_channel(channel.partition(":")[2])
        channels.remove(name)
        reply = {"type": "unsubscribed", "channel": name}
    await ws.send_text(orjson.dumps(reply, default=str).decode())


def close_block_channels(ws: WebSocket) -> None:
    channels: BlockChannels | None = getattr(ws.state, "block_channels", None)
    if channels is not None:
        channels.close()
