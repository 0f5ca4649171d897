"""What leaves the hub by a path other than SQL, as one :class:`~catalog.access.effective.Access`
allows it.  Pure functions over an access decision and plain data: no I/O.

SQL answers are shaped inside the engine (the exchange's profile views).  Everything
else that carries dataset values or counts — websocket events, dataset updates, block
channel messages, alerts, dispatch orders, quarantine rows, quality samples, version
and run counts — goes through the functions here, so there is one rule for every path
(docs/security.md):

- **records** (a row, an event, an alert's event): the row filter decides whether the
  record is shown at all; columns outside ``access.columns`` are dropped (fields that
  are not declared columns of the dataset too, since nothing says they are not
  personal); each masked column carries :func:`catalog.access.masking.mask_value` of its value;
- **counts** (rows added, total rows, rows per region, quality counts): only a reader
  who sees every row gets the count of every row; for a reader with a row filter a
  count is narrowed to what the filter provably keeps, or withheld;
- **filters** a reader chooses (feed subscription filters): a filter may name visible
  columns only, and it compares the value the reader would see — the masked one for a
  masked column — so subscribing with guessed values learns nothing the events would
  not show anyway.  No bisection, no counting, no oracle.

``owner`` access (the owning agency) passes records through as they are.  An admin's
access is an ordinary non-owner access: masked unless a grant lifts the mask.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from catalog.access.effective import Access
from catalog.access.masking import mask_value
from catalog.domain import channels
from catalog.errors import AccessDenied, InvalidRequest

Record = Mapping[str, Any]
FeedFilter = Mapping[str, frozenset[str]]

WITHHELD = "withheld"
"""The key under which a disclosed payload lists the fields it left out."""


def _text(value: Any) -> str:
    return str(value)


def _fields(record: Record) -> Record:
    """The record's fields, those of a nested ``row`` object included."""
    row = record.get("row")
    if isinstance(row, Mapping):
        return {**row, **{k: v for k, v in record.items() if k != "row"}}
    return record


def row_visible(access: Access, record: Record) -> bool:
    """Whether the access shows this record at all (readable, and inside a row filter).

    The row filter compares the stored value's text, as the exchange's profile view does
    (``CAST(column AS VARCHAR) IN (...)``); a record lacking a filter column is outside.
    """
    if not access.readable:
        return False
    filters = access.row_filters
    if filters is None:
        return True
    fields = _fields(record)
    return any(
        all(fields.get(c) is not None and _text(fields[c]) in vals for c, vals in f.items())
        for f in filters
    )


def shown_as_stored(access: Access, column: str) -> bool:
    """Whether this reader sees ``column``'s values as stored: the owner always, anyone
    else when the column is among its visible ones and not masked.  The one rule for every
    path that keys, routes or groups by a column's values (row keys, block routing, samples'
    keys): a masked or hidden column's values must not leak through what they decide."""
    return access.via == "owner" or (column in access.columns and column not in access.masked)


def masked_value(access: Access, column: str, value: Any) -> Any:
    """The value of one visible column as this reader sees it."""
    kind = access.masked.get(column)
    if kind is None or value is None:
        return value
    return mask_value(kind, _text(value))


def disclose_record(access: Access, record: Record) -> dict[str, Any] | None:
    """The record as this reader sees it, or None when the reader may not see the row.

    A nested ``row`` object (the shape of some feed events) is disclosed the same way.
    """
    if access.via == "owner":
        return dict(record)
    if not row_visible(access, record):
        return None
    return _project(access, record)


def _project(access: Access, record: Record) -> dict[str, Any]:
    visible = set(access.columns)
    out: dict[str, Any] = {}
    for k, v in record.items():
        if k == "row" and isinstance(v, Mapping) and "row" not in visible:
            inner = _project(access, v)
            out["row"] = inner
        elif k in visible:
            out[k] = masked_value(access, k, v)
    return out


def unchanged(access: Access, record: Record) -> bool:
    """Whether :func:`disclose_record` would hand this record on exactly as it is (the
    send path then shares one serialized frame between subscribers)."""
    if access.via == "owner":
        return True
    if not row_visible(access, record):
        return False
    visible = set(access.columns)
    if not visible.issuperset(record):
        return False
    return not any(record.get(c) is not None for c in access.masked)


