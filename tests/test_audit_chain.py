"""The audit chain against an attacker who can write the catalog database but lacks the key.

Property-based (hypothesis, derandomised: the same examples on every machine): chains of
exchanges and state changes are generated, appended — also from several threads at once,
through the group commit and through audit transactions — and then

- an untampered chain always verifies;
- every tampering of the classes below is caught, also when the attacker then re-links
  and re-seals the rest of the chain and the head (with plain SHA-256, a wrong key, or a
  wrong key under the real key's id), i.e. rebuilds the chain without the key:
  an edited entry, a deleted entry (middle), truncation (end, head moved back or not),
  two entries swapped (their seqs, or their contents), an inserted entry (middle or end),
  an edited / deleted / added row of a table the chain binds (history and state tables),
  an edited dataset index row;
- an insider who holds the key and rewrites history is caught by an anchor exported
  before the rewrite.

Each runs on the embedded SQLite catalog and on PostgreSQL (a schema of its own).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import Connection

from catalog.audit.log import AuditLog
from catalog.audit.seal import GENESIS, AuditKeys, canonical_entry, head_payload, key_id, mac
from catalog.datasets.store import CatalogStore
from catalog.ops.store import OpsStore
from tests.conftest import PG_DSN

KEY = b"the-real-audit-key-0123456789abcdef"
WRONG = b"an-attackers-guess-0123456789abcdef"

PROPERTY = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# -- a catalog per example -------------------------------------------------------------------


@dataclass
class World:
    store: CatalogStore
    ops: OpsStore
    tokens: list[str]

    @property
    def audit(self) -> AuditLog:
        return self.store.audit

    def sql(self, statement: str, params: dict[str, Any] | None = None) -> list[Any]:
        with self.store.engine.begin() as conn:
            result = conn.execute(text(statement), params or {})
            return list(result) if result.returns_rows else []


class Backend:
    """An empty catalog for each example: a new SQLite file, or the test's PostgreSQL
    schema emptied (making a schema and its tables per example would take a second).

    ``examples`` are the hypothesis settings: fewer on PostgreSQL, where each example's
    catalog costs ~0.6 s of commits on the machine's shared server."""

    def __init__(self, kind: str, folder: Any) -> None:
        self.kind = kind
        self.examples = settings(PROPERTY, max_examples=50 if kind == "sqlite" else 15)
        self.per_class = settings(PROPERTY, max_examples=20 if kind == "sqlite" else 6)
        self.few = 15 if kind == "sqlite" else 6
        self.folder = folder
        self.schema = f"audit_{uuid.uuid4().hex[:12]}"
        self.stores: list[CatalogStore] = []
        if kind == "postgresql":
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {self.schema}")

    def url(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.folder / f'c{uuid.uuid4().hex[:12]}.db'}"
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = %s", (self.schema,)
                )
            ]
            if tables:
                names = ", ".join(f"{self.schema}.{t}" for t in tables)
                conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        return (
            "postgresql+psycopg://postgres@127.0.0.1:5432/test"
            f"?options=-csearch_path%3D{self.schema}"
        )

    def open(self, keys: AuditKeys) -> CatalogStore:
        """A new catalog; the previous example's is closed (its pool holds connections)."""
        self.close()
        store = CatalogStore(self.url(), audit_keys=keys)
        self.stores.append(store)
        return store

    def close(self) -> None:
        while self.stores:
            self.stores.pop().dispose()

    def drop(self) -> None:
        self.close()
        if self.kind == "postgresql":
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {self.schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path)
    try:
        yield b
    finally:
        b.drop()


def new_world(backend: Backend, keys: AuditKeys | None = None) -> World:
    store = backend.open(keys or AuditKeys(current=KEY))
    store.create_all()
    ops = OpsStore(store.engine, audit=store.audit)
    store.identity.upsert_agency("a1", "一号局")
    store.identity.create_principal("p1", "a1", "张三", "developer")
    return World(store, ops, [])


# -- what happens on the chain ----------------------------------------------------------------

texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
datasets = st.lists(st.sampled_from(["d1", "d2", "区县"]), unique=True, max_size=3)

ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("query"), texts, datasets, st.integers(0, 10**12)),
        st.tuples(st.just("rename"), texts),
        st.tuples(st.just("principal"), st.integers(2, 6)),
        st.tuples(st.just("role"), st.sampled_from(["steward", "operator", "developer"])),
        st.tuples(st.just("token")),
        st.tuples(st.just("revoke"), st.integers(0, 5)),
        st.tuples(st.just("order"), texts),
    ),
    min_size=1,
    max_size=12,
)


