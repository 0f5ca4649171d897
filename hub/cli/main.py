"""The ``blockhub`` command line.

The CLI is the operator's console on the hub's own machine.  Its caller is the
principal of ``BLOCKHUB_TOKEN`` when set, else the hub home's local operator ``cli``
(an admin: it reads every dataset, personal data masked).  ``--as`` shows what another
principal would see, where the caller may act for it, and is audited (docs/security.md).
Errors print one line naming what is wrong, never a traceback (set ``BLOCKHUB_DEBUG=1`` for one).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from catalog.datasets.manifest import load_manifest
from catalog.datasets.pipelinestate import PipelineState
from catalog.datasets.store import Run
from catalog.domain.workdays import BEIJING
from catalog.errors import (
    AccessDenied,
    HubError,
    InvalidRequest,
    ManifestError,
    ServiceUnavailable,
    unavailable,
)
from catalog.runtime import settle_heap
from catalog.sources.guard import source_problems
from hub.cli.audit import audit_app
from hub.cli.console import CLI_PRINCIPAL, acting, cli_caller, err, hub, out, settings, state
from hub.cli.db import register as _register_db
from hub.cli.engines import register as _register_engines
from hub.cli.identity import agency_app, principal_app, token_app
from hub.cli.quality import register as _register_quality
from hub.cli.sources import register as _register_sources
from hub.observability import logs
from hub.settings import Settings
from pipelines.feeds import feed_options, is_feed

__all__ = ["CLI_PRINCIPAL", "app", "main", "state"]


app = typer.Typer(
    name="blockhub",
    help="blockhub: gather agency data into a versioned lake, share it, stream it live.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(agency_app, name="agency")
app.add_typer(principal_app, name="principal")
app.add_typer(token_app, name="token")


@app.callback()
def _main(
    home: Annotated[
        Path | None, typer.Option(help="state folder (default $BLOCKHUB_HOME or ./blockhub-data)")
    ] = None,
) -> None:
    state.settings = Settings(home=home) if home else Settings()
    if state.settings.feed_flush == "auto":
        # This command's own entry point guards its main module, so a spawned flush worker
        # may start here (a program that embeds the hub decides for itself).
        state.settings.feed_flush = "process"
    # One-shot commands report through their own output; their library warnings (a run's
    # quality failure, say) would only repeat it.  `serve` logs from INFO up.
    _logging(state.settings, "ERROR")


def _logging(s: Settings, default_level: str) -> None:
    """Text or JSON lines (``BLOCKHUB_LOG_FORMAT``), secrets masked (hub.observability.logs)."""
    logs.setup(
        level=s.log_level or default_level,
        fmt="json" if s.logs_as_json else "text",
        secrets=logs.settings_secrets(s),
    )


# -- datasets ------------------------------------------------------------------------


@app.command()
def validate(paths: list[Path]) -> None:
    """Check manifest files without registering them."""
    failed = 0
    for p in _manifest_paths(paths):
        try:
            m = load_manifest(p)
            problems = source_problems(m)
            if problems:
                raise ManifestError(str(p), problems)
            if is_feed(m):  # a feed's options are checked here too, not only at serve time
                feed_options(m, file=str(p))
            suite = _check_suite(m.expectations)
            out.print(f"[green]ok[/] {p} ({m.id}{suite})")
        except HubError as e:
            failed += 1
            err.print(f"[red]invalid[/] {e.message}")
    if failed:
        raise typer.Exit(2)


def _check_suite(name: str | None) -> str:
    """Load the manifest's suite as the gate would (through GX) so a typo shows up now."""
    if name is None:
        return ""
    from expectations.suite import load_suite

    suite = load_suite(name, settings().suites)
    return f"; suite {suite.name}: {len(suite.checks)} expectations"


