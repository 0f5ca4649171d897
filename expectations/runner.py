"""Run a compiled suite over a staged batch in DuckDB, and separate the failing rows.

One scan computes a bit mask per row (one bit per row-level expectation) and keeps
only the rows with a bit set — their surrogate row id and mask, 16 bytes a row — in
DuckDB.  Counts, samples and the GX-shaped result come from that small table; the
batch is read again only when something failed: the row groups holding the samples of
the failing values, and the failing rows for the quarantine file.  ``drop-rows`` takes
the failing rows' positions from ``findings`` (:meth:`BatchValidator.failing_positions`)
and publishes the staged files with position deletes, so the passing rows are not read
again.

The surrogate row id is ``file_index << 40 | file_row_number`` of the staged files (a
null key could not identify its row); a quarantine file keeps it in ``_bh_row`` so
that a re-validated row keeps its identity.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from catalog.access.masking import mask_value as catalog_mask
from catalog.domain.clock import SystemClock
from catalog.domain.workdays import beijing_date
from catalog.errors import SuiteInvalid
from expectations.sql import BATCH, Check, ident, install, literal, mask_sql
from expectations.suite import GX_VERSION, Suite

ROW_ID = "_bh_row"
FAILED = "_bh_failed"
SAMPLE_SIZE = 20


def mask_value(value: Any, pii: str | None) -> Any:
    """A sample value as results keep it: personal data masked with the one set of masks
    (catalog.access.masking), the ones every reader's query answers use."""
    if pii is None or value is None:
        return value
    return catalog_mask(pii, str(value))


@dataclass
class Validation:
    """What a suite found in a batch, in numbers and in GX's result shape."""

    suite: str
    rows: int
    results: list[dict[str, Any]]
    failed_mask: int
    unexpected_rows: int
    failing_rows: int
    seconds: float
    started_at: float = field(default_factory=time.time)

    @property
    def success(self) -> bool:
        return all(r["success"] for r in self.results)

    @property
    def failed(self) -> list[str]:
        return [
            r["expectation_config"]["meta"]["blockhub_key"]
            for r in self.results
            if not r["success"]
        ]

    def document(self) -> dict[str, Any]:
        """A GX ``ExpectationSuiteValidationResult`` as JSON."""
        ok = sum(r["success"] for r in self.results)
        n = len(self.results)
        return {
            "success": self.success,
            "suite_name": self.suite,
            "results": self.results,
            "statistics": {
                "evaluated_expectations": n,
                "successful_expectations": ok,
                "unsuccessful_expectations": n - ok,
                "success_percent": 100.0 * ok / n if n else None,
            },
            "meta": {
                "great_expectations_version": GX_VERSION,
                "engine": "blockhub DuckDB compiler",
                "rows": self.rows,
            },
        }


