"""The DuckDB compilation agrees with real Great Expectations, and the GX version is pinned.

The suite file is GX's own format and GX loads it; the gate runs our SQL form of it.  If
GX changes what an expectation means, or its version moves without a review of
expectations/sql.py, these tests fail.
"""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from catalog.domain.identifiers import USCC_CHARSET, is_valid_mobile, is_valid_uscc
from catalog.domain.identifiers import is_valid_id_number as _id_ok
from catalog.domain.regions import load_regions, region_exists
from catalog.errors import SuiteInvalid
from expectations.runner import BatchValidator
from expectations.sql import install
from expectations.suite import GX_VERSION, load_suite
from hub.demo.sampleworld import enterprises
from tests.quality_data import bad_tickets

TODAY = date(2026, 3, 4)  # the Beijing date IDs are validated on (never the machine's)


def is_valid_id_number(s: str) -> bool:
    return _id_ok(s, today=TODAY)


def test_gx_version_is_the_one_the_compiler_follows() -> None:
    import great_expectations as gx

    assert gx.__version__ == GX_VERSION
    suite = load_suite("hotline_tickets")
    assert suite.document["meta"]["great_expectations_version"] == GX_VERSION


def _gx_validate(table: Any, document: dict[str, Any]) -> dict[str, Any]:
    import great_expectations as gx

    import expectations.custom  # noqa: F401

    context = gx.get_context(mode="ephemeral")
    asset = context.data_sources.add_pandas("sample").add_dataframe_asset("tickets")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
        batch_parameters={"dataframe": table.to_pandas()}
    )
    suite = gx.ExpectationSuite(name="parity", expectations=document["expectations"])
    result = batch.validate(
        suite,
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["ticket_id"]},
    )
    out: dict[str, Any] = result.to_json_dict()
    return out


def test_unexpected_counts_and_keys_match_real_gx(tmp_path: Path) -> None:
    table, _ = bad_tickets(1500)
    pq.write_table(table, tmp_path / "batch.parquet")
    suite = load_suite("hotline_tickets")
    with BatchValidator(
        [str(tmp_path / "batch.parquet")], suite, key_columns=["ticket_id"]
    ) as validator:
        ours = validator.validate().document()
    theirs = _gx_validate(table, suite.document)
    assert len(ours["results"]) == len(theirs["results"])
    for mine, gx_result in zip(ours["results"], theirs["results"], strict=True):
        etype = gx_result["expectation_config"]["type"]
        assert mine["expectation_config"]["type"] == etype
        assert mine["success"] == gx_result["success"], etype
        if "unexpected_count" in gx_result["result"]:
            assert mine["result"]["unexpected_count"] == gx_result["result"]["unexpected_count"], (
                etype
            )
            gx_keys = sorted(k["ticket_id"] for k in gx_result["result"]["unexpected_index_list"])
            my_keys = sorted(
                k["ticket_id"] for k in mine["result"]["partial_unexpected_index_list"]
            )
            assert my_keys == gx_keys, etype
            if "missing_count" in gx_result["result"]:
                assert mine["result"]["missing_count"] == gx_result["result"]["missing_count"]
        else:
            assert mine["result"]["observed_value"] == gx_result["result"]["observed_value"]
    assert ours["success"] is theirs["success"] is False


def test_gx_refuses_a_suite_with_an_unknown_expectation(tmp_path: Path) -> None:
    (tmp_path / "typo.json").write_text(
        '{"name": "typo", "expectations": [{"type": "expect_column_values_to_be_vaild_mobile",'
        ' "kwargs": {"column": "x"}}]}',
        encoding="utf-8",
    )
    with pytest.raises(SuiteInvalid, match=r"typo\.json"):
        load_suite("typo", tmp_path)


def test_gx_valid_but_uncompilable_suite_is_refused(tmp_path: Path) -> None:
    (tmp_path / "median.json").write_text(
        '{"name": "median", "expectations": [{"type": "expect_column_median_to_be_between",'
        ' "kwargs": {"column": "x", "min_value": 1, "max_value": 2}}]}',
        encoding="utf-8",
    )
    with pytest.raises(SuiteInvalid, match=r"not supported by the gate"):
        load_suite("median", tmp_path)


