"""One quoting rule for SQL text (catalog.sqltext), and no private copies of it."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb

from catalog.sqltext import quote_ident, quote_literal

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("catalog", "eventlog", "connectors", "expectations", "pipelines", "hub")
#: Another dialect's rule (MySQL escapes backslashes in string literals; YAML's single-quoted
#: scalars in the engines' catalog file), not a copy.
OTHER_DIALECTS = {"connectors/mysql.py", "catalog/sources/guard.py", "catalog/lake/readers.py"}


def test_literals_round_trip_through_duckdb() -> None:
    values = [None, True, False, 0, -7, 10**20, 1.5, 1e-300, "", "it's", '"x"', "贵阳"]
    for v in values:
        (got,) = duckdb.sql(f"SELECT {quote_literal(v)}").fetchone() or (None,)
        assert got == v, (v, quote_literal(v))
    for v in (math.inf, -math.inf):
        assert duckdb.sql(f"SELECT {quote_literal(v)}").fetchone() == (v,)
    (nan,) = duckdb.sql(f"SELECT {quote_literal(math.nan)}").fetchone() or (None,)
    assert math.isnan(nan)


def test_numbers_are_not_quoted() -> None:
    assert quote_literal(3) == "3" and quote_literal(2.5) == "2.5"
    assert quote_literal("3") == "'3'"


def test_identifiers_keep_their_quotes() -> None:
    name = 'a "b" c'
    assert duckdb.sql(f"SELECT 1 AS {quote_ident(name)}").columns == [name]


def test_no_private_copy_of_the_quoting_rule() -> None:
    copies = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "catalog/sqltext.py" or rel in OTHER_DIALECTS:
                continue
            text = path.read_text(encoding="utf-8")
            for needle in ("""replace('"', '""')""", """replace("'", "''")"""):
                if needle in text:
                    copies.append(f"{rel}: {needle}")
    assert copies == []
