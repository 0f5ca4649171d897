"""Large answers over a real uvicorn: streamed in batches by a thread that keeps ahead of
the socket, and stopped — query, thread and audit entry settled — when the client leaves."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pyarrow as pa
import pytest

from hub.api.server import free_port, serving
from tests.conftest import ExchangeWorld

# 300 x 300 x 300 = 27,000,000 rows: far more than a batch, more than a client waits for.
HUGE = "SELECT a.ticket_id, b.ticket_id AS b, c.ticket_id AS c FROM t_open a, t_open b, t_open c"
ARROW = {"Accept": "application/vnd.apache.arrow.stream"}


@pytest.fixture(scope="module")
def server(exchange_world: ExchangeWorld) -> Iterator[str]:
    port = free_port()
    with serving(exchange_world.hub, port):
        yield f"http://127.0.0.1:{port}"


def answer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "blockhub-answer"]


def test_an_arrow_answer_streams_whole_and_in_order(
    server: str, exchange_world: ExchangeWorld
) -> None:
    sql = "SELECT a.ticket_id AS a, b.ticket_id AS b FROM t_open a, t_open b ORDER BY a, b"
    r = httpx.post(
        f"{server}/v1/query",
        headers={**exchange_world.auth("stranger"), **ARROW},
        json={"sql": sql},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    table = pa.ipc.open_stream(r.content).read_all()
    ids = sorted(exchange_world.table.column("ticket_id").to_pylist())
    assert table.num_rows == len(ids) ** 2
    assert table.column("a").to_pylist() == [a for a in ids for _ in ids]
    assert table.column("b").to_pylist() == ids * len(ids)


def test_a_client_that_leaves_midway_stops_the_query_and_the_access_is_on_record(
    server: str, exchange_world: ExchangeWorld
) -> None:
    hub = exchange_world.hub
    before = hub.audit.entries(principal="stranger", limit=1)
    with httpx.stream(
        "POST",
        f"{server}/v1/query",
        headers={**exchange_world.auth("stranger"), **ARROW},
        json={"sql": HUGE},
        timeout=60,
    ) as r:
        assert r.status_code == 200
        assert next(r.iter_raw())  # the answer has begun; then the client goes away
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        entries = hub.audit.entries(principal="stranger", limit=1)
        if entries and entries != before and not answer_threads():
            break
        time.sleep(0.05)
    assert not answer_threads(), "the thread ahead of the socket is still running"
    entry = hub.audit.entries(principal="stranger", limit=1)[0]
    assert entry.action == "export" and entry.datasets == {"t_open": 1}
    assert entry.row_count is not None and 0 < entry.row_count < 27_000_000
    assert httpx.get(f"{server}/healthz").json()["ok"] is True
