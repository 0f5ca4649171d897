"""Outbound paths the matrix world cannot reach (hub/api/outbound.py names them): a feed's
intake counts, quarantine rows, quality samples, run errors — each through the one rule
of catalog/access/disclosure.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from catalog.access.disclosure import disclose_run, scrub_message
from catalog.access.effective import Access
from catalog.access.masking import mask_value
from catalog.datasets.manifest import Manifest
from catalog.datasets.quality import QuarantineBatch
from expectations.runner import mask_value as sample_mask
from hub.assembly.context import Hub
from pipelines.quarantine import quarantine_rows


def test_feed_counts_are_withheld_from_a_row_filtered_reader(
    hub: Hub, tokens: dict[str, str], make_manifest: Callable[..., Manifest], live: str
) -> None:
    m = make_manifest(
        id="hot_feed",
        sharing={"type": "conditional", "conditions": "dispatch"},
        source={"connector": "push", "options": {}},
        columns=[
            {"name": "district_code", "type": "string"},
            {"name": "caller_phone", "type": "string", "pii": "phone"},
        ],
        primary_key=[],
        block_keys=[],
    )
    record = hub.store.register_dataset(m)
    g = hub.grants.request(
        record, agency_id="gy_hbj", requested_by="developer", purpose="p",
        row_filter={"district_code": ["520102"]},
    )  # fmt: skip
    hub.grants.approve(g.id, by="steward", dataset=record)
    url = f"http://{live}/v1/feeds/hot_feed"
    owner = {"Authorization": f"Bearer {tokens['steward']}"}
    events = [{"district_code": d, "caller_phone": "13812345678"} for d in ("520102", "520103")]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the runner picks the new feed up
        r = httpx.post(url + "/events", headers=owner, json=events)
        if r.status_code == 202:
            break
        time.sleep(0.2)
    assert r.status_code == 202, r.text
    mine = httpx.get(url, headers=owner).json()
    assert mine["accepted"] == 2
    theirs = httpx.get(url, headers={"Authorization": f"Bearer {tokens['developer']}"})
    assert theirs.status_code == 200 and theirs.json()["accepted"] is None
    nobody = httpx.get(url, headers={"Authorization": f"Bearer {tokens['operator']}"})
    assert nobody.status_code == 403


def _batch(path: Path) -> QuarantineBatch:
    return QuarantineBatch(
        "b1", "d", "r1", str(path), 2, "quarantine", "held", ["x"], None, None, None,
        datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip


def test_quarantine_rows_follow_the_viewers_access(tmp_path: Path) -> None:
    """Owner's stewards see the rows as they came in; an admin with the one set of masks
    (an address keeps 6 characters, an ``other`` value is starred whole); a column the
    viewer may not see is not there."""
    path = tmp_path / "q.parquet"
    raw: dict[str, list[Any]] = {"_bh_row": [1, 2], "_bh_failed": [["x"], ["x"]],
           "addr": ["贵州省贵阳市南明区花果园", "贵州省贵阳市云岩区"],
           "secret": ["甲乙丙", "丁戊己"], "hidden": ["h1", "h2"]}  # fmt: skip
    pq.write_table(pa.table(raw), path)
    owner = Access("d", True, "owner", ("addr", "secret", "hidden"), {}, None)
    rows = quarantine_rows(_batch(path), owner)
    assert rows[0]["addr"] == raw["addr"][0] and rows[0]["hidden"] == "h1"
    admin = Access("d", True, "admin", ("addr", "secret"), {"addr": "address", "secret": "other"},
                   None)  # fmt: skip
    rows = quarantine_rows(_batch(path), admin)
    assert rows[0]["addr"] == mask_value("address", raw["addr"][0]) == "贵州省贵阳市******"
    assert rows[0]["secret"] == "***" and "hidden" not in rows[0]
    assert rows[0]["_bh_row"] == 1 and rows[0]["_bh_failed"] == ["x"]


def test_quality_samples_use_the_one_set_of_masks() -> None:
    for kind, value in [("address", "贵州省贵阳市南明区花果园"), ("other", "甲乙丙"),
                        ("email", "zhang@gov.cn"), ("plate", "贵A12345")]:  # fmt: skip
        assert sample_mask(value, kind) == mask_value(kind, value)


def test_a_run_error_reaches_non_owners_without_values() -> None:
    run = {"error": "could not convert '13812345678' to INT64 in row 520102199001011234\nmore",
           "rows_read": 10, "details": {"unresolved_addresses": {"addr": 3}}}  # fmt: skip
    reader = Access("d", True, "grant", ("a",), {}, ({"a": ("1",)},))
    shown = disclose_run(reader, run)
    assert "13812345678" not in str(shown) and "520102199001011234" not in str(shown)
    assert shown["rows_read"] is None and shown["details"] == {}
    assert scrub_message(None) is None
    owner = Access("d", True, "owner", ("a",), {}, None)
    assert disclose_run(owner, run) == run