def unmasked_personal(access: Access, personal: Mapping[str, str]) -> list[str]:
    """Personal columns this non-owner reader receives raw (a grant lifted their mask):
    each delivery of them is audited (``access.unmasked``).  Empty for the owner."""
    if access.via == "owner" or not access.readable:
        return []
    return [c for c in access.columns if c in personal and c not in access.masked]


# -- counts ---------------------------------------------------------------------------


def counts_visible(access: Access) -> bool:
    """Whether a count over every row of the dataset may be shown to this reader."""
    return access.readable and access.row_filters is None


def disclose_regions(
    access: Access, regions: Mapping[str, int], key_column: str | None
) -> dict[str, int] | None:
    """Rows per region code as this reader may learn them, or None (withheld).

    A reader with a row filter gets the regions its filter provably keeps: when every
    alternative of the filter constrains the block key column alone, the codes listed
    there; any other filter withholds the breakdown (a count of rows outside it could
    be inferred otherwise)."""
    if not access.readable:
        return None
    if access.row_filters is None:
        return dict(regions)
    if key_column is None or not shown_as_stored(access, key_column):
        return None
    allowed: set[str] = set()
    for f in access.row_filters:
        if set(f) != {key_column}:
            return None
        allowed.update(f[key_column])
    return {code: n for code, n in regions.items() if code in allowed}


COUNT_FIELDS = ("rows_added", "total_rows", "rows_checked", "rows_quarantined", "rows_unexpected")
"""Counts over every row of a batch or table, in dataset-channel payloads and listings."""


def disclose_update(
    access: Access, data: Record, key_column: str | None = None
) -> dict[str, Any] | None:
    """A ``dataset:`` channel payload (``dataset.updated``: version, counts, rows per
    region, quality summary; ``quality.failed``: the gate's counts) as this reader may
    see it; None when the dataset is not readable."""
    if access.via == "owner":
        return dict(data)
    if not access.readable:
        return None
    if counts_visible(access):
        return dict(data)
    out = {k: v for k, v in data.items() if k not in COUNT_FIELDS and k != "quality"}
    withheld = [k for k in (*COUNT_FIELDS, "quality") if k in data]
    if "regions" in data:
        regions = data["regions"]
        narrowed = (
            disclose_regions(access, regions, key_column) if isinstance(regions, Mapping) else None
        )
        if narrowed is None:
            out.pop("regions", None)
            withheld.append("regions")
        else:
            out["regions"] = narrowed
    if withheld:
        out[WITHHELD] = withheld
    return out


# -- filters a reader chooses -----------------------------------------------------------


def check_filter(access: Access, flt: FeedFilter, *, dataset: str) -> None:
    """Refuse a filter naming a column the reader cannot see (403, naming the columns).

    A filter on a masked column is allowed: :func:`filter_predicate` compares the masked
    value, the one the reader's events carry."""
    if access.via == "owner":
        return
    hidden = sorted(c for c in flt if c not in access.columns)
    if hidden:
        raise AccessDenied(
            f"filter names column(s) {hidden} of {dataset!r} that you may not see",
            dataset=dataset,
            field="filter",
            columns=hidden,
        )


def filter_matches(access: Access, flt: FeedFilter, record: Record) -> bool:
    """Whether a record passes a reader's filter, compared on what the reader sees.

    Every filter column must be visible (else no match: a filter accepted under a wider
    access matches nothing once the access narrows)."""
    owner = access.via == "owner"
    fields = _fields(record)
    for column, allowed in flt.items():
        if not owner and column not in access.columns:
            return False
        v = fields.get(column)
        if v is None:
            return False
        seen = v if owner else masked_value(access, column, v)
        if _text(seen) not in allowed:
            return False
    return True


def filter_predicate(
    access_now: Callable[[], Access], flt: FeedFilter | None
) -> Callable[[Record], bool]:
    """The per-event decision of a subscription: the reader's current access shows the
    row, and the reader's own filter (if any) matches its view of the row."""

    def keep(record: Record) -> bool:
        access = access_now()
        if not row_visible(access, record):
            return False
        return flt is None or filter_matches(access, flt, record)

    return keep


