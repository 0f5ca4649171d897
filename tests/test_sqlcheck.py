from __future__ import annotations

import pytest

from catalog.errors import QueryRejected
from hub.sqlcheck import check_sql

READABLE = {"tickets", "districts"}


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "READ_CSV"),
        ("SELECT * FROM read_parquet('/lake/blockhub/other/data/x.parquet')", "READ_PARQUET"),
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
        ('SELECT * FROM "Tickets"', "no dataset 'Tickets'"),
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


def test_rewrite_keeps_aliases_and_ctes() -> None:
    checked = check_sql(
        "WITH recent AS (SELECT * FROM tickets WHERE ticket_id > 10) "
        "SELECT d.name, count(*) FROM recent JOIN districts d USING (district_code) "
        "WHERE tickets_ok IS NULL OR true GROUP BY 1",
        READABLE | {"tickets_ok"},
    )
    assert set(checked.datasets) == {"tickets", "districts"}
    sql = checked.render(lambda n: f"__v_{n}")
    assert '"__v_tickets" AS tickets' in sql
    assert '"__v_districts" AS d' in sql
    assert "FROM recent" in sql
