"""Read a blockhub dataset with Ray Data on a local Ray cluster (docs/operations.md,
"Other engines").  Nothing of blockhub is imported: Ray finds the table through
pyiceberg's catalog ``blockhub`` (``blockhub lake catalog --out .pyiceberg.yaml``), and its
worker processes read the Parquet data and delete files.

    python docs/examples/engines/ray_read.py hotline_tickets [--snapshot ID ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from pyiceberg.catalog import load_catalog

WORKER = "_reader_pid"


def tag_worker(batch: pa.Table) -> pa.Table:
    """Runs in the Ray worker that read the batch: says which process that was."""
    return batch.append_column(WORKER, pa.array([os.getpid()] * batch.num_rows, pa.int64()))


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

    # A local cluster bounded in CPUs (one worker process each) and memory; on a real
    # cluster: ray.init(address="ray://head:10001") and the same .pyiceberg.yaml on every node.
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
        for snapshot in snapshots:
            ds = ray.data.read_iceberg(
                table_identifier=ident, catalog_kwargs={"name": "blockhub"}, snapshot_id=snapshot
            )
            ds = ds.map_batches(tag_worker, batch_format="pyarrow")
            rows = pa.concat_tables(ray.get(ds.to_arrow_refs()))
            workers = sorted(set(rows.column(WORKER).to_pylist()) - {os.getpid()})
            rows = rows.drop_columns([WORKER])
            if args.out:
                pq.write_table(rows, Path(args.out) / f"{snapshot}.parquet")
            print(
                f"ray read {ident} at snapshot {snapshot}: {rows.num_rows} rows (read by "
                f"{len(workers)} Ray worker process(es) {workers}, not this one {os.getpid()})"
            )
    finally:
        ray.shutdown()
        session.cleanup()


if __name__ == "__main__":
    main()
