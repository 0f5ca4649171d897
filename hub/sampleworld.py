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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from catalog.domain.identifiers import ID_CHECK_CHARS, ID_WEIGHTS, USCC_CHARSET, USCC_WEIGHTS
from catalog.domain.regions import children, get_region

DEFAULT_SEED = 20240601
DEFAULT_START = datetime(2024, 6, 1, tzinfo=UTC)

GUIYANG_CODE = "520100"
GUIZHOU_CODE = "520000"
GUIYANG_BOUNDS = (26.18, 27.37, 106.12, 107.29)
"""(lat_min, lat_max, lon_min, lon_max) of Guiyang's territory, used to clip coordinates."""

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

IntArray = npt.NDArray[np.int64]

_US_PER_SECOND = 1_000_000
_US_PER_HOUR = 3600 * _US_PER_SECOND
_US_PER_DAY = 24 * _US_PER_HOUR
_BEIJING_OFFSET_US = 8 * _US_PER_HOUR  # China Standard Time, no daylight saving
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- The ten districts/counties of Guiyang -------------------------------------------


@dataclass(frozen=True, slots=True)
class _District:
    """Shape parameters of one district; code and name come from the region table."""

    code: str
    population_2020: int  # magnitude of the 2020 census, rounded: synthetic, not official
    growth: float  # yearly population growth used for later years
    lat: float  # around the district seat
    lon: float
    spread: float  # std-dev in degrees of generated coordinates around the seat
    roads: tuple[str, ...]


_DISTRICTS: tuple[_District, ...] = (
    _District("520102", 1_030_000, 0.006, 26.568, 106.714, 0.020,
              ("花果园大街", "中华南路", "遵义路", "新华路", "市南路", "沙冲南路", "宝山南路")),
    _District("520103", 1_150_000, 0.004, 26.605, 106.724, 0.018,
              ("中华北路", "延安中路", "宝山北路", "北京路", "黔灵西路", "枣山路", "三桥北路")),
    _District("520111", 900_000, 0.015, 26.410, 106.670, 0.050,
              ("花溪大道", "清溪路", "明珠大道", "甲秀南路", "溪北路", "田园南路")),
    _District("520112", 440_000, 0.012, 26.631, 106.751, 0.040,
              ("新添大道", "新天大道", "顺新路", "高新路", "水东路")),
    _District("520113", 390_000, 0.010, 26.679, 106.623, 0.030,
              ("白云南路", "白云北路", "云峰大道", "尖山路", "艳山红路")),
    _District("520115", 600_000, 0.035, 26.601, 106.622, 0.025,
              ("长岭北路", "林城西路", "金阳南路", "诚信路", "兴筑路", "金朱路")),
    _District("520121", 350_000, -0.004, 27.058, 106.965, 0.060,
              ("紫江路", "开州大道", "南环路", "新华路")),
    _District("520122", 200_000, -0.006, 27.090, 106.740, 0.050,
              ("永靖大道", "温泉路", "新华路", "城南路")),
    _District("520123", 300_000, 0.002, 26.839, 106.592, 0.050,
              ("阳明大道", "龙场大道", "翠屏路", "文昌路")),
    _District("520181", 520_000, 0.005, 26.556, 106.471, 0.050,
              ("云岭中路", "红枫大道", "百花路", "站街路", "环城路")),
)  # fmt: skip

GUIYANG_DISTRICT_CODES: tuple[str, ...] = tuple(d.code for d in _DISTRICTS)


@cache
def _district_names() -> tuple[str, ...]:
    names = []
    for d in _DISTRICTS:
        region = get_region(d.code)
        if region is None or region.parent != GUIYANG_CODE:
            raise RuntimeError(f"region table lacks Guiyang district {d.code}")
        names.append(region.name)
    return tuple(names)


@cache
def _district_townships() -> tuple[tuple[str, ...], ...]:
    """Real township/sub-district names per district, in district order."""
    return tuple(
        tuple(r.name for r in children(d.code) if r.level == "township") or ("城区",)
        for d in _DISTRICTS
    )


@cache
def _guizhou_county_codes() -> tuple[str, ...]:
    return tuple(county.code for city in children(GUIZHOU_CODE) for county in children(city.code))


# --- Vocabularies ---------------------------------------------------------------------

