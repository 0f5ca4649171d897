"""The catalog store: datasets, runs, versions and cursors (identity: catalog.identity).

SQLAlchemy 2 on a SQLite file by default, PostgreSQL by URL.  Methods return
frozen dataclasses, never live ORM objects, so callers hold no session.

Every change of who exists and who may do what — an agency, a principal, its role, a
token, a manifest — is made inside an audit transaction (``catalog.audit.log``) and commits
with its entry in the hash chain, naming who made it (``by``: a principal, or ``system``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from catalog.audit.log import AuditKeys, AuditLog
from catalog.datasets.manifest import Manifest
from catalog.datasets.quality import QualityStore
from catalog.db import Base, aware, make_engine, utcnow
from catalog.errors import (
    Conflict,
    DatasetNotFound,
    NotFound,
    VersionNotFound,
)
from catalog.identity.store import SYSTEM, Actor, AgencyRow, IdentityStore, record_as
from catalog.outbox import Event, Outbox, outbox_meta, stage
from catalog.vocabulary import Classification, RunStatus, SharingType

log = logging.getLogger(__name__)

#: How long a run stays "running" without its process renewing the lease (D-faults).
RUN_LEASE_S = 60.0


class DatasetRow(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agencies.id"), index=True)
    title: Mapped[str] = mapped_column(String(400))
    sharing: Mapped[str] = mapped_column(String(16))
    classification: Mapped[str] = mapped_column(String(16))
    manifest_json: Mapped[str] = mapped_column(Text)
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RunRow(Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    trigger: Mapped[str] = mapped_column(String(32), default="manual")
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    rows_read: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_written: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_written: Mapped[int] = mapped_column(BigInteger, default=0)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    details_json: Mapped[str | None] = mapped_column(Text, nullable=True)


class RunLeaseRow(Base):
    """Who runs a run, until when: the process renews it while it works (every third of
    the lease); a run whose lease ran out, or whose process is gone, is interrupted."""

    __tablename__ = "run_leases"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    # host:pid:start time of the process holding it; None between two Airflow tasks.
    holder: Mapped[str | None] = mapped_column(String(200), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def _proc_start(pid: int) -> str | None:
    """When a process started (clock ticks since boot, Linux), to tell it from a later
    process given the same pid; None where /proc cannot say."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_identity() -> str:
    """This process as a lease holder: ``host:pid:start``."""
    return f"{socket.gethostname()}:{os.getpid()}:{_proc_start(os.getpid()) or ''}"


def holder_gone(holder: str | None) -> bool:
    """Whether a lease holder is a process of this host that no longer runs (another host's
    holders are only known gone when their lease runs out)."""
    if not holder:
        return False
    host, _, rest = holder.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    now = _proc_start(int(pid_text))
    if now is None:
        return not os.path.exists(f"/proc/{pid_text}") and os.path.isdir("/proc/self")
    return bool(start) and now != start


class VersionRow(Base):
    __tablename__ = "versions"
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    snapshot_id: Mapped[int] = mapped_column(BigInteger)
    metadata_location: Mapped[str] = mapped_column(Text)
    rows_added: Mapped[int] = mapped_column(BigInteger)
    total_rows: Mapped[int] = mapped_column(BigInteger)
    run_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    cursor_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    committed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class DatasetRecord:
    id: str
    agency_id: str
    title: str
    sharing: SharingType
    classification: Classification
    manifest: Manifest
    registered_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Run:
    id: str
    dataset_id: str
    trigger: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    rows_read: int
    rows_written: int
    bytes_written: int
    version: int | None
    error: str | None
    details: dict[str, Any] = field(default_factory=dict)
    """What the run reports beyond its counts, e.g. ``unresolved_addresses``."""

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dataset": self.dataset_id,
            "trigger": self.trigger,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration_s": self.duration_s,
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "bytes_written": self.bytes_written,
            "version": self.version,
            "error": self.error,
            "details": self.details,
        }


@dataclass(frozen=True)
class Version:
    dataset_id: str
    version: int
    snapshot_id: int
    metadata_location: str
    rows_added: int
    total_rows: int
    run_id: str | None
    cursor: Any
    committed_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset_id,
            "version": self.version,
            "snapshot_id": str(self.snapshot_id),
            "rows_added": self.rows_added,
            "total_rows": self.total_rows,
            "run_id": self.run_id,
            "cursor": self.cursor,
            "committed_at": self.committed_at.isoformat(),
        }


