"""Read a blockhub dataset with polars (docs/operations.md, "Other engines").  Nothing of
blockhub is imported: polars scans the table pyiceberg's catalog ``blockhub`` names
(``blockhub lake catalog --out .pyiceberg.yaml``), delete files applied.

    python docs/examples/engines/polars_read.py hotline_tickets [--snapshot ID ...] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl
from pyiceberg.catalog import load_catalog


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dataset")
    ap.add_argument("--snapshot", type=int, action="append", help="older snapshot(s) to read")
    ap.add_argument("--out", help="write the rows read to DIR/<snapshot>.parquet")
    args = ap.parse_args()

    ident = f"blockhub.{args.dataset}"
    table = load_catalog("blockhub").load_table(ident)
    for snapshot in args.snapshot or [table.current_snapshot().snapshot_id]:
        rows = pl.scan_iceberg(table, snapshot_id=snapshot).collect()
        if args.out:
            rows.write_parquet(Path(args.out) / f"{snapshot}.parquet")
        print(f"polars read {ident} at snapshot {snapshot}: {rows.height} rows")


if __name__ == "__main__":
    main()