_SURNAMES: tuple[tuple[str, float], ...] = (
    ("王", 7.1), ("李", 7.0), ("张", 6.7), ("刘", 5.4), ("陈", 4.6), ("杨", 4.0),
    ("黄", 2.5), ("赵", 2.3), ("吴", 2.6), ("周", 1.9), ("徐", 1.5), ("孙", 1.5),
    ("马", 1.4), ("朱", 1.3), ("胡", 1.3), ("郭", 1.2), ("何", 1.2), ("林", 1.1),
    ("罗", 1.3), ("高", 1.1), ("郑", 0.9), ("梁", 0.9), ("谢", 0.8), ("宋", 0.7),
    ("唐", 0.7), ("许", 0.6), ("韩", 0.6), ("冯", 0.6), ("邓", 0.6), ("曹", 0.6),
    ("彭", 0.6), ("曾", 0.5), ("肖", 0.5), ("田", 0.6), ("董", 0.5), ("袁", 0.4),
    ("潘", 0.4), ("蒋", 0.4), ("蔡", 0.4), ("余", 0.4), ("杜", 0.4), ("叶", 0.4),
    ("龙", 0.6), ("石", 0.4), ("韦", 0.4), ("班", 0.1), ("欧阳", 0.05), ("上官", 0.02),
)  # fmt: skip
_GIVEN_CHARS = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉萍红建文辉力鹏宇浩凯婷雪琳晨欣"
    "怡佳子梓涵轩博思雨然俊峰斌云海波慧颖倩洁兰梅燕鑫江春国庆志荣德成祥福贵兴"
)
_MOBILE_PREFIXES = (
    130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 147, 150, 151, 152, 153, 155, 156,
    157, 158, 159, 166, 173, 175, 176, 177, 178, 180, 181, 182, 183, 184, 185, 186, 187,
    188, 189, 191, 193, 195, 198, 199,
)  # fmt: skip

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
_BORN_IN_GUIYANG = 0.6  # share of callers whose ID carries a Guiyang district code
_HOURLY_PROFILE = (
    1.0, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 5.0, 7.0, 7.5, 7.0,
    5.0, 5.5, 6.5, 6.5, 6.0, 5.0, 4.0, 4.0, 3.5, 3.0, 2.2, 1.5,
)  # fmt: skip


# --- Small vectorised building blocks --------------------------------------------------


def _rng(seed: int, table: int) -> np.random.Generator:
    """One independent stream per table, so adding a column to one leaves the others."""
    return np.random.default_rng([seed, table])


_WEIGHT_RESOLUTION = 1 << 16


def _weighted(rng: np.random.Generator, n: int, weights: Sequence[float]) -> IntArray:
    """Indices drawn with probability ∝ ``weights``, quantised to 1/65536.

    A lookup table indexed by uniform integers is several times faster than
    ``Generator.choice(p=...)`` (a binary search per row), and the quantisation is far
    below anything the synthetic data pretends to.
    """
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    bounds = np.round(cdf / cdf[-1] * _WEIGHT_RESOLUTION).astype(np.int64)
    table = np.repeat(np.arange(len(bounds), dtype=np.int64), np.diff(bounds, prepend=0))
    return table[rng.integers(0, _WEIGHT_RESOLUTION, size=n)]


def _take(values: Sequence[str], idx: npt.NDArray[np.integer]) -> pa.Array:
    return pc.take(pa.array(values, pa.string()), pa.array(idx))


def _join(*parts: pa.Array | str) -> pa.Array:
    """Element-wise concatenation; plain strings are broadcast."""
    return pc.binary_join_element_wise(*parts, "")


def _int_text(values: npt.NDArray[np.integer]) -> pa.Array:
    return pa.array(values).cast(pa.string())


