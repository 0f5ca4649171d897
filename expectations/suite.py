"""Expectation suites: GX 1.x suite JSON files, one per dataset, in ``expectations/suites``.

The file is the source of truth and stays in GX's own format, so a steward can edit it
with GX tooling and GX can run it.  Loading goes through GX (``ExpectationSuite``), which
checks every expectation type and its arguments (our domain expectations are registered
by importing :mod:`expectations.custom`); the normalised configurations are then compiled
to DuckDB SQL (:mod:`expectations.sql`) for the gate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from catalog.errors import SuiteInvalid
from expectations.sql import Check, compile_checks

SUITES_DIR = Path(__file__).parent / "suites"
"""Where the suites shipped with blockhub live (the default suites folder)."""

GX_VERSION = "1.24.1"
"""The Great Expectations release whose semantics the SQL compiler follows (tested)."""


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    checks: list[Check]
    document: dict[str, Any]

    @property
    def row_checks(self) -> list[Check]:
        return [c for c in self.checks if c.kind == "row"]


def suite_path(name: str, folder: Path | None = None) -> Path:
    """The file of a suite named in a manifest: ``hotline_tickets`` → ``hotline_tickets.json``."""
    root = folder or SUITES_DIR
    candidate = Path(name)
    if candidate.suffix == ".json" and candidate.is_absolute():
        return candidate
    return root / (name if name.endswith(".json") else f"{name}.json")


def _gx_normalise(data: dict[str, Any], file: str) -> dict[str, Any]:
    """Let GX build every expectation (type known, arguments valid) and normalise the file.

    ``ExpectationSuite(...)`` alone only *logs* an invalid expectation and drops it, so
    each one is built on its own first: a typo must stop the gate, not weaken it.
    """
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    import expectations.custom  # noqa: F401  # registers the domain expectations with GX

    def invalid(where: str, e: Exception) -> SuiteInvalid:
        errors = getattr(e, "errors", None)
        if callable(errors):  # pydantic (v1 inside GX): name each bad argument once
            fields: dict[str, str] = {}
            for err in errors():
                fields.setdefault(".".join(map(str, err["loc"])), err["msg"])
            text = "; ".join(f"{k}: {v}" for k, v in fields.items())
        else:
            text = getattr(e, "message", None) or str(e) or type(e).__name__
            text = text.splitlines()[0]
        return SuiteInvalid(f"{file}: {where}: {text}", file=file)

    for i, exp in enumerate(data["expectations"]):
        if not isinstance(exp, dict) or not isinstance(exp.get("type"), str):
            raise SuiteInvalid(f"{file}: expectations[{i}] needs a 'type'", file=file)
        try:
            ExpectationConfiguration(
                type=exp["type"], kwargs=exp.get("kwargs") or {}, meta=exp.get("meta")
            ).to_domain_obj()
        except Exception as e:  # GX raises several types for a bad expectation
            raise invalid(f"expectations[{i}] {exp['type']}", e) from None
    try:
        suite = gx.ExpectationSuite(**{"name": data.get("name") or Path(file).stem, **data})
    except Exception as e:
        raise invalid("not a valid GX suite", e) from None
    doc: dict[str, Any] = suite.to_json_dict()
    if len(doc["expectations"]) != len(data["expectations"]):  # never run a weakened suite
        raise SuiteInvalid(f"{file}: GX dropped some expectations of the suite", file=file)
    return doc


@cache
def _load(path: Path, mtime_ns: int) -> Suite:
    file = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SuiteInvalid(f"{file}: {e.strerror or e}", file=file) from None
    except json.JSONDecodeError as e:
        raise SuiteInvalid(f"{file}: not valid JSON: {e}", file=file) from None
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise SuiteInvalid(f"{file}: a suite is an object with an 'expectations' list", file=file)
    doc = _gx_normalise(data, file)
    name = doc.get("name") or path.stem
    return Suite(
        name=name, path=path, checks=compile_checks(doc["expectations"], suite=name), document=doc
    )


def load_suite(name: str, folder: Path | None = None) -> Suite:
    """Read, GX-validate and compile a suite (cached per file version)."""
    path = suite_path(name, folder)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        raise SuiteInvalid(
            f"no expectation suite {name!r} (looked for {path})", suite=name, file=str(path)
        ) from None
    return _load(path, mtime)
