"""The production topology, natively, end to end (issue 21, "Done when").

PostgreSQL catalog and Iceberg SQL catalog on a fresh database of the machine's server,
the lake in a fresh bucket of moto's S3 server (:func:`lake_env`), the Redis bus (the
machine's, under a prefix of this test's own), two ``blockhub serve`` replicas ``ra`` and
``rb`` behind ``blockhub proxy``, an MQTT feed on a private mosquitto, an Airflow 3 of the
test's own (api-server, scheduler with the LocalExecutor, dag-processor; the replicas'
``BLOCKHUB_*``), the audit key of a production hub.  The test shows:

1. a dataset registered through replica A (REST);
2. ingested by the Airflow scheduler, a triggered run of the DAG generated from the
   catalog (:func:`ingest_step`), waited for until the catalog holds the version;
3. announced to a subscriber on replica B (``dataset.updated``);
4. queried through replica B, with the rows the source holds;
5. read by an engine that is not the hub — Ray Data on a local Ray cluster, its own
   process, through ``blockhub lake catalog``'s Iceberg catalog (:func:`engine_read`) —
   from S3, with the same rows and snapshot as the hub's version; the version's data
   files are objects of the bucket;
6. replica A killed while a subscriber of the proxy (on A) follows the live feed: the
   subscriber reconnects to B and gets every event once, in order; a second ingest (a
   second triggered run) made after the kill reaches it too;
7. the feed is consumed once and taken over by B if A led it;
8. B's ``/metrics`` (the metrics token) reflects each step: the ingest runs and rows of the
   dataset after each ingest, the websocket connection and ``dataset`` subscriber while
   subscribed (and none after), two more ``query`` answers after the two queries.

Every process is stopped at the end (Airflow's, the replicas, the proxy, mosquitto, moto,
the Ray cluster with its reader); every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from catalog.lake.tables import Lake
from hub.assembly.context import Hub
from hub.client import HubClient
from hub.settings import Settings
from tests.airflow_stack import AirflowStack
from tests.conftest import S3_KEY_ID, S3Bucket, fresh_pg_database, manifest_dict, ticket_rows
from tests.private_services import PrivateMosquitto
from tests.replica_stack import BLOCKHUB, Stack, feed_status, redis_bus, wait_for
from tests.test_hub_replicas import Station, logged_seqs
from tests.test_observability import METRICS_TOKEN, Samples, scrape, value

__all__ = ["redis_bus"]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.postgres,
    pytest.mark.airflow,
    pytest.mark.engines,
    pytest.mark.timeout(1200),
]

AUDIT_KEY = "e2e-" + "k" * 40  # a production hub refuses to start without one
LEASE_S = 2.0
RAY_READ = Path(__file__).resolve().parents[1] / "docs" / "examples" / "engines" / "ray_read.py"


# -- the parts of issue 21 ------------------------------------------------------------


def lake_env(bucket: S3Bucket) -> dict[str, str]:
    """The lake on S3: an ``s3://`` warehouse in a fresh bucket of moto's server, with the
    endpoint and key pair settings of docs/operations.md "Lake on S3"."""
    return {
        "BLOCKHUB_WAREHOUSE": bucket.warehouse,
        "BLOCKHUB_S3_ENDPOINT": bucket.endpoint,
        "BLOCKHUB_S3_ACCESS_KEY_ID": S3_KEY_ID,
        "BLOCKHUB_S3_SECRET_ACCESS_KEY": bucket.secret,
    }


def hub_settings(env: dict[str, str]) -> Settings:
    """The stack's settings, for the test's own hub (the operator's steps, the checks)."""
    return Settings(
        home=Path(env["BLOCKHUB_HOME"]),
        catalog_url=env["BLOCKHUB_CATALOG_URL"],
        lake_catalog_url=env["BLOCKHUB_LAKE_CATALOG_URL"],
        events_url=env["BLOCKHUB_EVENTS_URL"],
        audit_key=AUDIT_KEY,
        warehouse=env["BLOCKHUB_WAREHOUSE"],
        s3_endpoint=env["BLOCKHUB_S3_ENDPOINT"],
        s3_access_key_id=env["BLOCKHUB_S3_ACCESS_KEY_ID"],
        s3_secret_access_key=env["BLOCKHUB_S3_SECRET_ACCESS_KEY"],
    )


def ingest_step(af: AirflowStack, env: dict[str, str], dataset: str, version: int) -> None:
    """One ingest of ``dataset`` by the Airflow scheduler (LocalExecutor), a worker that is
    none of the replicas: a triggered run of the DAG generated from the catalog, waited
    for until the catalog holds ``version``."""
    dag = f"blockhub_ingest_{dataset}"
    af.wait_for(lambda: dag in af.dags(), f"the DAG {dag} (registered through a replica)", 180)
    af.airflow("dags", "trigger", dag)
    hub = Hub.open(hub_settings(env))
    try:
        af.wait_for(
            lambda: any(v.version == version for v in hub.store.versions(dataset)),
            f"version {version} of {dataset} by a triggered run",
            300,
        )
    finally:
        hub.close()


def engine_read(env: dict[str, str], folder: Path, dataset: str) -> tuple[pa.Table, int]:
    """(rows, snapshot id) of the dataset's table as Ray Data reads it on a local Ray
    cluster of two worker processes (docs/examples/engines/ray_read.py, its own process,
    nothing of blockhub imported): the catalog from ``blockhub lake catalog`` (S3 endpoint
    included, no secret), the key pair from the reader's own environment."""
    folder.mkdir()
    shell = {k: v for k, v in os.environ.items() if not k.startswith(("BLOCKHUB_", "PYICEBERG"))}
    shell.update(
        HOME=str(folder),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{shell.get('PATH', '')}",
        PYICEBERG_HOME=str(folder),
        RAY_USAGE_STATS_ENABLED="0",
    )
    done = subprocess.run(
        [BLOCKHUB, "lake", "catalog", "--out", str(folder / ".pyiceberg.yaml")],
        env={**shell, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    written = (folder / ".pyiceberg.yaml").read_text(encoding="utf-8")
    secret = env["BLOCKHUB_S3_SECRET_ACCESS_KEY"]
    assert env["BLOCKHUB_S3_ENDPOINT"] in written and secret not in written
    shell["PYICEBERG_CATALOG__BLOCKHUB__S3__ACCESS_KEY_ID"] = env["BLOCKHUB_S3_ACCESS_KEY_ID"]
    shell["PYICEBERG_CATALOG__BLOCKHUB__S3__SECRET_ACCESS_KEY"] = secret
    out = folder / "out"
    out.mkdir()
    argv = [sys.executable, str(RAY_READ), dataset, "--out", str(out), "--cpus", "2"]
    proc = subprocess.Popen(
        argv, cwd=folder, env=shell, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        said, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the reader and the Ray processes it started
        proc.communicate(timeout=30)
        pytest.fail("ray_read.py did not finish in 240 s")
    assert proc.returncode == 0, said[-3000:]
    [(name, snapshot, count, workers)] = re.findall(
        r"ray read blockhub\.(\w+) at snapshot (\d+): (\d+) rows \(read by (\d+) Ray worker", said
    )
    assert name == dataset and int(workers) >= 1, said[-2000:]
    rows = pq.read_table(out / f"{snapshot}.parquet")
    assert rows.num_rows == int(count)
    return rows, int(snapshot)


def metrics(base: str) -> Samples:
    """The replica's ``/metrics`` as Prometheus scrapes it (the metrics token)."""
    return scrape(base, METRICS_TOKEN)


# -- the stack -------------------------------------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def production(
    tmp_path: Path, pg_url: str, redis_bus: str, s3_bucket: S3Bucket
) -> Iterator[dict[str, Any]]:
    broker = PrivateMosquitto(tmp_path / "mosquitto").start()
    env = {
        "BLOCKHUB_HOME": str(tmp_path / "home"),
        "BLOCKHUB_CATALOG_URL": pg_url,
        "BLOCKHUB_LAKE_CATALOG_URL": pg_url,
        "BLOCKHUB_EVENTS_URL": redis_bus,
        "BLOCKHUB_AUDIT_KEY": AUDIT_KEY,
        "BLOCKHUB_BUS_POLL_S": "0.05",
        "BLOCKHUB_FEED_LEASE_S": str(LEASE_S),
        "BLOCKHUB_LOG_LEVEL": "INFO",
        "BLOCKHUB_METRICS_TOKEN": METRICS_TOKEN,
        "BLOCKHUB_METRICS_CATALOG_S": "0",  # each scrape reads the catalog's totals
        **lake_env(s3_bucket),
    }
    settings = hub_settings(env)
    exports = tmp_path / "exports"
    exports.mkdir()
    hub = Hub.open(settings)  # the operator's first steps: agencies, people, sources
    try:
        assert settings.production
        hub.store.identity.upsert_agency("gy_12345", "贵阳市12345政务服务便民热线")
        hub.store.identity.upsert_agency("gy_hbj", "生态环境局")
        hub.store.identity.create_principal("wangmin", "gy_12345", "王敏", "steward")
        hub.store.identity.create_principal("hbj", "gy_hbj", "hbj", "steward")
        tokens = {
            p: hub.store.identity.issue_token(p, ttl=timedelta(hours=1)) for p in ("wangmin", "hbj")
        }
        hub.sources.sources.add_root(
            "gy_12345", "exports", str(exports), protected=hub.sources.protected
        )
        topic = f"blockhub-e2e/{uuid.uuid4().hex[:8]}"
        hub.sources.sources.add_profile(
            "gy_hbj",
            "broker",
            "mqtt",
            protected=hub.sources.protected,
            settings={"host": "127.0.0.1", "port": broker.port, "topic_prefix": topic},
        )
    finally:
        hub.close()
    stack = Stack(tmp_path, env)
    airflow = AirflowStack(tmp_path, env)  # the same BLOCKHUB_* as the replicas
    try:
        airflow.start()
        yield {
            "env": env,
            "stack": stack,
            "airflow": airflow,
            "bucket": s3_bucket,
            "tokens": tokens,
            "exports": exports,
            "broker": broker,
            "topic": topic,
        }
    finally:
        airflow.stop()
        stack.close()
        broker.stop()


def _post(base: str, token: str, path: str, body: Any, *, yaml_body: bool = False) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    if yaml_body:
        headers["Content-Type"] = "application/yaml"
        r = httpx.post(f"http://{base}{path}", content=body, headers=headers, timeout=60)
    else:
        r = httpx.post(f"http://{base}{path}", json=body, headers=headers, timeout=60)
    assert r.status_code < 300, (path, r.status_code, r.text)
    return r.json()


def test_production_topology_end_to_end(production: dict[str, Any]) -> None:
    env, stack, af = production["env"], production["stack"], production["airflow"]
    tokens, exports = production["tokens"], production["exports"]
    t0 = time.monotonic()
    stack.start(["ra", "rb"])
    proxy = stack.proxy
    assert proxy is not None
    feed_manifest = manifest_dict(
        id="aq_live",
        agency="gy_hbj",
        columns=[{"name": "seq", "type": "int64"}, {"name": "station_id", "type": "string"}],
        primary_key=[],
        block_keys=[],
        source={
            "connector": "mqtt",
            "profile": "broker",
            "options": {"topics": ["#"], "qos": 1, "flush_rows": 100, "flush_seconds": 1},
        },
    )
    pq.write_table(ticket_rows(1, 40), exports / "tickets-1.parquet")
    manifest = manifest_dict(
        id="tickets",
        source={
            "connector": "parquet",
            "root": "exports",
            "options": {"path": "*.parquet"},
            "cursor": "updated_at",
        },
    )
    roles: dict[str, Any] = {}

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        # A follower of the live feed connects through the proxy: the replica it lands on
        # is "A" from here on, the other "B".
        follower = HubClient(f"ws://{proxy.base}/v1/ws", tokens["hbj"], backoff_s=0.05)
        async with follower:
            a = roles["a"] = stack.replica(str(follower.replica))
            b = roles["b"] = next(r for r in stack.replicas if r is not a)
            out["follower_first"] = follower.replica

            # 1. Registered through replica A (the feed too).
            await asyncio.to_thread(_post, a.base, tokens["hbj"], "/v1/datasets", feed_manifest)
            body = yaml.safe_dump(manifest, allow_unicode=True)
            made = await asyncio.to_thread(
                _post, a.base, tokens["wangmin"], "/v1/datasets", body, yaml_body=True
            )
            assert made["created"]
            roles["leader"] = await asyncio.to_thread(
                wait_for,
                lambda: feed_status(b.base, tokens["hbj"], "aq_live")["leader_replica"],
                "a replica leads the feed (rescan)",
                20,
            )
            await follower.subscribe("feed:aq_live", since=0)
            on_b = HubClient(f"ws://{b.base}/v1/ws", tokens["wangmin"], backoff_s=0.05)
            async with on_b:
                await on_b.subscribe("dataset:tickets", since=0)
                it_b = aiter(on_b)

                # 2. Ingested by the Airflow scheduler; 3. announced to the subscriber on B.
                await asyncio.to_thread(ingest_step, af, env, "tickets", 1)
                frame = await asyncio.wait_for(anext(it_b), 120)
                assert frame["event"] == "dataset.updated", frame
                out["v1"] = frame["data"]
                # /metrics: the ingest's run and rows (from the catalog), the subscriber.
                m = await asyncio.to_thread(metrics, b.base)
                ran = {"dataset": "tickets", "outcome": "succeeded"}
                out["metrics_v1"] = (
                    value(m, "blockhub_ingest_runs_total", **ran),
                    value(m, "blockhub_ingest_rows_total", **ran),
                )
                assert value(m, "blockhub_ws_connections") >= 1
                assert value(m, "blockhub_ws_subscribers", kind="dataset") >= 1

                # 6. The live feed flows; replica A dies mid-stream.
                station = Station(production["broker"].port, f"{production['topic']}/GYAQ01")
                try:
                    done = threading.Event()

                    def stream() -> None:
                        for k in range(10):
                            station.send(20 * k, 20)
                            time.sleep(0.1)
                        done.set()

                    feeder = threading.Thread(target=stream, daemon=True)
                    feeder.start()
                    offsets: list[int] = []
                    it_f = aiter(follower)
                    while len(offsets) < 200:
                        f = await asyncio.wait_for(anext(it_f), 60)
                        assert f["type"] == "message", f
                        offsets.append(f["offset"])
                        if len(offsets) == 60:
                            a.kill()
                            # A second ingest after the kill reaches B's subscriber too.
                            pq.write_table(ticket_rows(41, 10), exports / "tickets-2.parquet")
                            await asyncio.to_thread(ingest_step, af, env, "tickets", 2)
                    assert done.wait(10)
                finally:
                    station.close()
                out["feed_offsets"] = offsets
                out["follower_replicas"] = (out["follower_first"], follower.replica)
                out["follower_reconnects"] = follower.reconnects
                frame = await asyncio.wait_for(anext(it_b), 120)
                out["v2"] = frame["data"]
                m = await asyncio.to_thread(metrics, b.base)
                out["metrics_v2"] = (
                    value(m, "blockhub_ingest_runs_total", **ran),
                    value(m, "blockhub_ingest_rows_total", **ran),
                )
        return out

    got = asyncio.run(asyncio.wait_for(scenario(), 720))
    a, b = roles["a"], roles["b"]
    assert got["follower_replicas"] == (a.name, b.name)  # reconnected through the proxy to B
    assert got["follower_reconnects"] >= 1
    # At least once at the MQTT edge (a takeover may log an event twice); on the channel the
    # subscriber sees every offset once, in order, across the reconnect.
    assert got["feed_offsets"] == list(range(1, 201))
    assert set(logged_seqs(env["BLOCKHUB_EVENTS_URL"])) == set(range(200))
    assert got["v1"]["version"] == 1 and got["v1"]["rows_added"] == 40
    assert got["v2"]["version"] == 2 and got["v2"]["rows_added"] == 10
    assert got["metrics_v1"] == (1, 40) and got["metrics_v2"] == (2, 50)
    # Both subscribers gone: B's gauge follows.
    wait_for(lambda: value(metrics(b.base), "blockhub_ws_connections") == 0, "B's ws gauge", 20)

    # 7. The feed has one consumer, B (taken over if A led it).
    status = wait_for(
        lambda: (s := feed_status(b.base, tokens["hbj"], "aq_live"))["leader"] and s,
        "replica B leads the feed",
        20,
    )
    assert status["replica"] == b.name and status["leader_replica"] == b.name
    print(f"\nfeed led first by {roles['leader']}; A = {a.name}")

    # 4. Queried through replica B (A is dead; the proxy sends everyone to B too).
    asked = {"action": "query", "outcome": "ok"}
    before = value(metrics(b.base), "blockhub_query_duration_seconds_count", **asked)
    for base in (b.base, proxy.base):
        answer = _post(
            base,
            tokens["wangmin"],
            "/v1/query",
            {"sql": "SELECT count(*) AS n, max(ticket_id) AS top FROM tickets"},
        )
        assert answer["rows"] == [{"n": 50, "top": 50}], answer
        assert answer["versions"] == {"tickets": 2}, answer
    after = value(metrics(b.base), "blockhub_query_duration_seconds_count", **asked)
    assert after == before + 2

    # 5. Read by an engine that is not the hub: the same rows, the same snapshot.
    rows, snapshot = engine_read(env, Path(env["BLOCKHUB_HOME"]).parent / "ray", "tickets")
    assert sorted(rows.column("ticket_id").to_pylist()) == list(range(1, 51))
    hub = Hub.open(hub_settings(env))
    try:
        versions = hub.store.versions("tickets")
        assert [v.version for v in versions][-1] == 2
        assert versions[-1].snapshot_id == snapshot
        assert isinstance(hub.lake, Lake)
        # The lake is the bucket: every data file of the version is an object of it.
        files = hub.lake.table("tickets").inspect.files().to_pylist()
        bucket: S3Bucket = production["bucket"]
        keys = set(bucket.objects())
        assert files and all(f["file_path"].startswith(bucket.warehouse) for f in files)
        assert {f["file_path"].removeprefix(f"s3://{bucket.bucket}/") for f in files} <= keys
        # The audit chain written by two replicas and two workers still verifies.
        assert hub.audit.verify().ok
    finally:
        hub.close()
    print(f"\ne2e: {time.monotonic() - t0:.1f} s")
