"""``drop-rows`` separates failing rows by their positions in the staged files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from expectations.runner import FAILED, ROW_ID, BatchValidator
from expectations.suite import load_suite
from tests.quality_data import bad_tickets


def _rows(batches: Any) -> list[dict[str, Any]]:
    return [row for b in batches for row in b.to_pylist()]


def _quarantine(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).sort_by(ROW_ID).to_pylist()


def _files(tmp_path: Path) -> list[str]:
    """Two staged files of small row groups, so that parts cut across groups and files."""
    first, _ = bad_tickets(1300, seed=3)
    second, _ = bad_tickets(900, seed=4, first_id=5000)
    paths = []
    for n, table in enumerate((first, second)):
        path = tmp_path / f"staged-{n}.parquet"
        pq.write_table(table, path, row_group_size=250)
        paths.append(str(path))
    return paths


def test_failing_positions_are_the_quarantined_rows(tmp_path: Path) -> None:
    """What ``drop-rows`` leaves out of each staged file (position deletes) is exactly
    what goes to quarantine, and the rest is exactly what ``passing()`` gives."""
    suite = load_suite("hotline_tickets")
    with BatchValidator(_files(tmp_path), suite, key_columns=["ticket_id"]) as validator:
        validation = validator.validate()
        assert validation.failing_rows > 0
        passing = _rows(validator.passing())
        held = validator.write_quarantine(tmp_path / "held.parquet", whole_batch=False)
        positions = validator.failing_positions()
        files = validator.files
    assert len(positions) == len(files) == 2
    assert all(len(p) and (p[1:] > p[:-1]).all() for p in positions)  # ascending, no repeat
    assert sum(len(p) for p in positions) == held == validation.failing_rows
    quarantined = _quarantine(tmp_path / "held.parquet")
    assert [r[ROW_ID] for r in quarantined] == [
        index << 40 | int(n) for index, p in enumerate(positions) for n in p
    ]
    assert all(row[FAILED] for row in quarantined)
    left: list[dict[str, Any]] = []
    for path, p in zip(files, positions, strict=True):
        rows = pq.read_table(path).to_pylist()
        dropped = set(p.tolist())
        left += [row for n, row in enumerate(rows) if n not in dropped]
    assert sorted(map(repr, left)) == sorted(map(repr, passing))
    assert len(left) + held == validation.rows


def test_failing_positions_of_a_passing_batch_are_empty(tmp_path: Path) -> None:
    suite = load_suite("hotline_tickets")
    with BatchValidator(_files(tmp_path), suite) as validator:
        validator.validate()
        assert validator.validation is not None
        validator.validation.failed_mask = 0  # as if every expectation had passed
        assert [len(p) for p in validator.failing_positions()] == [0, 0]


def test_stage_parts_keeps_part_order_and_removes_everything_on_error(hub: Any) -> None:
    table, _ = bad_tickets(600)
    lake = hub.lake
    schema = table.schema
    lake.ensure_table("split_test", schema)
    halves = [table.slice(0, 300).to_batches(100), table.slice(300).to_batches(100)]
    files = lake.stage_parts("split_test", "run", halves, schema)
    assert [f.rows for f in files] == [300, 300]
    back = pa.concat_tables([pq.read_table(f.path) for f in files])
    assert back.column("ticket_id").to_pylist() == table.column("ticket_id").to_pylist()
    lake.discard(files)

    def broken() -> Any:
        yield table.slice(0, 100).to_batches()[0]
        raise RuntimeError("source failed")

    data = Path(lake.table("split_test").location().removeprefix("file://")) / "data"
    before = set(data.iterdir())
    with pytest.raises(RuntimeError, match="source failed"):
        lake.stage_parts("split_test", "run", [broken(), table.to_batches(100)], schema)
    assert set(data.iterdir()) == before


def test_samples_are_read_by_file_and_row_number(tmp_path: Path) -> None:
    """Samples from a batch of two files name the rows that broke each rule, in both."""
    first, broke_first = bad_tickets(1300, seed=3)
    second, broke_second = bad_tickets(900, seed=4, first_id=5000)
    broke = {**broke_first, **broke_second}
    suite = load_suite("hotline_tickets")
    with BatchValidator(_files(tmp_path), suite, key_columns=["ticket_id"]) as validator:
        document = validator.validate().document()
    values = {row["ticket_id"]: row for row in pa.concat_tables([first, second]).to_pylist()}
    checked = 0
    for result in document["results"]:
        key = result["expectation_config"]["meta"]["blockhub_key"]
        expected = sorted(t for t, rules in broke.items() if key in rules)
        if not expected or "partial_unexpected_index_list" not in result["result"]:
            continue
        got = [k["ticket_id"] for k in result["result"]["partial_unexpected_index_list"]]
        assert sorted(set(got)) == expected, key
        column = result["expectation_config"]["kwargs"]["column"]
        if column in ("ticket_id", "district_code", "category", "lat"):  # not masked
            assert result["result"]["partial_unexpected_list"] == [values[t][column] for t in got]
        checked += 1
    assert checked >= 8
