"""Access requests and grants for shared datasets (有条件共享).

An agency's developer files a request (purpose, columns, optional row filter, expiry,
columns to see unmasked); a steward of the owning agency approves it — possibly
narrowing it — or refuses with a reason.  The owner has 10 working days to answer,
counted on the official calendar in Beijing time (:mod:`catalog.domain.workdays`: public
holidays off, make-up working days on).  The deadline is computed from ``requested_at``
with the calendar in force whenever a request is read, so a holiday file supplied later
corrects the deadlines of pending requests; where the calendar does not cover a year the
deadline is Monday–Friday for that year and flagged ``due_at_estimated``.  An approved
grant is revocable and ends by itself at its expiry.  One table holds the request and,
once approved, the grant.

Each transition — request, approval (with the scope before and after narrowing), refusal,
revocation, and the expiry noticed by :meth:`GrantStore.expire_due` — commits with its
entry in the audit chain, which binds the grant row as the transition left it.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, String, Text, func, select
from sqlalchemy.orm import Mapped, mapped_column

from catalog.datasets.store import CatalogStore, DatasetRecord
from catalog.db import Base, utcnow
from catalog.domain.clock import Clock, SystemClock
from catalog.domain.workdays import WorkCalendar, answer_deadline, package_calendar
from catalog.errors import Conflict, InvalidRequest, NotFound
from catalog.identity.store import SYSTEM

log = logging.getLogger(__name__)

ANSWER_WORKING_DAYS = 10
RowFilter = dict[str, list[str]]


class GrantRow(Base):
    __tablename__ = "grants"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agencies.id"), index=True)
    requested_by: Mapped[str] = mapped_column(ForeignKey("principals.id"))
    purpose: Mapped[str] = mapped_column(Text)
    columns_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    row_filter_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    unmask_json: Mapped[str] = mapped_column(Text, default="[]")
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def _aware(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt


@dataclass(frozen=True)
class Grant:
    """A request and, once approved, the grant it became."""

    id: str
    dataset_id: str
    agency_id: str
    requested_by: str
    purpose: str
    columns: tuple[str, ...] | None
    row_filter: Mapping[str, tuple[str, ...]] | None
    unmask: tuple[str, ...]
    expires_at: datetime | None
    status: str
    requested_at: datetime
    due_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    reason: str | None = None
    due_at_estimated: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def active(self, now: datetime) -> bool:
        return self.status == "approved" and (self.expires_at is None or self.expires_at > now)

    def state(self, now: datetime) -> str:
        """The status as a reader sees it: ``expired`` for an approved grant past expiry
        (stored as such once the expiry pass has recorded it)."""
        if self.status == "approved" and not self.active(now):
            return "expired"
        return self.status

    def overdue(self, now: datetime) -> bool:
        return self.status == "pending" and now > self.due_at

    def to_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "dataset": self.dataset_id,
            "agency": self.agency_id,
            "requested_by": self.requested_by,
            "purpose": self.purpose,
            "columns": list(self.columns) if self.columns is not None else None,
            "row_filter": {k: list(v) for k, v in self.row_filter.items()}
            if self.row_filter is not None
            else None,
            "unmask": list(self.unmask),
            "expires_at": self.expires_at,
            "status": self.state(now),
            "requested_at": self.requested_at,
            "due_at": self.due_at,
            "due_at_estimated": self.due_at_estimated,
            "overdue": self.overdue(now),
            "decided_at": self.decided_at,
            "decided_by": self.decided_by,
            "reason": self.reason,
        }


def _grant(r: GrantRow, calendar: WorkCalendar | None = None) -> Grant:
    cols = json.loads(r.columns_json) if r.columns_json else None
    rf = json.loads(r.row_filter_json) if r.row_filter_json else None
    requested_at = _aware(r.requested_at) or utcnow()
    deadline = answer_deadline(requested_at, ANSWER_WORKING_DAYS, calendar or package_calendar())
    return Grant(
        id=r.id,
        dataset_id=r.dataset_id,
        agency_id=r.agency_id,
        requested_by=r.requested_by,
        purpose=r.purpose,
        columns=tuple(cols) if cols is not None else None,
        row_filter={k: tuple(v) for k, v in rf.items()} if rf is not None else None,
        unmask=tuple(json.loads(r.unmask_json or "[]")),
        expires_at=_aware(r.expires_at),
        status=r.status,
        requested_at=requested_at,
        due_at=deadline.due_at,
        decided_at=_aware(r.decided_at),
        decided_by=r.decided_by,
        reason=r.reason,
        due_at_estimated=deadline.estimated,
    )


def check_scope(
    dataset: DatasetRecord,
    columns: Sequence[str] | None,
    row_filter: Mapping[str, Sequence[str]] | None,
    unmask: Sequence[str],
) -> None:
    """Refuse a scope naming columns the dataset does not have (names the field)."""
    known = [c.name for c in dataset.manifest.columns]
    for label, names in (
        ("columns", list(columns or [])),
        ("row_filter", list(row_filter or {})),
        ("unmask", list(unmask)),
    ):
        bad = [n for n in names if n not in known]
        if bad:
            raise InvalidRequest(
                f"{label} names unknown column(s) {bad} of {dataset.id!r}",
                field=label,
                columns=bad,
            )
    for col, values in (row_filter or {}).items():
        if not values or not all(isinstance(v, str) for v in values):
            raise InvalidRequest(
                f"row_filter.{col} must be a non-empty list of strings", field=f"row_filter.{col}"
            )
    if columns is not None and not columns:
        raise InvalidRequest(
            "columns must not be empty (omit it for every column)", field="columns"
        )
    if columns is not None:
        outside = [c for c in unmask if c not in columns]
        if outside:
            raise InvalidRequest(
                f"unmask names column(s) {outside} outside the requested columns", field="unmask"
            )


def _narrower(
    g: Grant,
    columns: Sequence[str] | None,
    row_filter: Mapping[str, Sequence[str]] | None,
    unmask: Sequence[str] | None,
    expires_at: datetime | None,
) -> None:
    """An approval may narrow a request, never widen it."""
    if columns is not None and g.columns is not None and not set(columns) <= set(g.columns):
        raise InvalidRequest("approval may only narrow the requested columns", field="columns")
    if unmask is not None and not set(unmask) <= set(g.unmask):
        raise InvalidRequest("approval may only narrow the columns to unmask", field="unmask")
    if g.row_filter is not None and row_filter is not None:
        for col, values in g.row_filter.items():
            if col not in row_filter or not set(row_filter[col]) <= set(values):
                raise InvalidRequest(
                    f"approval may only narrow the row filter on {col!r}",
                    field=f"row_filter.{col}",
                )
    if g.expires_at is not None and (expires_at is None or expires_at > g.expires_at):
        raise InvalidRequest("approval may only shorten the expiry", field="expires_at")


_STAMP_PARTS = (
    select(func.count(GrantRow.id)).scalar_subquery(),
    select(func.max(GrantRow.changed_at)).scalar_subquery(),
)


class GrantStore:
    """Requests and grants in the catalog database."""

    def __init__(
        self,
        store: CatalogStore,
        *,
        calendar: WorkCalendar | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.calendar = calendar or package_calendar()
        self.clock = clock or SystemClock()
        GrantRow.__table__.create(store.engine, checkfirst=True)  # type: ignore[attr-defined]

    def request(
        self,
        dataset: DatasetRecord,
        *,
        agency_id: str,
        requested_by: str,
        purpose: str,
        columns: Sequence[str] | None = None,
        row_filter: Mapping[str, Sequence[str]] | None = None,
        unmask: Sequence[str] = (),
        expires_at: datetime | None = None,
        now: datetime | None = None,
    ) -> Grant:
        if not purpose.strip():
            raise InvalidRequest("purpose must say what the data is for", field="purpose")
        check_scope(dataset, columns, row_filter, unmask)
        at = now or self.clock.now()
        if expires_at is not None and _aware(expires_at) <= at:  # type: ignore[operator]
            raise InvalidRequest("expires_at must be in the future", field="expires_at")
        deadline = answer_deadline(at, ANSWER_WORKING_DAYS, self.calendar)
        row = GrantRow(
            id=secrets.token_hex(8),
            dataset_id=dataset.id,
            agency_id=agency_id,
            requested_by=requested_by,
            purpose=purpose.strip(),
            columns_json=json.dumps(list(columns)) if columns is not None else None,
            row_filter_json=json.dumps({k: list(v) for k, v in row_filter.items()})
            if row_filter is not None
            else None,
            unmask_json=json.dumps(list(unmask)),
            expires_at=expires_at,
            status="pending",
            requested_at=at,
            due_at=deadline.due_at,
            changed_at=at,
        )
        with self.store.audit.transaction() as tx:
            tx.session.add(row)
            tx.session.flush()
            g = _grant(row, self.calendar)
            tx.record(
                action="grant.request",
                principal=requested_by,
                agency=agency_id,
                datasets=[dataset.id],
                detail={
                    "request": g.id,
                    **_scope(g),
                    "purpose": g.purpose,
                    "due_at": g.due_at.isoformat(),
                },
                binds=[("grants", g.id)],
            )
        if deadline.estimated:
            log.warning(
                "access request %s: the holiday calendar does not cover %s; its deadline "
                "%s is estimated Monday–Friday (docs/operations.md, holiday calendar)",
                g.id,
                ", ".join(map(str, deadline.assumed_years)),
                g.due_at.isoformat(),
            )
        return g

    def get(self, grant_id: str) -> Grant:
        with self.store.session() as s:
            row = s.get(GrantRow, grant_id)
            if row is None:
                raise NotFound(f"no access request {grant_id!r}", request=grant_id)
            return _grant(row, self.calendar)

    def list_grants(
        self,
        *,
        dataset_ids: Sequence[str] | None = None,
        agency_id: str | None = None,
        owner_datasets: Sequence[str] | None = None,
    ) -> list[Grant]:
        """Requests filtered by dataset and grantee agency; ``owner_datasets`` widens the
        agency filter to requests *for* those datasets (what a steward sees)."""
        q = select(GrantRow).order_by(GrantRow.requested_at.desc())
        if dataset_ids is not None:
            q = q.where(GrantRow.dataset_id.in_(list(dataset_ids)))
        if agency_id is not None:
            cond = GrantRow.agency_id == agency_id
            if owner_datasets:
                cond = cond | GrantRow.dataset_id.in_(list(owner_datasets))
            q = q.where(cond)
        with self.store.session() as s:
            return [_grant(r, self.calendar) for r in s.scalars(q)]

    def for_agency(self, agency_id: str) -> list[Grant]:
        """Approved grants held by an agency (active or expired; callers check the time)."""
        q = select(GrantRow).where(GrantRow.agency_id == agency_id, GrantRow.status == "approved")
        with self.store.session() as s:
            return [_grant(r, self.calendar) for r in s.scalars(q)]

    @staticmethod
    def stamp_parts() -> tuple[Any, Any]:
        """Scalar subqueries that change whenever a grant does (rows, last change), for
        :meth:`CatalogStore.change_stamp` — caches of access decisions compare them.
        The same objects every call, so the stamp's statement is built once."""
        return _STAMP_PARTS

    def approve(
        self,
        grant_id: str,
        *,
        by: str,
        dataset: DatasetRecord,
        columns: Sequence[str] | None = None,
        row_filter: Mapping[str, Sequence[str]] | None = None,
        unmask: Sequence[str] | None = None,
        expires_at: datetime | None = None,
        now: datetime | None = None,
    ) -> Grant:
        at = now or self.clock.now()
        with self.store.audit.transaction() as tx:
            s = tx.session
            row = s.get(GrantRow, grant_id)
            if row is None:
                raise NotFound(f"no access request {grant_id!r}", request=grant_id)
            g = _grant(row, self.calendar)
            if g.status != "pending":
                raise Conflict(f"request {grant_id!r} is {g.status}, not pending", request=grant_id)
            new_cols = columns if columns is not None else g.columns
            new_rf = row_filter if row_filter is not None else g.row_filter
            new_unmask = unmask if unmask is not None else g.unmask
            new_exp = expires_at if expires_at is not None else g.expires_at
            _narrower(g, columns, row_filter, unmask, new_exp)
            check_scope(dataset, new_cols, new_rf, new_unmask)
            row.columns_json = json.dumps(list(new_cols)) if new_cols is not None else None
            row.row_filter_json = (
                json.dumps({k: list(v) for k, v in new_rf.items()}) if new_rf is not None else None
            )
            row.unmask_json = json.dumps(list(new_unmask))
            row.expires_at = new_exp
            row.status = "approved"
            row.decided_at = at
            row.decided_by = by
            row.changed_at = at
            s.flush()
            done = _grant(row, self.calendar)
            tx.record(
                action="grant.approve",
                principal=by,
                datasets=[g.dataset_id],
                detail={
                    "request": g.id,
                    "grantee": g.agency_id,
                    "requested": _scope(g),
                    "granted": _scope(done),
                },
                binds=[("grants", g.id)],
            )
            return done

    def refuse(self, grant_id: str, *, by: str, reason: str, now: datetime | None = None) -> Grant:
        return self._close(grant_id, by=by, reason=reason, new="refused", now=now)

    def revoke(self, grant_id: str, *, by: str, reason: str, now: datetime | None = None) -> Grant:
        return self._close(grant_id, by=by, reason=reason, new="revoked", now=now)

    def _close(
        self, grant_id: str, *, by: str, reason: str, new: str, now: datetime | None
    ) -> Grant:
        if not reason.strip():
            raise InvalidRequest(f"a {new} request needs a reason", field="reason")
        at = now or self.clock.now()
        expect = "pending" if new == "refused" else "approved"
        with self.store.audit.transaction() as tx:
            s = tx.session
            row = s.get(GrantRow, grant_id)
            if row is None:
                raise NotFound(f"no access request {grant_id!r}", request=grant_id)
            if row.status != expect:
                raise Conflict(
                    f"request {grant_id!r} is {row.status}; only a {expect} one can be {new}",
                    request=grant_id,
                )
            row.status = new
            row.reason = reason.strip()
            row.decided_by = by
            row.decided_at = at
            row.changed_at = at
            s.flush()
            done = _grant(row, self.calendar)
            tx.record(
                action="grant.refuse" if new == "refused" else "grant.revoke",
                principal=by,
                datasets=[done.dataset_id],
                detail={
                    "request": done.id,
                    "grantee": done.agency_id,
                    "reason": done.reason,
                    "scope": _scope(done),
                },
                binds=[("grants", done.id)],
            )
            return done

    def expire_due(self, now: datetime | None = None) -> list[Grant]:
        """Mark approved grants past their expiry as ``expired``, each with its
        ``grant.expire`` entry (by ``system``).  Access already ended at the expiry time
        (decisions read the clock); this puts the end on record.  Run by the hub's
        periodic pass; several processes may run it at once (one transaction, the chain's
        write lock held, so each grant is expired once)."""
        at = now or self.clock.now()
        # Expiry judged as access decisions judge it (Grant.active), not by the database's
        # comparison of stored times; a look first, so the write lock is taken only when
        # there is something to record (the pass runs every few seconds).
        q = select(GrantRow).where(GrantRow.status == "approved", GrantRow.expires_at.is_not(None))
        with self.store.session() as s:
            if all(_grant(r, self.calendar).active(at) for r in s.scalars(q)):
                return []
        with self.store.audit.transaction() as tx:
            s = tx.session
            out = []
            for row in s.scalars(q):
                if _grant(row, self.calendar).active(at):
                    continue
                row.status = "expired"
                row.changed_at = at
                g = _grant(row, self.calendar)
                tx.record(
                    action="grant.expire",
                    principal=SYSTEM,
                    agency="",
                    datasets=[g.dataset_id],
                    detail={
                        "request": g.id,
                        "grantee": g.agency_id,
                        "expires_at": g.expires_at.isoformat() if g.expires_at else None,
                    },
                    binds=[("grants", g.id)],
                )
                out.append(g)
            s.flush()
            return out


def _scope(g: Grant) -> dict[str, Any]:
    """The scope of a request or grant as the audit entry records it."""
    return {
        "columns": list(g.columns) if g.columns is not None else None,
        "row_filter": {k: list(v) for k, v in g.row_filter.items()}
        if g.row_filter is not None
        else None,
        "unmask": list(g.unmask),
        "expires_at": g.expires_at.isoformat() if g.expires_at else None,
    }
