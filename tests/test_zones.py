"""Answers do not depend on the machine's zone: DuckDB connections and the cursors the
exchange opens on them render TIMESTAMPTZ values in UTC whatever ``TZ`` says."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = """
from connectors.duck import connect
con = connect("iceberg")
q = "SELECT CAST(TIMESTAMPTZ '2024-05-01 23:58:55+00' AS VARCHAR), current_setting('TimeZone')"
print(con.execute(q).fetchone(), con.cursor().execute(q).fetchone())
"""


@pytest.mark.parametrize("tz", ["America/Los_Angeles", "Asia/Shanghai", "Pacific/Kiritimati"])
def test_duckdb_answers_in_utc_on_cursors_too(tz: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CODE],
        env={**os.environ, "TZ": tz},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    utc = "('2024-05-01 23:58:55+00', 'UTC')"
    assert out.stdout.strip() == f"{utc} {utc}", out.stdout
