"""Property-based tests of catalog/access/disclosure.py: whatever the records, grants and
filters, a reader learns nothing beyond its own view — not through the values it gets,
not through which events its filter lets through (bisection), not through counts."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from catalog.access import disclosure
from catalog.access.effective import Access
from catalog.access.masking import mask_value


def settings(max_examples: int, deadline: None) -> Any:
    """Deterministic runs (the same examples on every machine and day), no example file."""
    return hypothesis_settings(
        max_examples=max_examples,
        deadline=deadline,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


COLUMNS = ("district_code", "category", "caller_phone", "note")
DISTRICTS = ("520102", "520103", "520111")
KINDS = {"caller_phone": "phone", "note": "other"}

phones = st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)
records = st.fixed_dictionaries(
    {
        "district_code": st.sampled_from(DISTRICTS),
        "category": st.sampled_from(("noise", "water", "road")),
        "caller_phone": phones,
        "note": st.text(min_size=0, max_size=8),
    }
)


@st.composite
def accesses(draw: st.DrawFn) -> Access:
    """A non-owner reader: some columns, some of the personal ones masked, maybe a row
    filter on the district (any number of alternatives)."""
    cols = draw(st.sets(st.sampled_from(COLUMNS), min_size=1))
    masked = {c: KINDS[c] for c in cols if c in KINDS and draw(st.booleans())}
    filters = draw(
        st.none()
        | st.lists(
            st.fixed_dictionaries(
                {"district_code": st.sets(st.sampled_from(DISTRICTS), min_size=1).map(tuple)}
            ),
            min_size=1,
            max_size=2,
        ).map(tuple)
    )
    ordered = tuple(c for c in COLUMNS if c in cols)
    return Access("d", True, draw(st.sampled_from(("grant", "admin"))), ordered, masked, filters)


def _same_view_twin(access: Access, record: dict[str, Any], other: str) -> dict[str, Any]:
    """Another record the reader cannot tell apart: each masked phone replaced by another
    phone with the same mask, every column it cannot see changed."""
    twin = dict(record)
    raw = record["caller_phone"]
    if "caller_phone" in access.masked:
        twin["caller_phone"] = raw[:3] + other[3:7] + raw[7:]
    if "caller_phone" not in access.columns:
        twin["caller_phone"] = other
    if "note" not in access.columns or "note" in access.masked:
        twin["note"] = record["note"] + "x"
    for c in ("category",):
        if c not in access.columns:
            twin[c] = "other-" + record[c]
    return twin


@settings(max_examples=300, deadline=None)
@given(access=accesses(), record=records, other=phones, guesses=st.lists(phones, max_size=3))
def test_a_filter_learns_nothing_beyond_the_view(
    access: Access, record: dict[str, Any], other: str, guesses: list[str]
) -> None:
    """Two records that look the same to the reader pass or fail any filter alike: a
    subscription with guessed values cannot bisect a masked or hidden value."""
    twin = _same_view_twin(access, record, other)
    assert disclosure.disclose_record(access, record) == disclosure.disclose_record(access, twin)
    visible = [c for c in COLUMNS if c in access.columns]
    for column in visible:
        flt = {column: frozenset([*guesses, str(record[column])])}
        keep = disclosure.filter_predicate(lambda: access, flt)
        assert keep(record) == keep(twin)


@settings(max_examples=200, deadline=None)
@given(access=accesses(), column=st.sampled_from(COLUMNS))
def test_a_filter_on_a_column_the_reader_cannot_see_is_refused(access: Access, column: str) -> None:
    flt = {column: frozenset(["x"])}
    if column in access.columns:
        disclosure.check_filter(access, flt, dataset="d")
    else:
        try:
            disclosure.check_filter(access, flt, dataset="d")
        except disclosure.AccessDenied as e:
            assert "x" not in e.message  # the value is not echoed
        else:
            raise AssertionError("a filter on a hidden column was accepted")


@settings(max_examples=300, deadline=None)
@given(access=accesses(), record=records)
def test_a_disclosed_record_holds_only_what_the_access_shows(
    access: Access, record: dict[str, Any]
) -> None:
    shown = disclosure.disclose_record(access, record)
    if not disclosure.row_visible(access, record):
        assert shown is None
        return
    assert shown is not None
    assert set(shown) == set(access.columns)
    for c, kind in access.masked.items():
        assert shown[c] == mask_value(kind, str(record[c]))
        if c == "caller_phone":
            assert record[c] not in str(shown)


@settings(max_examples=300, deadline=None)
@given(
    access=accesses(),
    seen=st.lists(records, max_size=6),
    unseen_a=st.lists(records, max_size=6),
    unseen_b=st.lists(records, max_size=6),
)
def test_counts_depend_only_on_the_rows_the_reader_sees(
    access: Access,
    seen: list[dict[str, Any]],
    unseen_a: list[dict[str, Any]],
    unseen_b: list[dict[str, Any]],
) -> None:
    """Two increments that agree on the reader's rows give it the same payload, however
    many rows outside its filter they hold: no counting attack."""
    visible = [r for r in seen if disclosure.row_visible(access, r)]
    hidden_a = [r for r in unseen_a if not disclosure.row_visible(access, r)]
    hidden_b = [r for r in unseen_b if not disclosure.row_visible(access, r)]

    def payload(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "dataset": "d",
            "version": 2,
            "rows_added": len(rows),
            "total_rows": 100 + len(rows),
            "regions": dict(Counter(r["district_code"] for r in rows)),
            "quality": {"rows_checked": len(rows)},
        }

    a = disclosure.disclose_update(access, payload(visible + hidden_a), "district_code")
    b = disclosure.disclose_update(access, payload(visible + hidden_b), "district_code")
    if access.row_filters is None:
        return  # the reader sees every row: the counts are its own
    assert a == b
    assert a is not None
    for code, n in (a.get("regions") or {}).items():
        assert n == sum(1 for r in visible if r["district_code"] == code)


@settings(max_examples=200, deadline=None)
@given(access=accesses(), record=records)
def test_an_alert_about_a_row_outside_the_reader_shows_no_value(
    access: Access, record: dict[str, Any]
) -> None:
    """As the engine stores it (platform view: the phone masked), then per receiver: an
    alert about a row outside the receiver's rows, or made of a field it cannot see,
    carries none of the row's values."""
    platform = {**record, "caller_phone": mask_value("phone", record["caller_phone"])}
    alert = {
        "rule_id": "r",
        "source": "feed:d",
        "key": f"caller_phone={platform['caller_phone']}",
        "title": f"{record['category']} {platform['caller_phone']}",
        "detail": {"event": platform, "fields": ["caller_phone", "category"]},
    }
    shown = disclosure.disclose_alert(access, alert)
    text = str(shown)
    assert record["caller_phone"] not in text
    category = f"'{record['category']}'"
    if not disclosure.row_visible(access, record):
        assert platform["caller_phone"] not in text and category not in text
        assert shown["title"] == "r on feed:d"
    elif "caller_phone" not in access.columns or "category" not in access.columns:
        assert shown["title"] == "r on feed:d" and shown["key"] == disclosure.WITHHELD
