"""Shared fixtures: a hub on tmp_path, the machine's real PostgreSQL, a live uvicorn."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from catalog.datasets.manifest import Manifest, parse_manifest
from hub.api.server import free_port, serving
from hub.assembly.context import Hub
from hub.settings import Settings

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"

CLOCK_START = datetime(2026, 3, 4, 2, 0, tzinfo=UTC)
"""Where the tests' clock starts: Wednesday 4 March 2026, 10:00 in Beijing — an ordinary
working week of a year the holiday calendar covers, whatever day the suite runs on."""


class SetClock:
    """A clock the test sets (``set``/``advance``) that runs on with real time in between,
    so a date, a weekday or a deadline a test checks never depends on when or where the
    suite runs, while timeouts and short sleeps still behave."""

    def __init__(self, start: datetime = CLOCK_START) -> None:
        self.set(start)

    def now(self) -> datetime:
        return self._base + timedelta(seconds=time.monotonic() - self._t0)

    def set(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("SetClock needs an aware instant")
        self._base, self._t0 = at.astimezone(UTC), time.monotonic()

    def advance(self, delta: timedelta) -> None:
        self.set(self.now() + delta)


@pytest.fixture
def clock() -> SetClock:
    return SetClock()


TEST_CATALOG = os.environ.get("BLOCKHUB_TEST_CATALOG", "sqlite")
"""Where the test hubs keep their catalog, lake catalog and event log: ``sqlite`` (the
embedded default, files under the hub's home) or ``pg`` (`make test-pg`: a fresh database
of the machine's PostgreSQL per hub, dropped at the end of the session)."""
if TEST_CATALOG not in ("sqlite", "pg"):
    raise pytest.UsageError(f"BLOCKHUB_TEST_CATALOG={TEST_CATALOG!r}: sqlite or pg")
_PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
_test_databases: list[str] = []


_template: list[str] = []


def _new_pg_database() -> str:
    """A fresh database already at the current schema: a copy of a template the session
    migrated once (`CREATE DATABASE … TEMPLATE`, ~1.2 s less per hub than making the
    tables each time; the hub still checks and opens it as any other)."""
    if not _template:
        from catalog.db import make_engine
        from pipelines.schema import upgrade

        name = f"t_tpl_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(_PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        _test_databases.append(name)
        engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
        try:
            upgrade(engine, "catalog")
            upgrade(engine, "events")
        finally:
            engine.dispose()
        _template.append(name)
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {_template[0]}")
    _test_databases.append(name)
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


@pytest.fixture(scope="session", autouse=True)
def _drop_test_databases() -> Iterator[None]:
    yield
    if _test_databases:
        with psycopg.connect(_PG_ADMIN, autocommit=True) as conn:
            for name in _test_databases:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def hub_settings(home: Path, **overrides: Any) -> Settings:
    """Settings of a test hub on ``home``: its state embedded there, or — under
    ``BLOCKHUB_TEST_CATALOG=pg`` — catalog, Iceberg catalog and event log in one fresh
    PostgreSQL database (development mode: tests of production mode set it themselves)."""
    if TEST_CATALOG == "pg":
        url = _new_pg_database()
        overrides = {
            "catalog_url": url,
            "lake_catalog_url": url,
            "events_url": url,
            "env": "development",
            **overrides,
        }
    return Settings(home=home, bus_poll_s=0.05, **overrides)


def blockhub_cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    """``blockhub ARGS`` as an operator runs it: a new process, only the ``BLOCKHUB_*``
    variables given in ``env`` (none inherited from the test's environment)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKHUB_")}
    return subprocess.run(
        [sys.executable, "-c", "from hub.cli.main import main; main()", *args],
        cwd=Path(__file__).resolve().parents[1],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class CatalogSQL:
    """Raw SQL on a hub's catalog database, as someone with write access to it has it
    (behind the hub's back): ``?`` placeholders on SQLite and PostgreSQL alike, the
    ``execute``/``commit``/``close`` of a sqlite3 connection."""

    def __init__(self, engine: Any) -> None:
        self._conn = engine.raw_connection()
        self._pg = engine.dialect.name == "postgresql"

    def execute(self, sql: str, params: Any = ()) -> Any:
        cur = self._conn.cursor()
        cur.execute(sql.replace("?", "%s") if self._pg else sql, params)
        return cur

    def commit(self) -> None:
        self._conn.commit()

    def close(self) -> None:
        self._conn.close()


def settings_env(s: Settings) -> dict[str, str]:
    """The ``BLOCKHUB_*`` variables that make a command open the stack ``s`` names (its
    home, and its databases and warehouse when they are not the embedded defaults)."""
    env = {"BLOCKHUB_HOME": str(s.home)}
    for name in ("catalog_url", "lake_catalog_url", "events_url", "warehouse", "env"):
        value = getattr(s, name)
        if value is not None:
            env[f"BLOCKHUB_{name.upper()}"] = str(value)
    return env


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return hub_settings(tmp_path / "home")


def _agencies(h: Hub) -> Hub:
    """The sample agencies, and the hotline's database profile that
    :func:`manifest_dict`'s default source names."""
    h.store.identity.upsert_agency("gy_12345", "贵阳市12345政务服务便民热线")
    h.store.identity.upsert_agency("gy_dsj", "贵阳市大数据发展管理局")
    h.store.identity.upsert_agency("gy_hbj", "贵阳市生态环境局")
    pg_profile(h, "gy_12345", name="hotline_db")
    return h


@pytest.fixture
def hub(settings: Settings, clock: SetClock) -> Iterator[Hub]:
    h = _agencies(Hub.open(settings, clock=clock))
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
        hub.store.identity.create_principal(pid, agency, pid, role)
        out[pid] = hub.store.identity.issue_token(pid, ttl=timedelta(hours=1))
    return out


@pytest.fixture
def live(hub: Hub) -> Iterator[str]:
    """Base URL of a real uvicorn serving the hub on a free port."""
    port = free_port()
    with serving(hub, port):
        yield f"127.0.0.1:{port}"


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new database in the machine's PostgreSQL for the test; yields its SQLAlchemy URL
    (e.g. a hub's ``catalog_url``) and drops it afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


PG_PASSWORD_ROLE = "blockhub_pwcheck"
"""A role the machine's PostgreSQL makes log in with a password (every other role on
127.0.0.1 stays trust), so that a wrong password is really refused."""


def _hba_lines(role: str) -> list[str]:
    return [f"host all {role} {net} scram-sha-256" for net in ("127.0.0.1/32", "::1/128")]


def _password_refused(role: str) -> bool:
    try:
        psycopg.connect(
            f"host=127.0.0.1 port=5432 dbname=test user={role} password=not-the-password",
            connect_timeout=5,
        ).close()
    except psycopg.OperationalError as e:
        return "password authentication failed" in str(e)
    return False


@pytest.fixture(scope="session")
def pg_password_role() -> str:
    """``PG_PASSWORD_ROLE`` must give its password: the project's own setup (not a CI
    script), so the gather tests pass on a fresh machine.  Puts two ``host`` lines for that
    one role ahead of the first ``host`` line of the server's ``pg_hba.conf`` (found with
    ``SHOW hba_file``) if they are not there yet, then reloads the configuration —
    ``pg_reload_conf()``, never a restart; other roles' rules are left as they are.
    Idempotent; skipped, saying why, where the file cannot be written."""
    role = PG_PASSWORD_ROLE
    if _password_refused(role):
        return role
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        row = conn.execute("SHOW hba_file").fetchone()
        assert row is not None
        hba = Path(row[0])
        try:
            lines = hba.read_text(encoding="utf-8").splitlines()
            ours = _hba_lines(role)
            kept = [line for line in lines if " ".join(line.split()) not in ours]
            first_host = next(
                (i for i, line in enumerate(kept) if line.split()[:1] in (["host"], ["hostssl"],
                 ["hostnossl"], ["hostgssenc"], ["hostnogssenc"])),
                len(kept),
            )  # fmt: skip
            new = [*kept[:first_host], *ours, *kept[first_host:]]
            tmp = hba.with_name(hba.name + ".blockhub-tmp")
            tmp.write_text("\n".join(new) + "\n", encoding="utf-8")
            stat = hba.stat()
            os.chown(tmp, stat.st_uid, stat.st_gid)
            os.chmod(tmp, stat.st_mode)
            os.replace(tmp, hba)
        except PermissionError as e:
            pytest.skip(f"cannot add the password rule for {role} to {hba} ({e}): run as root")
        conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 15
    while not _password_refused(role):
        if time.monotonic() > deadline:
            pytest.fail(f"{hba}: the password rule for {role} did not take effect on reload")
        time.sleep(0.2)
    return role


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
        "source": {
            "connector": "postgres",
            "profile": "hotline_db",
            "options": {"table": "tickets"},
            "cursor": "updated_at",
        },
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


def ticket_rows(first: int, n: int) -> pa.Table:
    """``n`` small tickets with ids from ``first``, shaped like :func:`manifest_dict`."""
    ids = range(first, first + n)
    return pa.table(
        {
            "ticket_id": pa.array(ids, pa.int64()),
            "district_code": [("520102", "520103")[i % 2] for i in ids],
            "category": ["噪音扰民"] * n,
            "caller_phone": ["13812345678"] * n,
            "amount": pa.array([None] * n, pa.decimal128(12, 2)),
            "updated_at": pa.array(
                [1_700_000_000_000_000 + i for i in ids], pa.timestamp("us", tz="UTC")
            ),
        }
    )


@pytest.fixture
def tickets_file(tmp_path: Path) -> Path:
    """A Parquet export of 50 tickets (a source that needs no server)."""
    path = tmp_path / "exports" / "tickets-1.parquet"
    path.parent.mkdir()
    pq.write_table(ticket_rows(1, 50), path)
    return path


def file_root(hub: Hub, agency: str, folder: Path) -> str:
    """The name of a file root of ``agency`` at ``folder`` (added when missing), the way
    an admin gives an agency its export folder (`blockhub source root add`)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = "r_" + hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:10]
    if hub.sources.sources.get_root(agency, name) is None:
        hub.sources.sources.add_root(agency, name, str(folder), protected=hub.sources.protected)
    return name


def file_source(
    hub: Hub,
    folder: Path,
    pattern: str,
    *,
    agency: str = "gy_12345",
    connector: str = "parquet",
    **options: Any,
) -> dict[str, Any]:
    """``source`` of a manifest reading ``pattern`` under ``folder`` (a root of ``agency``)."""
    root = file_root(hub, agency, folder)
    return {"connector": connector, "root": root, "options": {"path": pattern, **options}}


def pg_profile(
    hub: Hub, agency: str = "gy_12345", database: str = "test", *, name: str | None = None
) -> str:
    """A connection profile of ``agency`` to the machine's PostgreSQL (trust auth)."""
    name = name or f"pg_{database}"
    if hub.sources.sources.get_profile(agency, name) is None:
        hub.sources.sources.add_profile(
            agency,
            name,
            "postgres",
            protected=hub.sources.protected,
            settings={"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": database},
        )
    return name


def mysql_profile(
    hub: Hub, agency: str, database: str, *, name: str = "air_db", user: str = "root",
    password: str | None = None,
) -> str:  # fmt: skip
    """A connection profile of ``agency`` to a database of the machine's MariaDB."""
    hub.sources.sources.add_profile(
        agency,
        name,
        "mysql",
        protected=hub.sources.protected,
        settings={"host": MYSQL_HOST, "port": 3306, "user": user, "database": database},
        secrets={"password": password} if password else {},
    )
    return name


def publish_file(hub: Hub, path: Path, ident: str, **overrides: Any) -> Manifest:
    """Register a dataset over the Parquet files next to ``path`` and ingest it once."""
    agency = overrides.get("agency", "gy_12345")
    source = file_source(hub, path.parent, "*.parquet", agency=agency)
    m = parse_manifest(
        manifest_dict(id=ident, source={**source, "cursor": "updated_at"}, **overrides)
    )
    hub.register(m, file=f"<{ident}>")
    run = hub.ingest(ident)
    assert run.status == "succeeded", run.error
    return m


# -- the exchange world: datasets of every sharing type, a grant, one principal per role --

EXCHANGE_DATASETS = {
    "t_open": ({"type": "unconditional"}, "general"),
    "t_cond": ({"type": "conditional", "conditions": "state the purpose"}, "important"),
    "t_none": ({"type": "none", "legal_basis": "《个人信息保护法》第十三条"}, "general"),
    "t_core": ({"type": "unconditional"}, "core"),
}
GRANT_DISTRICTS = ["520102", "520103"]


@dataclass
class ExchangeWorld:
    hub: Hub
    tokens: dict[str, str]
    table: Any  # pa.Table of the rows every dataset holds
    grant_id: str

    def raw(self, column: str) -> set[str]:
        return {v for v in self.table.column(column).to_pylist() if v}

    def auth(self, who: str) -> dict[str, str]:
        """The Authorization header of one of the world's principals."""
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def build_exchange_world(hub: Hub, tokens: dict[str, str], folder: Path) -> ExchangeWorld:
    """Four datasets over 300 sample-world hotline tickets (PII: name, phone, ID, address),
    owned by gy_12345; gy_hbj (``developer``) holds a grant on ``t_cond`` for five columns,
    two districts, ``caller_name`` unmasked; ``stranger`` is a developer of an agency with
    no grants."""
    import pyarrow.parquet as pq

    from hub.demo.sampleworld import hotline_tickets

    table = hotline_tickets(
        300, start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2026, 2, 1, tzinfo=UTC)
    )
    exports = folder / "exports"
    exports.mkdir(exist_ok=True)
    pq.write_table(table, exports / "world.parquet")
    source = file_source(hub, exports, "world.parquet")
    yaml_doc = yaml.safe_load(
        (Path(__file__).parent.parent / "hub/demo/world/hotline_tickets.yaml").read_text("utf-8")
    )
    for ident, (sharing, classification) in EXCHANGE_DATASETS.items():
        m = parse_manifest(
            {
                **yaml_doc,
                "id": ident,
                "sharing": sharing,
                "classification": classification,
                "source": {**source, "cursor": "updated_at"},
            }
        )
        hub.register(m, file=f"<{ident}>")
        assert hub.ingest(ident).status == "succeeded"
    hub.store.identity.upsert_agency("gy_jyj", "贵阳市教育局")
    hub.store.identity.create_principal("stranger", "gy_jyj", "stranger", "developer")
    tokens = {
        **tokens,
        "stranger": hub.store.identity.issue_token("stranger", ttl=timedelta(hours=1)),
    }
    record = hub.store.get_dataset("t_cond")
    g = hub.grants.request(
        record,
        agency_id="gy_hbj",
        requested_by="developer",
        purpose="噪音投诉与空气质量关联分析",
        columns=["ticket_id", "district_code", "status", "caller_name", "caller_phone"],
        row_filter={"district_code": GRANT_DISTRICTS},
        unmask=["caller_name"],
    )
    hub.grants.approve(g.id, by="steward", dataset=record)
    return ExchangeWorld(hub, tokens, table, g.id)


def _world_hub(home: Path) -> Hub:
    return _agencies(Hub.open(hub_settings(home), clock=SetClock()))


@pytest.fixture(scope="module")
def exchange_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExchangeWorld]:
    """The exchange world, shared by a module's tests (they must not change it)."""
    folder = tmp_path_factory.mktemp("exchange")
    h = _world_hub(folder / "home")
    people = [("admin", "gy_dsj", "admin"), ("steward", "gy_12345", "steward"),
              ("operator", "gy_dsj", "operator"), ("developer", "gy_hbj", "developer")]  # fmt: skip
    toks = {}
    for pid, agency, role in people:
        h.store.identity.create_principal(pid, agency, pid, role)
        toks[pid] = h.store.identity.issue_token(pid, ttl=timedelta(hours=1))
    try:
        yield build_exchange_world(h, toks, folder)
    finally:
        h.close()


@pytest.fixture
def fresh_exchange_world(hub: Hub, tokens: dict[str, str], tmp_path: Path) -> ExchangeWorld:
    """The exchange world for one test, which may change it."""
    return build_exchange_world(hub, tokens, tmp_path)


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


S3_KEY_ID = "blockhub-test-key"


@dataclass(frozen=True)
class S3Bucket:
    """A fresh bucket on moto's server and settings that put a hub's lake in it.  The
    secret is unique per bucket, so a test can look for it in logs and messages."""

    endpoint: str
    bucket: str
    secret: str

    @property
    def warehouse(self) -> str:
        return f"s3://{self.bucket}/lake"

    def settings(self, home: Path, **overrides: Any) -> Settings:
        return Settings(
            home=home,
            bus_poll_s=0.05,
            warehouse=self.warehouse,
            s3_endpoint=self.endpoint,
            s3_access_key_id=S3_KEY_ID,
            s3_secret_access_key=self.secret,
            **overrides,
        )

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=self.secret,
        )

    def objects(self, prefix: str = "") -> list[str]:
        """Every object key of the bucket under ``prefix`` (less pyarrow's empty folder
        markers, ``…/``, which it may leave after a delete)."""
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        keys = (o["Key"] for page in pages for o in page.get("Contents", []))
        return sorted(k for k in keys if not k.endswith("/"))


