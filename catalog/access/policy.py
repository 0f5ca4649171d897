"""Who may read which dataset, from its sharing type and the caller's agency and role.

Pure decisions over catalog records: no I/O.
"""

from __future__ import annotations

from catalog.datasets.store import DatasetRecord
from catalog.identity.store import Principal


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


def may_act_for(caller: Principal, target: Principal, *, local_operator: bool) -> bool:
    """Whether ``caller`` may act as ``target`` (the CLI's ``--as``; docs/security.md).

    - anyone may act as itself;
    - the hub home's local operator (no token: whoever can read the home can read every
      table in it) may act for any principal — audited like every other act;
    - otherwise only within one agency, which shares one set of grants, so the view can
      only narrow by role: an admin for anyone of its agency, a steward for anyone of its
      agency but an admin.  Nobody acts for another agency: that would borrow its grants.
    """
    if caller.id == target.id:
        return True
    if local_operator:
        return True
    if caller.agency_id != target.agency_id:
        return False
    if caller.is_admin:
        return True
    return caller.role == "steward" and not target.is_admin
