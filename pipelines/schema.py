"""The schema of blockhub's databases and its migrations (Alembic, docs/operations.md).

Two schemas, each with its own migrations and version table, so that they may live in one
PostgreSQL database or in two:

- ``catalog``: every table of the catalog database (store, grants, sources, audit chain,
  outbox, quality, ops);
- ``events``: the SQL event log (when ``BLOCKHUB_EVENTS_URL`` is a database, not Redis).

The Iceberg SQL catalog's tables (``iceberg_tables``, ``iceberg_namespace_properties``)
belong to pyiceberg and to the other engines that read the lake through them: never ours
to migrate, and left out of every comparison.

A process checks the schema when it opens storage (:func:`ensure_schema`):

- an empty database gets the current schema (a fresh install needs no extra step);
- an older one (an earlier revision, or a catalog made before migrations existed) is
  upgraded there and then on the embedded SQLite of development, and refused in production
  with a message naming ``blockhub db upgrade``: several replicas must not race to migrate
  a shared database, and an operator should take a backup first;
- a newer one (a revision this code does not know) is always refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import MetaData, inspect, make_url, text
from sqlalchemy.engine import Connection, Engine

from catalog.errors import ConfigError

log = logging.getLogger(__name__)

SchemaName = Literal["catalog", "events"]
MIGRATIONS = Path(__file__).parent / "migrations"
ICEBERG_TABLES = frozenset({"iceberg_tables", "iceberg_namespace_properties"})
"""pyiceberg's SQL-catalog tables: in the catalog database when the lake catalog shares it."""
_LOCK_KEY = 0x626C6B68  # "blkh": PostgreSQL advisory lock held while a schema is changed


class SchemaError(ConfigError):
    """The database's schema does not fit this code: the process refuses to start."""

    code = "schema_mismatch"


@dataclass(frozen=True)
class Schema:
    name: SchemaName
    version_table: str

    @property
    def versions(self) -> Path:
        return MIGRATIONS / f"{self.name}_versions"

    def metadata(self) -> list[MetaData]:
        """The models this code expects (what migrations must produce)."""
        if self.name == "events":
            from eventlog.sqllog import _meta as events_meta

            return [events_meta]
        # Every store declares its rows on catalog.db's Base or its own metadata: import them.
        import catalog.access.grants
        import catalog.datasets.pipelinestate
        import catalog.datasets.store
        import catalog.identity.store
        import catalog.sources.store  # noqa: F401
        from catalog.audit.rows import AuditBase
        from catalog.datasets.quality import _meta as quality_meta
        from catalog.db import Base
        from catalog.ops.store import OpsBase
        from catalog.outbox import outbox_meta

        return [Base.metadata, outbox_meta, AuditBase.metadata, OpsBase.metadata, quality_meta]

    def tables(self) -> set[str]:
        return {t for m in self.metadata() for t in m.tables}


SCHEMAS: dict[SchemaName, Schema] = {
    "catalog": Schema("catalog", "alembic_version"),
    "events": Schema("events", "alembic_version_events"),
}


def foreign_tables(schema: Schema) -> set[str]:
    """Tables a database of ``schema`` may hold that belong to someone else: the other
    schema's (a shared database), pyiceberg's, the version tables."""
    other = set()
    for s in SCHEMAS.values():
        other.add(s.version_table)
        if s.name != schema.name:
            other |= s.tables()
    return other | ICEBERG_TABLES


def shown(url: str) -> str:
    """A database URL fit for a message: the password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database>"


def alembic_config(schema: Schema, connection: Connection | None = None) -> Any:
    """Alembic's configuration for one schema, programmatic (no alembic.ini to ship)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("version_locations", str(schema.versions))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["schema"] = schema
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head(schema: Schema) -> str:
    """The revision this code's models are at."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config(schema)).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"{schema.name} migrations have {len(heads)} heads: merge them")
    return heads[0]


@functools.cache
def known_revisions(schema: Schema) -> frozenset[str]:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config(schema))
    return frozenset(r.revision for r in scripts.walk_revisions())


def _is_current(engine: Engine, schema: Schema) -> bool:
    """The common case, cheaply: one SELECT finds the database at this code's revision."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(f"SELECT version_num FROM {schema.version_table}")).all()
    except Exception:  # no version table yet, or the database is away: the slow path says
        return False
    return [r[0] for r in rows] == [head(schema)]


State = Literal["empty", "unversioned", "behind", "current", "ahead"]


def current_revision(conn: Connection, schema: Schema) -> str | None:
    from alembic.runtime.migration import MigrationContext

    ctx = MigrationContext.configure(conn, opts={"version_table": schema.version_table})
    return ctx.get_current_revision()


def state_of(conn: Connection, schema: Schema) -> tuple[State, str | None]:
    """Where a database stands against this code, and its revision."""
    names = set(inspect(conn).get_table_names())
    if schema.version_table in names:
        rev = current_revision(conn, schema)
        if rev is not None:
            if rev == head(schema):
                return "current", rev
            return ("behind" if rev in known_revisions(schema) else "ahead"), rev
    if names & schema.tables():
        return "unversioned", None
    return "empty", None


