"""Schema migrations (pipelines/schema.py, Alembic): from an empty database, from the
schema today's release made without migrations, the hub's refusal of a schema that does
not fit its code, and the diff that fails when a model changes without a migration."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, inspect, text

from catalog.datasets.quality import QualityStore
from catalog.db import make_engine
from hub.assembly.context import Hub
from hub.settings import Settings
from pipelines.schema import SCHEMAS, Schema, SchemaError, head, schema_diff, state_of, upgrade
from tests.conftest import blockhub_cli, fresh_pg_database

ROOT = Path(__file__).resolve().parents[1]
KEY = "k" * 40


@pytest.fixture(params=["sqlite", "pg"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh one on the machine's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    with fresh_pg_database() as url:
        yield url


def _diff(url: str, schema: str = "catalog") -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(schema_diff(conn, schema))  # type: ignore[arg-type]
    finally:
        engine.dispose()


def _state(url: str, schema: str = "catalog") -> tuple[str, str | None]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return state_of(conn, SCHEMAS[schema])  # type: ignore[index]
    finally:
        engine.dispose()


def _blockhub(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return blockhub_cli("--home", str(home), *args, **env)


def test_migrations_from_an_empty_database_give_exactly_the_models(db_url: str) -> None:
    """The model-vs-migration diff: `db upgrade` on an empty database (the migrations
    themselves, not create_all) leaves nothing between it and the code's tables. A model
    changed without a migration fails here."""
    engine = make_engine(db_url)
    try:
        for name in ("catalog", "events"):  # both schemas may share one database
            found = upgrade(engine, name)  # type: ignore[arg-type]
            assert found == ("empty", None, head(SCHEMAS[name]))  # type: ignore[index]
    finally:
        engine.dispose()
    assert _diff(db_url) == []
    assert _diff(db_url, "events") == []
    assert _state(db_url) == ("current", head(SCHEMAS["catalog"]))


def test_the_diff_sees_a_model_changed_without_a_migration(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine, "catalog")
    finally:
        engine.dispose()
    models = SCHEMAS["catalog"].metadata()

    def models_become(metadata: list[MetaData]) -> None:
        class Changed(Schema):
            def metadata(self) -> list[MetaData]:
                return metadata

        monkeypatch.setitem(SCHEMAS, "catalog", Changed("catalog", "alembic_version"))

    assert _diff(db_url) == []
    # a table added to the models
    extra = MetaData()
    Table("agencies_extra", extra, Column("id", Integer, primary_key=True))
    models_become([*models, extra])
    assert [d[0] for d in _diff(db_url)] == ["add_table"]  # type: ignore[index]
    # a column's type changed (agencies.name String(200) -> String(300)), one dropped
    changed = MetaData()
    for m in models:
        for t in m.tables.values():
            t.to_metadata(changed)
    changed.tables["agencies"].c.name.type = String(300)
    tokens = changed.tables["tokens"]
    tokens._columns.remove(tokens.c.label)  # type: ignore[attr-defined]
    models_become([changed])
    kinds = {d[0][0] if isinstance(d, list) else d[0] for d in _diff(db_url)}  # type: ignore[index]
    assert kinds == {"modify_type", "remove_column"}


def test_a_fresh_hub_creates_the_current_schema(settings: Settings) -> None:
    """Opening an empty database (the embedded default's first start, or a new server
    database) creates the current schema, stamped: equal to what the migrations make."""
    h = Hub.open(settings)
    h.close()
    assert _state(settings.catalog_db) == ("current", head(SCHEMAS["catalog"]))
    assert _diff(settings.catalog_db) == []
    if not settings.events_db.startswith("redis"):
        assert _diff(settings.events_db, "events") == []


DATA = Path(__file__).parent / "data"


def _pre_migration_catalog(url: str) -> None:
    """A catalog as the release before migrations made it: tests/data holds one made by
    that release's own code (commit 582d27a: its ``Hub.open`` in production with the audit
    key ``KEY``, an agency, a steward ``wangmin`` and a token), dumped with pg_dump and
    SQLite's iterdump. It has no version table, and no quality tables (made at a dataset's
    first validation)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.executescript((DATA / "pre_migration_catalog.sqlite.sql").read_text("utf-8"))
        conn.close()
    else:
        database = url.rsplit("/", 1)[1]
        sql = DATA / "pre_migration_catalog.pg.sql"
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-v",
             "ON_ERROR_STOP=1", "-q", "-f", str(sql)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    engine = make_engine(url)
    try:
        names = set(inspect(engine).get_table_names())
        assert "audit_log" in names and "alembic_version" not in names
        assert "quality_results" not in names
    finally:
        engine.dispose()


