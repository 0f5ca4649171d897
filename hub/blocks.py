"""Block answers (塊數據): what every agency's datasets say about one region or enterprise.

A dataset joins a block through its ``block_keys`` (catalog/manifest.py): a region-code
column, a resolved address (``<column>_region_code``) or a credit code.  A block answer
runs **one SQL aggregate per dataset through** :meth:`hub.exchange.Exchange.query`, so the
caller's read rights, grants, masking and row filters apply exactly as for any query, the
answer is audited like one, and it names the versions it read.  Datasets the caller may not
read are never queried and never mentioned, not even by count.

Region blocks use the structure of GB/T 2260 codes: everything under a region shares a code
prefix (province 2 digits, city 4, county 6, township 9 of the 12), so "the block and its
children" is ``starts_with(code, prefix)`` and a drill-down is a ``GROUP BY`` on a longer
prefix — one scan per dataset, whatever the level.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import orjson

from catalog.errors import AccessDenied, HubError, InvalidRequest, NotFound
from catalog.eventlog import Message
from catalog.identifiers import is_valid_uscc
from catalog.manifest import BlockKey, Manifest
from catalog.regions import Region, children, get_region, normalize_code
from catalog.regions import full_name as region_full_name
from catalog.store import DatasetRecord, Principal
from hub.exchange import Exchange

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


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _time_column(manifest: Manifest) -> str | None:
    return manifest.block_time or manifest.source.cursor


def block_sql(
    record: DatasetRecord, key: BlockKey, where: str, child_digits: int | None = None
) -> str:
    """One query for one dataset's part of a block answer.

    Every part comes back as rows of ``(part, key, n, latest, value)``: ``rows`` (the block
    total), ``child`` (per child-region prefix), ``figure:<name>`` (a declared figure, its
    value as JSON text so that any type survives the UNION).
    """
    m = record.manifest
    col = _ident(key.key_column)
    time_col = _time_column(m)
    # VARCHAR so that every dataset's part has the same columns (a timestamp here, a date
    # there) and one query can carry the whole block.
    latest = f"CAST(max({_ident(time_col)}) AS VARCHAR)" if time_col else "NULL"
    parts = [f"SELECT 'rows' AS part, NULL AS key, count(*) AS n, {latest} AS latest, "
             "NULL AS value FROM b"]  # fmt: skip
    if child_digits:
        parts.append(
            f"SELECT 'child', substr(CAST({col} AS VARCHAR), 1, {child_digits}), count(*), "
            f"{latest}, NULL FROM b GROUP BY 2"
        )
    for fig in m.block_figures:
        value = f"CAST(to_json({fig.aggregate}) AS VARCHAR)"
        if fig.by:
            parts.append(
                f"SELECT {_literal('figure:' + fig.name)}, CAST({_ident(fig.by)} AS VARCHAR), "
                f"NULL, NULL, {value} FROM b GROUP BY 2"
            )
        else:
            label = _literal("figure:" + fig.name)
            parts.append(f"SELECT {label}, NULL, NULL, NULL, {value} FROM b")
    body = "\nUNION ALL ".join(parts)
    return f"WITH b AS (SELECT * FROM {_ident(record.id)} WHERE {where})\n{body}"


def region_where(manifest: Manifest, key: BlockKey, prefix: str) -> str:
    """Rows whose code starts with ``prefix``, written as a range (``>= '520102' AND <
    '520103'``): DuckDB pushes a range into the Parquet scan, a ``starts_with`` it does not."""
    col = _ident(key.key_column)
    if key.kind == "region" and manifest.column(key.column).type != "string":
        col = f"CAST({col} AS VARCHAR)"
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return f"{col} >= {_literal(prefix)} AND {col} < {_literal(upper)}"


def enterprise_where(key: BlockKey, code: str) -> str:
    return f"{_ident(key.key_column)} = {_literal(code)}"


@dataclass
class _Part:
    record: DatasetRecord
    key: BlockKey
    sql: str
    rows_params: dict[str, str]


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
            f"SELECT {_literal(p.record.id)} AS dataset, * FROM ({p.sql}) AS {_ident(f'_p{i}')}"
            for i, p in enumerate(parts)
        )
        try:
            result = exchange.query(union, principal, max_rows=MAX_ANSWER_ROWS, timeout_s=timeout_s)
            rows = result.to_table().to_pylist()
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
    if len(text) > 10 and text[10] == " ":
        text = text[:10] + "T" + text[11:]
    if len(text) > 3 and text[-3] in "+-" and text[-2:].isdigit():
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
    rows = outcome.rows
    entry["version"] = outcome.version
    titles = {f.name: f for f in m.block_figures}
    figures: dict[str, dict[str, Any]] = {
        f.name: {"name": f.name, "title": f.title or f.name, "by": f.by} for f in m.block_figures
    }
    children: dict[str, dict[str, Any]] = {}
    for row in rows:
        part_name = row["part"]
        if part_name == "rows":
            entry["rows"] = int(row["n"] or 0)
            entry["latest"] = _iso(row["latest"])
        elif part_name == "child":
            children[row["key"]] = {"rows": int(row["n"] or 0), "latest": _iso(row["latest"])}
        elif part_name.startswith("figure:"):
            name = part_name[len("figure:") :]
            value = orjson.loads(row["value"]) if row["value"] is not None else None
            if titles[name].by:
                figures[name].setdefault("values", []).append({"key": row["key"], "value": value})
            else:
                figures[name]["value"] = value
    for fig in figures.values():
        if fig["by"]:
            fig["values"] = sorted(
                fig.get("values", []), key=lambda v: (v["value"] is None, str(v["key"]))
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
        sql_for: Callable[[DatasetRecord, BlockKey], str],
        params: Callable[[BlockKey], dict[str, str]],
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

        def sql_for(record: DatasetRecord, key: BlockKey) -> str:
            return block_sql(record, key, region_where(record.manifest, key, prefix), child_digits)

        def params(key: BlockKey) -> dict[str, str]:
            return {f"{key.key_column}__prefix": prefix}

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

        def sql_for(record: DatasetRecord, key: BlockKey) -> str:
            return block_sql(record, key, enterprise_where(key, code))

        def params(key: BlockKey) -> dict[str, str]:
            return {key.key_column: code}

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
    return f"block:{region.code}", region


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
    if manifest is None or not msg.channel.startswith("feed:"):
        return {}
    data = msg.data.get("row", msg.data) if isinstance(msg.data.get("row"), dict) else msg.data
    for key in manifest.block_keys:
        value = data.get(key.key_column) or data.get(key.column)
        if not isinstance(value, str) or not key.region_like:
            continue
        code = normalize_code(value)
        if code is None and key.kind == "address":
            from catalog.addresses import resolve_address

            code = resolve_address(value)
        if code is not None:
            return {code: 1}
    return {}


def rows_in_block(regions: Mapping[str, int], prefix: str) -> int:
    """How many of the message's rows fall in the block with this code prefix."""
    return sum(n for code, n in regions.items() if code.startswith(prefix))
