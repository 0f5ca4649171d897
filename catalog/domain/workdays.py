"""Working days of China's official calendar, counted in Beijing time.

The sharing rules give an owning agency 10 working days to answer an access request
(政务信息资源共享管理暂行办法, art. 14).  A working day is a day of the official calendar
in Beijing: Monday–Friday, less the public holidays, plus the weekend make-up working
days (调休上班) that the State Council publishes each year in its notice on the holiday
arrangements (国务院办公厅关于 N 年部分节假日安排的通知, usually in November of N-1).

Where the days come from, in order:

1. a holiday file an administrator transcribed from the State Council's notice
   (:func:`load_holiday_file`, format in docs/operations.md) — it wins for its year;
2. the ``chinesecalendar`` package (pinned; its release says which years it holds);
3. nothing: the year is *not covered*.  :func:`answer_deadline` then counts Monday–Friday
   for that year and says so (``Deadline.estimated``); it never guesses silently.

Counting (Civil Code art. 201, 203): the day of filing is not counted; the deadline is
the end (23:59:59 Beijing time) of the 10th working day after it.  A request filed on a
holiday or a weekend starts counting on the next day just the same.

Nothing here reads the clock or the environment: callers pass the instant and the
calendar, and a :class:`WorkCalendar` is an immutable value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from catalog.errors import ManifestError

log = logging.getLogger(__name__)

BEIJING = ZoneInfo("Asia/Shanghai")
"""China Standard Time (UTC+8, no daylight saving since 1991): the official calendar's zone."""

END_OF_DAY = time(23, 59, 59)
"""A deadline ends with its last day (Civil Code art. 203: 二十四时)."""

HOLIDAY_FILE_GLOB = "*.yaml"


class HolidayFileError(ManifestError):
    """A holiday file is malformed: names the file, the field and what is wrong."""

    code = "invalid_holiday_file"


@dataclass(frozen=True)
class YearRules:
    """The days off and the make-up working days one State Council notice sets."""

    year: int
    holidays: frozenset[date]
    workdays: frozenset[date]
    source: str


@dataclass(frozen=True)
class WorkCalendar:
    """Which days are working days, for the years it covers.

    ``years`` maps a covered year to its rules; a day of a covered year that neither rule
    set names is a working day exactly when it is Monday–Friday.  A make-up working day
    of the year before (a notice may set one in late December of the previous year) is
    kept in the rules of the notice that set it and honoured too.
    """

    years: Mapping[int, YearRules]

    def covers(self, year: int) -> bool:
        return year in self.years

    @property
    def covered(self) -> tuple[int, ...]:
        return tuple(sorted(self.years))

    def is_working_day(self, day: date) -> bool | None:
        """True/False for a day of a covered year, ``None`` when the year is not covered."""
        rules = self.years.get(day.year)
        nxt = self.years.get(day.year + 1)
        if nxt is not None and day in nxt.workdays:
            return True
        if nxt is not None and day in nxt.holidays:
            return False
        if rules is None:
            return None
        if day in rules.workdays:
            return True
        if day in rules.holidays:
            return False
        return day.weekday() < 5

    def with_rules(self, extra: Iterable[YearRules]) -> WorkCalendar:
        """This calendar with ``extra`` replacing whatever it had for their years."""
        years = dict(self.years)
        for rules in extra:
            years[rules.year] = rules
        return WorkCalendar(years)

    def missing(self, *years: int) -> list[int]:
        """Those of ``years`` not covered (to warn about ahead of time)."""
        return [y for y in years if not self.covers(y)]


@cache
def package_calendar() -> WorkCalendar:
    """The years the pinned ``chinesecalendar`` release holds (2004 – its last notice)."""
    from chinese_calendar import constants  # the package's data tables, no I/O

    holidays: dict[int, set[date]] = {}
    workdays: dict[int, set[date]] = {}
    for d in constants.holidays:
        holidays.setdefault(d.year, set()).add(d)
    for d in constants.workdays:
        workdays.setdefault(d.year, set()).add(d)
    first, last = min(holidays), max(holidays)
    return WorkCalendar(
        {
            y: YearRules(
                y,
                frozenset(holidays.get(y, ())),
                frozenset(workdays.get(y, ())),
                f"chinesecalendar {_package_version()}",
            )
            for y in range(first, last + 1)
        }
    )


def _package_version() -> str:
    from importlib.metadata import version

    return version("chinesecalendar")


def official_calendar(folder: Path | None) -> WorkCalendar:
    """The package's years plus every holiday file in ``folder`` (``*.yaml``; a missing
    folder is no error: most installations need none until the package falls behind)."""
    calendar = package_calendar()
    if folder is None or not folder.is_dir():
        return calendar
    files = sorted(folder.glob(HOLIDAY_FILE_GLOB))
    loaded = [load_holiday_file(p) for p in files]
    seen: dict[int, Path] = {}
    for path, rules in zip(files, loaded, strict=True):
        if rules.year in seen:
            raise HolidayFileError(
                str(path),
                [{"field": "year", "message": f"{rules.year} is also set by {seen[rules.year]}"}],
            )
        seen[rules.year] = path
    return calendar.with_rules(loaded)


# --- holiday files ---------------------------------------------------------------------

_KEYS = {"year", "source", "holidays", "workdays"}


class _DatesAsText(yaml.SafeLoader):
    """YAML without its implicit timestamps: a bad date (``2027-02-30``) reaches
    :func:`_days` as text and is reported with its field, not as a parser crash."""


