"""Merge on the lake: pyiceberg's upsert vs delete-by-key + add_files (docs/decisions.md D11).

A 1M-row table and a 100k-row increment (50k changed rows, 50k new); each mode in its own
process so that peak memory (VmHWM) is that mode's:

    .venv/bin/python bench/merge.py upsert && .venv/bin/python bench/merge.py merge
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from catalog.lake.tables import Lake  # after the path is set

ROWS, INCREMENT = 1_000_000, 100_000
SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("v", pa.int64()),
        pa.field("txt", pa.string()),
    ]
)


def rows(ids: np.ndarray, v: int) -> pa.Table:
    return pa.table(
        {"id": ids, "v": np.full(len(ids), v), "txt": [f"工单 {i} 贵阳" for i in ids]}
    ).cast(SCHEMA)


def peak_mb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) // 1024
    return 0


def main(mode: str) -> None:
    root = Path(f"/tmp/blockhub-bench-merge-{mode}")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    lake = Lake(f"sqlite:///{root}/iceberg.db", root.as_uri())
    lake.ensure_table("t", SCHEMA, identifier_fields=["id"])
    files = lake.stage("t", "r0", rows(np.arange(ROWS), 0).to_batches(100_000), SCHEMA)
    lake.commit("t", files, mode="append", cursor=None, run_id="r0")
    increment = rows(np.arange(ROWS - INCREMENT // 2, ROWS + INCREMENT // 2), 1)
    before = peak_mb()
    started = time.perf_counter()
    if mode == "upsert":
        lake.table("t").upsert(increment, join_cols=["id"])
    else:
        files = lake.stage("t", "r1", increment.to_batches(100_000), SCHEMA)
        lake.commit("t", files, mode="merge", cursor=None, run_id="r1", key=["id"])
    seconds = time.perf_counter() - started
    after = lake.table("t").scan().to_arrow()
    assert after.num_rows == ROWS + INCREMENT // 2
    assert pc.sum(after["v"]).as_py() == INCREMENT
    print(f"{mode}: {seconds:.2f} s, peak RSS {peak_mb()} MB (before the merge {before} MB)")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "merge")
