"""The synthetic Guiyang world: valid identifiers, real codes, sane values, deterministic."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from catalog.domain.identifiers import (
    id_number_check_char,
    is_valid_id_number,
    is_valid_mobile,
    is_valid_uscc,
    uscc_check_char,
)
from catalog.domain.regions import children, get_region
from hub.demo import sampleworld as sw
from hub.demo import synth

START = datetime(2024, 5, 1, tzinfo=UTC)
END = datetime(2024, 6, 1, tzinfo=UTC)
TODAY = date(2026, 3, 4)  # the Beijing date IDs are validated on (never the machine's)
GUIYANG = {r.code: r.name for r in children("520100")}
LAT_MIN, LAT_MAX, LON_MIN, LON_MAX = synth.GUIYANG_BOUNDS


@pytest.fixture(scope="module")
def tickets() -> pa.Table:
    return sw.hotline_tickets(20_000, start=START, end=END)


def _in_bounds(table: pa.Table) -> bool:
    lat, lon = table["lat"].to_numpy(), table["lon"].to_numpy()
    return bool(
        (lat >= LAT_MIN).all() and (lat <= LAT_MAX).all()
        and (lon >= LON_MIN).all() and (lon <= LON_MAX).all()
    )  # fmt: skip


# --- vectorised check characters ----------------------------------------------------------


def test_vectorised_id_check_matches_scalar() -> None:
    digits = np.random.default_rng(1).integers(0, 10, size=(2000, 17), dtype=np.uint8)
    expected = [id_number_check_char("".join(map(str, row))) for row in digits]
    assert synth.id_check_chars(digits).tolist() == expected


def test_vectorised_uscc_check_matches_scalar() -> None:
    values = np.random.default_rng(2).integers(0, 31, size=(2000, 17))
    chars = np.array(list(sw.USCC_CHARSET))
    expected = [uscc_check_char("".join(chars[row])) for row in values]
    assert synth.uscc_check_chars(values).tolist() == expected


# --- 12345 hotline ------------------------------------------------------------------------


def test_hotline_schema_and_ids(tickets: pa.Table) -> None:
    assert tickets.schema == sw.HOTLINE_SCHEMA
    assert tickets["ticket_id"].to_pylist() == list(range(1, 20_001))
    later = sw.hotline_tickets(5, start=END, end=END + timedelta(hours=1), first_id=20_001)
    assert later["ticket_id"].to_pylist() == list(range(20_001, 20_006))


def test_hotline_times(tickets: pa.Table) -> None:
    created = tickets["created_at"].to_numpy()
    updated = tickets["updated_at"].to_numpy()
    assert (np.diff(created.astype(np.int64)) >= 0).all()  # ids follow creation order
    assert created.min() >= np.datetime64(START.replace(tzinfo=None))
    assert created.max() < np.datetime64(END.replace(tzinfo=None))
    assert (updated >= created).all()
    assert updated.max() <= np.datetime64(END.replace(tzinfo=None))
    # Office hours in Beijing (UTC+8) are busier than the small hours.
    beijing_hour = (created.astype("datetime64[h]").astype(np.int64) + 8) % 24
    assert (beijing_hour == 10).sum() > 5 * (beijing_hour == 3).sum()


def test_hotline_vocabularies(tickets: pa.Table) -> None:
    districts = pc.value_counts(tickets["district_code"]).to_pylist()
    counts = {d["values"]: d["counts"] for d in districts}
    assert set(counts) == set(GUIYANG)
    assert counts["520103"] > 3 * counts["520122"]  # skewed like the population
    assert set(tickets["category"].to_pylist()) == set(sw.HOTLINE_CATEGORIES)
    assert len(sw.HOTLINE_CATEGORIES) == 12
    assert set(tickets["status"].to_pylist()) == set(sw.HOTLINE_STATUSES)
    assert pc.min(pc.utf8_length(tickets["content"])).as_py() > 0


def test_hotline_open_tickets_are_recent(tickets: pa.Table) -> None:
    open_ = tickets.filter(pc.field("status") == "受理中")
    oldest_open = pc.min(open_["created_at"]).as_py()
    assert END - oldest_open < timedelta(days=1)
    assert tickets.filter(pc.field("status") == "已回访").num_rows > open_.num_rows


def test_hotline_people_are_valid(tickets: pa.Table) -> None:
    ids = tickets["caller_id_number"].to_pylist()
    assert all(is_valid_id_number(x, today=TODAY) for x in ids)
    assert {x[:2] for x in ids} == {"52"}
    prefixes = {x[:6] for x in ids}
    assert all(get_region(p) is not None for p in prefixes)
    assert sum(x[:6] in GUIYANG for x in ids) > len(ids) / 2
    birth_years = {int(x[6:10]) for x in ids}
    assert min(birth_years) >= 1945 and max(birth_years) <= 2006
    assert all(is_valid_mobile(p) for p in tickets["caller_phone"].to_pylist())
    names = tickets["caller_name"].to_pylist()
    assert all(2 <= len(n) <= 4 for n in names)
    assert len(set(names)) > len(names) / 4


def test_hotline_addresses_match_districts(tickets: pa.Table) -> None:
    for row in tickets.select(["district_code", "address"]).slice(0, 2000).to_pylist():
        prefix = "贵州省贵阳市" + GUIYANG[row["district_code"]]
        assert row["address"].startswith(prefix)
        assert row["address"].endswith("号")
    assert _in_bounds(tickets)


def test_hotline_deterministic() -> None:
    a = sw.hotline_tickets(3000, seed=7, start=START, end=END)
    b = sw.hotline_tickets(3000, seed=7, start=START, end=END)
    c = sw.hotline_tickets(3000, seed=8, start=START, end=END)
    assert a.equals(b)
    assert not a.equals(c)


def test_hotline_rejects_bad_ranges() -> None:
    with pytest.raises(ValueError):
        sw.hotline_tickets(10, start=datetime(2024, 1, 1), end=datetime(2024, 2, 1))
    with pytest.raises(ValueError):
        sw.hotline_tickets(10, start=END, end=START)


def test_hotline_large_tables_stay_valid() -> None:
    # The 5M-row size is generated by the benchmarks; a 500k table keeps the suite light.
    began = time.perf_counter()
    table = sw.hotline_tickets(500_000, start=datetime(2024, 1, 1, tzinfo=UTC), end=END)
    elapsed = time.perf_counter() - began
    print(f"\nhotline_tickets(500_000): {elapsed:.2f} s, {table.nbytes / 1e6:.0f} MB")
    assert table.num_rows == 500_000
    sample = table.slice(490_000).to_pydict()
    assert all(is_valid_id_number(x, today=TODAY) for x in sample["caller_id_number"])
    assert all(is_valid_mobile(x) for x in sample["caller_phone"])


# --- air quality ----------------------------------------------------------------------------


def test_air_stations() -> None:
    stations = sw.air_stations()
    assert stations.num_rows == 20
    assert stations.column_names == ["station_id", "name", "address", "lat", "lon"]
    assert len(set(stations["station_id"].to_pylist())) == 20
    for address in stations["address"].to_pylist():
        assert sum(name in address for name in GUIYANG.values()) >= 1
    assert _in_bounds(stations)
    assert sw.air_stations(1).equals(sw.air_stations(1))


def test_air_readings() -> None:
    n = 20 * 24 * 7
    readings = sw.air_readings(n, seed=3, start=START)
    assert readings.num_rows == n
    assert readings.schema.field("measured_at").type == pa.timestamp("us", tz="UTC")
    assert readings.schema.field("aqi").type == pa.int64()
    assert set(readings["station_id"].to_pylist()) == set(
        sw.air_stations(3)["station_id"].to_pylist()
    )
    times = readings["measured_at"].to_pylist()
    assert times[0] == START and times[-1] == START + timedelta(hours=24 * 7 - 1)
    pm25, pm10 = readings["pm25"].to_numpy(), readings["pm10"].to_numpy()
    assert (pm25 > 0).all() and (pm10 >= pm25).all()
    assert 10 < pm25.mean() < 60
    aqi = readings["aqi"].to_numpy()
    assert (aqi >= 0).all() and (aqi <= 500).all()
    assert readings.equals(sw.air_readings(n, seed=3, start=START))


def test_hourly_aqi_breakpoints() -> None:
    values = {"pm25": np.array([0.0, 35.0, 75.0, 55.0]), "o3": np.array([0.0, 0.0, 0.0, 300.0])}
    assert sw.hourly_aqi(values).tolist() == [0, 50, 100, 150]


# --- enterprises -------------------------------------------------------------------------


def _gb11714_ok(org_code: str) -> bool:
    weights = (3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(ch, 36) * w for ch, w in zip(org_code[:8], weights, strict=True))
    check = (11 - total % 11) % 11
    return org_code[8] == ("X" if check == 10 else str(check))


def test_enterprises() -> None:
    table = sw.enterprises(5000, seed=11)
    assert table.schema.field("registered_capital").type == pa.decimal128(18, 2)
    assert table.schema.field("established").type == pa.date32()
    rows = table.to_pylist()
    codes = [r["credit_code"] for r in rows]
    assert len(set(codes)) == len(codes)
    for r in rows:
        assert is_valid_uscc(r["credit_code"]), r
        assert _gb11714_ok(r["credit_code"][8:17]), r
        assert r["credit_code"][2:8] == r["district_code"] and r["district_code"] in GUIYANG
        assert is_valid_mobile(r["phone"])
        assert r["registered_capital"] > Decimal(0)
        assert date(1995, 1, 1) <= r["established"] <= date(2024, 5, 31)
        assert r["name"].endswith("公司") and r["name"].startswith(("贵州", "贵阳"))
    assert table.equals(sw.enterprises(5000, seed=11))
    assert not table.equals(sw.enterprises(5000, seed=12))


# --- district population -------------------------------------------------------------------


def test_district_population() -> None:
    table = sw.district_population()
    assert table.num_rows == 10 * len(sw.POPULATION_YEARS)
    rows = table.to_pylist()
    assert {r["district_code"]: r["district_name"] for r in rows} == GUIYANG
    for year in sw.POPULATION_YEARS:
        total = sum(r["population"] for r in rows if r["year"] == year)
        assert 5_000_000 < total < 7_500_000
    assert all(0 < r["households"] < r["population"] for r in rows)
    assert table.equals(sw.district_population())
    assert not table.equals(sw.district_population(seed=1))
