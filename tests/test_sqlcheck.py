from __future__ import annotations

import pytest

from catalog.errors import QueryRejected
from hub.exchange.sqlcheck import check_sql

READABLE = {"tickets", "districts"}


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
        ("SELECT * FROM read_parquet('/lake/blockhub/other/data/x.parquet')", "read_parquet"),
        ("SELECT * FROM '/etc/passwd'", "no dataset"),
        ("SELECT * FROM iceberg_scan('/lake/x/metadata/1.json')", "iceberg_scan"),
        ("SELECT read_text('/etc/hostname')", "read_text"),
        ("SELECT * FROM secret_table", "no dataset 'secret_table'"),
        ("SELECT * FROM main.tickets", "qualified"),
        ("SELECT * FROM information_schema.tables", "qualified"),
        ("SELECT * FROM duckdb_settings()", "duckdb_settings"),
        ("SELECT getenv('HOME')", "getenv"),
        ("ATTACH '/tmp/x.db' AS x", "ATTACH"),
        ("COPY tickets TO '/tmp/out.csv'", "COPY"),
        ("INSTALL httpfs", "only SELECT"),
        ("LOAD httpfs", "only SELECT"),
        ("SET enable_external_access = true", "SET"),
        ("PRAGMA database_list", "PRAGMA"),
        ("CREATE TABLE x AS SELECT 1", "CREATE"),
        ("DROP TABLE tickets", "DROP"),
        ("SELECT 1; SELECT 2", "exactly one statement"),
        ("SELECT 1; DROP TABLE tickets", "exactly one statement"),
        ("SELECT * FROM tickets AT (VERSION => 1)", "AT (VERSION"),
        ("SELECT * FROM tickets /* ; */ WHERE 1=1 -- ; DROP", None),
        ('SELECT * FROM "Tickets"', None),  # DuckDB compares names case-insensitively
        ("SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))", "table"),
        ("SELECT current_setting('allowed_directories')", "current_setting"),
        ("SELECT pg_catalog.pg_get_viewdef('x')", "pg_get_viewdef"),
        ("DESCRIBE tickets", "DESCRIBE"),
        ("SUMMARIZE tickets", "DESCRIBE"),
        ("CALL pragma_version()", "CALL"),
        ("SELECT * FROM query_table('tickets')", "query_table"),
        ("SELEC * FROM tickets", "cannot parse"),
    ],
)
def test_hostile_and_invalid_queries(sql: str, reason: str | None) -> None:
    if reason is None:
        assert check_sql(sql, READABLE).datasets == ("tickets",)
        return
    with pytest.raises(QueryRejected) as info:
        check_sql(sql, READABLE)
    assert reason.lower() in info.value.message.lower()


def test_parse_errors_say_where() -> None:
    with pytest.raises(QueryRejected) as info:
        check_sql("SELECT *\nFROM tickets WHERE x = 'open", READABLE)
    assert info.value.detail["line"] == 2 and info.value.detail["position"] > 9


def test_the_statement_text_is_cut_before_its_semicolons() -> None:
    checked = check_sql("SELECT * FROM tickets -- all of them\n ; ;", READABLE)
    assert checked.text == "SELECT * FROM tickets -- all of them"
    assert check_sql("SELECT ';' AS s FROM tickets", READABLE).text.endswith("tickets")
