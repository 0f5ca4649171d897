"""The catalog's PostgreSQL stopped and started under a serving hub (a private cluster).

While it is down every request gets the one error body with 503 and ``Retry-After`` (a
websocket: an error frame and close code 1013), never a 500 or a traceback; when it is
back the hub serves again without a restart.  A run whose catalog goes away right after
its lake commit leaves no half state: the committed files are kept (the table stays
readable, whole), and once the catalog is back the version is recorded, the run settled
and the version announced exactly once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from websockets.sync.client import connect

from catalog.datasets.manifest import parse_manifest
from connectors.duck import connect as duck_connect
from hub.api.server import free_port, serving
from hub.assembly.context import Hub
from hub.settings import Settings
from tests import private_services
from tests.conftest import file_source, manifest_dict, ticket_rows
from tests.private_services import PrivatePostgres
from tests.wsclient import WS

pytestmark = pytest.mark.postgres
private_postgres = private_services.private_postgres


def _is_error_body(body: dict[str, Any], status: int, code: str) -> None:
    assert body["ok"] is False and body["status"] == status and body["code"] == code, body
    assert isinstance(body["error"], str) and body["error"]
    assert "postgres" not in json.dumps(body).lower()  # no address, no driver text


def _wait(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


class World:
    def __init__(self, hub: Hub, base: str, token: str, pg: PrivatePostgres, folder: Path):
        self.hub, self.base, self.token, self.pg, self.folder = hub, base, token, pg, folder

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://{self.base}{path}", headers=self.auth, timeout=30)

    def post(self, path: str) -> httpx.Response:
        return httpx.post(f"http://{self.base}{path}", headers=self.auth, timeout=120)


@pytest.fixture
def world(tmp_path: Path, private_postgres: PrivatePostgres) -> Iterator[World]:
    folder = tmp_path / "exports"
    folder.mkdir()
    pq.write_table(ticket_rows(1, 40), folder / "tickets-1.parquet")
    settings = Settings(
        home=tmp_path / "home",
        catalog_url=private_postgres.url(),
        audit_key="test-audit-key-" + "k" * 32,  # a catalog on a server is production
        bus_poll_s=0.05,
        run_lease_s=3,
        ops_tick_s=0.5,
    )
    hub = Hub.open(settings)
    hub.store.identity.upsert_agency("gy_12345", "热线")
    hub.store.identity.create_principal("steward", "gy_12345", "steward", "steward")
    token = hub.store.identity.issue_token("steward", ttl=timedelta(hours=1))
    source = {**file_source(hub, folder, "*.parquet"), "cursor": "updated_at"}
    hub.store.register_dataset(parse_manifest(manifest_dict(source=source)))
    port = free_port()
    try:
        with serving(hub, port):
            yield World(hub, f"127.0.0.1:{port}", token, private_postgres, folder)
    finally:
        hub.close()


def test_requests_while_the_catalog_is_down_get_503_and_work_again_after(world: World) -> None:
    assert world.get("/v1/datasets").status_code == 200
    world.pg.stop("immediate")
    for path in ("/v1/datasets", "/v1/datasets/tickets", "/v1/datasets/tickets/runs"):
        r = world.get(path)
        assert r.status_code == 503, (path, r.text)
        assert r.headers["retry-after"].isdigit()
        _is_error_body(r.json(), 503, "service_unavailable")
        assert r.json()["detail"]["service"] == "catalog database"
    r = world.post("/v1/datasets/tickets/ingest")
    assert r.status_code == 503, r.text
    _is_error_body(r.json(), 503, "service_unavailable")
    # A websocket is told to come back later, not that its token is bad.
    with connect(f"ws://{world.base}/v1/ws", open_timeout=10) as c:
        c.send(json.dumps({"op": "auth", "token": world.token}))
        frame = json.loads(c.recv(10))
        _is_error_body({k: v for k, v in frame.items() if k != "type"}, 503, "service_unavailable")
        with pytest.raises(Exception) as closed:
            c.recv(10)
        assert closed.value.rcvd.code == 1013  # type: ignore[attr-defined]
    world.pg.start()
    # Back without a restart of the hub: the pool's stale connections are replaced.
    r = _wait(lambda: (resp := world.get("/v1/datasets")).status_code == 200 and resp)
    assert [d["id"] for d in r.json()] == ["tickets"]
    run = world.post("/v1/datasets/tickets/ingest").json()
    assert (run["status"], run["version"]) == ("succeeded", 1)
    ws = WS(world.base, world.token)
    ws.close()


def test_the_catalog_going_away_right_after_the_lake_commit_leaves_no_half_state(
    world: World,
) -> None:
    hub = world.hub
    ws = WS(world.base, world.token)
    assert ws.subscribe("dataset:tickets", since=0)["type"] == "subscribed"
    commit = hub.lake.commit

    def commit_then_lose_the_catalog(*args: Any, **kw: Any) -> Any:
        snap = commit(*args, **kw)  # the lake (its own SQLite catalog) has the version
        world.pg.stop("immediate")  # and the catalog goes away before recording it
        return snap

    hub.lake.commit = commit_then_lose_the_catalog  # type: ignore[method-assign]
    r = world.post("/v1/datasets/tickets/ingest")
    hub.lake.commit = commit  # type: ignore[method-assign]
    assert r.status_code == 503, r.text
    _is_error_body(r.json(), 503, "commit_unsettled")
    run_id = r.json()["detail"]["run"]
    # Nothing was deleted: the committed snapshot reads whole, with every row.
    snap = hub.lake.current("tickets")
    assert snap is not None and snap.run_id == run_id
    duck = duck_connect("iceberg")
    n, distinct = duck.execute(
        "SELECT count(*), count(DISTINCT ticket_id) FROM iceberg_scan(?)",
        [snap.metadata_location],
    ).fetchone()  # type: ignore[misc]
    assert (n, distinct) == (40, 40)
    world.pg.start()
    # The hub's sweep settles the run once its lease has run out (3 s here): the version is
    # recorded from the lake, the run is succeeded, and subscribers hear of it once.
    got = ws.messages(1, timeout=60)[0]
    assert got["event"] == "dataset.updated" and got["data"]["run_id"] == run_id
    assert (got["data"]["version"], got["offset"]) == (1, 1)
    settled = _wait(lambda: (run := hub.store.get_run(run_id)).status != "running" and run)
    assert (settled.status, settled.version) == ("succeeded", 1)
    # The next run finds nothing new and adds nothing twice.
    nxt = world.post("/v1/datasets/tickets/ingest").json()
    assert nxt["status"] == "unchanged", nxt
    assert [v.version for v in hub.store.versions("tickets")] == [1]
    with pytest.raises(TimeoutError):
        ws.recv(timeout=1.5)  # no second announcement
    ws.close()
