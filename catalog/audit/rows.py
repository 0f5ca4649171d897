"""The audit chain's tables and the result of a verification: shared by the log that
writes the chain (:mod:`.log`) and the check that reads it back (:mod:`.check`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from catalog.audit.seal import GENESIS


def utcnow() -> datetime:
    return datetime.now(UTC)


class AuditBase(DeclarativeBase):
    pass


class AuditRow(AuditBase):
    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[str] = mapped_column(String(40))  # ISO text: hashed exactly as stored
    action: Mapped[str] = mapped_column(String(32))
    principal_id: Mapped[str] = mapped_column(String(64), index=True)
    agency_id: Mapped[str] = mapped_column(String(64))
    datasets_json: Mapped[str] = mapped_column(Text)
    columns_json: Mapped[str] = mapped_column(Text)
    row_count: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    sql_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))
    detail_json: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # dataset → owning agency (what ``audit_datasets`` indexes), bound rows, the sealing key
    owners_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    binds_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)


class AuditHeadRow(AuditBase):
    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    mac: Mapped[str | None] = mapped_column(String(64), nullable=True)


class AuditDatasetRow(AuditBase):
    __tablename__ = "audit_datasets"
    seq: Mapped[int] = mapped_column(ForeignKey("audit_log.seq"), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agency_id: Mapped[str] = mapped_column(String(64), index=True)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    bad_seq: int | None = None
    problem: str = ""
    head_seq: int = 0
    head_hash: str = GENESIS
    head_at: str | None = None
