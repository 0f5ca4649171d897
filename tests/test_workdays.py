"""The 10-working-day answer deadline on the official calendar in Beijing time: holidays off,
make-up working days on, holiday files for years the package does not hold, and a loud
estimate (never a silent guess) where neither covers a year."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import chinese_calendar
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog.access.grants import ANSWER_WORKING_DAYS
from catalog.datasets.manifest import Manifest
from catalog.domain.workdays import (
    BEIJING,
    HolidayFileError,
    answer_deadline,
    beijing_date,
    load_holiday_file,
    official_calendar,
    package_calendar,
)
from hub.assembly.context import Hub
from hub.settings import Settings
from tests.conftest import ExchangeWorld, SetClock

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs/examples/holidays/2026.yaml"


def bj(*args: int) -> datetime:
    """An instant given as Beijing wall-clock time."""
    return datetime(*args, tzinfo=BEIJING)  # type: ignore[misc]


def due_day(filed: datetime) -> date:
    d = answer_deadline(filed, ANSWER_WORKING_DAYS, package_calendar())
    assert not d.estimated
    local = d.due_at.astimezone(BEIJING)
    assert (local.hour, local.minute, local.second) == (23, 59, 59)
    return local.date()


# Spring Festival 2026: off 15–23 February, make-up working Saturdays 14 and 28 February.
# National Day 2026: off 1–7 October, make-up Sunday 20 September and Saturday 10 October;
# Mid-Autumn off 25–27 September.
@pytest.mark.parametrize(
    ("filed", "due", "why"),
    [
        (bj(2026, 2, 13, 10), date(2026, 3, 5), "Sat 14 Feb works, 15–23 off, Sat 28 works"),
        (bj(2026, 2, 14, 7, 30), date(2026, 3, 6), "filed on the make-up Saturday itself"),
        (bj(2026, 2, 17, 9), date(2026, 3, 6), "filed during the holiday: counts from the 24th"),
        (bj(2026, 2, 23, 23, 59), date(2026, 3, 6), "last holiday evening"),
        (bj(2026, 9, 23, 10), date(2026, 10, 14), "Mid-Autumn + National Day, Sat 10 Oct works"),
        (bj(2026, 9, 18, 16), date(2026, 10, 9), "Sun 20 Sep works"),
        (bj(2026, 3, 4, 10), date(2026, 3, 18), "an ordinary fortnight"),
        (bj(2025, 12, 30, 10), date(2026, 1, 14), "New Year 1–3 Jan off, Sun 4 Jan works"),
    ],
)
def test_deadline_follows_the_official_calendar(filed: datetime, due: date, why: str) -> None:
    assert due_day(filed) == due, why


def test_the_day_is_beijings_not_utcs_nor_the_machines() -> None:
    # 23:30 UTC on Friday 13 February 2026 is 07:30 on Saturday the 14th in Beijing: the
    # filing day is the make-up Saturday, so counting starts on the 15th (a holiday).
    friday_night_utc = datetime(2026, 2, 13, 23, 30, tzinfo=UTC)
    assert beijing_date(friday_night_utc) == date(2026, 2, 14)
    assert due_day(friday_night_utc) == date(2026, 3, 6)
    # The same instant written in Los Angeles time gives the same answer.
    la = friday_night_utc.astimezone(timezone(timedelta(hours=-8)))
    assert due_day(la) == date(2026, 3, 6)
    # Earlier that Friday (still Friday in Beijing) the Saturday counts as day one.
    assert due_day(datetime(2026, 2, 13, 15, 59, tzinfo=UTC)) == date(2026, 3, 5)
    assert due_day(datetime(2026, 2, 13, 16, 0, tzinfo=UTC)) == date(2026, 3, 6)


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=datetime(2004, 1, 1), max_value=datetime(2026, 11, 30)),
    st.integers(min_value=-12 * 60, max_value=14 * 60),
)
def test_due_day_is_a_working_day_ten_working_days_on(naive: datetime, offset_min: int) -> None:
    """Against the package's own ``is_workday`` as the oracle, for any instant and zone."""
    filed = naive.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    start, end = beijing_date(filed), due_day(filed)
    assert chinese_calendar.is_workday(end)
    between = [start + timedelta(days=k) for k in range(1, (end - start).days + 1)]
    assert sum(chinese_calendar.is_workday(d) for d in between) == ANSWER_WORKING_DAYS