# --- the SQL macros against the pure Python checkers --------------------------------


@pytest.fixture(scope="module")
def con() -> Any:
    c = duckdb.connect()
    install(c, TODAY)
    yield c
    c.close()


def _mutations(values: list[str], alphabet: str, rng: random.Random) -> list[str]:
    out = list(values)
    for v in values:
        i = rng.randrange(len(v))
        out.append(v[:i] + rng.choice(alphabet) + v[i + 1 :])  # one character changed
        out.append(v[:-1])
        out.append(v.lower())
    return [*out, "", " ", "x" * 18, "１" * 18]


def _agree(con: Any, macro: str, values: list[str], check: Any) -> None:
    got = con.execute(
        f"SELECT v, coalesce({macro}(v), false) FROM unnest(?::VARCHAR[]) t(v)", [values]
    ).fetchall()
    wrong = [v for v, ok in got if ok != check(v)]
    assert wrong == [], wrong[:10]


def test_id_number_macro_matches_python(con: Any) -> None:
    rng = random.Random(3)
    table, _ = bad_tickets(300, seed=5)
    ids = [v for v in table.column("caller_id_number").to_pylist() if v]
    ids += ["11010519491231002X", "11010519490230002X", "00000019900101123X"]
    values = _mutations(ids, "0123456789X", rng)
    assert sum(map(is_valid_id_number, values)) > 250  # both kinds are well represented
    _agree(con, "bh_id_number_ok", values, is_valid_id_number)


def test_uscc_macro_matches_python(con: Any) -> None:
    rng = random.Random(4)
    codes = enterprises(300).column("credit_code").to_pylist()
    values = _mutations(codes, USCC_CHARSET + "IOSVZ", rng)
    assert sum(map(is_valid_uscc, values)) > 250
    _agree(con, "bh_uscc_ok", values, is_valid_uscc)


def test_mobile_macro_matches_python(con: Any) -> None:
    rng = random.Random(5)
    values = _mutations(["13812345678", "19912345678", "17700000000"], "0123456789+", rng)
    values += [f"{rng.randrange(10**10, 10**11)}" for _ in range(200)]
    _agree(con, "bh_mobile_ok", values, is_valid_mobile)


def test_region_check_matches_python(con: Any) -> None:
    rng = random.Random(6)
    known = rng.sample(sorted(load_regions()), 300)
    values = known + [c + "000000" for c in known if len(c) == 6]
    values += [f"{rng.randrange(10**5, 10**6)}" for _ in range(300)] + ["52010", "5201020000001"]
    con.execute(
        "CREATE OR REPLACE TABLE __bh_regions AS SELECT unnest(?::VARCHAR[]) AS code",
        [sorted(load_regions())],
    )
    got = con.execute(
        "SELECT v, bh_region_key(v) IN (SELECT code FROM __bh_regions) "
        "FROM unnest(?::VARCHAR[]) t(v)",
        [values],
    ).fetchall()
    wrong = [v for v, ok in got if ok != region_exists(v)]
    assert wrong == []


def test_stored_results_load_into_gx_result_classes(tmp_path: Path) -> None:
    """The result document the catalog keeps is GX's shape: GX's own classes accept it."""
    from great_expectations.core import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    table, _ = bad_tickets(300)
    pq.write_table(table, tmp_path / "batch.parquet")
    with BatchValidator(
        [str(tmp_path / "batch.parquet")], load_suite("hotline_tickets"), key_columns=["ticket_id"]
    ) as validator:
        doc = validator.validate().document()
    results = [
        ExpectationValidationResult(
            success=r["success"],
            expectation_config=ExpectationConfiguration(**r["expectation_config"]),
            result=r["result"],
            exception_info=r["exception_info"],
        )
        for r in doc["results"]
    ]
    gx_result = ExpectationSuiteValidationResult(
        success=doc["success"],
        results=results,
        suite_name=doc["suite_name"],
        statistics=doc["statistics"],
        meta=doc["meta"],
    )
    described = gx_result.describe_dict()
    assert described["statistics"]["unsuccessful_expectations"] == 9
    assert len(described["expectations"]) == 15
