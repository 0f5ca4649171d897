"""``verify``: recompute the audit chain and everything it vouches for, in one snapshot.

Read in one repeatable-read transaction (SQLite: one read transaction; PostgreSQL:
``REPEATABLE READ``), so appends and changes made meanwhile are simply not seen: the head,
the entries, the dataset index and the bound rows all come from the same moment, and an
entry past the head can only be one written around the log.

What is checked, in this order, and named when it fails:

1. each entry in seq order: no gap (a deleted entry), the link to the previous seal (a
   reordered or inserted one), its seal under the key it names (an edited one, or one
   sealed without the hub's key — a chain rebuilt by someone who can write the database);
2. the dataset index rows of each entry against the entry's ``owners``, and the rows of
   history tables (an order's events, quarantine actions) its change added — there, and
   as recorded — batch by batch, so memory does not grow with the history;
3. the head: it names the last entry and its own seal holds (entries cut off the end);
4. each anchor: the chain still holds the anchored entry with the anchored seal;
5. each bound state table: every row has the digest the last entry binding it recorded —
   no row edited, added or deleted outside the hub (one digest per row is held: ~160 bytes
   each); each history table holds as many rows as the chain added.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from sqlalchemy import column, func, inspect, select, table
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnClause

from catalog.audit.rows import AuditDatasetRow, AuditHeadRow, AuditRow, VerifyResult
from catalog.audit.seal import (
    BOUND,
    BOUND_TABLES,
    GENESIS,
    AuditKeys,
    canonical_entry,
    check_anchor,
    head_payload,
    mac,
    parse_binds,
    row_digest,
)


class Chain(Protocol):
    """What the check reads of an audit log (:class:`catalog.audit.log.AuditLog`)."""

    @property
    def engine(self) -> Engine: ...
    @property
    def keys(self) -> AuditKeys: ...


BATCH = 2000


class _Problem(Exception):
    def __init__(self, seq: int | None, problem: str) -> None:
        super().__init__(problem)
        self.seq = seq
        self.problem = problem


@contextmanager
def _snapshot(log: Chain) -> Iterator[Connection]:
    if log.engine.dialect.name == "sqlite":
        with log.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN")  # pysqlite would read each statement on its own
            try:
                yield conn
            finally:
                conn.rollback()
    else:
        repeatable = log.engine.connect().execution_options(isolation_level="REPEATABLE READ")
        with repeatable as conn, conn.begin():
            yield conn


def check(log: Chain, anchors: Sequence[Any] = ()) -> VerifyResult:
    checker = _Checker(log)
    for a in anchors:
        why = check_anchor(a, log.keys)
        if why is not None:
            return VerifyResult(False, 0, None, f"anchor refused: {why}")
    with _snapshot(log) as conn:
        try:
            checker.run(conn, anchors)
        except _Problem as p:
            return VerifyResult(False, checker.n, p.seq, p.problem)
    return VerifyResult(
        True,
        checker.n,
        head_seq=checker.head_seq,
        head_hash=checker.head_hash,
        head_at=checker.head_at,
    )


class _Checker:
    def __init__(self, log: Chain) -> None:
        self.log = log
        self.ring = log.keys.ring()
        self.keys = log.keys
        self.n = 0
        self.prev = GENESIS
        self.head_seq = 0
        self.head_hash = GENESIS
        self.head_at: str | None = None
        # state tables: key → (seq of the entry that last bound the row, its digest then)
        self.bound: dict[str, dict[Any, tuple[int, bytes | None]]] = {
            t.name: {} for t in BOUND_TABLES if not t.history
        }
        # history tables: rows bound by the batch being read, and how many were so far
        self.added: dict[str, list[tuple[int, Any, str | None]]] = {
            t.name: [] for t in BOUND_TABLES if t.history
        }
        self.counted: dict[str, int] = dict.fromkeys(self.added, 0)
        self.tables: set[str] = set()

    def _key_for(self, seq: int, kid: str | None, what: str) -> bytes | None:
        if kid is None:
            if self.keys.keyed and seq > self.keys.unkeyed_until:
                raise _Problem(
                    seq,
                    f"{what} carries no key's seal: the chain was rebuilt or extended "
                    "without the audit key",
                )
            return None
        key = self.ring.get(kid)
        if key is None:
            if not self.keys.keyed:
                raise _Problem(
                    seq,
                    f"{what} is sealed with an audit key (id {kid}): set BLOCKHUB_AUDIT_KEY "
                    "to verify it",
                )
            raise _Problem(
                seq,
                f"{what} is sealed with a key this hub does not hold (id {kid}): "
                "rebuilt with another key",
            )
        return key

    def run(self, conn: Connection, anchors: Sequence[Any]) -> None:
        self.tables = set(inspect(conn).get_table_names())
        head = conn.execute(select(AuditHeadRow).where(AuditHeadRow.id == 1)).mappings().first()
        head_seq, head_hash = (head["seq"], head["hash"]) if head else (0, GENESIS)
        want = {int(a["seq"]): str(a["hash"]) for a in anchors}
        cols = [c for c in AuditRow.__table__.columns]
        while True:
            rows = list(
                conn.execute(
                    select(*cols).where(AuditRow.seq > self.n).order_by(AuditRow.seq).limit(BATCH)
                ).mappings()
            )
            if not rows:
                break
            index: dict[int, dict[str, str]] = {}
            first, last = rows[0]["seq"], rows[-1]["seq"]
            for seq, ds, ag in conn.execute(
                select(
                    AuditDatasetRow.seq, AuditDatasetRow.dataset_id, AuditDatasetRow.agency_id
                ).where(AuditDatasetRow.seq >= first, AuditDatasetRow.seq <= last)
            ):
                index.setdefault(seq, {})[ds] = ag
            for row in rows:
                try:
                    self._entry(row, head_seq, index.pop(row["seq"], {}))
                except (ValueError, TypeError, KeyError, AttributeError) as e:
                    # fields that do not parse: written around the log (the hub writes JSON)
                    raise _Problem(
                        row["seq"], f"entry {row['seq']} cannot be read ({e}): it was altered"
                    ) from None
                if row["seq"] in want and not hmac.compare_digest(row["hash"], want[row["seq"]]):
                    raise _Problem(
                        row["seq"],
                        f"entry {row['seq']} is not the one anchored: the history up to it "
                        "was rewritten after the anchor was exported",
                    )
                self.head_at = row["at"]
            self._history_rows(conn)
            if index:
                seq = min(index)
                raise _Problem(seq, f"the dataset index lists entry {seq}, which does not exist")
        if head_seq != self.n or head_hash != self.prev:
            raise _Problem(
                head_seq,
                f"the log ends at entry {self.n} but its head records entry {head_seq}: "
                "entries were removed from the end",
            )
        if head_seq:
            assert head is not None
            key = self._key_for(head_seq, head["key_id"], "the head")
            sealed = mac(key, head_payload(head_seq, head_hash))
            if head["mac"] is None or not hmac.compare_digest(sealed, head["mac"]):
                raise _Problem(
                    head_seq,
                    "the head's seal does not match: it was moved by hand (entries cut off "
                    "the end, or the log rolled back)",
                )
        orphans = conn.execute(
            select(func.min(AuditDatasetRow.seq)).where(AuditDatasetRow.seq > self.n)
        ).scalar()
        if orphans is not None:
            raise _Problem(
                orphans, f"the dataset index lists entry {orphans}, which does not exist"
            )
        self.head_seq, self.head_hash = head_seq, head_hash
        for seq in sorted(want):
            if seq > self.n:
                raise _Problem(
                    seq,
                    f"the chain ends at entry {self.n} but an anchor was taken at entry {seq}: "
                    "entries after it were removed (the log was cut or rolled back)",
                )
        self._bound_rows(conn)

    def _entry(self, row: Any, head_seq: int, index: dict[str, str]) -> None:
        seq = row["seq"]
        if seq > head_seq:
            raise _Problem(
                seq,
                f"entry {seq} lies past the head (entry {head_seq}): "
                "it was not appended through the log",
            )
        if seq != self.n + 1:
            raise _Problem(seq, f"entry {self.n + 1} is missing (next is {seq})")
        if row["prev_hash"] != self.prev:
            raise _Problem(seq, f"entry {seq} does not link to entry {seq - 1}")
        key = self._key_for(seq, row["key_id"], f"entry {seq}")
        if not hmac.compare_digest(mac(key, canonical_entry(row)), row["hash"]):
            raise _Problem(seq, f"entry {seq} was altered: its hash does not match")
        if row["owners_json"] is not None:
            owners = json.loads(row["owners_json"])
        else:  # an entry from before owners were recorded: the datasets at least
            owners = {d: index.get(d) for d in json.loads(row["datasets_json"])}
        if owners != index:
            raise _Problem(
                seq,
                f"the dataset index of entry {seq} was altered: it lists {sorted(index)} "
                f"owned by {sorted(set(index.values()))}, the entry {sorted(owners)}",
            )
        for t, k, d in parse_binds(row["binds_json"]):
            if t in self.added:
                self.added[t].append((seq, k, d))
            else:
                self.bound[t][k] = (seq, bytes.fromhex(d) if d is not None else None)
        self.prev = row["hash"]
        self.n = seq

    def _history_rows(self, conn: Connection) -> None:
        """The history rows bound by the entries just read: there, and as recorded."""
        for name, added in self.added.items():
            if not added:
                continue
            spec = BOUND[name]
            found: dict[Any, Any] = {}
            if name in self.tables:
                cols: list[ColumnClause[Any]] = [column(c) for c in spec.columns]
                keys = sorted({k for _, k, _ in added}, key=repr)
                (key_column,) = spec.key_columns  # history tables have one key column
                for i in range(0, len(keys), 500):
                    q = select(*cols).select_from(table(name))
                    q = q.where(column(key_column).in_(keys[i : i + 500]))
                    found.update((spec.key_of(r), r) for r in conn.execute(q).mappings())
            for seq, key, digest in added:
                row = found.get(key)
                if digest is None:
                    if row is not None:
                        raise _Problem(seq, f"{name} row {key!r} is back: entry {seq} removed it")
                    continue
                if row is None:
                    raise _Problem(
                        seq,
                        f"{name} row {key!r}, recorded by entry {seq}, was deleted outside the hub",
                    )
                if not hmac.compare_digest(row_digest(name, row), digest):
                    raise _Problem(
                        seq,
                        f"{name} row {key!r} was altered outside the hub: it does not match "
                        f"what entry {seq} recorded",
                    )
                self.counted[name] += 1
            added.clear()

    def _bound_rows(self, conn: Connection) -> None:
        for name, counted in self.counted.items():
            have = 0
            if name in self.tables:
                have = conn.execute(select(func.count()).select_from(table(name))).scalar() or 0
            if have != counted:
                raise _Problem(
                    None,
                    f"{name} holds {have} row(s) but the chain recorded {counted}: "
                    f"{have - counted} were added outside the hub",
                )
        for name, mine in self.bound.items():
            spec = BOUND[name]
            if name in self.tables:
                cols: list[ColumnClause[Any]] = [column(c) for c in spec.columns]
                q = select(*cols).select_from(table(name))
                q = q.order_by(*[column(c) for c in spec.key_columns])
                for row in conn.execute(q).mappings():
                    key = spec.key_of(row)
                    seen = mine.pop(key, None)
                    if seen is None or seen[1] is None:
                        raise _Problem(
                            None,
                            f"{name} row {key!r} is on no audit entry: it was added (or "
                            "brought back) outside the hub",
                        )
                    digest = bytes.fromhex(row_digest(name, row))
                    if not hmac.compare_digest(digest, seen[1]):
                        raise _Problem(
                            seen[0],
                            f"{name} row {key!r} was altered outside the hub: it does not "
                            f"match what entry {seen[0]} recorded",
                        )
            for key, (seq, d) in sorted(mine.items(), key=lambda kv: kv[1][0]):
                if d is not None:
                    raise _Problem(
                        seq,
                        f"{name} row {key!r}, recorded by entry {seq}, was deleted outside the hub",
                    )
