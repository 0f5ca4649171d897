"""The GB/T 2260 table: complete where we rely on it, consistent links, both code widths."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from catalog.domain.regions import (
    Region,
    ancestors,
    children,
    full_name,
    get_region,
    load_regions,
    normalize_code,
    region_codes_table,
    region_exists,
)

GUIYANG = {
    "520102": "南明区",
    "520103": "云岩区",
    "520111": "花溪区",
    "520112": "乌当区",
    "520113": "白云区",
    "520115": "观山湖区",
    "520121": "开阳县",
    "520122": "息烽县",
    "520123": "修文县",
    "520181": "清镇市",
}

MAINLAND_PROVINCES = {
    "110000", "120000", "130000", "140000", "150000", "210000", "220000", "230000",
    "310000", "320000", "330000", "340000", "350000", "360000", "370000", "410000",
    "420000", "430000", "440000", "450000", "460000", "500000", "510000", "520000",
    "530000", "540000", "610000", "620000", "630000", "640000", "650000",
}  # fmt: skip

GUIZHOU_PREFECTURES = {
    "520100": "贵阳市",
    "520200": "六盘水市",
    "520300": "遵义市",
    "520400": "安顺市",
    "520500": "毕节市",
    "520600": "铜仁市",
    "522300": "黔西南布依族苗族自治州",
    "522600": "黔东南苗族侗族自治州",
    "522700": "黔南布依族苗族自治州",
}

PARENT_LEVELS = {
    "province": {None},
    "city": {"province"},
    "county": {"province", "city"},
    "township": {"county", "city"},
}


def test_guiyang_and_its_ten_districts() -> None:
    assert get_region("520100") == Region("520100", "贵阳市", "city", "520000")
    assert {r.code: r.name for r in children("520100")} == GUIYANG
    assert all(r.level == "county" for r in children("520100"))


def test_all_provinces_present() -> None:
    provinces = {c for c, r in load_regions().items() if r.level == "province"}
    assert MAINLAND_PROVINCES.issubset(provinces)
    assert provinces - MAINLAND_PROVINCES == {"710000", "810000", "820000"}
    assert get_region("520000") == Region("520000", "贵州省", "province", None)


def test_guizhou_prefectures_and_counties() -> None:
    assert {r.code: r.name for r in children("520000")} == GUIZHOU_PREFECTURES
    counties = [c for p in GUIZHOU_PREFECTURES for c in children(p)]
    assert len(counties) == 88  # 民政部: Guizhou has 88 county-level divisions
    assert {c.level for c in counties} == {"county"}


def test_whole_country_down_to_county() -> None:
    levels = [r.level for r in load_regions().values()]
    assert levels.count("province") == 34
    assert levels.count("city") == 333
    assert levels.count("county") == 2847


def test_parent_links_are_consistent() -> None:
    regions = load_regions()
    for code, region in regions.items():
        assert region.code == code
        parent = regions.get(region.parent) if region.parent else None
        assert (parent.level if parent else None) in PARENT_LEVELS[region.level], region
        if region.level == "township":
            assert len(code) == 12 and code.endswith("000") and code.startswith(region.parent or "")
        else:
            assert len(code) == 6 and code.isdigit()
            if parent is not None:
                assert code[:2] == parent.code[:2], region


def test_code_shapes_by_level() -> None:
    for region in load_regions().values():
        if region.level == "province":
            assert region.code.endswith("0000")
        elif region.level == "city":
            assert region.code.endswith("00")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("520102", "520102"),
        ("520102000000", "520102"),
        (" 520102 ", "520102"),
        ("520102018000", "520102018000"),
        ("520102018001", "520102018001"),
        ("52010", None),
        ("5201020", None),
        ("52010a", None),
        ("５２０１０２", None),
        ("", None),
    ],
)
def test_normalize_code(code: str, expected: str | None) -> None:
    assert normalize_code(code) == expected


def test_region_exists_for_both_widths() -> None:
    assert region_exists("520102")
    assert region_exists("520102000000")
    assert region_exists("520000000000")
    assert region_exists("520102018000")  # 花果园街道
    assert get_region("520102018000") == Region("520102018000", "花果园街道", "township", "520102")
    assert not region_exists("520102018001")  # village level is not in the table
    assert not region_exists("520199")
    assert not region_exists("520101")  # the old 市辖区 placeholder is not a division
    assert not region_exists("999999")
    assert not region_exists("abc")


def test_ancestors_province_first() -> None:
    assert [r.code for r in ancestors("520102")] == ["520000", "520100"]
    assert [r.code for r in ancestors("520102000000")] == ["520000", "520100"]
    assert [r.code for r in ancestors("520102018000")] == ["520000", "520100", "520102"]
    assert ancestors("520000") == []
    # municipalities and province-administered counties have no prefecture in between
    assert [r.code for r in ancestors("110101")] == ["110000"]
    assert [r.code for r in ancestors("429004")] == ["420000"]


def test_children_and_full_name() -> None:
    townships = children("520102")
    assert "花果园街道" in {t.name for t in townships}
    assert all(t.level == "township" and t.parent == "520102" for t in townships)
    assert [t.code for t in townships] == sorted(t.code for t in townships)
    assert children("520102018000") == []
    assert full_name("520102") == "贵州省贵阳市南明区"
    assert full_name("520102018000") == "贵州省贵阳市南明区花果园街道"


def test_unknown_codes_raise_key_error() -> None:
    with pytest.raises(KeyError):
        ancestors("520199")
    with pytest.raises(KeyError):
        children("xyz")


def test_load_regions_returns_a_private_copy() -> None:
    mine = load_regions()
    mine.pop("520100")
    assert region_exists("520100")
    assert "520100" in load_regions()


def test_region_codes_table() -> None:
    table = region_codes_table()
    assert table.schema == pa.schema(
        [(name, pa.string()) for name in ("code", "name", "level", "parent")]
    )
    assert table.num_rows == len(load_regions())
    [row] = table.filter(pc.field("code") == "520102").to_pylist()
    assert row == {"code": "520102", "name": "南明区", "level": "county", "parent": "520100"}
    assert table["parent"].null_count == 34
