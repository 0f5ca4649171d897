"""Who may read which dataset, from its sharing type and the caller's agency and role.

Pure decisions over catalog records: no I/O.
"""

from __future__ import annotations

from catalog.store import DatasetRecord, Principal


def can_read(principal: Principal, dataset: DatasetRecord) -> bool:
    """Sharing rules: ``unconditional`` → every registered agency; ``conditional`` →
    the owner, or an agency holding an approved grant (granted separately);
    ``none`` → the owning agency only.  Admins see everything."""
    if principal.is_admin or principal.agency_id == dataset.agency_id:
        return True
    return dataset.sharing == "unconditional"


def can_manage(principal: Principal, dataset_agency: str) -> bool:
    """Register or change a dataset: an admin, or a steward of the owning agency."""
    return principal.is_admin or (
        principal.role == "steward" and principal.agency_id == dataset_agency
    )