def test_a_year_nobody_covers_is_estimated_loudly_not_guessed() -> None:
    cal = package_calendar()
    assert not cal.covers(2027), "the pinned chinesecalendar now holds 2027: add real cases"
    d = answer_deadline(bj(2026, 12, 28, 10), ANSWER_WORKING_DAYS, cal)
    assert d.estimated and d.assumed_years == (2027,)
    assert d.due_at.astimezone(BEIJING).date() == date(2027, 1, 11)  # Mon–Fri, no New Year
    inside = answer_deadline(bj(2026, 12, 1, 10), ANSWER_WORKING_DAYS, cal)
    assert not inside.estimated


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


YEAR_2027 = """
year: 2027
source: test transcription (not the real 2027 notice)
holidays: [2027-01-01, "2027-01-04..2027-01-05"]
workdays: [2027-01-09]
"""


def test_a_holiday_file_covers_its_year(tmp_path: Path) -> None:
    cal = official_calendar(tmp_path / "none")  # a missing folder is no error
    assert cal == package_calendar()
    _write(tmp_path / "h", "2027.yaml", YEAR_2027)
    cal = official_calendar(tmp_path / "h")
    assert cal.covers(2027) and cal.covers(2026)
    d = answer_deadline(bj(2026, 12, 28, 10), ANSWER_WORKING_DAYS, cal)
    # 29, 30, 31 Dec; 1 Jan off; 4–5 off; 6, 7, 8; Sat 9 works; 11, 12, 13
    assert not d.estimated and d.due_at.astimezone(BEIJING).date() == date(2027, 1, 13)


def test_the_shipped_example_is_the_2026_notice_as_the_package_has_it() -> None:
    rules = load_holiday_file(EXAMPLE)
    pkg = package_calendar().years[2026]
    assert rules.year == 2026
    assert rules.holidays == pkg.holidays and rules.workdays == pkg.workdays


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("year: 2027\nsource: x\nholidays: [2027-13-01]\n", "holidays[0]"),
        ("year: 2027\nsource: x\nholidays: [2027-01-01]\nworkdays: [2027-01-06]\n", "workdays"),
        ("year: 2027\nsource: x\nholidays: [2025-01-01]\n", "holidays"),
        ("year: 2027\nholidays: [2027-01-01]\n", "source"),
        ("year: '2027'\nsource: x\nholidays: [2027-01-01]\n", "year"),
        ("year: 2027\nsource: x\nholidays: ['2027-01-09..2027-01-01']\n", "holidays[0]"),
        ("year: 2027\nsource: x\nholidays: [2027-01-01]\nextra: 1\n", "extra"),
        ("year: 2027\nsource: x\nholidays: [2027-01-09]\nworkdays: [2027-01-09]\n", "workdays"),
        ("- just a list\n", "(file)"),
        ("year: [\n", "(file)"),
    ],
)
def test_a_bad_holiday_file_names_the_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = _write(tmp_path, "2027.yaml", text)
    with pytest.raises(HolidayFileError) as err:
        load_holiday_file(path)
    assert str(path) in err.value.message
    assert field in [p["field"] for p in err.value.problems], err.value.problems


def test_two_files_for_one_year_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, "2027.yaml", YEAR_2027)
    _write(tmp_path, "2027-copy.yaml", YEAR_2027)
    with pytest.raises(HolidayFileError, match="also set by"):
        official_calendar(tmp_path)


