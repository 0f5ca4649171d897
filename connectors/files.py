"""File sources (CSV, Excel .xlsx, JSON/NDJSON, Parquet) read by DuckDB into Arrow batches.

``path`` is one file or a glob, in a local folder or an S3-compatible bucket
(``s3://bucket/exports/*.csv`` with option ``s3``).  Each matching file is read
on its own, so that an error names the file, and the files loaded are the
connector's state (committed with the snapshot): in incremental modes a new
export file is read once, and files already loaded are not read again.

Agency exports are messy, so the steward says how to read them:

- ``encoding``: ``utf-8`` (default; a byte-order mark is dropped), ``gb18030``,
  ``gbk``, ``utf-16`` … Anything but UTF-8 is transcoded while copied to a
  temporary file, and an undecodable byte is reported with its line.
- ``null_values``: the spellings of "missing" (``["", "NULL", "无", "-", "N/A"]``),
  applied to text cells before they are typed.
- ``rename`` ({source header: column}) or a manifest column's ``source_name``:
  Chinese headers become the dataset's column names.
- ``date_format`` / ``timestamp_format`` (strptime, e.g. ``%Y/%m/%d %H:%M``) and
  ``time_zone`` (zone of timestamps written without an offset; default UTC).
- CSV: ``delimiter``, ``quote``, ``header`` (default true), ``skip_rows``;
  Excel: ``sheet``.

Declared columns are cast to their manifest type; a cell that does not parse is a
:class:`ConnectorError` naming the file, the row, the column, the value and the type.
"""

from __future__ import annotations

import codecs
import contextlib
import fnmatch
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs

from catalog.errors import ConnectorError, SourceRefused
from catalog.sources.locations import LocationRefused, is_within, s3_key_problem
from connectors.base import Connector, CursorValue
from connectors.duck import connect, stream
from connectors.sql import incremental, quote_ident, quote_literal

_UTF8 = {"utf-8", "utf8", "utf-8-sig", "utf_8"}
_GLOB = "*?["
_CHUNK = 1 << 20


def duck_type(t: pa.DataType) -> str:
    """DuckDB SQL type of an Arrow type a manifest can declare."""
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    simple = {
        pa.int64(): "BIGINT",
        pa.int32(): "INTEGER",
        pa.float64(): "DOUBLE",
        pa.float32(): "FLOAT",
        pa.bool_(): "BOOLEAN",
        pa.date32(): "DATE",
        pa.binary(): "BLOB",
    }
    return simple.get(t, "VARCHAR")


