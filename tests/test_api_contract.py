"""The API keeps its OpenAPI contract under fuzzing: schemathesis generates requests for
every operation of ``/openapi.json`` (valid and invalid ones) and sends them, with the
tokens of every role, to a real uvicorn serving a seeded hub.  Every answer must be a
non-5xx, carry a status the operation declares and a body that matches the schema
declared for that status — error bodies (the one ``ErrorBody``) included.

A stateful run follows the OpenAPI links (an access request → approve/refuse/revoke;
an order → its history and actions) so that calls reach objects that exist.

Deterministic: Hypothesis is derandomized (its seed comes from the test), and the number
of examples per operation is fixed.
"""

from __future__ import annotations

import tempfile
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from hub.api.app import create_app
from hub.api.server import free_port, serving
from hub.assembly.context import Hub
from hub.live import dispatch
from hub.settings import Settings
from tests.conftest import build_exchange_world, fresh_pg_database

pytestmark = pytest.mark.contract

AGENCIES = {
    "gy_12345": "贵阳市12345政务服务便民热线",
    "gy_dsj": "贵阳市大数据发展管理局",
    "gy_hbj": "贵阳市生态环境局",
}
ROLES = ("admin", "steward", "operator", "developer", "stranger", "nobody")
"""Principals of the seeded hub (``nobody``: a token that is not one)."""

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

EXAMPLES = 30
"""Examples per operation: the run stays within a few minutes on two cores."""
STATEFUL_EXAMPLES = 40
"""Scenarios of linked calls (up to 6 steps each)."""


class ContractHub:
    def __init__(self, url: str, tokens: dict[str, str]) -> None:
        self.url = url
        self.tokens = tokens

    def headers(self, who: str) -> dict[str, str]:
        token = self.tokens.get(who, "bh_not_a_token")
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def catalog_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Both catalog stores: SQLite refuses integers past 64 bits, PostgreSQL text with
    NUL — a client's input must meet neither."""
    if request.param == "sqlite":
        yield None
    else:
        with fresh_pg_database() as url:
            yield url


@pytest.fixture(scope="module")
def contract_hub(
    tmp_path_factory: pytest.TempPathFactory, catalog_url: str | None
) -> Iterator[ContractHub]:
    """The exchange world (four datasets, a grant) plus an alert and an order, served by
    uvicorn.  Query limits are raised so that fuzzing reaches the routes behind them
    rather than their 429 (which test_limits.py and the load test cover)."""
    folder: Path = tmp_path_factory.mktemp("contract")
    h = Hub.open(
        Settings(
            home=folder / "home",
            catalog_url=catalog_url,
            audit_key="test-audit-key-" + "k" * 32,  # a catalog on a server is production
            bus_poll_s=0.05,
            query_timeout_s=5.0,
            query_rate=10_000.0,
            query_burst=10_000,
            export_rate=10_000.0,
            export_burst=10_000,
        )
    )
    for agency, name in AGENCIES.items():
        h.store.identity.upsert_agency(agency, name)
    tokens: dict[str, str] = {}
    for pid, agency, role in [
        ("admin", "gy_dsj", "admin"),
        ("steward", "gy_12345", "steward"),
        ("operator", "gy_dsj", "operator"),
        ("developer", "gy_hbj", "developer"),
    ]:
        h.store.identity.create_principal(pid, agency, pid, role)
        tokens[pid] = h.store.identity.issue_token(pid, ttl=timedelta(hours=2))
    try:
        world = build_exchange_world(h, tokens, folder)
        _seed_ops(world.hub)
        port = free_port()
        with serving(world.hub, port):
            yield ContractHub(f"http://127.0.0.1:{port}", world.tokens)
    finally:
        h.close()


def _seed_ops(hub: Any) -> None:
    """An open alert and an order, so that their routes have something to find."""
    from catalog.identity.store import Principal

    hub.ops.raise_alert(
        rule_id="aqi_high",
        key="station:1",
        severity="warning",
        title="AQI above 200",
        source="feed:aqi",
        detail={"aqi": 230},
        at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    admin = Principal(id="admin", agency_id="gy_dsj", name="admin", role="admin")
    dispatch.open_order(hub, admin, target="gy_12345", instructions="检查噪音投诉")


def openapi_document() -> dict[str, Any]:
    """The app's OpenAPI document, made at collection time (one pytest item per
    operation needs it then) from an app over an empty hub."""
    with tempfile.TemporaryDirectory() as home:
        h = Hub.open(Settings(home=Path(home)))
        try:
            return create_app(h.settings, hub=h).openapi()
        finally:
            h.close()


schema = schemathesis.openapi.from_dict(openapi_document())


def role_of(case: Any) -> str:
    """The role a case is sent as: spread over every role by the case's own content, so
    that the run stays deterministic and schemathesis's explicit (coverage) examples,
    which take no extra arguments, are sent as every role too."""
    key = repr((case.method, case.path_parameters, case.query, case.body)).encode()
    return ROLES[zlib.crc32(key) % len(ROLES)]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_keeps_its_contract(case: Any, contract_hub: ContractHub) -> None:
    who = role_of(case)
    case.call_and_validate(
        base_url=contract_hub.url, headers=contract_hub.headers(who), checks=CHECKS
    )


OPERATION_ROLES = {
    "POST /v1/datasets/{dataset_id}/access-requests": "stranger",
    "GET /v1/access-requests/{request_id}": "stranger",
    "POST /v1/access-requests/{request_id}/approve": "steward",
    "POST /v1/access-requests/{request_id}/refuse": "steward",
    "POST /v1/access-requests/{request_id}/revoke": "steward",
    "POST /v1/orders": "operator",
    "GET /v1/orders": "operator",
    "GET /v1/orders/{order_id}": "operator",
    "POST /v1/orders/{order_id}/{action}": "operator",
    "GET /v1/alerts": "operator",
    "GET /v1/alerts/{alert_id}": "operator",
    "POST /v1/alerts/{alert_id}/ack": "operator",
    "POST /v1/alerts/{alert_id}/resolve": "operator",
    "POST /v1/datasets": "steward",
    "POST /v1/datasets/{dataset_id}/ingest": "steward",
}
"""In the stateful run each operation is called as the role its flow needs (a stranger
files a request, the owning steward decides it), so that the links chain real objects."""


def test_linked_flows_keep_the_contract(contract_hub: ContractHub) -> None:
    """Schemathesis follows the OpenAPI links: answers of one call become the parameters
    of the next (a filed request is approved, refused or revoked; an opened order is
    read and acted on; a listed alert is acknowledged), every answer checked."""

    class Flows(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            label = f"{case.method.upper()} {case.path}"
            who = OPERATION_ROLES.get(label, "admin")
            return {"base_url": contract_hub.url, "headers": contract_hub.headers(who)}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS)

    Flows.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=6,
            derandomize=True,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )
