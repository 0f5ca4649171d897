"""The room attacks of tests/test_rooms.py on a lake in S3 (moto's server): the same
generated queries, through the exchange and straight in each reader's room with the SQL
check skipped, return no forbidden value; the audit entries name the same columns.
(The local-file attacks of that module read the local lake's folders; their S3
counterparts are in tests/test_s3_lake.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hub.assembly.context import Hub
from tests.conftest import make_s3_bucket
from tests.test_rooms import (  # noqa: F401  (collected here again, with this module's world)
    World,
    build_world,
    test_no_forbidden_value_even_with_the_check_skipped,
    test_no_forbidden_value_through_the_exchange,
    test_the_audit_entry_names_the_columns_the_plan_reads,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("s3rooms")
    lake = make_s3_bucket(s3_endpoint)
    hub = Hub.open(lake.settings(folder / "home"))
    try:
        w = build_world(hub, folder)
        assert all(
            v.metadata_location.startswith("s3://") for v in hub.store.latest_versions().values()
        )
        yield w
    finally:
        hub.close()
