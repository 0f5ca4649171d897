"""What an orchestrator keeps in the catalog: retired datasets, and a run's hand-overs.

Airflow (pipelines/dags) makes one DAG per registered dataset, read from the catalog:
registering a dataset makes its DAG, retiring it (:meth:`PipelineState.retire`) takes the
DAG away — nothing to edit on any machine.  A retired dataset keeps its versions and stays
readable; it is only not ingested any more.  Registering it again reinstates it.

The tasks of one run may run on different workers: what one task hands to the next (the
staged batch — its files are in the lake — the quality gate's verdict, the version) is a
row of ``run_handovers`` keyed by the run, together with the manifest the run started
with, and Airflow's XCom carries only the dataset and run ids.  A task that is run again
finds its own work there and returns it instead of doing it twice.

Additive tables on the catalog's database (``catalog.db.Base``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import DateTime, ForeignKey, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from catalog.datasets.manifest import Manifest
from catalog.datasets.store import CatalogStore, DatasetRow, RunRow
from catalog.db import Base, utcnow
from catalog.db import aware as _aware
from catalog.errors import Conflict, DatasetNotFound, NotFound
from catalog.identity.store import SYSTEM, Actor, record_as

Stage = Literal["extracted", "validated", "published"]
STAGES: tuple[Stage, ...] = ("extracted", "validated", "published")


class DatasetRetired(Conflict):
    """An ingest of a retired dataset was asked for (409)."""

    code = "dataset_retired"

    def __init__(self, dataset: str) -> None:
        super().__init__(
            f"dataset {dataset!r} is retired: it is not ingested any more "
            "(`blockhub register` of its manifest reinstates it)",
            dataset=dataset,
        )


class DatasetRetirementRow(Base):
    """A dataset that is no longer ingested (its data and versions stay)."""

    __tablename__ = "dataset_retirements"
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    retired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    retired_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")


class RunHandoverRow(Base):
    """The latest stage a run reached and what it hands to the next task."""

    __tablename__ = "run_handovers"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(64), index=True)
    # The orchestrator's name for the work (Airflow: dag_id/run_id), so that a retried
    # first task finds the run its earlier attempt started.
    origin: Mapped[str] = mapped_column(String(250), index=True)
    stage: Mapped[str] = mapped_column(String(16))
    manifest_json: Mapped[str] = mapped_column(Text)
    payload_json: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


@dataclass(frozen=True)
class Handover:
    run_id: str
    dataset_id: str
    origin: str
    stage: Stage
    manifest: Manifest
    payload: dict[str, Any]
    updated_at: datetime


@dataclass(frozen=True)
class Retirement:
    dataset_id: str
    retired_at: datetime
    retired_by: str
    reason: str


def _handover(row: RunHandoverRow) -> Handover:
    stage: Stage = row.stage  # type: ignore[assignment]
    return Handover(
        run_id=row.run_id,
        dataset_id=row.dataset_id,
        origin=row.origin,
        stage=stage,
        manifest=Manifest.model_validate_json(row.manifest_json),
        payload=json.loads(row.payload_json),
        updated_at=_aware(row.updated_at) or utcnow(),
    )


class PipelineState:
    """Retirements and run hand-overs, on a :class:`CatalogStore`'s database."""

    def __init__(self, store: CatalogStore) -> None:
        self.store = store

    # -- retiring ---------------------------------------------------------------------

    def retire(self, dataset_id: str, *, by: Actor = SYSTEM, reason: str = "") -> Retirement:
        """Stop ingesting a dataset (its DAG goes away at the next parse); recorded as
        ``dataset.retire``.  Retiring a retired dataset changes nothing."""
        with self.store.audit.transaction() as tx:
            s = tx.session
            if s.get(DatasetRow, dataset_id) is None:
                raise DatasetNotFound(dataset_id)
            row = s.get(DatasetRetirementRow, dataset_id)
            if row is None:
                who = by.id if not isinstance(by, str) else by
                row = DatasetRetirementRow(
                    dataset_id=dataset_id, retired_at=utcnow(), retired_by=who, reason=reason
                )
                s.add(row)
                s.flush()
                record_as(
                    tx,
                    by,
                    action="dataset.retire",
                    datasets=[dataset_id],
                    detail={"reason": reason} if reason else {},
                )
            return Retirement(
                row.dataset_id, _aware(row.retired_at) or utcnow(), row.retired_by, row.reason
            )

    def reinstate(self, dataset_id: str, *, by: Actor = SYSTEM) -> bool:
        """Ingest a retired dataset again (``dataset.reinstate``); False if it was not
        retired."""
        if not self.is_retired(dataset_id):
            return False  # the common case, without taking the audit chain's write lock
        with self.store.audit.transaction() as tx:
            row = tx.session.get(DatasetRetirementRow, dataset_id)
            if row is None:
                return False
            tx.session.delete(row)
            tx.session.flush()
            record_as(tx, by, action="dataset.reinstate", datasets=[dataset_id])
            return True

    def retired(self) -> dict[str, Retirement]:
        with self.store.session() as s:
            return {
                r.dataset_id: Retirement(
                    r.dataset_id, _aware(r.retired_at) or utcnow(), r.retired_by, r.reason
                )
                for r in s.scalars(select(DatasetRetirementRow))
            }

    def is_retired(self, dataset_id: str) -> bool:
        with self.store.session() as s:
            return s.get(DatasetRetirementRow, dataset_id) is not None

    def check_active(self, dataset_id: str) -> None:
        """:class:`DatasetRetired` if the dataset is retired: before any ingest starts."""
        if self.is_retired(dataset_id):
            raise DatasetRetired(dataset_id)

    def active_manifests(self) -> list[Manifest]:
        """The manifests of registered datasets that are not retired, by id."""
        q = (
            select(DatasetRow.manifest_json)
            .outerjoin(DatasetRetirementRow, DatasetRetirementRow.dataset_id == DatasetRow.id)
            .where(DatasetRetirementRow.dataset_id.is_(None))
            .order_by(DatasetRow.id)
        )
        with self.store.session() as s:
            return [Manifest.model_validate_json(doc) for doc in s.scalars(q)]

    # -- hand-overs -------------------------------------------------------------------

    def hand(
        self,
        run_id: str,
        stage: Stage,
        payload: Mapping[str, Any],
        *,
        manifest: Manifest | None = None,
        origin: str | None = None,
    ) -> Handover:
        """Record that ``run_id`` reached ``stage`` with ``payload``; the first stage
        (``manifest`` and ``origin`` given) creates the row."""
        doc = json.dumps(dict(payload), ensure_ascii=False)
        with self.store.session() as s:
            row = s.get(RunHandoverRow, run_id)
            if row is None:
                run = s.get(RunRow, run_id)
                if run is None or manifest is None or origin is None:
                    raise NotFound(f"no hand-over of run {run_id!r} to continue", run=run_id)
                row = RunHandoverRow(
                    run_id=run_id,
                    dataset_id=run.dataset_id,
                    origin=origin,
                    manifest_json=manifest.model_dump_json(),
                )
                s.add(row)
            row.stage = stage
            row.payload_json = doc
            row.updated_at = utcnow()
            s.flush()
            return _handover(row)

    def handover(self, run_id: str) -> Handover:
        with self.store.session() as s:
            row = s.get(RunHandoverRow, run_id)
            if row is None:
                raise NotFound(f"no hand-over of run {run_id!r}", run=run_id)
            return _handover(row)

    def by_origin(self, dataset_id: str, origin: str) -> Handover | None:
        """The latest run of ``dataset_id`` that ``origin`` started and handed over."""
        q = (
            select(RunHandoverRow)
            .where(RunHandoverRow.dataset_id == dataset_id, RunHandoverRow.origin == origin)
            .order_by(RunHandoverRow.updated_at.desc())
            .limit(1)
        )
        with self.store.session() as s:
            row = s.scalars(q).first()
            return _handover(row) if row is not None else None
