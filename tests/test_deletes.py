"""Position-delete files written by blockhub (catalog.lake.deletes), read back by every reader.

pyiceberg 0.12 writes no delete files; these tests hold the lake to the Iceberg spec by
reading what it commits through pyiceberg's scan and DuckDB's ``iceberg_scan`` — after an
append, a later append, a merge that rewrites a file with deletes, a replace — and check
that no delete file is left pointing at a removed data file.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog.lake.deletes import FILE_PATH_ID, POS_ID, deleted_from
from catalog.lake.tables import Lake, StagedFile
from connectors.duck import connect
from pipelines.staged import Staged

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])


def _batch(ids: list[int], tag: str) -> pa.RecordBatch:
    return pa.record_batch(
        [pa.array(ids, pa.int64()), pa.array([f"{tag}{i}" for i in ids])], SCHEMA
    )


@pytest.fixture
def lake(hub: Any) -> Lake:
    lake: Lake = hub.lake
    lake.ensure_table("del_test", SCHEMA, identifier_fields=None)
    return lake


def _stage(lake: Lake, run: str, ids: list[int], tag: str, drop: list[int]) -> list[StagedFile]:
    files = lake.stage("del_test", run, [_batch(ids, tag)], SCHEMA)
    return files + lake.stage_deletes("del_test", run, files, [np.array(drop, np.int64)])


def _readers(lake: Lake) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The table's rows as pyiceberg and DuckDB read them, sorted."""
    table = lake.table("del_test")
    by_pyiceberg = sorted((r["id"], r["v"]) for r in table.scan().to_arrow().to_pylist())
    con = connect("avro", "iceberg")
    try:
        by_duckdb = con.execute(
            f"SELECT id, v FROM iceberg_scan('{table.metadata_location}') ORDER BY id"
        ).fetchall()
    finally:
        con.close()
    return by_pyiceberg, by_duckdb


def _delete_files(lake: Lake) -> list[dict[str, Any]]:
    files = lake.table("del_test").inspect.files().to_pylist()
    return [f for f in files if f["content"] == 1]


def test_append_with_deletes_is_read_without_the_deleted_rows(lake: Lake) -> None:
    files = _stage(lake, "r1", list(range(10)), "a", drop=[1, 3, 5])
    snap = lake.commit("del_test", files, mode="append", cursor=1, run_id="r1")
    expected = [(i, f"a{i}") for i in (0, 2, 4, 6, 7, 8, 9)]
    assert _readers(lake) == (expected, expected)
    assert (snap.total_rows, snap.added_rows) == (7, 7)
    (delete,) = _delete_files(lake)
    data = files[0].path
    assert delete["record_count"] == 3
    # The delete file is the spec's: reserved field ids, one data file named in its bounds.
    schema = pq.read_schema(delete["file_path"])
    assert [f.metadata[b"PARQUET:field_id"] for f in schema] == [
        str(FILE_PATH_ID).encode(),
        str(POS_ID).encode(),
    ]
    assert pq.read_table(delete["file_path"]).to_pylist() == [
        {"file_path": data, "pos": p} for p in (1, 3, 5)
    ]
    # A later plain append keeps the delete file in force.
    more = lake.stage("del_test", "r2", [_batch([10, 11], "b")], SCHEMA)
    snap = lake.commit("del_test", more, mode="append", cursor=2, run_id="r2")
    expected += [(10, "b10"), (11, "b11")]
    assert _readers(lake) == (expected, expected)
    assert snap.total_rows == 9 and snap.added_rows == 2
    assert len(_delete_files(lake)) == 1


def test_merge_rewrites_around_deletes_and_drops_the_stale_delete_file(lake: Lake) -> None:
    lake.commit(
        "del_test",
        _stage(lake, "r1", list(range(8)), "a", drop=[1, 3]),
        mode="append",
        cursor=1,
        run_id="r1",
    )
    # Keys 0, 2 and 4 come again; the new row of key 0 fails the gate (position 0), so the
    # published key 0 keeps its old row, and key 3 — deleted before — stays absent.
    files = _stage(lake, "r2", [0, 2, 4, 9], "m", drop=[0])
    snap = lake.commit("del_test", files, mode="merge", cursor=2, run_id="r2", key=["id"])
    expected = [(0, "a0"), (2, "m2"), (4, "m4"), (5, "a5"), (6, "a6"), (7, "a7"), (9, "m9")]
    assert _readers(lake) == (expected, expected)
    assert snap.total_rows == len(expected)
    # The first run's data file was rewritten by the merge: its delete file went with it.
    deletes = _delete_files(lake)
    assert [deleted_from_path(d) for d in deletes] == [files[0].path]
    summary = lake.table("del_test").current_snapshot().summary
    assert summary is not None and summary["total-position-deletes"] == "1"


def deleted_from_path(entry: dict[str, Any]) -> str:
    return str(pq.read_table(entry["file_path"]).column("file_path")[0])


def test_replace_removes_every_delete_file(lake: Lake) -> None:
    lake.commit(
        "del_test",
        _stage(lake, "r1", list(range(5)), "a", drop=[0]),
        mode="append",
        cursor=1,
        run_id="r1",
    )
    files = _stage(lake, "r2", [7, 8, 9], "b", drop=[1])
    snap = lake.commit("del_test", files, mode="replace", cursor=2, run_id="r2")
    expected = [(7, "b7"), (9, "b9")]
    assert _readers(lake) == (expected, expected)
    assert snap.total_rows == 2
    assert [deleted_from_path(d) for d in _delete_files(lake)] == [files[0].path]
    # Time travel still sees the first version with its deletes.
    first = lake.snapshots("del_test")[0]
    con = connect("avro", "iceberg")
    try:
        got = con.execute(
            "SELECT count(*) FROM iceberg_scan(?, snapshot_from_id=?)",
            [first.metadata_location, first.snapshot_id],
        ).fetchone()
    finally:
        con.close()
    assert got == (4,) and first.total_rows == 4


def test_orphan_sweep_keeps_committed_delete_files(lake: Lake) -> None:
    files = _stage(lake, "r1", list(range(4)), "a", drop=[2])
    lake.commit("del_test", files, mode="append", cursor=1, run_id="r1")
    stray = _stage(lake, "r9", [50, 51], "x", drop=[0])  # staged, never committed
    removed = lake.remove_orphans("del_test", older_than_s=-1)
    assert sorted(removed) == sorted(f.path for f in stray)
    assert _readers(lake)[0] == [(0, "a0"), (1, "a1"), (3, "a3")]


def test_staged_delete_files_survive_the_step_hand_over() -> None:
    """Airflow's steps pass Staged as JSON: a delete file keeps what it deletes."""
    files = [StagedFile("/w/d.parquet", 10, 100), StagedFile("/w/x.parquet", 2, 50, "/w/d.parquet")]
    staged = Staged("ds", "run", files, 10, None, None)
    assert Staged.from_dict(staged.to_dict()).files == files


def test_deleted_from_reads_the_bounds(lake: Lake) -> None:
    files = _stage(lake, "r1", [1, 2], "a", drop=[1])
    lake.commit("del_test", files, mode="append", cursor=1, run_id="r1")
    snap = lake.table("del_test").current_snapshot()
    assert snap is not None
    entries = [
        e
        for m in snap.manifests(lake.table("del_test").io)
        for e in m.fetch_manifest_entry(lake.table("del_test").io)
    ]
    assert [deleted_from(e.data_file) for e in entries if e.data_file.content == 1] == [
        files[0].path
    ]
    assert [deleted_from(e.data_file) for e in entries if e.data_file.content == 0] == [None]
