"""Quality gate benchmark: blockhub's gate vs a hand-written one-scan DuckDB SQL floor.

    .venv/bin/python bench/quality.py                  # 5,000,000 rows, 3 rounds
    .venv/bin/python bench/quality.py --rows 200000 --rounds 1   # smoke size

Data: ``hub.demo.sampleworld.hotline_tickets`` (seed 20240601), with bad rows injected every
1,000 rows (a mistyped phone, ID number, district, category, latitude, a duplicated ticket
id, a missing district, an overlong name), staged in the lake exactly as ``extract``
stages it (zstd Parquet files of up to 4M rows in the Iceberg table's data folder).

Phases, each in a fresh process so that its peak RSS is its own, alternated per round:

- ``floor``: one hand-written aggregate query counting the violations of the 14 row
  checks of the hotline suite in a single scan (nothing else);
- ``gate``: blockhub's validation plus separating the failing rows into quarantine
  (``BatchValidator.validate`` + ``write_quarantine``): what the gate does for every
  policy;
- ``gate+publish``: the whole ``drop-rows`` path to a published version: the gate
  (``pipelines.quality.gate``: the above, plus the position-delete files that leave the
  failing rows out of the staged files, and the result recorded in the catalog) and the
  lake commit of the staged and delete files (``Lake.commit``).  Before D31 the gate
  wrote the passing rows again instead, and the commit was not timed.

Loading the suite (GX import and validation, ~3 s once per process) is not timed.
Prints each phase's median seconds, the ratio to the floor and peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEED = 20240601
SUITE = "hotline_tickets"

CATEGORIES = "'噪音扰民','道路破损','供水问题','环境污染','交通拥堵','物业纠纷','消费投诉','医疗卫生','教育咨询','社会保障','市容市貌','其他'"  # noqa: E501
STATUSES = "'受理中','已派单','处理中','已办结','已回访'"
W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_SUM = " + ".join(f"{w} * (ascii(s[{i + 1}]) - 48)" for i, w in enumerate(W))
FLOOR_SETUP = [
    "CREATE MACRO id_ok(s) AS (length(s) = 18 AND regexp_full_match(s[1:17], '[0-9]{17}') "
    "AND s[7:10] <> '0000' AND try_strptime(s[7:14], '%Y%m%d') IS NOT NULL "
    f"AND s[18] = '10X98765432'[(({ID_SUM}) % 11) + 1])",
]
FLOOR_CHECKS = [
    "ticket_id IS NULL",
    "created_at IS NULL",
    "district_code IS NULL",
    "NOT regexp_matches(district_code, '^5201[0-9]{2}$')",
    "district_code NOT IN (SELECT code FROM regions)",
    f"category NOT IN ({CATEGORIES})",
    f"status NOT IN ({STATUSES})",
    "NOT regexp_matches(caller_phone, '^1[3-9][0-9]{9}$')",
    "NOT regexp_full_match(caller_phone, '1[3-9][0-9]{9}')",
    "NOT coalesce(id_ok(caller_id_number), false)",
    "NOT (lat BETWEEN 26.18 AND 27.37)",
    "NOT (lon BETWEEN 106.12 AND 107.29)",
    "NOT (length(caller_name) BETWEEN 2 AND 4)",
]


def _manifest() -> object:
    import yaml

    from catalog.datasets.manifest import parse_manifest

    data = yaml.safe_load((ROOT / "hub" / "demo" / "world" / "hotline_tickets.yaml").read_text())
    data["quality"] = {"policy": "drop-rows"}
    return parse_manifest(data, file="hotline_tickets.yaml")


def _storage(home: Path) -> object:
    from pipelines.config import StorageSettings

    return StorageSettings(home=home).open_storage()


def generate(work: Path, rows: int) -> None:
    """Build the batch with injected bad rows and stage it in a lake under ``work``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from hub.demo.sampleworld import hotline_tickets

    manifest = _manifest()
    table = hotline_tickets(
        rows,
        seed=SEED,
        start=datetime(2024, 1, 1, tzinfo=UTC),
        end=datetime(2024, 7, 1, tzinfo=UTC),
    )
    pos = np.arange(rows) % 1000

    def put(name: str, at: int, value: object) -> None:
        nonlocal table
        col = table.column(name)
        mask = pa.array(pos == at)
        new = pc.if_else(mask, pa.scalar(value, col.type), col)
        table = table.set_column(table.schema.get_field_index(name), name, new)

    put("caller_phone", 7, "23812345678")
    put("caller_id_number", 107, "520102199001011231")
    put("district_code", 207, "520199")
    put("category", 307, "外星人")
    put("lat", 407, 40.0)
    put("district_code", 607, None)
    put("caller_name", 707, "欧阳司马长名")
    ids = table.column("ticket_id")
    dup = pc.if_else(pa.array(pos == 507), pc.subtract(ids, 1), ids)
    table = table.set_column(0, "ticket_id", dup)

    st = _storage(work / "home")
    st.store.identity.upsert_agency("gy_12345", "贵阳市12345热线")
    st.store.register_dataset(manifest)
    schema = manifest.arrow_schema
    st.lake.ensure_table(manifest.id, schema, identifier_fields=manifest.primary_key)
    files = st.lake.stage(manifest.id, "bench", table.to_batches(max_chunksize=100_000), schema)
    (work / "staged.json").write_text(json.dumps([[f.path, f.rows, f.bytes] for f in files]))
    st.close()


