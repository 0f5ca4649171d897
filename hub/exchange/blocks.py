"""Block answers (塊數據): what every agency's datasets say about one region or enterprise.

A dataset joins a block through its ``block_keys`` (catalog/datasets/manifest.py): a region-code
column, a resolved address (``<column>_region_code``) or a credit code.  A block answer is
**SQL run by** :meth:`hub.exchange.engine.Exchange.query` as the caller — one aggregate pass per
dataset, all datasets in one query — so the caller's read rights, grants, masking and row
filters apply exactly as for any query, the answer is audited like one, and it names the
versions it read.  Datasets the caller may not read are never queried and never mentioned,
not even by count.

Region blocks use the structure of GB/T 2260 codes: everything under a region shares a code
prefix (province 2 digits, city 4, county 6, township 9 of the 12), so "the block and its
children" is one range filter on the key column and a drill-down is a grouping on a longer
prefix, whatever the level.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import orjson

from catalog.datasets.manifest import BlockKey, Manifest
from catalog.datasets.store import DatasetRecord
from catalog.domain import channels
from catalog.domain.identifiers import is_valid_uscc
from catalog.domain.regions import Region, children, get_region, normalize_code
from catalog.domain.regions import full_name as region_full_name
from catalog.errors import AccessDenied, HubError, InvalidRequest, NotFound, QueryTimeout
from catalog.identity.store import Principal
from catalog.sqltext import quote_ident, quote_literal
from eventlog.message import Message
from hub.exchange.engine import Exchange

BlockKind = Literal["region", "enterprise"]

PREFIX_DIGITS: dict[str, int] = {"province": 2, "city": 4, "county": 6, "township": 9}
"""How many leading digits every code inside a region shares with it."""

MAX_ANSWER_ROWS = 20_000


def region_prefix(region: Region) -> str:
    return region.code[: PREFIX_DIGITS[region.level]]


def find_region(code: str) -> Region:
    """The region of a 6- or 12-digit code; InvalidRequest / NotFound name what is wrong."""
    if normalize_code(code) is None:
        raise InvalidRequest(f"region code {code!r} must be 6 or 12 digits (GB/T 2260)", code=code)
    region = get_region(code)
    if region is None:
        raise NotFound(f"no region {code!r} in GB/T 2260", code=code)
    return region


def check_credit_code(code: str) -> str:
    code = code.strip().upper()
    if not is_valid_uscc(code):
        raise InvalidRequest(
            f"{code!r} is not a unified social credit code (18 characters, GB 32100 check)",
            code=code,
        )
    return code


def block_key(manifest: Manifest, kind: BlockKind) -> BlockKey | None:
    """The dataset's first key of that kind of block (region and address keys are regions)."""
    for key in manifest.block_keys:
        if (kind == "region" and key.region_like) or key.kind == kind:
            return key
    return None


def _time_column(manifest: Manifest) -> str | None:
    return manifest.block_time or manifest.source.cursor


@dataclass(frozen=True)
class BlockQuery:
    """One dataset's SQL for a block answer and how to read its rows back."""

    sql: str
    keys: int  # grouping keys: the child-region prefix first (if any), then ``by`` columns
    child: bool
    by_index: dict[str, int]

    def grouping_id(self, key: int | None) -> int:
        """``GROUPING(...)`` of the set grouped by key ``key`` (None: the whole block)."""
        full = (1 << self.keys) - 1
        return full if key is None else full & ~(1 << (self.keys - 1 - key))