def test_a_catalog_made_before_migrations_is_refused_then_adopted(tmp_path: Path) -> None:
    """Production: the hub refuses a pre-migration catalog naming `blockhub db upgrade`;
    the command adopts it (no data lost, the audit chain still verifies, the missing
    tables made) and the hub starts."""
    with fresh_pg_database() as url:
        home = tmp_path / "home"
        _pre_migration_catalog(url)
        env = {"BLOCKHUB_CATALOG_URL": url, "BLOCKHUB_AUDIT_KEY": KEY}
        refused = _blockhub(home, "agency", "list", **env)
        assert refused.returncode == 2, refused.stderr
        said = " ".join(refused.stderr.split())
        assert "was made before schema migrations" in said
        assert "run `blockhub db upgrade`" in said
        assert "Traceback" not in refused.stderr
        assert _blockhub(home, "db", "current", **env).returncode == 1

        up = _blockhub(home, "db", "upgrade", **env)
        assert up.returncode == 0, up.stderr
        adopted = f"upgraded from before migrations (adopted) to {head(SCHEMAS['catalog'])}"
        assert adopted in up.stdout
        assert _diff(url) == []
        current = _blockhub(home, "db", "current", **env)
        assert current.returncode == 0, current.stdout + current.stderr
        engine = make_engine(url)
        try:
            assert upgrade(engine, "catalog")[0] == "current"  # a second run changes nothing
        finally:
            engine.dispose()
        s = Settings(home=home, catalog_url=url, audit_key=KEY)
        h = Hub.open(s)
        try:
            assert h.store.identity.get_principal("wangmin").role == "steward"
            assert h.store.identity.list_agencies()[0].id == "gy_12345"
            assert h.audit.verify().ok
            QualityStore(h.store.engine)  # its tables exist already: nothing to create
        finally:
            h.close()


def test_development_adopts_a_pre_migration_catalog_by_itself(tmp_path: Path) -> None:
    """The embedded default upgrades its own SQLite catalog at open (no command to run)."""
    home = tmp_path / "home"
    home.mkdir()
    url = f"sqlite:///{home / 'catalog.db'}"
    _pre_migration_catalog(url)
    h = Hub.open(Settings(home=home, audit_key=KEY))
    try:
        assert h.store.identity.get_agency("gy_12345").name.startswith("贵阳市")
        assert h.audit.verify().ok
    finally:
        h.close()
    assert _state(url)[0] == "current"
    assert _diff(url) == []


def test_a_schema_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    with fresh_pg_database() as url:
        s = Settings(home=tmp_path, catalog_url=url, audit_key=KEY)
        Hub.open(s).close()
        engine = make_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed0001'"))
        finally:
            engine.dispose()
        for env in ("production", "development"):
            with pytest.raises(SchemaError, match="newer release"):
                Settings(home=tmp_path, catalog_url=url, audit_key=KEY, env=env).open_storage()


def test_replicas_starting_together_on_an_empty_database_stamp_it_once(tmp_path: Path) -> None:
    """Two processes opening one empty PostgreSQL catalog at the same moment: the schema
    lock lets one create it, the other finds it current; one version row."""
    with fresh_pg_database() as url:
        env = {"BLOCKHUB_CATALOG_URL": url, "BLOCKHUB_AUDIT_KEY": KEY}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", "from hub.cli.main import main; main()", "--home",
                 str(tmp_path / f"h{i}"), "agency", "list"],
                cwd=ROOT,
                env={**{k: v for k, v in os.environ.items() if not k.startswith("BLOCKHUB_")},
                     **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]  # fmt: skip
        for p in procs:
            _, stderr = p.communicate(timeout=180)
            assert p.returncode == 0, stderr
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
        finally:
            engine.dispose()