def apply(world: World, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "query":
        _, who, names, rows = op
        world.audit.append(
            action="query",
            principal=who or "p1",
            agency="a1",
            datasets=dict.fromkeys(names, 1),
            dataset_agencies=dict.fromkeys(names, "a1"),
            row_count=rows,
            detail={"note": who},
        )
    elif kind == "rename":
        world.store.identity.upsert_agency("a1", op[1] or "一号局")
    elif kind == "principal":
        pid = f"p{op[1]}"
        if not world.sql("SELECT 1 FROM principals WHERE id = :p", {"p": pid}):
            world.store.identity.create_principal(pid, "a1", pid, "developer", by="p1")
    elif kind == "role":
        world.store.identity.set_role("p1", op[1], by="p1")
    elif kind == "token":
        world.tokens.append(world.store.identity.issue_token("p1", label="t").split("_")[1])
    elif kind == "revoke":
        if world.tokens:
            world.store.identity.revoke_token(world.tokens[op[1] % len(world.tokens)], by="p1")
    elif kind == "order":
        order = world.ops.open_order(target="a1", instructions=op[1] or "去", opened_by="p1")
        world.ops.act_on_order(order.id, "acknowledge", "p1", note=op[1] or None)


def build(backend: Backend, ops: list[tuple[Any, ...]], keys: AuditKeys | None = None) -> World:
    world = new_world(backend, keys)
    for op in ops:
        apply(world, op)
    return world


# -- the attacker ------------------------------------------------------------------------------

ENTRY_FIELDS = [
    "at",
    "action",
    "principal_id",
    "agency_id",
    "datasets_json",
    "columns_json",
    "row_count",
    "sql_fingerprint",
    "outcome",
    "detail_json",
    "prev_hash",
    "hash",
    "owners_json",
    "binds_json",
    "key_id",
]


def entries(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(text("SELECT * FROM audit_log ORDER BY seq")).mappings()
    return [dict(r) for r in rows]


def index_rows(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(text("SELECT * FROM audit_datasets")).mappings()]


def rewrite(conn: Connection, rows: list[dict[str, Any]], index: list[dict[str, Any]]) -> None:
    """Replace the whole log with ``rows`` (and the index with ``index``), as stored."""
    conn.execute(text("DELETE FROM audit_datasets"))
    conn.execute(text("DELETE FROM audit_log"))
    if rows:
        cols = list(rows[0])
        marks = ", ".join(f":{c}" for c in cols)
        conn.execute(text(f"INSERT INTO audit_log ({', '.join(cols)}) VALUES ({marks})"), rows)
    if index:
        conn.execute(
            text(
                "INSERT INTO audit_datasets (seq, dataset_id, agency_id) "
                "VALUES (:seq, :dataset_id, :agency_id)"
            ),
            index,
        )


def reseal(conn: Connection, how: str) -> None:
    """Re-link every entry and move the head to the last one, sealing as the attacker can:
    ``plain`` SHA-256, a ``wrong`` key, or a wrong key under the real key's id (``claim``)."""
    key = None if how == "plain" else WRONG
    reseal_with(conn, key, None if how == "plain" else key_id(KEY if how == "claim" else WRONG))


def reseal_with(conn: Connection, key: bytes | None, kid: str | None) -> None:
    rows = entries(conn)
    prev = GENESIS
    for r in rows:
        r["prev_hash"], r["key_id"] = prev, kid
        r["hash"] = prev = mac(key, canonical_entry(r))
    rewrite(conn, rows, index_rows(conn))
    seq = rows[-1]["seq"] if rows else 0
    conn.execute(
        text("UPDATE audit_head SET seq = :s, hash = :h, key_id = :k, mac = :m WHERE id = 1"),
        {"s": seq, "h": prev, "k": kid, "m": mac(key, head_payload(seq, prev))},
    )


def _changed(value: Any, field: str, salt: str) -> Any:
    if field.endswith("_json"):
        doc = json.loads(value) if value else {}
        if isinstance(doc, dict):
            doc[f"x{salt}"] = salt
        else:
            doc = [*doc, [salt]]
        return json.dumps(doc, ensure_ascii=False)
    if field == "row_count":
        return (value or 0) + 1
    if field == "key_id":
        return None if value else "0123456789abcdef"
    # same length: the columns have a width that PostgreSQL enforces
    text_value = value or ""
    changed = text_value[:-1] + salt
    return changed if changed != text_value else text_value[:-1] + "q"


CONTENT_FIELDS = [f for f in ENTRY_FIELDS if f not in ("prev_hash", "hash", "key_id")]


def edit_entry(conn: Connection, draw: Any, fields: list[str] = ENTRY_FIELDS) -> None:
    rows = entries(conn)
    r = rows[draw(st.integers(0, len(rows) - 1))]
    field = draw(st.sampled_from(fields))
    salt = draw(st.sampled_from(["1", "管", "x"]))
    conn.execute(
        text(f"UPDATE audit_log SET {field} = :v WHERE seq = :s"),
        {"v": _changed(r[field], field, salt), "s": r["seq"]},
    )


def delete_middle(conn: Connection, draw: Any) -> None:
    rows = entries(conn)
    assume(len(rows) >= 2)
    seq = rows[draw(st.integers(0, len(rows) - 2))]["seq"]
    conn.execute(text("DELETE FROM audit_datasets WHERE seq = :s"), {"s": seq})
    conn.execute(text("DELETE FROM audit_log WHERE seq = :s"), {"s": seq})


def truncate(conn: Connection, draw: Any) -> None:
    rows = entries(conn)
    k = draw(st.integers(1, len(rows)))
    cut = rows[-k]["seq"]
    conn.execute(text("DELETE FROM audit_datasets WHERE seq >= :s"), {"s": cut})
    conn.execute(text("DELETE FROM audit_log WHERE seq >= :s"), {"s": cut})
    if draw(st.booleans()):  # and move the head back to what is left, copying its seal
        left = rows[-k - 1] if k < len(rows) else None
        seq, h = (left["seq"], left["hash"]) if left else (0, GENESIS)
        conn.execute(
            text("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1"), {"s": seq, "h": h}
        )


def swap(conn: Connection, draw: Any) -> None:
    rows = entries(conn)
    assume(len(rows) >= 2)
    i = draw(st.integers(0, len(rows) - 2))
    j = draw(st.integers(i + 1, len(rows) - 1))
    index = index_rows(conn)
    a, b = rows[i]["seq"], rows[j]["seq"]
    if draw(st.booleans()):  # swap their seqs (ids), the index following
        rows[i]["seq"], rows[j]["seq"] = b, a
        for x in index:
            x["seq"] = {a: b, b: a}.get(x["seq"], x["seq"])
    else:  # swap their positions: contents change places, seqs stay
        rows[i], rows[j] = {**rows[j], "seq": a}, {**rows[i], "seq": b}
        for x in index:
            x["seq"] = {a: b, b: a}.get(x["seq"], x["seq"])
    rewrite(conn, sorted(rows, key=lambda r: r["seq"]), index)


def insert(conn: Connection, draw: Any, end: bool = True) -> None:
    """A forged entry among the others (``end``: possibly after the last one)."""
    rows = entries(conn)
    at = draw(st.integers(0, len(rows) if end else len(rows) - 1))
    forged = {
        **rows[min(at, len(rows) - 1)],
        "action": "query",
        "principal_id": "intruder",
        "detail_json": "{}",
    }
    new = [*rows[:at], forged, *rows[at:]]
    shift = {r["seq"]: n + 1 for n, r in enumerate(new) if r is not forged}
    index = [{**x, "seq": shift[x["seq"]]} for x in index_rows(conn)]
    index += [  # the index agrees with the forged entry: only the chain can tell
        {"seq": at + 1, "dataset_id": d, "agency_id": a}
        for d, a in json.loads(forged["owners_json"] or "{}").items()
    ]
    for n, r in enumerate(new):
        r["seq"] = n + 1
    rewrite(conn, [dict(r) for r in new], index)


def edit_index(conn: Connection, draw: Any) -> None:
    index = index_rows(conn)
    assume(index)
    x = index[draw(st.integers(0, len(index) - 1))]
    if draw(st.booleans()):
        conn.execute(
            text(
                "UPDATE audit_datasets SET agency_id = 'elsewhere' "
                "WHERE seq = :s AND dataset_id = :d"
            ),
            {"s": x["seq"], "d": x["dataset_id"]},
        )
    else:
        conn.execute(
            text("DELETE FROM audit_datasets WHERE seq = :s AND dataset_id = :d"),
            {"s": x["seq"], "d": x["dataset_id"]},
        )


BOUND_EDITS = {
    "edit principal": "UPDATE principals SET role = 'admin' WHERE id = 'p1'",
    "rename agency": "UPDATE agencies SET name = 'x' WHERE id = 'a1'",
    "revive token": "UPDATE tokens SET revoked_at = NULL, expires_at = NULL",
    "edit history": "UPDATE ops_order_events SET actor = 'someone else'",
    "edit order": "UPDATE ops_orders SET status = 'closed'",
    "delete history": "DELETE FROM ops_order_events",
    "delete principal": "DELETE FROM tokens; DELETE FROM principals WHERE id <> 'p1'",
    "add principal": "INSERT INTO principals (id, agency_id, name, role, created_at) "
    "VALUES ('mole', 'a1', 'mole', 'admin', '2026-01-01 00:00:00')",
    "add history": "INSERT INTO ops_order_events (order_id, action, actor, at, status) "
    "VALUES ('o', 'close', 'p1', '2026-01-01 00:00:00', 'closed')",
}


def edit_bound(conn: Connection, draw: Any) -> None:
    name = draw(st.sampled_from(sorted(BOUND_EDITS)))
    changed = 0
    for statement in BOUND_EDITS[name].split("; "):
        changed += conn.execute(text(statement)).rowcount or 0
    assume(changed)


TAMPERINGS: dict[str, Callable[[Connection, Any], None]] = {
    "edit entry": edit_entry,
    "delete middle": delete_middle,
    "truncate": truncate,
    "swap": swap,
    "insert": insert,
    "edit index": edit_index,
    "edit bound row": edit_bound,
}


def tamper(world: World, draw: Any, name: str, repair: str | None) -> None:
    with world.store.engine.begin() as conn:
        TAMPERINGS[name](conn, draw)
        if repair is not None:
            reseal(conn, repair)


# -- the properties ---------------------------------------------------------------------------


def test_an_untampered_chain_verifies(backend: Backend) -> None:
    @backend.examples
    @given(ops=ops_strategy)
    def prop(ops: list[tuple[Any, ...]]) -> None:
        world = build(backend, ops)
        r = world.audit.verify()
        assert r.ok, r.problem
        assert r.entries == r.head_seq == len(world.audit.entries(limit=1000))

    prop()


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_every_tampering_is_caught(backend: Backend, name: str) -> None:
    @backend.per_class
    @given(
        ops=ops_strategy,
        repair=st.sampled_from([None, "plain", "wrong", "claim"]),
        data=st.data(),
    )
    def prop(ops: list[tuple[Any, ...]], repair: str | None, data: Any) -> None:
        base = [("order", "出发"), ("token",), ("query", "p1", ["d1"], 7)]
        world = build(backend, [*base, *ops])
        assert world.audit.verify().ok
        tamper(world, data.draw, name, repair)
        r = world.audit.verify()
        assert not r.ok, f"{name} (repaired: {repair}) went unnoticed"
        assert r.problem

    prop()


@pytest.mark.parametrize("name", ["delete middle", "edit entry", "insert", "swap", "truncate"])
def test_without_a_key_every_unrepaired_tampering_is_caught(backend: Backend, name: str) -> None:
    """The embedded demo runs without a key: a plain chain still names edits, gaps, swaps,
    insertions and a cut end that left the head alone (a rebuild needs the key, or an
    anchor, to be caught)."""

    @backend.per_class
    @given(ops=ops_strategy, data=st.data())
    def prop(ops: list[tuple[Any, ...]], data: Any) -> None:
        world = build(backend, [("token",), *ops], keys=AuditKeys())
        assert world.audit.verify().ok
        with world.store.engine.begin() as conn:
            if name == "truncate":  # the head stays where it was
                rows = entries(conn)
                cut = rows[-data.draw(st.integers(1, len(rows)))]["seq"]
                conn.execute(text("DELETE FROM audit_datasets WHERE seq >= :s"), {"s": cut})
                conn.execute(text("DELETE FROM audit_log WHERE seq >= :s"), {"s": cut})
            else:
                TAMPERINGS[name](conn, data.draw)
        assert not world.audit.verify().ok

    prop()


def test_an_anchor_catches_a_rewrite_of_history_before_it(backend: Backend) -> None:
    """An insider with the key (or anyone, on a hub without one) rewrites entries up to the
    anchored one and re-seals everything with the real key: the chain verifies on its own,
    the anchor exported before the rewrite does not hold."""

    @backend.examples
    @given(
        before=ops_strategy,
        after=ops_strategy,
        name=st.sampled_from(["edit entry", "delete middle", "truncate", "swap", "insert"]),
        keyed=st.booleans(),
        data=st.data(),
    )
    def prop(
        before: list[tuple[Any, ...]],
        after: list[tuple[Any, ...]],
        name: str,
        keyed: bool,
        data: Any,
    ) -> None:
        keys = AuditKeys(current=KEY) if keyed else AuditKeys()
        world = build(backend, before, keys)
        anchor = world.audit.anchor()
        for op in after:
            apply(world, op)
        assert world.audit.verify([anchor]).ok
        with world.store.engine.begin() as conn:
            rows = entries(conn)
            cut = [r for r in rows if r["seq"] <= anchor["seq"]]
            rest = [r for r in rows if r["seq"] > anchor["seq"]]
            index = index_rows(conn)
            rewrite(conn, cut, [x for x in index if x["seq"] <= anchor["seq"]])
            # A careful insider: the seals are rewritten anyway, and the index is kept in step
            if name == "edit entry":
                edit_entry(conn, data.draw, [f for f in CONTENT_FIELDS if f != "owners_json"])
            elif name == "insert":  # one inserted after the anchored entry is not before it
                insert(conn, data.draw, end=False)
            else:
                TAMPERINGS[name](conn, data.draw)
            # the rest follows, and the insider numbers everything 1, 2, 3 … again
            current = entries(conn)
            first = {r["seq"]: n + 1 for n, r in enumerate(current)}
            then = {r["seq"]: len(current) + n + 1 for n, r in enumerate(rest)}
            moved = [{**r, "seq": first[r["seq"]]} for r in current]
            tail = [{**r, "seq": then[r["seq"]]} for r in rest]
            kept = [{**x, "seq": first[x["seq"]]} for x in index_rows(conn) if x["seq"] in first]
            later = [{**x, "seq": then[x["seq"]]} for x in index if x["seq"] in then]
            rewrite(conn, moved + tail, kept + later)
            reseal_with(conn, keys.current, keys.current_id)  # only the anchor can tell
        r = world.audit.verify([anchor])
        assert not r.ok and ("anchor" in r.problem or "anchored" in r.problem), r.problem

    prop()


def test_concurrent_appends_and_changes_keep_one_chain(backend: Backend) -> None:
    """Threads appending exchanges (group commit) while others make audited changes, each
    in its own transaction: one linear chain, every entry there, verify holds — also when
    checked while the writers run."""

    @settings(backend.examples, max_examples=backend.few)
    @given(
        work=st.lists(
            st.lists(st.sampled_from(["query", "order", "token", "role"]), max_size=15),
            min_size=2,
            max_size=6,
        ),
    )
    def prop(work: list[list[str]]) -> None:
        world = new_world(backend)
        start = world.audit.verify().entries
        ops = {
            "query": ("query", "p1", ["d1"], 1),
            "order": ("order", "走"),
            "token": ("token",),
            "role": ("role", "steward"),
        }
        errors: list[BaseException] = []
        checks: list[Any] = []

        def run(items: list[str]) -> None:
            try:
                for item in items:
                    apply(world, ops[item])
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(items,)) for items in work]
        for t in threads:
            t.start()
        checks.append(world.audit.verify())
        for t in threads:
            t.join(60)
        assert not errors, errors
        expected = sum({"query": 1, "order": 2, "token": 1, "role": 1}[i] for w in work for i in w)
        r = world.audit.verify()
        assert r.ok, r.problem
        assert all(c.ok for c in checks), [c.problem for c in checks]
        roles = sum(1 for w in work for i in w if i == "role")
        # a role set to the role it already has is no change, and has no entry: only the first
        assert r.entries - start == expected - roles + min(roles, 1)

    prop()
