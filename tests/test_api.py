"""The REST contract: authentication, the one error body, datasets and query formats."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from hub.api.app import create_app
from hub.assembly.context import Hub
from tests.conftest import publish_file


@pytest.fixture
def client(hub: Hub, tickets_file: Path, tokens: dict[str, str]) -> Iterator[TestClient]:
    for ident, sharing in [
        ("open_tickets", {"type": "unconditional"}),
        ("closed_tickets", {"type": "conditional"}),
    ]:
        publish_file(hub, tickets_file, ident, sharing=sharing)
    with TestClient(create_app(hub.settings, hub=hub)) as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(body: dict[str, object], status: int, code: str) -> None:
    assert body["ok"] is False
    assert body["status"] == status
    assert body["code"] == code
    assert isinstance(body["error"], str) and body["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/datasets"),
        ("GET", "/v1/datasets/open_tickets"),
        ("GET", "/v1/datasets/open_tickets/versions"),
        ("GET", "/v1/datasets/open_tickets/runs"),
        ("POST", "/v1/datasets/open_tickets/ingest"),
        ("GET", "/v1/query?sql=select+1"),
        ("POST", "/v1/query"),
        ("GET", "/v1/runs/x"),
    ],
)
def test_every_endpoint_needs_a_token(client: TestClient, method: str, path: str) -> None:
    r = client.request(method, path, json={"sql": "SELECT 1"})
    assert r.status_code == 401
    assert_error(r.json(), 401, "unauthenticated")
    r = client.request(method, path, json={"sql": "SELECT 1"}, headers=auth("bh_nope_nope"))
    assert r.status_code == 401


def test_revoked_and_expired_tokens_are_refused(client: TestClient, hub: Hub) -> None:
    from datetime import timedelta

    token = hub.store.identity.issue_token("developer", ttl=timedelta(hours=1))
    assert client.get("/v1/datasets", headers=auth(token)).status_code == 200
    hub.store.identity.revoke_token(token.split("_")[1])
    r = client.get("/v1/datasets", headers=auth(token))
    assert r.status_code == 401 and "revoked" in r.json()["error"]
    expired = hub.store.identity.issue_token("developer", ttl=timedelta(seconds=-1))
    r = client.get("/v1/datasets", headers=auth(expired))
    assert r.status_code == 401 and "expired" in r.json()["error"]


def test_sharing_type_decides_who_reads(client: TestClient, tokens: dict[str, str]) -> None:
    dev = auth(tokens["developer"])  # another agency
    names = {d["id"] for d in client.get("/v1/datasets", headers=dev).json()}
    assert names == {"open_tickets"}
    r = client.post("/v1/query", headers=dev, json={"sql": "SELECT count(*) FROM closed_tickets"})
    assert_error(r.json(), 403, "forbidden")
    assert_error(client.get("/v1/datasets/closed_tickets", headers=dev).json(), 403, "forbidden")
    owner = auth(tokens["steward"])
    r = client.post(
        "/v1/query", headers=owner, json={"sql": "SELECT count(*) AS n FROM closed_tickets"}
    )
    assert r.json()["rows"] == [{"n": 50}]


def test_only_the_owning_steward_triggers_ingest(
    client: TestClient, tokens: dict[str, str]
) -> None:
    r = client.post("/v1/datasets/open_tickets/ingest", headers=auth(tokens["developer"]))
    assert_error(r.json(), 403, "forbidden")
    r = client.post("/v1/datasets/open_tickets/ingest", headers=auth(tokens["steward"]))
    assert r.status_code == 200 and r.json()["status"] == "unchanged"


def test_errors_share_one_body(client: TestClient, tokens: dict[str, str]) -> None:
    h = auth(tokens["admin"])
    assert_error(client.get("/v1/datasets/nope", headers=h).json(), 404, "dataset_not_found")
    assert_error(client.post("/v1/query", headers=h, json={}).json(), 422, "invalid_request")
    r = client.post("/v1/query", headers=h, json={"sql": "SELECT nope FROM open_tickets"})
    assert_error(r.json(), 400, "query_failed")
    r = client.post(
        "/v1/query", headers=h, json={"sql": "SELECT 1", "versions": {"open_tickets": 9}}
    )
    assert r.status_code in (400, 403, 404)
    r = client.post(
        "/v1/query",
        headers=h,
        json={"sql": "SELECT * FROM open_tickets", "versions": {"open_tickets": 9}},
    )
    assert_error(r.json(), 404, "version_not_found")
    assert_error(client.get("/v1/nowhere", headers=h).json(), 404, "not_found")


def test_formats(client: TestClient, tokens: dict[str, str]) -> None:
    h = auth(tokens["developer"])
    sql = "SELECT ticket_id, district_code, updated_at FROM open_tickets ORDER BY ticket_id"
    body = client.post("/v1/query", headers=h, json={"sql": sql}).json()
    assert body["row_count"] == 50 and body["versions"] == {"open_tickets": 1}
    assert [c["name"] for c in body["columns"]] == ["ticket_id", "district_code", "updated_at"]
    assert isinstance(body["query_ms"], float)

    r = client.post("/v1/query", headers=h, json={"sql": sql, "format": "ndjson"})
    assert len(r.text.strip().splitlines()) == 50

    r = client.post("/v1/query", headers=h, json={"sql": sql, "format": "csv"})
    assert pacsv.read_csv(io.BytesIO(r.content)).num_rows == 50

    r = client.post(
        "/v1/query",
        headers={**h, "Accept": "application/vnd.apache.arrow.stream"},
        json={"sql": sql},
    )
    assert r.headers["content-type"] == "application/vnd.apache.arrow.stream"
    assert r.headers["x-blockhub-versions"] == "open_tickets=1"
    assert ipc.open_stream(r.content).read_all().num_rows == 50

    r = client.get("/v1/query", headers=h, params={"sql": sql, "format": "parquet"})
    assert pq.read_table(io.BytesIO(r.content)).num_rows == 50

    r = client.post("/v1/query", headers=h, json={"sql": sql, "max_rows": 10})
    assert r.json()["row_count"] == 10 and r.json()["truncated"] is True


def test_openapi_lists_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = set(spec["paths"])
    assert {"/v1/datasets", "/v1/datasets/{dataset_id}", "/v1/query", "/v1/runs/{run_id}"} <= paths
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
