"""``/readyz`` asks each server the hub depends on; each is a private instance here, stopped
one after the other, and the probe names exactly the one that went away.  ``/healthz``
(liveness) stays 200 throughout."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from catalog.datasets.manifest import parse_manifest
from hub.api.server import free_port, serving
from hub.assembly.context import Hub
from hub.settings import Settings
from tests import private_services
from tests.conftest import manifest_dict
from tests.private_services import PrivateMosquitto, PrivatePostgres, PrivateRedis

private_postgres = private_services.private_postgres

pytestmark = pytest.mark.postgres


def _ready(base: str) -> tuple[int, dict[str, Any]]:
    r = httpx.get(f"http://{base}/readyz", timeout=20)
    return r.status_code, r.json()


def _wait_failed(base: str, failed: list[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, body = _ready(base)
        if status == 503 and body["detail"]["failed"] == failed:
            return body
        time.sleep(0.2)
    raise AssertionError(f"readyz never failed exactly {failed}: {body}")


def test_readyz_names_the_dependency_that_stopped(
    tmp_path: Path, private_postgres: PrivatePostgres
) -> None:
    broker = PrivateMosquitto(tmp_path / "mosquitto").start()
    bus = PrivateRedis(tmp_path / "redis").start()
    settings = Settings(
        home=tmp_path / "home",
        env="development",
        catalog_url=private_postgres.url(),
        events_url=bus.url(),
        bus_poll_s=0.05,
        feed_flush="thread",
        ready_timeout_s=3,
    )
    hub = Hub.open(settings)
    hub.store.identity.upsert_agency("gy_hbj", "生态环境局")
    hub.sources.sources.add_profile(
        "gy_hbj",
        "broker",
        "mqtt",
        protected=hub.sources.protected,
        settings={
            "host": "127.0.0.1",
            "port": broker.port,
            "topic_prefix": f"blockhub-test/{uuid.uuid4().hex[:8]}",
        },
    )
    hub.store.register_dataset(
        parse_manifest(
            manifest_dict(
                id="aq_live",
                agency="gy_hbj",
                columns=[{"name": "seq", "type": "int64"}],
                primary_key=[],
                block_keys=[],
                source={
                    "connector": "mqtt",
                    "profile": "broker",
                    "options": {"topics": ["#"], "qos": 1, "flush_seconds": 3600},
                },
            )
        )
    )
    port = free_port()
    base = f"127.0.0.1:{port}"
    try:
        with serving(hub, port):
            deadline = time.monotonic() + 30
            while (got := _ready(base))[0] != 200:  # the feed connects to its broker
                assert time.monotonic() < deadline, got
                time.sleep(0.1)
            assert got[1] == {
                "ok": True,
                "checks": {"catalog": "ok", "lake": "ok", "event_log": "ok", "mqtt": "ok"},
            }
            r = httpx.get(f"http://{base}/readyz")
            assert r.headers["x-request-id"]  # no token needed

            broker.stop()
            body = _wait_failed(base, ["mqtt"])
            assert body["status"] == 503 and body["code"] == "not_ready"
            assert "127.0.0.1" not in str(body)  # names the dependency, never its address
            # The proxy's probe: the API is still served while a feed's broker is away.
            r = httpx.get(f"http://{base}/readyz", params={"ignore": "mqtt"}, timeout=20)
            assert r.status_code == 200 and r.json()["checks"]["mqtt"] == "failed"
            r = httpx.get(f"http://{base}/readyz", params={"ignore": "nope"}, timeout=20)
            assert r.status_code == 422 and r.json()["ok"] is False

            bus.stop(kill=True)
            _wait_failed(base, ["event_log", "mqtt"])

            lake = tmp_path / "home" / "lake"
            shutil.move(lake, tmp_path / "lake-away")
            _wait_failed(base, ["lake", "event_log", "mqtt"])
            shutil.move(tmp_path / "lake-away", lake)

            private_postgres.stop("immediate")
            body = _wait_failed(base, ["catalog", "event_log", "mqtt"])
            assert body["detail"]["checks"]["lake"] == "ok"
            assert httpx.get(f"http://{base}/healthz").status_code == 200  # alive all along
    finally:
        hub.close()
        broker.stop()
        bus.stop(kill=True)


def test_readyz_skips_mqtt_without_mqtt_feeds(live: str) -> None:
    status, body = _ready(live)
    assert status == 200
    assert body["checks"] == {"catalog": "ok", "lake": "ok", "event_log": "ok", "mqtt": "skipped"}
