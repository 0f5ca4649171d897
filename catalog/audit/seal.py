"""What the audit chain's hashes cover and how they are sealed — pure functions, no I/O.

- An entry's **seal** is SHA-256 (no key) or HMAC-SHA-256 with the audit key over the
  canonical JSON of its stored fields and the previous entry's seal.  The entry names the
  key by a **key id** (an HMAC of a fixed label, so the id reveals nothing of the key), so a
  hub that rotated its key still checks entries sealed with the previous one.
- The **head** (last seq and seal) is sealed too, under a separate label: cutting entries
  off the end and moving the head back needs the key.
- A **bound row** is a row of a table outside the chain (a principal, a token, a grant, an
  order's history …) whose digest an entry carries: the state the change left.  ``verify``
  recomputes the digests, so editing, deleting or adding such a row outside the hub shows.
- An **anchor** is the head exported to be kept elsewhere, signed under a third label.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
ANCHOR_KIND = "blockhub.audit.anchor"

_KEY_ID_LABEL = b"blockhub audit key id"
_HEAD_LABEL = b"blockhub audit head\x00"
_ANCHOR_LABEL = b"blockhub audit anchor"


def key_id(key: bytes) -> str:
    """A short public name of a key (16 hex digits of an HMAC of a fixed label)."""
    return hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class AuditKeys:
    """The key that seals new entries and the earlier ones still accepted by ``verify``.

    ``unkeyed_until``: entries up to this seq were written before the hub had a key (a
    chain that started without one); past it, an entry without a key's seal is refused —
    otherwise anyone could rebuild the chain as plain SHA-256.
    """

    current: bytes | None = None
    previous: tuple[bytes, ...] = ()
    unkeyed_until: int = 0

    @property
    def current_id(self) -> str | None:
        return key_id(self.current) if self.current else None

    @property
    def keyed(self) -> bool:
        return bool(self.current or self.previous)

    def ring(self) -> dict[str, bytes]:
        keys = [k for k in (self.current, *self.previous) if k]
        return {key_id(k): k for k in keys}


def mac(key: bytes | None, payload: bytes) -> str:
    if key:
        return hmac.new(key, payload, hashlib.sha256).hexdigest()
    return hashlib.sha256(payload).hexdigest()


def _dumps(doc: Any) -> bytes:
    return json.dumps(
        doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
    ).encode()


def canonical_entry(v: Mapping[str, Any]) -> bytes:
    """The bytes an entry's seal covers: its stored column values, JSON parsed.

    The fields added with state changes (``owners``, ``binds``, ``key_id``) are covered
    whenever they are stored, so nulling one out changes the bytes as editing it does.
    """
    doc: dict[str, Any] = {
        "seq": v["seq"],
        "at": v["at"],
        "action": v["action"],
        "principal": v["principal_id"],
        "agency": v["agency_id"],
        "datasets": json.loads(v["datasets_json"]),
        "columns": json.loads(v["columns_json"]),
        "row_count": v["row_count"],
        "sql_fingerprint": v["sql_fingerprint"],
        "outcome": v["outcome"],
        "detail": json.loads(v["detail_json"]),
        "prev_hash": v["prev_hash"],
    }
    for stored, name in (("owners_json", "owners"), ("binds_json", "binds")):
        if v.get(stored) is not None:
            doc[name] = json.loads(v[stored])
    if v.get("key_id") is not None:
        doc["key_id"] = v["key_id"]
    return _dumps(doc)


def head_payload(seq: int, seal: str) -> bytes:
    return _HEAD_LABEL + f"{seq}:{seal}".encode()


# -- rows of other tables bound into the chain ----------------------------------------------


@dataclass(frozen=True)
class BoundTable:
    """A table whose rows the chain binds: ``key`` names a row, ``columns`` are digested.

    Columns left out are named in ``unbound`` with the reason (tests/test_audit_trust.py
    requires every column of the model to be in one list or the other, so a new column is
    a decision, not an accident).  A ``history`` table's rows are each bound once, by the
    change that added them, so ``verify`` checks them batch by batch and counts them
    instead of holding a digest per row.
    """

    name: str
    key: str | tuple[str, ...]  # the primary key's column(s)
    columns: tuple[str, ...]
    unbound: Mapping[str, str] | None = None
    history: bool = False  # rows are added, never changed: checked as the chain is read

    @property
    def key_columns(self) -> tuple[str, ...]:
        return (self.key,) if isinstance(self.key, str) else self.key

    def key_of(self, row: Mapping[Any, Any]) -> Any:
        """A row's key as the chain records it: the value, or a tuple of values."""
        if isinstance(self.key, str):
            return row[self.key]
        return tuple(row[c] for c in self.key)


