"""Large answers over a real uvicorn: streamed in batches by a thread that keeps ahead of
the socket, and stopped — query, thread and audit entry settled — when the client leaves."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pyarrow as pa
import pytest

from hub.server import free_port, serving
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


def test_query_connections_are_lent_again_however_a_query_ends(
    exchange_world: ExchangeWorld,
) -> None:
    """The exchange's query connections carry a session setting that the locked
    configuration would refuse later (hub.exchange._Cursors): each goes back to the pool
    after a whole answer, a truncated one, one closed midway, a timeout and a failure,
    once however many results share it, and more queries at once than the pool still run."""
    from catalog.errors import QueryFailed, QueryTimeout
    from hub.exchange import QUERY_CONNECTIONS

    hub = exchange_world.hub
    ex = hub.exchange
    who = hub.store.get_principal("stranger")
    pool = ex._cursors  # the test looks inside: what it checks is the pool itself

    def idle() -> list[int]:
        return sorted(id(c) for c in pool._free)

    before = idle()
    assert len(before) == QUERY_CONNECTIONS
    for cur in pool._free:
        setting = cur.sql("SELECT current_setting('streaming_buffer_size')").fetchone()
        assert setting == ("61.0 MiB",)
    for _ in range(QUERY_CONNECTIONS + 2):
        assert ex.query("SELECT count(*) AS n FROM t_open", who).to_table().num_rows == 1
        truncated = ex.query(HUGE, who, max_rows=10)
        assert truncated.to_table().num_rows == 10 and truncated.truncated
        midway = ex.query(HUGE, who)
        next(midway.batches())
        midway.close()
        midway.close()  # a second close (a page served again) releases nothing twice
        with pytest.raises(QueryTimeout):
            ex.query(HUGE + " ORDER BY 1, 2, 3", who, timeout_s=0.05).to_table()
        with pytest.raises(QueryFailed):
            ex.query("SELECT CAST(caller_name AS INTEGER) AS x FROM t_open", who).to_table()
    assert idle() == before

    answers: list[int] = []

    def one() -> None:
        answers.append(ex.query("SELECT count(*) AS n FROM t_open", who).to_table()[0][0].as_py())

    threads = [threading.Thread(target=one) for _ in range(QUERY_CONNECTIONS + 4)]
    held = [ex.query(HUGE, who) for _ in range(QUERY_CONNECTIONS + 2)]  # more than the pool
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for r in held:
        r.close()
    assert answers == [300] * (QUERY_CONNECTIONS + 4)
    assert idle() == before
