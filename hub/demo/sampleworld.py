"""Deterministic synthetic data for the Guiyang sample world (demo, docs, tests, benchmarks).

The demo has to look like the real thing — valid ID and credit-code check characters,
real GB/T 2260 district codes, Chinese names and addresses, realistic volumes — without
touching anyone's personal data.  Every table here is a pure function of its arguments
and seed: the same call returns the same Arrow table on every machine, so tests can
assert on it and a benchmark can regenerate millions of rows instead of shipping them.

Speed matters for the big table (5,000,000 hotline tickets in a few seconds), so rows
are never built one by one: numbers come from one numpy ``Generator`` per table, check
characters are computed as a digit matrix times the weight vector, and strings are
assembled by Arrow compute kernels (``take`` from small vocabularies, element-wise
joins).  The vocabularies (street names, phrases, surname frequencies) are illustrative;
only the region codes and names are real, and come from :mod:`catalog.domain.regions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from catalog.domain.identifiers import USCC_CHARSET
from hub.demo.synth import (
    BEIJING_OFFSET_US,
    BORN_IN_GUIYANG,
    DISTRICTS,
    GUIYANG_DISTRICT_CODES,
    US_PER_DAY,
    US_PER_HOUR,
    IntArray,
    addresses,
    coordinates,
    district_names,
    district_townships,
    grouped_take,
    guizhou_county_codes,
    id_numbers,
    join,
    mobiles,
    person_names,
    table_rng,
    take,
    timestamps,
    to_us,
    uscc_check_index,
    weighted,
)

DEFAULT_SEED = 20240601
DEFAULT_START = datetime(2024, 6, 1, tzinfo=UTC)

HOTLINE_CATEGORIES: tuple[str, ...] = (
    "噪音扰民", "道路破损", "供水问题", "环境污染", "交通拥堵", "物业纠纷",
    "消费投诉", "医疗卫生", "教育咨询", "社会保障", "市容市貌", "其他",
)  # fmt: skip
HOTLINE_STATUSES: tuple[str, ...] = ("受理中", "已派单", "处理中", "已办结", "已回访")

HOTLINE_SCHEMA = pa.schema(
    [
        ("ticket_id", pa.int64()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("updated_at", pa.timestamp("us", tz="UTC")),
        ("district_code", pa.string()),
        ("category", pa.string()),
        ("status", pa.string()),
        ("caller_name", pa.string()),
        ("caller_phone", pa.string()),
        ("caller_id_number", pa.string()),
        ("address", pa.string()),
        ("content", pa.string()),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
    ]
)


# --- Hotline vocabularies ----------------------------------------------------------------

_CATEGORY_WEIGHTS = (12, 9, 8, 7, 8, 11, 10, 5, 4, 7, 8, 11)
_CATEGORY_PHRASES: tuple[tuple[str, ...], ...] = (
    ("夜间施工噪音扰民", "广场舞音响声音过大", "酒吧夜间噪音影响休息", "楼上装修噪音持续"),
    ("路面坑洼影响通行", "人行道地砖松动破损", "窨井盖缺失存在隐患"),
    ("小区停水未提前通知", "自来水水质浑浊", "供水管道破裂漏水", "高层住户水压不足"),
    ("餐馆油烟直排", "河道有垃圾漂浮", "工地扬尘污染严重", "夜间有异味气体"),
    ("早晚高峰路口拥堵", "信号灯配时不合理", "学校门口接送车辆拥堵"),
    ("物业服务不到位", "物业费收费不合理", "电梯长期故障未修", "小区停车管理混乱"),
    ("商家拒绝退款", "预付卡无法使用", "网购商品质量问题", "餐饮店价格欺诈"),
    ("医院挂号难", "诊所无证行医举报", "医保报销咨询"),
    ("学位申请咨询", "校外培训机构退费", "入学政策咨询"),
    ("养老保险缴费咨询", "医保转移接续咨询", "拖欠农民工工资", "低保申请进度查询"),
    ("占道经营", "违规张贴小广告", "路灯不亮", "垃圾清运不及时"),
    ("政策咨询", "表扬工作人员", "意见建议", "其他问题反映"),
)
# Per step 受理中→已派单→处理中→已办结→已回访: mean hours it takes, and the share of
# tickets that never take it (hard cases stay 处理中; not every closed ticket is called back).
_STEP_MEAN_H = (0.5, 3.0, 48.0, 72.0)
_STEP_NEVER = (0.0, 0.0, 0.03, 0.2)
_HOURLY_PROFILE = (
    1.0, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 5.0, 7.0, 7.5, 7.0,
    5.0, 5.5, 6.5, 6.5, 6.0, 5.0, 4.0, 4.0, 3.5, 3.0, 2.2, 1.5,
)  # fmt: skip


# --- 12345 hotline tickets --------------------------------------------------------------


def _created_us(rng: np.random.Generator, n: int, start_us: int, end_us: int) -> IntArray:
    """Creation times in [start, end), busier in Beijing office hours, sorted."""
    first_day = (start_us + BEIJING_OFFSET_US) // US_PER_DAY
    last_day = (end_us - 1 + BEIJING_OFFSET_US) // US_PER_DAY
    local_day = rng.integers(first_day, last_day + 1, size=n, dtype=np.int64)
    hour = weighted(rng, n, _HOURLY_PROFILE)
    within = rng.integers(0, US_PER_HOUR, size=n, dtype=np.int64)
    created = local_day * US_PER_DAY + hour * US_PER_HOUR + within - BEIJING_OFFSET_US
    outside = (created < start_us) | (created >= end_us)  # partial first/last days
    created[outside] = rng.integers(start_us, end_us, size=int(outside.sum()), dtype=np.int64)
    created.sort()
    return created


def _status_and_update(
    rng: np.random.Generator, created: IntArray, end_us: int
) -> tuple[IntArray, IntArray]:
    """Walk each ticket through the statuses until ``end``; updated_at is its last step.

    Every step takes an exponentially distributed time, so a ticket's status follows
    from its age: new tickets are still 受理中, month-old ones are closed or called back.
    """
    n = created.size
    age_h = (end_us - created) / US_PER_HOUR
    status = np.zeros(n, dtype=np.int64)
    step_at_h = np.zeros(n)  # hours after creation of the step taken so far
    last_h = np.zeros(n)
    for mean_h, never in zip(_STEP_MEAN_H, _STEP_NEVER, strict=True):
        step_at_h += rng.exponential(mean_h, n)
        if never:
            step_at_h[rng.random(n) < never] = np.inf
        reached = step_at_h <= age_h  # once a step is out of reach, so are the later ones
        status += reached
        last_h = np.where(reached, step_at_h, last_h)
    return status, created + (last_h * US_PER_HOUR).astype(np.int64)


def hotline_tickets(
    n: int,
    *,
    seed: int = DEFAULT_SEED,
    start: datetime,
    end: datetime,
    first_id: int = 1,
) -> pa.Table:
    """``n`` 12345 hotline tickets created in ``[start, end)``, ids ``first_id`` upwards.

    Rows are in creation order, as an agency's ticket system would number them, so a
    later batch (``first_id`` after this one's last id, ``start`` at this one's ``end``)
    continues the stream.  ``start``/``end`` must be time-zone aware.
    """
    start_us, end_us = to_us(start), to_us(end)
    if end_us <= start_us:
        raise ValueError("end must be after start")
    rng = table_rng(seed, 1)
    created = _created_us(rng, n, start_us, end_us)
    status, updated = _status_and_update(rng, created, end_us)
    district_idx = weighted(rng, n, [d.population_2020 for d in DISTRICTS])
    category_idx = weighted(rng, n, _CATEGORY_WEIGHTS)
    lat, lon = coordinates(rng, district_idx)
    guizhou = guizhou_county_codes()
    born_here, born_elsewhere = BORN_IN_GUIYANG / 10, (1 - BORN_IN_GUIYANG) / (len(guizhou) - 10)
    id_weights = [born_here if c in GUIYANG_DISTRICT_CODES else born_elsewhere for c in guizhou]
    columns = [
        pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
        timestamps(created),
        timestamps(updated),
        take(GUIYANG_DISTRICT_CODES, district_idx),
        take(HOTLINE_CATEGORIES, category_idx),
        take(HOTLINE_STATUSES, status),
        person_names(rng, n),
        mobiles(rng, n),
        id_numbers(rng, n, guizhou, id_weights),
        addresses(rng, district_idx),
        grouped_take(rng, category_idx, _CATEGORY_PHRASES),
        lat,
        lon,
    ]
    return pa.Table.from_arrays(columns, schema=HOTLINE_SCHEMA)


# --- Air quality ----------------------------------------------------------------------

_STATIONS_PER_DISTRICT = 2
# HJ 633-2012 breakpoints: IAQI and the concentrations (µg/m³) where each band starts.
_IAQI = (0, 50, 100, 150, 200, 300, 400, 500)
_AQI_BREAKPOINTS = {
    "pm25": (0, 35, 75, 115, 150, 250, 350, 500),  # 24-h
    "pm10": (0, 50, 150, 250, 350, 420, 500, 600),  # 24-h
    "no2": (0, 100, 200, 700, 1200, 2340, 3090, 3840),  # 1-h
    "o3": (0, 160, 200, 300, 400, 800, 1000, 1200),  # 1-h
}


def air_stations(seed: int = DEFAULT_SEED) -> pa.Table:
    """Two monitoring stations per district (20), named after a real township in it.

    The district appears only inside the address text, as in the source system, so that
    linking stations to a block exercises address parsing.
    """
    rng = table_rng(seed, 2)
    ids: list[str] = []
    names: list[str] = []
    addresses: list[str] = []
    district_idx: list[int] = []
    for i, (district, townships) in enumerate(zip(DISTRICTS, district_townships(), strict=True)):
        picks = rng.choice(len(townships), size=_STATIONS_PER_DISTRICT, replace=False)
        for township in (townships[int(p)] for p in sorted(picks)):
            stem = township.removesuffix("街道").removesuffix("镇").removesuffix("乡")
            road = district.roads[int(rng.integers(len(district.roads)))]
            ids.append(f"GYAQ{len(ids) + 1:02d}")
            names.append(f"{stem}监测站")
            addresses.append(
                f"贵州省贵阳市{district_names()[i]}{township}{road}{int(rng.integers(1, 200))}号"
            )
            district_idx.append(i)
    lat, lon = coordinates(rng, np.array(district_idx, dtype=np.int64))
    return pa.table(
        {
            "station_id": pa.array(ids, pa.string()),
            "name": pa.array(names, pa.string()),
            "address": pa.array(addresses, pa.string()),
            "lat": lat,
            "lon": lon,
        }
    )


def hourly_aqi(pollutants: Mapping[str, npt.NDArray[np.floating]]) -> IntArray:
    """Hourly AQI: the highest individual index (IAQI) of the given pollutants, rounded up."""
    iaqi = [np.interp(v, _AQI_BREAKPOINTS[k], _IAQI) for k, v in pollutants.items()]
    return np.ceil(np.max(iaqi, axis=0)).astype(np.int64)


def air_readings(n: int, seed: int = DEFAULT_SEED, start: datetime = DEFAULT_START) -> pa.Table:
    """``n`` hourly readings: every station once per hour from ``start`` (floored to the
    hour), in time order; stations are those of ``air_stations(seed)``.

    Concentrations follow a winter-high season, a rush-hour/afternoon day cycle (ozone
    peaks mid-afternoon) and per-station levels, at magnitudes typical of Guiyang.
    """
    stations = air_stations(seed)["station_id"]
    n_stations = len(stations)
    rng = table_rng(seed, 3)
    row = np.arange(n, dtype=np.int64)
    station_idx, hour_idx = row % n_stations, row // n_stations
    measured = to_us(start) // US_PER_HOUR * US_PER_HOUR + hour_idx * US_PER_HOUR
    local_hour = ((measured + BEIJING_OFFSET_US) // US_PER_HOUR) % 24
    day_of_year = ((measured + BEIJING_OFFSET_US) // US_PER_DAY) % 365
    season = 1 + 0.35 * np.cos(2 * np.pi * (day_of_year - 15) / 365)
    rush = 1 + 0.2 * (np.exp(-((local_hour - 8) ** 2) / 4) + np.exp(-((local_hour - 19) ** 2) / 6))
    level = rng.uniform(0.8, 1.25, n_stations)[station_idx]
    noise = rng.lognormal(0.0, 0.3, n)
    pm25 = 24 * season * rush * level * noise
    pm10 = pm25 * rng.uniform(1.4, 2.0, n)
    no2 = 22 * rush**2 * level * rng.lognormal(0.0, 0.25, n)
    o3 = (25 + 70 * np.exp(-((local_hour - 15) ** 2) / 10) / season) * rng.lognormal(0.0, 0.2, n)
    values = {"pm25": pm25, "pm10": pm10, "no2": no2, "o3": o3}
    return pa.table(
        {
            "station_id": pc.take(stations, pa.array(station_idx)),
            "measured_at": timestamps(measured),
            "aqi": pa.array(hourly_aqi(values)),
            **{k: pa.array(np.round(v, 1)) for k, v in values.items()},
        }
    )


# --- Enterprise registry ------------------------------------------------------------------

_INDUSTRIES: tuple[tuple[str, str, float], ...] = (
    ("信息传输、软件和信息技术服务业", "信息技术", 10),
    ("批发和零售业", "商贸", 22),
    ("住宿和餐饮业", "餐饮管理", 12),
    ("建筑业", "建筑工程", 9),
    ("制造业", "实业", 8),
    ("交通运输、仓储和邮政业", "物流", 6),
    ("房地产业", "房地产开发", 4),
    ("租赁和商务服务业", "商务咨询", 10),
    ("农、林、牧、渔业", "农业开发", 6),
    ("科学研究和技术服务业", "科技", 5),
    ("文化、体育和娱乐业", "文化传媒", 4),
    ("卫生和社会工作", "医药", 4),
)
_TRADE_CHARS = "黔筑华鑫盛达源恒信德泰宏博云林山新和兴隆瑞祥明诚远创智汇丰安"
_LEGAL_FORMS = (("有限公司", 70.0), ("有限责任公司", 20.0), ("股份有限公司", 3.0))
_ENTERPRISE_STATUSES = (("存续", 78.0), ("在业", 10.0), ("吊销", 5.0), ("注销", 6.0), ("迁出", 1.0))
_ORG_CODE_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)  # GB 11714 check of positions 9–17
_ORG_BODY_SPACE = 31**8
# i → (a·i + b) mod 31⁸ is a permutation because a is coprime with 31; a ≈ 0.618·31⁸ spreads
# consecutive rows over the whole space.  a·i stays within int64 for i < 1.7e7.
_ORG_BODY_STEP = 527_115_649_796
_MAX_ENTERPRISES = (2**63 - 1 - _ORG_BODY_SPACE) // _ORG_BODY_STEP


def _credit_codes(rng: np.random.Generator, district_idx: IntArray) -> pa.Array:
    """Valid credit codes ``91`` + district + a unique organisation code with its check."""
    n = district_idx.size
    if n > _MAX_ENTERPRISES:
        raise ValueError(f"at most {_MAX_ENTERPRISES} enterprises per call")
    charset_values = np.arange(len(USCC_CHARSET), dtype=np.int64)
    gb11714_values = np.array([int(c, 36) for c in USCC_CHARSET], dtype=np.int64)
    offset = int(rng.integers(0, _ORG_BODY_SPACE))
    body = (np.arange(n, dtype=np.int64) * _ORG_BODY_STEP + offset) % _ORG_BODY_SPACE
    body_values = (body[:, None] // 31 ** np.arange(7, -1, -1, dtype=np.int64)) % 31
    org_sum = gb11714_values[body_values] @ np.array(_ORG_CODE_WEIGHTS, dtype=np.int64)
    org_check = (11 - org_sum % 11) % 11  # 10 is written X; X is a credit-code character
    org_check_value = np.where(org_check == 10, USCC_CHARSET.index("X"), org_check)
    district_digits = np.array([[int(ch) for ch in d.code] for d in DISTRICTS])[district_idx]
    values = np.concatenate(
        [
            np.tile(np.array([9, 1], dtype=np.int64), (n, 1)),
            district_digits,
            charset_values[body_values],
            org_check_value[:, None],
        ],
        axis=1,
    )
    check = uscc_check_index(values)
    return join(*(take(USCC_CHARSET, values[:, k]) for k in range(17)), take(USCC_CHARSET, check))


def enterprises(n: int, seed: int = DEFAULT_SEED) -> pa.Table:
    """``n`` registered enterprises in Guiyang's districts, as the market regulator lists them.

    Credit codes are unique within a call (the organisation part is an affine permutation
    of the row number) and carry both the GB 32100 and the embedded GB 11714 check.
    """
    rng = table_rng(seed, 4)
    district_idx = weighted(rng, n, [d.population_2020 for d in DISTRICTS])
    industry_idx = weighted(rng, n, [w for _, _, w in _INDUSTRIES])
    trade = list(_TRADE_CHARS)
    district_short = [name[:-1] for name in district_names()]  # 南明区 → 南明
    place = pc.if_else(
        pa.array(rng.random(n) < 0.5),
        pa.scalar("贵州"),
        join("贵阳", take(district_short, district_idx)),
    )
    name = join(
        place,
        take(trade, rng.integers(0, len(trade), n)),
        take(trade, rng.integers(0, len(trade), n)),
        take([word for _, word, _ in _INDUSTRIES], industry_idx),
        take([f for f, _ in _LEGAL_FORMS], weighted(rng, n, [w for _, w in _LEGAL_FORMS])),
    )
    first_day = np.datetime64("1995-01-01", "D").astype(np.int64)
    last_day = np.datetime64("2024-05-31", "D").astype(np.int64)
    # Most companies are young: founding dates skewed quadratically towards the present.
    established = last_day - ((last_day - first_day) * rng.random(n) ** 2).astype(np.int64)
    capital_wan = np.round(rng.lognormal(np.log(200), 1.3, n)).clip(1, 1_000_000).astype(np.int64)
    return pa.table(
        {
            "credit_code": _credit_codes(rng, district_idx),
            "name": name,
            "district_code": take(GUIYANG_DISTRICT_CODES, district_idx),
            "legal_rep": person_names(rng, n),
            "phone": mobiles(rng, n),
            # int64 → decimal needs 19 + 2 digits of precision first; values fit in (18, 2).
            "registered_capital": pa.array(capital_wan * 10_000)
            .cast(pa.decimal128(21, 2))
            .cast(pa.decimal128(18, 2)),
            "established": pa.array(established.astype(np.int32), pa.date32()),
            "industry": take([full for full, _, _ in _INDUSTRIES], industry_idx),
            "status": take(
                [s for s, _ in _ENTERPRISE_STATUSES],
                weighted(rng, n, [w for _, w in _ENTERPRISE_STATUSES]),
            ),
        }
    )


# --- District population ------------------------------------------------------------------

POPULATION_YEARS = tuple(range(2020, 2025))


def district_population(seed: int = DEFAULT_SEED) -> pa.Table:
    """Year-end resident population and households of Guiyang's 10 districts, 2020–2024.

    Synthetic, but anchored on 2020-census magnitudes (about 6 million in all) with each
    district's trend (观山湖 growing fast, the outer counties flat or shrinking).
    """
    rng = table_rng(seed, 5)
    rows: dict[str, list[object]] = {k: [] for k in ("code", "name", "year", "pop", "hh")}
    for district, name in zip(DISTRICTS, district_names(), strict=True):
        persons_per_household = rng.uniform(2.4, 2.9)
        population = district.population_2020 * rng.uniform(0.98, 1.02)
        for year in POPULATION_YEARS:
            rows["code"].append(district.code)
            rows["name"].append(name)
            rows["year"].append(year)
            rows["pop"].append(round(population))
            rows["hh"].append(round(population / persons_per_household))
            population *= 1 + district.growth + rng.normal(0, 0.002)
    return pa.table(
        {
            "district_code": pa.array(rows["code"], pa.string()),
            "district_name": pa.array(rows["name"], pa.string()),
            "year": pa.array(rows["year"], pa.int32()),
            "population": pa.array(rows["pop"], pa.int64()),
            "households": pa.array(rows["hh"], pa.int64()),
        }
    )


# --- Hospital bed availability (an HTTP JSON API) -------------------------------------------

_HOSPITAL_KINDS: tuple[tuple[str, int], ...] = (
    ("人民医院", 900),
    ("中医医院", 500),
    ("妇幼保健院", 300),
    ("第二人民医院", 400),
)
_WARDS: tuple[tuple[str, float], ...] = (
    ("内科", 0.30),
    ("外科", 0.25),
    ("儿科", 0.12),
    ("妇产科", 0.10),
    ("重症医学科", 0.05),
    ("感染科", 0.08),
    ("急诊科", 0.10),
)


def hospital_beds(
    reports: int = 1, seed: int = DEFAULT_SEED, start: datetime = DEFAULT_START
) -> pa.Table:
    """Bed availability as a hospitals' reporting API serves it: one row per hospital ward
    and report, ``reports`` hourly reports from ``start``; ``report_id`` counts up in time
    order and ``updated_at`` is the report time (the API's incremental cursor).

    Four hospitals per district, seven wards each; occupancy runs high (85–98 %), as it
    does in winter, and ICU beds are the scarcest.
    """
    rng = table_rng(seed, 6)
    hospital_ids: list[str] = []
    hospital_names: list[str] = []
    districts: list[str] = []
    totals: list[int] = []
    for code, name in zip(GUIYANG_DISTRICT_CODES, district_names(), strict=True):
        for kind, beds in _HOSPITAL_KINDS:
            hospital_ids.append(f"H{code}{len(hospital_ids) % len(_HOSPITAL_KINDS) + 1:02d}")
            hospital_names.append(f"贵阳市{name}{kind}")
            districts.append(code)
            totals.append(int(beds * rng.uniform(0.6, 1.4)))
    wards = [w for w, _ in _WARDS]
    shares = np.array([s for _, s in _WARDS])
    n_h, n_w = len(hospital_ids), len(wards)
    per_report = n_h * n_w
    row = np.arange(reports * per_report, dtype=np.int64)
    report_idx, rest = row // per_report, row % per_report
    h_idx, w_idx = rest // n_w, rest % n_w
    total = np.maximum(4, np.round(np.array(totals)[h_idx] * shares[w_idx])).astype(np.int64)
    occupancy = np.clip(rng.normal(0.92, 0.04, row.size), 0.5, 1.0)
    free = np.maximum(0, np.round(total * (1 - occupancy))).astype(np.int64)
    updated = to_us(start) // US_PER_HOUR * US_PER_HOUR + report_idx * US_PER_HOUR
    return pa.table(
        {
            "report_id": pa.array(row + 1, pa.int64()),
            "hospital_id": take(hospital_ids, h_idx),
            "hospital_name": take(hospital_names, h_idx),
            "district_code": take(districts, h_idx),
            "ward": take(wards, w_idx),
            "beds_total": pa.array(total),
            "beds_free": pa.array(free),
            "updated_at": timestamps(updated),
        }
    )
