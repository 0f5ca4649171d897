"""What a reader sees of a version: the SELECT of its access profile (visible columns,
masks, row filters), the copies of it that rooms hold (made by the :class:`Loader`, which
reads the lake and never runs user SQL), and the columns a query's plan read of each."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from catalog.access.effective import Access
from catalog.access.masking import mask_sql
from catalog.datasets.store import Version
from catalog.sqltext import quote_ident, quote_literal
from hub.exchange.replicas import Replicas, write_copy
from hub.exchange.rooms import RoomObject, profile_digest, scan_sql

log = logging.getLogger(__name__)


_q = quote_ident
_lit = quote_literal


def profile_sql(source: str, access: Access) -> str:
    """The SELECT of a version as ``access`` sees it, over ``source`` (a relation: a
    quoted name or a parenthesised query): visible columns, masks, row filters.

    The owning agency reads its table as it is, including columns a source grew under
    ``schema_policy: evolve`` that the manifest does not declare yet; every other reader
    sees declared columns only, since an undeclared column has no personal-data tag."""
    if access.via == "owner" and not access.masked and access.row_filters is None:
        return f"SELECT * FROM {source}"
    exprs = []
    for col in access.columns:
        kind = access.masked.get(col)
        exprs.append(f"{mask_sql(kind, _q(col))} AS {_q(col)}" if kind else _q(col))
    sql = f"SELECT {', '.join(exprs)} FROM {source}"
    if access.row_filters is not None:
        alternatives = []
        for f in access.row_filters:
            parts = [
                f"CAST({_q(c)} AS VARCHAR) IN ({', '.join(_lit(v) for v in vals)})"
                for c, vals in sorted(f.items())
            ]
            alternatives.append("(" + (" AND ".join(parts) or "TRUE") + ")")
        sql += " WHERE " + (" OR ".join(alternatives) or "FALSE")
    return sql


_IDENT = re.compile(r'"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_]*)')


def _names(text: str) -> set[str]:
    """The identifiers in a plan's text (a filter such as ``district_code='520102'``)."""
    return {(q.replace('""', '"') if q else bare).lower() for q, bare in _IDENT.findall(text)}


def columns_from_plan(
    plan: Any, placed: Mapping[str, RoomObject], named: frozenset[str]
) -> dict[str, list[str]]:
    """Columns of each dataset a query reads: what the scans of its plan project and filter
    on (a scan names the room object it reads; a lake scan of the owner's, which names no
    table, counts for each lake object that has all its columns) and every column name the
    query writes that the dataset has.  Over-reports rather than under-reports."""
    found: dict[str, set[str]] = {d: set() for d in placed}
    stack = list(plan) if isinstance(plan, list) else [plan]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        stack.extend(node.get("children", []))
        info = node.get("extra_info") or {}
        if not isinstance(info, dict) or ("Projections" not in info and "Filters" not in info):
            continue
        projections = info.get("Projections", [])
        cols = {
            str(c).lower()
            for c in (projections if isinstance(projections, list) else [projections])
        }
        cols |= _names(str(info.get("Filters", "")))
        table = str(info.get("Table", ""))
        if table:
            owners = [d for d, o in placed.items() if o.name in table]
        elif "SCAN" in str(node.get("name", "")):
            owners = [
                d for d, o in placed.items()
                if o.source == "lake" and cols <= {c.lower() for c in o.columns}
            ]  # fmt: skip
        else:
            continue
        for d in owners:
            found[d] |= cols
    out: dict[str, list[str]] = {}
    for d, obj in placed.items():
        wanted = found[d] | named
        out[d] = [c for c in obj.columns if c.lower() in wanted]
    return out


class Loader:
    """Makes the copies rooms hold, in the exchange's own database: it reads the whole lake
    and never runs user SQL.  A large copy is a DuckDB file per (version, access profile),
    shared by every room whose readers have that profile; a file no room links any more
    goes when its version is no longer the latest."""

    def __init__(self, db: duckdb.DuckDBPyConnection, folder: Path, replicas: Replicas | None):
        self._db = db
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.replicas = replicas
        self._lock = threading.Lock()
        self._building: dict[Path, threading.Event] = {}
        self._files: dict[Path, Version] = {}

    def _select(self, version: Version, access: Access) -> str:
        return profile_sql(f"({scan_sql(version)})", access)

    def profile_table(self, version: Version, access: Access) -> pa.Table:
        cur = self._db.cursor()
        try:
            return cur.execute(self._select(version, access)).to_arrow_table()
        finally:
            cur.close()

    def profile_file(self, version: Version, access: Access) -> Path:
        path = (
            self.folder / f"{version.dataset_id}-v{version.version}-{profile_digest(access)}.duckdb"
        )
        while True:
            with self._lock:
                if path in self._files:
                    return path
                waiting = self._building.get(path)
                if waiting is None:
                    self._building[path] = threading.Event()
                    break
            waiting.wait()
        try:
            cur = self._db.cursor()
            try:
                write_copy(cur, path, self._select(version, access))
            finally:
                cur.close()
            with self._lock:
                self._files[path] = version
        finally:
            with self._lock:
                self._building.pop(path).set()
        return path

    def replica_file(self, version: Version) -> Path | None:
        replica = self.replicas.replica(version) if self.replicas is not None else None
        return replica.path if replica is not None else None

    def collect(self, latest: Mapping[str, Version]) -> None:
        """Remove the files of superseded versions that no room links any more."""
        with self._lock:
            for path, version in list(self._files.items()):
                current = latest.get(version.dataset_id)
                if current is not None and current.version == version.version:
                    continue
                try:
                    linked = path.stat().st_nlink > 1
                except FileNotFoundError:
                    linked = False
                if not linked:
                    path.unlink(missing_ok=True)
                    del self._files[path]
