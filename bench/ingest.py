"""Gather benchmark: PostgreSQL → lake, against dlt and the server's own COPY floor.

Loads an N-row 12345 hotline table (hub.demo.sampleworld.hotline_tickets, via COPY) into
the machine's PostgreSQL, then measures in the same run, each in its own process
(so that peak RSS is that tool's alone):

- ``copy``: ``COPY (SELECT * FROM t) TO STDOUT (FORMAT binary)`` read and dropped —
  the floor no client can beat;
- ``blockhub``: a full ingest into a published Iceberg table (fresh BLOCKHUB_HOME);
- ``dlt-pyarrow`` / ``dlt-connectorx``: dlt's sql_database source into Parquet files
  (filesystem destination), when dlt is installed (``pip install -e '.[bench]'``);
- ``incremental``: 1% new rows appended at the source, then blockhub's incremental run;
  ``--increments`` times (3 by default), each with new rows of a later day, and the median
  run is the figure (one run of ~0.3 s moves by tens of milliseconds from run to run).

Prints rows/s, peak RSS and the ratios; ``--json`` writes them to a file.

    .venv/bin/python bench/ingest.py --rows 5000000
    .venv/bin/python bench/ingest.py --rows 20000000 --only blockhub   # memory check
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
SCHEMA = "bench_gather"
DDL = """
CREATE TABLE {t} (
    ticket_id bigint, created_at timestamptz, updated_at timestamptz, district_code text,
    category text, status text, caller_name text, caller_phone text, caller_id_number text,
    address text, content text, lat double precision, lon double precision
)"""
START = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
STEP = dt.timedelta(days=1)
CHUNK = 500_000


def table_name(rows: int) -> str:
    return f"{SCHEMA}.hotline_{rows}"


# -- loading the source ---------------------------------------------------------------


def load(t: str, rows: int, *, first_id: int = 1, create: bool = True, day0: int = 0) -> None:
    """Generate ``rows`` tickets from ``first_id`` and COPY them into the table; chunk k
    covers day ``day0 + k`` after START (an increment passes a later ``day0``)."""
    import psycopg
    import pyarrow.csv as pacsv

    from hub.demo.sampleworld import hotline_tickets

    with psycopg.connect(DSN, autocommit=True) as conn:
        if create:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            conn.execute(f"DROP TABLE IF EXISTS {t}")
            conn.execute(DDL.format(t=t))
        done = 0
        while done < rows:
            n = min(CHUNK, rows - done)
            ident = first_id + done
            # Each chunk continues the stream: its own day, ids after the last chunk's.
            start = START + STEP * (day0 + done // CHUNK)
            chunk = hotline_tickets(n, start=start, end=start + STEP, first_id=ident, seed=ident)
            buf = io.BytesIO()
            pacsv.write_csv(chunk, buf, pacsv.WriteOptions(include_header=False))
            with conn.cursor() as cur, cur.copy(f"COPY {t} FROM STDIN (FORMAT csv)") as cp:
                cp.write(buf.getbuffer())
            done += n
        if create:
            conn.execute(f"ALTER TABLE {t} ADD PRIMARY KEY (ticket_id)")
            conn.execute(f"CREATE INDEX ON {t} (updated_at)")
        conn.execute(f"ANALYZE {t}")


def source_rows(t: str) -> int:
    import psycopg

    with psycopg.connect(DSN) as conn:
        row = conn.execute(f"SELECT count(*) FROM {t}").fetchone()
        assert row is not None
        return int(row[0])


def exists(t: str) -> bool:
    import psycopg

    with psycopg.connect(DSN) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (t,)).fetchone()
        return bool(row and row[0])


# -- the measured tools (each runs in a child process) -----------------------------------


def run_copy(t: str, work: Path) -> int:
    import psycopg

    rows = source_rows(t)
    _start()
    sql = f"COPY (SELECT * FROM {t}) TO STDOUT (FORMAT binary)"
    with psycopg.connect(DSN) as conn, conn.cursor() as cur, cur.copy(sql) as cp:
        for _ in cp:
            pass
    return rows


def _manifest(t: str) -> dict[str, Any]:
    return {
        "id": "hotline",
        "title": "12345热线工单",
        "agency": "gy_12345",
        "steward": {"name": "王敏"},
        "sharing": {"type": "conditional"},
        "classification": "important",
        "columns": [
            {"name": "ticket_id", "type": "int64"},
            {"name": "updated_at", "type": "timestamptz"},
        ],
        "primary_key": ["ticket_id"],
        "source": {
            "connector": "postgres",
            "profile": "hotline_db",
            "options": {"table": t},
            "cursor": "updated_at",
            "mode": "append",
        },
    }


def run_blockhub(t: str, work: Path) -> int:
    from catalog.datasets.manifest import parse_manifest
    from hub.assembly.context import Hub
    from hub.settings import Settings

    # Registering the dataset is the steward's one-time set-up (dlt's source and pipeline
    # are likewise built before its clock starts); a run opens the hub and ingests.
    setup = Hub.open(Settings(home=work / "blockhub-home"))
    setup.store.identity.upsert_agency("gy_12345", "贵阳市12345政务服务便民热线")
    setup.sources.sources.add_profile(
        "gy_12345",
        "hotline_db",
        "postgres",
        protected=setup.sources.protected,
        settings={"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "test"},
    )
    setup.register(parse_manifest(_manifest(t)), file="<hotline>")
    setup.close()
    _start()
    hub = Hub.open(Settings(home=work / "blockhub-home"))
    try:
        run = hub.ingest("hotline")
        if run.status not in ("succeeded", "unchanged"):
            raise SystemExit(f"blockhub run {run.status}: {run.error}")
        return run.rows_written
    finally:
        hub.close()


def _dlt(t: str, work: Path, backend: str) -> int:
    import dlt
    from dlt.sources.sql_database import sql_table

    rows = source_rows(t)
    schema, table = t.split(".")
    out = work / f"dlt-{backend}"
    shutil.rmtree(out, ignore_errors=True)
    os.environ["DLT_DATA_DIR"] = str(work / f"dlt-data-{backend}")
    os.environ["DATA_WRITER__DISABLE_COMPRESSION"] = "false"
    url = "postgresql://postgres@127.0.0.1:5432/test"
    source = sql_table(
        credentials=url, table=table, schema=schema, backend=backend, chunk_size=100_000
    )
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{backend}",
        destination=dlt.destinations.filesystem(bucket_url=out.as_uri()),
        dataset_name="hotline",
        pipelines_dir=str(work / f"dlt-pipelines-{backend}"),
    )
    _start()
    pipeline.run(source, loader_file_format="parquet", write_disposition="replace")
    return rows


def run_dlt_pyarrow(t: str, work: Path) -> int:
    return _dlt(t, work, "pyarrow")


def run_dlt_connectorx(t: str, work: Path) -> int:
    return _dlt(t, work, "connectorx")


TOOLS = {
    "copy": run_copy,
    "blockhub": run_blockhub,
    "dlt-pyarrow": run_dlt_pyarrow,
    "dlt-connectorx": run_dlt_connectorx,
}


_started = [0.0]


def _start() -> None:
    """Start the clock: imports and counting the source are not the tool's work."""
    _started[0] = time.perf_counter()


