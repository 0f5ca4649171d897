"""Alert rules: a declarative YAML file (``BLOCKHUB_ALERT_RULES``), parsed and checked.

```yaml
rules:
  - id: aqi_high                 # threshold on a field of each event
    kind: threshold
    channel: feed:air_readings
    field: aqi
    op: ">"
    value: 200
    key: [station_id]            # one open alert per rule + key
    severity: high
    title: "AQI {aqi} at station {station_id}"
  - id: ticket_surge             # more than N events per key within a sliding window
    kind: window
    channel: feed:hotline_tickets
    key: [district_code, category]
    window_s: 600
    more_than: 5
  - id: air_stale                # no message on a channel for too long
    kind: staleness
    channel: feed:air_readings
    max_age_s: 300
```
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from catalog.errors import HubError

OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


class AlertRulesError(HubError):
    """The alert rules file is malformed; names the file and each bad field."""

    code = "invalid_alert_rules"
    status = 422

    def __init__(self, file: str, problems: list[dict[str, Any]]) -> None:
        lines = [f"{p['field']}: {p['message']}" for p in problems]
        super().__init__(f"{file}: " + "; ".join(lines), file=file, problems=problems)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9_\-]{1,100}$")
    kind: Literal["threshold", "window", "staleness"]
    channel: str = Field(pattern=r"^(feed|dataset):[A-Za-z0-9_\-.]+$")
    severity: Literal["info", "low", "medium", "high", "critical"] = "medium"
    title: str | None = None
    key: list[str] = Field(default_factory=list)
    where: dict[str, list[str | int | float]] = Field(default_factory=dict)
    # threshold
    field: str | None = None
    op: Literal[">", ">=", "<", "<=", "==", "!="] | None = None
    value: float | str | None = None
    # window
    window_s: float | None = Field(default=None, gt=0, le=7 * 86400)
    more_than: int | None = Field(default=None, ge=0)
    # staleness
    max_age_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _kind_fields(self) -> Rule:
        need = {
            "threshold": ("field", "op", "value"),
            "window": ("window_s", "more_than"),
            "staleness": ("max_age_s",),
        }[self.kind]
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.kind} rule needs {', '.join(missing)}")
        return self

    def key_of(self, data: dict[str, Any]) -> str:
        return "|".join(f"{k}={data.get(k)}" for k in self.key) if self.key else "*"

    def selects(self, data: dict[str, Any]) -> bool:
        for column, allowed in self.where.items():
            if str(data.get(column)) not in {str(v) for v in allowed}:
                return False
        return True

    def crosses(self, data: dict[str, Any]) -> bool:
        """Threshold test; a missing or non-comparable value never fires."""
        assert self.field is not None and self.op is not None
        v = data.get(self.field)
        if v is None:
            return False
        target: Any = self.value
        try:
            if isinstance(target, float | int):
                v = float(v)
            return bool(OPS[self.op](v, target))
        except (TypeError, ValueError):
            return False

    def render_title(self, data: dict[str, Any]) -> str:
        if self.title:
            try:
                return self.title.format(**data)
            except (KeyError, IndexError, ValueError):
                return self.title
        return f"{self.id} on {self.channel} ({self.key_of(data)})"


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[Rule]


def load_rules(path: Path) -> list[Rule]:
    """Parse and check a rules file; ids must be unique."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise AlertRulesError(str(path), [{"field": "(file)", "message": str(e)}]) from None
    except yaml.YAMLError as e:
        raise AlertRulesError(str(path), [{"field": "(yaml)", "message": str(e)}]) from None
    try:
        parsed = RuleFile.model_validate(raw)
    except ValidationError as e:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"]) or "(root)", "message": err["msg"]}
            for err in e.errors()
        ]
        raise AlertRulesError(str(path), problems) from None
    seen: set[str] = set()
    for i, rule in enumerate(parsed.rules):
        if rule.id in seen:
            raise AlertRulesError(
                str(path), [{"field": f"rules.{i}.id", "message": f"duplicate id {rule.id!r}"}]
            )
        seen.add(rule.id)
    return parsed.rules
