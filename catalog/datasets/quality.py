"""Quality records in the catalog: validation results, quarantine batches and the
steward's actions on them, and the freshness state of each dataset.

Its own tables next to the catalog's (same database, created on first use), so that
the catalog store stays what it was and a deployment gains them additively.

A steward's action on a quarantine batch (release, discard) commits with its entry in
the audit chain (``quarantine.release`` / ``quarantine.discard``), which binds the
``quarantine_actions`` row: that history table is covered by the chain.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine

from catalog.audit.log import AuditLog
from catalog.errors import NotFound
from catalog.outbox import Event, stage
from catalog.vocabulary import BatchStatus, GateStatus

_meta = MetaData()

_results = Table(
    "quality_results",
    _meta,
    Column("run_id", String(36), primary_key=True),
    Column("dataset_id", String(64), nullable=False, index=True),
    Column("suite", String(200), nullable=False),
    Column("policy", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("success", Boolean, nullable=False),
    Column("rows_checked", BigInteger, nullable=False),
    Column("rows_quarantined", BigInteger, nullable=False),
    Column("rows_unexpected", BigInteger, nullable=False),
    Column("evaluated", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("validated_at", DateTime(timezone=True), nullable=False),
    Column("quarantine_batch", String(36), nullable=True),
    Column("document", Text, nullable=False),
)

results_table = _results
"""The gate's results, one row per validated run (read by the hub's metrics too)."""

_batches = Table(
    "quarantine_batches",
    _meta,
    Column("id", String(36), primary_key=True),
    Column("dataset_id", String(64), nullable=False, index=True),
    Column("run_id", String(36), nullable=False),
    Column("path", Text, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("policy", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("failed", Text, nullable=False),
    Column("previous_cursor", Text, nullable=True),
    Column("cursor", Text, nullable=True),
    Column("origin", String(36), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

_actions = Table(
    "quarantine_actions",
    _meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("batch_id", String(36), nullable=False, index=True),
    Column("dataset_id", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("principal", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("rows_published", BigInteger, nullable=False),
    Column("rows_discarded", BigInteger, nullable=False),
    Column("rows_held", BigInteger, nullable=False),
    Column("version", Integer, nullable=True),
    Column("new_batch", String(36), nullable=True),
    Column("note", Text, nullable=True),
)

_freshness = Table(
    "dataset_freshness",
    _meta,
    Column("dataset_id", String(64), primary_key=True),
    Column("stale_since", DateTime(timezone=True), nullable=True),
    Column("announced_at", DateTime(timezone=True), nullable=True),
    Column("checked_at", DateTime(timezone=True), nullable=False),
)


def _aware(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class QualityResult:
    run_id: str
    dataset_id: str
    suite: str
    policy: str
    status: str
    success: bool
    rows_checked: int
    rows_quarantined: int
    rows_unexpected: int
    evaluated: int
    failed: int
    seconds: float
    validated_at: datetime
    quarantine_batch: str | None
    document: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """The short form carried by events and listings."""
        return {
            "run_id": self.run_id,
            "suite": self.suite,
            "policy": self.policy,
            "status": self.status,
            "success": self.success,
            "rows_checked": self.rows_checked,
            "rows_quarantined": self.rows_quarantined,
            "evaluated": self.evaluated,
            "failed": self.failed,
            "failed_expectations": [
                r["expectation_config"]["meta"].get("blockhub_key", r["expectation_config"]["type"])
                for r in self.document.get("results", [])
                if not r["success"]
            ],
            "quarantine_batch": self.quarantine_batch,
            "validated_at": self.validated_at.isoformat(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "seconds": self.seconds,
            "rows_unexpected": self.rows_unexpected,
            "results": self.document.get("results", []),
        }


@dataclass(frozen=True)
class QuarantineBatch:
    id: str
    dataset_id: str
    run_id: str
    path: str
    rows: int
    policy: str
    status: str
    failed: list[str]
    previous_cursor: Any
    cursor: Any
    origin: str | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dataset": self.dataset_id,
            "run_id": self.run_id,
            "rows": self.rows,
            "policy": self.policy,
            "status": self.status,
            "failed_expectations": self.failed,
            "origin": self.origin,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class QuarantineAction:
    id: int
    batch_id: str
    dataset_id: str
    action: str
    principal: str
    at: datetime
    rows_published: int
    rows_discarded: int
    rows_held: int
    version: int | None
    new_batch: str | None
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "batch": self.batch_id,
            "dataset": self.dataset_id,
            "action": self.action,
            "principal": self.principal,
            "at": self.at.isoformat(),
            "rows_published": self.rows_published,
            "rows_discarded": self.rows_discarded,
            "rows_held": self.rows_held,
            "version": self.version,
            "new_batch": self.new_batch,
            "note": self.note,
        }


@dataclass(frozen=True)
class Freshness:
    dataset_id: str
    stale_since: datetime | None
    announced_at: datetime | None
    checked_at: datetime


def _j(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def _result(r: Any) -> QualityResult:
    return QualityResult(
        run_id=r.run_id,
        dataset_id=r.dataset_id,
        suite=r.suite,
        policy=r.policy,
        status=r.status,
        success=bool(r.success),
        rows_checked=r.rows_checked,
        rows_quarantined=r.rows_quarantined,
        rows_unexpected=r.rows_unexpected,
        evaluated=r.evaluated,
        failed=r.failed,
        seconds=r.seconds,
        validated_at=_aware(r.validated_at) or _now(),
        quarantine_batch=r.quarantine_batch,
        document=json.loads(r.document),
    )


def _batch(r: Any) -> QuarantineBatch:
    return QuarantineBatch(
        id=r.id,
        dataset_id=r.dataset_id,
        run_id=r.run_id,
        path=r.path,
        rows=r.rows,
        policy=r.policy,
        status=r.status,
        failed=json.loads(r.failed),
        previous_cursor=json.loads(r.previous_cursor) if r.previous_cursor else None,
        cursor=json.loads(r.cursor) if r.cursor else None,
        origin=r.origin,
        created_at=_aware(r.created_at) or _now(),
    )


def _action(r: Any) -> QuarantineAction:
    return QuarantineAction(
        id=r.id,
        batch_id=r.batch_id,
        dataset_id=r.dataset_id,
        action=r.action,
        principal=r.principal,
        at=_aware(r.at) or _now(),
        rows_published=r.rows_published,
        rows_discarded=r.rows_discarded,
        rows_held=r.rows_held,
        version=r.version,
        new_batch=r.new_batch,
        note=r.note,
    )


class QualityStore:
    """Quality tables in the catalog database (pass the catalog store's engine)."""

    def __init__(self, engine: Engine, audit: AuditLog | None = None) -> None:
        """``audit``: the catalog's chain, needed by :meth:`record_action` (reading and
        recording results do without)."""
        self.engine = engine
        self.audit = audit
        _meta.create_all(engine)

    # -- results ---------------------------------------------------------------------

    def record_result(
        self,
        *,
        run_id: str,
        dataset_id: str,
        suite: str,
        policy: str,
        status: GateStatus,
        rows_checked: int,
        rows_quarantined: int,
        rows_unexpected: int,
        seconds: float,
        document: dict[str, Any],
        quarantine_batch: str | None = None,
        events: Callable[[QualityResult], Sequence[Event]] | None = None,
    ) -> QualityResult:
        """Store a run's validation; ``events`` (e.g. ``quality.failed``) go to the outbox in
        the same transaction (catalog/outbox.py)."""
        stats = document.get("statistics", {})
        values = {
            "run_id": run_id,
            "dataset_id": dataset_id,
            "suite": suite,
            "policy": policy,
            "status": status,
            "success": bool(document.get("success")),
            "rows_checked": rows_checked,
            "rows_quarantined": rows_quarantined,
            "rows_unexpected": rows_unexpected,
            "evaluated": int(stats.get("evaluated_expectations", 0)),
            "failed": int(stats.get("unsuccessful_expectations", 0)),
            "seconds": seconds,
            "validated_at": _now(),
            "quarantine_batch": quarantine_batch,
            "document": _j(document),
        }
        with self.engine.begin() as c:
            existing = c.execute(select(_results.c.run_id).where(_results.c.run_id == run_id))
            if existing.first() is not None:  # an Airflow retry re-validates the same run
                c.execute(update(_results).where(_results.c.run_id == run_id).values(**values))
            else:
                c.execute(insert(_results).values(**values))
            if events is not None:
                row = c.execute(select(_results).where(_results.c.run_id == run_id)).one()
                stage(c, events(_result(row)))
        return self.get_result(run_id)

    def get_result(self, run_id: str) -> QualityResult:
        with self.engine.connect() as c:
            row = c.execute(select(_results).where(_results.c.run_id == run_id)).first()
        if row is None:
            raise NotFound(f"no quality result for run {run_id!r}", run=run_id)
        return _result(row)

    def results(self, dataset_id: str, limit: int = 20) -> list[QualityResult]:
        q = (
            select(_results)
            .where(_results.c.dataset_id == dataset_id)
            .order_by(_results.c.validated_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as c:
            return [_result(r) for r in c.execute(q)]

    # -- quarantine --------------------------------------------------------------------

    def add_batch(
        self,
        *,
        dataset_id: str,
        run_id: str,
        path: str,
        rows: int,
        policy: str,
        failed: list[str],
        previous_cursor: Any = None,
        cursor: Any = None,
        origin: str | None = None,
        batch_id: str | None = None,
    ) -> QuarantineBatch:
        bid = batch_id or str(uuid.uuid4())
        with self.engine.begin() as c:
            c.execute(
                insert(_batches).values(
                    id=bid,
                    dataset_id=dataset_id,
                    run_id=run_id,
                    path=path,
                    rows=rows,
                    policy=policy,
                    status="held",
                    failed=_j(failed),
                    previous_cursor=_j(previous_cursor),
                    cursor=_j(cursor),
                    origin=origin,
                    created_at=_now(),
                )
            )
        return self.get_batch(bid)

    def get_batch(self, batch_id: str, dataset_id: str | None = None) -> QuarantineBatch:
        q = select(_batches).where(_batches.c.id == batch_id)
        if dataset_id is not None:
            q = q.where(_batches.c.dataset_id == dataset_id)
        with self.engine.connect() as c:
            row = c.execute(q).first()
        if row is None:
            raise NotFound(f"no quarantine batch {batch_id!r}", batch=batch_id)
        return _batch(row)

    def batches(
        self, dataset_id: str, status: str | None = None, limit: int = 100
    ) -> list[QuarantineBatch]:
        q = select(_batches).where(_batches.c.dataset_id == dataset_id)
        if status:
            q = q.where(_batches.c.status == status)
        q = q.order_by(_batches.c.created_at.desc()).limit(limit)
        with self.engine.connect() as c:
            return [_batch(r) for r in c.execute(q)]

    def set_batch_status(self, batch_id: str, status: BatchStatus) -> None:
        with self.engine.begin() as c:
            c.execute(update(_batches).where(_batches.c.id == batch_id).values(status=status))

    def record_action(
        self,
        batch: QuarantineBatch,
        *,
        action: str,
        principal: str,
        status: BatchStatus,
        rows_published: int = 0,
        rows_discarded: int = 0,
        rows_held: int = 0,
        version: int | None = None,
        new_batch: str | None = None,
        note: str | None = None,
    ) -> QuarantineAction:
        """Close a batch with the steward's action, in one transaction with its audit entry."""
        if self.audit is None:
            raise RuntimeError("a quarantine action is recorded in the audit chain: pass audit")
        with self.audit.transaction() as tx:
            c = tx.conn
            c.execute(update(_batches).where(_batches.c.id == batch.id).values(status=status))
            aid = c.execute(
                insert(_actions).values(
                    batch_id=batch.id,
                    dataset_id=batch.dataset_id,
                    action=action,
                    principal=principal,
                    at=_now(),
                    rows_published=rows_published,
                    rows_discarded=rows_discarded,
                    rows_held=rows_held,
                    version=version,
                    new_batch=new_batch,
                    note=note,
                )
            ).inserted_primary_key
            assert aid is not None
            row = c.execute(select(_actions).where(_actions.c.id == aid[0])).first()
            done = _action(row)
            detail: dict[str, Any] = {
                "batch": batch.id,
                "rows_published": rows_published,
                "rows_discarded": rows_discarded,
                "rows_held": rows_held,
                "version": version,
                "new_batch": new_batch,
            }
            if note:
                detail["note"] = note
            tx.record(
                action=f"quarantine.{action}",
                principal=principal,
                datasets=[batch.dataset_id],
                detail=detail,
                binds=[("quarantine_actions", done.id)],
            )
        return done

    def actions(self, dataset_id: str, limit: int = 100) -> list[QuarantineAction]:
        q = (
            select(_actions)
            .where(_actions.c.dataset_id == dataset_id)
            .order_by(_actions.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as c:
            return [_action(r) for r in c.execute(q)]

    # -- freshness ---------------------------------------------------------------------

    def freshness(self, dataset_id: str) -> Freshness | None:
        with self.engine.connect() as c:
            r = c.execute(select(_freshness).where(_freshness.c.dataset_id == dataset_id)).first()
        if r is None:
            return None
        return Freshness(
            r.dataset_id,
            _aware(r.stale_since),
            _aware(r.announced_at),
            _aware(r.checked_at) or _now(),
        )

    def set_freshness(
        self,
        dataset_id: str,
        *,
        stale_since: datetime | None,
        announced_at: datetime | None,
        events: Sequence[Event] = (),
    ) -> None:
        """Record a dataset's freshness; ``events`` (``dataset.stale``) go to the outbox in
        the same transaction."""
        values = {"stale_since": stale_since, "announced_at": announced_at, "checked_at": _now()}
        with self.engine.begin() as c:
            done = c.execute(
                update(_freshness).where(_freshness.c.dataset_id == dataset_id).values(**values)
            )
            if not done.rowcount:
                c.execute(insert(_freshness).values(dataset_id=dataset_id, **values))
            stage(c, events)
