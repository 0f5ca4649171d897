"""Catalog API: register/update from a manifest (owning steward only), search, entries —
and the OpenAPI document covering every route."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml
from fastapi.testclient import TestClient

from hub.api.app import create_app
from tests.conftest import ExchangeWorld, manifest_dict


@pytest.fixture(scope="module")
def client(exchange_world: ExchangeWorld) -> Iterator[TestClient]:
    with TestClient(create_app(exchange_world.hub.settings, hub=exchange_world.hub)) as c:
        yield c


h = ExchangeWorld.auth


def test_register_and_update_from_a_manifest(
    client: TestClient, exchange_world: ExchangeWorld
) -> None:
    doc = manifest_dict(id="reg_tickets", title="登记测试工单")
    text = yaml.safe_dump(doc, allow_unicode=True)
    yaml_hdr = {"Content-Type": "application/yaml"}
    for who in ("developer", "operator", "stranger"):
        r = client.post("/v1/datasets", headers={**h(exchange_world, who), **yaml_hdr},
                        content=text)  # fmt: skip
        assert r.status_code == 403
    steward = {**h(exchange_world, "steward"), **yaml_hdr}
    r = client.post("/v1/datasets", headers=steward, content=text)
    assert r.status_code == 201 and r.json()["created"] is True
    assert client.post("/v1/datasets", headers=steward, content=text).status_code == 409
    doc["title"] = "登记测试工单（更新）"
    r = client.put(
        "/v1/datasets/reg_tickets",
        headers={**h(exchange_world, "steward"), "Content-Type": "application/json"},
        content=json.dumps(doc),
    )
    assert r.status_code == 200 and r.json()["created"] is False
    assert exchange_world.hub.store.get_dataset("reg_tickets").title == "登记测试工单（更新）"
    r = client.put("/v1/datasets/other", headers=steward, content=text)
    assert r.status_code == 400 and r.json()["detail"]["field"] == "id"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("id: [unclosed", "(body)"),
        (yaml.safe_dump(manifest_dict(id="x1", sharing={"type": "sometimes"})), "sharing.type"),
        (yaml.safe_dump(manifest_dict(id="x2", columns=[{"name": "a", "type": "nope"}],
                                      primary_key=[], block_keys=[])), "columns[0:a].type"),
    ],
)  # fmt: skip
def test_bad_manifests_name_the_field(
    client: TestClient, exchange_world: ExchangeWorld, body: str, field: str
) -> None:
    r = client.post("/v1/datasets", headers=h(exchange_world, "steward"), content=body)
    assert r.status_code == 422
    problems = r.json()["detail"]["problems"]
    assert field in [p["field"] for p in problems]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"q": "热线"}, {"t_open", "t_cond", "t_none", "t_core"}),
        ({"q": "来电号码"}, {"t_open", "t_cond", "t_none", "t_core"}),  # a column description
        ({"q": "caller_phone 热线"}, {"t_open", "t_cond", "t_none", "t_core"}),
        ({"q": "空气质量"}, set()),
        ({"sharing": "conditional"}, {"t_cond"}),
        ({"classification": "core"}, {"t_core"}),
        ({"agency": "gy_hbj"}, set()),
        ({"tag": "民生"}, {"t_open", "t_cond", "t_none", "t_core"}),
        ({"readable": True}, {"t_open", "t_core"}),
        ({"stale": False}, {"t_open", "t_cond", "t_none", "t_core"}),
    ],
)
def test_search(
    client: TestClient, exchange_world: ExchangeWorld, params: dict[str, object], expected: set
) -> None:
    r = client.get("/v1/catalog", headers=h(exchange_world, "stranger"), params=params)
    assert r.status_code == 200
    assert {e["id"] for e in r.json()} - {"reg_tickets"} == expected


def test_catalog_entry_says_what_the_caller_gets(
    client: TestClient, exchange_world: ExchangeWorld
) -> None:
    e = client.get("/v1/catalog/t_cond", headers=h(exchange_world, "developer")).json()
    assert e["access"]["via"] == "grant"
    assert e["access"]["masked"] == {"caller_phone": "phone"}
    assert e["access"]["row_filters"] == [{"district_code": ["520102", "520103"]}]
    assert e["freshness"]["update_frequency"] == "1h" and e["freshness"]["stale"] is False
    n = client.get("/v1/catalog/t_none", headers=h(exchange_world, "stranger")).json()
    assert n["legal_basis"] and n["access"]["readable"] is False


def test_openapi_documents_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {
        "/v1/datasets/{dataset_id}/rows",
        "/v1/datasets/{dataset_id}/sample",
        "/v1/catalog",
        "/v1/access-requests",
        "/v1/audit",
    } <= set(spec["paths"])
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            ok = [s for s in op["responses"] if s.startswith("2")]
            assert ok, f"{method} {path} documents no 2xx"
            assert op["responses"][ok[0]].get("content") or op["responses"][ok[0]].get(
                "description"
            ), f"{method} {path}"
            if path in ("/healthz", "/readyz"):  # the probes: no token (docs/operations.md)
                continue
            assert "401" in op["responses"], f"{method} {path} documents no 401"
            err = op["responses"]["401"]["content"]["application/json"]["schema"]
            assert err == {"$ref": "#/components/schemas/ErrorBody"}, f"{method} {path}"
