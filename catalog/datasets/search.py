"""Catalog search and freshness: pure functions over dataset records and versions.

Keywords match as case-insensitive substrings of the title, description, tags, column
names and column descriptions, so Chinese needs no word segmentation (``热线`` finds
``12345热线工单``); every keyword must match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from catalog.datasets.store import DatasetRecord, Version

_FREQ = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_frequency(text: str | None) -> timedelta | None:
    """``15m``, ``1h``, ``1d``, ``1w`` → a timedelta; None for anything else."""
    if not text:
        return None
    m = _FREQ.match(text)
    if not m:
        return None
    return timedelta(**{_UNIT[m.group(2).lower()]: int(m.group(1))})


@dataclass(frozen=True)
class Freshness:
    last_published: datetime | None
    update_frequency: str | None
    age_s: float | None
    stale: bool | None  # None when the manifest states no frequency

    def to_dict(self) -> dict[str, object]:
        return {
            "last_published": self.last_published,
            "update_frequency": self.update_frequency,
            "age_s": self.age_s,
            "stale": self.stale,
        }


def freshness(record: DatasetRecord, latest: Version | None, now: datetime) -> Freshness:
    """Stale when the last version is older than the stated frequency (or there is none)."""
    freq = parse_frequency(record.manifest.update_frequency)
    if latest is None:
        return Freshness(None, record.manifest.update_frequency, None, True if freq else None)
    age = (now - latest.committed_at).total_seconds()
    stale = None if freq is None else age > freq.total_seconds()
    return Freshness(latest.committed_at, record.manifest.update_frequency, age, stale)


def _haystack(d: DatasetRecord) -> str:
    m = d.manifest
    parts = [d.id, m.title, m.description, *m.tags]
    for c in m.columns:
        parts += [c.name, c.description]
    return "\n".join(parts).casefold()


def search(
    records: Iterable[DatasetRecord],
    *,
    q: str | None = None,
    agency: str | None = None,
    tag: str | None = None,
    sharing: str | None = None,
    classification: str | None = None,
) -> list[DatasetRecord]:
    terms = [t.casefold() for t in (q or "").split() if t]
    out = []
    for d in records:
        if agency and d.agency_id != agency:
            continue
        if tag and tag not in d.manifest.tags:
            continue
        if sharing and d.sharing != sharing:
            continue
        if classification and d.classification != classification:
            continue
        if terms:
            hay = _haystack(d)
            if not all(t in hay for t in terms):
                continue
        out.append(d)
    return out
