"""Audit entries for exchanges that do not go through :meth:`Exchange.query`."""

from __future__ import annotations

from catalog.store import DatasetRecord, Principal
from hub.context import Hub


def audit_subscription(
    hub: Hub,
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
    kind, _, name = channel.partition(":")
    datasets: dict[str, int | None] = {}
    agencies: dict[str, str] = {}
    if kind in ("dataset", "feed") and name:
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
