"""Audit entries for exchanges that do not go through :meth:`Exchange.query`."""

from __future__ import annotations

from catalog.store import Principal
from hub.context import Hub


def audit_subscription(hub: Hub, principal: Principal, channel: str, since: int | None) -> None:
    """Record a websocket subscription (called after the access check passed)."""
    kind, _, name = channel.partition(":")
    datasets: dict[str, int | None] = {}
    agencies: dict[str, str] = {}
    if kind == "dataset" and name:
        datasets[name] = None
        agencies[name] = hub.store.get_dataset(name).agency_id
    hub.audit.append(
        action="subscribe",
        principal=principal.id,
        agency=principal.agency_id,
        datasets=datasets,
        dataset_agencies=agencies,
        detail={"channel": channel, "since": since},
    )