@contextlib.contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection holding the schema lock: one process at a time checks and changes a
    schema (replicas starting together, two ``db upgrade``)."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        db = url.database or ""
        if db and db != ":memory:":
            with open(f"{db}.schema-lock", "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    with engine.connect() as conn:
                        yield conn
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
            return
        with engine.connect() as conn:
            yield conn
        return
    with engine.connect() as conn:
        if url.get_backend_name() == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
            conn.commit()
        try:
            yield conn
        finally:
            if url.get_backend_name() == "postgresql":
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                conn.commit()


def _upgrade(conn: Connection, schema: Schema) -> None:
    from alembic import command

    command.upgrade(alembic_config(schema, conn), "head")
    conn.commit()


def _create_current(conn: Connection, schema: Schema) -> None:
    """A fresh database at head: the models' tables and the version stamped (Alembic's
    "create_all, then stamp"; tests/test_migrations.py proves it equals the migrations)."""
    from alembic import command

    for meta in schema.metadata():
        meta.create_all(conn)
    command.stamp(alembic_config(schema, conn), "head")
    conn.commit()


def upgrade(
    engine: Engine, schema_name: SchemaName, *, adopt: Any = None
) -> tuple[State, str | None, str]:
    """``blockhub db upgrade``: bring a database to this code's schema by its migrations.

    A database made before migrations existed (``unversioned``) is adopted: ``adopt``
    (given the engine) first does what that release did when it opened a catalog — the
    audit chain's added columns and the binding of existing rows — then the idempotent
    baseline creates only the tables it lacks, and the later revisions run.  Returns the
    state found, the revision before (None: empty or unversioned) and after."""
    schema = SCHEMAS[schema_name]
    with _locked(engine) as conn:
        state, rev = state_of(conn, schema)
        if state == "ahead":
            raise _ahead(engine, schema, rev)
        if state == "current":
            return state, rev, rev or head(schema)
        if state == "unversioned" and adopt is not None:
            adopt(engine)
        _upgrade(conn, schema)
        return state, rev, head(schema)


def _ahead(engine: Engine, schema: Schema, rev: str | None) -> SchemaError:
    return SchemaError(
        f"the {schema.name} database {shown(str(engine.url))} is at schema revision {rev}, "
        f"which this blockhub does not know: it was upgraded by a newer release; run that "
        "release (or restore the backup taken before its upgrade)",
        setting="BLOCKHUB_CATALOG_URL" if schema.name == "catalog" else "BLOCKHUB_EVENTS_URL",
    )


def ensure_schema(
    engine: Engine, schema_name: SchemaName, *, auto_upgrade: bool, adopt: Any = None
) -> State:
    """Check a database against this code when a process opens it (module docstring):
    create an empty one, upgrade an older one when ``auto_upgrade`` (development), else
    refuse naming the command.  Returns the state it found."""
    schema = SCHEMAS[schema_name]
    if _is_current(engine, schema):
        return "current"
    setting = "BLOCKHUB_CATALOG_URL" if schema_name == "catalog" else "BLOCKHUB_EVENTS_URL"
    with _locked(engine) as conn:
        state, rev = state_of(conn, schema)
        if state == "current":
            return state
        if state == "empty":
            _create_current(conn, schema)
            return state
        if state == "ahead":
            raise _ahead(engine, schema, rev)
        if not auto_upgrade:
            was = "was made before schema migrations" if rev is None else f"is at revision {rev}"
            raise SchemaError(
                f"the {schema.name} database {shown(str(engine.url))} {was}; this blockhub "
                f"needs revision {head(schema)}. Back it up, then run `blockhub db upgrade` "
                "(docs/operations.md, 'Upgrade')",
                setting=setting,
            )
        log.warning("upgrading the %s schema of %s", schema.name, shown(str(engine.url)))
        if state == "unversioned" and adopt is not None:
            adopt(engine)
        _upgrade(conn, schema)
        return state


def schema_diff(conn: Connection, schema_name: SchemaName) -> Sequence[Any]:
    """What differs between a database and this code's models (Alembic's autogenerate
    comparison; types and server defaults included): empty when they agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    schema = SCHEMAS[schema_name]
    ignored = foreign_tables(schema)

    def include(obj: Any, name: str | None, type_: str, reflected: bool, _other: Any) -> bool:
        return not (type_ == "table" and name in ignored)

    ctx = MigrationContext.configure(
        conn,
        opts={"compare_type": True, "include_object": include, "target_metadata": None},
    )
    return compare_metadata(ctx, schema.metadata())  # type: ignore[arg-type]


def adopt_with(keys: Any) -> Any:
    """What adopting a pre-migration catalog does first (given its engine): open its audit
    chain the way that release did, which adds the chain's later columns and binds the rows
    it already holds (``audit.adopt``) — with the hub's audit keys (``AuditKeys``)."""

    def adopt(engine: Engine) -> None:
        from catalog.audit.log import AuditLog

        AuditLog(engine, keys=keys)

    return adopt


def new_revision(schema_name: SchemaName, message: str) -> Path:
    """For developers: write the migration of the models' changes since the last revision
    (Alembic's autogenerate against a scratch SQLite database brought to head); review it,
    keep it dialect-neutral, and run tests/test_migrations.py."""
    import tempfile

    from alembic import command

    from catalog.db import make_engine

    schema = SCHEMAS[schema_name]
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/scratch.db")
        try:
            with engine.connect() as conn:
                _upgrade(conn, schema)
                script = command.revision(
                    alembic_config(schema, conn), message=message, autogenerate=True
                )
        finally:
            engine.dispose()
    return Path(script.path)  # type: ignore[union-attr]