class FileConnector(Connector):
    name = "file"
    reader: ClassVar[str] = ""
    #: how a data row is named in messages (a CSV row also has a line number)
    row_word: ClassVar[str] = "row"

    def __init__(self, options: dict[str, Any], *, batch_rows: int = 100_000) -> None:
        super().__init__(options, batch_rows=batch_rows)
        self.path = str(self.option("path", required=True))
        self.encoding = str(self.option("encoding", "utf-8")).lower()
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ConnectorError(
                f"{self.name} source {self.path}: unknown encoding {self.encoding!r}",
                connector=self.name,
                option="encoding",
            ) from None
        nulls = self.option("null_values", [])
        if not isinstance(nulls, list) or not all(isinstance(v, str) for v in nulls):
            raise ConnectorError(
                f"{self.name} source {self.path}: null_values must be a list of strings",
                connector=self.name,
                option="null_values",
            )
        self.null_values: list[str] = nulls
        self.rename: dict[str, str] = dict(self.option("rename", {}) or {})
        self.types: dict[str, pa.DataType] = {}
        self._loaded: set[str] = set()
        self._read_now: list[str] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="blockhub-files-")
        self._fs: pafs.FileSystem | None = None

    # -- what the flow tells us ------------------------------------------------------

    def declare(self, types: Mapping[str, pa.DataType], rename: Mapping[str, str]) -> None:
        self.types = dict(types)
        self.rename = {**rename, **self.rename}

    def resume(self, state: Any) -> None:
        if isinstance(state, dict) and isinstance(state.get("files"), list):
            self._loaded = {str(f) for f in state["files"]}

    def state(self) -> Any:
        return {"files": sorted(self._loaded | set(self._read_now))}

    def close(self) -> None:
        self._tmp.cleanup()

    # -- finding the files -----------------------------------------------------------

    def _s3(self) -> pafs.FileSystem:
        if self._fs is None:
            opts = dict(self.option("s3", {}) or {})
            kwargs: dict[str, Any] = {}
            if "endpoint" in opts:
                endpoint = str(opts["endpoint"])
                kwargs["scheme"] = "https" if endpoint.startswith("https://") else "http"
                kwargs["endpoint_override"] = endpoint.split("://", 1)[-1]
            for ours, theirs in (
                ("access_key", "access_key"),
                ("secret_key", "secret_key"),
                ("region", "region"),
            ):
                if ours in opts:
                    kwargs[theirs] = str(opts[ours])
            kwargs.setdefault("region", "us-east-1")
            self._fs = pafs.S3FileSystem(**kwargs)
        return self._fs

    def files(self) -> list[str]:
        """Every file the path names, sorted (oldest export names first, as agencies date them)."""
        if self.path.startswith("s3://"):
            return self._s3_files()
        if not any(ch in self.path for ch in _GLOB):
            if not Path(self.path).is_file():
                raise ConnectorError(
                    f"{self.name} source {self.path}: file not found", connector=self.name
                )
            return [self.path]
        root = Path(self.path).anchor or "."
        pattern = self.path[len(root) :] if Path(self.path).is_absolute() else self.path
        return sorted(str(p) for p in Path(root).glob(pattern) if p.is_file())

    def _s3_files(self) -> list[str]:
        key = self.path[len("s3://") :]
        fs = self._s3()
        try:
            if not any(ch in key for ch in _GLOB):
                info = fs.get_file_info(key)
                if info.type != pafs.FileType.File:
                    raise ConnectorError(
                        f"{self.name} source {self.path}: object not found", connector=self.name
                    )
                found = [self.path]
            else:
                fixed = key[: min(key.index(ch) for ch in _GLOB if ch in key)]
                base = fixed.rsplit("/", 1)[0]
                infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
                found = sorted(
                    f"s3://{i.path}"
                    for i in infos
                    if i.type == pafs.FileType.File and fnmatch.fnmatchcase(i.path, key)
                )
        except OSError as e:
            raise ConnectorError(
                f"{self.name} source {self.path}: cannot list: {e}", connector=self.name
            ) from None
        prefix = self.resolved.s3_prefix if self.resolved is not None else None
        if prefix is not None:
            for f in found:
                k = f[len("s3://") :]
                problem = s3_key_problem(k)
                if problem or not is_within(k, prefix):
                    raise self._refused(f"{f} is outside the root s3://{prefix}")
        return found

    def _refused(self, reason: str) -> SourceRefused:
        return SourceRefused(
            f"<{self.name} source>", [{"field": "source.options.path", "message": reason}]
        )

    def _open_fd(self, path: str) -> int:
        """A descriptor of a local file: through the root's confinement when the hub bound
        one (the check is made on the file actually opened), else a plain open."""
        confinement = self.resolved.confinement if self.resolved is not None else None
        if confinement is None:
            try:
                return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise ConnectorError(
                    f"{self.name} source {path}: cannot open: {e.strerror or e}",
                    connector=self.name,
                ) from None
        try:
            return confinement.open(path)
        except LocationRefused as e:
            raise self._refused(e.reason) from None

    @contextlib.contextmanager
    def _local(self, path: str) -> Iterator[str]:
        """A path DuckDB reads for ``path``: a local file through its open descriptor
        (``/proc/self/fd/N``: DuckDB reads the very file that was checked, and expands no
        glob or brace in its name), or a UTF-8 copy when it must be downloaded or
        transcoded."""
        if path.startswith("s3://"):
            with self._copy(path, None) as local:
                yield local
            return
        fd = self._open_fd(path)
        try:
            if self.encoding in _UTF8 or not self.transcode:
                yield f"/proc/self/fd/{fd}"
            else:
                with self._copy(path, fd) as local:
                    yield local
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _copy(self, path: str, fd: int | None) -> Iterator[str]:
        name = os.path.basename(path) or "file"
        tmp_fd, local = tempfile.mkstemp(dir=self._tmp.name, suffix="-" + name)
        os.close(tmp_fd)
        try:
            with self._open(path, fd) as src, open(local, "wb") as dst:
                if self.encoding in _UTF8 or not self.transcode:
                    shutil.copyfileobj(src, dst, _CHUNK)
                else:
                    self._transcode(path, src, dst)
            yield local
        finally:
            with contextlib.suppress(OSError):
                os.unlink(local)

    #: text formats are transcoded to UTF-8; binary ones (Parquet, xlsx) are not
    transcode: ClassVar[bool] = True

    @contextlib.contextmanager
    def _open(self, path: str, fd: int | None) -> Iterator[Any]:
        if path.startswith("s3://"):
            try:
                stream = self._s3().open_input_stream(path[len("s3://") :])
            except OSError as e:
                raise ConnectorError(
                    f"{self.name} source {path}: cannot open: {e}", connector=self.name
                ) from None
            with stream:
                yield stream
        else:
            assert fd is not None
            with os.fdopen(os.dup(fd), "rb") as f:
                yield f

    def _transcode(self, path: str, src: Any, dst: Any) -> None:
        decoder = codecs.getincrementaldecoder(self.encoding)(errors="strict")
        lines = 0
        first = True
        while True:
            chunk = src.read(_CHUNK)
            final = not chunk
            try:
                text = decoder.decode(chunk, final=final)
            except UnicodeDecodeError as e:
                line = lines + chunk[: max(e.start, 0)].count(b"\n") + 1
                raise ConnectorError(
                    f"{self.name} source {path}: line {line}: bytes {e.object[e.start : e.end]!r} "
                    f"are not valid {self.encoding} ({e.reason}); set source.options.encoding",
                    connector=self.name,
                    file=path,
                    line=line,
                ) from None
            lines += chunk.count(b"\n")
            if first and text:
                text = text.removeprefix("\ufeff")
                first = False
            dst.write(text.encode("utf-8"))
            if final:
                break

    # -- reading one file ----------------------------------------------------------

    def _reader_sql(self, local: str, path: str = "") -> str:
        extra = ""
        if self.transcode and local.startswith("/proc/self/fd/"):
            # DuckDB tells compression from the file name, which the descriptor has not.
            for suffix, kind in ((".gz", "gzip"), (".zst", "zstd")):
                if path.endswith(suffix):
                    extra = f", compression={quote_literal(kind)}"
        return f"SELECT * FROM {self.reader}({quote_literal(local)}{self._reader_options()}{extra})"

    def _reader_options(self) -> str:
        return ""

    def _connection(self) -> duckdb.DuckDBPyConnection:
        con = connect(*self.extensions, skip_signature_check=True)
        tz = self.option("time_zone")
        if tz:
            con.execute(f"SET TimeZone = {quote_literal(str(tz))}")
        return con

    extensions: ClassVar[tuple[str, ...]] = ()

    def _projection(self, con: duckdb.DuckDBPyConnection, raw: str) -> tuple[str, list[Any]]:
        """SELECT over the raw reader: null spellings removed, headers renamed, declared
        columns typed.  Returns the SQL and, per output column, what to check on failure."""
        described = con.execute(f"DESCRIBE {raw}").fetchall()
        items: list[str] = []
        checks: list[Any] = []
        for col, col_type, *_ in described:
            out = self.rename.get(col, col)
            expr = quote_ident(col)
            if col_type == "VARCHAR" and self.null_values:
                nulls = ", ".join(quote_literal(v) for v in self.null_values)
                expr = f"CASE WHEN trim({expr}) IN ({nulls}) THEN NULL ELSE {expr} END"
            want = self.types.get(out)
            if want is not None:
                target = duck_type(want)
                cast = self._cast(expr, col_type, want, target)
                if cast != expr:
                    checks.append((col, out, expr, cast, want))
                expr = cast
            items.append(f"{expr} AS {quote_ident(out)}")
        return f"SELECT {', '.join(items)} FROM ({raw}) AS _raw", checks

    def _cast(self, expr: str, source_type: str, want: pa.DataType, target: str) -> str:
        if source_type == target:
            return expr
        if source_type == "VARCHAR":
            fmt = None
            if pa.types.is_timestamp(want):
                fmt = self.option("timestamp_format")
            elif pa.types.is_date(want):
                fmt = self.option("date_format")
            if fmt:
                parsed = f"strptime(trim({expr}), {quote_literal(str(fmt))})"
                return f"CAST({parsed} AS {target})"
            return f"CAST(trim({expr}) AS {target})"
        return f"CAST({expr} AS {target})"

    def _diagnose(
        self, con: duckdb.DuckDBPyConnection, path: str, raw: str, checks: list[Any]
    ) -> ConnectorError | None:
        """The first cell that does not parse as its declared type, as an error to show."""
        numbered = f"SELECT row_number() OVER () AS __row, * FROM ({raw}) AS _raw"
        for col, out, expr, cast, want in checks:
            try_cast = "TRY_" + cast if cast.startswith("CAST(") else cast
            found = con.execute(
                f"SELECT __row, CAST({quote_ident(col)} AS VARCHAR) FROM ({numbered}) AS _n "
                f"WHERE ({expr}) IS NOT NULL AND ({try_cast}) IS NULL ORDER BY __row LIMIT 1"
            ).fetchone()
            if found is None:
                continue
            row, value = int(found[0]), found[1]
            where = self._where(row)
            name = col if col == out else f"{col} → {out}"
            return ConnectorError(
                f"{self.name} source {path}: {where}, column {name!r}: "
                f"cannot read {value!r} as {_type_name(want)}",
                connector=self.name,
                file=path,
                row=row,
                column=out,
                value=value,
            )
        return None

    def _where(self, row: int) -> str:
        return f"row {row}"

    def _read_file(
        self, path: str, cursor: str | None, since: CursorValue
    ) -> Iterator[pa.RecordBatch]:
        with self._local(path) as local:
            con = self._connection()
            try:
                raw = self._reader_sql(local, path)
                try:
                    sql, checks = self._projection(con, raw)
                except duckdb.Error as e:
                    raise self._error(path, e, local) from None
                sql = incremental(sql, cursor, since)
                try:
                    yield from stream(con, sql, self.batch_rows)
                except duckdb.ConversionException as e:
                    found = self._diagnose(con, path, raw, checks)
                    raise (found or self._error(path, e, local)) from None
                except duckdb.Error as e:
                    raise self._error(path, e, local) from None
            finally:
                con.close()

    def _error(self, path: str, e: Exception, local: str | None = None) -> ConnectorError:
        text = str(e).replace(local, path) if local else str(e)
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        first = lines[0] if lines else type(e).__name__
        # DuckDB's CSV errors carry the line on a later line of the message.
        extra = [ln for ln in lines[1:] if ln.lower().startswith(("line", "original line"))]
        text = "; ".join([first, *extra[:2]])
        return ConnectorError(f"{self.name} source {path}: {text}", connector=self.name, file=path)

    # -- the Connector interface -------------------------------------------------------

    def discover(self) -> pa.Schema:
        files = self.files()
        if not files:
            raise ConnectorError(
                f"{self.name} source {self.path}: no file matches", connector=self.name
            )
        # The newest file says what the source looks like now (a new column appears there).
        con = self._connection()
        try:
            with self._local(files[-1]) as local:
                try:
                    sql, _ = self._projection(con, self._reader_sql(local, files[-1]))
                    return con.execute(f"SELECT * FROM ({sql}) LIMIT 0").arrow().schema
                except duckdb.Error as e:
                    raise self._error(files[-1], e, local) from None
        finally:
            con.close()

    def read(
        self, cursor: str | None = None, since: CursorValue = None
    ) -> Iterator[pa.RecordBatch]:
        self._read_now = []
        for path in self.files():
            if path in self._loaded:
                continue
            yield from self._read_file(path, cursor, since)
            self._read_now.append(path)


