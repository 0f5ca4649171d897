"""Dataset manifests: the YAML a steward writes to describe and source a dataset.

A manifest is parsed into :class:`Manifest`; every problem is reported with the
file, the dotted field path and what is allowed (:class:`ManifestError`).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from catalog.datasets.types import parse_type
from catalog.errors import ManifestError
from catalog.vocabulary import (
    BlockKind,
    Classification,
    GatePolicy,
    PersonalKind,
    SchemaPolicy,
    SharingType,
    SyncMode,
)

CLASSIFICATION_RANK: dict[str, int] = {"general": 0, "important": 1, "core": 2}

_ID = re.compile(r"^[a-z][a-z0-9_]{1,62}$")

Identifier = Annotated[str, Field(pattern=_ID.pattern, description="lower-case a-z, 0-9, _")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Steward(_Model):
    name: str
    email: str | None = None
    phone: str | None = None


class Sharing(_Model):
    type: SharingType
    legal_basis: str | None = Field(
        default=None,
        description="required when type is 'none': the law or rule that forbids sharing",
    )
    conditions: str | None = Field(default=None, description="what an applicant must state")

    @model_validator(mode="after")
    def _none_needs_basis(self) -> Sharing:
        if self.type == "none" and not (self.legal_basis or "").strip():
            raise ValueError("sharing type 'none' must cite its legal_basis")
        return self


class Column(_Model):
    name: Identifier
    type: str
    description: str = ""
    pii: PersonalKind | None = Field(
        default=None, description="personal-data kind, masked for consumers"
    )
    classification: Classification | None = None
    nullable: bool = True
    source_name: str | None = Field(
        default=None, description="the source's own name for it, e.g. a Chinese header 工单编号"
    )

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        parse_type(v)
        return v.strip().lower()

    @property
    def arrow_type(self) -> pa.DataType:
        return parse_type(self.type)


ADDRESS_CODE_SUFFIX = "_region_code"


class BlockKey(_Model):
    column: Identifier
    kind: BlockKind = "region"

    @property
    def key_column(self) -> str:
        """The lake column that carries the block key: an ``address`` key is resolved at
        ingest into the derived column ``<column>_region_code``; others are the column."""
        return self.column + ADDRESS_CODE_SUFFIX if self.kind == "address" else self.column

    @property
    def region_like(self) -> bool:
        """True when the key column holds GB/T 2260 region codes (region or address keys)."""
        return self.kind in ("region", "address")


class BlockFigure(_Model):
    """A key figure a dataset contributes to a block answer, computed by the exchange.

    ``aggregate`` is one SQL aggregate expression over the dataset's columns (e.g.
    ``count(*) FILTER (WHERE status <> '已办结')`` or ``arg_max(aqi, measured_at)``);
    with ``by`` it is computed per value of that column (e.g. per category).
    """

    name: Identifier
    title: str = ""
    aggregate: str = Field(min_length=1, max_length=2000)
    by: Identifier | None = None


class Quality(_Model):
    """What the quality gate does when a batch breaks its suite (docs/quality.md)."""

    policy: GatePolicy = Field(
        default="block",
        description="block: quarantine the whole batch; drop-rows: quarantine failing rows, "
        "publish the rest; warn: publish all and flag",
    )


_FREQUENCY = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_frequency(text: str) -> timedelta:
    """``30m``, ``1h``, ``1d``, ``2w`` → a timedelta; ValueError names what is allowed."""
    m = _FREQUENCY.match(text)
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"{text!r} is not a frequency; write a number and s, m, h, d or w (1h)")
    return timedelta(seconds=int(m.group(1)) * _UNIT_SECONDS[m.group(2)])


class Source(_Model):
    connector: str = Field(description="registered connector name, e.g. postgres, csv, parquet")
    root: Identifier | None = Field(
        default=None,
        description="file sources: one of the agency's file roots (an admin configures them); "
        "options.path is relative to it",
    )
    profile: Identifier | None = Field(
        default=None,
        description="databases, HTTP APIs, MQTT brokers: one of the agency's connection "
        "profiles, which holds the server and the secrets",
    )
    options: dict[str, Any] = Field(default_factory=dict)
    cursor: Identifier | None = Field(
        default=None, description="column whose max value is the watermark"
    )
    mode: SyncMode = "append"
    schema_policy: SchemaPolicy = "evolve"
    retries: int = Field(
        default=0, ge=0, le=10, description="more attempts when the source cannot be read"
    )
    backoff_s: float = Field(
        default=2.0, ge=0, le=600, description="wait before the first retry; doubles each time"
    )


class Manifest(_Model):
    id: Identifier
    title: str
    description: str = ""
    agency: Identifier
    steward: Steward
    sharing: Sharing
    classification: Classification
    tags: list[str] = Field(default_factory=list)
    columns: list[Column] = Field(min_length=1)
    primary_key: list[Identifier] = Field(default_factory=list)
    block_keys: list[BlockKey] = Field(default_factory=list)
    block_time: Identifier | None = Field(
        default=None, description="column whose max is the latest record time in block answers"
    )
    block_figures: list[BlockFigure] = Field(default_factory=list)
    source: Source
    schedule: str | None = Field(default=None, description="cron expression or @hourly/@daily")
    update_frequency: str | None = Field(default=None, description="e.g. 1h, 1d: older means stale")
    expectations: str | None = Field(
        default=None, description="expectation suite name in expectations/"
    )
    quality: Quality = Field(default_factory=Quality, description="quality gate policy")

    @field_validator("update_frequency")
    @classmethod
    def _frequency(cls, v: str | None) -> str | None:
        if v is not None:
            parse_frequency(v)
        return v

    @property
    def freshness_window(self) -> timedelta | None:
        return parse_frequency(self.update_frequency) if self.update_frequency else None

    @model_validator(mode="after")
    def _columns_consistent(self) -> Manifest:
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate column names: {', '.join(dupes)}")
        known = set(names)
        for label, refs in (
            ("primary_key", self.primary_key),
            ("block_keys", [b.column for b in self.block_keys]),
            ("source.cursor", [self.source.cursor] if self.source.cursor else []),
            ("block_time", [self.block_time] if self.block_time else []),
            ("block_figures.by", [f.by for f in self.block_figures if f.by]),
        ):
            missing = [r for r in refs if r not in known]
            if missing:
                raise ValueError(f"{label} names unknown column(s) {missing}; columns are {names}")
        derived = [b.key_column for b in self.block_keys if b.kind == "address"]
        clash = [d for d in derived if d in known]
        if clash:
            raise ValueError(
                f"block_keys: address keys derive column(s) {clash}, which are declared columns"
            )
        figure_names = [f.name for f in self.block_figures]
        if len(set(figure_names)) != len(figure_names):
            raise ValueError("block_figures: names must be unique")
        if self.source.mode == "merge" and not self.primary_key:
            raise ValueError("source.mode 'merge' needs a primary_key")
        return self

    @property
    def arrow_schema(self) -> pa.Schema:
        pk = set(self.primary_key)
        return pa.schema(
            [
                pa.field(c.name, c.arrow_type, nullable=c.nullable and c.name not in pk)
                for c in self.columns
            ]
        )

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def personal_columns(self) -> dict[str, str]:
        return {c.name: c.pii for c in self.columns if c.pii}

    @property
    def derived_columns(self) -> dict[str, str]:
        """Lake columns the hub derives at ingest, each with the declared column it comes
        from: ``<column>_region_code`` of an address block key (pipelines.blockkeys)."""
        return {b.key_column: b.column for b in self.block_keys if b.kind == "address"}


def _field_path(loc: tuple[int | str, ...], data: Any) -> str:
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node):
                node = node[item]
                if isinstance(node, dict) and "name" in node:
                    label = f"[{item}:{node['name']}]"
            parts.append(label)
        else:
            if item.startswith("function-after") or item in {"literal_error"}:
                continue
            parts.append(("." if parts else "") + item)
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(manifest)"


def _problem(err: Any, data: Any) -> dict[str, Any]:
    loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and "[" in x and "]" in x))
    msg: str = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "string_pattern_mismatch":
        msg = "must start with a-z and hold only a-z, 0-9 and _ (2 to 63 characters)"
    elif err["type"] == "missing":
        msg = "required field is missing"
    problem: dict[str, Any] = {"field": _field_path(loc, data), "message": msg}
    expected = (err.get("ctx") or {}).get("expected")
    if expected:
        problem["allowed"] = expected
    return problem


def parse_manifest(data: Any, *, file: str = "<manifest>") -> Manifest:
    """Validate manifest data (already parsed from YAML)."""
    if not isinstance(data, dict):
        raise ManifestError(file, [{"field": "(manifest)", "message": "must be a YAML mapping"}])
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        raise ManifestError(file, [_problem(err, data) for err in e.errors()]) from None


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate one manifest file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ManifestError(
            str(p), [{"field": "(file)", "message": e.strerror or str(e)}]
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ManifestError(str(p), [{"field": where, "message": f"not valid YAML: {e}"}]) from None
    return parse_manifest(data, file=str(p))


def load_manifests(folder: str | os.PathLike[str]) -> list[Manifest]:
    """Every ``*.yaml``/``*.yml`` manifest in a folder, sorted by file name."""
    root = Path(folder)
    files = sorted([*root.glob("*.yaml"), *root.glob("*.yml")])
    return [load_manifest(f) for f in files]