class BatchValidator:
    """A suite bound to the Parquet files of one batch; close it when done."""

    def __init__(
        self,
        files: list[str],
        suite: Suite,
        *,
        pii: Mapping[str, str] | None = None,
        key_columns: list[str] | None = None,
        threads: int | None = None,
        today: date | None = None,
    ) -> None:
        self.files = files
        self.suite = suite
        self.pii = dict(pii or {})
        self.key_columns = list(key_columns or [])
        config: dict[str, Any] = {
            "autoinstall_known_extensions": "false",
            "autoload_known_extensions": "false",
        }
        if threads:
            config["threads"] = threads
        self.con = duckdb.connect(config=config)
        self.con.execute("SET TimeZone='UTC'")
        self.con.execute("SET arrow_large_buffer_size=true")
        # ID birth dates may not lie in the future: "today" is the Beijing date, from the
        # caller or, at this edge, from the system clock.
        install(self.con, today or beijing_date(SystemClock().now()))
        self.validation: Validation | None = None
        self.columns: list[str] = []
        self.has_row_ids = False
        self._source = ""
        if files:
            self._view()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> BatchValidator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the batch ---------------------------------------------------------------------

    def _view(self) -> None:
        paths = "[" + ", ".join(literal(f) for f in self.files) + "]"
        src = f"read_parquet({paths}, file_row_number=true, union_by_name=true)"
        self._source = src
        names = [r[0] for r in self.con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()]
        has_id = ROW_ID in names
        self.has_row_ids = has_id
        self.columns = [n for n in names if not n.startswith("_bh_") and n != "file_row_number"]
        row_id = ident(ROW_ID) if has_id else "((file_index::BIGINT << 40) | file_row_number)"
        cols = ", ".join(ident(c) for c in self.columns)
        self.con.execute(f"CREATE VIEW {BATCH} AS SELECT {row_id} AS {ROW_ID}, {cols} FROM {src}")
        checked = {c.column for c in self.suite.row_checks if c.column}
        missing = sorted(checked - set(self.columns))
        if missing:
            raise SuiteInvalid(
                f"suite {self.suite.name!r} checks column(s) {', '.join(missing)} (of the batch: "
                f"{', '.join(self.columns)})",
                suite=self.suite.name,
                columns=missing,
            )

    def _null_counts(self) -> dict[str, int]:
        """Nulls per checked column, from the Parquet footers when they all carry them.

        Every writer we stage with records null counts per row group, so this costs no
        scan; a column without them is counted the slow way.
        """
        cols = sorted({c.column for c in self.suite.row_checks if c.column})
        if not cols or not self.files:
            return {}
        paths = "[" + ", ".join(literal(f) for f in self.files) + "]"
        stats = self.con.execute(
            "SELECT path_in_schema, sum(stats_null_count), "
            "count(*) FILTER (WHERE stats_null_count IS NULL) "
            f"FROM parquet_metadata({paths}) GROUP BY 1"
        ).fetchall()
        known = {name: int(n or 0) for name, n, missing in stats if not missing}
        counted = [c for c in cols if c not in known]
        if counted:
            sql = ", ".join(f"count(*) - count({ident(c)})" for c in counted)
            row = self.con.execute(f"SELECT {sql} FROM {BATCH}").fetchone()
            assert row is not None
            known.update({c: int(v) for c, v in zip(counted, row, strict=True)})
        return {c: known[c] for c in cols}

    # -- validation ---------------------------------------------------------------------

    def validate(self) -> Validation:
        started = time.perf_counter()
        checks = self.suite.checks
        row_checks = self.suite.row_checks
        rows = 0
        if self.files:
            got = self.con.execute(f"SELECT count(*) FROM {BATCH}").fetchone()
            rows = int(got[0]) if got else 0
            self.con.execute(
                f"CREATE TABLE findings AS SELECT {ROW_ID}, _bh_mask FROM "
                f"(SELECT {ROW_ID}, {mask_sql(checks)} AS _bh_mask FROM {BATCH}) "
                "WHERE _bh_mask <> 0"
            )
        else:
            self.con.execute(f"CREATE TABLE findings ({ROW_ID} BIGINT, _bh_mask BIGINT)")
        bits = [f"count(*) FILTER (WHERE _bh_mask & {1 << n} <> 0)" for n in range(len(row_checks))]
        counts_row = self.con.execute(
            f"SELECT count(*){''.join(', ' + b for b in bits)} FROM findings"
        ).fetchone()
        assert counts_row is not None
        unexpected_rows, counts = int(counts_row[0]), [int(v) for v in counts_row[1:]]
        nulls = self._null_counts() if any(counts) or row_checks else {}
        results: list[dict[str, Any]] = []
        failed_mask = 0
        samples = self._samples(row_checks, counts)
        bit = {c.index: n for n, c in enumerate(row_checks)}
        for c in checks:
            if c.kind == "row":
                n = bit[c.index]
                res = self._row_result(c, rows, counts[n], nulls.get(c.column or "", 0), samples[n])
                if not res["success"]:
                    failed_mask |= 1 << n
            else:
                res = self._table_result(c, rows)
            results.append(res)
        failing_rows = 0
        if failed_mask:
            got = self.con.execute(
                f"SELECT count(*) FROM findings WHERE _bh_mask & {failed_mask} <> 0"
            ).fetchone()
            failing_rows = int(got[0]) if got else 0
        self.validation = Validation(
            suite=self.suite.name,
            rows=rows,
            results=results,
            failed_mask=failed_mask,
            unexpected_rows=unexpected_rows,
            failing_rows=failing_rows,
            seconds=time.perf_counter() - started,
        )
        return self.validation

    def _samples(self, row_checks: list[Check], counts: list[int]) -> list[list[tuple[Any, Any]]]:
        """Up to SAMPLE_SIZE (value, key) pairs per row check, read in one pass."""
        out: list[list[tuple[Any, Any]]] = [[] for _ in row_checks]
        if not any(counts):
            return out
        picks = " UNION ALL ".join(
            f"(SELECT {n} AS bit, {ROW_ID} FROM findings WHERE _bh_mask & {1 << n} <> 0 "
            f"ORDER BY {ROW_ID} LIMIT {SAMPLE_SIZE})"
            for n, count in enumerate(counts)
            if count
        )
        self.con.execute(f"CREATE TEMP TABLE samples AS {picks}")
        cols = sorted({c.column for c in row_checks if c.column} | set(self.key_columns))
        sel = ", ".join(ident(c) for c in cols)
        rows = (
            f"SELECT {ROW_ID}, {sel} FROM {BATCH} WHERE {ROW_ID} IN (SELECT {ROW_ID} FROM samples)"
        )
        if not self.has_row_ids:
            # By file and row number, which DuckDB pushes into the scan: only the row
            # groups holding a sample are read (a filter on the computed id reads all).
            by_file: dict[int, list[int]] = {}
            for (row_id,) in self.con.execute(f"SELECT DISTINCT {ROW_ID} FROM samples").fetchall():
                by_file.setdefault(row_id >> 40, []).append(row_id & ((1 << 40) - 1))
            rows = " UNION ALL ".join(
                f"SELECT ((file_index::BIGINT << 40) | file_row_number) AS {ROW_ID}, {sel} "
                f"FROM {self._source} WHERE file_index = {i} "
                f"AND file_row_number IN ({', '.join(map(str, sorted(nums)))})"
                for i, nums in sorted(by_file.items())
            )
        table = self.con.execute(
            f"SELECT s.bit, b.{ROW_ID}, {', '.join('b.' + ident(c) for c in cols)} "
            f"FROM samples s JOIN ({rows}) b USING ({ROW_ID}) "
            f"ORDER BY s.bit, b.{ROW_ID}"
        ).fetchall()
        for bit, row_id, *values in table:
            record = dict(zip(cols, values, strict=True))
            check = row_checks[bit]
            key = {k: record[k] for k in self.key_columns} if self.key_columns else {ROW_ID: row_id}
            out[bit].append(
                (mask_value(record[check.column or ""], self.pii.get(check.column or "")), key)
            )
        return out

    def _row_result(
        self, c: Check, rows: int, unexpected: int, missing: int, sample: list[tuple[Any, Any]]
    ) -> dict[str, Any]:
        not_null = c.type == "expect_column_values_to_not_be_null"
        nonmissing = rows if not_null else rows - missing
        pct = 100.0 * unexpected / nonmissing if nonmissing else 0.0
        success = nonmissing == 0 or (nonmissing - unexpected) / nonmissing >= c.mostly
        result: dict[str, Any] = {
            "element_count": rows,
            "unexpected_count": unexpected,
            "unexpected_percent": pct,
            "partial_unexpected_list": [v for v, _ in sample],
            "partial_unexpected_index_list": [k for _, k in sample],
            "observed_value": f"{pct:.4g}% unexpected",
        }
        if not not_null:
            result["missing_count"] = missing
            result["missing_percent"] = 100.0 * missing / rows if rows else None
            result["unexpected_percent_total"] = 100.0 * unexpected / rows if rows else 0.0
        return self._gx_result(c, success, result)

    def _table_result(self, c: Check, rows: int) -> dict[str, Any]:
        kw = c.kwargs
        if c.type == "expect_column_to_exist":
            observed: Any = c.column in self.columns
            success = bool(observed)
        elif c.type == "expect_table_row_count_to_equal":
            observed, success = rows, rows == int(kw["value"])
        else:
            lo, hi = kw.get("min_value"), kw.get("max_value")
            observed = rows
            success = (lo is None or rows >= lo) and (hi is None or rows <= hi)
        return self._gx_result(c, success, {"observed_value": observed})

    def _gx_result(self, c: Check, success: bool, result: dict[str, Any]) -> dict[str, Any]:
        config = c.config()
        config["meta"]["blockhub_key"] = c.key
        return {
            "success": bool(success),
            "expectation_config": config,
            "result": result,
            "exception_info": {"raised_exception": False, "exception_message": None},
        }

    # -- separating rows --------------------------------------------------------------

    def _failed_list(self, mask: str) -> str:
        items = ", ".join(
            f"CASE WHEN {mask} & {1 << n} <> 0 THEN {literal(c.key)} END"
            for n, c in enumerate(self.suite.row_checks)
        )
        return (
            f"list_filter([{items}]::VARCHAR[], x -> x IS NOT NULL)" if items else "[]::VARCHAR[]"
        )

    def quarantine_sql(self, *, whole_batch: bool) -> str:
        """The rows to quarantine with their row id and the rules each one broke."""
        assert self.validation is not None, "validate() first"
        cols = ", ".join(f"b.{ident(c)}" for c in self.columns)
        failed = self._failed_list("coalesce(f._bh_mask, 0)")
        if whole_batch:
            return (
                f"SELECT b.{ROW_ID}, {failed} AS {FAILED}, {cols} FROM {BATCH} b "
                f"LEFT JOIN findings f USING ({ROW_ID})"
            )
        return (
            f"SELECT b.{ROW_ID}, {failed} AS {FAILED}, {cols} FROM {BATCH} b "
            f"JOIN findings f USING ({ROW_ID}) "
            f"WHERE f._bh_mask & {self.validation.failed_mask} <> 0"
        )

    def write_quarantine(self, path: Path, *, whole_batch: bool) -> int:
        """Write the quarantined rows as one Parquet file; returns how many."""
        path.parent.mkdir(parents=True, exist_ok=True)
        sql = self.quarantine_sql(whole_batch=whole_batch)
        got = self.con.execute(
            f"COPY ({sql}) TO {literal(str(path))} (FORMAT parquet, COMPRESSION zstd)"
        ).fetchone()
        return int(got[0]) if got else 0

    def passing(self, batch_rows: int = 262_144) -> Iterator[pa.RecordBatch]:
        """The rows of the batch that broke no failed expectation (DuckDB's order).

        A quarantine release stages these; the gate's ``drop-rows`` leaves the failing
        rows out of the staged files with position deletes instead.
        """
        assert self.validation is not None, "validate() first"
        cols = ", ".join(ident(c) for c in self.columns)
        reader = self.con.execute(
            f"SELECT {cols} FROM {BATCH} WHERE {ROW_ID} NOT IN (SELECT {ROW_ID} FROM findings "
            f"WHERE _bh_mask & {self.validation.failed_mask} <> 0)"
        ).to_arrow_reader(batch_rows)
        yield from reader

    def failing_positions(self) -> list[np.ndarray]:
        """Per staged file, the row numbers (ascending) of the rows that broke a failed
        expectation: what ``drop-rows`` leaves out of the published files (position
        deletes, catalog.lake.deletes).  Read from ``findings`` alone, not from the batch."""
        assert self.validation is not None, "validate() first"
        assert not self.has_row_ids, "staged files carry no row ids of their own"
        got = self.con.execute(
            f"SELECT {ROW_ID} >> 40 AS file, {ROW_ID} & {(1 << 40) - 1} AS pos FROM findings "
            f"WHERE _bh_mask & {self.validation.failed_mask} <> 0 ORDER BY {ROW_ID}"
        ).fetchnumpy()
        files = np.asarray(got["file"], np.int64)
        pos = np.asarray(got["pos"], np.int64)
        cuts = np.searchsorted(files, np.arange(len(self.files) + 1))
        return [pos[cuts[i] : cuts[i + 1]] for i in range(len(self.files))]