def _type_name(t: pa.DataType) -> str:
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    return {"int64": "int64", "int32": "int32", "double": "float64", "date32[day]": "date"}.get(
        str(t), str(t)
    )


class CsvConnector(FileConnector):
    """CSV (or any delimited text) with a header row; every cell is read as text, then typed."""

    name = "csv"
    reader = "read_csv"

    def _reader_options(self) -> str:
        opts = [
            f", header={'true' if self.option('header', True) else 'false'}",
            ", all_varchar=true",
            ", parallel=false",  # keeps row_number() in file order for error messages
        ]
        for key, duck in (("delimiter", "delim"), ("quote", "quote"), ("skip_rows", "skip")):
            if key in self.options:
                value = self.options[key]
                literal = str(int(value)) if key == "skip_rows" else quote_literal(str(value))
                opts.append(f", {duck}={literal}")
        return "".join(opts)

    def _where(self, row: int) -> str:
        header = 1 if self.option("header", True) else 0
        return f"row {row} (line {row + header + int(self.option('skip_rows', 0))})"


class ExcelConnector(FileConnector):
    """The first (or the named ``sheet``) worksheet of an .xlsx workbook, header in row 1."""

    name = "excel"
    reader = "read_xlsx"
    extensions = ("excel",)
    transcode = False

    def _reader_options(self) -> str:
        opts = [", header=true"]
        if "sheet" in self.options:
            opts.append(f", sheet={quote_literal(str(self.options['sheet']))}")
        return "".join(opts)

    def _where(self, row: int) -> str:
        return f"row {row} (sheet row {row + 1})"


class ParquetConnector(FileConnector):
    name = "parquet"
    reader = "read_parquet"
    transcode = False


class JsonConnector(FileConnector):
    """JSON arrays or newline-delimited JSON (one object per line)."""

    name = "json"
    reader = "read_json_auto"

    def _where(self, row: int) -> str:
        return f"record {row}"
