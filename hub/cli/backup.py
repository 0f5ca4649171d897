"""``blockhub backup`` and ``blockhub restore``: the catalog and the lake, together.

A backup is a folder:

- ``catalog.pgdump`` (``pg_dump --format=custom``) or ``catalog.db`` (SQLite's online
  backup) — the catalog database, with the Iceberg catalog and the event log when they
  share it;
- ``lake-catalog.*`` and ``events.*`` likewise when they are databases of their own (a
  Redis event log is not backed up: it is a notification stream, D54);
- ``lake/`` — the warehouse's files (metadata, manifests, data and delete files);
- ``backup.json`` — what was taken: the schema revisions, the warehouse, the audit head and
  every dataset's latest version (snapshot, rows), which ``restore`` checks against.

Order makes it consistent without stopping the hub: the databases are dumped first, the
lake's files copied after.  Iceberg files are written once and never changed, so every file
the dumped pointers name is in the copy; a commit that lands during the copy only adds
files no dumped pointer names (a run still ``running`` in the dump is settled from the lake
or interrupted after the restore, docs/operations.md "Failures").  Run no orphan removal
while a backup is taken.

``restore`` goes into an empty stack only (empty databases, an absent or empty warehouse
folder): the Iceberg metadata names its files by absolute location, so the warehouse must
be the same location as at backup time; the databases may be anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import inspect, make_url
from sqlalchemy.engine import URL

from catalog.db import make_engine
from catalog.errors import Conflict, InvalidRequest
from hub.settings import Settings
from pipelines.schema import SCHEMAS, current_revision, shown

MANIFEST = "backup.json"
FORMAT = 1


@dataclass(frozen=True)
class Database:
    """One database of the stack to back up: its role, URL and file stem in the backup."""

    role: str  # catalog, lake-catalog, events
    url: str

    @property
    def is_pg(self) -> bool:
        return make_url(self.url).get_backend_name() == "postgresql"

    def file(self) -> str:
        return f"{self.role}.pgdump" if self.is_pg else f"{self.role}.db"


def databases(settings: Settings) -> list[Database]:
    """The stack's distinct databases (one, two or three), the catalog first."""
    out = [Database("catalog", settings.catalog_db)]
    for role, url in (("lake-catalog", settings.lake_db), ("events", settings.events_db)):
        if not url.startswith("redis") and not any(_same(url, d.url) for d in out):
            out.append(Database(role, url))
    return out


def _sqlite_files(dbs: list[Database]) -> set[Path]:
    """The SQLite files of the stack (with their journals): in the embedded layout the
    Iceberg catalog's file lies inside the warehouse folder, and is dumped, not copied."""
    out: set[Path] = set()
    for d in dbs:
        if not d.is_pg and make_url(d.url).database:
            f = Path(make_url(d.url).database or "").resolve()
            out |= {f, *(f.with_name(f.name + x) for x in ("-wal", "-shm", "-journal"))}
            out.add(f.with_name(f.name + ".schema-lock"))
    return out


def _copy_lake(src: Path, dst: Path, skip: set[Path]) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if (Path(folder) / n).resolve() in skip}

    shutil.copytree(src, dst, symlinks=False, ignore=ignore, dirs_exist_ok=True)


def _same(a: str, b: str) -> bool:
    ua, ub = make_url(a), make_url(b)
    return (ua.get_backend_name(), ua.host, ua.port, ua.database) == (
        ub.get_backend_name(),
        ub.host,
        ub.port,
        ub.database,
    )


def _libpq(url: str) -> tuple[list[str], dict[str, str]]:
    """pg_dump/pg_restore arguments for a SQLAlchemy URL; the password goes in the
    environment (PGPASSWORD), never on a command line that ``ps`` shows."""
    u: URL = make_url(url)
    args = ["--dbname", u.database or "", "--host", u.host or "127.0.0.1"]
    args += ["--port", str(u.port or 5432)]
    if u.username:
        args += ["--username", u.username]
    env = dict(os.environ)
    if u.password is not None:
        env["PGPASSWORD"] = str(u.password)
    sslmode = u.query.get("sslmode")
    if isinstance(sslmode, str):
        env["PGSSLMODE"] = sslmode
    return args, env