def block_query(
    record: DatasetRecord, key: BlockKey, where: str, child_digits: int | None = None
) -> BlockQuery:
    """One query for one dataset's part of a block answer, one pass over its rows.

    ``b`` holds the dataset's rows in the block (a figure may refer to it, e.g.
    ``sum(population) FILTER (WHERE year = (SELECT max(year) FROM b))``); the rows are
    aggregated once with ``GROUPING SETS``: the block, each child-region prefix, each ``by``
    column of a figure.  Each result row is ``(g, keys, n, latest, figures)`` — the grouping
    id, the key values, the row count, the latest record time and every figure as JSON
    text — typed alike for every dataset, so that several datasets stack in one UNION.
    """
    m = record.manifest
    keys: list[str] = []
    if child_digits:
        keys.append(f"substr(CAST({quote_ident(key.key_column)} AS VARCHAR), 1, {child_digits})")
    by_index: dict[str, int] = {}
    for fig in m.block_figures:
        if fig.by and fig.by not in by_index:
            by_index[fig.by] = len(keys)
            keys.append(quote_ident(fig.by))
    time_col = _time_column(m)
    # VARCHAR: a timestamp in one dataset, a date in another, one column in the UNION.
    latest = f"CAST(max({quote_ident(time_col)}) AS VARCHAR)" if time_col else "NULL::VARCHAR"
    key_list = ", ".join(f"CAST({k} AS VARCHAR)" for k in keys)
    figures = ", ".join(f"CAST(to_json({f.aggregate}) AS VARCHAR)" for f in m.block_figures)
    grouping = f"GROUPING({', '.join(keys)})" if keys else "0"
    sets = ", ".join(["()", *(f"({k})" for k in keys)])
    sql = (
        f"WITH b AS (SELECT * FROM {quote_ident(record.id)} WHERE {where})\n"
        f"SELECT {grouping} AS g, [{key_list}]::VARCHAR[] AS keys, count(*) AS n, "
        f"{latest} AS latest, [{figures}]::VARCHAR[] AS figures FROM b"
        + (f" GROUP BY GROUPING SETS ({sets})" if keys else "")
    )
    return BlockQuery(sql, len(keys), bool(child_digits), by_index)


def block_sql(
    record: DatasetRecord, key: BlockKey, where: str, child_digits: int | None = None
) -> str:
    """The SQL text of :func:`block_query` (e.g. to run it elsewhere, as the benchmark does)."""
    return block_query(record, key, where, child_digits).sql


def region_where(manifest: Manifest, key: BlockKey, prefix: str) -> str:
    """Rows whose code starts with ``prefix``, written as a range (``>= '520102' AND <
    '520103'``): DuckDB pushes a range into the Parquet scan, a ``starts_with`` it does not."""
    col = quote_ident(key.key_column)
    if key.kind == "region" and manifest.column(key.column).type != "string":
        col = f"CAST({col} AS VARCHAR)"
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return f"{col} >= {quote_literal(prefix)} AND {col} < {quote_literal(upper)}"


def enterprise_where(key: BlockKey, code: str) -> str:
    return f"{quote_ident(key.key_column)} = {quote_literal(code)}"


@dataclass
class _Part:
    record: DatasetRecord
    key: BlockKey
    query: BlockQuery
    rows_params: list[tuple[str, str]]

    @property
    def sql(self) -> str:
        return self.query.sql


@dataclass
class _Outcome:
    version: int | None
    rows: list[dict[str, Any]]
    query_ms: float
    truncated: bool


def _run(
    exchange: Exchange, principal: Principal, parts: list[_Part], timeout_s: float
) -> list[_Outcome | HubError | None]:
    """Run the parts as one exchange query (one check, one audit record, one DuckDB plan);
    if that fails, run them one by one so that only the failing dataset reports an error
    and a dataset the exchange refuses (``None``) drops out silently."""
    if len(parts) > 1:
        union = "\nUNION ALL\n".join(
            f"SELECT {quote_literal(p.record.id)} AS dataset, * "
            f"FROM ({p.sql}) AS {quote_ident(f'_p{i}')}"
            for i, p in enumerate(parts)
        )
        try:
            result = exchange.query(union, principal, max_rows=MAX_ANSWER_ROWS, timeout_s=timeout_s)
            rows = result.to_table().to_pylist()
        except QueryTimeout as e:  # one by one would only take longer
            return [e for _ in parts]
        except HubError:
            return [_run(exchange, principal, [p], timeout_s)[0] for p in parts]
        by_dataset: dict[str, list[dict[str, Any]]] = {p.record.id: [] for p in parts}
        for row in rows:
            by_dataset[row["dataset"]].append(row)
        return [
            _Outcome(
                result.versions.get(p.record.id),
                by_dataset[p.record.id],
                result.query_ms,
                result.truncated,
            )
            for p in parts
        ]
    part = parts[0]
    try:
        result = exchange.query(part.sql, principal, max_rows=MAX_ANSWER_ROWS, timeout_s=timeout_s)
        rows = result.to_table().to_pylist()
    except AccessDenied:
        return [None]
    except HubError as e:
        return [e]
    return [_Outcome(result.versions.get(part.record.id), rows, result.query_ms, result.truncated)]


