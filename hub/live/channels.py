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

from catalog.access import disclosure
from catalog.access.disclosure import FeedFilter
from catalog.access.effective import Access
from catalog.datasets.store import DatasetRecord
from catalog.domain.channels import (
    ALERTS,
    CHANNELS_HELP,
    PRESENCE,
    is_feed_channel,
    kind_of,
    name_of,
    orders_channel,
    parse,
)
from catalog.errors import AccessDenied, InvalidRequest, NotFound
from catalog.identity.store import Principal
from eventlog.message import Message
from hub.live.host import LiveHub
from pipelines.feeds import is_feed

OPS_ROLES = ("admin", "operator")

# Every kind of websocket channel is catalog.domain.channels.CHANNEL_KINDS (``block`` is
# served by hub/api/block_channels.py); each one must have its entry in hub/api/outbound.py.

# Per-message decisions (masking feed payloads) reuse a principal's access for a few
# seconds rather than reading grants for every event of every subscriber; a revoked
# grant stops its masks being lifted within this time (new subscriptions check at once).
ACCESS_TTL_S = 5.0
# An answer past its time is still used for up to this long while a worker thread reads
# the grants again: the fan-out asks from the event loop, and reading them there (a few
# milliseconds of catalog queries) held every subscriber's delivery up, once per
# principal and dataset every ACCESS_TTL_S.
ACCESS_GRACE_S = 1.0
_access_cache: dict[tuple[int, str, str], tuple[float, SourceView]] = {}
_refreshing: set[tuple[int, str, str]] = set()
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class SourceView:
    """A principal's access to one dataset, with the dataset's block key column (which
    rows-per-region counts are keyed on) read alongside."""

    access: Access
    key_column: str | None


def source_view(
    hub: LiveHub, principal: Principal, dataset: str, *, fresh: bool = False
) -> SourceView:
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


def source_access(
    hub: LiveHub, principal: Principal, dataset: str, *, fresh: bool = False
) -> Access:
    """:func:`source_view`'s access."""
    return source_view(hub, principal, dataset, fresh=fresh).access


def _key_column(record: DatasetRecord) -> str | None:
    for key in record.manifest.block_keys:
        if key.region_like:
            return key.key_column
    return None


def _read_access(
    hub: LiveHub, principal: Principal, dataset: str, key: tuple[int, str, str]
) -> SourceView:
    now = time.monotonic()
    try:
        record, access = hub.exchange.record_access(principal, dataset)
    except NotFound:  # a dataset gone (or never there) shows nothing
        view = SourceView(Access(dataset, False, "denied", (), {}, None), None)
    else:
        view = SourceView(access, _key_column(record))
    _remember(key, now, view)
    return view


def _remember(key: tuple[int, str, str], read_at: float, view: SourceView) -> None:
    with _cache_lock:
        if len(_access_cache) > 10_000:
            _access_cache.clear()
        _access_cache[key] = (read_at, view)


def _refresh(hub: LiveHub, principal: Principal, dataset: str, key: tuple[int, str, str]) -> None:
    try:
        _read_access(hub, principal, dataset, key)
    except Exception:  # e.g. the catalog is unreachable: the next call past the grace reads
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


def check_channel(hub: LiveHub, principal: Principal, channel: str) -> Admission:
    """Raise unless the principal may subscribe to ``channel`` (runs in a worker thread)."""
    parsed = parse(channel)
    kind, name = parsed.kind, parsed.name
    if kind in ("dataset", "feed"):
        # Feeds are registered as datasets by the feed intake; both follow the exchange's
        # access rules (sharing type, grants), exactly as queries do.  Read fresh: a grant
        # revoked a moment ago keeps the subscription out.
        read_at = time.monotonic()
        record, access = hub.exchange.record_access(principal, name)
        if kind == "feed" and not is_feed(record.manifest):
            raise InvalidRequest(f"dataset {name!r} is not a feed", channel=channel)
        if not access.readable:
            raise AccessDenied(f"you may not subscribe to {channel!r}", channel=channel)
        _remember((id(hub), principal.id, name), read_at, SourceView(access, _key_column(record)))
        return Admission(record, access)
    if kind in (ALERTS, PRESENCE):
        if not is_ops(principal):
            raise AccessDenied(
                f"{channel!r} is for operators and admins", channel=channel, role=principal.role
            )
        return Admission()
    if kind == "orders":
        if not is_ops(principal) and name not in order_targets(principal):
            mine, agency = orders_channel(principal.id), orders_channel(principal.agency_id)
            raise AccessDenied(f"you may only subscribe to {mine} or {agency}", channel=channel)
        return Admission()
    raise InvalidRequest(
        f"unknown channel {channel!r}; channels are {CHANNELS_HELP}", channel=channel
    )


