"""Expectations compiled to DuckDB SQL: the hot path of the quality gate.

A row-level expectation becomes a predicate that is TRUE when a row is *unexpected*
(GX's meaning: nulls are ignored by every column-map expectation except
``expect_column_values_to_not_be_null``).  The runner ORs them into one bit mask per
row in a single scan.  Table-level expectations (row count, column presence) are
answered from the batch's metadata.

Only expectation types listed in :data:`ROW_TYPES` and :data:`TABLE_TYPES` compile; a
suite that uses another type is refused when it is loaded, never skipped silently.
The semantics follow GX 1.24's pandas engine; ``tests/test_quality_gx.py`` runs real
GX on a sample and checks that the unexpected counts agree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import duckdb

from catalog.access.masking import normalize_phone_sql, normalize_sql
from catalog.domain.identifiers import (
    ID_CHECK_CHARS,
    ID_WEIGHTS,
    MIN_BIRTH_DATE,
    MOBILE_RE,
    USCC_CHARSET,
    USCC_WEIGHTS,
)
from catalog.domain.regions import id_prefixes_table, region_codes_table
from catalog.errors import SuiteInvalid
from catalog.sqltext import quote_ident, quote_literal

BATCH = "__bh_batch"
"""Name of the view over the staged batch that compiled SQL refers to."""

REGIONS = "__bh_regions"
"""Name of the table of GB/T 2260 codes the region check joins."""


ident = quote_ident


def literal(value: Any) -> str:
    """A DuckDB literal for a JSON scalar from a suite file."""
    if value is None or isinstance(value, str | int | float | bool):
        return quote_literal(value)
    raise SuiteInvalid(f"cannot use {value!r} in an expectation", value=repr(value))


ID_PREFIXES = "__bh_id_prefixes"
"""Name of the table of 6-digit codes (current and retired) an ID number may start with."""


def _weighted_sum(column: str, weights: tuple[int, ...], value: Callable[[str], str]) -> str:
    return " + ".join(f"{w} * {value(f'{column}[{i + 1}]')}" for i, w in enumerate(weights))


def macros(today: date) -> list[str]:
    """``CREATE MACRO`` statements for the domain checks (vectorised by DuckDB).

    Each validator normalises first, with the SQL generated from the same fold table
    and prefix pattern as ``catalog.domain.identifiers`` (``catalog.access.masking.normalize_sql``).
    The check characters are the ISO 7064 MOD 11-2 and GB 32100 MOD 31 sums written
    out over single-character substrings, which DuckDB evaluates column-at-a-time.
    ``today`` (the Beijing date validated on) bounds ID birth dates; the ID prefix check
    reads the :data:`ID_PREFIXES` table, which :func:`install` creates.
    """
    digit = "(ascii({}) - 48)".format
    uscc_value = ("(instr('" + USCC_CHARSET + "', {}) - 1)").format
    id_sum = _weighted_sum("n", ID_WEIGHTS, digit)
    uscc_sum = _weighted_sum("n", USCC_WEIGHTS, uscc_value)
    birth = "try_cast(n[7:10] || '-' || n[11:12] || '-' || n[13:14] AS DATE)"
    return [
        f"CREATE OR REPLACE MACRO bh_norm(s) AS {normalize_sql('s')}",
        f"CREATE OR REPLACE MACRO bh_phone_norm(s) AS {normalize_phone_sql('s')}",
        "CREATE OR REPLACE MACRO bh_id_canon_ok(n) AS ("
        "length(n) = 18 AND regexp_full_match(n[1:17], '[0-9]{17}') "
        f"AND {birth} BETWEEN DATE '{MIN_BIRTH_DATE.isoformat()}' AND DATE '{today.isoformat()}' "
        f"AND n[1:6] IN (SELECT code FROM {ID_PREFIXES}) "
        f"AND n[18] = '{ID_CHECK_CHARS}'[(({id_sum}) % 11) + 1])",
        "CREATE OR REPLACE MACRO bh_id_number_ok(s) AS bh_id_canon_ok(bh_norm(s))",
        "CREATE OR REPLACE MACRO bh_uscc_canon_ok(n) AS ("
        "length(n) = 18 AND regexp_full_match(n, '[0-9A-HJ-NP-RTUWXY]{18}') "
        "AND regexp_full_match(n[3:8], '[0-9]{6}') "
        f"AND n[18] = '{USCC_CHARSET}'[((31 - ({uscc_sum}) % 31) % 31) + 1])",
        "CREATE OR REPLACE MACRO bh_uscc_ok(s) AS bh_uscc_canon_ok(bh_norm(s))",
        f"CREATE OR REPLACE MACRO bh_mobile_ok(s) AS "
        f"regexp_full_match(bh_phone_norm(s), '{MOBILE_RE}')",
        # catalog.domain.regions.normalize_code: a 12-digit county-or-above code maps to 6 digits.
        "CREATE OR REPLACE MACRO bh_region_key(s) AS (CASE WHEN length(trim(s)) = 12 "
        "AND trim(s)[7:12] = '000000' THEN trim(s)[1:6] ELSE trim(s) END)",
    ]


def install(con: duckdb.DuckDBPyConnection, today: date) -> None:
    """Make a DuckDB connection ready for compiled suites: the region tables and the
    domain macros (validated as of ``today``, a Beijing date)."""
    con.register("__bh_regions_arrow", region_codes_table().select(["code"]))
    con.execute(f"CREATE OR REPLACE TABLE {REGIONS} AS SELECT code FROM __bh_regions_arrow")
    con.unregister("__bh_regions_arrow")
    con.register("__bh_id_prefixes_arrow", id_prefixes_table())
    con.execute(f"CREATE OR REPLACE TABLE {ID_PREFIXES} AS SELECT code FROM __bh_id_prefixes_arrow")
    con.unregister("__bh_id_prefixes_arrow")
    for stmt in macros(today):
        con.execute(stmt)


Kind = Literal["row", "table"]


@dataclass(frozen=True)
class Check:
    """One compiled expectation of a suite."""

    index: int
    key: str
    type: str
    kwargs: Mapping[str, Any]
    kind: Kind
    column: str | None = None
    unexpected_sql: str | None = None
    mostly: float = 1.0
    meta: Mapping[str, Any] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        """The GX ``expectation_config`` shape."""
        return {"type": self.type, "kwargs": dict(self.kwargs), "meta": dict(self.meta)}


RowCompiler = Callable[[str, Mapping[str, Any]], str]


def _not_null(c: str, kw: Mapping[str, Any]) -> str:
    return f"{c} IS NULL"


def _in_set(c: str, kw: Mapping[str, Any]) -> str:
    values = kw.get("value_set") or []
    if not values:
        return f"{c} IS NOT NULL"
    return f"{c} IS NOT NULL AND {c} NOT IN ({', '.join(literal(v) for v in values)})"


def _not_in_set(c: str, kw: Mapping[str, Any]) -> str:
    values = kw.get("value_set") or []
    if not values:
        return "FALSE"
    return f"{c} IS NOT NULL AND {c} IN ({', '.join(literal(v) for v in values)})"


def _regex(c: str, kw: Mapping[str, Any]) -> str:
    # GX pandas: column.astype(str).str.contains(regex), a search, as is regexp_matches.
    return f"{c} IS NOT NULL AND NOT regexp_matches(CAST({c} AS VARCHAR), {literal(kw['regex'])})"


def _not_regex(c: str, kw: Mapping[str, Any]) -> str:
    return f"{c} IS NOT NULL AND regexp_matches(CAST({c} AS VARCHAR), {literal(kw['regex'])})"


def _bounds(c: str, kw: Mapping[str, Any]) -> str:
    lo, hi = kw.get("min_value"), kw.get("max_value")
    if lo is None and hi is None:
        raise SuiteInvalid("expect_column_values_to_be_between needs min_value or max_value")
    parts = []
    if lo is not None:
        parts.append(f"{c} {'>' if kw.get('strict_min') else '>='} {literal(lo)}")
    if hi is not None:
        parts.append(f"{c} {'<' if kw.get('strict_max') else '<='} {literal(hi)}")
    return " AND ".join(parts)


def _between(c: str, kw: Mapping[str, Any]) -> str:
    return f"{c} IS NOT NULL AND NOT coalesce({_bounds(c, kw)}, FALSE)"


def _length_equal(c: str, kw: Mapping[str, Any]) -> str:
    return f"{c} IS NOT NULL AND length(CAST({c} AS VARCHAR)) <> {int(kw['value'])}"


def _length_between(c: str, kw: Mapping[str, Any]) -> str:
    n = f"length(CAST({c} AS VARCHAR))"
    return f"{c} IS NOT NULL AND NOT coalesce({_bounds(n, kw)}, FALSE)"


def _unique(c: str, kw: Mapping[str, Any]) -> str:
    # GX flags every row of a duplicated value (pandas: duplicated(keep=False)).
    dupes = f"SELECT {c} FROM {BATCH} WHERE {c} IS NOT NULL GROUP BY 1 HAVING count(*) > 1"
    return f"{c} IN ({dupes})"


def _macro(name: str) -> RowCompiler:
    def compile_(c: str, kw: Mapping[str, Any]) -> str:
        return f"{c} IS NOT NULL AND NOT coalesce({name}(CAST({c} AS VARCHAR)), FALSE)"

    return compile_


def _region(c: str, kw: Mapping[str, Any]) -> str:
    key = f"bh_region_key(CAST({c} AS VARCHAR))"
    return f"{c} IS NOT NULL AND {key} NOT IN (SELECT code FROM {REGIONS})"


ROW_TYPES: dict[str, RowCompiler] = {
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_in_set": _in_set,
    "expect_column_values_to_not_be_in_set": _not_in_set,
    "expect_column_values_to_match_regex": _regex,
    "expect_column_values_to_not_match_regex": _not_regex,
    "expect_column_values_to_be_between": _between,
    "expect_column_value_lengths_to_equal": _length_equal,
    "expect_column_value_lengths_to_be_between": _length_between,
    "expect_column_values_to_be_unique": _unique,
    "expect_column_values_to_be_valid_resident_id": _macro("bh_id_number_ok"),
    "expect_column_values_to_be_valid_unified_social_credit_code": _macro("bh_uscc_ok"),
    "expect_column_values_to_be_valid_mainland_mobile": _macro("bh_mobile_ok"),
    "expect_column_values_to_be_valid_gbt2260_code": _region,
}

TABLE_TYPES: frozenset[str] = frozenset(
    {
        "expect_table_row_count_to_be_between",
        "expect_table_row_count_to_equal",
        "expect_column_to_exist",
    }
)

MAX_ROW_CHECKS = 63
"""Row-level expectations per suite: one bit each in a BIGINT mask."""


def compile_checks(expectations: list[Mapping[str, Any]], *, suite: str) -> list[Check]:
    """Compile GX expectation configurations (``{"type", "kwargs", "meta"}``)."""
    checks: list[Check] = []
    seen: dict[str, int] = {}
    for i, exp in enumerate(expectations):
        etype = exp["type"]
        kwargs = dict(exp.get("kwargs") or {})
        column = kwargs.get("column")
        label = f"{etype.removeprefix('expect_')}({column})" if column else etype
        seen[label] = seen.get(label, 0) + 1
        key = label if seen[label] == 1 else f"{label}#{seen[label]}"
        meta = dict(exp.get("meta") or {})
        if etype in ROW_TYPES:
            if not isinstance(column, str):
                raise SuiteInvalid(
                    f"suite {suite!r}: expectations[{i}] {etype} needs a column", suite=suite
                )
            sql = ROW_TYPES[etype](ident(column), kwargs)
            mostly = float(kwargs.get("mostly", 1.0))
            checks.append(Check(i, key, etype, kwargs, "row", column, sql, mostly, meta))
        elif etype in TABLE_TYPES:
            checks.append(Check(i, key, etype, kwargs, "table", column, meta=meta))
        else:
            raise SuiteInvalid(
                f"suite {suite!r}: expectations[{i}] {etype} is not supported by the gate; "
                f"supported: {', '.join(sorted([*ROW_TYPES, *TABLE_TYPES]))}",
                suite=suite,
                expectation=etype,
            )
    if sum(c.kind == "row" for c in checks) > MAX_ROW_CHECKS:
        raise SuiteInvalid(
            f"suite {suite!r}: at most {MAX_ROW_CHECKS} row-level expectations", suite=suite
        )
    return checks


def mask_sql(checks: list[Check]) -> str:
    """One BIGINT per row: bit ``n`` set when the row is unexpected for row check ``n``."""
    parts = [
        f"(CASE WHEN {c.unexpected_sql} THEN {1 << n} ELSE 0 END)"
        for n, c in enumerate(c for c in checks if c.kind == "row")
    ]
    return "(" + " | ".join(parts) + ")::BIGINT" if parts else "0::BIGINT"


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