def _files(work: Path) -> list[list[object]]:
    return json.loads((work / "staged.json").read_text())


def phase(work: Path, name: str) -> dict[str, float]:
    import duckdb

    from catalog.domain.regions import region_codes_table
    from expectations.runner import BatchValidator
    from expectations.suite import load_suite

    staged = _files(work)
    paths = [str(p) for p, _, _ in staged]
    manifest = _manifest()
    suite = load_suite(SUITE) if name != "floor" else None
    out: dict[str, float] = {}
    if name == "floor":
        con = duckdb.connect()
        con.register("regions_arrow", region_codes_table().select(["code"]))
        con.execute("CREATE TABLE regions AS SELECT code FROM regions_arrow")
        for stmt in FLOOR_SETUP:
            con.execute(stmt)
        counts = ", ".join(f"count(*) FILTER (WHERE {c})" for c in FLOOR_CHECKS)
        sql = (
            f"SELECT count(*), {counts}, count(ticket_id) - count(DISTINCT ticket_id) "
            f"FROM read_parquet({json.dumps(paths)})"
        )
        started = time.perf_counter()
        result = con.execute(sql).fetchone()
        out["seconds"] = time.perf_counter() - started
        assert result is not None
        out["violations"] = float(sum(result[1:]))
    elif name == "gate":
        started = time.perf_counter()
        assert suite is not None
        with BatchValidator(
            paths, suite, pii=manifest.personal_columns, key_columns=manifest.primary_key
        ) as v:
            validation = v.validate()
            quarantined = v.write_quarantine(
                work / f"q-{uuid.uuid4().hex}.parquet", whole_batch=False
            )
        out["seconds"] = time.perf_counter() - started
        out["quarantined"] = quarantined
        out["failed_expectations"] = len(validation.failed)
    else:
        from catalog.lake.tables import StagedFile
        from pipelines.quality import gate
        from pipelines.staged import Staged

        st = _storage(work / "home")
        copies = []
        for p, rows, size in staged:  # each round publishes its own copy of the batch
            copy = str(p).replace(".parquet", f"-{uuid.uuid4().hex[:6]}.parquet")
            shutil.copyfile(str(p), copy)
            copies.append(StagedFile(copy, int(rows), int(size)))
        s = Staged(manifest.id, str(uuid.uuid4()), copies, sum(f.rows for f in copies), None, None)
        started = time.perf_counter()
        gated = gate(s, manifest, lake=st.lake, store=st.store, publisher=None)
        gated_at = time.perf_counter()
        snap = st.lake.commit(
            manifest.id, gated.files, mode="append", cursor=None, run_id=gated.run_id
        )
        out["seconds"] = time.perf_counter() - started
        out["commit_seconds"] = time.perf_counter() - gated_at
        assert gated.quality is not None
        out["quarantined"] = gated.quality.rows_quarantined
        out["published"] = snap.added_rows
        assert snap.added_rows + gated.quality.rows_quarantined == s.rows_read
        st.close()
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None, help="folder for data (default: a temp dir)")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate:
        generate(args.work, args.rows)
        return
    if args.phase:
        print(json.dumps(phase(args.work, args.phase)))
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="blockhub-bench-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    me = [sys.executable, str(Path(__file__).resolve())]
    t0 = time.perf_counter()
    subprocess.run([*me, "--generate", "--rows", str(args.rows), "--work", str(work)], check=True)
    print(f"generated and staged {args.rows:,} rows in {time.perf_counter() - t0:.1f} s ({work})")
    phases = ["floor", "gate", "gate+publish"]
    runs: dict[str, list[dict[str, float]]] = {p: [] for p in phases}
    for _ in range(args.rounds):
        for p in phases:
            res = subprocess.run(
                [*me, "--phase", p, "--work", str(work)], check=True, capture_output=True, text=True
            )
            runs[p].append(json.loads(res.stdout.strip().splitlines()[-1]))
    floor = statistics.median(r["seconds"] for r in runs["floor"])
    print(f"{'phase':<18} {'median s':>9} {'runs':>24} {'x floor':>8} {'peak MB':>8}")
    for p in phases:
        secs = [r["seconds"] for r in runs[p]]
        med = statistics.median(secs)
        peak = max(r["peak_mb"] for r in runs[p])
        print(
            f"{p:<18} {med:>9.2f} {' '.join(f'{s:.2f}' for s in secs):>24} "
            f"{med / floor:>8.2f} {peak:>8.0f}"
        )
    extra = {
        p: {k: v for k, v in runs[p][-1].items() if k not in ("seconds", "peak_mb")} for p in phases
    }
    print(json.dumps(extra))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
