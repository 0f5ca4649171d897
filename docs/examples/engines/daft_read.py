"""Read a blockhub dataset with Daft on a local Ray cluster (docs/operations.md, "Other
engines").  Nothing of blockhub is imported, and it runs in its own environment (``make
daft``: Daft needs an older pyarrow than the hub's): Daft plans the scan through
pyiceberg's catalog ``blockhub`` (``blockhub lake catalog --out .pyiceberg.yaml``) and Ray's
worker processes read the Parquet data and delete files.

    .venv-daft/bin/python docs/examples/engines/daft_read.py hotline_tickets \\
        [--snapshot ID ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import daft
import pyarrow.parquet as pq
import ray
from pyiceberg.catalog import load_catalog


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dataset")
    ap.add_argument("--snapshot", type=int, action="append", help="older snapshot(s) to read")
    ap.add_argument("--out", help="write the rows read to DIR/<snapshot>.parquet")
    ap.add_argument("--cpus", type=int, default=2, help="worker processes of the local cluster")
    args = ap.parse_args()

    ident = f"blockhub.{args.dataset}"
    table = load_catalog("blockhub").load_table(ident)
    snapshots = args.snapshot or [table.current_snapshot().snapshot_id]

    # A local cluster bounded in CPUs and memory; on a real cluster:
    # daft.set_runner_ray(address="ray://head:10001") and the catalog file on every node.
    session = tempfile.TemporaryDirectory(prefix="ray-", ignore_cleanup_errors=True)
    ray.init(
        num_cpus=args.cpus,
        object_store_memory=100 * 1024 * 1024,
        include_dashboard=False,
        _temp_dir=session.name,  # its sockets and logs, removed when it stops
        logging_level="ERROR",
        log_to_driver=False,
    )
    try:
        daft.set_runner_ray()
        for snapshot in snapshots:
            rows = daft.read_iceberg(table, snapshot_id=snapshot).to_arrow()
            if args.out:
                pq.write_table(rows, Path(args.out) / f"{snapshot}.parquet")
            print(f"daft read {ident} at snapshot {snapshot}: {rows.num_rows} rows (on Ray)")
    finally:
        ray.shutdown()
        session.cleanup()


if __name__ == "__main__":
    main()
