"""Shared fixtures: a hub on tmp_path, the machine's real PostgreSQL, a live uvicorn."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from catalog.manifest import Manifest, parse_manifest
from hub.context import Hub
from hub.server import free_port, serving
from hub.settings import Settings

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", bus_poll_s=0.05)


@pytest.fixture
def hub(settings: Settings) -> Iterator[Hub]:
    h = Hub.open(settings)
    h.store.upsert_agency("gy_12345", "贵阳市12345政务服务便民热线")
    h.store.upsert_agency("gy_dsj", "贵阳市大数据发展管理局")
    h.store.upsert_agency("gy_hbj", "贵阳市生态环境局")
    yield h
    h.close()


@pytest.fixture
def tokens(hub: Hub) -> dict[str, str]:
    """One principal per role (plus an outside developer) and a token each."""
    people = [
        ("admin", "gy_dsj", "admin"),
        ("steward", "gy_12345", "steward"),
        ("operator", "gy_dsj", "operator"),
        ("developer", "gy_hbj", "developer"),
    ]
    out = {}
    for pid, agency, role in people:
        hub.store.create_principal(pid, agency, pid, role)
        out[pid] = hub.store.issue_token(pid, ttl=timedelta(hours=1))
    return out


@pytest.fixture
def live(hub: Hub) -> Iterator[str]:
    """Base URL of a real uvicorn serving the hub on a free port."""
    port = free_port()
    with serving(hub, port):
        yield f"127.0.0.1:{port}"


@dataclass
class PgSchema:
    """A fresh schema in the machine's PostgreSQL, with a connection whose search_path is it."""

    conn: psycopg.Connection[Any]
    schema: str

    def execute(self, sql: str, params: Any = None) -> Any:
        return self.conn.execute(sql, params)


@pytest.fixture
def pg() -> Iterator[PgSchema]:
    schema = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path TO {schema}")
        try:
            yield PgSchema(conn, schema)
        finally:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def manifest_dict(**overrides: Any) -> dict[str, Any]:
    """A valid manifest of a small ticket table, with overrides."""
    base: dict[str, Any] = {
        "id": "tickets",
        "title": "12345热线工单",
        "description": "tickets",
        "agency": "gy_12345",
        "steward": {"name": "王敏"},
        "sharing": {"type": "unconditional"},
        "classification": "general",
        "columns": [
            {"name": "ticket_id", "type": "int64"},
            {"name": "district_code", "type": "string"},
            {"name": "category", "type": "string"},
            {"name": "caller_phone", "type": "string", "pii": "phone"},
            {"name": "amount", "type": "decimal(12,2)"},
            {"name": "updated_at", "type": "timestamptz"},
        ],
        "primary_key": ["ticket_id"],
        "block_keys": [{"column": "district_code", "kind": "region"}],
        "source": {"connector": "postgres", "options": {}, "cursor": "updated_at"},
    }
    base.update(overrides)
    return base


@pytest.fixture
def make_manifest(tmp_path: Path) -> Callable[..., Manifest]:
    def make(**overrides: Any) -> Manifest:
        data = manifest_dict(**overrides)
        path = tmp_path / f"{data['id']}.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        return parse_manifest(data, file=str(path))

    return make


MYSQL_HOST = "127.0.0.1"


@dataclass
class MySQLDatabase:
    """A fresh database in the machine's MariaDB; ``dsn`` is in DuckDB's mysql form."""

    conn: Any
    name: str

    @property
    def dsn(self) -> str:
        return f"host={MYSQL_HOST} port=3306 user=root database={self.name}"

    def execute(self, sql: str, params: Any = None) -> Any:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()


@pytest.fixture
def mysql() -> Iterator[MySQLDatabase]:
    import pymysql

    name = f"t_{uuid.uuid4().hex[:10]}"
    conn = pymysql.connect(host=MYSQL_HOST, user="root", charset="utf8mb4", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        cur.execute(f"USE {name}")
    try:
        yield MySQLDatabase(conn, name)
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE {name}")
        conn.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free port of 127.0.0.1 (the one mock: no object store here)."""
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    server = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
