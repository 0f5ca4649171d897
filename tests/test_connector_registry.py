"""Connectors are found through the ``blockhub.connectors`` entry-point group: the
built-in ones from blockhub's own distribution, any other from an installed package."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from catalog.datasets.manifest import Manifest
from catalog.errors import ConnectorError
from connectors.base import Connector, available, get_connector
from connectors.postgres import PostgresConnector
from hub.assembly.context import Hub

THIRD_PARTY = """
from collections.abc import Iterator

import pyarrow as pa

from connectors.base import Connector


class Sensors(Connector):
    name = "acme_sensors"

    def discover(self) -> pa.Schema:
        return pa.schema([("id", pa.int64())])

    def read(self, cursor=None, since=None) -> Iterator[pa.RecordBatch]:
        yield pa.record_batch([pa.array([1, 2, 3])], names=["id"])


class NotAConnector:
    pass
"""


@pytest.fixture
def acme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed third-party package registering two names, the way pip leaves one."""
    (tmp_path / "acme_connectors.py").write_text(THIRD_PARTY)
    info = tmp_path / "acme_connectors-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-connectors\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[blockhub.connectors]\n"
        "acme_sensors = acme_connectors:Sensors\n"
        "acme_broken = acme_connectors:NotAConnector\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_built_in_connectors_come_from_blockhubs_own_entry_points() -> None:
    assert get_connector("postgres") is PostgresConnector
    names = available()
    for name in ("postgres", "mysql", "csv", "excel", "json", "parquet", "http_api", "mqtt"):
        assert name in names


def test_a_third_party_package_registers_a_connector(acme: Path) -> None:
    cls = get_connector("acme_sensors")
    assert issubclass(cls, Connector) and cls.__name__ == "Sensors"
    with cls({}) as source:
        assert [b.num_rows for b in source.read()] == [3]
    assert available()["acme_sensors"] == "acme_connectors:Sensors"


def test_an_entry_point_that_is_not_a_connector_is_refused(acme: Path) -> None:
    with pytest.raises(ConnectorError, match="acme_connectors:NotAConnector is not a Connector"):
        get_connector("acme_broken")


def test_an_unknown_name_lists_the_registered_ones(acme: Path) -> None:
    with pytest.raises(ConnectorError) as e:
        get_connector("oracle")
    assert "no connector 'oracle'" in e.value.message
    assert "acme_sensors" in e.value.message and "postgres" in e.value.message


def test_a_run_naming_an_unknown_connector_fails_at_once_with_the_reason(
    hub: Hub, make_manifest: Callable[..., Manifest]
) -> None:
    """A configuration error is not a source outage: recorded, not retried."""
    m = make_manifest(source={"connector": "oracle", "options": {}, "retries": 3, "backoff_s": 5})
    hub.store.register_dataset(m)
    started = time.monotonic()
    run = hub.ingest(m.id)
    assert time.monotonic() - started < 4  # no backoff slept
    assert run.status == "failed"
    assert run.error and "no connector 'oracle'" in run.error and "attempts" not in run.error
    assert hub.store.versions(m.id) == []