def _run(cmd: list[str], env: dict[str, str], what: str) -> None:
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    except FileNotFoundError:
        raise InvalidRequest(
            f"{cmd[0]} is not installed: the PostgreSQL client tools (Debian: "
            "postgresql-client, of the server's major version or newer) are needed",
            field=what,
        ) from None
    if p.returncode != 0:
        lines = (p.stderr or p.stdout).strip().splitlines()
        raise InvalidRequest(f"{cmd[0]} failed for the {what}: {lines[-1] if lines else ''}")


def _local_lake(settings: Settings) -> Path:
    parsed = urlparse(settings.lake_warehouse)
    if parsed.scheme not in ("", "file"):
        raise InvalidRequest(
            f"the warehouse {settings.lake_warehouse} is not a local folder: back up an S3 lake "
            "with the object store's own tools (bucket versioning, `mc mirror`) right after "
            "`blockhub backup --no-lake` (docs/operations.md, 'Back up')",
            field="BLOCKHUB_WAREHOUSE",
        )
    return Path(parsed.path)


def _dump(db: Database, target: Path) -> None:
    if db.is_pg:
        args, env = _libpq(db.url)
        cmd = ["pg_dump", "--format=custom", "--no-owner", "--no-privileges", "--file"]
        _run([*cmd, str(target), *args], env, f"{db.role} database")
        return
    source = make_url(db.url).database or ""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)  # an online, consistent copy (WAL readers do not block it)
    finally:
        dst.close()
        src.close()


def _facts(settings: Settings) -> dict[str, Any]:
    """What a restored stack must show again: every dataset's latest version and the audit
    chain's signed head, an anchor (read before the dump, which holds at least as much)."""
    from catalog.datasets.store import CatalogStore

    store = CatalogStore(settings.catalog_db, audit_keys=settings.audit_keys())
    try:
        versions = {
            d: {"version": v.version, "snapshot_id": str(v.snapshot_id), "rows": v.total_rows}
            for d, v in sorted(store.latest_versions().items())
        }
        with store.engine.connect() as conn:
            revs = {"catalog": current_revision(conn, SCHEMAS["catalog"])}
        try:
            # the signed head: the restored chain must still hold it (``check``)
            anchor: dict[str, Any] | None = store.audit.anchor()
            problem = None
        except Conflict as e:  # back up a chain that does not verify as it is, and say so
            anchor, problem = None, e.message
    finally:
        store.dispose()
    return {
        "datasets": versions,
        "audit_anchor": anchor,
        "audit_problem": problem,
        "revisions": revs,
    }


