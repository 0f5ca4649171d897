"""Free-text Chinese addresses → GB/T 2260 region codes, without guessing.

Parsing is done by JioNLP (``jionlp.parse_location``, Apache-2.0, maintained, ships its
place-name dictionary, works offline); the code comes from blockhub's own GB/T 2260 table
(:mod:`catalog.domain.regions`), so both agree on what a region is.  JioNLP fills in what the text
leaves out — useful, but it also *guesses*: ``花溪大道100号`` (a road) becomes 花溪区, and a
bare ``朝阳区`` is picked from two provinces.  An address is therefore resolved only when:

- the county-level name JioNLP found appears literally in the text, and
- that name is unique in the table, or the text also names its city or province;

otherwise it is unresolved (``None``) and the caller counts it.  A township of the county
whose name appears literally in the text refines the code to its 12 digits.

JioNLP loads a dictionary of ~700k lines on first use (about 4 s); results are cached per
distinct address, so a batch of millions of rows with a few thousand addresses costs a few
thousand parses.
"""

from __future__ import annotations

import contextlib
import io
import threading
from functools import cache, lru_cache
from typing import Any

from catalog.domain.regions import Region, children, get_region, load_regions

_lock = threading.Lock()


@cache
def _parser() -> Any:
    # JioNLP prints a banner on import; keep it off the CLI's stdout (JSON output, pipes).
    with _lock, contextlib.redirect_stdout(io.StringIO()):
        import jionlp

        jionlp.parse_location("贵州省贵阳市南明区")  # loads the dictionary once, under the lock
    return jionlp.parse_location


@cache
def _counties_by_name() -> dict[str, tuple[Region, ...]]:
    index: dict[str, list[Region]] = {}
    for region in load_regions().values():
        if region.level == "county":
            index.setdefault(region.name, []).append(region)
    return {name: tuple(rs) for name, rs in index.items()}


def _short(name: str) -> str:
    """``贵州省`` → ``贵州``, ``贵阳市`` → ``贵阳``: how people write the upper levels."""
    for suffix in ("特别行政区", "自治区", "自治州", "地区", "省", "市", "盟"):
        if name.endswith(suffix) and len(name) - len(suffix) >= 2:
            return name[: -len(suffix)]
    return name


def _named_in(text: str, region: Region | None) -> bool:
    return region is not None and (region.name in text or _short(region.name) in text)


def _township(county: Region, text: str) -> Region | None:
    """The county's township whose full name appears in the text (longest wins)."""
    best: Region | None = None
    for town in children(county.code):
        longer = best is None or len(town.name) > len(best.name)
        if town.level == "township" and town.name in text and longer:
            best = town
    return best


@lru_cache(maxsize=200_000)
def resolve_address(text: str) -> str | None:
    """The region code of an address (12-digit township or 6-digit county), or ``None``."""
    text = text.strip()
    if not text:
        return None
    parsed = _parser()(text, town_village=False)
    county_name = parsed.get("county")
    if not county_name or county_name not in text:
        return None
    candidates = _counties_by_name().get(county_name, ())
    if len(candidates) > 1:  # 朝阳区, 新华区 …: only the city or province in the text decides
        candidates = tuple(
            c for c in candidates if _named_in(text, _parent(c)) or _named_in(text, _province(c))
        )
    if len(candidates) != 1:
        return None
    county = candidates[0]
    town = _township(county, text)
    return town.code if town is not None else county.code


def _parent(region: Region) -> Region | None:
    return get_region(region.parent) if region.parent else None


def _province(region: Region) -> Region | None:
    node: Region | None = region
    while node is not None and node.parent is not None:
        node = get_region(node.parent)
    return node