def _grouped_take(
    rng: np.random.Generator, group: IntArray, vocab: Sequence[Sequence[str]]
) -> pa.Array:
    """For each row, a uniform pick from the vocabulary list of the row's group."""
    counts = np.array([len(v) for v in vocab], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    flat = [word for words in vocab for word in words]
    idx = offsets[group] + (rng.random(group.size) * counts[group]).astype(np.int64)
    return _take(flat, idx)


def _to_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {moment.isoformat()} needs a time zone")
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _timestamps(us: IntArray) -> pa.Array:
    return pa.array(us, pa.timestamp("us", tz="UTC"))


# --- Identifiers, vectorised ------------------------------------------------------------


def id_check_chars(digits: npt.NDArray[np.integer]) -> npt.NDArray[np.str_]:
    """ID check characters for an ``(n, 17)`` matrix of the first 17 digits (GB 11643)."""
    return np.array(list(ID_CHECK_CHARS))[_id_check_index(digits)]


def _weighted_sum(matrix: npt.NDArray[np.integer], weights: Sequence[int]) -> IntArray:
    """``matrix @ weights`` for small non-negative integers, column by column.

    numpy has no BLAS path for integer matmul; summing 17 scaled columns of a
    column-major matrix is about ten times faster than ``@`` at millions of rows.
    """
    columns = np.asfortranarray(matrix)
    total = np.zeros(columns.shape[0], dtype=np.int32)
    for col, weight in enumerate(weights):
        total += columns[:, col].astype(np.int32) * weight
    return total.astype(np.int64)


def _id_check_index(digits: npt.NDArray[np.integer]) -> IntArray:
    """Index into ``ID_CHECK_CHARS``: weighted digit sum mod 11."""
    return _weighted_sum(digits, ID_WEIGHTS) % 11


def uscc_check_chars(values: npt.NDArray[np.integer]) -> npt.NDArray[np.str_]:
    """Credit-code check characters for an ``(n, 17)`` matrix of character values (0–30)."""
    return np.array(list(USCC_CHARSET))[_uscc_check_index(values)]


def _uscc_check_index(values: npt.NDArray[np.integer]) -> IntArray:
    """Index into ``USCC_CHARSET``: 31 − (weighted sum mod 31), with 31 written as 0."""
    return (31 - _weighted_sum(values, USCC_WEIGHTS) % 31) % 31


def _put_digits(out: npt.NDArray[np.uint8], first: int, values: IntArray, width: int) -> None:
    """Write ``width`` decimal digits of ``values`` into columns ``first…`` of ``out``."""
    rest = values.astype(np.int32)  # int32 division is much faster than int64
    for col in range(first + width - 1, first - 1, -1):
        out[:, col] = rest % 10
        rest //= 10


_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def _birth_dates(rng: np.random.Generator, n: int) -> tuple[IntArray, IntArray, IntArray]:
    """Year, month, day of real dates 1945–2006 (not calendar-uniform, close enough)."""
    year = rng.integers(1945, 2007, size=n, dtype=np.int64)
    month = rng.integers(1, 13, size=n, dtype=np.int64)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    days = _DAYS_IN_MONTH[month] + ((month == 2) & leap)
    day = 1 + (rng.random(n) * days).astype(np.int64)
    return year, month, day


def _id_numbers(
    rng: np.random.Generator, n: int, regions: Sequence[str], weights: Sequence[float]
) -> pa.Array:
    """Valid 18-character ID numbers with the given region prefixes, born 1945–2006."""
    region_idx = _weighted(rng, n, weights)
    year, month, day = _birth_dates(rng, n)
    yyyymmdd = year * 10_000 + month * 100 + day
    sequence = rng.integers(0, 1000, size=n, dtype=np.int64)  # last digit odd = male
    digits = np.empty((n, 17), dtype=np.uint8, order="F")  # column writes stay contiguous
    region_digits = np.array([[int(ch) for ch in code] for code in regions], dtype=np.uint8)
    digits[:, :6] = region_digits[region_idx]
    _put_digits(digits, 6, yyyymmdd, 8)
    _put_digits(digits, 14, sequence, 3)
    region_int = np.array([int(code) for code in regions], dtype=np.int64)[region_idx]
    first17 = region_int * 10**11 + yyyymmdd * 1000 + sequence
    return _join(_int_text(first17), _take(ID_CHECK_CHARS, _id_check_index(digits)))


def _mobiles(rng: np.random.Generator, n: int) -> pa.Array:
    prefix = np.array(_MOBILE_PREFIXES, dtype=np.int64)[rng.integers(0, len(_MOBILE_PREFIXES), n)]
    return _int_text(prefix * 10**8 + rng.integers(0, 10**8, size=n, dtype=np.int64))


@cache
def _full_names() -> pa.Array:
    """Every surname × given-name combination, surname-major (about 400k strings).

    Building the vocabulary once and taking from it is one Arrow ``take`` per row
    instead of several element-wise joins.
    """
    chars = list(_GIVEN_CHARS)
    given = chars + [a + b for a in chars for b in chars]
    return pa.array([s + g for s, _ in _SURNAMES for g in given], pa.string())


def _names(rng: np.random.Generator, n: int) -> pa.Array:
    """Chinese full names: a frequency-weighted surname and a one- or two-character name."""
    k = len(_GIVEN_CHARS)
    surname = _weighted(rng, n, [w for _, w in _SURNAMES])
    two_chars = rng.random(n) < 0.65
    given = np.where(two_chars, k + rng.integers(0, k * k, size=n), rng.integers(0, k, size=n))
    return pc.take(_full_names(), pa.array(surname * (k + k * k) + given))


def _coordinates(rng: np.random.Generator, district_idx: IntArray) -> tuple[pa.Array, pa.Array]:
    lat0 = np.array([d.lat for d in _DISTRICTS])[district_idx]
    lon0 = np.array([d.lon for d in _DISTRICTS])[district_idx]
    spread = np.array([d.spread for d in _DISTRICTS])[district_idx]
    lat_min, lat_max, lon_min, lon_max = GUIYANG_BOUNDS
    lat = np.clip(lat0 + rng.standard_normal(district_idx.size) * spread, lat_min, lat_max)
    lon = np.clip(lon0 + rng.standard_normal(district_idx.size) * spread, lon_min, lon_max)
    return pa.array(np.round(lat, 6)), pa.array(np.round(lon, 6))


@cache
def _street_prefixes() -> tuple[tuple[str, ...], ...]:
    """Per district, every ``贵州省贵阳市{区}{街道}{路}`` combination (a few hundred each)."""
    return tuple(
        tuple(f"贵州省贵阳市{name}{town}{road}" for town in towns for road in district.roads)
        for district, name, towns in zip(
            _DISTRICTS, _district_names(), _district_townships(), strict=True
        )
    )


_HOUSE_NUMBERS = tuple(f"{i}号" for i in range(1, 300))


def _addresses(rng: np.random.Generator, district_idx: IntArray) -> pa.Array:
    """``贵州省贵阳市南明区花果园街道花果园大街12号``: real township names, made-up numbers."""
    return _join(
        _grouped_take(rng, district_idx, _street_prefixes()),
        _take(_HOUSE_NUMBERS, rng.integers(0, len(_HOUSE_NUMBERS), size=district_idx.size)),
    )


# --- 12345 hotline tickets --------------------------------------------------------------


def _created_us(rng: np.random.Generator, n: int, start_us: int, end_us: int) -> IntArray:
    """Creation times in [start, end), busier in Beijing office hours, sorted."""
    first_day = (start_us + _BEIJING_OFFSET_US) // _US_PER_DAY
    last_day = (end_us - 1 + _BEIJING_OFFSET_US) // _US_PER_DAY
    local_day = rng.integers(first_day, last_day + 1, size=n, dtype=np.int64)
    hour = _weighted(rng, n, _HOURLY_PROFILE)
    within = rng.integers(0, _US_PER_HOUR, size=n, dtype=np.int64)
    created = local_day * _US_PER_DAY + hour * _US_PER_HOUR + within - _BEIJING_OFFSET_US
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
    age_h = (end_us - created) / _US_PER_HOUR
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
    return status, created + (last_h * _US_PER_HOUR).astype(np.int64)


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
    start_us, end_us = _to_us(start), _to_us(end)
    if end_us <= start_us:
        raise ValueError("end must be after start")
    rng = _rng(seed, 1)
    created = _created_us(rng, n, start_us, end_us)
    status, updated = _status_and_update(rng, created, end_us)
    district_idx = _weighted(rng, n, [d.population_2020 for d in _DISTRICTS])
    category_idx = _weighted(rng, n, _CATEGORY_WEIGHTS)
    lat, lon = _coordinates(rng, district_idx)
    guizhou = _guizhou_county_codes()
    born_here, born_elsewhere = _BORN_IN_GUIYANG / 10, (1 - _BORN_IN_GUIYANG) / (len(guizhou) - 10)
    id_weights = [born_here if c in GUIYANG_DISTRICT_CODES else born_elsewhere for c in guizhou]
    columns = [
        pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
        _timestamps(created),
        _timestamps(updated),
        _take(GUIYANG_DISTRICT_CODES, district_idx),
        _take(HOTLINE_CATEGORIES, category_idx),
        _take(HOTLINE_STATUSES, status),
        _names(rng, n),
        _mobiles(rng, n),
        _id_numbers(rng, n, guizhou, id_weights),
        _addresses(rng, district_idx),
        _grouped_take(rng, category_idx, _CATEGORY_PHRASES),
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
    rng = _rng(seed, 2)
    ids: list[str] = []
    names: list[str] = []
    addresses: list[str] = []
    district_idx: list[int] = []
    for i, (district, townships) in enumerate(zip(_DISTRICTS, _district_townships(), strict=True)):
        picks = rng.choice(len(townships), size=_STATIONS_PER_DISTRICT, replace=False)
        for township in (townships[int(p)] for p in sorted(picks)):
            stem = township.removesuffix("街道").removesuffix("镇").removesuffix("乡")
            road = district.roads[int(rng.integers(len(district.roads)))]
            ids.append(f"GYAQ{len(ids) + 1:02d}")
            names.append(f"{stem}监测站")
            addresses.append(
                f"贵州省贵阳市{_district_names()[i]}{township}{road}{int(rng.integers(1, 200))}号"
            )
            district_idx.append(i)
    lat, lon = _coordinates(rng, np.array(district_idx, dtype=np.int64))
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
    rng = _rng(seed, 3)
    row = np.arange(n, dtype=np.int64)
    station_idx, hour_idx = row % n_stations, row // n_stations
    measured = _to_us(start) // _US_PER_HOUR * _US_PER_HOUR + hour_idx * _US_PER_HOUR
    local_hour = ((measured + _BEIJING_OFFSET_US) // _US_PER_HOUR) % 24
    day_of_year = ((measured + _BEIJING_OFFSET_US) // _US_PER_DAY) % 365
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
            "measured_at": _timestamps(measured),
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
    district_digits = np.array([[int(ch) for ch in d.code] for d in _DISTRICTS])[district_idx]
    values = np.concatenate(
        [
            np.tile(np.array([9, 1], dtype=np.int64), (n, 1)),
            district_digits,
            charset_values[body_values],
            org_check_value[:, None],
        ],
        axis=1,
    )
    check = _uscc_check_index(values)
    return _join(
        *(_take(USCC_CHARSET, values[:, k]) for k in range(17)), _take(USCC_CHARSET, check)
    )


def enterprises(n: int, seed: int = DEFAULT_SEED) -> pa.Table:
    """``n`` registered enterprises in Guiyang's districts, as the market regulator lists them.

    Credit codes are unique within a call (the organisation part is an affine permutation
    of the row number) and carry both the GB 32100 and the embedded GB 11714 check.
    """
    rng = _rng(seed, 4)
    district_idx = _weighted(rng, n, [d.population_2020 for d in _DISTRICTS])
    industry_idx = _weighted(rng, n, [w for _, _, w in _INDUSTRIES])
    trade = list(_TRADE_CHARS)
    district_short = [name[:-1] for name in _district_names()]  # 南明区 → 南明
    place = pc.if_else(
        pa.array(rng.random(n) < 0.5),
        pa.scalar("贵州"),
        _join("贵阳", _take(district_short, district_idx)),
    )
    name = _join(
        place,
        _take(trade, rng.integers(0, len(trade), n)),
        _take(trade, rng.integers(0, len(trade), n)),
        _take([word for _, word, _ in _INDUSTRIES], industry_idx),
        _take([f for f, _ in _LEGAL_FORMS], _weighted(rng, n, [w for _, w in _LEGAL_FORMS])),
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
            "district_code": _take(GUIYANG_DISTRICT_CODES, district_idx),
            "legal_rep": _names(rng, n),
            "phone": _mobiles(rng, n),
            # int64 → decimal needs 19 + 2 digits of precision first; values fit in (18, 2).
            "registered_capital": pa.array(capital_wan * 10_000)
            .cast(pa.decimal128(21, 2))
            .cast(pa.decimal128(18, 2)),
            "established": pa.array(established.astype(np.int32), pa.date32()),
            "industry": _take([full for full, _, _ in _INDUSTRIES], industry_idx),
            "status": _take(
                [s for s, _ in _ENTERPRISE_STATUSES],
                _weighted(rng, n, [w for _, w in _ENTERPRISE_STATUSES]),
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
    rng = _rng(seed, 5)
    rows: dict[str, list[object]] = {k: [] for k in ("code", "name", "year", "pop", "hh")}
    for district, name in zip(_DISTRICTS, _district_names(), strict=True):
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
    rng = _rng(seed, 6)
    hospital_ids: list[str] = []
    hospital_names: list[str] = []
    districts: list[str] = []
    totals: list[int] = []
    for code, name in zip(GUIYANG_DISTRICT_CODES, _district_names(), strict=True):
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
    updated = _to_us(start) // _US_PER_HOUR * _US_PER_HOUR + report_idx * _US_PER_HOUR
    return pa.table(
        {
            "report_id": pa.array(row + 1, pa.int64()),
            "hospital_id": _take(hospital_ids, h_idx),
            "hospital_name": _take(hospital_names, h_idx),
            "district_code": _take(districts, h_idx),
            "ward": _take(wards, w_idx),
            "beds_total": pa.array(total),
            "beds_free": pa.array(free),
            "updated_at": _timestamps(updated),
        }
    )
