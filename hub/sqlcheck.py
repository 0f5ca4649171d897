"""Parse and check user SQL before it runs: one read-only query over granted datasets.

The check is a whitelist of shapes, not a blacklist of words: exactly one
statement, a query (SELECT / set operation), every table reference a bare name
that is a CTE of the query or a dataset the caller may read, and no function
that reaches outside the query (file readers, scans, system catalogs).  DuckDB's
own sandbox (no external access outside the lake, locked configuration) stays on
underneath as a second wall.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from catalog.errors import AccessDenied, QueryRejected

_FORBIDDEN_FUNC = re.compile(
    r"^(read_.*|.*_scan|scan_.*|glob|query|query_table|getenv|getvariable|sniff_csv|"
    r"parquet_.*|iceberg_.*|delta_.*|duckdb_.*|pragma_.*|sqlite_.*|postgres_.*|mysql_.*|"
    r"load|install|which_secret|json_execute_serialized_sql|current_setting|checkpoint|"
    r"force_checkpoint|enable_.*|disable_.*|set_.*|import_.*|export_.*|"
    r"summary|test_all_types|range_.*|error|sql_auto_complete|json_serialize_.*|"
    r"json_deserialize_sql|read_blob|read_text|current_query|setvariable)$",
    re.IGNORECASE,
)
_WRITES = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.Command,
    exp.Pragma,
    exp.Set,
    exp.Copy,
    exp.Merge,
    exp.Use,
    exp.Transaction,
)


@dataclass(frozen=True)
class CheckedQuery:
    """A query that passed the checks, with the datasets it reads.

    One instance may serve many calls (:func:`check_sql_cached`); nothing mutates the
    tree, and renderings are remembered per view mapping (at most a few dozen)."""

    tree: exp.Query
    datasets: tuple[str, ...]
    _renders: dict[tuple[str, ...], str] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def render(self, view_name: Callable[[str], str]) -> str:
        """DuckDB SQL with each dataset reference replaced by ``view_name(dataset)``."""
        key = tuple(view_name(d) for d in self.datasets)
        done = self._renders.get(key)
        if done is None:
            done = self._render(view_name)
            if len(self._renders) >= 32:
                self._renders.clear()
            self._renders[key] = done
        return done

    def _render(self, view_name: Callable[[str], str]) -> str:
        names = set(self.datasets)
        ctes = _cte_names(self.tree)

        def swap(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Table) and node.name in names and node.name not in ctes:
                new = node.copy()
                if not new.args.get("alias"):
                    new.set("alias", exp.TableAlias(this=exp.to_identifier(node.name)))
                new.set("this", exp.to_identifier(view_name(node.name), quoted=True))
                return new
            return node

        return self.tree.transform(swap, copy=True).sql(dialect="duckdb")


def _func_name(f: exp.Func) -> str:
    if isinstance(f, exp.Anonymous):
        return str(f.name)
    return f.sql_name()


def _cte_names(tree: exp.Query) -> set[str]:
    return {cte.alias_or_name for cte in tree.find_all(exp.CTE)}


@functools.lru_cache(maxsize=512)
def _check_cached(sql: str, readable: frozenset[str], known: frozenset[str]) -> CheckedQuery:
    return check_sql(sql, readable, known)


def check_sql_cached(
    sql: str, readable: Collection[str], known: Collection[str] = ()
) -> CheckedQuery:
    """:func:`check_sql`, remembered for the same text and the same names (a dashboard
    or an app repeats its queries: parsing and checking is ~0.7 ms, rendering ~0.6 ms of
    a ~6 ms point lookup).  A refusal is not remembered; it is checked again each time."""
    return _check_cached(sql, frozenset(readable), frozenset(known))


def check_sql(sql: str, readable: Collection[str], known: Collection[str] = ()) -> CheckedQuery:
    """Check ``sql`` against the names the caller may read; raise QueryRejected with why
    (AccessDenied for a dataset that exists in ``known`` but is not readable)."""
    if len(sql) > 100_000:
        raise QueryRejected("query text is longer than 100,000 characters")
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except ParseError as e:
        first = str(e).splitlines()[0] if str(e) else "syntax error"
        raise QueryRejected(f"cannot parse query: {first}") from None
    if len(statements) != 1:
        raise QueryRejected(f"send exactly one statement (got {len(statements)})")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise QueryRejected(
            f"only SELECT queries are allowed, not {tree.key.upper()}", statement=tree.key
        )
    for node in tree.walk():
        if isinstance(node, _WRITES):
            raise QueryRejected(f"{node.key.upper()} is not allowed in a query", statement=node.key)
        if isinstance(node, exp.Func):
            name = _func_name(node)
            if _FORBIDDEN_FUNC.match(name):
                raise QueryRejected(f"function {name}() is not allowed", function=name)
    ctes = _cte_names(tree)
    used: list[str] = []
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            raise QueryRejected(
                "table functions are not allowed; name a dataset", expression=table.sql()[:200]
            )
        if table.args.get("db") or table.args.get("catalog"):
            raise QueryRejected(
                f"qualified name {table.sql()!r} is not allowed; name a dataset", table=table.sql()
            )
        if table.args.get("when") is not None:
            raise QueryRejected("AT (VERSION ...) is not supported; ask for a version instead")
        name = table.name
        if name in ctes:
            continue
        if name not in readable:
            if name in known:
                raise AccessDenied(
                    f"you may not read dataset {name!r}; its sharing rules apply", dataset=name
                )
            raise QueryRejected(f"no dataset {name!r} that you may read", dataset=name)
        if name not in used:
            used.append(name)
    return CheckedQuery(tree=tree, datasets=tuple(used))


def columns_touched(
    checked: CheckedQuery, visible: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    """Columns of each dataset a query refers to (every visible one for ``*``), for audit.

    Matched by name: a column is counted for every dataset of the query that has it,
    which over-reports rather than under-reports when names repeat across datasets.
    """
    tree = checked.tree
    star = any(isinstance(n, exp.Star) for n in tree.walk())
    names = {c.name for c in tree.find_all(exp.Column)}
    out: dict[str, list[str]] = {}
    for ds in checked.datasets:
        cols = list(visible.get(ds, ()))
        out[ds] = cols if star else [c for c in cols if c in names]
    return out
