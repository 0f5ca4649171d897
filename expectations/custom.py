"""Domain expectations as Great Expectations custom expectations.

Each class is a real GX ``ColumnMapExpectation``: defining it registers its snake-case
name (``expect_column_values_to_be_valid_resident_id`` …) with GX, so suite files can
use it and GX itself validates and runs it (pandas engine, row by row with the pure
checkers of :mod:`catalog.domain.identifiers` / :mod:`catalog.domain.regions`).  The hot
path does not run these methods: :mod:`expectations.sql` compiles the same names to DuckDB SQL, and
``tests/test_quality_gx.py`` checks that both give the same unexpected counts.

Importing this module imports GX (about 3 s of CPU), so only the suite loader and the
tests import it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import ColumnMapExpectation
from great_expectations.expectations.metrics import (
    ColumnMapMetricProvider,
    column_condition_partial,
)

from catalog.domain.clock import SystemClock
from catalog.domain.identifiers import is_valid_id_number, is_valid_mobile, is_valid_uscc
from catalog.domain.regions import region_exists
from catalog.domain.workdays import beijing_date


def _valid(check: Callable[[str], bool]) -> Callable[[Any], bool]:
    # GX hands pandas values; anything but a string is malformed (nulls never get here).
    return lambda v: isinstance(v, str) and check(v)


class ColumnValuesValidResidentId(ColumnMapMetricProvider):
    condition_metric_name = "column_values.valid_resident_id"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: Any, **kwargs: Any) -> Any:
        # GX runs this at an edge of ours: the Beijing date of the system clock bounds
        # birth dates, as the compiled gate's default does (expectations.runner).
        today = beijing_date(SystemClock().now())
        return column.map(_valid(lambda v: is_valid_id_number(v, today=today)))


class ColumnValuesValidUscc(ColumnMapMetricProvider):
    condition_metric_name = "column_values.valid_unified_social_credit_code"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: Any, **kwargs: Any) -> Any:
        return column.map(_valid(is_valid_uscc))


class ColumnValuesValidRegionCode(ColumnMapMetricProvider):
    condition_metric_name = "column_values.valid_gbt2260_code"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: Any, **kwargs: Any) -> Any:
        return column.map(_valid(region_exists))


class ColumnValuesValidMainlandMobile(ColumnMapMetricProvider):
    condition_metric_name = "column_values.valid_mainland_mobile"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: Any, **kwargs: Any) -> Any:
        return column.map(_valid(is_valid_mobile))


class ExpectColumnValuesToBeValidResidentId(ColumnMapExpectation):
    """18-character resident ID number (GB 11643), once normalised (full-width digits,
    spaces, dashes, lower-case ``x``): a known GB/T 2260 prefix (current or retired), a
    real birth date not after today (Beijing) nor before 1870, and the ISO 7064 MOD 11-2
    check character."""

    map_metric = "column_values.valid_resident_id"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)


class ExpectColumnValuesToBeValidUnifiedSocialCreditCode(ColumnMapExpectation):
    """18-character unified social credit code (GB 32100), once normalised: code
    characters, a digit region part and the MOD 31 check character."""

    map_metric = "column_values.valid_unified_social_credit_code"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)


class ExpectColumnValuesToBeValidGbt2260Code(ColumnMapExpectation):
    """An administrative division code (6 or 12 digits) present in the shipped GB/T 2260
    list (``catalog/domain/data/gbt2260.csv``)."""

    map_metric = "column_values.valid_gbt2260_code"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)


class ExpectColumnValuesToBeValidMainlandMobile(ColumnMapExpectation):
    """An 11-digit mainland mobile number, ``1[3-9]`` and nine digits, once normalised
    (full-width digits, spaces, dashes and a ``+86``/``0086``/``86`` prefix removed)."""

    map_metric = "column_values.valid_mainland_mobile"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)


CUSTOM_TYPES: tuple[str, ...] = (
    "expect_column_values_to_be_valid_resident_id",
    "expect_column_values_to_be_valid_unified_social_credit_code",
    "expect_column_values_to_be_valid_gbt2260_code",
    "expect_column_values_to_be_valid_mainland_mobile",
)
