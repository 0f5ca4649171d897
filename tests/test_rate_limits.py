"""Per-principal limits on query and export answers: in flight at once, per second, and a
ceiling for the whole server — past any of them a 429 with ``Retry-After`` in the one
error body; a streamed answer holds its place until it is sent or its client goes away.

The limiter is checked alone with an injected clock (and from many threads at once), and
end to end against a real uvicorn serving the exchange world.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.api.common.errors import ErrorBody
from hub.api.common.limits import Budget, Limiter, TooManyRequests
from hub.api.server import free_port, serving
from tests.conftest import ExchangeWorld

# -- the limiter alone -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **kw: Any) -> Limiter:
    budgets = {
        "query": Budget(concurrency=kw.get("concurrency", 2), rate=kw.get("rate", 1.0), burst=3),
        "export": Budget(concurrency=1, rate=0.5, burst=1),
    }
    return Limiter(budgets, max_inflight=kw.get("max_inflight", 100), clock=clock)


def refused(lim: Limiter, who: str, kind: str = "query") -> TooManyRequests:
    with pytest.raises(TooManyRequests) as e:
        lim.admit(who, kind)
    assert e.value.status == 429 and e.value.code == "too_many_requests"
    return e.value


def test_a_burst_then_the_rate_with_the_wait_in_retry_after() -> None:
    clock = Clock()
    lim = limiter(clock, concurrency=10, rate=0.25)
    for _ in range(3):
        lim.admit("dev", "query").release()
    err = refused(lim, "dev")
    assert err.detail["limit"] == "rate" and err.retry_after_s == 4  # one token per 4 s
    clock.now += 3.0
    assert refused(lim, "dev").retry_after_s == 1
    clock.now += 1.0
    lim.admit("dev", "query").release()
    lim.admit("other", "query").release()  # per principal
    lim.admit("dev", "export").release()  # per kind


def test_answers_in_flight_are_capped_and_freed_once() -> None:
    clock = Clock()
    lim = limiter(clock, rate=100.0)
    a, b = lim.admit("dev", "query"), lim.admit("dev", "query")
    err = refused(lim, "dev")
    assert err.detail["limit"] == "concurrency" and err.retry_after_s == 1
    a.release()
    a.release()  # idempotent: the second release frees nothing
    assert lim.inflight("dev") == 1
    c = lim.admit("dev", "query")
    refused(lim, "dev")
    b.release()
    c.release()
    assert lim.inflight() == 0


def test_a_refusal_for_concurrency_spends_no_token() -> None:
    clock = Clock()
    lim = limiter(clock, concurrency=1, rate=0.001)
    held = lim.admit("dev", "query")
    for _ in range(5):
        assert refused(lim, "dev").detail["limit"] == "concurrency"
    held.release()
    lim.admit("dev", "query").release()  # the second of three tokens
    lim.admit("dev", "query").release()


def test_the_whole_server_has_a_ceiling() -> None:
    clock = Clock()
    lim = limiter(clock, rate=100.0, max_inflight=3)
    slots = [lim.admit(p, "query") for p in ("a", "b", "c")]
    err = refused(lim, "d")
    assert err.detail["limit"] == "server"
    slots.pop().release()
    lim.admit("d", "query")


def test_idle_principals_are_forgotten_past_the_tracking_bound() -> None:
    clock = Clock()
    lim = limiter(clock, rate=100.0)
    lim.MAX_TRACKED = 10
    for i in range(50):
        lim.admit(f"p{i}", "query").release()
        clock.now += 1.0
    assert len(lim._buckets) <= 11


@settings(max_examples=30, derandomize=True, deadline=None)
@given(
    threads=st.integers(2, 8),
    concurrency=st.integers(1, 4),
    max_inflight=st.integers(1, 6),
    seed=st.integers(0, 2**32),
)
def test_limits_hold_under_threads(
    threads: int, concurrency: int, max_inflight: int, seed: int
) -> None:
    """Threads admitting and releasing at random never see more in flight than the
    limits allow, and everything is released at the end."""
    lim = Limiter(
        {"query": Budget(concurrency, 1e9, 10**9)}, max_inflight=max_inflight, clock=time.monotonic
    )
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        rnd = random.Random(seed + n)
        for _ in range(200):
            who = f"p{rnd.randrange(3)}"
            try:
                slot = lim.admit(who, "query")
            except TooManyRequests:
                continue
            with lock:
                seen.append((lim.inflight(who), lim.inflight()))
            slot.release()

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    assert all(mine <= concurrency and total <= max_inflight for mine, total in seen)
    assert lim.inflight() == 0


# -- over HTTP ------------------------------------------------------------------------------

BIG = "SELECT a.ticket_id, a.caller_name, b.category FROM t_open a, t_open b, t_open c"
"""27 million rows: an answer that streams for as long as its client leaves it unread."""
SMALL = "SELECT count(*) AS n FROM t_open"


@pytest.fixture
def serve(exchange_world: ExchangeWorld) -> Iterator[Any]:
    """Start a uvicorn over the (module's) exchange world with some settings changed;
    the settings are put back afterwards."""
    s = exchange_world.hub.settings
    saved = s.model_dump()
    with ExitStack() as stack:

        def start(**changes: Any) -> httpx.Client:
            for k, v in changes.items():
                setattr(s, k, v)
            port = free_port()
            stack.enter_context(serving(exchange_world.hub, port))
            return stack.enter_context(
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
            )

        yield start
    for k, v in saved.items():
        setattr(s, k, v)


def assert_429(r: httpx.Response, limit: str) -> dict[str, Any]:
    assert r.status_code == 429, (r.status_code, r.text[:300])
    body: dict[str, Any] = r.json()
    ErrorBody.model_validate(body)
    assert body["code"] == "too_many_requests" and body["detail"]["limit"] == limit, body
    assert int(r.headers["retry-after"]) == body["detail"]["retry_after_s"] >= 1
    return body


def test_answers_in_flight_past_the_limit_are_429_until_one_is_done(
    serve: Any, exchange_world: ExchangeWorld
) -> None:
    client = serve(query_concurrency=2, export_concurrency=1, query_rate=1000.0, query_burst=1000)
    dev, admin = exchange_world.auth("developer"), exchange_world.auth("admin")
    readers = []  # kept: a dropped iterator closes its response
    with ExitStack() as held:
        for _ in range(2):
            r = held.enter_context(
                client.stream("POST", "/v1/query", json={"sql": BIG}, headers=admin)
            )
            assert r.status_code == 200
            readers.append(r.iter_bytes())
            next(readers[-1])  # streaming, unread: its place is held
        assert_429(client.post("/v1/query", json={"sql": SMALL}, headers=admin), "concurrency")
        assert_429(client.get("/v1/datasets/t_open/rows", headers=admin), "concurrency")
        assert_429(client.get("/v1/blocks/region/520102", headers=admin), "concurrency")
        # exports have their own budget, and other principals theirs
        export = held.enter_context(
            client.stream("POST", "/v1/query", json={"sql": BIG, "format": "csv"}, headers=admin)
        )
        assert export.status_code == 200
        readers.append(export.iter_bytes())
        next(readers[-1])
        r = client.get("/v1/datasets/t_open/rows", params={"format": "parquet"}, headers=admin)
        assert_429(r, "concurrency")
        assert client.post("/v1/query", json={"sql": SMALL}, headers=dev).status_code == 200
    # the streams' clients went away: their places are freed (bounded wait)
    deadline = time.monotonic() + 20
    while True:
        r = client.post("/v1/query", json={"sql": SMALL}, headers=admin)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == 200, r.text
    assert client.get("/healthz").status_code == 200


def test_answers_past_the_rate_are_429_with_the_wait(
    serve: Any, exchange_world: ExchangeWorld
) -> None:
    client = serve(query_rate=0.01, query_burst=3, export_rate=0.01, export_burst=1)
    steward, dev = exchange_world.auth("steward"), exchange_world.auth("developer")
    assert client.post("/v1/query", json={"sql": SMALL}, headers=steward).status_code == 200
    assert client.get("/v1/datasets/t_open/sample", headers=steward).status_code == 200
    assert client.get("/v1/datasets/t_open/rows", headers=steward).status_code == 200
    for r in (
        client.post("/v1/query", json={"sql": SMALL}, headers=steward),
        client.get("/v1/query", params={"sql": SMALL}, headers=steward),
        client.get("/v1/datasets/t_open/rows", headers=steward),
        client.get("/v1/blocks/region/520102", headers=steward),
    ):
        body = assert_429(r, "rate")
        assert 1 <= body["detail"]["retry_after_s"] <= 100  # one token per 100 s
    r = client.post("/v1/query", json={"sql": SMALL, "format": "csv"}, headers=steward)
    assert r.status_code == 200  # exports: their own bucket
    r = client.post("/v1/query", json={"sql": SMALL, "format": "arrow"}, headers=steward)
    assert_429(r, "rate")
    assert client.post("/v1/query", json={"sql": SMALL}, headers=dev).status_code == 200
    # a refused query is not run, and answered before any other check: no token, no 429
    r = client.post("/v1/query", json={"sql": SMALL})
    assert r.status_code == 401


def test_the_limits_are_declared_in_the_openapi(serve: Any) -> None:
    doc = serve().get("/openapi.json").json()
    for path, method in [
        ("/v1/query", "post"),
        ("/v1/query", "get"),
        ("/v1/datasets/{dataset_id}/rows", "get"),
        ("/v1/datasets/{dataset_id}/sample", "get"),
        ("/v1/blocks/region/{code}", "get"),
        ("/v1/blocks/enterprise/{credit_code}", "get"),
    ]:
        declared = doc["paths"][path][method]["responses"]["429"]
        assert declared["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
        assert "Retry-After" in declared["headers"]


def test_settings_name_the_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.settings import Settings

    monkeypatch.setenv("BLOCKHUB_QUERY_CONCURRENCY", "3")
    monkeypatch.setenv("BLOCKHUB_EXPORT_RATE", "0.5")
    monkeypatch.setenv("BLOCKHUB_MAX_BODY_BYTES", "2048")
    s = Settings(home=tmp_path)
    assert (s.query_concurrency, s.export_rate, s.max_body_bytes) == (3, 0.5, 2048)