def make_s3_bucket(endpoint: str) -> S3Bucket:
    bucket = S3Bucket(endpoint, f"lake-{uuid.uuid4().hex[:12]}", f"sk-{uuid.uuid4().hex}")
    bucket.client().create_bucket(Bucket=bucket.bucket)
    return bucket


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> S3Bucket:
    """A fresh bucket on moto's server (S3 settings: :meth:`S3Bucket.settings`)."""
    return make_s3_bucket(s3_endpoint)


@pytest.fixture
def make_feed(make_manifest: Callable[..., Manifest]) -> Callable[..., Manifest]:
    """A push feed manifest declaring ``columns`` (name → type) as its event fields."""

    def make(ident: str, columns: dict[str, str], **overrides: Any) -> Manifest:
        return make_manifest(
            id=ident,
            source={"connector": "push", "options": {}},
            columns=[{"name": n, "type": t} for n, t in columns.items()],
            primary_key=[],
            block_keys=[],
            **overrides,
        )

    return make


@pytest.fixture
def fresh_client(fresh_exchange_world: ExchangeWorld) -> Iterator[Any]:
    """A TestClient of an app over a fresh exchange world (tests may change it)."""
    from fastapi.testclient import TestClient

    from hub.api.app import create_app

    world = fresh_exchange_world
    with TestClient(create_app(world.hub.settings, hub=world.hub)) as c:
        yield c
