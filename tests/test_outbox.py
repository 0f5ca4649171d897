"""An event belongs to its commit: the outbox (catalog/outbox.py) with real logs.

The bus (a private Redis) is down while an API ingest and a CLI ingest commit their
versions: both answer success, and once the bus is back the ``dataset.updated`` reaches
a live websocket subscriber exactly once.  A drain that dies between the append and its
mark, or two drains at once, publish nothing twice and nothing out of order (hypothesis
over failure schedules, on the SQLite log and on Redis).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from catalog.datasets.store import CatalogStore
from catalog.outbox import Event, outbox_table, stage
from eventlog.backend import LogBackend, open_event_log
from eventlog.redislog import RedisEventLog
from eventlog.sqllog import EventLog
from hub.api.server import free_port, serving
from hub.assembly.context import Hub
from hub.settings import Settings
from tests.conftest import file_source, manifest_dict, ticket_rows
from tests.private_services import PrivateRedis
from tests.wsclient import WS

BLOCKHUB = str(Path(sys.executable).with_name("blockhub"))


def _wait(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _exports(tmp_path: Path, n: int = 40) -> Path:
    """An export folder with one Parquet file of ``n`` tickets."""
    import pyarrow.parquet as pq

    folder = tmp_path / "exports"
    folder.mkdir(exist_ok=True)
    pq.write_table(ticket_rows(1, n), folder / "tickets-1.parquet")
    return folder


@pytest.fixture
def bus_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    # AOF: the outage is an outage, not a loss of the log (that is test_faults_redis).
    server = PrivateRedis(tmp_path / "redis", persist="aof").start()
    try:
        yield server
    finally:
        server.stop(kill=True)


def test_an_api_ingest_answers_success_with_the_bus_down_and_announces_once_it_is_back(
    tmp_path: Path, bus_redis: PrivateRedis
) -> None:
    settings = Settings(home=tmp_path / "home", events_url=bus_redis.url(), bus_poll_s=0.05)
    hub = Hub.open(settings)
    hub.store.identity.upsert_agency("gy_12345", "热线")
    hub.store.identity.create_principal("steward", "gy_12345", "steward", "steward")
    hub.store.identity.create_principal("op", "gy_12345", "op", "operator")
    token = hub.store.identity.issue_token("steward", ttl=timedelta(hours=1))
    op_token = hub.store.identity.issue_token("op", ttl=timedelta(hours=1))
    from catalog.datasets.manifest import parse_manifest

    source = {**file_source(hub, _exports(tmp_path), "*.parquet"), "cursor": "updated_at"}
    hub.store.register_dataset(parse_manifest(manifest_dict(source=source)))
    push = manifest_dict(
        id="noise_push",
        columns=[{"name": "seq", "type": "int64"}],
        primary_key=[],
        block_keys=[],
        source={"connector": "push", "options": {}},
    )
    hub.store.register_dataset(parse_manifest(push))
    port = free_port()
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with serving(hub, port):
            base = f"127.0.0.1:{port}"
            ws = WS(base, token)
            assert ws.subscribe("dataset:tickets", since=0)["head"] == 0
            desk = WS(base, op_token)
            assert desk.subscribe("orders:gy_12345", since=0)["head"] == 0
            bus_redis.stop()  # the bus goes down
            r = httpx.post(f"http://{base}/v1/datasets/tickets/ingest", headers=auth, timeout=60)
            assert r.status_code == 200, r.text
            run = r.json()
            assert run["status"] == "succeeded" and run["version"] == 1
            # An order opened meanwhile is opened (and announced later), not refused.
            r = httpx.post(
                f"http://{base}/v1/orders",
                json={"target": "gy_12345", "instructions": "核查噪音投诉"},
                headers={"Authorization": f"Bearer {op_token}"},
                timeout=30,
            )
            assert r.status_code == 201, r.text
            order_id = r.json()["id"]
            assert hub.store.outbox.pending_count() == 2  # the events wait in the catalog
            # A push cannot be made durable without the log: 503, resend later.
            r = httpx.post(
                f"http://{base}/v1/feeds/noise_push/events", json=[{"seq": 1}], headers=auth
            )
            assert r.status_code == 503 and r.headers["retry-after"].isdigit(), r.text
            assert r.json()["code"] == "service_unavailable"
            assert r.json()["detail"]["service"] == "event log"
            # Nothing reached the subscriber, and it was not told anything false.
            with pytest.raises(TimeoutError):
                ws.recv(timeout=1.0)
            bus_redis.start()  # the bus is back: the hub's drainer publishes
            got = ws.messages(1, timeout=30)[0]
            assert got["event"] == "dataset.updated" and got["offset"] == 1
            assert got["data"]["version"] == 1 and got["data"]["run_id"] == run["id"]
            event_id = got["source"]["event_id"]
            # Exactly once: nothing more arrives, and the outbox row says where it went.
            with pytest.raises(TimeoutError):
                ws.recv(timeout=2.0)
            with hub.store.engine.connect() as c:
                rows = list(c.execute(select(outbox_table).order_by(outbox_table.c.seq)))
            assert (rows[0].event_id, rows[0].offset) == (event_id, 1)
            assert all(r.published_at is not None for r in rows)
            log = RedisEventLog(bus_redis.url())
            assert [m.data["version"] for m in log.read("dataset:tickets")] == [1]
            log.dispose()
            opened = desk.messages(1, timeout=30)[0]
            assert opened["event"] == "order.opened" and opened["offset"] == 1
            assert opened["data"]["order"]["id"] == order_id
            with pytest.raises(TimeoutError):
                desk.recv(timeout=0.5)
            ws.close()
            desk.close()
    finally:
        hub.close()


def test_a_cli_ingest_commits_with_the_bus_down_and_a_hub_announces_it_later(
    tmp_path: Path, bus_redis: PrivateRedis
) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "BLOCKHUB_HOME": str(home), "BLOCKHUB_EVENTS_URL": bus_redis.url()}
    manifest = tmp_path / "tickets.yaml"
    import yaml

    source = {
        "connector": "parquet",
        "root": "exports",
        "options": {"path": "*.parquet"},
        "cursor": "updated_at",
    }
    manifest.write_text(yaml.safe_dump(manifest_dict(source=source)), "utf-8")
    subprocess.run([BLOCKHUB, "agency", "add", "gy_12345", "热线"], env=env, check=True)
    root = [BLOCKHUB, "source", "root", "add", "gy_12345", "exports", str(_exports(tmp_path))]
    subprocess.run(root, env=env, check=True)
    subprocess.run([BLOCKHUB, "register", str(manifest)], env=env, check=True)
    bus_redis.stop()
    done = subprocess.run(
        [BLOCKHUB, "ingest", "tickets"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    store = CatalogStore(f"sqlite:///{home / 'catalog.db'}")
    (run,) = store.list_runs("tickets")
    assert (run.status, run.version) == ("succeeded", 1)
    assert store.outbox.pending_count() == 1
    bus_redis.start()
    hub = Hub.open(Settings(home=home, events_url=bus_redis.url(), bus_poll_s=0.05))
    try:
        with serving(hub, free_port()):
            log = RedisEventLog(bus_redis.url())
            got = _wait(lambda: log.read("dataset:tickets"))
            time.sleep(1.5)  # a few more drains: still one message
            assert [(m.offset, m.data["version"]) for m in log.read("dataset:tickets")] == [(1, 1)]
            log.dispose()
        assert got[0].source["event_id"]
        assert store.outbox.pending_count() == 0
    finally:
        hub.close()
        store.dispose()


# -- the drain itself: exactly once, in order, under failures --------------------------


class Flaky:
    """An append that fails where the schedule says: before appending (an outage) or after
    appending, before the drain marks the row (a process killed in between)."""

    def __init__(self, log: LogBackend, schedule: list[str]) -> None:
        self.log, self.schedule = log, list(schedule)

    def __call__(self, channel: str, type: str, data: Any, source: Any, **kw: Any) -> Any:
        what = self.schedule.pop(0) if self.schedule else "ok"
        if what == "down":
            raise redis.ConnectionError("the log is down")
        msg = self.log.append(channel, type, data, source, **kw)
        if what == "lost":
            raise redis.ConnectionError("the reply was lost")
        return msg


def _check_exactly_once(store: CatalogStore, log: LogBackend, n: int) -> None:
    got = log.read("alerts", 0, 1000)
    assert [m.data["i"] for m in got] == list(range(n))  # each once, in staging order
    assert [m.offset for m in got] == list(range(1, n + 1))
    assert store.outbox.pending_count() == 0
    with store.engine.connect() as c:
        marks = {r.event_id: r.offset for r in c.execute(select(outbox_table))}
    assert {m.source["event_id"]: m.offset for m in got} == marks


def _drain_until_empty(store: CatalogStore, append: Any) -> None:
    for _ in range(200):  # bounded: every failure in a schedule is used up on the way
        try:
            drained = store.outbox.drain(append, force=True)
        except redis.ConnectionError:
            continue  # the mark was not made (the append was): the next drain finds it
        if drained.error is None and store.outbox.pending_count() == 0:
            return
    raise AssertionError("the outbox never drained")


def _stage(store: CatalogStore, n: int) -> None:
    for i in range(n):
        with store.session() as s:
            stage(s, [Event("alerts", "alert.note", {"i": i}, {"rule": "r"})])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 12),
    schedule=st.lists(st.sampled_from(["ok", "down", "lost"]), max_size=30),
)
def test_a_drain_interrupted_anywhere_publishes_each_event_once_in_order(
    tmp_path: Path, n: int, schedule: list[str]
) -> None:
    folder = tmp_path / uuid.uuid4().hex
    folder.mkdir()
    store = CatalogStore(f"sqlite:///{folder / 'catalog.db'}")
    store.create_all()
    log = EventLog(f"sqlite:///{folder / 'events.db'}")
    try:
        _stage(store, n)
        _drain_until_empty(store, Flaky(log, schedule))
        _check_exactly_once(store, log, n)
    finally:
        store.dispose()
        log.dispose()


def test_two_processes_draining_at_once_on_redis_publish_each_event_once(
    tmp_path: Path,
) -> None:
    url = f"redis://127.0.0.1:6379/0?prefix=bhtest-{uuid.uuid4().hex[:10]}"
    store = CatalogStore(f"sqlite:///{tmp_path / 'catalog.db'}")
    store.create_all()
    n = 200
    _stage(store, n)
    logs = [open_event_log(url) for _ in range(2)]
    # Two Outbox objects stand for two processes: their locks do not see each other.
    stores = [CatalogStore(store.url) for _ in range(2)]
    lost_once = [Flaky(lg, ["ok", "lost"] * 5) for lg in logs]
    try:
        threads = [
            threading.Thread(target=_drain_until_empty, args=(s, f))
            for s, f in zip(stores, lost_once, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        _check_exactly_once(store, logs[0], n)
    finally:
        for lg in logs:
            assert isinstance(lg, RedisEventLog)
            lg.delete_all()
            lg.dispose()
        for s in (store, *stores):
            s.dispose()
