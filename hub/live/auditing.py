"""Audit entries for exchanges that do not go through :meth:`Exchange.query`, and the
settings a serving hub starts with."""

from __future__ import annotations

import os
import socket
from typing import Any

from catalog.audit.seal import key_id
from catalog.datasets.store import DatasetRecord
from catalog.domain.channels import parse
from catalog.identity.store import SYSTEM, Principal
from hub.live.host import LiveHub

# Settings that decide what leaves the hub, and how the record of it is sealed.
ACCESS_SETTINGS = (
    "core_max_rows",
    "query_max_rows",
    "query_timeout_s",
    "query_memory_limit",
    "ws_max_per_principal",
)


def audit_subscription(
    hub: LiveHub,
    principal: Principal,
    channel: str,
    since: int | None,
    record: DatasetRecord | None = None,
    outcome: str = "ok",
) -> None:
    """Record a websocket subscription, let in (``ok``) or refused (``denied``).

    A ``dataset:`` or ``feed:`` channel names its dataset and the owning agency, so a
    steward's audit view of the dataset lists who subscribed to it; ``record`` is the one
    the access check read (None: read it here).
    """
    parsed = parse(channel)
    name = parsed.name
    datasets: dict[str, int | None] = {}
    agencies: dict[str, str] = {}
    if parsed.kind in ("dataset", "feed"):
        datasets[name] = None
        agencies[name] = (record if record is not None else hub.store.get_dataset(name)).agency_id
    hub.audit.append(
        action="subscribe",
        principal=principal.id,
        agency=principal.agency_id,
        datasets=datasets,
        dataset_agencies=agencies,
        outcome=outcome,
        detail={"channel": channel, "since": since},
    )


def access_settings(hub: LiveHub) -> dict[str, Any]:
    s = hub.settings
    keys = hub.store.audit_keys
    return {
        "env": "production" if s.production else "development",
        "audit_key_id": keys.current_id,
        "audit_previous_key_ids": sorted(key_id(k) for k in keys.previous),
        "audit_unkeyed_until": keys.unkeyed_until,
        **{name: getattr(s, name) for name in ACCESS_SETTINGS},
    }


def audit_start(hub: LiveHub) -> None:
    """Record a serving hub's start (``hub.start``) with its access settings, and which of
    them changed since the last start: they come from the environment, not the catalog,
    so the chain is where a change of them can be seen afterwards."""
    now = access_settings(hub)
    last = hub.audit.entries(action="hub.start", limit=1)
    before = last[0].detail.get("settings", {}) if last else {}
    changed = {
        k: {"before": before.get(k), "after": v}
        for k, v in now.items()
        if last and before.get(k) != v
    }
    hub.audit.append(
        action="hub.start",
        principal=SYSTEM,
        agency="",
        datasets={},
        dataset_agencies={},
        detail={
            "settings": now,
            "changed": changed,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        },
    )
