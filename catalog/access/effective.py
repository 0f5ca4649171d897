"""The effective access of a principal to a dataset: readable?, which columns, which of
them unmasked, which rows.  Pure decisions over catalog records and grants: no I/O.

Rules (docs/access.md):

- the owning agency reads everything, unmasked;
- an admin reads every dataset, every column, but personal data masked unless a grant
  held by the admin's agency lifts the mask (the platform role does not imply a purpose);
- ``unconditional``: every registered agency reads every row and column, personal data
  masked; an active grant may lift masks per column;
- ``conditional``: only through active grants of the reader's agency — their columns,
  their row filters, their unmasked columns;
- ``none``: nobody outside the owner (grants are never issued for it).

Several active grants of one agency combine as the union of their columns, unmasked
columns and rows (a row filter is a disjunction of the grants' filters; one grant without
a filter means every row).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from catalog.access.grants import Grant
from catalog.datasets.store import DatasetRecord
from catalog.identity.store import Principal

RowFilter = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Access:
    """What a principal may see of one dataset."""

    dataset: str
    readable: bool
    via: str  # owner | admin | unconditional | grant | denied
    columns: tuple[str, ...]  # visible columns, in manifest order
    masked: Mapping[str, str]  # visible column → personal-data kind masked for this reader
    row_filters: tuple[RowFilter, ...] | None  # None: every row; else OR of AND-of-IN filters
    grants: tuple[str, ...] = ()
    reason: str = ""

    @property
    def full(self) -> bool:
        """Sees the stored table as it is: no column dropped, masked, or row filtered."""
        return not self.masked and self.row_filters is None

    def profile(self) -> str:
        """A stable key of this access shape (cache key of the view built for it)."""
        rf = (
            "*"
            if self.row_filters is None
            else "|".join(
                ";".join(f"{k}={','.join(sorted(v))}" for k, v in sorted(f.items()))
                for f in self.row_filters
            )
        )
        masked = ",".join(f"{k}:{v}" for k, v in sorted(self.masked.items()))
        return f"{','.join(self.columns)}#{masked}#{rf}"


def _denied(dataset: DatasetRecord, reason: str) -> Access:
    return Access(dataset.id, False, "denied", (), {}, None, reason=reason)


def decide(
    principal: Principal, dataset: DatasetRecord, grants: Iterable[Grant], now: datetime
) -> Access:
    """The effective access of ``principal`` to ``dataset`` given its agency's grants."""
    m = dataset.manifest
    every = tuple(c.name for c in m.columns)
    pii = m.personal_columns
    if principal.agency_id == dataset.agency_id:
        return Access(dataset.id, True, "owner", every + tuple(m.derived_columns), {}, None)
    active = [
        g
        for g in grants
        if g.dataset_id == dataset.id and g.agency_id == principal.agency_id and g.active(now)
    ]
    ids = tuple(g.id for g in active)
    unmasked = {c for g in active for c in g.unmask}
    masked_all = {c: k for c, k in pii.items() if c not in unmasked}
    if principal.is_admin or dataset.sharing == "unconditional":
        via = "admin" if principal.is_admin else "unconditional"
        cols = _with_derived(m.derived_columns, every, masked_all)
        return Access(dataset.id, True, via, cols, masked_all, None, grants=ids)
    if dataset.sharing == "none":
        return _denied(dataset, f"dataset {dataset.id!r} is not shared (不予共享)")
    if not active:
        return _denied(
            dataset,
            f"dataset {dataset.id!r} is shared on condition: file an access request",
        )
    if any(g.columns is None for g in active):
        cols = every
    else:
        wanted = {c for g in active for c in g.columns or ()}
        cols = tuple(c for c in every if c in wanted)
    filters: tuple[RowFilter, ...] | None
    if any(g.row_filter is None for g in active):
        filters = None
    else:
        filters = tuple(dict(g.row_filter or {}) for g in active)
    masked = {c: k for c, k in masked_all.items() if c in cols}
    cols = _with_derived(m.derived_columns, cols, masked)
    return Access(dataset.id, True, "grant", cols, masked, filters, grants=ids)


def _with_derived(
    derived: Mapping[str, str], visible: tuple[str, ...], masked: Mapping[str, str]
) -> tuple[str, ...]:
    """The visible columns plus the derived ones whose source the reader sees unmasked (a
    region code derived from a masked address would say more than the address's mask)."""
    return visible + tuple(d for d, src in derived.items() if src in visible and src not in masked)


def platform_view(dataset: DatasetRecord) -> Access:
    """The most any reader outside the owning agency sees without a grant: every declared
    column, personal data masked, every row.  Server-side logic that runs for no single
    reader (alert rules) works on this view, so what it publishes carries no value that
    such a reader could not see (docs/security.md)."""
    m = dataset.manifest
    every = tuple(c.name for c in m.columns)
    return Access(dataset.id, True, "platform", every, dict(m.personal_columns), None)