def backup(settings: Settings, folder: Path, *, lake: bool = True) -> dict[str, Any]:
    """Write a backup of the stack ``settings`` names into the new folder ``folder``."""
    if folder.exists() and any(folder.iterdir()):
        raise InvalidRequest(f"{folder} is not empty: a backup goes into a new folder")
    lake_dir = _local_lake(settings) if lake else None
    folder.mkdir(parents=True, exist_ok=True)
    facts = _facts(settings)
    dbs = databases(settings)
    for db in dbs:  # the databases first, the lake's files after (module docstring)
        _dump(db, folder / db.file())
    if lake_dir is not None and lake_dir.exists():
        _copy_lake(lake_dir, folder / "lake", _sqlite_files(dbs))
    manifest = {
        "format": FORMAT,
        "taken_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "warehouse": settings.lake_warehouse,
        "lake_copied": lake_dir is not None,
        "databases": [
            {"role": d.role, "file": d.file(), "kind": d.file().split(".")[1]} for d in dbs
        ],
        **facts,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _empty(url: str) -> bool:
    if make_url(url).get_backend_name() == "sqlite":
        f = Path(make_url(url).database or "")
        if not f.exists() or f.stat().st_size == 0:
            return True  # not even created: nothing to make for the check
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return not inspect(conn).get_table_names()
    finally:
        engine.dispose()


def _load(db: Database, source: Path) -> None:
    if db.is_pg:
        args, env = _libpq(db.url)
        cmd = [
            "pg_restore",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
        ]
        _run([*cmd, *args, str(source)], env, f"{db.role} database")
        return
    target = Path(make_url(db.url).database or "")
    target.parent.mkdir(parents=True, exist_ok=True)
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def restore(settings: Settings, folder: Path) -> dict[str, Any]:
    """Restore the backup in ``folder`` into the empty stack ``settings`` names; refuses,
    before writing anything, a stack that is not empty or a different warehouse."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InvalidRequest(f"{folder / MANIFEST}: not a blockhub backup ({e})") from None
    if manifest.get("format") != FORMAT:
        raise InvalidRequest(f"{folder / MANIFEST}: format {manifest.get('format')!r} unknown")
    if manifest["warehouse"].rstrip("/") != settings.lake_warehouse.rstrip("/"):
        raise InvalidRequest(
            f"the backup's lake was at {manifest['warehouse']}, this stack's warehouse is "
            f"{settings.lake_warehouse}: Iceberg metadata names its files by location, so "
            "restore with BLOCKHUB_WAREHOUSE set to the backup's",
            field="BLOCKHUB_WAREHOUSE",
        )
    dbs = databases(settings)
    roles = [d["role"] for d in manifest["databases"]]
    if [d.role for d in dbs] != roles:
        raise InvalidRequest(
            f"the backup holds the databases {roles}, this stack has {[d.role for d in dbs]}: "
            "point the same URLs at one database, or at separate ones, as at backup time",
            field="BLOCKHUB_CATALOG_URL",
        )
    for db in dbs:
        if db.is_pg != manifest["databases"][roles.index(db.role)]["file"].endswith(".pgdump"):
            raise InvalidRequest(
                f"the backup's {db.role} database is of another kind than {shown(db.url)}"
            )
        if not _empty(db.url):
            raise InvalidRequest(
                f"the {db.role} database {shown(db.url)} is not empty: restore goes into an "
                "empty stack (create a new database)",
                field="BLOCKHUB_CATALOG_URL",
            )
    lake_dir = _local_lake(settings) if manifest["lake_copied"] else None
    ours = _sqlite_files(dbs)
    lake_files = lake_dir.rglob("*") if lake_dir is not None and lake_dir.exists() else ()
    if any(p.resolve() not in ours for p in lake_files if p.is_file()):
        raise InvalidRequest(
            f"the warehouse folder {lake_dir} is not empty", field="BLOCKHUB_WAREHOUSE"
        )
    if lake_dir is not None and (folder / "lake").exists():
        _copy_lake(folder / "lake", lake_dir, ours)
    for db in dbs:
        _load(db, folder / db.file())
    return manifest


def check(settings: Settings, manifest: dict[str, Any]) -> list[str]:
    """What a restored stack does not show as the backup said (empty: all well): the audit
    chain verifies and still holds the backed-up head, every dataset is at its version,
    snapshot and row count, in the catalog and in the lake."""
    from hub.assembly.context import Hub

    problems: list[str] = []
    hub = Hub.open(settings)
    try:
        anchor = manifest.get("audit_anchor")
        r = hub.audit.verify([anchor] if anchor else [])
        if not r.ok:
            problems.append(f"audit chain: {r.problem}")
        latest = hub.store.latest_versions()
        for ident, want in manifest["datasets"].items():
            got = latest.get(ident)
            if got is None or got.version != want["version"]:
                problems.append(
                    f"{ident}: version {got and got.version}, backed up {want['version']}"
                )
                continue
            table = hub.lake.table(ident)
            if (
                str(got.snapshot_id) != want["snapshot_id"]
                or table.snapshot_by_id(got.snapshot_id) is None
            ):
                problems.append(f"{ident}: snapshot {want['snapshot_id']} is not in the lake")
                continue
            # Reads the version's data once: a restore is checked once, not on every start.
            rows = table.scan(snapshot_id=got.snapshot_id).to_arrow().num_rows
            if rows != want["rows"]:
                problems.append(f"{ident}: {rows} rows in the lake, backed up {want['rows']}")
    finally:
        hub.close()
    return problems
