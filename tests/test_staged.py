"""The staged batch and the gate's typed outcome survive the trip through Airflow's XCom
(a dict), and a blocked outcome says so by type, not by a string compared in each caller."""

from __future__ import annotations

from pipelines.staged import GateOutcome, Staged

SUMMARY = {
    "status": "blocked",
    "rows_quarantined": 1200,
    "quarantine_batch": "b-1",
    "failed_expectations": ["column_values_to_be_valid_mobile(phone)"],
}


def _staged(quality: GateOutcome | None) -> Staged:
    return Staged(
        dataset_id="d",
        run_id="r",
        files=[],
        rows_read=1200,
        cursor=5,
        previous_cursor=None,
        quality=quality,
    )


def test_a_blocked_outcome_round_trips_as_a_typed_value() -> None:
    back = Staged.from_dict(_staged(GateOutcome("blocked", SUMMARY)).to_dict())
    assert isinstance(back.quality, GateOutcome)
    assert back.quality.blocked and back.quality.quarantine_batch == "b-1"
    assert back.quality.message() == (
        "quality gate blocked the batch: 1,200 row(s) quarantined in batch b-1 "
        "(column_values_to_be_valid_mobile(phone))"
    )


def test_other_outcomes_are_not_blocked() -> None:
    for status in ("passed", "warned", "dropped"):
        outcome = GateOutcome.from_dict({**SUMMARY, "status": status})
        assert not outcome.blocked
    assert Staged.from_dict(_staged(None).to_dict()).quality is None