def _manifest_paths(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
        else:
            files.append(p)
    return files


@app.command()
def register(paths: list[Path]) -> None:
    """Register (or update) datasets from manifest files or folders."""
    h = hub()
    loaded = [(load_manifest(p), p) for p in _manifest_paths(paths)]
    for m, p in loaded:  # every source checked before anything is registered
        h.sources.check(m, file=str(p))
    for m, p in loaded:
        record = h.register(m, file=str(p), by=cli_caller())
        out.print(f"registered [bold]{record.id}[/] ({record.sharing}, {record.classification})")


@app.command()
def retire(
    dataset: Annotated[str, typer.Argument(help="dataset id")],
    reason: Annotated[str, typer.Option(help="why, for the audit log")] = "",
) -> None:
    """Stop ingesting a dataset: its Airflow DAG goes away; its versions stay readable.
    `blockhub register` of its manifest reinstates it."""
    h = hub()
    caller = cli_caller()
    record = h.store.get_dataset(dataset)
    if not (caller.is_admin or (caller.role == "steward" and caller.agency_id == record.agency_id)):
        raise AccessDenied(
            f"{caller.id!r} may not retire {dataset!r}: an admin, or a steward of "
            f"{record.agency_id!r}, may",
            principal=caller.id,
            dataset=dataset,
        )
    PipelineState(h.store).retire(dataset, by=caller, reason=reason)
    out.print(f"retired [bold]{dataset}[/]: no more ingests; its versions stay readable")


@app.command("datasets")
def list_datasets() -> None:
    """Registered datasets and their latest version."""
    latest = hub().store.latest_versions()
    t = Table("id", "title", "agency", "sharing", "class", "version", "rows")
    for d in hub().store.list_datasets():
        v = latest.get(d.id)
        t.add_row(
            d.id,
            d.title,
            d.agency_id,
            d.sharing,
            d.classification,
            str(v.version) if v else "-",
            f"{v.total_rows:,}" if v else "-",
        )
    out.print(t)


def _run_line(run: Run) -> str:
    color = {"succeeded": "green", "unchanged": "cyan", "failed": "red"}.get(run.status, "yellow")
    text = (
        f"[{color}]{run.status}[/] {run.dataset_id} run {run.id[:8]}: "
        f"read {run.rows_read:,}, wrote {run.rows_written:,}"
    )
    if run.version:
        text += f" → version {run.version}"
    if run.duration_s is not None:
        text += f" in {run.duration_s:.2f} s"
    if run.error:
        text += f"\n  [red]{run.error}[/]"
    for column, n in run.details.get("unresolved_addresses", {}).items():
        text += f"\n  [yellow]{n:,} address(es) in {column} did not resolve to a region[/]"
    return text


@app.command()
def ingest(
    datasets: Annotated[list[str] | None, typer.Argument(help="dataset ids")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every registered dataset")] = False,
) -> None:
    """Run an ingest now: read the source past the cursor, publish one new version."""
    h = hub()
    retired = PipelineState(h.store).retired() if all_ else {}
    ids = (
        [d.id for d in h.store.list_datasets() if d.id not in retired]
        if all_
        else list(datasets or [])
    )
    if not ids:
        raise InvalidRequest("name datasets to ingest, or --all")
    failed = False
    for dataset_id in ids:
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=None),
            TextColumn("{task.completed:,} rows"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task(dataset_id, total=None)

            def advance(rows: int, bar: Progress = bar, task: TaskID = task) -> None:
                bar.advance(task, rows)

            run = h.ingest(dataset_id, trigger="cli", progress=advance)
        out.print(_run_line(run))
        failed = failed or run.status == "failed"
    if failed:
        raise typer.Exit(1)


@app.command()
def runs(
    dataset: Annotated[str | None, typer.Argument()] = None,
    limit: Annotated[int, typer.Option()] = 20,
) -> None:
    """Recent ingest runs."""
    t = Table(
        "run", "dataset", "status", "started", "s", "read", "written", "MB", "version", "error"
    )
    for r in hub().store.list_runs(dataset, limit=limit):
        t.add_row(
            r.id[:8],
            r.dataset_id,
            r.status,
            r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{r.duration_s:.2f}" if r.duration_s is not None else "",
            f"{r.rows_read:,}",
            f"{r.rows_written:,}",
            f"{r.bytes_written / 1e6:.1f}" if r.bytes_written else "",
            str(r.version or ""),
            (r.error or "")[:80],
        )
    out.print(t)


@app.command()
def versions(dataset: str) -> None:
    """Published versions of a dataset (each one an Iceberg snapshot)."""
    hub().store.get_dataset(dataset)
    t = Table("version", "snapshot", "added", "total", "committed", "cursor")
    for v in hub().store.versions(dataset):
        t.add_row(
            str(v.version),
            str(v.snapshot_id),
            f"{v.rows_added:,}",
            f"{v.total_rows:,}",
            v.committed_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(v.cursor),
        )
    out.print(t)


@app.command("requests")
def access_requests(
    dataset: Annotated[str | None, typer.Option(help="only requests for this dataset")] = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="only unanswered past due")] = False,
) -> None:
    """Access requests and their answer deadlines (10 working days, Beijing time; an
    estimated deadline is marked: docs/operations.md, holiday calendar)."""
    h = hub()
    now = h.clock.now()
    t = Table("id", "dataset", "agency", "status", "requested", "due (Beijing)", "overdue")
    estimated = 0
    for g in h.grants.list_grants(dataset_ids=[dataset] if dataset else None):
        if overdue and not g.overdue(now):
            continue
        due = g.due_at.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")
        if g.due_at_estimated:
            estimated += 1
            due += " [yellow](estimated)[/]"
        t.add_row(
            g.id,
            g.dataset_id,
            g.agency_id,
            g.state(now),
            g.requested_at.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M"),
            due,
            "[red]yes[/]" if g.overdue(now) else "no",
        )
    out.print(t)
    if estimated:
        err.print(
            f"[yellow]warning:[/] {estimated} deadline(s) reach a year the holiday calendar "
            "does not cover and count Monday–Friday there (docs/operations.md)"
        )


