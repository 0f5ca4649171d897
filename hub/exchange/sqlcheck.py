"""Check user SQL with DuckDB's own parser before it runs: one read-only query over granted
datasets, table references resolved by scope as DuckDB's binder will resolve them.

The check reads the parse tree DuckDB itself produces (``json_serialize_sql``), so there is
no second parser whose reading of a text could differ from the engine's (a comment, a
quote, a dialect quirk read one way here and another way there).  It is a whitelist of
shapes: exactly one SELECT statement; every table reference either a CTE visible at that
point of the query or a dataset the caller may read (bare name, compared case-insensitively
as DuckDB compares identifiers); no table function of any name; every function call one of
DuckDB's scalar, aggregate or window functions, less those that reach outside the query
(settings, variables, the session, the query text, errors, logging).

The check is the first wall, not the only one: the query then runs in the caller's own
*room* (:mod:`hub.exchange.rooms`), a DuckDB database that holds nothing the caller may not read, so
a reference the check misjudged still reaches nothing else (docs/security.md, "SQL").
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import orjson

from catalog.errors import AccessDenied, QueryRejected
from connectors.duck import connect

MAX_SQL_CHARS = 100_000
MAX_EXPRESSION_DEPTH = 250

# Scalar functions (and built-in macros) that read the session, settings, variables or the
# query text, raise caller-chosen errors, or write to logs: nothing a query over data needs.
_DENIED_FUNCTIONS = frozenset(
    {
        "current_setting",
        "getvariable",
        "getenv",
        "current_query",
        "current_query_id",
        "current_database",
        "current_catalog",
        "current_schema",
        "current_schemas",
        "current_connection_id",
        "current_transaction_id",
        "current_user",
        "current_role",
        "session_user",
        "user",
        "txid_current",
        "in_search_path",
        "json_serialize_sql",
        "json_deserialize_sql",
        "json_serialize_plan",
        "error",
        "write_log",
        "parse_duckdb_log_message",
        "stats",
        "version",
        "nextval",
        "currval",
        "setseed",
    }
)
_FUNCTION_KINDS = ("scalar", "aggregate", "window", "macro")
# Functions DuckDB's binder handles itself (they are not in its function registry).
_BINDER_FUNCTIONS = frozenset({"unnest", "unlist"})

# Table references DuckDB's parser produces; the check walks into the allowed ones.
_ALLOWED_REFS = frozenset({"BASE_TABLE", "SUBQUERY", "JOIN", "EMPTY", "EXPRESSION_LIST", "PIVOT"})
_TABLE_REFS = _ALLOWED_REFS | {
    "TABLE_FUNCTION",
    "SHOW_REF",
    "COLUMN_DATA",
    "DELIM_GET",
    "CTE",
    "BOUND_TABLE_REF",
}
_QUERY_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"})
_NOT_SUPPORTED = {
    "SHOW_REF": "DESCRIBE, SHOW and SUMMARIZE are not supported; the catalog API describes "
    "datasets",
}
_NO_POSITION = 18446744073709551615  # DuckDB's "no location"


@dataclass(frozen=True)
class CheckedQuery:
    """A query that passed the checks.

    ``text`` is the caller's own statement, as DuckDB parsed it, with trailing semicolons
    cut so that it can be wrapped (``SELECT … FROM (\\n<text>\\n)``); ``datasets`` are the
    datasets it reads, lower-case, in the order of their first reference."""

    text: str
    datasets: tuple[str, ...]
    columns: frozenset[str] = frozenset()
    """Every column name the query writes (lower-case; for the audit entry)."""


def _position_detail(sql: str, offset: int | None) -> dict[str, int]:
    if offset is None or offset < 0 or offset > len(sql):
        return {}
    line = sql.count("\n", 0, offset) + 1
    column = offset - (sql.rfind("\n", 0, offset) + 1) + 1
    return {"position": offset, "line": line, "column": column}


class SqlChecker:
    """DuckDB's parser and function registry, with no data: one per process."""

    def __init__(self) -> None:
        self._con = connect(
            "iceberg",
            config={
                "python_enable_replacements": "false",
                "max_expression_depth": str(MAX_EXPRESSION_DEPTH),
            },
        )
        rows = self._con.execute(
            "SELECT DISTINCT lower(function_name) FROM duckdb_functions() "
            "WHERE function_type IN ? AND schema_name = 'main'",
            [list(_FUNCTION_KINDS)],
        ).fetchall()
        self.functions = frozenset(r[0] for r in rows) - _DENIED_FUNCTIONS | _BINDER_FUNCTIONS
        self._con.execute("SET enable_external_access=false")
        self._con.execute("SET lock_configuration=true")
        self._local = threading.local()
        self._serialize("SELECT 1")  # the first call initialises DuckDB's JSON module

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._local.cursor = self._con.cursor()
        return cur

    def _serialize(self, sql: str) -> dict[str, Any]:
        row = (
            self._cursor()
            .execute("SELECT json_serialize_sql(?, skip_null := true, skip_empty := true)", [sql])
            .fetchone()
        )
        assert row is not None
        try:
            tree: dict[str, Any] = orjson.loads(row[0])
        except orjson.JSONDecodeError:  # nesting deeper than the JSON reader's limit
            raise QueryRejected("query is nested too deeply") from None
        return tree

    def check(
        self, sql: str, readable: Collection[str], known: Collection[str] = ()
    ) -> CheckedQuery:
        """Check ``sql`` for a caller who may read ``readable``; raise QueryRejected with why
        (AccessDenied for a dataset in ``known`` that the caller may not read)."""
        if len(sql) > MAX_SQL_CHARS:
            raise QueryRejected(
                f"query text is longer than {MAX_SQL_CHARS:,} characters",
                **_position_detail(sql, MAX_SQL_CHARS),
            )
        if not sql.strip():
            raise QueryRejected("send one SELECT statement (the query is empty)")
        tree = self._serialize(sql)
        if tree.get("error"):
            self._refuse_unparsed(sql, tree)
        statements = tree.get("statements", [])
        if len(statements) != 1:
            raise QueryRejected(f"send exactly one statement (got {len(statements)})")
        walk = _Walk(
            sql,
            {n.lower() for n in readable},
            {n.lower() for n in known},
            self.functions,
        )
        walk.run(statements[0]["node"])
        return CheckedQuery(
            text=_statement_text(sql), datasets=tuple(walk.used), columns=frozenset(walk.columns)
        )

    def _refuse_unparsed(self, sql: str, tree: dict[str, Any]) -> None:
        message = str(tree.get("error_message") or "syntax error")
        if tree.get("error_type") == "parser":
            raw = tree.get("position")
            offset = int(raw) if isinstance(raw, str | int) and str(raw).isdigit() else None
            if offset is None and "depth" in message:
                offset = _too_deep_at(sql)
            first = message.splitlines()[0]
            raise QueryRejected(f"cannot parse query: {first}", **_position_detail(sql, offset))
        # Parsed, but not a SELECT: name what it is, from DuckDB's own statement split.
        try:
            kinds = [s.type.name for s in self._cursor().extract_statements(sql)]
        except duckdb.Error:
            kinds = []
        if len(kinds) != 1:
            raise QueryRejected(f"send exactly one statement (got {len(kinds)})")
        kind = kinds[0]
        if kind == "SELECT":  # PRAGMA, CALL and the like read as SELECTs of a table function
            start: int = duckdb.tokenize(sql)[0][0]
            kind = sql[start:].split(None, 1)[0].upper()
        raise QueryRejected(f"only SELECT queries are allowed, not {kind}", statement=kind.lower())


