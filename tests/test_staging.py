"""How the lake gathers a connector's batches into Parquet row groups
(catalog.lake.tables.row_groups)."""

from __future__ import annotations

import pyarrow as pa

from catalog.lake.tables import row_groups


def batches(*sizes: int) -> list[pa.RecordBatch]:
    out, first = [], 0
    for n in sizes:
        out.append(pa.record_batch({"id": pa.array(range(first, first + n), pa.int64())}))
        first += n
    return out


def test_large_batches_pass_one_per_group_as_they_come() -> None:
    """A full table's parallel scan (100,000-row batches): its files are what they were."""
    groups = list(row_groups(batches(100_000, 100_000, 100_000, 40_000)))
    assert [g.num_rows for g in groups] == [100_000, 100_000, 100_000, 40_000]


def test_a_stream_of_small_batches_is_written_in_growing_groups() -> None:
    """One batch, two, four, then at least 100,000 rows; the last group is what is left;
    empty batches are skipped; every row once, in order."""
    small = [16_384] * 3 + [0] + [16_384] * 17 + [5_000]
    groups = list(row_groups(batches(*small)))
    sizes = [g.num_rows for g in groups]
    assert sizes[:3] == [16_384, 32_768, 65_536]
    assert all(n >= 100_000 for n in sizes[3:-1]) and sum(sizes) == sum(small)
    assert pa.concat_tables(groups).column("id").to_pylist() == list(range(sum(small)))


def test_wide_rows_are_grouped_by_size_too() -> None:
    """Small batches of wide rows (documents, long texts) are not held up to 100,000 rows:
    a group also ends at ``max_bytes`` of Arrow data, so memory stays bounded."""
    text = "长" * 2_000  # 6,000 bytes a row
    wide = [pa.record_batch({"doc": pa.array([text] * 1_000)}) for _ in range(40)]
    groups = list(row_groups(wide, max_bytes=16 << 20))
    assert [g.num_rows for g in groups][:4] == [1_000, 2_000, 3_000, 3_000]  # 6 MB a batch
    assert all(g.nbytes < (16 << 20) + wide[0].nbytes for g in groups)
    assert sum(g.num_rows for g in groups) == 40_000
