"""JSON rows rendered by DuckDB — over an Arrow batch or inside the query — equal what
orjson makes of the same values, and each other."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from pathlib import Path

import pyarrow as pa

from catalog.identity.store import Principal
from hub.assembly.context import Hub
from hub.exchange.encoders import _result_rows, _rows_text, dumps
from tests.conftest import publish_file


def test_fast_rows_equal_the_python_rows() -> None:
    t = pa.table(
        {
            "i": pa.array([1, 2**62, None], pa.int64()),
            "f": [1.5, None, 0.1],
            "b": [True, None, False],
            "s": ['a"\\\n\x01中', None, ""],
            "d": [dt.date(2024, 1, 2), None, dt.date(1999, 12, 31)],
            "dec": pa.array([decimal.Decimal("1.10"), None, decimal.Decimal("-2.00")],
                            pa.decimal128(5, 2)),
            "ts": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5, 6), None, dt.datetime(2024, 1, 1)],
                           pa.timestamp("us", tz="UTC")),
        }
    )  # fmt: skip
    batch = t.to_batches()[0]
    fast = b"".join(_rows_text(iter([batch]), t.schema, ","))
    got = json.loads(b"[" + fast[:-1] + b"]")
    want = json.loads(dumps(batch.to_pylist()))
    for g, w in zip(got, want, strict=True):
        for k in w:
            if k == "ts" and w[k] is not None:
                assert dt.datetime.fromisoformat(g[k]) == dt.datetime.fromisoformat(w[k])
            else:
                assert g[k] == w[k], k


def test_other_types_fall_back_to_python() -> None:
    t = pa.table({"l": [[1, 2], None], "n": [float("nan"), 1.0]})
    out = b"".join(_rows_text(iter(t.to_batches()), t.schema, "\n"))
    rows = [json.loads(x) for x in out.splitlines()]
    assert rows[0]["l"] == [1, 2] and rows[0]["n"] is None


RENDER_SQL = """
SELECT ticket_id, district_code, amount, updated_at,
       CAST(updated_at AS TIMESTAMP) AS naive_ts, CAST(ticket_id AS DOUBLE) / 3 AS third,
       CAST('nan' AS DOUBLE) AS nan, DATE '2024-01-02' AS d, ticket_id % 2 = 0 AS even,
       CAST(ticket_id AS DECIMAL(9, 3)) / 7 AS ratio, 'quote " and \\ 中' AS s
FROM tickets ORDER BY ticket_id
"""


def test_rows_rendered_in_the_query_equal_the_batch_rendering(hub: Hub, tickets_file: Path) -> None:
    publish_file(hub, tickets_file, "tickets")
    owner = Principal("w", "gy_12345", "w", "steward")
    plain = hub.exchange.query(RENDER_SQL, owner)
    table = plain.to_table()
    rendered = hub.exchange.query(RENDER_SQL, owner, render_json=",")
    assert rendered.rendered == "," and rendered.schema == table.schema
    text = b"".join(_result_rows(rendered, ","))
    assert text == b"".join(_rows_text(iter(table.to_batches()), table.schema, ","))
    # asked again: the remembered projection runs as one statement, with the same answer
    again = hub.exchange.query(RENDER_SQL, owner, render_json=",")
    assert again.rendered == "," and again.schema == table.schema
    assert b"".join(_result_rows(again, ",")) == text
    rows = json.loads(b"[" + text[:-1] + b"]")
    assert len(rows) == 50 and rows[0]["nan"] is None and rows[0]["even"] is False
    assert rendered.row_count == 50 and rendered.meta()["versions"] == {"tickets": 1}


def test_a_type_without_an_expression_is_not_rendered_in_the_query(
    hub: Hub, tickets_file: Path
) -> None:
    publish_file(hub, tickets_file, "tickets")
    owner = Principal("w", "gy_12345", "w", "steward")
    sql = "SELECT ticket_id, [ticket_id, 1] AS l FROM tickets ORDER BY ticket_id LIMIT 2"
    for _ in range(2):  # the second time from the remembered plan
        result = hub.exchange.query(sql, owner, render_json="\n")
        assert result.rendered is None
        lines = b"".join(_result_rows(result, "\n")).splitlines()
    assert [json.loads(x) for x in lines] == [
        {"ticket_id": 1, "l": [1, 1]},
        {"ticket_id": 2, "l": [2, 1]},
    ]
