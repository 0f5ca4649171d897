"""Files of the lake that the pipelines read and write beside Iceberg: staged batches read
by the quality gate and quarantine files — on local disk or on S3, through the lake's one
S3 connection (catalog/lake/objectstore.py).

The gate reads staged files with DuckDB; on an S3 lake its connection loads httpfs from
the pinned wheel (connectors/duck.py) and gets credentials scoped to the warehouse prefix.
That connection never runs a caller's SQL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

import duckdb
import pyarrow.fs as pafs

from catalog.lake.objectstore import is_s3, s3_dir
from catalog.lake.tables import Lake
from connectors.duck import extension_path


def lake_file(location: str) -> str:
    """A lake location as DuckDB and pyarrow name it: a local path for ``file://`` (or a
    bare path), the ``s3://`` URI unchanged."""
    if is_s3(location):
        return location
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if parsed.scheme:
        raise ValueError(f"{location!r}: the lake is on local disk or on S3")
    return location


def join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}"


def duckdb_prepare(lake: Lake) -> Callable[[duckdb.DuckDBPyConnection], None] | None:
    """What a DuckDB connection needs to read and write the lake's files: nothing on local
    disk; on S3 the httpfs extension and a secret scoped to the warehouse prefix."""
    s3 = lake.s3
    if s3 is None:
        return None
    scope = s3_dir(lake.warehouse)

    def prepare(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(f"LOAD '{extension_path('httpfs')}'")
        s3.duckdb_secret(con, [scope])

    return prepare


def exists(lake: Lake, location: str) -> bool:
    fs, path = lake.filesystem(lake_file(location))
    return bool(fs.get_file_info(path).type == pafs.FileType.File)


def remove(lake: Lake | None, location: str) -> None:
    """Delete a file of the lake if it is there (a quarantine batch on discard)."""
    if lake is None:
        if is_s3(location):
            raise ValueError(f"{location} is on S3: the lake's settings are needed")
        Path(lake_file(location)).unlink(missing_ok=True)
        return
    fs, path = lake.filesystem(lake_file(location))
    with contextlib.suppress(FileNotFoundError):
        fs.delete_file(path)


def make_parent(location: str) -> None:
    """A local file's folder, made; S3 has no folders."""
    if not is_s3(location):
        Path(lake_file(location)).parent.mkdir(parents=True, exist_ok=True)
