"""DuckDB connections with extensions loaded offline from the PyPI extension wheels.

DuckDB would download extensions at run time; here every extension comes from a
``duckdb-extension-<name>`` wheel.  DuckDB takes an extension's entry point from
its file name, and some wheels ship the file under another name than the
entry point (``postgres`` is ``postgres_scanner``), so we load through a link
with the right name.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

DUCKDB_VERSION = "v" + duckdb.__version__
_ENTRY_NAME = {"postgres": "postgres_scanner", "mysql": "mysql_scanner"}
_BUILTIN = {"parquet", "json", "icu", "core_functions"}


def extension_path(name: str) -> Path:
    """Path DuckDB can LOAD for an extension shipped in ``duckdb-extension-<name>``."""
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            f"DuckDB extension {name!r} is not installed: pip install duckdb-extension-{name}=="
            f"{duckdb.__version__}"
        )
    shipped = Path(spec.origin).parent / "extensions" / DUCKDB_VERSION / f"{name}.duckdb_extension"
    if not shipped.exists():
        raise RuntimeError(f"{shipped} is missing: the extension wheel does not match duckdb")
    entry = _ENTRY_NAME.get(name, name)
    if entry == name:
        return shipped
    links = Path(tempfile.gettempdir()) / f"blockhub-duckdb-ext-{os.getuid()}" / DUCKDB_VERSION
    links.mkdir(parents=True, exist_ok=True)
    link = links / f"{entry}.duckdb_extension"
    if not link.exists() or link.resolve() != shipped.resolve():
        tmp = links / f".{entry}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(shipped)
        tmp.replace(link)
    return link


def connect(
    *extensions: str,
    database: str = ":memory:",
    config: dict[str, str] | None = None,
    skip_signature_check: bool = False,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the named extensions loaded and nothing fetched online.

    ``skip_signature_check`` is for connectors only: checking an extension's signature
    hashes the whole file on every LOAD (0.2-0.3 s for the 41 MB postgres extension,
    a fifth of a small incremental run); the files come from the pinned wheels in our
    own environment, and those connections never run user SQL.  The exchange, which
    does, keeps the check (docs/decisions.md D18).
    """
    cfg: dict[str, str | bool | int | float | list[str]] = {
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
        **(config or {}),
    }
    if skip_signature_check:
        cfg["allow_unsigned_extensions"] = "true"
    con = duckdb.connect(database, config=cfg)
    needed = list(extensions)
    if "iceberg" in needed and "avro" not in needed:
        needed.insert(0, "avro")
    for name in needed:
        if name in _BUILTIN:
            continue
        con.execute(f"LOAD '{extension_path(name)}'")
    # GLOBAL: a cursor is a new connection to the same database, and a session setting
    # does not reach it — the exchange's cursors answered in the machine's zone (TZ).
    con.execute("SET GLOBAL TimeZone='UTC'")
    return con


# DuckDB's error prefixes (``<Type> Error: ...``) and the Python classes DuckDB raises
# for them when the error surfaces from ``execute`` rather than from the Arrow stream.
_ERROR_CLASSES: dict[str, type[duckdb.Error]] = {
    "IO": duckdb.IOException,
    "Conversion": duckdb.ConversionException,
    "Invalid Input": duckdb.InvalidInputException,
    "Out of Range": duckdb.OutOfRangeException,
    "Binder": duckdb.BinderException,
    "Catalog": duckdb.CatalogException,
    "Constraint": duckdb.ConstraintException,
    "Out of Memory": duckdb.OutOfMemoryException,
    "INTERRUPT": duckdb.InterruptException,
}


def stream(con: duckdb.DuckDBPyConnection, sql: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Run ``sql`` and yield its record batches, with failures as DuckDB's own exceptions.

    An error met while the batches stream comes through pyarrow's C stream reader as a
    bare ``OSError``/``ArrowException`` whose text starts with DuckDB's error type; callers
    handle DuckDB's classes, so the error is raised again as the class its prefix names
    (``duckdb.Error`` when the prefix is unknown), with the same message.
    """
    return reader_batches(con.execute(sql).to_arrow_reader(batch_rows))


def reader_batches(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """The batches of a DuckDB Arrow reader, its failures raised as DuckDB's exceptions."""
    try:
        yield from reader
    except (OSError, pa.ArrowException) as e:
        raise _duckdb_error(e) from None


def _duckdb_error(e: Exception) -> duckdb.Error:
    """The DuckDB exception a pyarrow stream error stands for (see :func:`stream`)."""
    text = str(e)
    kind, sep, _ = text.partition(" Error: ")
    cls = _ERROR_CLASSES.get(kind, duckdb.Error) if sep else duckdb.Error
    return cls(text)
