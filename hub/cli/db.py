"""``blockhub db upgrade|current``, ``blockhub backup`` and ``blockhub restore``.

The schema commands open no hub (opening one checks the schema first, and refuses an old
one in production): they work on the databases the settings name, under the schema lock
(pipelines.schema).  ``backup``/``restore`` are docs/operations.md's procedure, in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from catalog.db import make_engine
from hub.settings import Settings
from pipelines.schema import SCHEMAS, SchemaName, adopt_with, head, shown, state_of, upgrade


def _schemas(s: Settings) -> list[tuple[SchemaName, str]]:
    """The schemas of this stack and their database URLs (a Redis event log has none)."""
    out: list[tuple[SchemaName, str]] = [("catalog", s.catalog_db)]
    if not s.events_db.startswith("redis"):
        out.append(("events", s.events_db))
    return out


def register(app: typer.Typer, settings: Callable[[], Settings], out: Console) -> None:
    db_app = typer.Typer(
        help="The databases' schema: upgrade (migrations) and current revision.",
        no_args_is_help=True,
    )
    app.add_typer(db_app, name="db")

    @db_app.command("upgrade")
    def db_upgrade() -> None:
        """Bring the catalog (and a SQL event log) to this release's schema; adopts a
        catalog made before migrations.  Take a backup first (`blockhub backup`)."""
        s = settings()
        keys = s.audit_keys()  # adopting a catalog may write to its audit chain
        if not s.home.exists():
            s.home.mkdir(parents=True)
        for name, url in _schemas(s):
            engine = make_engine(url)
            try:
                adopt = adopt_with(keys) if name == "catalog" else None
                found, before, after = upgrade(engine, name, adopt=adopt)
            finally:
                engine.dispose()
            was = {"empty": "an empty database", "unversioned": "before migrations (adopted)"}
            verb = (
                "already at" if found == "current" else f"upgraded from {was.get(found, before)} to"
            )
            out.print(f"{name} {shown(url)}: {verb} {after}", soft_wrap=True)

    @db_app.command("current")
    def db_current() -> None:
        """Show each database's schema revision against this release's; exit 1 if one
        needs `blockhub db upgrade`."""
        s = settings()
        behind = False
        for name, url in _schemas(s):
            engine = make_engine(url)
            try:
                with engine.connect() as conn:
                    state, rev = state_of(conn, SCHEMAS[name])
            finally:
                engine.dispose()
            want = head(SCHEMAS[name])
            out.print(
                f"{name} {shown(url)}: {rev or '-'} ({state}; this release: {want})",
                soft_wrap=True,
            )
            behind = behind or state in ("behind", "unversioned", "ahead")
        if behind:
            raise typer.Exit(1)

    @app.command("backup")
    def backup_cmd(
        folder: Annotated[Path, typer.Argument(help="a new folder for the backup")],
        no_lake: Annotated[
            bool, typer.Option("--no-lake", help="databases only (an S3 lake: its own tools)")
        ] = False,
    ) -> None:
        """Back up the catalog, the Iceberg catalog, a SQL event log and the lake's files."""
        from hub.cli.backup import backup

        m = backup(settings(), folder, lake=not no_lake)
        if m["audit_problem"]:
            out.print(f"[red]warning:[/] backed up as it is: {m['audit_problem']}")
        head = (m["audit_anchor"] or {}).get("seq")
        out.print(
            f"backup in {folder}: {len(m['databases'])} database(s), "
            f"{len(m['datasets'])} dataset(s), audit chain anchored at entry {head}",
            soft_wrap=True,
        )

    @app.command("restore")
    def restore_cmd(
        folder: Annotated[Path, typer.Argument(help="a folder written by `blockhub backup`")],
    ) -> None:
        """Restore a backup into an empty stack, then check it: the audit chain verifies
        and every dataset is at its backed-up version with the same rows; exit 1 if not."""
        from hub.cli.backup import check, restore

        s = settings()
        m = restore(s, folder)
        problems = check(s, m)
        for p in problems:
            out.print(f"[red]restore check:[/] {p}")
        if problems:
            raise typer.Exit(1)
        out.print(
            f"restored {len(m['datasets'])} dataset(s) from {folder}: audit chain verifies, "
            "every dataset at its backed-up version"
        )
