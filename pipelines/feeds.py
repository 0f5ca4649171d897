"""Live feeds, the pure parts: what a feed manifest says, event validation, micro-batch flush.

A feed is a dataset whose source pushes events (``source.connector: mqtt`` or ``push``;
docs/feeds.md).  Accepted events are appended, one message per event, to the durable
event log on channel ``feed:<id>`` *before* they are acknowledged; :func:`flush_feed` then
moves what the log holds past the table's committed offset into the lake in one
commit that records the new offset, exactly like an ingest run records its cursor.
So a crash between acknowledgement and flush loses nothing, and a flush that is
repeated after a crash adds nothing twice.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from catalog.datasets.manifest import Manifest
from catalog.datasets.store import CatalogStore, Version
from catalog.domain.channels import feed_channel
from catalog.errors import CommitUnsettled, HubError, InvalidRequest, ManifestError, unavailable
from catalog.lake.tables import Lake
from catalog.sources.guard import source_problems
from eventlog.message import Message, Publisher
from pipelines.ingest import publish
from pipelines.notify import announce, version_event
from pipelines.registry import FEED_CONNECTORS
from pipelines.staged import Staged

log = logging.getLogger(__name__)

EVENT_TYPE = "feed.event"
MAX_EVENTS_PER_BATCH = 10_000


def is_feed(manifest: Manifest) -> bool:
    return manifest.source.connector in FEED_CONNECTORS


class FeedOptions(BaseModel):
    """``source.options`` of a feed manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topics: list[str] = Field(
        default_factory=list, description="MQTT topic filters, under the profile's topic_prefix"
    )
    qos: Literal[0, 1, 2] = 1
    flush_rows: int = Field(default=1000, ge=1, le=1_000_000)
    flush_seconds: float = Field(default=5.0, gt=0, le=3600)


def feed_options(manifest: Manifest, *, file: str | None = None) -> FeedOptions:
    """The feed options of a manifest; a :class:`ManifestError` names the file and field."""
    where = file or f"<dataset {manifest.id}>"
    # The broker and its credentials are the agency's connection profile's
    # (catalog.sources.store): a manifest naming its own is refused with that reason.
    located = [p for p in source_problems(manifest) if p["field"].startswith("source.options.")]
    if located:
        raise ManifestError(where, located)
    try:
        opts = FeedOptions.model_validate(manifest.source.options)
    except ValidationError as e:
        problems = [
            {
                "field": "source.options." + ".".join(str(x) for x in err["loc"]),
                "message": "unknown field" if err["type"] == "extra_forbidden" else err["msg"],
            }
            for err in e.errors()
        ]
        raise ManifestError(where, problems) from None
    problems = []
    if manifest.source.connector == "mqtt" and not opts.topics:
        problems.append({"field": "source.options.topics", "message": "an mqtt feed needs topics"})
    if manifest.source.connector == "push" and opts.topics:
        problems.append({"field": "source.options.topics", "message": "a push feed has no topics"})
    binary = [c.name for c in manifest.columns if c.type == "binary"]
    if binary:
        problems.append(
            {"field": "columns", "message": f"a feed cannot carry binary columns ({binary})"}
        )
    if manifest.source.mode == "replace":
        problems.append(
            {"field": "source.mode", "message": "a feed appends or merges; it cannot replace"}
        )
    if problems:
        raise ManifestError(where, problems)
    return opts


class EventsRejected(HubError):
    """A pushed batch held invalid events; nothing of it was accepted."""

    code = "invalid_events"
    status = 422


class BatchTooLarge(HubError):
    code = "too_large"
    status = 413


# -- validation --------------------------------------------------------------------------


@dataclass(frozen=True)
class EventError:
    index: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "reason": self.reason}


@dataclass(frozen=True)
class Checked:
    """The outcome of validating a batch of events against a feed's columns."""

    table: pa.Table  # the valid events, typed as the feed's columns
    records: list[dict[str, Any]]  # the same events as JSON-able records (bus payloads)
    errors: list[EventError]

    @property
    def ok(self) -> bool:
        return not self.errors


_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError)


def _reason(value: Any, column: str, dtype: pa.DataType, err: Exception) -> str:
    """Why one value does not fit a column type."""
    text = str(err).splitlines()[0]
    return f"{column}: {value!r} is not a {_type_label(dtype)} ({text})"


def _type_label(dtype: pa.DataType) -> str:
    if pa.types.is_timestamp(dtype):
        return "timestamp with a zone offset" if dtype.tz else "timestamp"
    return str(dtype)


