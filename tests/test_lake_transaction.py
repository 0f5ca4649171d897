"""The kept transaction metadata (catalog/lake/transaction.py) equals pyiceberg's own."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pyiceberg
from pyiceberg.table import Transaction

from catalog.lake import transaction as kept
from catalog.lake.tables import Lake


def test_pyiceberg_is_the_version_the_adapter_was_checked_on() -> None:
    # A failure here means pyiceberg was upgraded: re-measure D28 and re-check the adapter
    # (table_metadata must still be a property computed from _table.metadata and _updates).
    assert pyiceberg.__version__ == kept.CHECKED_VERSION
    assert isinstance(Transaction.__dict__["table_metadata"], property)


def test_pyiceberg_itself_is_not_patched(tmp_path: Path) -> None:
    lake = Lake(f"sqlite:///{tmp_path / 'cat.db'}", str(tmp_path / "wh"))
    table = lake.ensure_table("t", pa.schema([("id", pa.int64())]))
    tx = table.transaction()
    assert type(tx) is Transaction and tx.table_metadata is not tx.table_metadata


def test_kept_metadata_equals_a_fresh_computation_at_every_step(tmp_path: Path) -> None:
    lake = Lake(f"sqlite:///{tmp_path / 'cat.db'}", str(tmp_path / "wh"))
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    table = lake.ensure_table("t", schema)
    data = tmp_path / "wh" / "one.parquet"
    pq.write_table(pa.table({"id": [1, 2], "name": ["甲", "乙"]}), data)
    for round_ in range(2):  # a table without and with a snapshot
        tx = kept.transaction(table)
        first = tx.table_metadata
        assert tx.table_metadata is first  # kept while nothing changes
        assert first == kept.fresh_metadata(tx)
        tx.set_properties(step=str(round_))
        changed = tx.table_metadata
        assert changed is not first and changed.properties["step"] == str(round_)
        assert changed == kept.fresh_metadata(tx).model_copy(
            update={"last_updated_ms": changed.last_updated_ms}
        )
        path = tmp_path / "wh" / f"f{round_}.parquet"
        path.write_bytes(data.read_bytes())
        tx.add_files([str(path)], check_duplicate_files=False)
        tx.commit_transaction()
        table = lake.table("t")
        assert table.properties["step"] == str(round_)
        assert len(table.scan().to_arrow()) == 2 * (round_ + 1)
