"""The staged batch: what ``extract`` hands to the quality gate and to ``publish``.

Its own module so that the ingest flow and the gate both build on it without importing
each other (``pipelines.ingest`` runs ``pipelines.quality``; the gate only needs this).
It crosses process boundaries as a dict (Airflow's XCom), hence ``to_dict``/``from_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from catalog.lake.tables import StagedFile
from catalog.vocabulary import GateStatus
from connectors.base import CursorValue


@dataclass(frozen=True)
class GateOutcome:
    """The quality gate's verdict on a staged batch: its status, typed, and the summary
    events and listings carry (:meth:`catalog.datasets.quality.QualityResult.summary`)."""

    status: GateStatus
    summary: Mapping[str, Any]

    @property
    def blocked(self) -> bool:
        """The whole batch went to quarantine: nothing is published, the run failed."""
        return self.status == "blocked"

    @property
    def rows_quarantined(self) -> int:
        return int(self.summary.get("rows_quarantined") or 0)

    @property
    def quarantine_batch(self) -> str | None:
        batch = self.summary.get("quarantine_batch")
        return None if batch is None else str(batch)

    def message(self) -> str:
        """What a blocked run records as its error."""
        failed = ", ".join(self.summary.get("failed_expectations", []))
        return (
            f"quality gate blocked the batch: {self.rows_quarantined:,} row(s) quarantined "
            f"in batch {self.quarantine_batch} ({failed})"
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.summary)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateOutcome:
        return cls(status=d["status"], summary=dict(d))


@dataclass(frozen=True)
class Staged:
    """What ``extract`` hands to ``publish``: staged files and the cursor they reach."""

    dataset_id: str
    run_id: str
    files: list[StagedFile]
    rows_read: int
    cursor: CursorValue
    previous_cursor: CursorValue
    seconds: float = 0.0
    bytes_written: int = field(default=0)
    unresolved: dict[str, int] = field(default_factory=dict)
    """Non-empty addresses per address key column that did not resolve to a region."""
    regions: dict[str, int] = field(default_factory=dict)
    """Rows of the increment per region code (block keys), for block channels."""
    quality: GateOutcome | None = None
    """The quality gate's summary once the batch was validated (pipelines.quality)."""
    state: Any = None
    base_snapshot: int | None = None
    """The table's snapshot when the run read its cursor: the commit must still find it."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_id": self.dataset_id,
            "run_id": self.run_id,
            "files": [f.to_list() for f in self.files],
            "rows_read": self.rows_read,
            "cursor": self.cursor,
            "previous_cursor": self.previous_cursor,
            "base_snapshot": self.base_snapshot,
            "seconds": self.seconds,
            "unresolved": self.unresolved,
            "regions": self.regions,
            "quality": None if self.quality is None else self.quality.to_dict(),
            "state": self.state,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Staged:
        files = [StagedFile.from_list(f) for f in d["files"]]
        return cls(
            dataset_id=d["dataset_id"],
            run_id=d["run_id"],
            files=files,
            rows_read=int(d["rows_read"]),
            cursor=d["cursor"],
            previous_cursor=d["previous_cursor"],
            seconds=float(d.get("seconds", 0.0)),
            bytes_written=sum(f.bytes for f in files),
            unresolved=dict(d.get("unresolved") or {}),
            regions=dict(d.get("regions") or {}),
            quality=GateOutcome.from_dict(d["quality"]) if d.get("quality") else None,
            state=d.get("state"),
            base_snapshot=d.get("base_snapshot"),
        )

    def details(self) -> dict[str, Any]:
        """What the run reports beyond its counts (empty when there is nothing to say)."""
        return {"unresolved_addresses": self.unresolved} if self.unresolved else {}