def _iso(text: str | None) -> str | None:
    """DuckDB's text of a timestamp (``2024-05-04 23:59:11+00``) as ISO 8601."""
    if text is None:
        return None
    if len(text) <= 10:  # a date
        return text
    if text[10] == " ":
        text = text[:10] + "T" + text[11:]
    if text[-3] in "+-" and text[-2:].isdigit():  # "+08" → "+08:00"
        text += ":00"
    return text


def _dataset_entry(part: _Part, outcome: _Outcome | HubError | None) -> dict[str, Any] | None:
    record, m = part.record, part.record.manifest
    entry: dict[str, Any] = {
        "dataset": record.id,
        "title": record.title,
        "agency": record.agency_id,
        "sharing": record.sharing,
        "classification": record.classification,
        "key": {"column": part.key.key_column, "kind": part.key.kind},
    }
    if outcome is None:
        return None
    if isinstance(outcome, HubError):
        return {**entry, "error": outcome.to_dict()}
    entry["version"] = outcome.version
    q = part.query
    figures: dict[str, dict[str, Any]] = {
        f.name: {"name": f.name, "title": f.title or f.name, "by": f.by} for f in m.block_figures
    }
    whole = q.grouping_id(None)
    by_set = {q.grouping_id(i): col for col, i in q.by_index.items()}
    child_set = q.grouping_id(0) if q.child else None
    children: dict[str, dict[str, Any]] = {}
    for row in outcome.rows:
        g, keys, values = row["g"], row["keys"], row["figures"]
        if g == whole:
            entry["rows"] = int(row["n"] or 0)
            entry["latest"] = _iso(row["latest"])
        if g == child_set:
            children[keys[0]] = {"rows": int(row["n"] or 0), "latest": _iso(row["latest"])}
        for declared, text in zip(m.block_figures, values, strict=True):
            value = orjson.loads(text) if text is not None else None
            out = figures[declared.name]
            if declared.by is None and g == whole:
                out["value"] = value
            elif declared.by is not None and by_set.get(g) == declared.by:
                key = keys[q.by_index[declared.by]]
                out.setdefault("values", []).append({"key": key, "value": value})
    for out in figures.values():
        if out["by"]:
            out["values"] = sorted(
                out.get("values", []), key=lambda v: (v["value"] is None, str(v["key"]))
            )
    entry["figures"] = list(figures.values())
    entry["rows_href"] = f"/v1/datasets/{record.id}/rows?{urlencode(part.rows_params)}"
    entry["query_ms"] = outcome.query_ms
    entry["truncated"] = outcome.truncated
    if children:
        entry["_children"] = children
    return entry


