"""The one-read split of ``drop-rows`` gives exactly the rows of the two-query path."""

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


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_split_matches_passing_and_write_quarantine(tmp_path: Path, parts: int) -> None:
    suite = load_suite("hotline_tickets")
    with BatchValidator(_files(tmp_path), suite, key_columns=["ticket_id"]) as validator:
        validation = validator.validate()
        assert validation.failing_rows > 0
        passing = _rows(validator.passing())
        held = validator.write_quarantine(tmp_path / "old.parquet", whole_batch=False)
        split = validator.split(tmp_path / "new.parquet")
        streams = split.parts(parts)
        assert 1 <= len(streams) <= parts
        got = [_rows(s) for s in streams]
        split.close()
    rows = [row for part in got for row in part]
    assert sorted(map(repr, rows)) == sorted(map(repr, passing))  # the same rows
    assert split.quarantined == held == validation.failing_rows
    assert len(passing) + held == validation.rows
    old, new = _quarantine(tmp_path / "old.parquet"), _quarantine(tmp_path / "new.parquet")
    # ... in the batch's order (its files', then their rows'), all parts together.
    held_ids = {row[ROW_ID] for row in new}
    in_order = [
        row
        for index, path in enumerate(validator.files)
        for n, row in enumerate(pq.read_table(path).to_pylist())
        if (index << 40 | n) not in held_ids
    ]
    assert rows == in_order
    assert pq.read_schema(tmp_path / "new.parquet").names[:2] == [ROW_ID, FAILED]
    assert (
        pq.read_schema(tmp_path / "new.parquet").names
        == pq.read_schema(tmp_path / "old.parquet").names
    )
    assert new == old
    assert all(row[FAILED] for row in new)


def test_split_of_a_quarantine_file_keeps_row_ids(tmp_path: Path) -> None:
    """A released batch carries its row ids: the split reads it through DuckDB."""
    suite = load_suite("hotline_tickets")
    with BatchValidator(_files(tmp_path), suite) as validator:
        validator.validate()
        validator.write_quarantine(tmp_path / "held.parquet", whole_batch=True)
    with BatchValidator([str(tmp_path / "held.parquet")], suite) as validator:
        validator.validate()
        passing = _rows(validator.passing())
        validator.write_quarantine(tmp_path / "old.parquet", whole_batch=False)
        split = validator.split(tmp_path / "new.parquet")
        got = _rows(split)
    assert sorted(map(repr, got)) == sorted(map(repr, passing))
    assert _quarantine(tmp_path / "new.parquet") == _quarantine(tmp_path / "old.parquet")


def test_split_with_nothing_to_hold_leaves_an_empty_file(tmp_path: Path) -> None:
    suite = load_suite("hotline_tickets")
    with BatchValidator(_files(tmp_path), suite) as validator:
        validator.validate()
        assert validator.validation is not None
        validator.validation.failed_mask = 0  # as if every expectation had passed
        split = validator.split(tmp_path / "q" / "new.parquet")
        rows = sum(b.num_rows for s in split.parts(2) for b in s)
        split.close()
    assert rows == 2200 and split.quarantined == 0
    empty = pq.read_table(tmp_path / "q" / "new.parquet")
    assert empty.num_rows == 0 and empty.column_names[:2] == [ROW_ID, FAILED]


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
