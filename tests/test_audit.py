"""The audit log: every exchange on record, the chain detects tampering, who sees what."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from catalog.audit.log import AuditEntry, AuditKeys, AuditLog
from catalog.datasets.store import CatalogStore
from hub.cli.main import app as cli_app
from tests.conftest import ExchangeWorld, settings_env


@pytest.fixture
def world(fresh_exchange_world: ExchangeWorld) -> ExchangeWorld:
    return fresh_exchange_world


@pytest.fixture
def client(fresh_client: TestClient) -> TestClient:
    return fresh_client


h = ExchangeWorld.auth


def test_every_exchange_is_recorded(client: TestClient, world: ExchangeWorld) -> None:
    dev = h(world, "developer")
    start = world.hub.audit.entries(limit=1)[0].seq  # the world's own set-up is on record too
    client.post("/v1/query", headers=dev, json={"sql": "SELECT ticket_id, status FROM t_cond"})
    client.post("/v1/query", headers=dev, json={"sql": "SELECT * FROM t_open", "format": "csv"})
    client.get("/v1/datasets/t_open/rows", headers=dev, params={"limit": 5})
    client.get("/v1/datasets/t_open/sample", headers=dev)
    client.post("/v1/query", headers=dev, json={"sql": "SELECT * FROM t_none"})
    with client.websocket_connect("/v1/ws", headers=dev) as ws:
        ws.receive_json()
        ws.send_json({"op": "subscribe", "channel": "dataset:t_open"})
        assert ws.receive_json()["type"] == "subscribed"
        ws.send_json({"op": "ping", "id": 1})  # commands run in order: the entry is written
        assert ws.receive_json()["type"] == "pong"
    entries = list(reversed(world.hub.audit.entries(principal="developer", after=start)))
    got = [(e.action, list(e.datasets), e.outcome) for e in entries]
    assert got == [
        ("query", ["t_cond"], "ok"),
        ("export", ["t_open"], "ok"),
        ("rows", ["t_open"], "ok"),
        ("sample", ["t_open"], "ok"),
        ("query", ["t_none"], "denied"),
        ("subscribe", ["t_open"], "ok"),
    ]
    first = entries[0]
    assert first.agency == "gy_hbj" and first.datasets == {"t_cond": 1}
    assert first.columns == {"t_cond": ["status", "ticket_id"]}
    assert first.row_count == sum(
        1 for r in world.table.to_pylist() if r["district_code"] in ("520102", "520103")
    )
    assert len(first.sql_fingerprint or "") == 64 and first.detail["masked"]
    assert entries[1].row_count == 300 and entries[1].columns["t_open"][0] == "address"


def test_tampering_is_detected_and_named(client: TestClient, world: ExchangeWorld) -> None:
    dev = h(world, "developer")
    for _ in range(3):
        client.post("/v1/query", headers=dev, json={"sql": "SELECT count(*) FROM t_open"})
    check = world.hub.audit.verify()
    assert check.ok
    # The world's ingest runs are on the chain too (source.read), before the queries.
    _, second, last = (e.seq for e in reversed(world.hub.audit.entries(action="query")))
    runner = CliRunner()
    home = str(world.hub.settings.home)
    env = settings_env(world.hub.settings)  # the CLI on the same catalog (SQLite or PG)
    ok = runner.invoke(cli_app, ["--home", home, "audit", "verify"], env=env)
    assert ok.exit_code == 0 and f"{check.entries} entries" in ok.output
    # someone with write access to the catalog database, outside the hub
    with world.hub.store.engine.begin() as db:
        db.execute(text("UPDATE audit_log SET row_count = 0 WHERE seq = :s"), {"s": second})
    r = world.hub.audit.verify()
    assert not r.ok and r.bad_seq == second and f"entry {second} was altered" in r.problem
    bad = runner.invoke(cli_app, ["--home", home, "audit", "verify"], env=env)
    assert bad.exit_code == 1 and f"entry {second}" in bad.output
    # deleting the last entry is caught by the head, re-hashing without the key by HMAC
    with world.hub.store.engine.begin() as db:
        db.execute(text("UPDATE audit_log SET row_count = 1 WHERE seq = :s"), {"s": second})
    assert world.hub.audit.verify().ok
    with world.hub.store.engine.begin() as db:
        db.execute(text("DELETE FROM audit_datasets WHERE seq = :s"), {"s": last})
        db.execute(text("DELETE FROM audit_log WHERE seq = :s"), {"s": last})
    r = world.hub.audit.verify()
    assert not r.ok and "removed" in r.problem


def test_hmac_key_makes_the_chain_unforgeable(tmp_path: Path) -> None:
    store = CatalogStore(f"sqlite:///{tmp_path / 'catalog.db'}")  # a chain of its own
    store.create_all()
    keyed = AuditLog(store, key=b"k1")
    keyed.append(
        action="query", principal="p", agency="a", datasets={}, dataset_agencies={}, row_count=1
    )
    assert keyed.verify().ok
    assert not AuditLog(store, key=b"other").verify().ok
    assert not AuditLog(store).verify().ok


def test_a_key_adopted_later_accepts_only_the_entries_before_it(world: ExchangeWorld) -> None:
    """A key set on a chain that began without one: the entries before it are accepted up
    to ``unkeyed_until`` only; the keyed ones need the key (another key, or none, fails)."""
    before = world.hub.audit.verify().entries
    keyed = AuditLog(world.hub.store, keys=AuditKeys(current=b"k1", unkeyed_until=before))
    keyed.append(
        action="query", principal="p", agency="a", datasets={}, dataset_agencies={}, row_count=1
    )
    assert keyed.verify().ok
    other = AuditLog(world.hub.store, keys=AuditKeys(current=b"other", unkeyed_until=before))
    assert not other.verify().ok
    assert not AuditLog(world.hub.store).verify().ok
    strict = AuditLog(world.hub.store, key=b"k1")  # without unkeyed_until: entry 1 is refused
    r = strict.verify()
    assert not r.ok and r.bad_seq == 1 and "without the audit key" in r.problem


def test_verify_while_entries_are_appended(world: ExchangeWorld) -> None:
    """A check that runs while others append sees a chain that holds (an append moves the
    head in its own transaction), and an entry slipped in past the head is named."""
    audit = world.hub.audit
    stop = threading.Event()

    def keep_appending() -> None:
        i = 0
        while not stop.is_set() and i < 2000:
            audit.append(action="query", principal="p", agency="a", datasets={},
                         dataset_agencies={}, detail={"i": i})  # fmt: skip
            i += 1

    writer = threading.Thread(target=keep_appending)
    writer.start()
    try:
        results = [audit.verify() for _ in range(20)]
    finally:
        stop.set()
        writer.join()
    assert all(r.ok for r in results), [r.problem for r in results if not r.ok]
    assert audit.verify().ok
    with world.hub.store.engine.begin() as db:
        last = dict(
            db.execute(text("SELECT * FROM audit_log ORDER BY seq DESC LIMIT 1")).mappings().one()
        )
        last["seq"] += 1
        names = ", ".join(f'"{k}"' for k in last)
        binds = ", ".join(f":{k}" for k in last)
        db.execute(text(f"INSERT INTO audit_log ({names}) VALUES ({binds})"), last)
    r = audit.verify()
    assert not r.ok and r.bad_seq == last["seq"] and "past the head" in r.problem


def test_appends_from_many_threads_share_transactions(world: ExchangeWorld) -> None:
    """Group commit: entries arriving together are written together, in one chain, each
    caller getting its own entry back; a batch that fails fails every caller in it and
    writes nothing, and the next append goes on."""
    audit = world.hub.audit
    before = audit.verify().entries
    transactions = 0
    write = audit._write

    def counting_write(batch: list[Any]) -> None:
        nonlocal transactions
        transactions += 1
        time.sleep(0.005)  # a slow disk: others arrive meanwhile
        write(batch)

    audit._write = counting_write  # type: ignore[method-assign]

    def one(i: int) -> AuditEntry:
        return audit.append(
            action="subscribe",
            principal=f"p{i}",
            agency="gy_hbj",
            datasets={"t_open": None},
            dataset_agencies={"t_open": "gy_hbj"},
            detail={"i": i},
        )

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(one, range(200)))
    assert [e.detail["i"] for e in got] == list(range(200))
    assert sorted(e.seq for e in got) == list(range(before + 1, before + 201))
    assert transactions < 100  # batched (one transaction each would be 200)
    check = audit.verify()
    assert check.ok and check.entries == before + 200
    assert len(audit.entries(dataset="t_open", action="subscribe", limit=500)) == 200

    def failing_write(batch: list[Any]) -> None:
        time.sleep(0.005)
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    audit._write = failing_write  # type: ignore[method-assign]
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(8)]
        errors = [f.exception() for f in futures]
    assert all(isinstance(e, OperationalError) for e in errors)
    audit._write = write  # type: ignore[method-assign]
    after = one(999)
    assert after.seq == before + 201 and audit.verify().ok


@pytest.mark.parametrize(
    ("who", "status", "sees_others"),
    [("admin", 200, True), ("steward", 200, False), ("developer", 403, False),
     ("operator", 403, False)],
)  # fmt: skip
def test_who_reads_the_audit_log(
    client: TestClient, world: ExchangeWorld, who: str, status: int, sees_others: bool
) -> None:
    dev = h(world, "developer")
    client.post("/v1/query", headers=dev, json={"sql": "SELECT count(*) FROM t_open"})
    world.hub.store.identity.upsert_agency("gy_other", "other")
    world.hub.audit.append(
        action="query",
        principal="x",
        agency="gy_other",
        datasets={"elsewhere": 1},
        dataset_agencies={"elsewhere": "gy_other"},
    )
    r = client.get("/v1/audit", headers=h(world, who))
    assert r.status_code == status
    if status == 200:
        datasets = {d for e in r.json() for d in e["datasets"]}
        assert "t_open" in datasets
        assert ("elsewhere" in datasets) is sees_others
    v = client.get("/v1/audit/verify", headers=h(world, who))
    assert v.status_code == (200 if who == "admin" else 403)


def test_lineage_and_consumers_come_from_the_log(client: TestClient, world: ExchangeWorld) -> None:
    dev = h(world, "developer")
    sql = "SELECT o.status FROM t_open o JOIN t_core c USING (ticket_id)"
    assert client.post("/v1/query", headers=dev, json={"sql": sql}).status_code == 200
    owner = client.get("/v1/datasets/t_open/lineage", headers=h(world, "steward")).json()
    assert owner["consumers"][0]["agency"] == "gy_hbj"
    assert owner["derived_queries"][0]["reads_with"] == ["t_core"]
    other = client.get("/v1/datasets/t_open/lineage", headers=h(world, "stranger")).json()
    assert other["consumers"] == [] and other["derived_queries"] == []
