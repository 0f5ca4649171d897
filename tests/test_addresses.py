"""Addresses resolve to region codes at ingest; what does not resolve is counted, not guessed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog.datasets.manifest import Manifest, parse_manifest
from catalog.domain.addresses import resolve_address
from catalog.errors import ManifestError
from catalog.identity.store import Principal
from hub.assembly.context import Hub
from pipelines.blockkeys import rollup
from tests.conftest import file_source, manifest_dict


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("贵州省贵阳市南明区花果园街道花果园大街12号", "520102018000"),  # township by name
        ("贵阳市云岩区中华北路1号", "520103"),
        ("南明区遵义路3号", "520102"),  # a unique county name stands alone
        ("北京市朝阳区建国路88号", "110105"),
        ("吉林省长春市朝阳区人民大街", "220104"),
        ("花溪大道100号", None),  # a road named after a district is not in the district
        ("朝阳区建国路", None),  # two 朝阳区: the text does not say which
        ("我家门口", None),
        ("   ", None),
    ],
)
def test_resolve_address(text: str, code: str | None) -> None:
    assert resolve_address(text) == code


def _src(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    return tmp_path / "src"


def _address_manifest(hub: Hub, path: Path, **overrides: Any) -> Manifest:
    return parse_manifest(
        manifest_dict(
            id="complaints",
            columns=[
                {"name": "id", "type": "int64"},
                {"name": "place", "type": "string"},
            ],
            primary_key=["id"],
            block_keys=[{"column": "place", "kind": "address"}],
            source={**file_source(hub, path.parent, path.name), "cursor": "id"},
            **overrides,
        )
    )


def test_ingest_derives_the_code_column_and_counts_the_unresolved(hub: Hub, tmp_path: Path) -> None:
    places = [
        "贵州省贵阳市南明区花果园街道花果园大街12号",
        "贵州省贵阳市南明区花果园街道花果园大街12号",
        "贵阳市观山湖区金阳南路6号",
        "花溪大道100号",
        "朝阳区建国路",
        "",
        None,
    ]
    pq.write_table(
        pa.table({"id": pa.array(range(len(places)), pa.int64()), "place": places}),
        _src(tmp_path) / "c.parquet",
    )
    hub.store.register_dataset(_address_manifest(hub, _src(tmp_path) / "c.parquet"))
    run = hub.ingest("complaints")
    assert run.status == "succeeded"
    assert run.details == {"unresolved_addresses": {"place": 2}}  # empty and null are not
    assert hub.store.get_run(run.id).details == run.details
    admin = Principal("a", "gy_dsj", "a", "admin")
    rows = hub.exchange.query(
        "SELECT id, place_region_code FROM complaints ORDER BY id", admin
    ).to_table()
    assert rows["place_region_code"].to_pylist() == [
        "520102018000",
        "520102018000",
        "520115",
        None,
        None,
        None,
        None,
    ]
    (event,) = hub.log.read("dataset:complaints")
    assert event.data["regions"] == {"520102018000": 2, "520115": 1}


def test_block_manifest_fields_are_checked(make_manifest: Callable[..., Manifest]) -> None:
    with pytest.raises(ManifestError) as e:
        make_manifest(block_figures=[{"name": "open", "aggregate": "count(*)", "by": "nope"}])
    assert "block_figures.by" in e.value.message and "nope" in e.value.message
    with pytest.raises(ManifestError) as e:
        make_manifest(
            columns=[
                {"name": "ticket_id", "type": "int64"},
                {"name": "place", "type": "string"},
                {"name": "place_region_code", "type": "string"},
                {"name": "updated_at", "type": "timestamptz"},
            ],
            block_keys=[{"column": "place", "kind": "address"}],
        )
    assert "place_region_code" in e.value.message
    with pytest.raises(ManifestError) as e:
        make_manifest(block_time="nope")
    assert "block_time" in e.value.message
    ok = make_manifest(
        block_time="updated_at",
        block_figures=[{"name": "by_cat", "aggregate": "count(*)", "by": "category"}],
    )
    assert ok.block_figures[0].by == "category"


def test_rollup_keeps_events_small() -> None:
    counts = {f"520102{i:03d}000": 1 for i in range(20)} | {"520103": 5}
    assert rollup(counts, 100) == counts
    assert rollup(counts, 5) == {"520102": 20, "520103": 5}
    assert rollup(counts, 1) == {"520100": 25}