def parse_filter(raw: Any, *, channel: str) -> dict[str, frozenset[str]] | None:
    """``{"district_code": ["520102"], ...}`` → a filter (every column must match one of
    its values).  Shape only; :func:`check_filter` decides what a reader may name."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise InvalidRequest(
            'filter must be an object of column → values, e.g. {"district_code": ["520102"]}',
            channel=channel,
        )
    out: dict[str, frozenset[str]] = {}
    for column, values in raw.items():
        vals = values if isinstance(values, list) else [values]
        if not vals or not all(isinstance(v, str | int | float | bool) for v in vals):
            raise InvalidRequest(
                f"filter.{column} must be a value or a non-empty list of values",
                channel=channel,
                field=f"filter.{column}",
            )
        out[str(column)] = frozenset(_text(v) for v in vals)
    return out


# -- alerts and orders ------------------------------------------------------------------


def source_dataset(channel: str | None) -> str | None:
    """The dataset of a ``feed:<id>`` or ``dataset:<id>`` channel name (else None)."""
    if not isinstance(channel, str):
        return None
    parsed = channels.parse(channel)
    return parsed.name if parsed.kind in ("feed", "dataset") else None


def _fields_visible(access: Access, fields: Iterable[str] | None) -> bool:
    if access.via == "owner":
        return True
    if fields is None:  # not recorded: only a reader who sees the rows as stored
        return access.full
    return all(f in access.columns for f in fields)


def disclose_alert(access: Access | None, alert: Record) -> dict[str, Any]:
    """An alert as this receiver may see it.

    ``access`` is the receiver's access to the alert's source dataset (None: the source is
    no dataset, e.g. an order escalation, and nothing in the alert came from rows).  The
    alert engine stores values as :func:`catalog.access.effective.platform_view` shows them and
    records which fields its title and key were made of (``detail.fields``); here the
    event or key the alert is about must be inside the receiver's rows, its fields
    visible, its counts (window sizes, last-seen times) about rows the receiver sees.
    Otherwise those parts are withheld: the receiver still learns that rule R fired on
    channel C (an operator's duty), never a value or count it could not read.
    """
    out = dict(alert)
    if access is None or access.via == "owner":
        return out
    detail = alert.get("detail")
    detail = dict(detail) if isinstance(detail, Mapping) else {}
    event = detail.get("event")
    key = detail.get("key")
    scope = event if isinstance(event, Mapping) else key if isinstance(key, Mapping) else None
    from_rows = channels.is_feed_channel(str(alert.get("source", "")))
    if not from_rows:  # a dataset: channel's payload: versions and counts of every row
        shown = counts_visible(access)
    else:
        shown = row_visible(access, scope) if scope is not None else counts_visible(access)
    fields = detail.get("fields")
    withheld: list[str] = []
    if not shown:
        withheld = sorted(k for k in detail if k != "fields")
        detail = {"fields": fields} if fields is not None else {}
    elif from_rows:
        if isinstance(event, Mapping):
            detail["event"] = _project(access, event)
        if isinstance(key, Mapping):
            detail["key"] = _project(access, key)
    if not shown or (from_rows and not _fields_visible(access, fields)):
        out["title"] = f"{alert.get('rule_id')} on {alert.get('source')}"
        out["key"] = WITHHELD
        withheld += ["title", "key"]
    if withheld:
        detail[WITHHELD] = withheld
    out["detail"] = detail
    return out


REFERENCE_FIELDS = ("channel", "offset", "dataset", "alert")
"""Fields of an order's ``event`` that point at a message rather than carry its values."""


def order_event_source(event: Record | None) -> str | None:
    """The dataset an order's event came from: its ``channel`` (feed:/dataset:) or
    ``dataset`` reference."""
    if not isinstance(event, Mapping):
        return None
    found = source_dataset(event.get("channel"))
    if found is None and isinstance(event.get("dataset"), str):
        found = event["dataset"]
    return found


def carries_values(event: Record | None) -> bool:
    """Whether an order's event holds fields beyond a reference to a message."""
    return isinstance(event, Mapping) and any(k not in REFERENCE_FIELDS for k in event)


def disclose_order_event(access: Access | None, event: Record | None) -> dict[str, Any] | None:
    """An order's related event as a receiver may see it: the reference always, the
    values as the receiver's access to the event's source dataset shows them (None:
    the receiver may not read that dataset, or the row is outside its rows)."""
    if not isinstance(event, Mapping):
        return None
    ref = {k: event[k] for k in REFERENCE_FIELDS if k in event}
    if not carries_values(event):
        return dict(event)
    values = {k: v for k, v in event.items() if k not in REFERENCE_FIELDS}
    if access is None:
        return {**ref, WITHHELD: sorted(values)}
    shown = disclose_record(access, values)
    if shown is None:
        return {**ref, WITHHELD: sorted(values)}
    hidden = sorted(k for k in values if k not in shown)
    return {**ref, **shown, **({WITHHELD: hidden} if hidden else {})}


# -- listings: versions, runs, quality results, error texts -------------------------------

_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_LONG_CODES = re.compile(r"[0-9A-Za-z*]*[0-9][0-9A-Za-z*]{5,}")


def scrub_message(text: str | None) -> str | None:
    """An error text without the values it may quote: quoted literals and long codes
    (phone and ID numbers, credit codes, region codes) become ``…``; first line only.
    For readers outside the owning agency (a run's error can quote a source row)."""
    if text is None:
        return None
    first = text.splitlines()[0] if text else ""
    return _LONG_CODES.sub("…", _QUOTED.sub("'…'", first))


def disclose_counts(access: Access, data: Record, fields: Iterable[str]) -> dict[str, Any]:
    """``data`` with the count ``fields`` withheld unless the reader sees every row."""
    out = dict(data)
    if access.via == "owner" or counts_visible(access):
        return out
    withheld = [f for f in fields if f in out]
    for f in withheld:
        out[f] = None
    if withheld:
        out[WITHHELD] = withheld
    return out


VERSION_COUNTS = ("rows_added", "total_rows")
RUN_COUNTS = ("rows_read", "rows_written", "bytes_written")


def disclose_version(access: Access, version: Record) -> dict[str, Any]:
    """A published version's entry (its counts are of every row)."""
    return disclose_counts(access, version, VERSION_COUNTS)


def disclose_run(access: Access, run: Record) -> dict[str, Any]:
    """An ingest run's entry: counts as for versions; the error text scrubbed of values
    and the details (counts per column of unresolved addresses) kept for the owner."""
    out = disclose_counts(access, run, RUN_COUNTS)
    if access.via == "owner":
        return out
    out["error"] = scrub_message(out.get("error"))
    if out.get("details"):
        out["details"] = {}
        out[WITHHELD] = [*out.get(WITHHELD, []), "details"]
    return out


def quality_visible(access: Access) -> bool:
    """Quality results count and sample rows of whole batches: for readers of every row."""
    return access.via == "owner" or counts_visible(access)


def disclose_quality_results(
    access: Access, results: Iterable[Record], primary_key: Iterable[str]
) -> list[dict[str, Any]]:
    """Validation results (GX shape) as this reader may see them: the sample values of a
    column it cannot see dropped, of a masked column masked; the sample rows' keys kept
    only when every key column is visible unmasked.  The caller has checked
    :func:`quality_visible` (counts of every row)."""
    if access.via == "owner":
        return [dict(r) for r in results]
    pk = list(primary_key)
    keys_ok = bool(pk) and all(shown_as_stored(access, c) for c in pk)
    out = []
    for r in results:
        r2 = dict(r)
        config = r2.get("expectation_config")
        kwargs = config.get("kwargs", {}) if isinstance(config, Mapping) else {}
        column = kwargs.get("column") if isinstance(kwargs, Mapping) else None
        res = r2.get("result")
        if isinstance(res, Mapping):
            res2 = dict(res)
            sample = res2.get("partial_unexpected_list")
            if sample is not None:
                if column is None or column not in access.columns:
                    res2["partial_unexpected_list"] = []
                else:
                    res2["partial_unexpected_list"] = [
                        masked_value(access, column, v) for v in sample
                    ]
            if not keys_ok and "partial_unexpected_index_list" in res2:
                res2["partial_unexpected_index_list"] = []
            r2["result"] = res2
        out.append(r2)
    return out