def check_events(manifest: Manifest, events: list[Any]) -> Checked:
    """Validate events against the feed's declared columns.

    Each column is built and cast with pyarrow in one go; only a column that fails is
    looked at value by value, to name the events at fault.  An event must be a JSON
    object with declared fields only; key columns (primary key, ``nullable: false``)
    must be present and non-null.
    """
    schema = manifest.arrow_schema
    bad: dict[int, list[str]] = {}
    names = set(schema.names)
    objects: list[tuple[int, dict[str, Any]]] = []
    for i, e in enumerate(events):
        if not isinstance(e, dict):
            bad.setdefault(i, []).append(f"an event must be a JSON object, not {_kind(e)}")
            continue
        extra = sorted(k for k in e if k not in names)
        if extra:
            bad.setdefault(i, []).append(f"undeclared field(s) {', '.join(extra)}")
        objects.append((i, e))
    columns: list[pa.Array] = []
    for field in schema:
        values = [e.get(field.name) for _, e in objects]
        try:
            arr = pa.array(values)
            arr = arr.cast(field.type) if arr.type != field.type else arr
        except _CAST_ERRORS:
            # Value by value, only for a column that failed: name the events at fault.
            pieces = []
            for (i, _), v in zip(objects, values, strict=True):
                try:
                    pieces.append(pa.array([v]).cast(field.type))
                except _CAST_ERRORS as err:
                    bad.setdefault(i, []).append(_reason(v, field.name, field.type, err))
                    pieces.append(pa.nulls(1, field.type))
            arr = pa.concat_arrays(pieces) if pieces else pa.nulls(0, field.type)
        if not field.nullable and arr.null_count:
            for (i, event), v in zip(objects, values, strict=True):
                if v is None:
                    missing = "missing" if field.name not in event else "null"
                    bad.setdefault(i, []).append(f"{field.name}: key column is {missing}")
        columns.append(arr)
    table = pa.Table.from_arrays(columns, schema=schema) if objects else schema.empty_table()
    errors = [EventError(i, "; ".join(r)) for i, r in sorted(bad.items())]
    if errors:
        keep = pa.array([i not in bad for i, _ in objects], pa.bool_())
        table = table.filter(keep)
    return Checked(table, [jsonable(r) for r in table.to_pylist()], errors)


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(value), "a number"
    )


