"""The catalog database: one engine per URL, one declarative base for every store's
tables (the dataset catalog, identity, sources, grants share it so foreign keys between
them resolve), and the UTC helpers every store uses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(dt: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt


class Base(DeclarativeBase):
    pass


def make_engine(url: str) -> Engine:
    """An engine for the catalog URL; SQLite gets WAL and a busy timeout for concurrent runs."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit is atomic and survives a process crash; only an OS crash
            # or power cut can lose the last commits (never corrupt the file).  FULL would
            # fsync on every commit — every query's audit entry (docs/decisions.md D19).
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)
