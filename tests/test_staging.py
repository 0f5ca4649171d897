"""How the lake gathers a connector's batches into Parquet row groups (catalog.lake.row_groups)."""

from __future__ import annotations

import pyarrow as pa

from catalog.lake import row_groups


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
