"""The SQL masks agree with the Python reference for every personal-data kind."""

from __future__ import annotations

import duckdb
import pytest

from catalog.access.masking import PY_MASKS, mask_sql, mask_value

VALUES = [
    None, "", "1", "13", "1381234", "13812345", "13812345678", "+8613812345678",
    "520102199001011234", "52010219900101123X", "张", "张三", "欧阳娜娜", "👍🏽名字",
    "贵州省贵阳市南明区", "贵阳市", "a@b", "@gov.cn", "zhang.san@gy.gov.cn", "no-at-sign",
    "贵A12345", "贵A1", "x'y\"z",
]  # fmt: skip


@pytest.mark.parametrize("kind", sorted(PY_MASKS))
def test_sql_masks_equal_python(kind: str) -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (i INTEGER, v VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(VALUES)))
    rows = con.execute(f"SELECT i, {mask_sql(kind, 'v')} FROM t ORDER BY i").fetchall()
    assert [m for _, m in rows] == [mask_value(kind, v) for v in VALUES]


def test_masks_hide_what_they_should() -> None:
    assert mask_value("phone", "13812345678") == "138****5678"
    assert mask_value("id_number", "520102199001011234") == "520102********1234"
    assert mask_value("name", "张三丰") == "张**"
    assert mask_value("email", "zhang.san@gy.gov.cn") == "z***@gy.gov.cn"
    assert mask_value("plate", "贵A12345") == "贵A****5"
    assert mask_value("address", "贵州省贵阳市南明区") == "贵州省贵阳市***"


def test_numbers_are_masked_as_text() -> None:
    con = duckdb.connect()
    got = con.execute(f"SELECT {mask_sql('phone', 'x')} FROM (SELECT 13812345678 AS x)").fetchone()
    assert got == ("138****5678",)
