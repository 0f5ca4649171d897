"""The closed vocabularies of blockhub, in one place: the pydantic models validate against
them, mypy checks code against them, and the tuples below (derived, never retyped) serve
messages and CLI choices.  A new word is added here and nowhere else."""

from __future__ import annotations

from typing import Literal, get_args

# -- datasets (the national sharing rules and the manifest) ---------------------------------
SharingType = Literal["unconditional", "conditional", "none"]
Classification = Literal["general", "important", "core"]
PersonalKind = Literal["phone", "id_number", "name", "address", "email", "plate", "other"]
SyncMode = Literal["append", "merge", "replace"]
SchemaPolicy = Literal["evolve", "freeze"]
BlockKind = Literal["region", "enterprise", "address"]
GatePolicy = Literal["block", "drop-rows", "warn"]

# -- people ---------------------------------------------------------------------------------
Role = Literal["admin", "steward", "operator", "developer"]

# -- states ---------------------------------------------------------------------------------
RunStatus = Literal["running", "succeeded", "failed", "unchanged", "interrupted"]
GateStatus = Literal["passed", "warned", "dropped", "blocked"]
BatchStatus = Literal["held", "released", "discarded", "superseded"]
GrantStatus = Literal["pending", "approved", "refused", "revoked", "expired"]

SHARING_TYPES: tuple[SharingType, ...] = get_args(SharingType)
CLASSIFICATIONS: tuple[Classification, ...] = get_args(Classification)
ROLES: tuple[Role, ...] = get_args(Role)
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
