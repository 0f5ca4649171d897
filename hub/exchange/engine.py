"""The exchange engine: DuckDB over the lake's Iceberg tables, a sandboxed room per reader.

User SQL is checked with DuckDB's own parser (:mod:`hub.exchange.sqlcheck`) and then runs in the
caller's *room* (:mod:`hub.exchange.rooms`): a DuckDB database of its own that holds the datasets
its readers may read and nothing else — other agencies' datasets as copies made for the
reader's access profile (visible columns only, personal data already masked, rows outside
the grants' filters absent), the agency's own as stored.  So every path that reads through
:meth:`Exchange.query` (SQL, rows, exports, samples, block answers) reads masked columns
and filtered rows only, and a reference the check misjudged reaches nothing more.  The
exchange's own database (the *loader*) reads the lake to make those copies and the
serving replicas; it never runs user SQL.  A query runs on its own cursor of the room with
DuckDB's sandbox on (file access confined, configuration locked), a row limit, a time
limit and the room's memory limit.  Results stream out as Arrow record batches; every
query is appended to the audit log when it ends, with the datasets and columns its plan
reads.
This module is the :class:`Exchange` alone (~590 lines, over the house's ~500 on purpose):
its snapshot of the catalog, its rooms and the query with its audit share one lock and
one snapshot, and cutting them apart would hand those across modules.  What an answer is
(:mod:`hub.exchange.results`) and what a reader sees of a version
(:mod:`hub.exchange.views`) live beside it.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from catalog.access.effective import Access, decide
from catalog.access.grants import Grant, GrantStore
from catalog.audit.log import AuditLog
from catalog.datasets.store import CatalogStore, DatasetRecord, Version
from catalog.errors import AccessDenied, DatasetNotFound, HubError, QueryFailed, QueryTimeout
from catalog.identity.store import Principal
from catalog.sqltext import quote_ident
from connectors.duck import connect, reader_batches
from hub.exchange.jsonrows import row_projection
from hub.exchange.replicas import Replicas, exchange_folder, remove_stale
from hub.exchange.results import CloseHook, QueryResult, clean_error, fingerprint
from hub.exchange.rooms import RoomKey, RoomObject, Rooms, profile_digest, scan_sql, table_dir
from hub.exchange.sqlcheck import CheckedQuery, check_sql_cached
from hub.exchange.views import Loader, columns_from_plan
from hub.observability import metrics

_q = quote_ident

log = logging.getLogger(__name__)

_RANK = {"general": 0, "important": 1, "core": 2}


@dataclass(frozen=True)
class _Snapshot:
    stamp: tuple[Any, ...]
    records: dict[str, DatasetRecord]
    latest: dict[str, Version]
    grants: dict[str, list[Grant]] = field(default_factory=dict)  # agency → approved grants
    lake_dirs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # agency → table folders


def _lake_dirs(
    records: Mapping[str, DatasetRecord], latest: Mapping[str, Version]
) -> dict[str, tuple[str, ...]]:
    dirs: dict[str, set[str]] = {}
    for dataset_id, version in latest.items():
        record = records.get(dataset_id)
        if record is not None:
            dirs.setdefault(record.agency_id, set()).add(table_dir(version))
    return {agency: tuple(sorted(d)) for agency, d in dirs.items()}


class Exchange:
    """Answers SQL over published datasets for a principal, as its access allows."""

    KEEP_EARLIER_S = 300.0
    """A room keeps an earlier version's object this long after its last use."""
    COLLECT_S = 5.0
    """How often rooms are looked over when the catalog has not changed (grant expiry)."""

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
        max_rooms: int = 32,
    ) -> None:
        self.store = store
        self.lake_root = lake_root
        self.batch_rows = batch_rows
        self.grants = grants or GrantStore(store)
        self.audit = audit
        cache = replica_folder or Path(tempfile.gettempdir()) / f"blockhub-{os.getuid()}"
        cache.mkdir(parents=True, exist_ok=True)
        remove_stale(cache)
        self.folder = exchange_folder(cache)
        self.folder.mkdir(parents=True)
        # Rows come in no particular order unless the query says ORDER BY (as in SQL, and
        # in PostgreSQL or DataFusion): DuckDB may then run a LIMIT, and what is above it,
        # on all its threads — a 1M-row Arrow answer a third faster (docs/decisions.md D30).
        config: dict[str, str] = {
            "preserve_insertion_order": "false",
            "python_enable_replacements": "false",
        }
        if threads:
            config["threads"] = str(threads)
        if memory_limit:
            config["memory_limit"] = memory_limit
        # The loader: reads the lake and writes copies into the exchange's folder, nothing
        # else; it never runs user SQL (rooms do).
        self._db = connect("iceberg", config=config)
        allowed = [str(self.folder), *([lake_root] if lake_root else [])]
        self._db.execute("SET allowed_directories=?", [allowed])
        self._db.execute("SET enable_progress_bar=false")
        # Versions larger than the in-memory copies: DuckDB-native replicas (D24), for the
        # owning agency's room.
        self.replicas: Replicas | None = None
        self._serving = False  # replicas are built only once warm() is called
        if replica_folder is not None and replica_max_rows > 0:
            self.replicas = Replicas(
                self._db, self.folder / "replicas", max_rows=replica_max_rows, scan_sql=scan_sql
            )
        self._db.execute("SET enable_external_access=false")
        self._db.execute("SET lock_configuration=true")
        self._loader = Loader(self._db, self.folder / "profiles", self.replicas)
        self.rooms = Rooms(
            self.folder / "rooms",
            small_rows=small_rows,
            max_copies=max_copies,
            max_rooms=max_rooms,
            threads=threads,
            memory_limit=memory_limit,
        )
        self._snapshot: _Snapshot | None = None
        # (room, objects, text, row separator) → (JSON projection or None, data schema)
        self._json_plans: dict[tuple[Any, ...], tuple[str | None, pa.Schema | None]] = {}
        self._read_plans: dict[tuple[Any, ...], dict[str, list[str]]] = {}
        self._arrow_types: dict[str, pa.DataType] = {}
        self._collected = 0.0

    @property
    def small_rows(self) -> int:
        """Versions of at most this many rows are copied into a room's memory."""
        return self.rooms.limits.small_rows

    @small_rows.setter
    def small_rows(self, value: int) -> None:
        self.rooms.limits.small_rows = value

    @property
    def max_copies(self) -> int:
        """In-memory copies a room holds at most (larger ones are files or the lake)."""
        return self.rooms.limits.max_copies

    @max_copies.setter
    def max_copies(self, value: int) -> None:
        self.rooms.limits.max_copies = value

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
        self.rooms.close()
        if self.replicas is not None:
            self.replicas.close()
        self._db.close()
        shutil.rmtree(self.folder, ignore_errors=True)

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
            latest = self.store.latest_versions()
            snap = _Snapshot(stamp, records, latest, lake_dirs=_lake_dirs(records, latest))
            self._snapshot = snap
            if self.replicas is not None and self._serving:
                self.replicas.sync(snap.latest.values(), self.small_rows)
            self._collect(snap, now=True)  # a revoked grant's copies leave the rooms at once
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
        return record, decide(principal, record, grants, self.grants.clock.now())

    def accesses(self, principal: Principal, snap: _Snapshot | None = None) -> dict[str, Access]:
        """Effective access to every dataset."""
        snap = snap or self._state()
        grants = self._agency_grants(snap, principal.agency_id)
        now = self.grants.clock.now()  # the hub's clock, as the grants' own expiry reads it
        return {i: decide(principal, d, grants, now) for i, d in snap.records.items()}

    def readable(self, principal: Principal) -> dict[str, DatasetRecord]:
        """Datasets the principal may read."""
        records = self._state().records
        return {i: records[i] for i, a in self.accesses(principal).items() if a.readable}

    def resolve(self, dataset_id: str, principal: Principal, version: int | None) -> Version:
        """The version of a dataset a principal asked for, after the access check."""
        if not self.access(principal, dataset_id).readable:
            raise AccessDenied(f"you may not read dataset {dataset_id!r}", dataset=dataset_id)
        if version is None:
            latest = self._state().latest.get(dataset_id)
            if latest is not None:
                return latest
        return self.store.get_version(dataset_id, version)

    # -- rooms -----------------------------------------------------------------------

    @staticmethod
    def _room_key(principal: Principal, snap: _Snapshot) -> RoomKey:
        # decide() looks at the reader's agency and admin role only: the readers of one
        # agency (admins apart) see the same things, so they share a room.
        return RoomKey(
            principal.agency_id, principal.is_admin, snap.lake_dirs.get(principal.agency_id, ())
        )

    def _collect(self, snap: _Snapshot, *, now: bool = False) -> None:
        """Let rooms drop what their readers may no longer see as it is (a revoked grant,
        a narrowed one, an expired one, a retired dataset) and earlier versions nobody
        used for a while; remove profile files no room links.  At once when the catalog
        changed, otherwise at most every ``COLLECT_S`` (expiry is a matter of time)."""
        clock = time.monotonic()
        if not now and clock - self._collected < self.COLLECT_S:
            return
        self._collected = clock
        for room in self.rooms.all():
            reader = Principal("", room.key.agency, "", "admin" if room.key.admin else "developer")
            profiles = {
                d: profile_digest(a) for d, a in self.accesses(reader, snap).items() if a.readable
            }

            def keep(obj: RoomObject, profiles: dict[str, str] = profiles) -> bool:
                dataset = obj.version.dataset_id
                if profiles.get(dataset) != obj.digest:
                    return False
                latest = snap.latest.get(dataset)
                if latest is not None and latest.version == obj.version.version:
                    return True
                return clock - obj.last_used < self.KEEP_EARLIER_S

            room.collect(keep)
        self._loader.collect(snap.latest)

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
        the query itself (:mod:`hub.exchange.jsonrows`); ``result.rendered`` says whether it could.
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
        self._collect(snap)
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
        classification = max(
            (snap.records[d].classification for d in used), key=_RANK.__getitem__, default="general"
        )
        room = self.rooms.hold(self._room_key(principal, snap))
        placed: dict[str, RoomObject] = {}
        cur: duckdb.DuckDBPyConnection | None = None

        def release() -> None:
            for obj in placed.values():
                room.release(obj)
            self.rooms.leave(room)

        timer = None
        try:
            for d, version in used.items():
                placed[d] = room.place(version, accesses[d], self._loader)
            cur = room.db.cursor()
            # The query names datasets; on its own cursor each name is the version it reads.
            for d, obj in placed.items():
                cur.execute(f"CREATE TEMP VIEW {_q(d)} AS SELECT * FROM {_q(obj.name)}")
            plan_key = (room.generation, tuple(o.name for o in placed.values()), checked.text)
            read = self._columns_read(cur, plan_key, checked, placed) if self.audit else {}
            timer = threading.Timer(timeout_s, cur.interrupt)
            timer.daemon = True
            timer.start()
            limited = f"SELECT * FROM (\n{checked.text}\n) AS _q LIMIT {max_rows + 1}"
            projection, schema = (
                self._json_plan(cur, (*plan_key, render_json), limited, render_json)
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
        except BaseException as e:
            if timer is not None:
                timer.cancel()
            if cur is not None:
                cur.close()
            release()
            if isinstance(e, duckdb.InterruptException):
                raise QueryTimeout("query ran past its time limit and was stopped") from None
            if isinstance(e, duckdb.Error):
                raise QueryFailed(clean_error(e)) from None
            raise
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
            release=release,
        )
        if self.audit is not None:
            result.on_close = self._audit_hook(
                sql, principal, action, detail, checked, accesses, snap, read
            )
        return result

    def _columns_read(
        self,
        cur: duckdb.DuckDBPyConnection,
        key: tuple[Any, ...],
        checked: CheckedQuery,
        placed: Mapping[str, RoomObject],
    ) -> dict[str, list[str]]:
        """The columns of each dataset the query reads, from DuckDB's plan of it (the scans'
        projections and filters, ``*`` and ``COLUMNS(...)`` expanded) and every column name
        the query writes that the dataset has: a reference the optimiser answered from
        statistics alone still counts.  Worked out once per text and objects."""
        read = self._read_plans.get(key)
        if read is None:
            row = cur.execute(f"EXPLAIN (FORMAT JSON) {checked.text}\n").fetchone()
            plan = orjson.loads(row[1]) if row is not None else []
            read = columns_from_plan(plan, placed, checked.columns)
            if len(self._read_plans) >= 512:
                self._read_plans.clear()
            self._read_plans[key] = read
        return read

    def _json_plan(
        self, cur: duckdb.DuckDBPyConnection, key: tuple[Any, ...], limited: str, sep: str
    ) -> tuple[str | None, pa.Schema | None]:
        """The projection rendering the rows of ``limited`` as JSON text and the data's
        Arrow schema, or (None, None) when a column needs the Python path.  Worked out
        once per text and objects (binding the query for its types ~0.6 ms) and
        remembered: an object never changes, so the same text has the same columns."""
        plan = self._json_plans.get(key)
        if plan is None:
            rel = cur.sql(limited)
            types = [str(t) for t in rel.types]
            projection = row_projection(rel.columns, types, sep)
            schema = self._arrow_schema(rel.columns, types) if projection else None
            plan = (projection, schema) if projection and schema is not None else (None, None)
            if len(self._json_plans) >= 512:
                self._json_plans.clear()
            self._json_plans[key] = plan
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
        read: Mapping[str, list[str]],
    ) -> CloseHook:
        audit = self.audit
        assert audit is not None
        # Personal data another agency's grant lets this reader see unmasked, and the query
        # reads: every unmasking is on record (docs/access.md).
        unmasked = {
            d: cols
            for d in checked.datasets
            if accesses[d].via != "owner"
            and (
                cols := [
                    c
                    for c in read.get(d, ())
                    if c in snap.records[d].manifest.personal_columns
                    and c not in accesses[d].masked
                ]
            )
        }

        def hook(result: QueryResult, outcome: str) -> None:
            metrics.observe_answer(
                action,
                outcome,
                str((detail or {}).get("format", "json")),
                result.query_ms / 1000,
                result.row_count,
            )
            audit.append(
                action=action,
                principal=principal.id,
                agency=principal.agency_id,
                datasets=dict(result.versions),
                dataset_agencies={d: snap.records[d].agency_id for d in result.versions},
                columns=dict(read),
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
                    **({"unmasked": unmasked} if unmasked else {}),
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
