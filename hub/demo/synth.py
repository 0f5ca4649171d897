"""The building blocks of the synthetic sample world, vectorised: Guiyang's districts and
townships, people's names, phones, ID numbers with valid check characters, coordinates and
addresses, drawn from one numpy ``Generator`` with Arrow compute kernels (never row by row:
see :mod:`hub.demo.sampleworld` for why speed matters)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from catalog.domain.identifiers import ID_CHECK_CHARS, ID_WEIGHTS, USCC_CHARSET, USCC_WEIGHTS
from catalog.domain.regions import children, get_region

GUIYANG_CODE = "520100"
GUIZHOU_CODE = "520000"
GUIYANG_BOUNDS = (26.18, 27.37, 106.12, 107.29)
"""(lat_min, lat_max, lon_min, lon_max) of Guiyang's territory, used to clip coordinates."""

IntArray = npt.NDArray[np.int64]

_US_PER_SECOND = 1_000_000
US_PER_HOUR = 3600 * _US_PER_SECOND
US_PER_DAY = 24 * US_PER_HOUR
BEIJING_OFFSET_US = 8 * US_PER_HOUR  # China Standard Time, no daylight saving
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


DISTRICTS: tuple[_District, ...] = (
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

GUIYANG_DISTRICT_CODES: tuple[str, ...] = tuple(d.code for d in DISTRICTS)


@cache
def district_names() -> tuple[str, ...]:
    names = []
    for d in DISTRICTS:
        region = get_region(d.code)
        if region is None or region.parent != GUIYANG_CODE:
            raise RuntimeError(f"region table lacks Guiyang district {d.code}")
        names.append(region.name)
    return tuple(names)


@cache
def district_townships() -> tuple[tuple[str, ...], ...]:
    """Real township/sub-district names per district, in district order."""
    return tuple(
        tuple(r.name for r in children(d.code) if r.level == "township") or ("城区",)
        for d in DISTRICTS
    )


@cache
def guizhou_county_codes() -> tuple[str, ...]:
    return tuple(county.code for city in children(GUIZHOU_CODE) for county in children(city.code))


# --- Names and phones -------------------------------------------------------------------

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

BORN_IN_GUIYANG = 0.6  # share of callers whose ID carries a Guiyang district code


# --- Small vectorised building blocks --------------------------------------------------


def table_rng(seed: int, table: int) -> np.random.Generator:
    """One independent stream per table, so adding a column to one leaves the others."""
    return np.random.default_rng([seed, table])


_WEIGHT_RESOLUTION = 1 << 16


def weighted(rng: np.random.Generator, n: int, weights: Sequence[float]) -> IntArray:
    """Indices drawn with probability ∝ ``weights``, quantised to 1/65536.

    A lookup table indexed by uniform integers is several times faster than
    ``Generator.choice(p=...)`` (a binary search per row), and the quantisation is far
    below anything the synthetic data pretends to.
    """
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    bounds = np.round(cdf / cdf[-1] * _WEIGHT_RESOLUTION).astype(np.int64)
    table = np.repeat(np.arange(len(bounds), dtype=np.int64), np.diff(bounds, prepend=0))
    return table[rng.integers(0, _WEIGHT_RESOLUTION, size=n)]


def take(values: Sequence[str], idx: npt.NDArray[np.integer]) -> pa.Array:
    return pc.take(pa.array(values, pa.string()), pa.array(idx))


def join(*parts: pa.Array | str) -> pa.Array:
    """Element-wise concatenation; plain strings are broadcast."""
    return pc.binary_join_element_wise(*parts, "")


def _int_text(values: npt.NDArray[np.integer]) -> pa.Array:
    return pa.array(values).cast(pa.string())


def grouped_take(
    rng: np.random.Generator, group: IntArray, vocab: Sequence[Sequence[str]]
) -> pa.Array:
    """For each row, a uniform pick from the vocabulary list of the row's group."""
    counts = np.array([len(v) for v in vocab], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    flat = [word for words in vocab for word in words]
    idx = offsets[group] + (rng.random(group.size) * counts[group]).astype(np.int64)
    return take(flat, idx)


def to_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {moment.isoformat()} needs a time zone")
    return (moment - _EPOCH) // timedelta(microseconds=1)


def timestamps(us: IntArray) -> pa.Array:
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
    return np.array(list(USCC_CHARSET))[uscc_check_index(values)]


def uscc_check_index(values: npt.NDArray[np.integer]) -> IntArray:
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


def id_numbers(
    rng: np.random.Generator, n: int, regions: Sequence[str], weights: Sequence[float]
) -> pa.Array:
    """Valid 18-character ID numbers with the given region prefixes, born 1945–2006."""
    region_idx = weighted(rng, n, weights)
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
    return join(_int_text(first17), take(ID_CHECK_CHARS, _id_check_index(digits)))


def mobiles(rng: np.random.Generator, n: int) -> pa.Array:
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


def person_names(rng: np.random.Generator, n: int) -> pa.Array:
    """Chinese full names: a frequency-weighted surname and a one- or two-character name."""
    k = len(_GIVEN_CHARS)
    surname = weighted(rng, n, [w for _, w in _SURNAMES])
    two_chars = rng.random(n) < 0.65
    given = np.where(two_chars, k + rng.integers(0, k * k, size=n), rng.integers(0, k, size=n))
    return pc.take(_full_names(), pa.array(surname * (k + k * k) + given))


def coordinates(rng: np.random.Generator, district_idx: IntArray) -> tuple[pa.Array, pa.Array]:
    lat0 = np.array([d.lat for d in DISTRICTS])[district_idx]
    lon0 = np.array([d.lon for d in DISTRICTS])[district_idx]
    spread = np.array([d.spread for d in DISTRICTS])[district_idx]
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
            DISTRICTS, district_names(), district_townships(), strict=True
        )
    )


_HOUSE_NUMBERS = tuple(f"{i}号" for i in range(1, 300))


def addresses(rng: np.random.Generator, district_idx: IntArray) -> pa.Array:
    """``贵州省贵阳市南明区花果园街道花果园大街12号``: real township names, made-up numbers."""
    return join(
        grouped_take(rng, district_idx, _street_prefixes()),
        take(_HOUSE_NUMBERS, rng.integers(0, len(_HOUSE_NUMBERS), size=district_idx.size)),
    )
