"""``blockhub lake catalog``: how an engine that is not blockhub reads the lake.

It prints the lake's Iceberg catalog as pyiceberg (and Ray Data, Daft, polars through it),
Spark or Trino read it (catalog.lake.readers), from the same settings the hub uses; no
password or S3 secret is printed.  It opens nothing: the hub may be running or not.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from catalog.errors import InvalidRequest
from catalog.lake.readers import LakeCatalog
from hub.settings import Settings


def lake_catalog(settings: Settings) -> LakeCatalog:
    """The lake's catalog as the hub's settings name it; on S3 with the FileIO properties
    (endpoint, region, addressing) a reader needs to reach the objects — the key pair is
    left out of what is printed (``PYICEBERG_CATALOG__BLOCKHUB__S3__*`` variables)."""
    s3 = settings.s3_lake()
    props = s3.iceberg_properties() if s3 is not None else {}
    return LakeCatalog(uri=settings.lake_db, warehouse=settings.lake_warehouse, properties=props)


def register(app: typer.Typer, settings: Callable[[], Settings]) -> None:
    lake_app = typer.Typer(
        help="The lake, for engines that are not blockhub.", no_args_is_help=True
    )
    app.add_typer(lake_app, name="lake")

    @lake_app.command("catalog")
    def catalog_cmd(
        engine: Annotated[
            str,
            typer.Option(help="pyiceberg (.pyiceberg.yaml; Ray, Daft, polars), spark or trino"),
        ] = "pyiceberg",
        out: Annotated[
            Path | None, typer.Option(help="write it to this file (e.g. .pyiceberg.yaml)")
        ] = None,
    ) -> None:
        """The lake's Iceberg catalog as another engine reads it (no secrets printed)."""
        cat = lake_catalog(settings())
        if engine == "pyiceberg":
            text = cat.pyiceberg_yaml()
        elif engine == "spark":
            text = cat.spark_conf()
        elif engine == "trino":
            text = cat.trino_properties()
        else:
            raise InvalidRequest(
                f"--engine {engine!r}: choose pyiceberg, spark or trino", field="engine"
            )
        if out is None:
            typer.echo(text, nl=False)
        else:
            _write_whole(out, text)


def _write_whole(path: Path, text: str) -> None:
    """Write the file in one step: pyiceberg reads ``.pyiceberg.yaml`` when it is imported
    (this command imports it too), so a half-written file — what ``> .pyiceberg.yaml`` leaves
    while the command runs — would break the very command writing it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=".catalog-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
