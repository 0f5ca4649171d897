"""The audit log: every exchange and every change of access or operations state on record,
hash-chained so that editing, deleting, reordering or inserting an entry is detectable.

Two ways in:

- :meth:`AuditLog.append` — an exchange (query, rows, export, sample, subscription) is
  recorded once it has been answered, in a transaction of its own.  Appends that arrive
  together from several threads are written together (group commit, D35): one transaction,
  the entries chained in arrival order, by whichever caller found no write in progress.
- :meth:`AuditLog.transaction` — a change of state (a principal, a token, a manifest, a
  grant, an alert, an order, a quarantine action) is made **inside** an audit transaction
  and recorded with :meth:`AuditTx.record` before it commits: the change and its entry
  commit together or not at all, so a change without its entry cannot exist.  The entry
  carries the digest of every row the change left (*bound rows*, ``catalog.audit.seal``), so
  a row edited outside the hub shows in :meth:`verify` too.

Seals, keys and bound tables: ``catalog.audit.seal``; the check: ``catalog.audit.check``.
A one-row ``audit_head`` holds the last seq and seal, sealed itself; an append moves it
first, which takes the database's write lock, so appenders in several processes serialise
instead of forking the chain.

``audit_datasets`` indexes entries by dataset and owning agency so a steward can list
access to their agency's data; the entry's own ``owners`` field is the signed record of
it, and ``verify`` compares the two.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import (
    bindparam,
    column,
    insert,
    inspect,
    select,
    table,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnClause

from catalog import requestid
from catalog.audit.check import check
from catalog.audit.rows import (
    AuditDatasetRow,
    AuditHeadRow,
    AuditRow,
    VerifyResult,
    utcnow,
)
from catalog.audit.seal import (
    ANCHOR_KIND,
    BOUND,
    GENESIS,
    AuditKeys,
    canonical_entry,
    head_payload,
    mac,
    row_digest,
    sign_anchor,
)
from catalog.errors import Conflict

__all__ = ["GENESIS", "AuditEntry", "AuditKeys", "AuditLog", "AuditTx", "VerifyResult"]

# Actions that record a change of state rather than a read of data (``consumers`` and the
# lineage view count reads only).
CHANGE_FAMILIES = (
    "agency.",
    "principal.",
    "token.",
    "manifest.",
    "grant.",
    "alert.",
    "order.",
    "quarantine.",
    "hub.",
    "audit.",
    "source.config",
)


# Columns added after the first release of the chain: an older catalog gains them on open.
_ADDED = {
    "audit_log": (("owners_json", "TEXT"), ("binds_json", "TEXT"), ("key_id", "VARCHAR(16)")),
    "audit_head": (("key_id", "VARCHAR(16)"), ("mac", "VARCHAR(64)")),
}


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: str
    action: str
    principal: str
    agency: str
    datasets: dict[str, int | None]  # dataset → version read (None when not versioned)
    columns: dict[str, list[str]]  # dataset → columns touched
    row_count: int | None
    sql_fingerprint: str | None
    outcome: str  # ok | denied | refused | failed | timeout
    detail: dict[str, Any]
    prev_hash: str
    hash: str
    owners: dict[str, str] | None = None
    binds: list[list[Any]] | None = None  # [table, key, digest of the row after the change]
    key_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "action": self.action,
            "principal": self.principal,
            "agency": self.agency,
            "datasets": self.datasets,
            "columns": self.columns,
            "row_count": self.row_count,
            "sql_fingerprint": self.sql_fingerprint,
            "outcome": self.outcome,
            "detail": self.detail,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
            "owners": self.owners,
            "binds": self.binds,
            "key_id": self.key_id,
        }


_COLUMNS = tuple(c.key for c in AuditRow.__table__.columns)


def _values(row: AuditRow) -> dict[str, Any]:
    return {k: getattr(row, k) for k in _COLUMNS}


def _entry(r: AuditRow | Mapping[str, Any]) -> AuditEntry:
    v = r if isinstance(r, Mapping) else _values(r)
    return AuditEntry(
        seq=v["seq"],
        at=v["at"],
        action=v["action"],
        principal=v["principal_id"],
        agency=v["agency_id"],
        datasets=json.loads(v["datasets_json"]),
        columns=json.loads(v["columns_json"]),
        row_count=v["row_count"],
        sql_fingerprint=v["sql_fingerprint"],
        outcome=v["outcome"],
        detail=json.loads(v["detail_json"]),
        prev_hash=v["prev_hash"],
        hash=v["hash"],
        owners=json.loads(v["owners_json"]) if v.get("owners_json") else None,
        binds=json.loads(v["binds_json"]) if v.get("binds_json") else None,
        key_id=v.get("key_id"),
    )


def _dumps(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, default=str)


def entry_values(
    *,
    at: str,
    action: str,
    principal: str,
    agency: str,
    datasets: Mapping[str, int | None],
    dataset_agencies: Mapping[str, str],
    columns: Mapping[str, Sequence[str]] | None,
    row_count: int | None,
    sql_fingerprint: str | None,
    outcome: str,
    detail: Mapping[str, Any] | None,
    binds: Sequence[Sequence[Any]] | None = None,
) -> dict[str, Any]:
    """The column values of an entry before it is chained (seq and seals come then)."""
    return {
        "seq": 0,
        "at": at,
        "action": action,
        "principal_id": principal,
        "agency_id": agency,
        "datasets_json": _dumps(dict(datasets)),
        "columns_json": _dumps({k: sorted(v) for k, v in (columns or {}).items()}),
        "row_count": row_count,
        "sql_fingerprint": sql_fingerprint,
        "outcome": outcome,
        # the request the entry was made for (X-Request-ID), when there is one
        "detail_json": _dumps(requestid.stamp(dict(detail or {}))),
        "prev_hash": "",
        "hash": "",
        "owners_json": _dumps({d: dataset_agencies[d] for d in datasets}),
        "binds_json": _dumps([list(b) for b in binds]) if binds else None,
        "key_id": None,
    }


# The append's statements, built once: SQLAlchemy then reuses their compiled form without
# working out a cache key each time (with the ORM row object, ~0.7 of a 0.85 ms append).
_TAKE_HEAD = (
    update(AuditHeadRow)
    .where(AuditHeadRow.id == 1)
    .values(updated_at=bindparam("now"))
    .returning(AuditHeadRow.seq, AuditHeadRow.hash)
)
_LOCK_HEAD = select(AuditHeadRow.seq).where(AuditHeadRow.id == 1).with_for_update()
_INSERT_ENTRY = insert(AuditRow)
_INSERT_DATASETS = insert(AuditDatasetRow)
_MOVE_HEAD = (
    update(AuditHeadRow)
    .where(AuditHeadRow.id == 1)
    .values(
        seq=bindparam("new_seq"),
        hash=bindparam("new_hash"),
        key_id=bindparam("new_key_id"),
        mac=bindparam("new_mac"),
    )
)
_AGENCY_OF: Select[Any] = (
    select(column("agency_id"))
    .select_from(table("principals"))
    .where(column("id") == bindparam("id"))
)
_OWNER_OF: Select[Any] = (
    select(column("agency_id"))
    .select_from(table("datasets"))
    .where(column("id") == bindparam("id"))
)


@dataclass
class _Pending:
    """An entry waiting to be written: its column values (seq and hashes set when it is),
    and how its caller learns the outcome."""

    values: dict[str, Any]
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    error: BaseException | None = None


class HasEngine(Protocol):
    @property
    def engine(self) -> Engine: ...


@dataclass
class _Record:
    action: str
    principal: str
    agency: str | None
    datasets: dict[str, int | None]
    detail: dict[str, Any]
    outcome: str
    binds: list[tuple[str, Any]]
    at: str


class AuditTx:
    """One catalog write transaction and the audit entries of its changes.

    ``conn`` (Core) and ``session`` (ORM, on the same connection) make the changes;
    :meth:`record` queues an entry, written with the digests of its bound rows — read back
    inside the transaction, after the changes — when the block ends without an error.
    """

    def __init__(self, log: AuditLog, conn: Connection) -> None:
        self.log = log
        self.conn = conn
        self._session: Session | None = None
        self._records: list[_Record] = []

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session(bind=self.conn, expire_on_commit=False)
        return self._session

    def record(
        self,
        *,
        action: str,
        principal: str,
        agency: str | None = None,
        datasets: Sequence[str] = (),
        detail: Mapping[str, Any] | None = None,
        outcome: str = "ok",
        binds: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """Queue the entry of a change.  ``agency`` None: the principal's, looked up (empty
        for ``system``); ``datasets`` are named with their owning agency, so the owner's
        stewards see the change; ``binds`` are (table, key) of the rows the change left."""
        for t, _ in binds:
            if t not in BOUND:
                raise ValueError(f"{t!r} is not a table the audit chain binds")
        self._records.append(
            _Record(
                action=action,
                principal=principal,
                agency=agency,
                datasets=dict.fromkeys(datasets),
                detail=dict(detail or {}),
                outcome=outcome,
                binds=list(binds),
                at=self.log.now(),
            )
        )

    def agency_of(self, principal_id: str) -> str:
        if not self.log.has_table("principals"):
            return ""
        return self.conn.execute(_AGENCY_OF, {"id": principal_id}).scalar() or ""

    def owner_of(self, dataset_id: str) -> str:
        if not self.log.has_table("datasets"):
            return ""
        return self.conn.execute(_OWNER_OF, {"id": dataset_id}).scalar() or ""

    def digest(self, table_name: str, key: Any) -> str | None:
        """The digest of a bound row as it stands in this transaction (None: no such row)."""
        spec = BOUND[table_name]
        cols: list[ColumnClause[Any]] = [column(c) for c in spec.columns]
        values = key if isinstance(key, tuple) else (key,)
        q = select(*cols).select_from(table(spec.name))
        for c, v in zip(spec.key_columns, values, strict=True):
            q = q.where(column(c) == v)
        row = self.conn.execute(q).mappings().first()
        return row_digest(table_name, row) if row is not None else None

    def _finish(self) -> None:
        if self._session is not None:
            self._session.flush()
        if not self._records:
            return
        values = []
        for r in self._records:
            owners = {d: self.owner_of(d) for d in r.datasets}
            values.append(
                entry_values(
                    at=r.at,
                    action=r.action,
                    principal=r.principal,
                    agency=r.agency if r.agency is not None else self.agency_of(r.principal),
                    datasets=r.datasets,
                    dataset_agencies=owners,
                    columns=None,
                    row_count=None,
                    sql_fingerprint=None,
                    outcome=r.outcome,
                    detail=r.detail,
                    binds=[(t, k, self.digest(t, k)) for t, k in r.binds],
                )
            )
        self.log.chain_in(self.conn, values)

    def _close(self) -> None:
        if self._session is not None:
            self._session.close()


class AuditLog:
    """Append, read and verify the audit chain in the catalog database."""

    def __init__(
        self,
        store: HasEngine | Engine,
        key: bytes | None = None,
        *,
        keys: AuditKeys | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.engine: Engine = store if isinstance(store, Engine) else store.engine
        self.keys = keys if keys is not None else AuditKeys(current=key)
        self.key = self.keys.current
        self._key_id = self.keys.current_id
        self._clock = clock or utcnow
        self._tables: dict[str, bool] = {}
        # Group commit (D35): appends from several threads at once go into one
        # transaction, written by whichever of them found no write in progress.
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()
        self._writing = False
        # Several hub processes may open one catalog at once: whoever creates the tables or
        # the head row first wins, and the others find them there.
        for model in (AuditRow, AuditHeadRow, AuditDatasetRow):
            with contextlib.suppress(OperationalError, ProgrammingError):
                model.__table__.create(self.engine, checkfirst=True)  # type: ignore[attr-defined]
        upgraded = self._add_columns()
        with contextlib.suppress(IntegrityError), self.engine.begin() as conn:
            if conn.execute(select(AuditHeadRow.id).where(AuditHeadRow.id == 1)).first() is None:
                conn.execute(insert(AuditHeadRow).values(id=1, seq=0, hash=GENESIS))
        if upgraded:
            self._adopt()

    def _add_columns(self) -> bool:
        """Add the columns a chain from before bound rows lacks; True if this call did."""
        have = inspect(self.engine)
        upgraded = False
        for name, added in _ADDED.items():
            present = {c["name"] for c in have.get_columns(name)}
            for col, sqltype in added:
                if col not in present:
                    with (
                        contextlib.suppress(OperationalError, ProgrammingError),
                        self.engine.begin() as conn,
                    ):
                        conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {col} {sqltype}")
                        upgraded = upgraded or col == "binds_json"
        return upgraded

    def _adopt(self) -> None:
        """Bind the rows a catalog already holds when its chain starts binding rows
        (``audit.adopt``): from here on, a change to any of them outside the hub shows."""
        with self.transaction() as tx:
            binds = []
            for spec in BOUND.values():
                if self.has_table(spec.name):
                    keys: list[ColumnClause[Any]] = [column(c) for c in spec.key_columns]
                    rows = tx.conn.execute(select(*keys).select_from(table(spec.name)))
                    binds += [(spec.name, spec.key_of(r)) for r in rows.mappings()]
            if binds:
                counts: dict[str, int] = {}
                for t, _ in binds:
                    counts[t] = counts.get(t, 0) + 1
                tx.record(
                    action="audit.adopt",
                    principal="system",
                    agency="",
                    detail={"rows": counts},
                    binds=binds,
                )

    def now(self) -> str:
        return self._clock().astimezone(UTC).isoformat(timespec="microseconds")

    def has_table(self, name: str) -> bool:
        known = self._tables.get(name)
        if not known:  # a table may appear later (ops tables are made when first used)
            known = self._tables[name] = inspect(self.engine).has_table(name)
        return known

    # -- writing ------------------------------------------------------------------------------

    def append(
        self,
        *,
        action: str,
        principal: str,
        agency: str,
        datasets: Mapping[str, int | None],
        dataset_agencies: Mapping[str, str],
        columns: Mapping[str, Sequence[str]] | None = None,
        row_count: int | None = None,
        sql_fingerprint: str | None = None,
        outcome: str = "ok",
        detail: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Record an exchange in a transaction of its own (group commit)."""
        values = entry_values(
            at=self.now(),
            action=action,
            principal=principal,
            agency=agency,
            datasets=datasets,
            dataset_agencies=dataset_agencies,
            columns=columns,
            row_count=row_count,
            sql_fingerprint=sql_fingerprint,
            outcome=outcome,
            detail=detail,
        )
        pending = _Pending(values)
        with self._queue_lock:
            self._queue.append(pending)
            if not self._writing:
                self._writing = pending.lead = True
        if not pending.lead:
            pending.wake.wait()  # written by the writer of the moment, or handed the lead
        if pending.lead:
            self._write_queue()
        if pending.error is not None:
            raise pending.error
        return _entry(values)

    def _write_queue(self) -> None:
        """Write every entry waiting (one transaction), then hand the lead on to the
        first entry that arrived meanwhile, if any (group commit)."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
        try:
            self._write(batch)
        except BaseException as e:  # nothing of the batch was written: each caller raises
            for p in batch:
                p.error = e
        with self._queue_lock:
            nxt = self._queue[0] if self._queue else None
            if nxt is None:
                self._writing = False
            else:
                nxt.lead = True
        for p in batch:
            p.wake.set()
        if nxt is not None:
            nxt.wake.set()

    def _write(self, batch: list[_Pending]) -> None:
        # Core statements on one transaction (the ORM unit of work cost more than the
        # append itself).
        with self.engine.begin() as conn:
            self.chain_in(conn, [p.values for p in batch])

    def chain_in(self, conn: Connection, entries: list[dict[str, Any]]) -> None:
        """Chain entries onto the head inside the caller's transaction.  The first UPDATE
        takes the write lock (if the transaction does not hold it yet) and returns the head
        it protects, so concurrent appenders serialise instead of forking the chain."""
        seq, prev = conn.execute(_TAKE_HEAD, {"now": utcnow()}).one()
        kid = self._key_id
        links = []
        for v in entries:
            seq += 1
            v["seq"], v["prev_hash"], v["key_id"] = seq, prev, kid
            v["hash"] = prev = mac(self.key, canonical_entry(v))
            links += [
                {"seq": seq, "dataset_id": d, "agency_id": a}
                for d, a in json.loads(v["owners_json"]).items()
            ]
        conn.execute(_INSERT_ENTRY, entries)
        if links:
            conn.execute(_INSERT_DATASETS, links)
        conn.execute(
            _MOVE_HEAD,
            {
                "new_seq": seq,
                "new_hash": prev,
                "new_key_id": kid,
                "new_mac": mac(self.key, head_payload(seq, prev)),
            },
        )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[AuditTx]:
        """A write transaction whose changes commit with their entries (:class:`AuditTx`).

        It takes the chain's write lock first (SQLite ``BEGIN IMMEDIATE``; PostgreSQL a
        row lock on the head): every writer of the catalog then waits in one order, the
        head last — a transaction that read a row and then found another writer in between
        would otherwise fail (SQLite) or deadlock against an append (PostgreSQL).
        """
        with self.engine.connect() as conn, conn.begin():
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.execute(_LOCK_HEAD)
            tx = AuditTx(self, conn)
            try:
                yield tx
                tx._finish()
            finally:
                tx._close()

    # -- reading ------------------------------------------------------------------------------

    def entries(
        self,
        *,
        agency_data: str | None = None,
        dataset: str | None = None,
        principal: str | None = None,
        action: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Entries newest first; ``agency_data`` keeps those touching that agency's data.

        ``action`` is an exact action (``query``) or a family ending in ``.*`` (``order.*``).
        """
        q = select(AuditRow).where(AuditRow.seq > after)
        if agency_data is not None or dataset is not None:
            sub = select(AuditDatasetRow.seq)
            if agency_data is not None:
                sub = sub.where(AuditDatasetRow.agency_id == agency_data)
            if dataset is not None:
                sub = sub.where(AuditDatasetRow.dataset_id == dataset)
            q = q.where(AuditRow.seq.in_(sub))
        if principal is not None:
            q = q.where(AuditRow.principal_id == principal)
        if action is not None:
            if action.endswith(".*"):
                q = q.where(AuditRow.action.startswith(action[:-1], autoescape=True))
            else:
                q = q.where(AuditRow.action == action)
        q = q.order_by(AuditRow.seq.desc()).limit(limit)
        with Session(self.engine) as s:
            return [_entry(r) for r in s.scalars(q)]

    def verify(self, anchors: Sequence[Any] = ()) -> VerifyResult:
        """Recompute the chain, the head's seal, the dataset index and every bound row in
        one consistent snapshot; name the first thing that does not hold.  ``anchors``
        (exported heads, :meth:`anchor`) must still be entries of the chain."""
        return check(self, anchors)

    def anchor(self) -> dict[str, Any]:
        """The head of a chain that verifies, signed, to be kept outside this database."""
        r = self.verify()
        if not r.ok:
            raise Conflict(
                f"the audit log does not verify, so it is not anchored: {r.problem}",
                bad_seq=r.bad_seq,
            )
        doc = {
            "kind": ANCHOR_KIND,
            "version": 1,
            "seq": r.head_seq,
            "hash": r.head_hash,
            "at": r.head_at,
            "entries": r.entries,
            "exported_at": self.now(),
        }
        return sign_anchor(doc, self.key)

    def consumers(self, dataset_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        """Who read a dataset (from the log): principal, agency, reads, last read."""
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for e in self.entries(dataset=dataset_id, limit=limit):
            if e.outcome != "ok" or e.action.startswith(CHANGE_FAMILIES):
                continue
            key = (e.principal, e.agency)
            item = out.setdefault(
                key, {"principal": e.principal, "agency": e.agency, "reads": 0, "last": e.at}
            )
            item["reads"] += 1
        return sorted(out.values(), key=lambda x: str(x["last"]), reverse=True)