def child(tool: str, t: str, work: Path) -> None:
    if tool == "blockhub":
        # Imports are not a tool's work (dlt's happen before its clock too).  These are
        # imported lazily during a run: by pyiceberg (its file IO; rich, for the report
        # of a schema mismatch, which the blockhub CLI has imported at start anyway), by
        # SQLAlchemy's create_engine (the SQLite dialect) and by the connector's entry
        # point.
        import pyiceberg.io.pyarrow  # noqa: F401
        import rich.console
        import rich.table  # noqa: F401
        import sqlalchemy.dialects.sqlite  # noqa: F401

        import connectors.postgres  # noqa: F401
        import hub.assembly.context  # noqa: F401
        from catalog.runtime import settle_heap

        settle_heap()  # what the blockhub CLI and the Airflow steps do at start
    rows = TOOLS[tool](t, work)
    seconds = time.perf_counter() - _started[0]
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec from the parent,
    # which generated the data and is large.
    peak_kb = next(
        int(line.split()[1])
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmHWM")
    )
    print(json.dumps({"tool": tool, "rows": rows, "seconds": seconds, "peak_mb": peak_kb / 1024}))


def measure(tool: str, t: str, work: Path, label: str | None = None) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", tool, "--table", t, "--work", str(work)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if proc.returncode != 0:
        print(f"{label or tool}: FAILED\n{proc.stderr[-3000:]}", file=sys.stderr)
        return {"tool": label or tool, "error": proc.stderr[-500:]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["tool"] = label or tool
    result["rows_per_s"] = result["rows"] / result["seconds"] if result["seconds"] else 0
    print(
        f"{result['tool']:>16}: {result['rows']:>11,} rows in {result['seconds']:7.2f} s = "
        f"{result['rows_per_s']:>10,.0f} rows/s, peak RSS {result['peak_mb']:6.0f} MB",
        flush=True,
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/blockhub-bench-ingest"))
    ap.add_argument("--only", nargs="*", default=None, help="tools to run (default: all)")
    ap.add_argument("--reload", action="store_true", help="regenerate the source table")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--increments", type=int, default=3, help="incremental runs (median)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--table", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    if args.child:
        child(args.child, args.table, args.work)
        return

    t = table_name(args.rows)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.reload or not exists(t) or source_rows(t) != args.rows:
        started = time.perf_counter()
        load(t, args.rows)
        print(f"loaded {args.rows:,} rows into {t} in {time.perf_counter() - started:.1f} s")
    shutil.rmtree(args.work / "blockhub-home", ignore_errors=True)
    tools = args.only or ["copy", "blockhub", "dlt-pyarrow", "dlt-connectorx", "incremental"]
    results: dict[str, dict[str, Any]] = {}
    for tool in tools:
        if tool == "incremental":
            continue
        results[tool] = measure(tool, t, args.work)
    if "incremental" in tools and "blockhub" in results and "error" not in results["blockhub"]:
        extra = args.rows // 100
        runs: list[dict[str, Any]] = []
        try:
            for k in range(args.increments):
                # New tickets, updated after everything already there (the source's next day).
                first = args.rows + 1 + k * extra
                load(t, extra, first_id=first, create=False, day0=args.rows // CHUNK + 1 + k)
                runs.append(measure("blockhub", t, args.work, label=f"incremental 1% #{k + 1}"))
        finally:
            import psycopg

            with psycopg.connect(DSN, autocommit=True) as conn:
                conn.execute(f"DELETE FROM {t} WHERE ticket_id > %s", (args.rows,))
                # The next run inserts the same increments again: without a vacuum their
                # index scan would also walk this run's dead rows.
                conn.execute(f"VACUUM ANALYZE {t}")
        timed = sorted((r for r in runs if "error" not in r), key=lambda r: r["seconds"])
        if timed:
            median = dict(timed[len(timed) // 2], tool="incremental 1%")
            median["runs_seconds"] = [r["seconds"] for r in runs if "error" not in r]
            results["incremental"] = median
        elif runs:
            results["incremental"] = runs[-1]
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def report(results: dict[str, dict[str, Any]]) -> None:
    ok = {k: v for k, v in results.items() if "rows_per_s" in v}
    bh = ok.get("blockhub")
    if not bh:
        return
    print()
    if "copy" in ok:
        print(f"blockhub / COPY floor:     {bh['rows_per_s'] / ok['copy']['rows_per_s']:.2f}x")
    dlts = [v for k, v in ok.items() if k.startswith("dlt-")]
    if dlts:
        best = max(dlts, key=lambda v: v["rows_per_s"])
        print(
            f"blockhub / fastest dlt ({best['tool']}): {bh['rows_per_s'] / best['rows_per_s']:.2f}x"
        )
    if "incremental" in ok:
        inc = ok["incremental"]
        share = inc["seconds"] / bh["seconds"]
        each = ", ".join(f"{s / bh['seconds']:.1%}" for s in inc.get("runs_seconds", []))
        print(f"incremental 1% / full:     {share:.1%} of the full load's time (median of {each})")


if __name__ == "__main__":
    main()
