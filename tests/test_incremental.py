"""The incremental cursor is a value: where a run starts, how far its staged rows reach."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from connectors.incremental import Incremental, greater


def _batch(values: list[object]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"updated_at": values, "n": list(range(len(values)))})


def test_last_value_moves_up_only_and_rows_are_counted() -> None:
    cursor = Incremental("updated_at", start_value=5)
    assert cursor.last_value == 5
    cursor.observe(_batch([3, 4]))  # re-read rows below the watermark do not move it down
    assert (cursor.last_value, cursor.rows) == (5, 2)
    cursor.observe(_batch([9, None, 7]))
    assert (cursor.last_value, cursor.rows) == (9, 5)
    cursor.observe(_batch([None]))
    assert (cursor.last_value, cursor.rows) == (9, 6)


def test_a_first_run_starts_empty_and_keeps_dates_as_iso_text() -> None:
    cursor = Incremental("updated_at")
    day = dt.datetime(2026, 3, 4, 8, 30)
    cursor.observe(_batch([day, day - dt.timedelta(days=1)]))
    assert cursor.last_value == "2026-03-04T08:30:00"


def test_without_a_cursor_column_only_rows_count() -> None:
    cursor = Incremental(None, start_value=None)
    cursor.observe(_batch([1, 2]))
    assert (cursor.last_value, cursor.rows) == (None, 2)


def test_numbers_compare_as_numbers_and_the_rest_as_text() -> None:
    assert greater(10, 9) and not greater("10", "9")
    assert greater("2026-03-05", "2026-03-04T23:59:59")