_DatesAsText.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _days(value: Any, field: str, problems: list[dict[str, Any]]) -> list[date]:
    """Dates from a list of ``YYYY-MM-DD`` and ``YYYY-MM-DD..YYYY-MM-DD`` entries."""
    if not isinstance(value, list):
        problems.append({"field": field, "message": "must be a list of dates or date ranges"})
        return []
    out: list[date] = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if isinstance(item, date) and not isinstance(item, datetime):
            out.append(item)
            continue
        text = str(item).strip() if isinstance(item, str) else None
        parts = text.split("..") if text else []
        try:
            if len(parts) == 1:
                out.append(date.fromisoformat(parts[0]))
                continue
            if len(parts) == 2:
                lo, hi = date.fromisoformat(parts[0].strip()), date.fromisoformat(parts[1].strip())
                if hi < lo or (hi - lo).days > 31:
                    raise ValueError("a range runs forward and spans at most 32 days")
                out.extend(lo + timedelta(days=k) for k in range((hi - lo).days + 1))
                continue
            raise ValueError("expected YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD")
        except ValueError as e:
            problems.append({"field": where, "message": f"{item!r}: {e}"})
    return out


def load_holiday_file(path: Path) -> YearRules:
    """One year's rules from a holiday file; :class:`ManifestError` names the file, the
    field and what is wrong (a wrong calendar would move every deadline silently)."""
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_DatesAsText)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise HolidayFileError(str(path), [{"field": "(file)", "message": str(e)}]) from None
    problems: list[dict[str, Any]] = []
    if not isinstance(doc, dict):
        raise HolidayFileError(str(path), [{"field": "(file)", "message": "must be a mapping"}])
    for key in sorted(set(doc) - _KEYS, key=str):
        problems.append({"field": str(key), "message": f"unknown key; allowed: {sorted(_KEYS)}"})
    year = doc.get("year")
    if not isinstance(year, int) or isinstance(year, bool) or not 1949 < year < 2200:
        problems.append({"field": "year", "message": "must be the notice's year, e.g. 2027"})
        year = None
    source = doc.get("source")
    if not isinstance(source, str) or not source.strip():
        problems.append(
            {"field": "source", "message": "must name the State Council notice transcribed"}
        )
    holidays = _days(doc.get("holidays"), "holidays", problems)
    workdays = _days(doc.get("workdays", []), "workdays", problems)
    if not holidays and "holidays" in doc and not problems:
        problems.append({"field": "holidays", "message": "must list the notice's days off"})
    if year is not None:
        for field, days in (("holidays", holidays), ("workdays", workdays)):
            for d in days:
                if d.year not in (year - 1, year):
                    problems.append(
                        {"field": field, "message": f"{d} is not in {year} (or late {year - 1})"}
                    )
    for d in workdays:
        if d.weekday() < 5:
            problems.append(
                {"field": "workdays", "message": f"{d} is a {d:%A}: make-up days fall on weekends"}
            )
    both = sorted(set(holidays) & set(workdays))
    if both:
        problems.append({"field": "workdays", "message": f"{both[0]} is also listed as a holiday"})
    if problems:
        raise HolidayFileError(str(path), problems)
    assert isinstance(year, int) and isinstance(source, str)
    return YearRules(year, frozenset(holidays), frozenset(workdays), source.strip())


# --- the deadline ----------------------------------------------------------------------


@dataclass(frozen=True)
class Deadline:
    """When an answer is due; ``estimated`` when a year on the way was not covered and
    Monday–Friday was counted for it (``assumed_years``)."""

    due_at: datetime
    estimated: bool
    assumed_years: tuple[int, ...] = ()


def beijing_date(at: datetime) -> date:
    """The calendar day in Beijing at instant ``at`` (naive means UTC, as stored)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(BEIJING).date()


def answer_deadline(filed_at: datetime, working_days: int, calendar: WorkCalendar) -> Deadline:
    """The end of the ``working_days``-th working day after the Beijing day of ``filed_at``.

    The result is an aware UTC instant.  Bounded: a calendar with no working day in two
    years (a broken holiday file) raises ``ValueError`` rather than looping.
    """
    if working_days < 1:
        raise ValueError("working_days must be at least 1")
    day = beijing_date(filed_at)
    left = working_days
    assumed: set[int] = set()
    for _ in range(working_days * 7 + 731):
        day += timedelta(days=1)
        known = calendar.is_working_day(day)
        if known is None:
            assumed.add(day.year)
            known = day.weekday() < 5
        if known:
            left -= 1
            if left == 0:
                due = datetime.combine(day, END_OF_DAY, BEIJING).astimezone(UTC)
                return Deadline(due, bool(assumed), tuple(sorted(assumed)))
    raise ValueError(f"no {working_days} working days within two years of {filed_at}")


def coverage_warning(calendar: WorkCalendar, today: date, folder: Path | None) -> str | None:
    """The loud warning for a calendar that does not cover this year or the next in
    Beijing (deadlines reaching such a year are estimated), or ``None``."""
    missing = calendar.missing(today.year, today.year + 1)
    if not missing:
        return None
    where = folder if folder is not None else "the holidays folder (BLOCKHUB_HOLIDAYS_DIR)"
    years = ", ".join(str(y) for y in missing)
    return (
        f"the official holiday calendar does not cover {years}: access-request deadlines "
        f"reaching it are estimated (Monday–Friday, due_at_estimated=true). Transcribe the "
        f"State Council's notice for {years} into {where}/<year>.yaml (docs/operations.md)"
    )