def _run(r: RunRow) -> Run:
    return Run(
        id=r.id,
        dataset_id=r.dataset_id,
        trigger=r.trigger,
        status=r.status,
        started_at=aware(r.started_at) or utcnow(),
        finished_at=aware(r.finished_at),
        rows_read=r.rows_read,
        rows_written=r.rows_written,
        bytes_written=r.bytes_written,
        version=r.version,
        error=r.error,
        details=json.loads(r.details_json) if r.details_json else {},
    )


def _version(v: VersionRow) -> Version:
    return Version(
        dataset_id=v.dataset_id,
        version=v.version,
        snapshot_id=v.snapshot_id,
        metadata_location=v.metadata_location,
        rows_added=v.rows_added,
        total_rows=v.total_rows,
        run_id=v.run_id,
        cursor=json.loads(v.cursor_json) if v.cursor_json else None,
        committed_at=aware(v.committed_at) or utcnow(),
    )


def _dataset(d: DatasetRow) -> DatasetRecord:
    return DatasetRecord(
        id=d.id,
        agency_id=d.agency_id,
        title=d.title,
        sharing=cast(SharingType, d.sharing),
        classification=cast(Classification, d.classification),
        manifest=Manifest.model_validate_json(d.manifest_json),
        registered_at=aware(d.registered_at) or utcnow(),
        updated_at=aware(d.updated_at) or utcnow(),
    )


def _access_view(m: Manifest) -> dict[str, Any]:
    """What of a manifest decides access: the audit entry of a change shows these."""
    return {
        "title": m.title,
        "sharing": m.sharing.type,
        "classification": m.classification,
        "columns": {c.name: {"pii": c.pii, "classification": c.classification} for c in m.columns},
    }


