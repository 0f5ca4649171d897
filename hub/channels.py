"""The channel model of ``/v1/ws``: which channels exist, who may subscribe, feed filters.

Channels: ``dataset:<id>`` and ``feed:<id>`` (read permission on the dataset or
feed), ``alerts`` and ``presence`` (operators and admins), ``orders:<target>``
(the target unit itself, any principal of the target agency, operators and
admins).  A feed subscription may carry a filter, ``{"column": [values...]}``,
applied on the server to each event before it is sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from catalog.access import Access
from catalog.errors import AccessDenied, InvalidRequest
from catalog.eventlog import Message
from catalog.masking import mask_value
from catalog.store import DatasetRecord, Principal
from hub.context import Hub
from pipelines.feeds import is_feed

OPS_ROLES = ("admin", "operator")

# Per-message decisions (masking feed payloads) reuse a principal's access for a few
# seconds rather than reading grants for every event of every subscriber; a revoked
# grant stops its masks being lifted within this time (new subscriptions check at once).
ACCESS_TTL_S = 5.0
# An answer past its time is still used for up to this long while a worker thread reads
# the grants again: the fan-out asks from the event loop, and reading them there (a few
# milliseconds of catalog queries) held every subscriber's delivery up, once per
# principal and dataset every ACCESS_TTL_S.
ACCESS_GRACE_S = 1.0
_access_cache: dict[tuple[int, str, str], tuple[float, Access]] = {}
_refreshing: set[tuple[int, str, str]] = set()
_cache_lock = threading.Lock()


def source_access(hub: Hub, principal: Principal, dataset: str, *, fresh: bool = False) -> Access:
    """The principal's effective access (grants, masks, row filters) to a dataset or feed."""
    key = (id(hub), principal.id, dataset)
    now = time.monotonic()
    if not fresh:
        with _cache_lock:
            hit = _access_cache.get(key)
            if hit is not None:
                age = now - hit[0]
                if age < ACCESS_TTL_S:
                    return hit[1]
                if age < ACCESS_TTL_S + ACCESS_GRACE_S:
                    if key not in _refreshing:
                        _refreshing.add(key)
                        refresh = (hub, principal, dataset, key)
                        threading.Thread(target=_refresh, args=refresh, daemon=True).start()
                    return hit[1]
    return _read_access(hub, principal, dataset, key)


def _read_access(hub: Hub, principal: Principal, dataset: str, key: tuple[int, str, str]) -> Access:
    now = time.monotonic()
    access = hub.exchange.access(principal, dataset)
    _remember(key, now, access)
    return access


def _remember(key: tuple[int, str, str], read_at: float, access: Access) -> None:
    with _cache_lock:
        if len(_access_cache) > 10_000:
            _access_cache.clear()
        _access_cache[key] = (read_at, access)


def _refresh(hub: Hub, principal: Principal, dataset: str, key: tuple[int, str, str]) -> None:
    try:
        _read_access(hub, principal, dataset, key)
    except Exception:  # e.g. the dataset is gone: the next call past the grace reads again
        with _cache_lock:
            _access_cache.pop(key, None)
    finally:
        with _cache_lock:
            _refreshing.discard(key)


def is_ops(principal: Principal) -> bool:
    return principal.role in OPS_ROLES


def order_targets(principal: Principal) -> list[str]:
    """The ``orders:<target>`` names a non-operator principal receives: itself, its agency."""
    return [principal.id, principal.agency_id]


@dataclass(frozen=True)
class Admission:
    """What a subscription was let in on: for a ``dataset:`` or ``feed:`` channel, the
    dataset's record and the principal's access to it, read at the check (the row filter
    and the audit entry use them; nothing is read twice).  Empty for the other channels."""

    record: DatasetRecord | None = None
    access: Access | None = None


def check_channel(hub: Hub, principal: Principal, channel: str) -> Admission:
    """Raise unless the principal may subscribe to ``channel`` (runs in a worker thread)."""
    kind, sep, name = channel.partition(":")
    if kind in ("dataset", "feed") and sep and name:
        # Feeds are registered as datasets by the feed intake; both follow the exchange's
        # access rules (sharing type, grants), exactly as queries do.  Read fresh: a grant
        # revoked a moment ago keeps the subscription out.
        read_at = time.monotonic()
        record, access = hub.exchange.record_access(principal, name)
        if kind == "feed" and not is_feed(record.manifest):
            raise InvalidRequest(f"dataset {name!r} is not a feed", channel=channel)
        if not access.readable:
            raise AccessDenied(f"you may not subscribe to {channel!r}", channel=channel)
        _remember((id(hub), principal.id, name), read_at, access)
        return Admission(record, access)
    if channel in ("alerts", "presence") and not sep:
        if not is_ops(principal):
            raise AccessDenied(
                f"{channel!r} is for operators and admins", channel=channel, role=principal.role
            )
        return Admission()
    if kind == "orders" and sep and name:
        if not is_ops(principal) and name not in order_targets(principal):
            raise AccessDenied(
                f"you may only subscribe to orders:{principal.id} or orders:{principal.agency_id}",
                channel=channel,
            )
        return Admission()
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


def row_filter(access: Access) -> Callable[[Message], bool] | None:
    """The grant's row filter as a predicate on feed events (None: every row)."""
    filters = access.row_filters
    if filters is None:
        return None

    def allowed(msg: Message) -> bool:
        data = msg.data
        return any(
            all(data.get(c) is not None and str(data[c]) in vals for c, vals in f.items())
            for f in filters
        )

    return allowed


def mask_feed_payload(
    hub: Hub, principal: Principal, channel: str, data: dict[str, Any]
) -> dict[str, Any]:
    """A feed event as ``principal`` may see it: the columns its access shows, personal
    data masked with the same masks as queries (catalog.masking).  Returning the same
    object when nothing changes keeps the send path on the shared, serialized-once frame.
    """
    access = source_access(hub, principal, channel.partition(":")[2])
    if access.via == "owner":
        return data
    visible = set(access.columns)
    if not access.masked and visible.issuperset(data):
        return data
    return {
        k: (mask_value(access.masked[k], str(v)) if k in access.masked and v is not None else v)
        for k, v in data.items()
        if k in visible
    }