def jsonable(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record as JSON: ISO text for times and dates, decimals as text, bytes as base64."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, dt.datetime | dt.date | dt.time):
            out[k] = v.isoformat()
        elif isinstance(v, Decimal):
            out[k] = str(v)
        elif isinstance(v, bytes):
            out[k] = base64.b64encode(v).decode()
        else:
            out[k] = v
    return out


def parse_batch(body: bytes, content_type: str) -> list[Any]:
    """A request body as a list of events: a JSON array, one JSON object, or NDJSON."""
    text = body.strip()
    if not text:
        raise InvalidRequest("the body holds no events")
    ndjson = "ndjson" in content_type or "jsonl" in content_type
    if not ndjson:
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            if b"\n" not in text:
                raise InvalidRequest(f"the body is not JSON: {e}") from None
            ndjson = True
        else:
            return doc if isinstance(doc, list) else [doc]
    events: list[Any] = []
    for n, line in enumerate(text.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            events.append(orjson.loads(line))
        except orjson.JSONDecodeError as e:
            raise InvalidRequest(f"NDJSON line {n} is not JSON: {e}", line=n) from None
    return events


# -- flushing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedCursor:
    """Where a feed's lake table stands in the event log: committed with each flush."""

    epoch: str
    offset: int

    def to_json(self) -> dict[str, Any]:
        return {"log_epoch": self.epoch, "offset": self.offset}

    @classmethod
    def from_json(cls, value: Any, epoch: str) -> FeedCursor:
        """The committed position; a cursor of another log epoch (a new, empty log)
        starts again from the beginning of this one."""
        if isinstance(value, dict) and value.get("log_epoch") == epoch:
            return cls(epoch, int(value.get("offset", 0)))
        if value is not None:
            log.warning(
                "feed cursor %r is from another event log; reading it from the start", value
            )
        return cls(epoch, 0)


LogReader = Callable[[str, int, int], list[Message]]


def committed_offset(manifest: Manifest, lake: Lake, epoch: str) -> int:
    if not lake.exists(manifest.id):
        return 0
    snap = lake.current(manifest.id)
    return FeedCursor.from_json(snap.cursor if snap else None, epoch).offset


def ensure_feed_table(manifest: Manifest, lake: Lake) -> None:
    """The feed's lake table, created with the manifest's columns and key if it is new."""
    lake.ensure_table(
        manifest.id,
        manifest.arrow_schema,
        identifier_fields=manifest.primary_key or None,
        policy=manifest.source.schema_policy,
    )


def flush_feed(
    manifest: Manifest,
    *,
    lake: Lake,
    store: CatalogStore,
    read: LogReader,
    epoch: str,
    publisher: Publisher | None,
    max_events: int = 100_000,
) -> Version | None:
    """Commit the events the log holds past the table's offset as the next version.

    Returns None when there was nothing to flush.  Every flush is a recorded run
    (trigger ``feed``) and announces ``dataset.updated`` like any ingest.
    """
    schema = manifest.arrow_schema
    ensure_feed_table(manifest, lake)
    base = lake.current(manifest.id)  # two flushers of one feed: the later commit is refused
    after = committed_offset(manifest, lake, epoch)
    messages = read(feed_channel(manifest.id), after, max_events)
    if not messages:
        return None
    if messages[-1].epoch != epoch:
        # The log started over since the caller learnt its epoch: offsets after ``after``
        # are of another epoch.  Nothing now; the caller asks again with the new one.
        log.warning("feed %s: the event log's epoch moved on; flush skipped", manifest.id)
        return None
    last = messages[-1].offset
    records = [m.data for m in messages if m.type == EVENT_TYPE]
    checked = check_events(manifest, records)
    if checked.errors:  # accepted events were valid; a changed manifest may disagree
        log.warning(
            "feed %s: %d logged event(s) no longer fit the declared columns and are skipped "
            "(first: %s)",
            manifest.id,
            len(checked.errors),
            checked.errors[0].reason,
        )
    table = checked.table
    if manifest.source.mode == "merge":
        table = last_per_key(table, manifest.primary_key)
    run = store.start_run(manifest.id, "feed")
    files = lake.stage(manifest.id, run.id, _batches(table), schema)
    staged = Staged(
        dataset_id=manifest.id,
        run_id=run.id,
        files=files,
        rows_read=len(records),
        cursor=FeedCursor(epoch, last).to_json(),  # type: ignore[arg-type]
        previous_cursor=None,
        bytes_written=sum(f.bytes for f in files),
        base_snapshot=base.snapshot_id if base is not None else None,
    )
    try:
        version = _publish(staged, manifest, lake=lake, store=store)
    except CommitUnsettled:
        store.expire_lease(run.id)  # the files may be the commit: the next flush settles it
        raise
    except Exception as e:
        lake.discard(files)
        if unavailable(e) is not None:  # the catalog is gone: the run's lease runs out
            store.expire_lease(run.id)
            raise
        store.finish_run(run.id, "failed", rows_read=len(records), error=f"flush failed: {e}")
        raise
    store.finish_run(
        run.id,
        "succeeded",
        rows_read=len(records),
        rows_written=version.rows_added,
        bytes_written=staged.bytes_written,
        version=version.version,
    )
    announce(store, publisher)
    return version


def last_per_key(table: pa.Table, key: list[str]) -> pa.Table:
    """The last event of each key, in arrival order: an upsert takes one row per key."""
    if table.num_rows < 2:
        return table
    idx = "__blockhub_row"
    numbered = table.append_column(idx, pa.array(range(table.num_rows), pa.int64()))
    last = numbered.group_by(key, use_threads=False).aggregate([(idx, "max")])
    keep = pc.sort_indices(last.column(f"{idx}_max"))
    rows = pc.take(last.column(f"{idx}_max"), keep)
    return table.take(rows)


def _batches(table: pa.Table) -> Iterable[pa.RecordBatch]:
    return table.to_batches()


def _publish(staged: Staged, manifest: Manifest, *, lake: Lake, store: CatalogStore) -> Version:
    """Commit even a flush with no valid row, so that the offset moves past the skipped."""
    if staged.files:
        version = publish(staged, manifest, lake=lake, store=store)
        assert version is not None
        return version
    snap = lake.commit(manifest.id, [], mode="append", cursor=staged.cursor, run_id=staged.run_id)
    try:
        return store.record_version(
            manifest.id,
            snapshot_id=snap.snapshot_id,
            metadata_location=snap.metadata_location,
            rows_added=0,
            total_rows=snap.total_rows,
            run_id=staged.run_id,
            cursor=snap.cursor,
            committed_at=snap.committed_at,
            events=lambda v: [version_event(v, manifest)],
        )
    except Exception as e:
        if unavailable(e) is None:
            raise
        raise CommitUnsettled(manifest.id, staged.run_id) from e