BOUND_TABLES: tuple[BoundTable, ...] = (
    BoundTable("agencies", "id", ("id", "name", "created_at")),
    BoundTable("principals", "id", ("id", "agency_id", "name", "role", "created_at")),
    BoundTable(
        "tokens",
        "id",
        ("id", "principal_id", "secret_sha256", "label", "created_at", "expires_at", "revoked_at"),
    ),
    BoundTable(
        "datasets",
        "id",
        (
            "id",
            "agency_id",
            "title",
            "sharing",
            "classification",
            "manifest_json",
            "registered_at",
            "updated_at",
        ),
    ),
    BoundTable(
        "grants",
        "id",
        (
            "id",
            "dataset_id",
            "agency_id",
            "requested_by",
            "purpose",
            "columns_json",
            "row_filter_json",
            "unmask_json",
            "expires_at",
            "status",
            "requested_at",
            "due_at",
            "decided_at",
            "decided_by",
            "reason",
            "changed_at",
        ),
    ),
    BoundTable(
        "ops_alerts",
        "id",
        (
            "id",
            "rule_id",
            "key",
            "open_key",
            "status",
            "severity",
            "title",
            "source",
            "opened_at",
            "acked_by",
            "acked_at",
            "resolved_by",
            "resolved_at",
            "note",
        ),
        unbound={
            "count": "repeats of an open alert bump it; each repeat is not a change of state",
            "last_seen_at": "moves with every repeat",
            "detail_json": "the latest triggering event, replaced by every repeat",
        },
    ),
    BoundTable(
        "ops_orders",
        "id",
        (
            "id",
            "target",
            "status",
            "priority",
            "instructions",
            "alert_id",
            "event_json",
            "deadline",
            "opened_by",
            "opened_at",
            "updated_at",
            "escalated_at",
        ),
    ),
    BoundTable(
        "ops_order_events",
        "id",
        ("id", "order_id", "action", "actor", "at", "status", "note", "data_json"),
        history=True,
    ),
    BoundTable(
        "quarantine_actions",
        "id",
        (
            "id",
            "batch_id",
            "dataset_id",
            "action",
            "principal",
            "at",
            "rows_published",
            "rows_discarded",
            "rows_held",
            "version",
            "new_batch",
            "note",
        ),
        history=True,
    ),
)
SECRET_COLUMN = (
    "credentials to the agency's source: a digest in the chain would let its readers test "
    "guesses of them offline; what the source is (location, host, settings) is bound"
)
BOUND_TABLES += (
    BoundTable(
        "source_roots",
        ("agency_id", "name"),
        ("agency_id", "name", "location", "settings_json", "created_at"),
        unbound={"secrets_json": SECRET_COLUMN},
    ),
    BoundTable(
        "source_profiles",
        ("agency_id", "name"),
        ("agency_id", "name", "kind", "settings_json", "created_at"),
        unbound={"secrets_json": SECRET_COLUMN},
    ),
)
BOUND: dict[str, BoundTable] = {t.name: t for t in BOUND_TABLES}


def _norm(value: Any) -> Any:
    # PostgreSQL hands back aware datetimes, SQLite the stored text: the same database always
    # gives the same form, which is all a digest needs.
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ")
    if isinstance(value, bytes):
        return value.hex()
    return value


def row_digest(table: str, values: Mapping[Any, Any]) -> str:
    """SHA-256 of a bound row's digested columns (no key: the digest sits inside a sealed
    entry, and a row matching it would need a preimage)."""
    spec = BOUND[table]
    doc = {"table": table, "row": {c: _norm(values.get(c)) for c in spec.columns}}
    return hashlib.sha256(_dumps(doc)).hexdigest()


# -- anchors ---------------------------------------------------------------------------------

ANCHOR_FIELDS = ("kind", "version", "seq", "hash", "at", "entries", "exported_at", "key_id", "alg")


def _anchor_payload(doc: Mapping[str, Any]) -> bytes:
    return _dumps({k: doc.get(k) for k in ANCHOR_FIELDS})


def sign_anchor(doc: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    """Add ``alg`` and ``signature``: HMAC-SHA-256 under a key derived from the audit key,
    or a plain SHA-256 checksum on a hub without a key (it detects damage, not forgery)."""
    doc = {**doc, "key_id": key_id(key) if key else None}
    doc["alg"] = "HMAC-SHA256" if key else "SHA256"
    derived = hmac.new(key, _ANCHOR_LABEL, hashlib.sha256).digest() if key else None
    doc["signature"] = mac(derived, _anchor_payload(doc))
    return doc


def check_anchor(doc: Any, keys: AuditKeys) -> str | None:
    """Why an anchor cannot be trusted, or None when its signature holds."""
    if not isinstance(doc, Mapping) or doc.get("kind") != ANCHOR_KIND:
        return "not a blockhub audit anchor"
    if not isinstance(doc.get("seq"), int) or not isinstance(doc.get("hash"), str):
        return "the anchor has no entry seq and hash"
    if not isinstance(doc.get("signature"), str):
        return "the anchor is not signed"
    alg = doc.get("alg")
    if alg == "HMAC-SHA256":
        key = keys.ring().get(str(doc.get("key_id")))
        if key is None:
            return f"the anchor is signed with a key this hub does not hold ({doc.get('key_id')})"
        derived: bytes | None = hmac.new(key, _ANCHOR_LABEL, hashlib.sha256).digest()
    elif alg == "SHA256":
        if keys.keyed:
            return (
                "the anchor is not signed with a key (a hub with an audit key trusts only its own)"
            )
        derived = None
    else:
        return f"unknown anchor signature algorithm {alg!r}"
    if not hmac.compare_digest(mac(derived, _anchor_payload(doc)), doc["signature"]):
        return "the anchor's signature does not match: it was edited or is not from this hub"
    return None


def parse_binds(binds_json: str | None) -> Sequence[tuple[str, Any, str | None]]:
    """The bound rows an entry records: (table, key, digest); a composite key, stored as a
    JSON list, comes back as a tuple."""
    if not binds_json:
        return ()
    return [
        (str(t), tuple(k) if isinstance(k, list) else k, d) for t, k, d in json.loads(binds_json)
    ]
