"""The channel model of ``/v1/ws``: which channels exist, who may subscribe, feed filters.

Channels: ``dataset:<id>`` and ``feed:<id>`` (read permission on the dataset or
feed), ``alerts`` and ``presence`` (operators and admins), ``orders:<target>``
(the target unit itself, any principal of the target agency, operators and
admins).  A feed subscription may carry a filter, ``{"column": [values...]}``,
applied on the server to each event before it is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from catalog.errors import AccessDenied, InvalidRequest
from catalog.eventlog import Message
from catalog.policy import can_read
from catalog.store import DatasetRecord, Principal
from hub.context import Hub

OPS_ROLES = ("admin", "operator")

# The one place that decides read permission on a dataset or feed for a subscription.
# A grant-aware check from catalog/ replaces ``can_read`` here (one-line swap).
can_read_source: Callable[[Principal, DatasetRecord], bool] = can_read


def is_ops(principal: Principal) -> bool:
    return principal.role in OPS_ROLES


def order_targets(principal: Principal) -> list[str]:
    """The ``orders:<target>`` names a non-operator principal receives: itself, its agency."""
    return [principal.id, principal.agency_id]


def check_channel(hub: Hub, principal: Principal, channel: str) -> None:
    """Raise unless the principal may subscribe to ``channel`` (runs in a worker thread)."""
    kind, sep, name = channel.partition(":")
    if kind in ("dataset", "feed") and sep and name:
        # Feeds are registered as datasets (kind feed) by the feed intake; both read the same.
        record = hub.store.get_dataset(name)
        if not can_read_source(principal, record):
            raise AccessDenied(f"you may not subscribe to {channel!r}", channel=channel)
        return
    if channel in ("alerts", "presence") and not sep:
        if not is_ops(principal):
            raise AccessDenied(
                f"{channel!r} is for operators and admins", channel=channel, role=principal.role
            )
        return
    if kind == "orders" and sep and name:
        if not is_ops(principal) and name not in order_targets(principal):
            raise AccessDenied(
                f"you may only subscribe to orders:{principal.id} or orders:{principal.agency_id}",
                channel=channel,
            )
        return
    raise InvalidRequest(
        f"unknown channel {channel!r}; channels are dataset:<id>, feed:<id>, alerts, "
        "orders:<agency or unit>, presence",
        channel=channel,
    )


FeedFilter = dict[str, frozenset[str]]


def parse_filter(channel: str, raw: Any) -> FeedFilter | None:
    """``{"district_code": ["520102"], ...}`` → a filter (all columns must match one value)."""
    if raw is None:
        return None
    if not channel.startswith("feed:"):
        raise InvalidRequest("filters apply to feed:<id> channels only", channel=channel)
    if not isinstance(raw, dict) or not raw:
        raise InvalidRequest(
            'filter must be an object of column → values, e.g. {"district_code": ["520102"]}',
            channel=channel,
        )
    out: FeedFilter = {}
    for column, values in raw.items():
        vals = values if isinstance(values, list) else [values]
        if not vals or not all(isinstance(v, str | int | float | bool) for v in vals):
            raise InvalidRequest(
                f"filter.{column} must be a value or a non-empty list of values",
                channel=channel,
                field=f"filter.{column}",
            )
        out[str(column)] = frozenset(str(v) for v in vals)
    return out


def matches(flt: FeedFilter, msg: Message) -> bool:
    data = msg.data
    for column, allowed in flt.items():
        v = data.get(column)
        if v is None or str(v) not in allowed:
            return False
    return True


def mask_feed_payload(
    hub: Hub, principal: Principal, channel: str, data: dict[str, Any]
) -> dict[str, Any]:
    """Masking hook for feed payloads (identity for now).

    The exchange work builds masking of query results; when it lands, this applies
    the same rules to each ``feed:<id>`` event for ``principal``.  Returning the
    same object keeps the send path on the shared, serialized-once frame.
    """
    return data
