"""Channel names: made and parsed here only, used by every floor.

A channel is ``<kind>:<name>`` (``dataset:<id>``, ``feed:<id>``, ``orders:<agency or
unit>``, ``block:<region code>``) or a bare word (``alerts``, ``presence``).  Publishers
build names with the makers below, subscribers' requests are read with :func:`parse`;
no other module spells a prefix or splits on ``:``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

ChannelKind = Literal["dataset", "feed", "alerts", "presence", "orders", "block"]
CHANNEL_KINDS: tuple[ChannelKind, ...] = get_args(ChannelKind)

ALERTS = "alerts"
PRESENCE = "presence"

#: Kinds whose name is a bare word; every other kind takes ``<kind>:<name>``.
_BARE: frozenset[str] = frozenset({ALERTS, PRESENCE})

#: What a subscriber may name, for error messages.
CHANNELS_HELP = (
    "dataset:<id>, feed:<id>, alerts, orders:<agency or unit>, presence, block:<region code>"
)


def dataset_channel(dataset_id: str) -> str:
    """Where ``dataset.updated`` and quality events of a dataset go."""
    return f"dataset:{dataset_id}"


def feed_channel(feed_id: str) -> str:
    """Where a live feed's events go."""
    return f"feed:{feed_id}"


def orders_channel(target: str) -> str:
    """Where dispatch orders for an agency or a unit go."""
    return f"orders:{target}"


def block_channel(region_code: str) -> str:
    """The virtual channel of one region's block data (no messages are stored under it)."""
    return f"block:{region_code}"


@dataclass(frozen=True)
class Channel:
    """A channel name read back: its kind and the name after the colon ('' for the bare
    words).  ``kind`` is None when the text is no channel: an unknown kind, a bare word
    with a name, or a kind that takes a name without one."""

    text: str
    kind: ChannelKind | None
    name: str


def parse(channel: str) -> Channel:
    """``dataset:hotline`` → ``Channel(kind="dataset", name="hotline")``."""
    kind, sep, name = channel.partition(":")
    if kind in _BARE:
        return Channel(channel, None if sep else kind, "")  # type: ignore[arg-type]
    for known in CHANNEL_KINDS:
        if kind == known and name:
            return Channel(channel, known, name)
    return Channel(channel, None, name)


def kind_of(channel: str) -> str:
    """The part before the colon (the whole name for bare words): cheap, for hot paths."""
    return channel.partition(":")[0]


def name_of(channel: str) -> str:
    """The part after the colon ('' for bare words)."""
    return channel.partition(":")[2]


def is_feed_channel(channel: str) -> bool:
    return channel.startswith("feed:")


def is_block_channel(channel: str) -> bool:
    return channel.startswith("block:")