NEXT_REVISION = '''"""A later release's change: a table and an index (tests/test_migrations.py)."""

import sqlalchemy as sa
from alembic import op

revision = "c9999_next"
down_revision = "{previous}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "next_release_notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("agencies") as batch:
        batch.add_column(sa.Column("short_name", sa.String(length=32), nullable=True))


def downgrade() -> None:
    op.drop_table("next_release_notes")
'''


def test_a_schema_one_revision_behind_is_refused_then_upgraded(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next release's code (a model change and its migration) meets a database at
    this release's revision: production refuses naming the command, `db upgrade` brings
    it to the new head with the data kept, and development upgrades by itself."""
    _this_release(tmp_path, db_url)
    versions = tmp_path / "versions"
    shutil.copytree(SCHEMAS["catalog"].versions, versions)
    previous = head(SCHEMAS["catalog"])
    (versions / "c9999_next.py").write_text(
        NEXT_REVISION.replace("{previous}", previous), encoding="utf-8"
    )
    later = MetaData()
    for m in SCHEMAS["catalog"].metadata():
        for t in m.tables.values():
            t.to_metadata(later)
    later.tables["agencies"].append_column(Column("short_name", String(32), nullable=True))
    Table("next_release_notes", later, Column("id", Integer, primary_key=True),
          Column("note", Text, nullable=False))  # fmt: skip

    class NextRelease(Schema):
        @property
        def versions(self) -> Path:
            return versions

        def metadata(self) -> list[MetaData]:
            return [later]

    monkeypatch.setitem(SCHEMAS, "catalog", NextRelease("catalog", "alembic_version"))
    assert _state(db_url) == ("behind", previous)
    with pytest.raises(SchemaError, match=rf"is at revision {previous}.*c9999_next"):
        _db_settings(tmp_path, db_url, env="production").open_storage()

    if db_url.startswith("sqlite"):  # development: the embedded catalog upgrades itself
        h = Hub.open(_db_settings(tmp_path, db_url, env="development"))
        h.close()
    else:
        engine = make_engine(db_url)
        try:
            assert upgrade(engine, "catalog") == ("behind", previous, "c9999_next")
        finally:
            engine.dispose()
    assert _state(db_url) == ("current", "c9999_next")
    assert _diff(db_url) == []
    h = Hub.open(_db_settings(tmp_path, db_url, env="production"))
    try:
        assert h.store.identity.get_agency("gy_12345").id == "gy_12345"
        assert h.audit.verify().ok
    finally:
        h.close()


def _db_settings(tmp_path: Path, url: str, **overrides: Any) -> Settings:
    return Settings(home=tmp_path / "home", catalog_url=url, audit_key=KEY, **overrides)


def _this_release(tmp_path: Path, url: str) -> None:
    """A catalog made and used by this release: its schema, an agency, an audit chain."""
    h = Hub.open(_db_settings(tmp_path, url))
    try:
        h.store.identity.upsert_agency("gy_12345", "贵阳市12345政务服务便民热线")
    finally:
        h.close()


def test_database_passwords_never_reach_the_output(tmp_path: Path) -> None:
    """The schema commands and the refusal name the database with its password hidden
    (the machine's PostgreSQL trusts 127.0.0.1, so the password is carried, not checked)."""
    secret = "Pw-never-shown-7f3a"
    with fresh_pg_database() as url:
        _pre_migration_catalog(url)
        with_pw = url.replace("postgres@", f"postgres:{secret}@")
        env = {"BLOCKHUB_CATALOG_URL": with_pw, "BLOCKHUB_AUDIT_KEY": KEY}
        home = tmp_path / "home"
        for args in (("agency", "list"), ("db", "upgrade")):  # the refusal, the command
            done = _blockhub(home, *args, **env)
            said = done.stdout + done.stderr
            assert secret not in said, args
            assert "postgres:***@127.0.0.1" in " ".join(said.split()), args
