"""File sources: CSV (GB18030, BOM, Chinese headers, spellings of missing), Excel, JSON,
Parquet; globs and new files picked up once; errors that name file, row and reason."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog.datasets.manifest import Manifest
from connectors.duck import connect
from hub.assembly.context import Hub
from hub.cli.main import CLI_PRINCIPAL
from tests.conftest import file_source

HEADER = "工单编号,区县代码,诉求类别,来电号码,金额,更新时间\n"
SOURCE_NAMES = {
    "ticket_id": "工单编号",
    "district_code": "区县代码",
    "category": "诉求类别",
    "caller_phone": "来电号码",
    "amount": "金额",
    "updated_at": "更新时间",
}
NULLS = ["", "NULL", "无", "-", "N/A"]


def columns(with_source_names: bool = True) -> list[dict[str, Any]]:
    types = {
        "ticket_id": "int64",
        "district_code": "string",
        "category": "string",
        "caller_phone": "string",
        "amount": "decimal(12,2)",
        "updated_at": "timestamptz",
    }
    out = []
    for name, t in types.items():
        col: dict[str, Any] = {"name": name, "type": t}
        if with_source_names:
            col["source_name"] = SOURCE_NAMES[name]
        out.append(col)
    return out


def csv_rows(first: int, n: int, hour: int = 8) -> str:
    return "".join(
        f"{i},520102,噪音扰民,1380000{i:04d},{i}.50,2024-06-01 {hour:02d}:{i % 60:02d}:00\n"
        for i in range(first, first + n)
    )


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """The hotline's export folder: its file root (beside the hub's home, never inside)."""
    folder = tmp_path / "src"
    folder.mkdir()
    return folder


@pytest.fixture
def dataset(hub: Hub, make_manifest: Callable[..., Manifest], src: Path) -> Callable[..., Manifest]:
    """A dataset reading ``path``: a file or pattern under ``src`` (the agency's root), or
    ``s3://bucket/...`` (a bucket root whose endpoint and keys are ``s3``)."""

    def make(connector: str, mode: str = "append", names: bool = True, **options: Any) -> Manifest:
        path = str(options.pop("path"))
        s3 = options.pop("s3", None)
        if path.startswith("s3://"):
            bucket, _, rel = path[len("s3://") :].partition("/")
            hub.sources.sources.add_root(
                "gy_12345",
                "bucket",
                f"s3://{bucket}",
                protected=hub.sources.protected,
                settings={"endpoint": s3["endpoint"], "region": s3["region"]},
                secrets={"access_key": s3["access_key"], "secret_key": s3["secret_key"]},
            )
            source = {"connector": connector, "root": "bucket", "options": {"path": rel}}
        else:
            source = file_source(hub, src, os.path.relpath(path, src), connector=connector)
        source["options"].update(options)
        m = make_manifest(columns=columns(names), source={**source, "mode": mode})
        hub.store.register_dataset(m)
        return m

    return make


def rows(hub: Hub) -> list[dict[str, Any]]:
    sql = "SELECT * FROM tickets ORDER BY ticket_id"
    return list(hub.exchange.query(sql, CLI_PRINCIPAL).to_table().to_pylist())


def test_gb18030_csv_with_chinese_headers_and_missing_spellings(
    hub: Hub, src: Path, dataset: Callable[..., Manifest]
) -> None:
    text = HEADER + csv_rows(1, 3) + "4,520103,无,-,N/A,2024-06-01 09:30:00\n"
    text += "5,520103,𠮷字街道,NULL,,2024-06-01 09:31:00\n"
    path = src / "工单导出.csv"
    path.write_bytes(text.encode("gb18030"))
    dataset("csv", path=str(path), encoding="gb18030", null_values=NULLS, time_zone="Asia/Shanghai")
    run = hub.ingest("tickets")
    assert (run.status, run.rows_written) == ("succeeded", 5), run.error
    got = rows(hub)
    assert got[0]["amount"] == Decimal("1.50") and got[0]["category"] == "噪音扰民"
    # Written without an offset in Beijing time: 08:01 there is 00:01 UTC.
    assert got[0]["updated_at"] == dt.datetime(2024, 6, 1, 0, 1, tzinfo=dt.UTC)
    assert (got[3]["category"], got[3]["caller_phone"], got[3]["amount"]) == (None, None, None)
    assert got[4]["category"] == "𠮷字街道" and got[4]["caller_phone"] is None


def test_utf8_bom_and_the_rename_option(
    hub: Hub, src: Path, dataset: Callable[..., Manifest]
) -> None:
    path = src / "bom.csv"
    path.write_text(HEADER + csv_rows(1, 2), encoding="utf-8-sig")
    dataset("csv", names=False, path=str(path), rename=SOURCE_NAMES_REVERSED)
    run = hub.ingest("tickets")
    assert (run.status, run.rows_written) == ("succeeded", 2), run.error
    assert rows(hub)[1]["caller_phone"] == "13800000002"


SOURCE_NAMES_REVERSED = {v: k for k, v in SOURCE_NAMES.items()}


def test_a_glob_picks_up_each_new_file_once(
    hub: Hub, src: Path, dataset: Callable[..., Manifest]
) -> None:
    exports = src / "exports"
    exports.mkdir()
    (exports / "tickets-20240601.csv").write_text(HEADER + csv_rows(1, 3), encoding="utf-8")
    (exports / "tickets-20240602.csv").write_text(HEADER + csv_rows(4, 2), encoding="utf-8")
    (exports / "readme.txt").write_text("not data", encoding="utf-8")
    dataset("csv", path=str(exports / "tickets-*.csv"))
    assert hub.ingest("tickets").rows_written == 5
    assert hub.ingest("tickets").status == "unchanged"
    # Tomorrow's export; its rows are not newer than anything by any column: only the
    # file is new.
    (exports / "tickets-20240603.csv").write_text(HEADER + csv_rows(6, 4, hour=1), encoding="utf-8")
    run = hub.ingest("tickets")
    assert (run.status, run.rows_read, run.rows_written) == ("succeeded", 4, 4)
    assert [r["ticket_id"] for r in rows(hub)] == list(range(1, 10))
    assert hub.lake.current("tickets").state == {  # type: ignore[union-attr]
        "files": sorted(str(p) for p in exports.glob("tickets-*.csv"))
    }
    assert hub.ingest("tickets").status == "unchanged"


def test_replace_rereads_every_file(hub: Hub, src: Path, dataset: Callable[..., Manifest]) -> None:
    (src / "a.csv").write_text(HEADER + csv_rows(1, 3), encoding="utf-8")
    dataset("csv", mode="replace", path=str(src / "*.csv"))
    hub.ingest("tickets")
    (src / "b.csv").write_text(HEADER + csv_rows(4, 1), encoding="utf-8")
    assert hub.ingest("tickets").rows_written == 4
    assert len(rows(hub)) == 4


def test_a_bad_value_names_file_row_column_and_type_and_publishes_nothing(
    hub: Hub, src: Path, dataset: Callable[..., Manifest]
) -> None:
    good = src / "t-1.csv"
    good.write_text(HEADER + csv_rows(1, 3), encoding="utf-8")
    dataset("csv", path=str(src / "t-*.csv"), null_values=NULLS)
    assert hub.ingest("tickets").rows_written == 3
    bad = src / "t-2.csv"
    bad.write_text(
        HEADER + csv_rows(4, 2) + "6,520102,噪音,1,十二元,2024-06-01 08:00:00\n", encoding="utf-8"
    )
    run = hub.ingest("tickets")
    assert run.status == "failed"
    assert run.error is not None
    assert str(bad) in run.error and "row 3 (line 4)" in run.error
    assert "金额 → amount" in run.error and "'十二元'" in run.error
    assert "decimal(12,2)" in run.error
    assert len(rows(hub)) == 3 and [v.version for v in hub.store.versions("tickets")] == [1]
    # The next good run still reads the fixed file (it was never recorded as loaded).
    bad.write_text(HEADER + csv_rows(4, 3), encoding="utf-8")
    assert hub.ingest("tickets").rows_written == 3


def test_a_bad_value_deep_in_a_large_file_is_diagnosed_like_one_in_the_first_batch(
    hub: Hub, src: Path, dataset: Callable[..., Manifest]
) -> None:
    # The error surfaces while batches stream (through the Arrow reader), not from execute.
    path = src / "big.csv"
    bad_row = 250_000
    lines = csv_rows(1, 300_000).splitlines(keepends=True)
    lines[bad_row - 1] = f"{bad_row},520102,噪音,1,十二元,2024-06-01 08:00:00\n"
    path.write_text(HEADER + "".join(lines), encoding="utf-8")
    dataset("csv", path=str(path))
    run = hub.ingest("tickets")
    assert run.status == "failed" and run.error is not None
    assert str(path) in run.error and f"row {bad_row} (line {bad_row + 1})" in run.error
    assert "金额 → amount" in run.error and "'十二元'" in run.error
    assert hub.store.versions("tickets") == []


def test_bytes_that_are_not_the_declared_encoding(
    hub: Hub, src: Path, dataset: Callable[..., Manifest]
) -> None:
    path = src / "broken.csv"
    path.write_bytes(
        (HEADER + csv_rows(1, 2)).encode("gb18030") + b"3,520102,\xff\xfe,1,1,2024-06-01\n"
    )
    dataset("csv", path=str(path), encoding="gb18030")
    run = hub.ingest("tickets")
    assert run.status == "failed" and run.error is not None
    assert str(path) in run.error and "line 4" in run.error and "gb18030" in run.error


def test_excel_workbook(hub: Hub, src: Path, dataset: Callable[..., Manifest]) -> None:
    path = src / "企业名录.xlsx"
    con = connect("excel")
    con.execute(
        f"""COPY (SELECT i::BIGINT AS 工单编号, '520102' AS 区县代码,
                  CASE WHEN i = 2 THEN '无' ELSE '噪音扰民' END AS 诉求类别,
                  '13800000000' AS 来电号码, (i * 1.25)::DECIMAL(12,2) AS 金额,
                  TIMESTAMP '2024-06-01 08:00:00' + i * INTERVAL 1 MINUTE AS 更新时间
                  FROM range(1, 6) t(i))
            TO '{path}' (FORMAT xlsx, HEADER true, SHEET '工单')"""
    )
    con.close()
    dataset("excel", path=str(path), sheet="工单", null_values=NULLS)
    run = hub.ingest("tickets")
    assert (run.status, run.rows_written) == ("succeeded", 5), run.error
    got = rows(hub)
    assert got[1]["category"] is None and got[0]["amount"] == Decimal("1.25")
    assert got[0]["updated_at"] == dt.datetime(2024, 6, 1, 8, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize("layout", ["array", "ndjson"])
def test_json_and_ndjson(
    hub: Hub, src: Path, dataset: Callable[..., Manifest], layout: str
) -> None:
    import json

    records = [
        {
            "工单编号": i,
            "区县代码": "520102",
            "诉求类别": "无" if i == 2 else "噪音扰民",
            "来电号码": "138",
            "金额": f"{i}.10",
            "更新时间": f"2024-06-01T08:0{i}:00+08:00",
        }
        for i in range(1, 4)
    ]
    path = src / f"t.{layout}"
    if layout == "array":
        path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    else:
        path.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
        )
    dataset("json", path=str(path), null_values=NULLS)
    run = hub.ingest("tickets")
    assert (run.status, run.rows_written) == ("succeeded", 3), run.error
    got = rows(hub)
    assert got[1]["category"] is None and got[2]["amount"] == Decimal("3.10")
    assert got[0]["updated_at"] == dt.datetime(2024, 6, 1, 0, 1, tzinfo=dt.UTC)


def test_parquet_glob(hub: Hub, src: Path, dataset: Callable[..., Manifest]) -> None:
    for part in range(2):
        ids = list(range(part * 10 + 1, part * 10 + 11))
        table = pa.table(
            {
                "ticket_id": pa.array(ids, pa.int64()),
                "district_code": ["520102"] * 10,
                "category": ["噪音扰民"] * 10,
                "caller_phone": ["138"] * 10,
                "amount": pa.array([Decimal("1.10")] * 10, pa.decimal128(12, 2)),
                "updated_at": pa.array(
                    [dt.datetime(2024, 6, 1, tzinfo=dt.UTC)] * 10, pa.timestamp("us", tz="UTC")
                ),
            }
        )
        pq.write_table(table, src / f"part-{part}.parquet")
    dataset("parquet", names=False, path=str(src / "part-*.parquet"))
    run = hub.ingest("tickets")
    assert (run.status, run.rows_written) == ("succeeded", 20), run.error


def test_no_matching_file_is_a_clear_failure(
    hub: Hub, src: Path, dataset: Callable[..., Manifest]
) -> None:
    dataset("csv", path=str(src / "nothing-*.csv"))
    run = hub.ingest("tickets")
    assert run.status == "failed" and run.error and "no file matches" in run.error


def test_s3_bucket_glob_with_new_files(
    hub: Hub, dataset: Callable[..., Manifest], s3_endpoint: str
) -> None:
    import uuid

    import pyarrow.fs as pafs

    creds = {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}
    fs = pafs.S3FileSystem(
        endpoint_override=s3_endpoint.split("://")[1],
        scheme="http",
        allow_bucket_creation=True,
        **creds,
    )
    bucket = f"exports-{uuid.uuid4().hex[:8]}"
    fs.create_dir(bucket)

    def put(key: str, text: str) -> None:
        with fs.open_output_stream(f"{bucket}/{key}") as out:
            out.write(text.encode("gb18030"))

    put("hotline/tickets-1.csv", HEADER + csv_rows(1, 3))
    put("hotline/other.csv", HEADER + csv_rows(100, 1))
    dataset(
        "csv",
        path=f"s3://{bucket}/hotline/tickets-*.csv",
        encoding="gb18030",
        s3={"endpoint": s3_endpoint, **creds},
    )
    assert hub.ingest("tickets").rows_written == 3
    put("hotline/tickets-2.csv", HEADER + csv_rows(4, 2))
    run = hub.ingest("tickets")
    assert (run.status, run.rows_written) == ("succeeded", 2), run.error
    assert [r["ticket_id"] for r in rows(hub)] == [1, 2, 3, 4, 5]
    assert hub.ingest("tickets").status == "unchanged"