def parse_filter(channel: str, raw: Any) -> FeedFilter | None:
    """``{"district_code": ["520102"], ...}`` → a filter (all columns must match one value)."""
    if raw is None:
        return None
    if not is_feed_channel(channel):
        raise InvalidRequest("filters apply to feed:<id> channels only", channel=channel)
    return disclosure.parse_filter(raw, channel=channel)


def subscription_filter(
    hub: LiveHub, principal: Principal, channel: str, admission: Admission, flt: FeedFilter | None
) -> Callable[[Message], bool] | None:
    """Which messages of a ``dataset:``/``feed:`` channel go to this subscriber (None: all).

    Decided per message on the principal's current access (cached a few seconds, as for
    masking): a grant's row filter holds for live events, and the subscriber's own filter
    compares the values it would see (the masked ones for masked columns) — a filter
    naming a column it may not see is refused here.
    """
    access = admission.access
    name = name_of(channel)
    if access is None:
        return None
    if flt is not None:
        disclosure.check_filter(access, flt, dataset=name)
    if flt is None and access.row_filters is None:
        # Nothing to skip per message: the subscription stays on the fan-out's shared
        # path; a grant revoked later turns its frames into withheld ones
        # (disclose_message) until the subscriber goes.
        return None
    if not is_feed_channel(channel):
        return None  # dataset: payloads are narrowed, never skipped

    def current() -> Access:
        return source_access(hub, principal, name)

    keep = disclosure.filter_predicate(current, flt)
    return lambda m: keep(m.data)


def disclose_message(hub: LiveHub, principal: Principal, msg: Message) -> dict[str, Any] | None:
    """A message's data as ``principal`` may see it: the same object when nothing changes
    (the send path then shares the frame serialized once), a new dict when something is
    masked, dropped or withheld, None when nothing of it may go out (docs/security.md).

    Every channel that carries dataset values or counts is decided here: ``feed:``
    events (columns, masks, rows), ``dataset:`` payloads (counts, rows per region),
    ``alerts`` (the rule's event or key, by the source dataset's access) and
    ``orders:`` (the order's related event).
    """
    kind, name = kind_of(msg.channel), name_of(msg.channel)
    data = msg.data
    if kind == "feed":
        access = source_access(hub, principal, name)
        if disclosure.unchanged(access, data):
            return data
        return disclosure.disclose_record(access, data)
    if kind == "dataset":
        view = source_view(hub, principal, name)
        if view.access.via == "owner" or disclosure.counts_visible(view.access):
            return data
        return disclosure.disclose_update(view.access, data, view.key_column)
    if kind == ALERTS:
        if "order" in data and "change" in data:  # an escalated order
            return disclose_order_payload(hub, principal, data)
        return disclose_alert(hub, principal, data)
    if kind == "orders":
        return disclose_order_payload(hub, principal, data)
    return data


def disclose_alert(hub: LiveHub, principal: Principal, alert: dict[str, Any]) -> dict[str, Any]:
    """An alert (as stored or published) for this receiver."""
    dataset = disclosure.source_dataset(alert.get("source"))
    access = source_access(hub, principal, dataset) if dataset else None
    out = disclosure.disclose_alert(access, alert)
    return alert if out == alert else out


def disclose_order(hub: LiveHub, principal: Principal, order: dict[str, Any]) -> dict[str, Any]:
    """An order (as stored or published) for this receiver: its related event disclosed
    by the receiver's access to the event's source dataset."""
    event = order.get("event")
    if not disclosure.carries_values(event):
        return order
    dataset = disclosure.order_event_source(event)
    access = source_access(hub, principal, dataset) if dataset else None
    return {**order, "event": disclosure.disclose_order_event(access, event)}


def disclose_order_payload(
    hub: LiveHub, principal: Principal, data: dict[str, Any]
) -> dict[str, Any]:
    order = data.get("order")
    if not isinstance(order, dict):
        return data
    shown = disclose_order(hub, principal, order)
    return data if shown is order else {**data, "order": shown}


def audit_unmasked(
    hub: LiveHub, principal: Principal, record: DatasetRecord, access: Access, path: str
) -> list[str]:
    """Append an ``access.unmasked`` entry when ``access`` hands personal columns of
    ``record`` to a non-owner raw (a grant lifted their mask); returns those columns.

    One entry per delivery stream — a subscription, a response — not per event: the
    entry names the path, the columns and the grants that lifted the mask."""
    raw = disclosure.unmasked_personal(access, record.manifest.personal_columns)
    if raw:
        hub.audit.append(
            action="access.unmasked",
            principal=principal.id,
            agency=principal.agency_id,
            datasets={record.id: None},
            dataset_agencies={record.id: record.agency_id},
            columns={record.id: raw},
            detail={"path": path, "grants": list(access.grants), "via": access.via},
        )
    return raw
