"""Hotline tickets with known bad rows, for the quality gate's tests and benchmark."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from hub.demo.sampleworld import hotline_tickets

START = datetime(2024, 6, 1, tzinfo=UTC)
END = datetime(2024, 6, 8, tzinfo=UTC)

# row index → (column, bad value, the expectations it breaks)
BAD: dict[int, tuple[str, object, set[str]]] = {
    3: (
        "caller_phone",
        "23812345678",
        {
            "column_values_to_match_regex(caller_phone)",
            "column_values_to_be_valid_mainland_mobile(caller_phone)",
        },
    ),
    5: (
        "caller_id_number",
        "520102199001011231",
        {"column_values_to_be_valid_resident_id(caller_id_number)"},
    ),
    10: (
        "district_code",
        "520199",
        {"column_values_to_be_valid_gbt2260_code(district_code)"},
    ),
    12: (
        "district_code",
        None,
        {"column_values_to_not_be_null(district_code)"},
    ),
    17: ("category", "外星人", {"column_values_to_be_in_set(category)"}),
    21: ("lat", 40.0, {"column_values_to_be_between(lat)"}),
    25: ("caller_name", "欧阳司马长名", {"column_value_lengths_to_be_between(caller_name)"}),
}
DUPLICATE = (30, 31)
"""Row 31 gets row 30's ticket id: both rows break uniqueness (GX flags every copy)."""


def bad_tickets(
    n: int = 2000, *, seed: int = 11, first_id: int = 1
) -> tuple[pa.Table, dict[int, set[str]]]:
    """``n`` tickets with the bad rows above; returns the table and ticket id → failures."""
    table = hotline_tickets(n, seed=seed, start=START, end=END, first_id=first_id)
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    expected: dict[int, set[str]] = {}
    for row, (column, value, broken) in BAD.items():
        columns[column][row] = value
        expected[columns["ticket_id"][row]] = set(broken)
    a, b = DUPLICATE
    columns["ticket_id"][b] = columns["ticket_id"][a]
    expected[columns["ticket_id"][a]] = {"column_values_to_be_unique(ticket_id)"}
    return pa.table(columns, schema=table.schema), expected