def test_hub_warns_when_this_or_next_year_is_not_covered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings_ = Settings(home=tmp_path / "home")
    with caplog.at_level(logging.WARNING, logger="hub.assembly.context"):
        Hub.open(settings_, clock=SetClock(bj(2026, 3, 4, 10))).close()
    assert "does not cover 2027" in caplog.text
    caplog.clear()
    _write(settings_.holiday_folder, "2027.yaml", YEAR_2027)
    with caplog.at_level(logging.WARNING, logger="hub.assembly.context"):
        Hub.open(settings_, clock=SetClock(bj(2026, 3, 4, 10))).close()
    assert "does not cover" not in caplog.text


def test_a_broken_holiday_file_stops_the_cli_with_its_name(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    _write(home / "holidays", "2027.yaml", "year: 2027\nsource: x\nholidays: [2027-02-30]\n")
    env = {**os.environ, "BLOCKHUB_HOME": str(home)}
    bin_ = Path(sys.executable).parent / "blockhub"
    r = subprocess.run(
        [str(bin_), "datasets"], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2, r.stderr
    said = r.stderr.replace("\n", "")  # rich wraps at 80 columns off a terminal
    assert "2027.yaml" in said and "holidays[0]" in said and "Traceback" not in said


# --- through the API, with the hub's clock ---------------------------------------------------


@pytest.fixture
def world(fresh_exchange_world: ExchangeWorld) -> ExchangeWorld:
    return fresh_exchange_world


def test_api_deadline_estimate_and_overdue_follow_the_clock(
    fresh_client: TestClient, world: ExchangeWorld, clock: SetClock
) -> None:
    stranger = world.auth("stranger")
    clock.set(datetime(2026, 2, 13, 23, 30, tzinfo=UTC))  # Saturday 07:30 in Beijing
    r = fresh_client.post(
        "/v1/datasets/t_cond/access-requests", headers=stranger, json={"purpose": "春节前申请"}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["due_at_estimated"] is False and body["overdue"] is False
    due = datetime.fromisoformat(body["due_at"])
    assert due == bj(2026, 3, 6, 23, 59, 59)
    clock.set(due - timedelta(minutes=10))  # the clock runs on: a margin for a slow machine
    assert (
        fresh_client.get(f"/v1/access-requests/{body['id']}", headers=stranger).json()["overdue"]
        is False
    )
    clock.set(due + timedelta(seconds=1))
    late = fresh_client.get(
        "/v1/access-requests", headers=world.auth("steward"), params={"overdue": True}
    ).json()
    assert body["id"] in [x["id"] for x in late]

    clock.set(bj(2026, 12, 28, 10))  # ten working days reach 2027, which nothing covers
    r = fresh_client.post(
        "/v1/datasets/t_cond/access-requests", headers=stranger, json={"purpose": "年末申请"}
    )
    assert r.json()["due_at_estimated"] is True


def test_cli_lists_requests_with_the_estimate_marked(
    hub: Hub, settings: Settings, make_manifest: Callable[..., Manifest]
) -> None:
    import os
    import subprocess
    import sys

    m = make_manifest(sharing={"type": "conditional", "conditions": "state the purpose"})
    record = hub.store.register_dataset(m)
    hub.store.identity.create_principal("dev", "gy_hbj", "dev", "developer")
    exact = hub.grants.request(
        record, agency_id="gy_hbj", requested_by="dev", purpose="p", now=bj(2026, 2, 13, 10)
    )
    guess = hub.grants.request(
        record, agency_id="gy_hbj", requested_by="dev", purpose="p", now=bj(2026, 12, 28, 10)
    )
    env = {**os.environ, "BLOCKHUB_HOME": str(settings.home), "COLUMNS": "200"}
    bin_ = Path(sys.executable).parent / "blockhub"
    r = subprocess.run(
        [str(bin_), "requests"], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    lines = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if "│" in line}
    assert "2026-03-05 23:59" in lines[exact.id] and "estimated" not in lines[exact.id]
    assert "2027-01-11 23:59 (estimated)" in lines[guess.id]
    assert "1 deadline(s) reach a year the holiday calendar does not cover" in r.stderr
