"""Table references are resolved by scope, as DuckDB's binder resolves them.

The oracle is DuckDB itself: a plain database holding a table per name, where
``json_serialize_plan(..., optimize := false)`` lists the tables the binder really reads.
For every query generated from every scope construct (CTEs nested and in order, recursive
CTEs, subqueries in FROM and in expressions, correlated subqueries, set operations,
aliases, quoted and case-variant names, qualifiers, lateral joins), a query the check
accepts binds to readable tables only, and every table DuckDB binds is one the check
named.  The check is stricter in one way, on purpose: a forbidden name written in a CTE
that nothing uses (DuckDB never binds it) is still refused — the caller named a dataset
it may not read.
"""

from __future__ import annotations

from typing import Any

import duckdb
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog.errors import AccessDenied, QueryRejected
from hub.exchange.sqlcheck import check_sql

READABLE = {"tickets", "districts"}
FORBIDDEN = {"secret", "t_none"}
TABLES = READABLE | FORBIDDEN


@pytest.fixture(scope="module")
def oracle() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"python_enable_replacements": "false"})
    for name in TABLES:
        con.execute(f'CREATE TABLE "{name}" (x INTEGER)')
    return con


def bound_tables(con: duckdb.DuckDBPyConnection, sql: str) -> set[str] | None:
    """The tables DuckDB binds ``sql`` to, or None if it does not bind."""
    row = con.execute(
        "SELECT json_serialize_plan(?, skip_null := true, skip_empty := true, optimize := false)",
        [sql],
    ).fetchone()
    assert row is not None
    plan = orjson.loads(row[0])
    if plan.get("error"):
        return None
    found: set[str] = set()
    stack: list[Any] = [plan]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "LOGICAL_GET":
                found.add(str(node["function_data"]["table"]).lower())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def spellings(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name, name.upper(), f'"{name}"', f'"{name.title()}"'])


NAMES = st.sampled_from([*sorted(TABLES), "nothere", "c1", "c2", "r"]).flatmap(spellings)
QUALIFIED = st.sampled_from(["main.secret", "memory.main.tickets", "main.tickets"])
CTE_NAMES = st.sampled_from(["c1", "c2", "tickets", "secret", "Secret", '"SECRET"', "t_none"])


def queries() -> st.SearchStrategy[str]:
    """Queries of one INTEGER column ``x``, built from every scope construct."""
    leaf = st.one_of(
        NAMES.map(lambda n: f"SELECT x FROM {n}"),
        NAMES.map(lambda n: f"SELECT t.x FROM {n} AS t"),
        QUALIFIED.map(lambda n: f"SELECT x FROM {n}"),
        st.just("SELECT 1 AS x"),
    )

    def extend(q: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(CTE_NAMES, q, q).map(lambda t: f"WITH {t[0]} AS ({t[1]}) {t[2]}"),
            st.tuples(CTE_NAMES, CTE_NAMES, q, q, q).map(
                lambda t: f"WITH {t[0]} AS ({t[2]}), {t[1]} AS ({t[3]}) {t[4]}"
            ),
            st.tuples(CTE_NAMES, q).map(
                lambda t: (
                    f"WITH RECURSIVE {t[0]} AS (SELECT 1 AS x UNION ALL "
                    f"SELECT x + 1 FROM {t[0]} WHERE x < 2) {t[1]}"
                )
            ),
            st.tuples(q, q).map(lambda t: f"{t[0]} UNION ALL {t[1]}"),
            st.tuples(q, q).map(lambda t: f"({t[0]}) EXCEPT ({t[1]})"),
            q.map(lambda s: f"SELECT x FROM ({s}) AS sub"),
            st.tuples(q, q).map(lambda t: f"SELECT x FROM ({t[0]}) AS a WHERE EXISTS ({t[1]})"),
            st.tuples(q, q).map(lambda t: f"SELECT ({t[1]} LIMIT 1) AS x FROM ({t[0]}) AS a"),
            st.tuples(q, NAMES).map(
                lambda t: (
                    f"SELECT a.x FROM ({t[0]}) AS a WHERE a.x IN "
                    f"(SELECT b.x FROM {t[1]} AS b WHERE b.x = a.x)"
                )
            ),
            st.tuples(q, q).map(lambda t: f"SELECT a.x FROM ({t[0]}) AS a, LATERAL ({t[1]}) AS l"),
        )

    return st.recursive(leaf, extend, max_leaves=6)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
@settings(
    max_examples=600,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(sql=queries())
def test_the_check_resolves_names_as_duckdb_binds_them(
    oracle: duckdb.DuckDBPyConnection, sql: str
) -> None:
    bound = bound_tables(oracle, sql)
    try:
        checked = check_sql(sql, READABLE, known=FORBIDDEN)
    except (QueryRejected, AccessDenied) as refused:
        # Refused: DuckDB would read a forbidden or unknown table, or not bind at all, or a
        # name is qualified (datasets have plain names; the room has no schemas to name).
        qualified = refused.detail.get("table") is not None
        named = str(refused.detail.get("dataset", "")).lower()
        written = named and named in sql.lower()
        assert bound is None or not bound <= READABLE or qualified or written, (
            sql,
            bound,
            refused.message,
        )
        return
    assert bound is not None, sql  # what the check accepts, DuckDB binds
    assert bound <= set(checked.datasets) <= READABLE, (sql, checked.datasets, bound)


@pytest.mark.parametrize(
    ("sql", "reads"),
    [
        # A CTE is visible in its own query and below, not beside or above it.
        ("SELECT x FROM (WITH secret AS (SELECT 1 AS x) SELECT x FROM secret) AS s", set()),
        ("SELECT * FROM (WITH secret AS (SELECT 1 AS x) SELECT 1), secret", None),
        ("SELECT (WITH c AS (SELECT 1) SELECT 1), * FROM c", None),
        # A CTE sees the CTEs before it, and itself only when recursive.
        ("WITH a AS (SELECT x FROM secret), secret AS (SELECT 1 AS x) SELECT x FROM a", None),
        ("WITH secret AS (SELECT 1 AS x), a AS (SELECT x FROM secret) SELECT x FROM a", set()),
        ("WITH tickets AS (SELECT x FROM tickets) SELECT x FROM tickets", {"tickets"}),
        ("WITH secret AS (SELECT x FROM secret) SELECT x FROM secret", None),
        # Names compare case-insensitively, quoted or not, as DuckDB compares them.
        ('SELECT x FROM "TICKETS"', {"tickets"}),
        ('WITH "Secret" AS (SELECT 1 AS x) SELECT x FROM secret', set()),
        ('SELECT x FROM "Secret"', None),
        # Qualified names, files and table functions never name a dataset.
        ("SELECT x FROM main.tickets", None),
        ("SELECT x FROM memory.main.secret", None),
        ("SELECT * FROM '/etc/passwd'", None),
        ("SELECT * FROM read_parquet('x.parquet')", None),
        ("SELECT * FROM tickets, LATERAL (SELECT * FROM query_table('secret'))", None),
    ],
)
def test_scope_cases(sql: str, reads: set[str] | None) -> None:
    if reads is None:
        with pytest.raises((QueryRejected, AccessDenied)):
            check_sql(sql, READABLE, known=FORBIDDEN)
    else:
        assert set(check_sql(sql, READABLE, known=FORBIDDEN).datasets) == reads
