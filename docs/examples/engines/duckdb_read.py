"""Read a blockhub dataset with DuckDB's iceberg extension, installed offline from the
PyPI wheels (docs/operations.md, "Other engines").  Nothing of blockhub is imported.

DuckDB downloads extensions when asked for one it lacks; with no network, install the
extension wheels of DuckDB's exact version (``pip install duckdb==1.5.5
duckdb-extension-avro==1.5.5 duckdb-extension-iceberg==1.5.5``, or copy the wheels over)
and ``INSTALL`` each from its file once: afterwards ``LOAD iceberg`` works in every DuckDB
of that version using the same extension directory, the ``duckdb`` shell included.

    python docs/examples/engines/duckdb_read.py hotline_tickets [--snapshot ID ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import duckdb
from pyiceberg.catalog import load_catalog


def install_offline(con: duckdb.DuckDBPyConnection) -> None:
    """INSTALL avro and iceberg from the files their wheels ship (nothing downloaded)."""
    version = "v" + duckdb.__version__
    for name in ("avro", "iceberg"):
        spec = importlib.util.find_spec(f"duckdb_extension_{name}")
        if spec is None or spec.origin is None:
            raise SystemExit(f"pip install duckdb-extension-{name}=={duckdb.__version__}")
        path = Path(spec.origin).parent / "extensions" / version / f"{name}.duckdb_extension"
        con.execute(f"INSTALL '{path}'")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dataset")
    ap.add_argument("--snapshot", type=int, action="append", help="older snapshot(s) to read")
    ap.add_argument("--out", help="write the rows read to DIR/<snapshot>.parquet")
    ap.add_argument("--extension-directory", help="DuckDB's (default ~/.duckdb/extensions)")
    args = ap.parse_args()

    config = {"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
    if args.extension_directory:
        config["extension_directory"] = args.extension_directory
    con = duckdb.connect(config=config)
    install_offline(con)
    con.execute("LOAD iceberg")

    ident = f"blockhub.{args.dataset}"
    table = load_catalog("blockhub").load_table(ident)
    for snapshot in args.snapshot or [table.current_snapshot().snapshot_id]:
        # The table's metadata file and a snapshot in it: DuckDB reads that state.
        scan = "iceberg_scan($1, snapshot_from_id => $2)"
        params = [table.metadata_location, snapshot]
        if args.out:
            con.sql(f"SELECT * FROM {scan}", params=params).write_parquet(
                str(Path(args.out) / f"{snapshot}.parquet")
            )
        (count,) = con.execute(f"SELECT count(*) FROM {scan}", params).fetchone() or (0,)
        print(f"duckdb read {ident} at snapshot {snapshot}: {count} rows")


if __name__ == "__main__":
    main()