def _too_deep_at(sql: str, limit: int = 1000) -> int:
    """Where an expression grows past DuckDB's parser depth: the token at which operators
    and opening parentheses, counted from the start, reach the limit (DuckDB's error says
    how deep, not where; a chain of ``1+1+…`` or nested calls is that deep there)."""
    tokens = duckdb.tokenize(sql)
    seen = 0
    for position, kind in tokens:
        if kind == duckdb.token_type.operator and sql[position] in "(+-*/%|&<>=!^~":
            seen += 1
            if seen >= limit:
                return int(position)
    return int(tokens[-1][0]) if tokens else 0


def _statement_text(sql: str) -> str:
    """``sql`` without the semicolons that end it (comments cannot hide one: DuckDB's
    tokenizer skips them, and ``;`` inside a string is part of the string token)."""
    tokens = duckdb.tokenize(sql)
    cut = len(sql)
    for position, kind in reversed(tokens):
        if kind == duckdb.token_type.operator and sql.startswith(";", position):
            cut = position
            continue
        break
    return sql[:cut].rstrip()


class _Walk:
    """One pass over DuckDB's parse tree, with the CTE names visible at each point."""

    def __init__(
        self, sql: str, readable: set[str], known: set[str], functions: frozenset[str]
    ) -> None:
        self.sql = sql
        self.readable = readable
        self.known = known
        self.functions = functions
        self.used: list[str] = []
        self.columns: set[str] = set()

    def _where(self, node: dict[str, Any]) -> dict[str, int]:
        loc = node.get("query_location")
        return _position_detail(
            self.sql, loc if isinstance(loc, int) and loc != _NO_POSITION else None
        )

    def run(self, root: dict[str, Any]) -> None:
        stack: list[tuple[Any, frozenset[str]]] = [(root, frozenset())]
        while stack:
            node, scope = stack.pop()
            if isinstance(node, list):
                stack.extend((item, scope) for item in node)
                continue
            if not isinstance(node, dict):
                continue
            # Children in reverse, so that the stack visits them in the text's order.
            stack.extend(reversed(list(self._visit(node, scope))))

    def _visit(
        self, node: dict[str, Any], scope: frozenset[str]
    ) -> Iterator[tuple[Any, frozenset[str]]]:
        kind = node.get("type")
        if "class" not in node and isinstance(kind, str):
            if kind in _TABLE_REFS:
                self._table_ref(node, scope)
            elif kind in _QUERY_NODES:  # its CTEs are visible inside it
                yield from self._query_node(node, scope)
                return
        if "function_name" in node:
            self._function(node)
        if node.get("class") == "COLUMN_REF":
            self.columns.update(str(n).lower() for n in node.get("column_names", ()))
        for value in node.values():
            if isinstance(value, dict | list):
                yield value, scope

    def _query_node(
        self, node: dict[str, Any], scope: frozenset[str]
    ) -> Iterator[tuple[Any, frozenset[str]]]:
        entries = node.get("cte_map", {}).get("map", [])
        names = [str(e["key"]).lower() for e in entries]
        # A CTE sees the CTEs written before it (DuckDB binds them in order: a later one
        # is not visible, the name then means a table), and itself only when recursive.
        for i, entry in enumerate(entries):
            body = entry.get("value", {}).get("query", {}).get("node", {})
            own = {names[i]} if body.get("type") == "RECURSIVE_CTE_NODE" else set()
            yield body, scope | frozenset(names[:i]) | own
        inner = scope | frozenset(names)
        if node.get("type") == "RECURSIVE_CTE_NODE" and node.get("cte_name"):
            inner |= {str(node["cte_name"]).lower()}
        for key, value in node.items():
            if key != "cte_map" and isinstance(value, dict | list):
                yield value, inner

    def _table_ref(self, node: dict[str, Any], scope: frozenset[str]) -> None:
        kind = node["type"]
        where = self._where(node)
        if kind == "TABLE_FUNCTION":
            name = str(node.get("function", {}).get("function_name", "?"))
            raise QueryRejected(
                f"table functions are not allowed ({name}); name a dataset",
                function=name,
                **where,
            )
        if kind not in _ALLOWED_REFS:
            raise QueryRejected(
                _NOT_SUPPORTED.get(kind, f"{kind.lower()} references are not allowed"), **where
            )
        if kind != "BASE_TABLE":
            return
        name = str(node.get("table_name", ""))
        qualifier = ".".join(str(node[k]) for k in ("catalog_name", "schema_name") if node.get(k))
        if qualifier:
            raise QueryRejected(
                f"qualified name {qualifier + '.' + name!r} is not allowed; name a dataset",
                table=f"{qualifier}.{name}",
                **where,
            )
        if node.get("at_clause"):
            raise QueryRejected(
                "AT (VERSION ...) is not supported; ask for a version instead", **where
            )
        key = name.lower()
        if key in scope:
            return
        if key in self.readable:
            if key not in self.used:
                self.used.append(key)
            return
        if key in self.known:
            raise AccessDenied(
                f"you may not read dataset {key!r}; its sharing rules apply", dataset=key, **where
            )
        raise QueryRejected(f"no dataset {name!r} that you may read", dataset=name, **where)

    def _function(self, node: dict[str, Any]) -> None:
        name = str(node.get("function_name", ""))
        where = self._where(node)
        schema, catalog = node.get("schema") or "", node.get("catalog") or ""
        if schema not in ("", "main") or catalog not in ("", "system"):
            raise QueryRejected(
                f"function {'.'.join(p for p in (catalog, schema, name) if p)}() is not "
                "allowed; call functions by their plain name",
                function=name,
                **where,
            )
        if name.lower() not in self.functions:
            raise QueryRejected(f"function {name}() is not allowed", function=name, **where)


_checker: SqlChecker | None = None
_checker_lock = threading.Lock()


def checker() -> SqlChecker:
    """The process's checker (DuckDB's parser; made on first use, ~0.2 s)."""
    global _checker
    if _checker is None:
        with _checker_lock:
            if _checker is None:
                _checker = SqlChecker()
    return _checker


def check_sql(sql: str, readable: Collection[str], known: Collection[str] = ()) -> CheckedQuery:
    """Check ``sql`` against the names the caller may read (see :class:`SqlChecker`)."""
    return checker().check(sql, readable, known)


@functools.lru_cache(maxsize=512)
def _check_cached(sql: str, readable: frozenset[str], known: frozenset[str]) -> CheckedQuery:
    return check_sql(sql, readable, known)


def check_sql_cached(
    sql: str, readable: Collection[str], known: Collection[str] = ()
) -> CheckedQuery:
    """:func:`check_sql`, remembered for the same text and the same names (a dashboard or an
    app repeats its queries).  A refusal is not remembered; it is checked again each time."""
    return _check_cached(sql, frozenset(readable), frozenset(known))
