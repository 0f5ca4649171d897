"""GB/T 2260 administrative divisions: the keys that tie agency datasets to a block.

Block data is "everything the agencies know about one place", so region codes have to
be checked and walked (district → city → province) the same way everywhere.  The table
is the committed ``catalog/domain/data/gbt2260.csv`` (source and date in
``catalog/domain/data/README.md``), read once and cached; nothing here touches the network.

Codes come in two widths: 6 digits (province ``520000``, city ``520100``, county
``520102``) and 12 digits (the first 6 are the county; ``520102000000`` is the county
itself, ``520102018000`` a township).  Every function accepts either width.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal, get_args

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

RegionLevel = Literal["province", "city", "county", "township"]
_LEVELS: frozenset[str] = frozenset(get_args(RegionLevel))

_DATA_PACKAGE = "catalog.domain.data"
_DATA_FILE = "gbt2260.csv"
_HISTORICAL_FILE = "gbt2260_historical.csv"


@dataclass(frozen=True, slots=True)
class Region:
    """One division; ``parent`` is ``None`` only for provinces."""

    code: str
    name: str
    level: RegionLevel
    parent: str | None


def normalize_code(code: str) -> str | None:
    """The code as stored in the table, or ``None`` if it is not 6 or 12 ASCII digits.

    A 12-digit code whose last 6 digits are zero is a county or above and maps to its
    6-digit form; other 12-digit codes are kept (townships are stored with 12 digits).
    """
    code = code.strip()
    if not code.isascii() or not code.isdigit():
        return None
    if len(code) == 6:
        return code
    if len(code) == 12:
        return code[:6] if code.endswith("000000") else code
    return None


@cache
def _table() -> dict[str, Region]:
    """The divisions as objects, built once per process from :func:`region_codes_table`."""
    cols = region_codes_table().to_pydict()
    return {
        code: Region(code=code, name=name, level=level, parent=parent)
        for code, name, level, parent in zip(
            cols["code"], cols["name"], cols["level"], cols["parent"], strict=True
        )
    }


@cache
def _children_index() -> dict[str, tuple[Region, ...]]:
    index: dict[str, list[Region]] = {}
    for region in _table().values():
        if region.parent is not None:
            index.setdefault(region.parent, []).append(region)
    return {code: tuple(sorted(kids, key=lambda r: r.code)) for code, kids in index.items()}


def load_regions() -> dict[str, Region]:
    """Every known division keyed by its stored code (a fresh dict over a cached parse)."""
    return dict(_table())


def get_region(code: str) -> Region | None:
    """The division for a 6- or 12-digit code, or ``None`` if it is not in the table."""
    key = normalize_code(code)
    return None if key is None else _table().get(key)


def _require(code: str) -> Region:
    region = get_region(code)
    if region is None:
        raise KeyError(f"unknown region code {code!r}")
    return region


def region_exists(code: str) -> bool:
    """True if ``code`` (6 or 12 digits) names a current division in the table.

    Village-level 12-digit codes are not in the table and answer ``False``.
    """
    return get_region(code) is not None


def ancestors(code: str) -> list[Region]:
    """The divisions above ``code``, province first (for building 省市区 address prefixes).

    Raises ``KeyError`` for an unknown code.
    """
    table = _table()
    chain: list[Region] = []
    parent = _require(code).parent
    while parent is not None:
        region = table[parent]
        chain.append(region)
        parent = region.parent
    chain.reverse()
    return chain


def children(code: str) -> list[Region]:
    """The divisions directly under ``code``, ordered by code (``[]`` for a leaf).

    Raises ``KeyError`` for an unknown code.
    """
    return list(_children_index().get(_require(code).code, ()))


def full_name(code: str) -> str:
    """Names from the province down, concatenated: ``520102`` → ``贵州省贵阳市南明区``."""
    return "".join(r.name for r in [*ancestors(code), _require(code)])


@cache
def region_codes_table() -> pa.Table:
    """The whole table as Arrow (code, name, level, parent), e.g. to join in DuckDB: the
    one reading of the CSV, by Arrow's reader (Python's csv module took 0.5 s of every
    quality gate's start for the 42,000 rows)."""
    data = resources.files(_DATA_PACKAGE).joinpath(_DATA_FILE).read_bytes()
    names = ["code", "name", "level", "parent"]
    table = pacsv.read_csv(
        pa.BufferReader(data),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            include_columns=names,
            strings_can_be_null=True,
            null_values=[""],
        ),
    )
    levels = pa.array(sorted(_LEVELS), pa.string())
    bad = pc.invert(pc.is_in(table.column("level"), value_set=levels))
    if pc.any(bad).as_py():
        row = table.filter(bad).slice(0, 1).to_pylist()[0]
        raise ValueError(f"{_DATA_FILE}: unknown level {row['level']!r} for {row['code']}")
    return table.combine_chunks()


@cache
def retired_codes_table() -> pa.Table:
    """6-digit codes valid once but not any more (code, name, retired, city): abolished or
    re-coded divisions since 1980 and the 市辖区 placeholders of cities
    (``catalog/domain/data/gbt2260_historical.csv``, source in
    ``catalog/domain/data/README.md``)."""
    data = resources.files(_DATA_PACKAGE).joinpath(_HISTORICAL_FILE).read_bytes()
    names = ["code", "name", "retired", "city"]
    return pacsv.read_csv(
        pa.BufferReader(data),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            strings_can_be_null=True,
            null_values=[""],
        ),
    ).combine_chunks()


@cache
def id_prefixes_table() -> pa.Table:
    """Every 6-digit code a resident ID number may start with (one ``code`` column): the
    current divisions at any level and the retired ones, since a number keeps the code of
    the place that first issued it."""
    current = region_codes_table().select(["code"])
    six = current.filter(pc.equal(pc.utf8_length(current.column("code")), 6))
    retired = retired_codes_table().select(["code"])
    return pa.concat_tables([six, retired]).group_by("code").aggregate([]).combine_chunks()


@cache
def _id_prefixes() -> frozenset[str]:
    return frozenset(id_prefixes_table().column("code").to_pylist())


def id_prefix_known(code: str) -> bool:
    """True for a 6-digit code, current or retired, that an ID number may start with."""
    return code in _id_prefixes()
