"""Engines that are not blockhub read the lake through its Iceberg catalog (docs/operations.md,
"Other engines"; decision D51).

Each engine runs as its own process, importing nothing of blockhub: the examples in
``docs/examples/engines`` find the catalog through ``blockhub lake catalog``'s
``.pyiceberg.yaml``.  What they read is compared with the hub's own answer (the exchange, as
the owning agency's steward reads it: raw) for the same version: the current one, whose last
run's quality gate left failing rows out with position-delete files (deletes honoured), and
version 1 by its snapshot id (time travel).  The lake catalog is on the machine's PostgreSQL
(a fresh database), as in production; without ``--snapshot`` each example reads the current
version (the documented commands, run here and by tests/test_doc_commands.py on the
README's embedded hub).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from catalog.datasets.manifest import parse_manifest
from catalog.identity.store import Principal
from catalog.lake.readers import LakeCatalog
from hub.assembly.context import Hub
from hub.demo.sampleworld import hotline_tickets
from hub.settings import Settings
from tests.conftest import SetClock, _agencies, file_source, fresh_pg_database
from tests.quality_data import END, START, bad_tickets
from tests.test_doc_commands import Command, extract

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples" / "engines"
DEMO = ROOT / "hub" / "demo" / "world" / "hotline_tickets.yaml"
DATASET = "hotline_tickets"
STEWARD = Principal("wangmin", "gy_12345", "王敏", "steward")
READ = re.compile(r"read blockhub\.(\w+) at snapshot (\d+): (\d+) rows")
ENGINE_TIMEOUT_S = 240
DAFT_PYTHON = ROOT / ".venv-daft" / "bin" / "python"  # `make daft`; `make test` builds it


@dataclass
class LakeWorld:
    """A hub home whose ``hotline_tickets`` has two versions, the second with deletes."""

    hub: Hub
    settings: Settings
    env: dict[str, str]  # BLOCKHUB_* of this hub, for a reader's `blockhub lake catalog`
    quarantined: set[int]

    def snapshot(self, version: int) -> int:
        return self.hub.store.get_version(DATASET, version).snapshot_id

    def answer(self, version: int) -> list[dict[str, Any]]:
        """The hub's answer for the version: the exchange, as the owner's steward reads it."""
        result = self.hub.exchange.query(
            f"SELECT * FROM {DATASET}", STEWARD, versions={DATASET: version}
        )
        return _rows(result.to_table())


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: (r["ticket_id"], repr(r)))


def _build(home: Path, lake_catalog_url: str | None) -> LakeWorld:
    settings = Settings(home=home, bus_poll_s=0.05, lake_catalog_url=lake_catalog_url)
    hub = _agencies(Hub.open(settings, clock=SetClock()))
    src = home.parent / "src"
    src.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    data["source"] = {**file_source(hub, src, "*.parquet"), "cursor": "ticket_id"}
    data["quality"] = {"policy": "drop-rows"}
    hub.store.register_dataset(parse_manifest(data, file="hotline.yaml"))
    # Version 1: clean rows, one data file.  Version 2: rows the gate partly quarantines,
    # left out by a position-delete file beside their data file.
    pq.write_table(hotline_tickets(400, seed=5, start=START, end=END), src / "a.parquet")
    assert hub.ingest(DATASET).status == "succeeded"
    bad, expected = bad_tickets(600, first_id=10_000)
    pq.write_table(bad, src / "b.parquet")
    run = hub.ingest(DATASET)
    assert run.status == "succeeded", run.error
    assert run.version == 2
    files = hub.lake.table(DATASET).inspect.files().to_pylist()
    assert sorted(f["content"] for f in files) == [0, 0, 1], "no position-delete file"
    env = {"BLOCKHUB_HOME": str(home)}
    if lake_catalog_url:
        env["BLOCKHUB_LAKE_CATALOG_URL"] = lake_catalog_url
    return LakeWorld(hub, settings, env, set(expected))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LakeWorld]:
    """The lake world with its Iceberg catalog on the machine's PostgreSQL (a fresh
    database), as in production (the embedded SQLite catalog: tests/test_doc_commands.py
    runs the documented engine commands against the README's hub)."""
    home = tmp_path_factory.mktemp("engines") / "home"
    with fresh_pg_database() as url:
        w = _build(home, url)
        try:
            yield w
        finally:
            w.hub.close()


@pytest.fixture
def reader(world: LakeWorld, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of an outside reader's shell: a private HOME (DuckDB's extension
    folder, no ~/.pyiceberg.yaml), the virtual environment on PATH, and the catalog file
    `blockhub lake catalog` wrote in its working folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLOCKHUB_", "PYICEBERG"))}
    env.update(
        world.env,
        HOME=str(tmp_path),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYICEBERG_HOME=str(tmp_path),
        RAY_USAGE_STATS_ENABLED="0",
    )
    done = subprocess.run(
        ["blockhub", "lake", "catalog"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    (tmp_path / ".pyiceberg.yaml").write_text(done.stdout, encoding="utf-8")
    yield env


def _engine(
    name: str, env: dict[str, str], cwd: Path, *args: str, python: str = sys.executable
) -> tuple[dict[int, list[dict[str, Any]]], str]:
    """Run one example as its own process: the rows it read per snapshot, what it printed."""
    out = cwd / f"{name}-out"
    out.mkdir(exist_ok=True)
    argv = [python, str(EXAMPLES / f"{name}_read.py"), DATASET, "--out", str(out), *args]
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        said, _ = proc.communicate(timeout=ENGINE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the reader and whatever it started (Ray's processes)
        proc.communicate(timeout=30)
        pytest.fail(f"{name} did not finish in {ENGINE_TIMEOUT_S} s")
    assert proc.returncode == 0, said[-3000:]
    read: dict[int, list[dict[str, Any]]] = {}
    for dataset, snapshot, count in READ.findall(said):
        assert dataset == DATASET
        read[int(snapshot)] = _rows(pq.read_table(out / f"{snapshot}.parquet"))
        assert int(count) == len(read[int(snapshot)])
    assert read, said[-2000:]
    return read, said


@pytest.mark.parametrize("engine", ["polars", "duckdb"])
def test_an_engine_reads_the_hubs_rows_deletes_and_time_travel(
    engine: str, world: LakeWorld, reader: dict[str, str], tmp_path: Path
) -> None:
    extra = ["--extension-directory", str(tmp_path / "ext")] if engine == "duckdb" else []
    now, then = world.snapshot(2), world.snapshot(1)
    read, _ = _engine(engine, reader, tmp_path, "--snapshot", str(now), "--snapshot", str(then),
                      *extra)  # fmt: skip
    assert list(read) == [now, then]
    assert read[now] == world.answer(2)
    assert world.quarantined and not world.quarantined & {r["ticket_id"] for r in read[now]}
    assert read[then] == world.answer(1)
    assert len(read[then]) == 400 < len(read[now])


@pytest.mark.engines
def test_ray_data_on_a_local_cluster_reads_what_the_hub_answers(
    world: LakeWorld, reader: dict[str, str], tmp_path: Path
) -> None:
    """Ray Data's worker processes read the current version (deletes honoured) and version
    1 by its snapshot id, in one run of a local cluster: the hub's rows for each, read by
    processes other than the driver."""
    now, then = world.snapshot(2), world.snapshot(1)
    read, said = _engine(
        "ray", reader, tmp_path, "--snapshot", str(now), "--snapshot", str(then), "--cpus", "2"
    )
    assert list(read) == [now, then]
    assert read[now] == world.answer(2)
    assert not world.quarantined & {r["ticket_id"] for r in read[now]}
    assert read[then] == world.answer(1)
    workers = [int(n) for n in re.findall(r"read by (\d+) Ray worker process", said)]
    assert len(workers) == 2 and min(workers) >= 1, said[-2000:]


@pytest.mark.engines
def test_daft_on_a_local_ray_cluster_reads_what_the_hub_answers(
    world: LakeWorld, reader: dict[str, str], tmp_path: Path
) -> None:
    """Daft, from its own environment (another pyarrow than the hub's), on a local Ray
    cluster: the current version with its deletes and version 1, as the hub answers them."""
    assert DAFT_PYTHON.exists(), "Daft's environment is missing: run `make daft`"
    now, then = world.snapshot(2), world.snapshot(1)
    read, said = _engine(
        "daft", reader, tmp_path, "--snapshot", str(now), "--snapshot", str(then),
        python=str(DAFT_PYTHON),
    )  # fmt: skip
    assert list(read) == [now, then], said[-2000:]
    assert read[now] == world.answer(2)
    assert not world.quarantined & {r["ticket_id"] for r in read[now]}
    assert read[then] == world.answer(1)


def test_the_documented_commands_run_as_printed(
    world: LakeWorld, reader: dict[str, str], tmp_path: Path
) -> None:
    """docs/operations.md "Other engines": its commands, run in order in a reader's folder
    (the repository's files linked in, as in a checkout), against this hub; afterwards
    DuckDB loads iceberg by name from the folder the example installed it in.  The Ray and
    Daft commands are the two tests above (each starts a cluster: ~30 s);
    tests/test_doc_commands.py runs them as printed too."""
    commands = _section_commands()
    assert any("duckdb_read.py" in c.text for c in commands)
    for name in ("docs", "Makefile", ".venv-daft"):
        (tmp_path / name).symlink_to(ROOT / name)
    exports: list[str] = []
    env = {**reader, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{reader['PATH']}"}
    env.pop("PYICEBERG_HOME")  # the documents' own `export` sets it
    for cmd in commands:
        if re.search(r"(ray|daft)_read\.py", cmd.text):
            continue
        script = "set -e\n" + "".join(f"{e}\n" for e in exports) + cmd.text
        done = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=ENGINE_TIMEOUT_S,
        )  # fmt: skip
        said = done.stdout + done.stderr
        assert done.returncode == 0 and "Traceback" not in said, f"{cmd.where}: {said[-2000:]}"
        if cmd.text.startswith("export "):
            exports.append(cmd.text)
        if "_read.py" in cmd.text:
            found = READ.search(said)
            assert found and int(found.group(2)) == world.snapshot(2), said[-2000:]
            assert int(found.group(3)) == len(world.answer(2))
    con = duckdb.connect(
        config={
            "extension_directory": str(tmp_path / ".duckdb-ext"),
            "autoinstall_known_extensions": "false",
            "autoload_known_extensions": "false",
        }
    )
    try:
        con.execute("LOAD iceberg")
        loaded = con.execute(
            "SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'iceberg'"
        ).fetchone()
        assert loaded == (True,)
    finally:
        con.close()


def _section_commands() -> list[Command]:
    """The shell commands of docs/operations.md's "Other engines" section."""
    doc = ROOT / "docs" / "operations.md"
    text = doc.read_text(encoding="utf-8").splitlines()
    start = text.index("## Other engines") + 1
    end = next(i for i in range(start, len(text)) if text[i].startswith("## "))
    return [c for b in extract(doc) for c in b.commands if start < c.line <= end]


# -- the configuration printed for Spark and Trino (no engine of theirs runs here) ----------


def _doc_block(after: str) -> list[str]:
    """The lines of the first unlabelled fence after the line containing ``after``."""
    lines = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8").splitlines()
    i = next(n for n, line in enumerate(lines) if after in line)
    start = next(n for n in range(i, len(lines)) if lines[n] == "```") + 1
    end = next(n for n in range(start, len(lines)) if lines[n] == "```")
    return lines[start:end]


DOC_CATALOG = LakeCatalog(
    uri="postgresql+psycopg://lake_reader:s3cret-pw@db:5432/lake",
    warehouse="s3://blockhub-lake/warehouse",
)


@pytest.mark.parametrize(
    ("engine", "after"),
    [("spark", "--engine spark` prints"), ("trino", "and `--engine trino`")],
)
def test_spark_and_trino_configuration_is_the_documented_one_without_secrets(
    engine: str, after: str
) -> None:
    text = DOC_CATALOG.spark_conf() if engine == "spark" else DOC_CATALOG.trino_properties()
    printed = [line for line in text.splitlines() if not line.startswith("#")]
    assert printed == _doc_block(after)
    assert "s3cret-pw" not in text and "password" in text  # named, never shown


def test_the_printed_catalog_names_what_the_hub_uses_and_hides_the_password(
    tmp_path: Path,
) -> None:
    url = "postgresql+psycopg://lake_reader:s3cret-pw@db:5432/lake"
    settings = Settings(home=tmp_path, lake_catalog_url=url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKHUB_")}
    env.update(BLOCKHUB_HOME=str(tmp_path), BLOCKHUB_LAKE_CATALOG_URL=url)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "blockhub"), "lake", "catalog"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "s3cret-pw" not in done.stdout + done.stderr
    config = yaml.safe_load(done.stdout)["catalog"]["blockhub"]
    assert config == {
        "type": "sql",
        "uri": "postgresql+psycopg://lake_reader@db:5432/lake",
        "warehouse": settings.lake_warehouse,
    }
    assert "PYICEBERG_CATALOG__BLOCKHUB__URI" in done.stdout
    # Nothing was created: the command only reads settings.
    assert not any(tmp_path.iterdir())
    # The embedded SQLite catalog is no JDBC catalog: Spark's configuration is refused,
    # naming the setting, no traceback.
    env.pop("BLOCKHUB_LAKE_CATALOG_URL")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "blockhub"), "lake", "catalog", "--engine", "spark"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "BLOCKHUB_LAKE_CATALOG_URL" in done.stderr and "Traceback" not in done.stderr
