"""Alembic's environment for blockhub's schemas (pipelines/schema.py): run programmatically
by ``blockhub db upgrade`` (never with an alembic.ini), on the connection it hands over."""

from __future__ import annotations

from typing import Any

from alembic import context

from pipelines.schema import Schema, foreign_tables

config = context.config
schema: Schema = config.attributes["schema"]
ignored = foreign_tables(schema)


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, other: Any) -> bool:
    # pyiceberg's tables and the other schema's may share the database: not ours here.
    return not (type_ == "table" and name in ignored)


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("blockhub's migrations run through `blockhub db upgrade`")
    context.configure(
        connection=connection,
        target_metadata=schema.metadata(),
        version_table=schema.version_table,
        include_object=include_object,
        compare_type=True,
        # SQLite alters a table by copying it: later revisions write batch operations.
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
