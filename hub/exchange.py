"""The exchange engine: DuckDB over the lake's Iceberg tables, sandboxed per query.

One in-memory DuckDB database per process holds a view per (dataset, version)
over ``iceberg_scan`` of that version's metadata file, and on top of it a view per
*access profile* (visible columns, masks, row filters: :mod:`catalog.access`).  User SQL
is checked (:mod:`hub.sqlcheck`), its dataset names are rewritten to the caller's profile
views — so every path (SQL, rows, exports, samples, block answers) reads masked columns
and filtered rows only — and it runs on its own cursor with DuckDB's sandbox on (no file
access outside the lake, configuration locked), a row limit, a time limit and the
database's memory limit.  Results stream out as Arrow record batches; every query is
appended to the audit log when it ends.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from catalog.access import Access, decide
from catalog.audit import AuditLog
from catalog.errors import AccessDenied, DatasetNotFound, HubError, QueryFailed, QueryTimeout
from catalog.grants import Grant, GrantStore
from catalog.masking import mask_sql
from catalog.sqltext import quote_ident, quote_literal
from catalog.store import CatalogStore, DatasetRecord, Principal, Version, utcnow
from connectors.duck import connect, reader_batches
from hub.jsonrows import row_projection
from hub.replicas import Replicas
from hub.sqlcheck import CheckedQuery, check_sql_cached, columns_touched

log = logging.getLogger(__name__)

CloseHook = Callable[["QueryResult", str], None]


@dataclass
class QueryResult:
    """A running query: its schema, a stream of batches and what it read."""

    schema: pa.Schema
    versions: dict[str, int]
    classification: str
    started: float
    _reader: Iterator[pa.RecordBatch]
    _cursor: duckdb.DuckDBPyConnection
    _timer: threading.Timer
    max_rows: int
    row_count: int = 0
    truncated: bool = False
    finished: float | None = field(default=None)
    extra: dict[str, Any] = field(default_factory=dict)
    on_close: CloseHook | None = field(default=None, repr=False)
    outcome: str = "ok"
    complete: bool = False
    """Every batch has been read from the engine already (a small answer)."""
    rendered: str | None = None
    """When set, each batch is one string column of JSON rows, each followed by this
    separator (``Exchange.query(render_json=...)``); ``schema`` is still the data's."""
    defer_close_hook: bool = False
    """Leave the close hook (the audit entry) to :meth:`run_close_hook`, called by the
    server once the answer's bytes are handed over (``hub.api.answer``)."""

    @property
    def query_ms(self) -> float:
        end = self.finished if self.finished is not None else time.perf_counter()
        return round((end - self.started) * 1000, 2)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Yield result batches, stopping at ``max_rows``; closes the cursor at the end."""
        try:
            for batch in self._reader:
                room = self.max_rows - self.row_count
                if batch.num_rows > room:
                    batch = batch.slice(0, room)
                    self.truncated = True
                self.row_count += batch.num_rows
                if batch.num_rows:
                    yield batch
                if self.truncated:
                    break
        except duckdb.InterruptException:
            self.outcome = "timeout"
            raise QueryTimeout("query ran past its time limit and was stopped") from None
        except duckdb.Error as e:
            self.outcome = "failed"
            raise QueryFailed(clean_error(e)) from None
        finally:
            self.close()

    def to_table(self) -> pa.Table:
        if self.rendered is not None:
            raise TypeError("this result holds rendered JSON rows: iterate batches()")
        return pa.Table.from_batches(list(self.batches()), schema=self.schema)

    def close(self) -> None:
        if self.finished is None:
            self.finished = time.perf_counter()
            self._timer.cancel()
            self._cursor.close()
            if not self.defer_close_hook:
                self.run_close_hook()

    def run_close_hook(self) -> None:
        """Run the close hook once (after :meth:`close`)."""
        if self.on_close is not None:
            hook, self.on_close = self.on_close, None
            try:
                hook(self, self.outcome)
            except Exception:  # the answer is out; a failed audit write must be seen
                log.exception("could not append the audit entry of a query")

    def meta(self) -> dict[str, Any]:
        return {
            "row_count": self.row_count,
            "truncated": self.truncated,
            "query_ms": self.query_ms,
            "versions": self.versions,
            "classification": self.classification,
            **self.extra,
        }


_QUOTED = re.compile(r"'(?:[^']|'')*'")


def clean_error(e: BaseException) -> str:
    """DuckDB's message without the values it quotes (a conversion error names the value
    it failed on; it could belong to a row a filter keeps from the caller)."""
    text = str(e)
    first = text.splitlines()[0] if text else type(e).__name__
    return _QUOTED.sub("'…'", first)


_RANK = {"general": 0, "important": 1, "core": 2}


def fingerprint(sql: str) -> str:
    """SHA-256 of the query with whitespace collapsed (the audit log keeps this, not the text)."""
    return hashlib.sha256(" ".join(sql.split()).encode()).hexdigest()


_q = quote_ident
_lit = quote_literal


def profile_sql(base_view: str, access: Access) -> str:
    """The SELECT of a profile view: visible columns, masks as expressions, row filters.

    The owning agency reads its table as it is, including columns a source grew under
    ``schema_policy: evolve`` that the manifest does not declare yet; every other reader
    sees declared columns only, since an undeclared column has no personal-data tag."""
    if access.via == "owner" and not access.masked and access.row_filters is None:
        return f"SELECT * FROM {_q(base_view)}"
    exprs = []
    for col in access.columns:
        kind = access.masked.get(col)
        exprs.append(f"{mask_sql(kind, _q(col))} AS {_q(col)}" if kind else _q(col))
    sql = f"SELECT {', '.join(exprs)} FROM {_q(base_view)}"
    if access.row_filters is not None:
        alternatives = []
        for f in access.row_filters:
            parts = [
                f"CAST({_q(c)} AS VARCHAR) IN ({', '.join(_lit(v) for v in vals)})"
                for c, vals in sorted(f.items())
            ]
            alternatives.append("(" + (" AND ".join(parts) or "TRUE") + ")")
        sql += " WHERE " + (" OR ".join(alternatives) or "FALSE")
    return sql


@dataclass(frozen=True)
class _Snapshot:
    stamp: tuple[Any, ...]
    records: dict[str, DatasetRecord]
    latest: dict[str, Version]
    grants: dict[str, list[Grant]] = field(default_factory=dict)  # agency → approved grants


class Exchange:
    """Answers SQL over published datasets for a principal, as its access allows."""

    def __init__(
        self,
        store: CatalogStore,
        *,
        lake_root: str | None,
        batch_rows: int = 65_536,
        threads: int | None = None,
        memory_limit: str | None = None,
        grants: GrantStore | None = None,
        audit: AuditLog | None = None,
        small_rows: int = 10_000,
        max_copies: int = 32,
        replica_folder: Path | None = None,
        replica_max_rows: int = 200_000_000,
    ) -> None:
        self.store = store
        # In-memory copies of small versions: at most max_copies of at most small_rows rows
        # each, so the memory they take stays bounded whatever the number of versions.
        self.small_rows = small_rows
        self.max_copies = max_copies
        self._copies: set[str] = set()
        self.lake_root = lake_root
        self.batch_rows = batch_rows
        self.grants = grants or GrantStore(store)
        self.audit = audit
        self._lock = threading.Lock()
        self._views: set[str] = set()
        self._arrow_types: dict[str, pa.DataType] = {}
        # (rendered SQL, row separator) -> (JSON projection or None, data schema): views
        # are per version and profile, so a rendered text always has the same columns.
        self._json_plans: dict[tuple[str, str], tuple[str | None, pa.Schema | None]] = {}
        self._snapshot: _Snapshot | None = None
        config: dict[str, str] = {"threads": str(threads)} if threads else {}
        # Rows come in no particular order unless the query says ORDER BY (as in SQL, and
        # in PostgreSQL or DataFusion): DuckDB may then run a LIMIT, and what is above it,
        # on all its threads — a 1M-row Arrow answer a third faster (docs/decisions.md D30).
        config["preserve_insertion_order"] = "false"
        if memory_limit:
            config["memory_limit"] = memory_limit
        self._db = connect("iceberg", config=config)
        if lake_root:
            self._db.execute("SET allowed_directories=[?]", [lake_root])
        self._db.execute("SET enable_progress_bar=false")
        # Versions larger than the in-memory copies: DuckDB-native replicas (D24).
        self.replicas: Replicas | None = None
        self._serving = False  # replicas are built only once warm() is called
        if replica_folder is not None and replica_max_rows > 0:
            self.replicas = Replicas(
                self._db,
                replica_folder,
                max_rows=replica_max_rows,
                point_at=self._point_at,
                scan_sql=self._scan_sql,
            )
        self._db.execute("SET enable_external_access=false")
        self._db.execute("SET lock_configuration=true")

    def warm(self) -> None:
        """Serve from replicas: build them now for the latest large versions, and again
        whenever the catalog changes.  A server calls this at start; a one-off process (a
        CLI query) does not, so it never spends its time building a copy it will drop."""
        self._serving = True
        if self.replicas is not None:
            self.replicas.sync(self._state().latest.values(), self.small_rows)

    def warm_done(self) -> bool:
        """Whether no replica is waiting or being built."""
        return self.replicas is None or self.replicas.wait(0)

    def close(self) -> None:
        if self.replicas is not None:
            self.replicas.close()
        self._db.close()

    # -- catalog state, cached between changes -------------------------------------

    def _state(self) -> _Snapshot:
        """Dataset records, latest versions and grants, re-read only when they changed.

        One round trip per call compares a stamp of datasets, versions and grants, so a
        new version, a changed manifest or a revoked grant applies to the next query;
        expiry is a matter of time, checked by :func:`decide` on every call."""
        stamp = self.store.change_stamp(*self.grants.stamp_parts())
        snap = self._snapshot
        if snap is None or snap.stamp != stamp:
            records = {d.id: d for d in self.store.list_datasets()}
            snap = _Snapshot(stamp, records, self.store.latest_versions())
            self._snapshot = snap
            if self.replicas is not None and self._serving:
                self.replicas.sync(snap.latest.values(), self.small_rows)
        return snap

    def _agency_grants(self, snap: _Snapshot, agency_id: str) -> list[Grant]:
        grants = snap.grants.get(agency_id)
        if grants is None:
            grants = snap.grants[agency_id] = self.grants.for_agency(agency_id)
        return grants

    def access(self, principal: Principal, dataset_id: str) -> Access:
        """The principal's effective access to one dataset (DatasetNotFound if unknown)."""
        return self.record_access(principal, dataset_id)[1]

    def record_access(self, principal: Principal, dataset_id: str) -> tuple[DatasetRecord, Access]:
        """The dataset's record and the principal's access to it, from one look at the
        catalog's state (DatasetNotFound if unknown)."""
        snap = self._state()
        record = snap.records.get(dataset_id) or self.store.get_dataset(dataset_id)
        grants = self._agency_grants(snap, principal.agency_id)
        return record, decide(principal, record, grants, utcnow())

    def accesses(self, principal: Principal, snap: _Snapshot | None = None) -> dict[str, Access]:
        """Effective access to every dataset."""
        snap = snap or self._state()
        grants = self._agency_grants(snap, principal.agency_id)
        now = utcnow()
        return {i: decide(principal, d, grants, now) for i, d in snap.records.items()}

    def readable(self, principal: Principal) -> dict[str, DatasetRecord]:
        """Datasets the principal may read."""
        records = self._state().records
        return {i: records[i] for i, a in self.accesses(principal).items() if a.readable}

    # -- views ---------------------------------------------------------------------

    def _create_view(self, name: str, select_sql: str) -> str:
        if name not in self._views:
            with self._lock:
                if name not in self._views:
                    self._db.execute(f"CREATE VIEW IF NOT EXISTS {_q(name)} AS {select_sql}")
                    self._views.add(name)
        return name

    @staticmethod
    def _scan_sql(version: Version) -> str:
        """The version read from the lake."""
        location = version.metadata_location.replace("'", "''")
        return f"SELECT * FROM iceberg_scan('{location}', snapshot_from_id={version.snapshot_id})"

    @staticmethod
    def _view_name(version: Version) -> str:
        return f"__bh_{version.dataset_id}_v{version.version}"

    def _point_at(self, version: Version, select_sql: str) -> None:
        """Define (or redefine) the view a version is read through; views built on it
        (a reader's masked profile) follow, since DuckDB binds views when a query runs."""
        name = self._view_name(version)
        with self._lock:
            self._db.execute(f"CREATE OR REPLACE VIEW {_q(name)} AS {select_sql}")
            self._views.add(name)

    def _view(self, version: Version) -> str:
        """The relation a version is read through: a view over ``iceberg_scan``, or — for
        a small version (a dimension table such as districts) — an in-memory copy, made
        once: a version never changes, and binding ``iceberg_scan`` re-reads the table's
        metadata, manifest list and manifest on every query (~2 ms each time).  The view
        of a large latest version is re-pointed at its replica once that is built."""
        name = self._view_name(version)
        if name in self._views:
            return name
        scan = self._scan_sql(version)
        if version.total_rows > self.small_rows or len(self._copies) >= self.max_copies:
            return self._create_view(name, scan)
        with self._lock:
            if name not in self._views:
                self._db.execute(f"CREATE TABLE IF NOT EXISTS {_q(name)} AS {scan}")
                self._copies.add(name)
                self._views.add(name)
        return name

    def view_for(self, version: Version, access: Access) -> str:
        """The view a reader with ``access`` sees of ``version``."""
        base = self._view(version)
        if access.full:
            return base
        digest = hashlib.sha256(access.profile().encode()).hexdigest()[:16]
        return self._create_view(f"{base}_p{digest}", profile_sql(base, access))

    def resolve(self, dataset_id: str, principal: Principal, version: int | None) -> Version:
        """The version of a dataset a principal asked for, after the access check."""
        if not self.access(principal, dataset_id).readable:
            raise AccessDenied(f"you may not read dataset {dataset_id!r}", dataset=dataset_id)
        if version is None:
            latest = self._state().latest.get(dataset_id)
            if latest is not None:
                return latest
        return self.store.get_version(dataset_id, version)

    # -- queries -------------------------------------------------------------------

    def query(
        self,
        sql: str,
        principal: Principal,
        *,
        versions: dict[str, int] | None = None,
        max_rows: int = 5_000_000,
        timeout_s: float = 30.0,
        action: str = "query",
        detail: Mapping[str, Any] | None = None,
        render_json: str | None = None,
    ) -> QueryResult:
        """Check and start a query; iterate :meth:`QueryResult.batches` for the rows.

        ``action`` (query, rows, export, sample, block …) and ``detail`` go to the audit
        entry appended when the result is closed, or at once if the query is refused.
        ``render_json`` (a row separator) asks DuckDB to render the rows as JSON text in
        the query itself (:mod:`hub.jsonrows`); ``result.rendered`` says whether it could.
        """
        started = time.perf_counter()
        try:
            return self._start(
                sql, principal, versions, max_rows, timeout_s, action, detail, started,
                render_json,
            )  # fmt: skip
        except HubError as e:
            self.audit_refusal(sql, principal, action, detail, e)
            raise

    def _start(
        self,
        sql: str,
        principal: Principal,
        versions: dict[str, int] | None,
        max_rows: int,
        timeout_s: float,
        action: str,
        detail: Mapping[str, Any] | None,
        started: float,
        render_json: str | None = None,
    ) -> QueryResult:
        snap = self._state()
        accesses = self.accesses(principal, snap)
        readable = {i for i, a in accesses.items() if a.readable}
        checked = check_sql_cached(sql, readable, known=snap.records.keys())
        for name in versions or {}:
            if name not in checked.datasets:
                raise (
                    DatasetNotFound(name)
                    if name not in snap.records
                    else AccessDenied(
                        f"version given for {name!r}, which the query does not read", dataset=name
                    )
                )
        used: dict[str, Version] = {}
        for d in checked.datasets:
            wanted = (versions or {}).get(d)
            latest = snap.latest.get(d)
            used[d] = (
                latest
                if wanted is None and latest is not None
                else self.store.get_version(d, wanted)
            )
        views = {d: self.view_for(v, accesses[d]) for d, v in used.items()}
        rendered = checked.render(views.__getitem__)
        classification = max(
            (snap.records[d].classification for d in used), key=_RANK.__getitem__, default="general"
        )
        cur = self._db.cursor()
        timer = threading.Timer(timeout_s, cur.interrupt)
        timer.daemon = True
        timer.start()
        try:
            limited = f"SELECT * FROM ({rendered}) AS _q LIMIT {max_rows + 1}"
            projection, schema = (
                self._json_plan(cur, rendered, limited, render_json)
                if render_json
                else (None, None)
            )
            if projection is None:
                render_json = None
            final = f"SELECT {projection} FROM ({limited}) AS _r" if projection else limited
            # One statement run, not a relation (which binds once to be made and again to run).
            reader = cur.execute(final).to_arrow_reader(self.batch_rows)
            stream = reader_batches(reader)  # errors past the first chunk: DuckDB's classes too
            # Run up to the first batch here, so that a failing query is a clean error
            # before any response byte is sent.  A short first batch is usually the whole
            # answer: one more read says so, and the answer can then go out in one piece.
            first = next(stream, None)
            head = [first] if first is not None else []
            complete = first is None
            if first is not None and first.num_rows < self.batch_rows:
                second = next(stream, None)
                complete = second is None
                if second is not None:
                    head.append(second)
        except duckdb.InterruptException:
            timer.cancel()
            cur.close()
            raise QueryTimeout("query ran past its time limit and was stopped") from None
        except duckdb.Error as e:
            timer.cancel()
            cur.close()
            raise QueryFailed(clean_error(e)) from None
        result = QueryResult(
            schema=schema if schema is not None else reader.schema,
            versions={d: v.version for d, v in used.items()},
            classification=classification,
            started=started,
            _reader=itertools.chain(head, stream),
            _cursor=cur,
            _timer=timer,
            max_rows=max_rows,
            rendered=render_json,
            complete=complete,
        )
        if self.audit is not None:
            result.on_close = self._audit_hook(
                sql, principal, action, detail, checked, accesses, snap
            )
        return result

    def _json_plan(
        self, cur: duckdb.DuckDBPyConnection, rendered: str, limited: str, sep: str
    ) -> tuple[str | None, pa.Schema | None]:
        """The projection rendering the rows of ``limited`` as JSON text and the data's
        Arrow schema, or (None, None) when a column needs the Python path.  Worked out
        once per rendered text (binding the query for its types ~0.6 ms) and remembered:
        views are per version and profile, so a rendered text always has the same columns.
        """
        plan = self._json_plans.get((rendered, sep))
        if plan is None:
            rel = cur.sql(limited)
            types = [str(t) for t in rel.types]
            projection = row_projection(rel.columns, types, sep)
            schema = self._arrow_schema(rel.columns, types) if projection else None
            plan = (projection, schema) if projection and schema is not None else (None, None)
            if len(self._json_plans) >= 512:
                self._json_plans.clear()
            self._json_plans[(rendered, sep)] = plan
        return plan

    def _arrow_schema(self, names: list[str], duck_types: list[str]) -> pa.Schema | None:
        """The Arrow schema DuckDB would give columns of these types (each type converted
        once, by DuckDB itself, then remembered); None if a type will not convert."""
        fields = []
        for name, t in zip(names, duck_types, strict=True):
            arrow_type = self._arrow_types.get(t)
            if arrow_type is None:
                try:
                    cur = self._db.cursor()
                    try:
                        arrow_type = (
                            cur.sql(f"SELECT CAST(NULL AS {t}) AS x").arrow().schema[0].type
                        )
                    finally:
                        cur.close()
                except duckdb.Error:
                    return None
                self._arrow_types[t] = arrow_type
            fields.append(pa.field(name, arrow_type))
        return pa.schema(fields)

    def _audit_hook(
        self,
        sql: str,
        principal: Principal,
        action: str,
        detail: Mapping[str, Any] | None,
        checked: CheckedQuery,
        accesses: Mapping[str, Access],
        snap: _Snapshot,
    ) -> CloseHook:
        audit = self.audit
        assert audit is not None
        visible = {d: accesses[d].columns for d in checked.datasets}
        touched = columns_touched(checked, visible)

        def hook(result: QueryResult, outcome: str) -> None:
            audit.append(
                action=action,
                principal=principal.id,
                agency=principal.agency_id,
                datasets=dict(result.versions),
                dataset_agencies={d: snap.records[d].agency_id for d in result.versions},
                columns=touched,
                row_count=result.row_count,
                sql_fingerprint=fingerprint(sql),
                outcome=outcome,
                detail={
                    **(detail or {}),
                    "query_ms": result.query_ms,
                    "truncated": result.truncated,
                    "classification": result.classification,
                    "masked": {
                        d: sorted(accesses[d].masked)
                        for d in checked.datasets
                        if accesses[d].masked
                    },
                    "grants": sorted({g for d in checked.datasets for g in accesses[d].grants}),
                },
            )

        return hook

    def audit_refusal(
        self,
        sql: str,
        principal: Principal,
        action: str,
        detail: Mapping[str, Any] | None,
        err: HubError,
    ) -> None:
        if self.audit is None:
            return
        named = err.detail.get("dataset")
        records = self._state().records
        datasets = {named: None} if isinstance(named, str) and named in records else {}
        # A query that passed the checks and then failed or ran out of time in the engine
        # is not a refusal.
        outcome = (
            "denied"
            if isinstance(err, AccessDenied)
            else "timeout"
            if isinstance(err, QueryTimeout)
            else "failed"
            if isinstance(err, QueryFailed)
            else "refused"
        )
        try:
            self.audit.append(
                action=action,
                principal=principal.id,
                agency=principal.agency_id,
                datasets=datasets,
                dataset_agencies={d: records[d].agency_id for d in datasets},
                sql_fingerprint=fingerprint(sql),
                outcome=outcome,
                detail={**(detail or {}), "code": err.code},
            )
        except Exception:
            log.exception("could not append the audit entry of a refused query")
