"""A run whose process died is marked interrupted, never left running (run leases).

A real ``blockhub ingest`` is SIGKILLed while it waits on its source; the run is then
found gone (its holder is a process of this host that no longer runs) and settled as
``interrupted`` by the hub's sweep, and the next run proceeds.  Lease expiry itself is
checked with an injected clock: a holder that stops renewing (another host, a hung
process) is taken for gone exactly when its lease runs out, and not before.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalog.datasets.manifest import parse_manifest
from catalog.datasets.store import CatalogStore
from hub.assembly.context import Hub
from hub.live.ops import settle_runs
from hub.settings import Settings
from pipelines import steps
from pipelines.ingest import reconcile
from tests.conftest import manifest_dict

BLOCKHUB = str(Path(sys.executable).with_name("blockhub"))


class Source:
    """A JSON API that can hold every request until released (a source that hangs)."""

    def __init__(self) -> None:
        self.stall = True
        self.release = threading.Event()
        source = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if source.stall:
                    source.release.wait(120)
                body = json.dumps([{"id": i, "name": f"n{i}"} for i in range(1, 11)]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def source() -> Iterator[Source]:
    s = Source()
    yield s
    s.close()


def items_manifest() -> dict[str, Any]:
    """A dataset read from the agency's HTTP profile ``items_api``."""
    return manifest_dict(
        id="items",
        columns=[{"name": "id", "type": "int64"}, {"name": "name", "type": "string"}],
        primary_key=["id"],
        block_keys=[],
        source={
            "connector": "http_api",
            "profile": "items_api",
            "mode": "replace",
            "options": {"path": "items", "timeout_s": 120, "retry": {"attempts": 1}},
        },
    )


def test_a_killed_ingest_is_marked_interrupted_and_the_next_run_proceeds(
    tmp_path: Path, source: Source
) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "BLOCKHUB_HOME": str(home)}
    manifest = tmp_path / "items.yaml"
    manifest.write_text(yaml.safe_dump(items_manifest()), "utf-8")
    subprocess.run([BLOCKHUB, "agency", "add", "gy_12345", "热线"], env=env, check=True)
    profile = ["source", "profile", "add", "gy_12345", "items_api", "http"]
    subprocess.run([BLOCKHUB, *profile, "--set", f"base_url={source.base}"], env=env, check=True)
    subprocess.run([BLOCKHUB, "register", str(manifest)], env=env, check=True)
    proc = subprocess.Popen(
        [BLOCKHUB, "ingest", "items"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    store = CatalogStore(f"sqlite:///{home / 'catalog.db'}")
    try:
        deadline = time.monotonic() + 60
        run = None
        while time.monotonic() < deadline and run is None:
            runs = [r for r in store.list_runs("items") if r.status == "running"]
            run = runs[0] if runs else None
            time.sleep(0.05)
        assert run is not None, "the ingest never started its run"
        lease = store.lease_of(run.id)
        assert lease is not None and lease[0] is not None
        assert lease[0].split(":")[1] == str(proc.pid)  # held by the ingest's process
        assert store.expired_runs("items") == []  # alive: not taken for dead
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # Gone at once on this host (the pid no longer runs), long before the lease ends.
        assert lease[1] > datetime.now(UTC) + timedelta(seconds=30)
        assert [r.id for r in store.expired_runs("items")] == [run.id]
        hub = Hub.open(Settings(home=home))
        try:
            assert settle_runs(hub) == 1  # what the serving hub's tick does
            settled = hub.store.get_run(run.id)
            assert settled.status == "interrupted", settled
            assert settled.error and "stopped before it finished" in settled.error
            assert hub.store.lease_of(run.id) is None
            assert settle_runs(hub) == 0
            # The next run proceeds (the source answers now).
            source.stall = False
            source.release.set()
            nxt = hub.ingest("items")
            assert (nxt.status, nxt.version, nxt.rows_written) == ("succeeded", 1, 10), nxt.error
            statuses = sorted(r.status for r in hub.store.list_runs("items"))
            assert statuses == ["interrupted", "succeeded"]
        finally:
            hub.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        store.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_a_lease_runs_out_when_its_holder_stops_renewing_and_not_before(tmp_path: Path) -> None:
    """Two stores on one catalog stand for two processes: the runner (which stops renewing,
    as a hung process or one on an unreachable host would) and the sweeper."""
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    clock = Clock()
    runner = CatalogStore(url, clock=clock, lease_s=60)
    runner.create_all()
    sweeper = CatalogStore(url, clock=clock, lease_s=60)
    runner.identity.upsert_agency("gy_12345", "热线")
    m = parse_manifest(items_manifest())
    runner.register_dataset(m)
    run = runner.start_run("items")
    runner._leases.stop()  # the holder stops renewing (its clock does not matter now)
    clock.advance(59)
    assert sweeper.expired_runs("items") == []
    runner.renew_leases([run.id])  # a renewal at t+59 moves the end to t+119
    clock.advance(59)
    assert sweeper.expired_runs("items") == []
    clock.advance(2)
    assert [r.id for r in sweeper.expired_runs("items")] == [run.id]
    # Settled with the lake's knowledge: nothing was committed, so interrupted.
    from catalog.lake.tables import Lake

    lake = Lake(f"sqlite:///{tmp_path / 'iceberg.db'}", (tmp_path / "lake").as_uri())
    reconcile(m, lake=lake, store=sweeper, publisher=None, now=clock())
    assert sweeper.get_run(run.id).status == "interrupted"
    # A run that really finishes after being taken for dead still says how it ended.
    assert runner.finish_run(run.id, "succeeded").status == "succeeded"
    runner.dispose()
    sweeper.dispose()


def test_an_airflow_run_between_tasks_is_not_taken_for_dead(tmp_path: Path) -> None:
    """The extract task's process ends; the run waits for the next task, held by nobody,
    for steps.HANDOVER_S; the next task takes it over and renews it."""
    clock = Clock()
    store = CatalogStore(f"sqlite:///{tmp_path / 'catalog.db'}", clock=clock)
    store.create_all()
    store.identity.upsert_agency("gy_12345", "热线")
    store.register_dataset(parse_manifest(items_manifest()))
    run = store.start_run("items")
    store.hand_over(run.id, steps.HANDOVER_S)
    assert store.lease_of(run.id) == (None, clock() + timedelta(seconds=steps.HANDOVER_S))
    clock.advance(steps.HANDOVER_S - 1)
    assert store.expired_runs("items") == []
    store.take_over(run.id)
    clock.advance(30)
    assert store.expired_runs("items") == []
    store.dispose()