def manifest_change(before: Manifest | None, after: Manifest) -> dict[str, Any]:
    """The detail of a ``manifest.*`` entry: the access-relevant fields that changed, before
    and after (all of them for a new dataset), and digests of the whole documents.  The
    source options are left out: they may name hosts and credentials' variables."""
    new = _access_view(after)
    detail: dict[str, Any] = {"manifest_sha256": _hash(after.model_dump_json())}
    if before is None:
        return {**detail, "after": new}
    old = _access_view(before)
    changed = {k for k in new if new[k] != old[k]}
    if "columns" in changed:
        names = set(old["columns"]) | set(new["columns"])
        cols = sorted(n for n in names if old["columns"].get(n) != new["columns"].get(n))
        old["columns"] = {n: old["columns"].get(n) for n in cols}
        new["columns"] = {n: new["columns"].get(n) for n in cols}
    return {
        **detail,
        "before_sha256": _hash(before.model_dump_json()),
        "before": {k: old[k] for k in sorted(changed)},
        "after": {k: new[k] for k in sorted(changed)},
    }


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class CatalogStore:
    """Typed access to the catalog tables.

    ``clock`` gives "now" for run leases (tests move it on instead of waiting);
    ``lease_s`` is how long a run stays running without its process renewing it;
    ``audit_keys`` seal the audit chain (:attr:`audit`)."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], datetime] = utcnow,
        lease_s: float = RUN_LEASE_S,
        audit_keys: AuditKeys | None = None,
    ) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.audit_keys = audit_keys or AuditKeys()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._stamp: tuple[tuple[Any, ...], Any] | None = None  # (extras, statement)
        self.clock = clock
        self.lease_s = lease_s
        self.outbox = Outbox(self.engine)
        self._leases = _LeaseKeeper(self)
        self._audit: AuditLog | None = None
        self._audit_lock = threading.Lock()

    def create_all(self) -> None:
        for meta in (Base.metadata, outbox_meta):
            try:
                meta.create_all(self.engine)
            except OperationalError:
                # Another process opening the same catalog created a table in between.
                meta.create_all(self.engine)
        _ = self.audit

    @cached_property
    def identity(self) -> IdentityStore:
        """Agencies, principals and tokens: their own store on the same database and chain."""
        return IdentityStore(self.engine, self.audit)

    @cached_property
    def quality(self) -> QualityStore:
        """The quality tables (results, quarantine, freshness): one per store, made once per
        process rather than per request (it checks its tables when made)."""
        return QualityStore(self.engine, audit=self.audit)

    @property
    def audit(self) -> AuditLog:
        """The catalog's audit chain, sealed with the store's keys (one per store)."""
        if self._audit is None:
            with self._audit_lock:
                if self._audit is None:
                    self._audit = AuditLog(self, keys=self.audit_keys)
        return self._audit

    def dispose(self) -> None:
        self._leases.stop()
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as s:
            yield s

    # -- datasets -----------------------------------------------------------------

    def register_dataset(self, manifest: Manifest, *, by: Actor = SYSTEM) -> DatasetRecord:
        """Create or update a dataset from its manifest (the owning agency must exist).

        Recorded as ``manifest.register`` or ``manifest.change`` (what changed for access:
        sharing, classification, columns and their personal-data tags, before and after);
        registering the same manifest again changes and records nothing.
        """
        with self.audit.transaction() as tx:
            s = tx.session
            if s.get(AgencyRow, manifest.agency) is None:
                raise NotFound(
                    f"dataset {manifest.id!r} names agency {manifest.agency!r}, "
                    "which is not registered",
                    agency=manifest.agency,
                )
            row = s.get(DatasetRow, manifest.id)
            doc = manifest.model_dump_json()
            before: Manifest | None = None
            if row is None:
                row = DatasetRow(id=manifest.id)
                s.add(row)
            elif row.agency_id != manifest.agency:
                raise Conflict(
                    f"dataset {manifest.id!r} belongs to {row.agency_id!r}",
                    dataset=manifest.id,
                    agency=row.agency_id,
                )
            elif row.manifest_json == doc:
                return _dataset(row)
            else:
                before = Manifest.model_validate_json(row.manifest_json)
            row.agency_id = manifest.agency
            row.title = manifest.title
            row.sharing = manifest.sharing.type
            row.classification = manifest.classification
            row.manifest_json = doc
            row.updated_at = utcnow()
            s.flush()
            record_as(
                tx,
                by,
                action="manifest.register" if before is None else "manifest.change",
                datasets=[manifest.id],
                detail=manifest_change(before, manifest),
                binds=[("datasets", manifest.id)],
            )
            return _dataset(row)

    def get_dataset(self, dataset_id: str) -> DatasetRecord:
        with self.session() as s:
            row = s.get(DatasetRow, dataset_id)
            if row is None:
                raise DatasetNotFound(dataset_id)
            return _dataset(row)

    def list_datasets(self) -> list[DatasetRecord]:
        with self.session() as s:
            return [_dataset(r) for r in s.scalars(select(DatasetRow).order_by(DatasetRow.id))]

    # -- runs ---------------------------------------------------------------------

    def start_run(self, dataset_id: str, trigger: str = "manual") -> Run:
        """Record a run as running, leased to this process, which renews the lease in a
        background thread until :meth:`finish_run` (or :meth:`hand_over`)."""
        with self.session() as s:
            if s.get(DatasetRow, dataset_id) is None:
                raise DatasetNotFound(dataset_id)
            row = RunRow(
                id=str(uuid.uuid4()), dataset_id=dataset_id, trigger=trigger, status="running"
            )
            s.add(row)
            s.flush()
            s.add(
                RunLeaseRow(
                    run_id=row.id,
                    holder=process_identity(),
                    expires_at=self.clock() + timedelta(seconds=self.lease_s),
                )
            )
            run = _run(row)
        self._leases.keep(run.id)
        return run

    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        *,
        rows_read: int = 0,
        rows_written: int = 0,
        bytes_written: int = 0,
        version: int | None = None,
        error: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> Run:
        with self.session() as s:
            row = s.get(RunRow, run_id)
            if row is None:
                raise NotFound(f"no run {run_id!r}", run=run_id)
            if details:
                row.details_json = json.dumps(details, ensure_ascii=False)
            row.status = status
            row.finished_at = utcnow()
            row.rows_read = rows_read
            row.rows_written = rows_written
            row.bytes_written = bytes_written
            row.version = version
            row.error = error
            s.execute(delete(RunLeaseRow).where(RunLeaseRow.run_id == run_id))
            s.flush()
            run = _run(row)
        self._leases.drop(run_id)
        return run

    def renew_leases(self, run_ids: Sequence[str]) -> None:
        """Push the leases of ``run_ids`` (this process's running runs) ``lease_s`` on."""
        if not run_ids:
            return
        with self.session() as s:
            s.execute(
                update(RunLeaseRow)
                .where(RunLeaseRow.run_id.in_(list(run_ids)))
                .values(
                    holder=process_identity(),
                    expires_at=self.clock() + timedelta(seconds=self.lease_s),
                )
            )

    def hand_over(self, run_id: str, for_s: float) -> None:
        """This process is done with the run but the run is not (an Airflow task ends, the
        next one takes it on): nobody holds it for ``for_s`` seconds, then it is expired."""
        self._leases.drop(run_id)
        with self.session() as s:
            s.execute(
                update(RunLeaseRow)
                .where(RunLeaseRow.run_id == run_id)
                .values(holder=None, expires_at=self.clock() + timedelta(seconds=for_s))
            )

    def take_over(self, run_id: str) -> None:
        """This process goes on with a run another one handed over (:meth:`hand_over`)."""
        with self.session() as s:
            lease = s.get(RunLeaseRow, run_id)
            expires = self.clock() + timedelta(seconds=self.lease_s)
            if lease is None:
                s.add(RunLeaseRow(run_id=run_id, holder=process_identity(), expires_at=expires))
            else:
                lease.holder, lease.expires_at = process_identity(), expires
        self._leases.keep(run_id)

    def expire_lease(self, run_id: str) -> None:
        """Give a run up at once (its outcome is for :func:`pipelines.ingest.reconcile` to
        settle), e.g. when the catalog went away in the middle of its commit."""
        self._leases.drop(run_id)
        with self.session() as s:
            s.execute(
                update(RunLeaseRow)
                .where(RunLeaseRow.run_id == run_id)
                .values(holder=None, expires_at=self.clock() - timedelta(seconds=1))
            )

    def expired_runs(self, dataset_id: str | None = None, now: datetime | None = None) -> list[Run]:
        """Runs still marked running whose process is gone: the lease ran out, its holder is
        a process of this host that no longer runs, or it has no lease at all (a run
        recorded before leases existed)."""
        now = now or self.clock()
        q = (
            select(RunRow, RunLeaseRow.holder, RunLeaseRow.expires_at)
            .outerjoin(RunLeaseRow, RunLeaseRow.run_id == RunRow.id)
            .where(RunRow.status == "running")
            .order_by(RunRow.started_at)
        )
        if dataset_id is not None:
            q = q.where(RunRow.dataset_id == dataset_id)
        out = []
        with self.session() as s:
            for row, holder, expires_at in s.execute(q):
                expires = aware(expires_at)
                if expires is None or expires <= now or holder_gone(holder):
                    out.append(_run(row))
        return out

    def lease_of(self, run_id: str) -> tuple[str | None, datetime] | None:
        """(holder, expires_at) of a run's lease, None when it has none."""
        with self.session() as s:
            lease = s.get(RunLeaseRow, run_id)
            if lease is None:
                return None
            return lease.holder, aware(lease.expires_at) or utcnow()

    def get_run(self, run_id: str) -> Run:
        with self.session() as s:
            row = s.get(RunRow, run_id)
            if row is None:
                raise NotFound(f"no run {run_id!r}", run=run_id)
            return _run(row)

    def list_runs(self, dataset_id: str | None = None, limit: int = 50) -> list[Run]:
        q = select(RunRow).order_by(RunRow.started_at.desc()).limit(limit)
        if dataset_id:
            q = q.where(RunRow.dataset_id == dataset_id)
        with self.session() as s:
            return [_run(r) for r in s.scalars(q)]

    # -- versions and cursors -------------------------------------------------------

    def record_version(
        self,
        dataset_id: str,
        *,
        snapshot_id: int,
        metadata_location: str,
        rows_added: int,
        total_rows: int,
        run_id: str | None,
        cursor: Any,
        committed_at: datetime,
        events: Callable[[Version], Sequence[Event]] | None = None,
    ) -> Version:
        """Record a lake snapshot as the dataset's next version (idempotent per snapshot).

        ``events`` makes the events that announce the new version (``dataset.updated``),
        staged in the catalog's outbox in the same transaction (catalog/outbox.py): a
        recorded version is always announced, once, even if the log is down right now."""
        with self.session() as s:
            existing = s.scalars(
                select(VersionRow).where(
                    VersionRow.dataset_id == dataset_id, VersionRow.snapshot_id == snapshot_id
                )
            ).first()
            if existing is not None:
                return _version(existing)
            last = s.scalar(
                select(func.max(VersionRow.version)).where(VersionRow.dataset_id == dataset_id)
            )
            row = VersionRow(
                dataset_id=dataset_id,
                version=(last or 0) + 1,
                snapshot_id=snapshot_id,
                metadata_location=metadata_location,
                rows_added=rows_added,
                total_rows=total_rows,
                run_id=run_id,
                cursor_json=json.dumps(cursor) if cursor is not None else None,
                committed_at=committed_at,
            )
            s.add(row)
            s.flush()
            version = _version(row)
            if events is not None:
                stage(s, events(version))
            return version

    def versions(self, dataset_id: str) -> list[Version]:
        with self.session() as s:
            q = (
                select(VersionRow)
                .where(VersionRow.dataset_id == dataset_id)
                .order_by(VersionRow.version)
            )
            return [_version(v) for v in s.scalars(q)]

    def get_version(self, dataset_id: str, version: int | None = None) -> Version:
        """A given version, or the latest when ``version`` is None."""
        with self.session() as s:
            q = select(VersionRow).where(VersionRow.dataset_id == dataset_id)
            if version is None:
                q = q.order_by(VersionRow.version.desc()).limit(1)
            else:
                q = q.where(VersionRow.version == version)
            row = s.scalars(q).first()
            if row is None:
                if version is None:
                    raise NotFound(
                        f"dataset {dataset_id!r} has not been published yet", dataset=dataset_id
                    )
                raise VersionNotFound(dataset_id, version)
            return _version(row)

    def latest_versions(self) -> dict[str, Version]:
        """The latest version of every published dataset."""
        with self.session() as s:
            latest = (
                select(VersionRow.dataset_id, func.max(VersionRow.version).label("v"))
                .group_by(VersionRow.dataset_id)
                .subquery()
            )
            q = select(VersionRow).join(
                latest,
                (VersionRow.dataset_id == latest.c.dataset_id) & (VersionRow.version == latest.c.v),
            )
            return {v.dataset_id: _version(v) for v in s.scalars(q)}

    def change_stamp(self, *extra: Any) -> tuple[Any, ...]:
        """A cheap fingerprint of dataset and version changes (one round trip), so that
        callers may cache what they derived from ``list_datasets``/``latest_versions``.
        ``extra`` scalar subqueries (another table's own stamp) ride on the same trip."""
        # Built again only when the extras are other objects than last time (GrantStore
        # gives the same ones every call): SQLAlchemy then skips working out the
        # statement's cache key on each call.
        last = self._stamp
        if (
            last is None
            or len(last[0]) != len(extra)
            or any(a is not b for a, b in zip(last[0], extra, strict=True))
        ):
            stmt = select(
                select(func.count(DatasetRow.id)).scalar_subquery(),
                select(func.max(DatasetRow.updated_at)).scalar_subquery(),
                select(func.count()).select_from(VersionRow).scalar_subquery(),
                *extra,
            )
            last = self._stamp = (extra, stmt)
        stmt = last[1]
        with self.engine.connect() as conn:
            return tuple(conn.execute(stmt).one())


class _LeaseKeeper:
    """Renews the leases of the runs this process is running, from one daemon thread, every
    third of the lease: while the process lives, its runs are not taken for dead."""

    def __init__(self, store: CatalogStore) -> None:
        self.store = store
        self._runs: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def keep(self, run_id: str) -> None:
        with self._lock:
            self._runs.add(run_id)
            if self._thread is None or self._pid != os.getpid():  # none yet, or forked
                self._pid = os.getpid()
                self._wake = threading.Event()
                self._thread = threading.Thread(
                    target=self._renew, args=(self._wake,), name="blockhub-run-leases", daemon=True
                )
                self._thread.start()

    def drop(self, run_id: str) -> None:
        with self._lock:
            self._runs.discard(run_id)

    def stop(self) -> None:
        with self._lock:
            self._runs.clear()
            self._thread = None
            self._wake.set()

    def _renew(self, wake: threading.Event) -> None:
        while not wake.wait(self.store.lease_s / 3):
            with self._lock:
                runs = sorted(self._runs)
                if not runs:  # decided under the lock: keep() starts a new thread after
                    if self._wake is wake:
                        self._thread = None
                    return
            try:
                self.store.renew_leases(runs)
            except Exception as e:  # the catalog is down: try again next time
                log.warning("run leases not renewed (%s); retrying", e)
