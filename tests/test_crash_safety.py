"""Kill a real `blockhub ingest` with SIGKILL at many different moments.

Against the machine's PostgreSQL, an append-by-cursor dataset grows by one batch of
rows per round; each round starts the CLI and kills it after a different delay
(spread from process start-up to past the commit), while this process keeps
reading the published table with DuckDB.  Every state read must be a complete
earlier version (keys exactly 1..N for an N the source had); after a final clean
run the table holds exactly the source's rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from catalog.datasets.manifest import Manifest
from catalog.lake.tables import Lake
from connectors.duck import connect
from pipelines.config import StorageSettings
from tests.conftest import PgSchema, manifest_dict

pytestmark = pytest.mark.postgres

INITIAL = 100_000
PER_ROUND = 50_000
ROUNDS = 12
BLOCKHUB = str(Path(sys.executable).parent / "blockhub")


def grow(pg: PgSchema, first: int, n: int) -> None:
    pg.execute(
        """
        INSERT INTO tickets
        SELECT g, (ARRAY['520102','520103','520111'])[1 + g %% 3], '噪音扰民',
               '138' || lpad(g::text, 8, '0'), g * 0.01,
               timestamptz '2024-06-01 00:00+00' + make_interval(secs => g / 1000)
        FROM generate_series(%s::bigint, %s::bigint) g
        """,
        (first, first + n - 1),
    )


def start(home: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BLOCKHUB_HOME": str(home)}
    return subprocess.Popen(
        [BLOCKHUB, "ingest", "tickets"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def register(home: Path, manifest_file: Path) -> None:
    env = {**os.environ, "BLOCKHUB_HOME": str(home)}
    subprocess.run([BLOCKHUB, "agency", "add", "gy_12345", "热线"], env=env, check=True)
    settings = [f"--set={kv}" for kv in ("host=127.0.0.1", "port=5432", "user=postgres")]
    subprocess.run(
        [BLOCKHUB, "source", "profile", "add", "gy_12345", "hotline_db", "postgres", *settings,
         "--set=database=test"],
        env=env,
        check=True,
    )  # fmt: skip
    subprocess.run([BLOCKHUB, "register", str(manifest_file)], env=env, check=True)


class Reader:
    """Reads the published table the way the exchange does: DuckDB over Iceberg metadata."""

    def __init__(self, home: Path) -> None:
        s = StorageSettings(home=home)
        (home / "lake").mkdir(parents=True, exist_ok=True)
        self.lake = Lake(s.lake_db, s.lake_warehouse)
        self.duck = connect("iceberg")

    def state(self) -> tuple[int, int, int, int] | None:
        """(rows, distinct keys, min key, max key) of the current version, or None."""
        if not self.lake.exists("tickets"):
            return None
        snap = self.lake.current("tickets")
        if snap is None:
            return None
        row = self.duck.execute(
            "SELECT count(*), count(DISTINCT ticket_id), coalesce(min(ticket_id), 0), "
            "coalesce(max(ticket_id), 0) FROM iceberg_scan(?, snapshot_from_id = ?)",
            [snap.metadata_location, snap.snapshot_id],
        ).fetchone()
        assert row is not None
        return (int(row[0]), int(row[1]), int(row[2]), int(row[3]))


def check(state: tuple[int, int, int, int] | None, valid: set[int]) -> int:
    """The state is a complete version: keys exactly 1..N for an N the source had."""
    if state is None:
        return 0
    n, distinct, low, high = state
    assert n == distinct, f"duplicates in a published state: {state}"
    if n == 0:
        return 0
    assert (low, high) == (1, n), f"a published state is not a prefix of the source: {state}"
    assert n in valid, f"a published state of {n} rows was never the source: {sorted(valid)}"
    return n


def test_sigkill_at_many_points_loses_nothing_and_duplicates_nothing(
    pg: PgSchema, tmp_path: Path, make_manifest: Callable[..., Manifest]
) -> None:
    pg.execute(
        "CREATE TABLE tickets (ticket_id bigint PRIMARY KEY, district_code text, category text, "
        "caller_phone text, amount numeric(12,2), updated_at timestamptz)"
    )
    pg.execute("CREATE INDEX ON tickets (updated_at)")
    data = manifest_dict(
        source={
            "connector": "postgres",
            "profile": "hotline_db",
            "options": {"table": f"{pg.schema}.tickets"},
            "cursor": "updated_at",
        }
    )
    manifest_file = tmp_path / "tickets.yaml"
    manifest_file.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    grow(pg, 1, INITIAL)
    total = INITIAL

    # Calibrate on a throwaway home: how long a whole incremental round takes here.
    probe = tmp_path / "probe"
    register(probe, manifest_file)
    subprocess.run(
        [BLOCKHUB, "ingest", "tickets"],
        env={**os.environ, "BLOCKHUB_HOME": str(probe)},
        check=True,
        capture_output=True,
    )
    grow(pg, total + 1, PER_ROUND)
    total += PER_ROUND
    t0 = time.monotonic()
    subprocess.run(
        [BLOCKHUB, "ingest", "tickets"],
        env={**os.environ, "BLOCKHUB_HOME": str(probe)},
        check=True,
        capture_output=True,
    )
    round_s = time.monotonic() - t0
    t0 = time.monotonic()
    subprocess.run(
        [BLOCKHUB, "runs"],
        env={**os.environ, "BLOCKHUB_HOME": str(probe)},
        check=True,
        capture_output=True,
    )
    startup_s = time.monotonic() - t0
    work_s = max(round_s - startup_s, 0.3)

    home = tmp_path / "home"
    register(home, manifest_file)
    reader = Reader(home)
    valid = {INITIAL, total}
    killed_before_commit = 0
    reads = 0
    for i in range(ROUNDS):
        grow(pg, total + 1, PER_ROUND)
        total += PER_ROUND
        valid.add(total)
        before = check(reader.state(), valid)
        # From late start-up, through the read and the staging, to past the commit.
        delay = startup_s * 0.7 + work_s * (1.3 * i / (ROUNDS - 1))
        proc = start(home)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and proc.poll() is None:
            check(reader.state(), valid)
            reads += 1
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        after = check(reader.state(), valid)
        if after == before:
            killed_before_commit += 1

    assert killed_before_commit >= 2, "no kill landed before a commit: delays too long"
    env = {**os.environ, "BLOCKHUB_HOME": str(home)}
    done = subprocess.run([BLOCKHUB, "ingest", "tickets"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    final = reader.state()
    assert final == (total, total, 1, total)
    # What killed runs had staged is unreferenced; removing it leaves the table whole.
    table = reader.lake.table("tickets")
    referenced = set(table.inspect.all_files().column("file_path").to_pylist())
    data = Path(table.location().removeprefix("file://")) / "data"
    reader.lake.remove_orphans("tickets", older_than_s=0)
    assert {str(p) for p in data.glob("*.parquet")} == referenced
    assert reader.state() == (total, total, 1, total)
    assert reads > ROUNDS
    # The catalog agrees with the lake: every interrupted run is closed, versions match.
    runs = subprocess.run(
        [BLOCKHUB, "runs", "tickets", "--limit", "50"], env=env, capture_output=True, text=True
    )
    assert runs.returncode == 0 and "running" not in runs.stdout
