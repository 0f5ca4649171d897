"""What a connector is, and how connectors are found.

A connector reads one source: ``discover()`` says its Arrow schema, ``read()``
yields Arrow record batches, optionally only the rows past a cursor.  It never
writes the lake or the catalog.  Connectors are registered under the entry-point
group ``blockhub.connectors``; the built-in ones register exactly the way a
third-party package would (see pyproject.toml).
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from decimal import Decimal
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution, entry_points
from typing import Any, ClassVar

import pyarrow as pa

from catalog.errors import ConnectorError
from catalog.sources.guard import ResolvedSource

ENTRY_POINT_GROUP = "blockhub.connectors"

# JSON-able cursor values: ISO text for times, numbers and strings as they are.
CursorValue = int | float | str | None


class Connector(ABC):
    """One source of one dataset."""

    name: ClassVar[str]

    def __init__(self, options: dict[str, Any], *, batch_rows: int = 100_000) -> None:
        self.options = options
        self.batch_rows = batch_rows
        self.resolved: ResolvedSource | None = None

    def bind(self, resolved: ResolvedSource) -> None:
        """The source as the hub resolved it from the agency's root or profile
        (catalog.sources.store).  File connectors then open only files inside the root, checked
        on the open descriptor; the HTTP connector only requests URLs under the profile's
        base.  Called by the ingest flow before anything is read."""
        self.resolved = resolved

    @abstractmethod
    def discover(self) -> pa.Schema:
        """The Arrow schema of what :meth:`read` yields."""

    @abstractmethod
    def read(
        self, cursor: str | None = None, since: CursorValue = None
    ) -> Iterator[pa.RecordBatch]:
        """Yield the source's rows; with a cursor column and ``since``, only rows past it."""

    def declare(  # noqa: B027 - optional hook
        self, types: Mapping[str, pa.DataType], rename: Mapping[str, str]
    ) -> None:
        """The manifest's column types, and {source name: column} for renamed columns.

        Sources without types of their own (CSV) use it to type and rename cells where
        an error can still name the row; other connectors may ignore it (the flow
        renames and casts their batches itself).
        """

    def resume(self, state: Any) -> None:  # noqa: B027 - optional hook
        """Take back the state committed with the table's last snapshot (see :meth:`state`)."""

    def state(self) -> Any:
        """JSON-able state to commit with this read's data (e.g. the files it loaded).

        Called after :meth:`read` is exhausted; the next run gets it back through
        :meth:`resume`.  None for connectors whose cursor column says it all.
        """
        return None

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Start, in the background, what a read needs first and can start before it
        knows what to read (connecting, loading a driver).

        The flow calls it as soon as the connector exists and reads the catalog and the
        lake's state meanwhile.  A failure must not raise here: it is raised by the first
        call that needs what failed, as if it had happened there.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def option(self, key: str, default: Any = None, *, required: bool = False) -> Any:
        if key in self.options:
            return self.options[key]
        if required:
            raise ConnectorError(
                f"connector {self.name!r} needs option {key!r} in source.options",
                connector=self.name,
                option=key,
            )
        return default


def cursor_value(value: Any) -> CursorValue:
    """A cursor's Python value as JSON (kept in the lake's snapshot summary)."""
    if value is None or isinstance(value, int | float | str):
        return value
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot use a {type(value).__name__} as a cursor")


def available() -> dict[str, str]:
    """Registered connector names and the object each points to."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def get_connector(name: str) -> type[Connector]:
    """The connector class registered under ``name``."""
    ep = _own_entry_point(name) or next(
        (e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == name), None
    )
    if ep is None:
        raise ConnectorError(
            f"no connector {name!r}; registered: {', '.join(sorted(available())) or 'none'}",
            connector=name,
        )
    cls = ep.load()
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise ConnectorError(f"{ep.value} is not a Connector", connector=name)
    return cls


def _own_entry_point(name: str) -> EntryPoint | None:
    """A built-in connector's entry point, read from blockhub's own distribution.

    Looking a name up among all entry points reads the metadata of every installed
    distribution (~30 ms in a fresh process, a tenth of a small incremental run);
    blockhub's own is one file.  Built-in names therefore win over a third-party
    package registering the same name; any other name is looked up everywhere.
    """
    try:
        eps = distribution("blockhub").entry_points
    except PackageNotFoundError:  # running from a source tree that is not installed
        return None
    return next((e for e in eps if e.group == ENTRY_POINT_GROUP and e.name == name), None)