@app.command()
def query(
    sql: str,
    at: Annotated[list[str] | None, typer.Option(help="dataset=N: read version N")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
    limit: Annotated[int, typer.Option(help="rows to print at most")] = 1000,
    as_: Annotated[str | None, typer.Option("--as", help="run as this principal")] = None,
) -> None:
    """Run SQL over published datasets: blockhub query "SELECT count(*) FROM hotline_tickets"."""
    versions: dict[str, int] = {}
    for item in at or []:
        name, _, number = item.partition("=")
        if not number.isdigit():
            raise InvalidRequest(f"--at wants dataset=N, not {item!r}")
        versions[name] = int(number)
    result = hub().exchange.query(sql, acting(as_, "query"), versions=versions, max_rows=limit)
    table = result.to_table()
    if fmt == "json":
        print(
            json.dumps(
                {**result.meta(), "rows": table.to_pylist()}, ensure_ascii=False, default=str
            )
        )
        return
    if fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, sys.stdout.buffer)
        return
    t = Table(*table.column_names)
    for row in table.to_pylist():
        t.add_row(*("" if v is None else str(v) for v in row.values()))
    out.print(t)
    versions_text = ", ".join(f"{k} v{v}" for k, v in result.versions.items())
    more = " (truncated)" if result.truncated else ""
    err.print(f"[dim]{result.row_count:,} rows{more} in {result.query_ms} ms · {versions_text}[/]")


@app.command()
def block(
    code: Annotated[str, typer.Argument(help="region code (6/12 digits) or 18-char credit code")],
    children: Annotated[
        bool, typer.Option("--children", help="break every dataset down by child region")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the answer as JSON")] = False,
    as_: Annotated[str | None, typer.Option("--as", help="answer as this principal")] = None,
) -> None:
    """Everything the datasets say about one block: blockhub block 520102."""
    from hub.exchange.blocks import Blocks
    from hub.exchange.blockview import print_block

    h = hub()
    blocks = Blocks(h.exchange, timeout_s=settings().query_timeout_s)
    principal = acting(as_, "block")
    code = code.strip()
    if len(code) == 18 and not code.isdigit():
        answer = blocks.enterprise(code, principal)
    else:
        answer = blocks.region(code, principal, with_children=children)
    if as_json:
        print(json.dumps(answer, ensure_ascii=False, default=str))
        return
    print_block(out, answer)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
) -> None:
    """Serve the REST API and the websocket."""
    from hub.api.server import serve as serve_app

    s = settings()
    if port is not None:
        s.port = port  # the default replica id (<hostname>-<port>) names the port served
    _logging(s, "INFO")
    h = hub()
    h.register_manifests()
    serve_app(h, host or s.host, s.port)


@app.command()
def proxy(
    backend: Annotated[
        list[str], typer.Option("--backend", help="a replica's host:port (repeat for each)")
    ],
    listen: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1:8000",
) -> None:
    """One address in front of several `serve` replicas (a TCP proxy for one machine;
    production puts nginx/Caddy/HAProxy with TLS there: docs/operations.md)."""
    import asyncio

    from hub.api.proxy import parse_address, run_proxy

    try:
        where = parse_address(listen, what="--listen")
        replicas = [parse_address(b, what="--backend") for b in backend]
    except ValueError as e:
        err.print(f"[red]error[/] {e}")
        raise typer.Exit(2) from None
    _logging(settings(), "INFO")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_proxy(where, replicas))


@app.command()
def demo(
    tour: Annotated[bool, typer.Option("--tour", help="run the guided tour and exit")] = False,
    rows: Annotated[int, typer.Option(help="hotline tickets in the first load")] = 20_000,
    port: Annotated[
        int | None, typer.Option(help="port to serve on (default $BLOCKHUB_PORT or 8000)")
    ] = None,
) -> None:
    """Build the sample world of Guiyang, ingest it, and serve it (or tour it and exit)."""
    from hub.demo.tour import run_demo

    s = settings()
    run_demo(s, tour=tour, rows=rows, port=port if port is not None else s.port, console=out)


_register_quality(app, hub, out, acting)
_register_sources(app, hub, out, cli_caller)
_register_db(app, settings, out)
_register_engines(app, settings)
app.add_typer(audit_app, name="audit")


def main() -> None:
    settle_heap()
    try:
        app()
    except HubError as e:
        err.print(f"[red]error:[/] {e.message}")
        if os.environ.get("BLOCKHUB_DEBUG"):
            raise
        # 75 (EX_TEMPFAIL): a server blockhub needs is down; the same command may work later.
        sys.exit(75 if isinstance(e, ServiceUnavailable) else 2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # never a traceback to a user, unless asked for
        if os.environ.get("BLOCKHUB_DEBUG"):
            raise
        down = unavailable(e)
        if down is not None:
            cause = (str(e).splitlines() or [""])[0][:200]
            err.print(f"[red]error:[/] {down.message} ({type(e).__name__}: {cause})")
            sys.exit(75)
        err.print(f"[red]error:[/] unexpected {type(e).__name__}: {e}")
        err.print("[dim]set BLOCKHUB_DEBUG=1 for the traceback[/]")
        sys.exit(1)
    finally:
        if state.hub is not None:
            state.hub.close()
