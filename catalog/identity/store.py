"""Identity: agencies, principals and their tokens — who may call the hub at all.

Its own store beside the dataset catalog (:class:`catalog.datasets.store.CatalogStore`
holds one as ``.identity``): the same database and audit chain, so that a change of who
exists commits with its audit entry, but no dataset, run or version is in here.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import DateTime, ForeignKey, String, bindparam, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from catalog.audit.log import AuditLog, AuditTx
from catalog.db import Base, aware, utcnow
from catalog.errors import Conflict, InvalidRequest, NotFound, Unauthenticated
from catalog.vocabulary import ROLES, Role

SYSTEM = "system"
"""The actor of changes no principal asked for (start-up registration, expiry passes)."""


class AgencyRow(Base):
    __tablename__ = "agencies"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PrincipalRow(Base):
    __tablename__ = "principals"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agencies.id"))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TokenRow(Base):
    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


_TOKEN_ID = re.compile(r"[0-9A-Za-z]{1,64}")
"""The id part of a token as :meth:`IdentityStore.issue_token` makes it (hex)."""

_AUTHENTICATE = (
    select(
        TokenRow.secret_sha256,
        TokenRow.revoked_at,
        TokenRow.expires_at,
        PrincipalRow.id,
        PrincipalRow.agency_id,
        PrincipalRow.name,
        PrincipalRow.role,
    )
    .join(PrincipalRow, PrincipalRow.id == TokenRow.principal_id)
    .where(TokenRow.id == bindparam("token_id"))
)


@dataclass(frozen=True)
class Agency:
    id: str
    name: str


@dataclass(frozen=True)
class Principal:
    id: str
    agency_id: str
    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


Actor = Principal | str
"""Who makes a change: a principal (its agency is recorded as given) or a principal id."""


def record_as(tx: AuditTx, by: Actor, **entry: Any) -> None:
    """Queue the audit entry of a change made by ``by`` (see :meth:`AuditTx.record`)."""
    if isinstance(by, Principal):
        tx.record(principal=by.id, agency=by.agency_id, **entry)
    else:
        tx.record(principal=by, **entry)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class IdentityStore:
    """Agencies, principals and tokens, each change with its audit entry."""

    def __init__(self, engine: Engine, audit: AuditLog) -> None:
        self.engine = engine
        self.audit = audit
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as s:
            yield s

    def upsert_agency(self, agency_id: str, name: str, *, by: Actor = SYSTEM) -> Agency:
        """Create or rename an agency (``agency.add`` / ``agency.rename``; no entry when
        nothing changes)."""
        with self.audit.transaction() as tx:
            s = tx.session
            row = s.get(AgencyRow, agency_id)
            if row is None:
                s.add(AgencyRow(id=agency_id, name=name))
                record_as(
                    tx,
                    by,
                    action="agency.add",
                    detail={"agency": agency_id, "name": name},
                    binds=[("agencies", agency_id)],
                )
            elif row.name != name:
                before, row.name = row.name, name
                record_as(
                    tx,
                    by,
                    action="agency.rename",
                    detail={
                        "agency": agency_id,
                        "before": {"name": before},
                        "after": {"name": name},
                    },
                    binds=[("agencies", agency_id)],
                )
        return Agency(agency_id, name)

    def get_agency(self, agency_id: str) -> Agency:
        with self.session() as s:
            row = s.get(AgencyRow, agency_id)
            if row is None:
                raise NotFound(f"no agency {agency_id!r}", agency=agency_id)
            return Agency(row.id, row.name)

    def list_agencies(self) -> list[Agency]:
        with self.session() as s:
            return [
                Agency(r.id, r.name) for r in s.scalars(select(AgencyRow).order_by(AgencyRow.id))
            ]

    def create_principal(
        self, principal_id: str, agency_id: str, name: str, role: str, *, by: Actor = SYSTEM
    ) -> Principal:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; allowed: {', '.join(ROLES)}")
        with self.audit.transaction() as tx:
            s = tx.session
            if s.get(AgencyRow, agency_id) is None:
                raise NotFound(f"no agency {agency_id!r}", agency=agency_id)
            if s.get(PrincipalRow, principal_id) is not None:
                raise Conflict(f"principal {principal_id!r} exists", principal=principal_id)
            s.add(PrincipalRow(id=principal_id, agency_id=agency_id, name=name, role=role))
            record_as(
                tx,
                by,
                action="principal.add",
                detail={"subject": principal_id, "agency": agency_id, "name": name, "role": role},
                binds=[("principals", principal_id)],
            )
        return Principal(principal_id, agency_id, name, role)

    def set_role(self, principal_id: str, role: str, *, by: Actor = SYSTEM) -> Principal:
        """Change a principal's role (``principal.role``, before and after)."""
        if role not in ROLES:
            raise InvalidRequest(
                f"unknown role {role!r}; allowed: {', '.join(ROLES)}", field="role"
            )
        with self.audit.transaction() as tx:
            s = tx.session
            row = s.get(PrincipalRow, principal_id)
            if row is None:
                raise NotFound(f"no principal {principal_id!r}", principal=principal_id)
            before = row.role
            if before != role:
                row.role = role
                record_as(
                    tx,
                    by,
                    action="principal.role",
                    detail={
                        "subject": principal_id,
                        "before": {"role": before},
                        "after": {"role": role},
                    },
                    binds=[("principals", principal_id)],
                )
            return Principal(row.id, row.agency_id, row.name, cast(Role, row.role))

    def get_principal(self, principal_id: str) -> Principal:
        with self.session() as s:
            r = s.get(PrincipalRow, principal_id)
            if r is None:
                raise NotFound(f"no principal {principal_id!r}", principal=principal_id)
            return Principal(r.id, r.agency_id, r.name, cast(Role, r.role))

    def issue_token(
        self,
        principal_id: str,
        *,
        label: str = "",
        ttl: timedelta | None = timedelta(days=90),
        by: Actor = SYSTEM,
    ) -> str:
        """Create a token and return it in clear text: the only time it is ever shown (the
        audit entry ``token.issue`` names its id, never the secret)."""
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(24)
        expires = utcnow() + ttl if ttl else None
        with self.audit.transaction() as tx:
            s = tx.session
            if s.get(PrincipalRow, principal_id) is None:
                raise NotFound(f"no principal {principal_id!r}", principal=principal_id)
            s.add(
                TokenRow(
                    id=token_id,
                    principal_id=principal_id,
                    secret_sha256=_hash(secret),
                    label=label,
                    expires_at=expires,
                )
            )
            record_as(
                tx,
                by,
                action="token.issue",
                detail={
                    "token": token_id,
                    "subject": principal_id,
                    "label": label,
                    "expires_at": expires.isoformat() if expires else None,
                },
                binds=[("tokens", token_id)],
            )
        return f"bh_{token_id}_{secret}"

    def revoke_token(self, token_id: str, *, by: Actor = SYSTEM) -> None:
        """Revoke a token (``token.revoke``; revoking it again changes and records nothing)."""
        with self.audit.transaction() as tx:
            s = tx.session
            row = s.get(TokenRow, token_id)
            if row is None:
                raise NotFound(f"no token {token_id!r}", token=token_id)
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                record_as(
                    tx,
                    by,
                    action="token.revoke",
                    detail={"token": token_id, "subject": row.principal_id},
                    binds=[("tokens", token_id)],
                )

    def authenticate(self, token: str) -> Principal:
        """The principal a token belongs to; Unauthenticated if unknown, expired or revoked."""
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "bh":
            raise Unauthenticated("malformed token")
        _, token_id, secret = parts
        if not _TOKEN_ID.fullmatch(token_id):  # never sent to the database as it came
            raise Unauthenticated("malformed token")
        # One Core statement, token and principal together: every REST request and every
        # websocket connection comes through here (two ORM gets cost ~0.6 ms; D35).
        with self.engine.connect() as conn:
            row = conn.execute(_AUTHENTICATE, {"token_id": token_id}).first()
        if row is None or not secrets.compare_digest(row.secret_sha256, _hash(secret)):
            raise Unauthenticated("unknown token")
        if row.revoked_at is not None:
            raise Unauthenticated("token revoked")
        expires = aware(row.expires_at)
        if expires is not None and expires <= utcnow():
            raise Unauthenticated("token expired")
        return Principal(row.id, row.agency_id, row.name, row.role)