class Blocks:
    """Block answers over an exchange (one per hub; stateless apart from the exchange)."""

    def __init__(self, exchange: Exchange, *, timeout_s: float = 30.0) -> None:
        self.exchange = exchange
        self.timeout_s = timeout_s

    def _parts(
        self,
        principal: Principal,
        kind: BlockKind,
        sql_for: Callable[[DatasetRecord, BlockKey], BlockQuery],
        params: Callable[[BlockKey], list[tuple[str, str]]],
    ) -> list[_Part]:
        published = self.exchange.store.latest_versions()
        parts = []
        for record in self.exchange.readable(principal).values():
            key = block_key(record.manifest, kind)
            if key is None or record.id not in published:
                continue
            parts.append(_Part(record, key, sql_for(record, key), params(key)))
        return parts

    def _answer(self, principal: Principal, parts: list[_Part]) -> list[dict[str, Any]]:
        if not parts:
            return []
        outcomes = _run(self.exchange, principal, parts, self.timeout_s)
        entries = [_dataset_entry(p, o) for p, o in zip(parts, outcomes, strict=True)]
        return [e for e in entries if e is not None]

    def region(
        self, code: str, principal: Principal, *, with_children: bool = False
    ) -> dict[str, Any]:
        """The summary of a region block for ``principal`` (see docs/blocks.md)."""
        started = time.perf_counter()
        region = find_region(code)
        prefix = region_prefix(region)
        kids = children(region.code) if with_children else []
        child_digits = max((PREFIX_DIGITS[k.level] for k in kids), default=0) or None

        def sql_for(record: DatasetRecord, key: BlockKey) -> BlockQuery:
            where = region_where(record.manifest, key, prefix)
            return block_query(record, key, where, child_digits)

        def params(key: BlockKey) -> list[tuple[str, str]]:
            # The rows endpoint's filters, as the same range the summary used.
            upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            return [
                ("filter", f"{key.key_column}:gte:{prefix}"),
                ("filter", f"{key.key_column}:lt:{upper}"),
            ]

        entries = self._answer(principal, self._parts(principal, "region", sql_for, params))
        answer: dict[str, Any] = {
            "block": _region_out(region),
            "datasets": [],
            "versions": {},
        }
        by_prefix = {region_prefix(k): k for k in kids}
        totals: dict[str, int] = {k.code: 0 for k in kids}
        for entry in entries:
            raw = entry.pop("_children", {})
            if with_children and "error" not in entry:
                per_child = []
                for kid in kids:
                    kp = region_prefix(kid)
                    hits = [v for g, v in raw.items() if g and g.startswith(kp)]
                    n = sum(v["rows"] for v in hits)
                    if n:
                        latest = max((v["latest"] for v in hits if v["latest"]), default=None)
                        per_child.append({"code": kid.code, "rows": n, "latest": latest})
                        totals[kid.code] += n
                entry["children"] = per_child
            answer["datasets"].append(entry)
            if "version" in entry:
                answer["versions"][entry["dataset"]] = entry["version"]
        if with_children:
            answer["children"] = [
                {**_region_out(k, brief=True), "rows": totals[k.code]} for k in by_prefix.values()
            ]
        answer["query_ms"] = round((time.perf_counter() - started) * 1000, 2)
        return answer

    def enterprise(self, credit_code: str, principal: Principal) -> dict[str, Any]:
        """The summary of an enterprise block (by unified social credit code)."""
        started = time.perf_counter()
        code = check_credit_code(credit_code)

        def sql_for(record: DatasetRecord, key: BlockKey) -> BlockQuery:
            return block_query(record, key, enterprise_where(key, code))

        def params(key: BlockKey) -> list[tuple[str, str]]:
            return [("filter", f"{key.key_column}:eq:{code}")]

        entries = self._answer(principal, self._parts(principal, "enterprise", sql_for, params))
        # Characters 3–8 of a credit code are the registering authority's region code.
        region = get_region(code[2:8])
        block: dict[str, Any] = {"kind": "enterprise", "code": code}
        if region is not None:
            block["registered_in"] = _region_out(region, brief=True)
        return {
            "block": block,
            "datasets": entries,
            "versions": {e["dataset"]: e["version"] for e in entries if "version" in e},
            "query_ms": round((time.perf_counter() - started) * 1000, 2),
        }


def _region_out(region: Region, *, brief: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": "region",
        "code": region.code,
        "name": region.name,
        "level": region.level,
        "href": f"/v1/blocks/region/{region.code}",
    }
    if not brief:
        out["full_name"] = region_full_name(region.code)
        out["prefix"] = region_prefix(region)
        parent = get_region(region.parent) if region.parent else None
        out["parent"] = _region_out(parent, brief=True) if parent else None
    return out


# -- block channels ----------------------------------------------------------------------


def block_channel(code: str) -> tuple[str, Region]:
    """The canonical channel name of a region block (``block:<stored code>``)."""
    region = find_region(code)
    return channels.block_channel(region.code), region


def message_regions(msg: Message, manifest: Manifest | None) -> dict[str, int]:
    """Rows per region code that a published message is about.

    - ``dataset.updated``: the increment's rows per region (``data.regions``, written by the
      ingest flow from the committed batches);
    - a feed event (``feed:<id>``): the region of the event's block-key field, a region code
      or (for an address key) an address resolved the same way as at ingest.
    """
    if msg.type == "dataset.updated":
        regions = msg.data.get("regions")
        return dict(regions) if isinstance(regions, Mapping) else {}
    if manifest is None or not channels.is_feed_channel(msg.channel):
        return {}
    data = msg.data.get("row", msg.data) if isinstance(msg.data.get("row"), dict) else msg.data
    for key in manifest.block_keys:
        value = data.get(key.key_column) or data.get(key.column)
        if not isinstance(value, str) or not key.region_like:
            continue
        code = normalize_code(value)
        if code is None and key.kind == "address":
            from catalog.domain.addresses import resolve_address

            code = resolve_address(value)
        if code is not None:
            return {code: 1}
    return {}


def rows_in_block(regions: Mapping[str, int], prefix: str) -> int:
    """How many of the message's rows fall in the block with this code prefix."""
    return sum(n for code, n in regions.items() if code.startswith(prefix))
