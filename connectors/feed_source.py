"""The ``mqtt`` and ``push`` source kinds of live feeds, as registered connectors.

A feed's events arrive by themselves (docs/feeds.md) and are written to the lake by the
feed runner of ``blockhub serve``; there is nothing to pull.  Registering the names keeps
them in the list of known source kinds and turns a pull run of a feed into a clear error
instead of "no connector 'mqtt'".
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from catalog.errors import ConnectorError
from connectors.base import Connector, CursorValue


class FeedSource(Connector):
    name = "feed"

    def _refuse(self) -> ConnectorError:
        return ConnectorError(
            f"a {self.name} feed is not pulled: its events arrive through `blockhub serve` "
            "(MQTT subscriber or POST /v1/feeds/<id>/events) and are flushed to the lake there",
            connector=self.name,
        )

    def discover(self) -> pa.Schema:
        raise self._refuse()

    def read(
        self, cursor: str | None = None, since: CursorValue = None
    ) -> Iterator[pa.RecordBatch]:
        raise self._refuse()


class MqttFeed(FeedSource):
    name = "mqtt"


class PushFeed(FeedSource):
    name = "push"
