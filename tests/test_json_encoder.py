"""The DuckDB-rendered JSON rows equal what orjson makes of the same Arrow batch."""

from __future__ import annotations

import datetime as dt
import decimal
import json

import pyarrow as pa

from hub.encoders import _rows_text, dumps


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
