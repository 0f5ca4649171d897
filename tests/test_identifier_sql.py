"""The DuckDB validators and masks agree with the Python ones on every input, and masks never
show more than their rule — on generated values (hypothesis): well-formed identifiers in
every notation agencies use, the same with one character changed, edge dates, unknown
prefixes, and arbitrary text."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from catalog.access.masking import PY_MASKS, mask_sql, mask_value
from catalog.domain.identifiers import (
    FOLD_FROM,
    FOLD_TO,
    MIN_BIRTH_DATE,
    USCC_CHARSET,
    id_number_check_char,
    is_valid_id_number,
    is_valid_mobile,
    is_valid_uscc,
    normalize_identifier,
    normalize_phone,
    uscc_check_char,
)
from catalog.domain.regions import id_prefixes_table
from expectations.sql import install

TODAY = date(2026, 3, 4)  # the Beijing date validated on: injected, never the machine's
PREFIXES = sorted(id_prefixes_table().column("code").to_pylist())
RUN = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    install(c, TODAY)
    yield c
    c.close()


def _sql(con: duckdb.DuckDBPyConnection, expr: str, values: list[str]) -> list[Any]:
    rows = con.execute(
        f"SELECT i, {expr} FROM (SELECT unnest(?::VARCHAR[]) AS v, "
        "generate_subscripts(?::VARCHAR[], 1) AS i) ORDER BY i",
        [values, values],
    ).fetchall()
    return [r[1] for r in rows]


# --- value strategies ------------------------------------------------------------------------

_FULL = {ch: FOLD_FROM[i] for i, ch in enumerate(FOLD_TO) if FOLD_FROM[i] != ch}
SEPARATORS = FOLD_FROM[len(FOLD_TO) :]


@st.composite
def notation(draw: st.DrawFn, canonical: str) -> str:
    """``canonical`` as an export might write it: full-width characters, lower case,
    separators between characters."""
    out = []
    for ch in canonical:
        form = draw(st.sampled_from(["same", "full", "lower", "same", "same"]))
        if form == "full" and ch.isascii() and ch.isalnum():
            ch = chr(ord(ch.upper()) + 0xFEE0) if ch.isalpha() else chr(ord(ch) + 0xFEE0)
        elif form == "lower":
            ch = ch.lower()
        out.append(ch)
        if draw(st.integers(0, 9)) == 0:
            out.append(draw(st.sampled_from(SEPARATORS)))
    return "".join(out)


@st.composite
def id_numbers(draw: st.DrawFn) -> str:
    prefix = draw(st.one_of(st.sampled_from(PREFIXES), st.from_regex(r"[0-9]{6}", fullmatch=True)))
    born = draw(
        st.one_of(
            st.dates(MIN_BIRTH_DATE - timedelta(days=400), TODAY + timedelta(days=400)),
            st.sampled_from([TODAY, TODAY + timedelta(days=1), MIN_BIRTH_DATE, date(2000, 2, 29)]),
        )
    )
    digits = f"{prefix}{born:%Y%m%d}{draw(st.integers(0, 999)):03d}"
    if draw(st.integers(0, 6)) == 0:  # a date that is not one
        digits = (
            digits[:10]
            + draw(st.sampled_from(["0230", "1301", "0000", "0431", "0229"]))
            + (digits[14:])
        )
    value = digits + id_number_check_char(digits)
    return draw(mutated(value, "0123456789Xx"))


@st.composite
def mutated(draw: st.DrawFn, value: str, alphabet: str) -> str:
    kind = draw(st.sampled_from(["as is", "as is", "notation", "one char", "cut", "extra"]))
    if kind == "notation":
        return draw(notation(value))
    if kind == "one char":
        i = draw(st.integers(0, len(value) - 1))
        return value[:i] + draw(st.sampled_from(alphabet)) + value[i + 1 :]
    if kind == "cut":
        return value[: draw(st.integers(0, len(value) - 1))]
    if kind == "extra":
        return value + draw(st.sampled_from(alphabet))
    return value


@st.composite
def credit_codes(draw: st.DrawFn) -> str:
    body = draw(st.text(alphabet=USCC_CHARSET, min_size=17, max_size=17))
    if draw(st.booleans()):
        body = body[:2] + draw(st.from_regex(r"[0-9]{6}", fullmatch=True)) + body[8:]
    return draw(mutated(body + uscc_check_char(body), USCC_CHARSET + "IOSVZiosvz"))


@st.composite
def phones(draw: st.DrawFn) -> str:
    number = draw(st.from_regex(r"1[0-9]{10}", fullmatch=True))
    prefix = draw(st.sampled_from(["", "", "+86", "0086", "86", "+86 ", "+87", "086"]))
    return draw(mutated(prefix + number, "0123456789+- "))


# Arbitrary text: any code point DuckDB's VARCHAR holds (no surrogates, no NUL), leaning on
# the characters the rules treat specially.
ANY_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        st.sampled_from(FOLD_FROM + "0123456789Xx+@张王欧阳贵A👍🏽"),
    ),
    max_size=30,
)


# --- validators: Python and SQL give the same answer --------------------------------------


def _agree(
    con: duckdb.DuckDBPyConnection, macro: str, values: list[str], check: Callable[[str], bool]
) -> None:
    got = _sql(con, f"coalesce({macro}(v), false)", values)
    wrong = [(v, s) for v, s in zip(values, got, strict=True) if s != check(v)]
    assert wrong == [], f"{macro} disagrees with Python (value, SQL says): {wrong[:5]}"


@RUN
@given(st.lists(st.one_of(id_numbers(), ANY_TEXT), min_size=1, max_size=40))
def test_id_number_sql_agrees_with_python(
    con: duckdb.DuckDBPyConnection, values: list[str]
) -> None:
    _agree(con, "bh_id_number_ok", values, lambda v: is_valid_id_number(v, today=TODAY))


@RUN
@given(st.lists(st.one_of(credit_codes(), ANY_TEXT), min_size=1, max_size=40))
def test_uscc_sql_agrees_with_python(con: duckdb.DuckDBPyConnection, values: list[str]) -> None:
    _agree(con, "bh_uscc_ok", values, is_valid_uscc)


@RUN
@given(st.lists(st.one_of(phones(), ANY_TEXT), min_size=1, max_size=40))
def test_mobile_sql_agrees_with_python(con: duckdb.DuckDBPyConnection, values: list[str]) -> None:
    _agree(con, "bh_mobile_ok", values, is_valid_mobile)


@RUN
@given(st.lists(st.one_of(phones(), id_numbers(), credit_codes(), ANY_TEXT), max_size=40))
def test_normalisation_sql_agrees_with_python(
    con: duckdb.DuckDBPyConnection, values: list[str]
) -> None:
    assert _sql(con, "bh_norm(v)", values) == [normalize_identifier(v) for v in values]
    assert _sql(con, "bh_phone_norm(v)", values) == [normalize_phone(v) for v in values]


def test_generated_values_cover_both_answers() -> None:
    """The strategies reach valid values in odd notations and invalid ones alike (else the
    agreement above would be checked on one side only)."""
    for strategy, ok, canon in (
        (id_numbers(), lambda v: is_valid_id_number(v, today=TODAY), normalize_identifier),
        (credit_codes(), is_valid_uscc, normalize_identifier),
        (phones(), is_valid_mobile, normalize_phone),
    ):
        find(strategy, lambda v, ok=ok, canon=canon: ok(v) and v != canon(v))
        find(strategy, lambda v, ok=ok: not ok(v))
    find(id_numbers(), lambda v: is_valid_id_number(v, today=TODAY + timedelta(days=1))
         and not is_valid_id_number(v, today=TODAY))  # fmt: skip


# --- masks: Python and SQL agree, and never show more than the rule -----------------------

KEEP = {"phone": (7, 4), "id_number": (10, 8), "name": (1, 1), "plate": (3, 4)}
"""Per kind: at most this many characters shown, and, when any is shown, at least this
many hidden."""


@RUN
@given(
    st.sampled_from(sorted(PY_MASKS)),
    st.lists(st.one_of(phones(), id_numbers(), ANY_TEXT), min_size=1, max_size=40),
)
def test_sql_masks_equal_python(
    con: duckdb.DuckDBPyConnection, kind: str, values: list[str]
) -> None:
    assert _sql(con, mask_sql(kind, "v"), values) == [mask_value(kind, v) for v in values]


@RUN
@given(st.sampled_from(sorted(KEEP)), st.one_of(phones(), id_numbers(), ANY_TEXT))
def test_masks_never_show_more_than_the_rule(kind: str, value: str) -> None:
    masked = mask_value(kind, value)
    assert masked is not None
    most_shown, least_hidden = KEEP[kind]
    base = {"phone": normalize_phone, "id_number": normalize_identifier}.get(kind, str)(value)
    assert len(masked) == len(base)
    shown = [i for i, ch in enumerate(masked) if ch != "*"]
    assert len(shown) <= most_shown, (value, masked)
    if shown:
        assert len(masked) - len(shown) >= least_hidden, (value, masked)
    assert all(masked[i] == base[i] for i in shown)  # what shows is the value's own


@RUN
@given(st.one_of(phones(), id_numbers()))
def test_a_number_masks_the_same_in_every_notation(value: str) -> None:
    assert mask_value("phone", value) == mask_value("phone", normalize_phone(value))
    assert mask_value("id_number", value) == mask_value("id_number", normalize_identifier(value))
