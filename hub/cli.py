"""The ``blockhub`` command line.

The CLI is the operator's console on the hub's own machine.  Its caller is the
principal of ``BLOCKHUB_TOKEN`` when set, else the hub home's local operator ``cli``
(an admin: it reads every dataset, personal data masked).  ``--as`` shows what another
principal would see, where the caller may act for it, and is audited (docs/security.md).
Errors print one line naming what is wrong, never a traceback (set ``BLOCKHUB_DEBUG=1`` for one).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from catalog.errors import (
    AccessDenied,
    HubError,
    InvalidRequest,
    ManifestError,
    ServiceUnavailable,
    unavailable,
)
from catalog.manifest import load_manifest
from catalog.policy import may_act_for
from catalog.runtime import settle_heap
from catalog.sources import source_problems
from catalog.store import Principal, Run
from catalog.workdays import BEIJING
from hub.cli_db import register as _register_db
from hub.cli_quality import register as _register_quality
from hub.cli_sources import register as _register_sources
from hub.context import Hub
from hub.settings import Settings
from pipelines.feeds import feed_options, is_feed

app = typer.Typer(
    name="blockhub",
    help="blockhub: gather agency data into a versioned lake, share it, stream it live.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
agency_app = typer.Typer(help="Agencies.", no_args_is_help=True)
principal_app = typer.Typer(help="People and apps within agencies.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (shown once, stored hashed).", no_args_is_help=True)
app.add_typer(agency_app, name="agency")
app.add_typer(principal_app, name="principal")
app.add_typer(token_app, name="token")

out = Console()
err = Console(stderr=True)

CLI_PRINCIPAL = Principal(id="cli", agency_id="_local", name="local operator", role="admin")


class _State:
    settings: Settings | None = None
    hub: Hub | None = None


state = _State()


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
    logging.basicConfig(
        level=os.environ.get("BLOCKHUB_LOG_LEVEL", "ERROR").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def settings() -> Settings:
    return state.settings or Settings()


def hub() -> Hub:
    if state.hub is None:
        state.hub = Hub.open(settings())
    return state.hub


def cli_caller() -> Principal:
    """Who runs this command: the principal of ``BLOCKHUB_TOKEN`` when it is set, else
    the hub home's local operator (``cli``, an admin: masked like any admin)."""
    token = os.environ.get("BLOCKHUB_TOKEN", "").strip()
    return hub().store.authenticate(token) if token else CLI_PRINCIPAL


def acting(as_id: str | None, command: str) -> Principal:
    """The principal a command acts as: the caller, or ``--as`` where the caller may act
    for that principal (catalog.policy.may_act_for).  Every ``--as`` for someone else is
    appended to the audit log (``cli.act_as``), refused ones too."""
    caller = cli_caller()
    if as_id is None or as_id == caller.id:
        return caller
    h = hub()
    target = h.store.get_principal(as_id)
    local = os.environ.get("BLOCKHUB_TOKEN", "").strip() == ""
    allowed = may_act_for(caller, target, local_operator=local)
    h.audit.append(
        action="cli.act_as",
        principal=caller.id,
        agency=caller.agency_id,
        datasets={},
        dataset_agencies={},
        outcome="ok" if allowed else "denied",
        detail={
            "as": target.id,
            "as_agency": target.agency_id,
            "command": command,
            "os_user": getpass.getuser(),
        },
    )
    if not allowed:
        raise AccessDenied(
            f"{caller.id!r} may not act as {target.id!r} (--as: yourself, or a principal of "
            "your own agency if you are its steward or admin)",
            principal=caller.id,
            act_as=target.id,
        )
    return target


# -- agencies, principals, tokens ------------------------------------------------------


@agency_app.command("add")
def agency_add(agency_id: str, name: str) -> None:
    """Create or rename an agency."""
    a = hub().store.upsert_agency(agency_id, name, by=cli_caller())
    out.print(f"agency [bold]{a.id}[/] {a.name}")


@agency_app.command("list")
def agency_list() -> None:
    t = Table("id", "name")
    for a in hub().store.list_agencies():
        t.add_row(a.id, a.name)
    out.print(t)


@principal_app.command("add")
def principal_add(
    principal_id: str,
    agency: Annotated[str, typer.Option(help="agency id")],
    role: Annotated[str, typer.Option(help="admin, steward, operator or developer")],
    name: Annotated[str | None, typer.Option(help="display name")] = None,
) -> None:
    """Create a principal (a person or an app) in an agency."""
    try:
        p = hub().store.create_principal(
            principal_id, agency, name or principal_id, role, by=cli_caller()
        )
    except ValueError as e:
        raise InvalidRequest(str(e)) from None
    out.print(f"principal [bold]{p.id}[/] ({p.role}) in {p.agency_id}")


@principal_app.command("role")
def principal_role(
    principal_id: str,
    role: Annotated[str, typer.Argument(help="admin, steward, operator or developer")],
) -> None:
    """Change a principal's role (recorded in the audit log, before and after)."""
    p = hub().store.set_role(principal_id, role, by=cli_caller())
    out.print(f"principal [bold]{p.id}[/] is now {p.role}")


@token_app.command("issue")
def token_issue(
    principal_id: str,
    days: Annotated[int, typer.Option(help="days until it expires (0: never)")] = 90,
    label: Annotated[str, typer.Option(help="what the token is for")] = "",
) -> None:
    """Issue a token; it is printed once and stored only as a hash."""
    token = hub().store.issue_token(
        principal_id, label=label, ttl=timedelta(days=days) if days else None, by=cli_caller()
    )
    err.print("[dim]store this token now; it cannot be shown again[/]")
    print(token)


@token_app.command("revoke")
def token_revoke(token_id: str) -> None:
    """Revoke a token by its id (the part after ``bh_``, before the next ``_``)."""
    hub().store.revoke_token(token_id, by=cli_caller())
    out.print(f"token {token_id} revoked")


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
    ids = [d.id for d in h.store.list_datasets()] if all_ else list(datasets or [])
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
    from hub.blocks import Blocks
    from hub.blockview import print_block

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
    from hub.server import serve as serve_app

    logging.getLogger().setLevel(os.environ.get("BLOCKHUB_LOG_LEVEL", "INFO").upper())
    s = settings()
    h = hub()
    h.register_manifests()
    serve_app(h, host or s.host, port if port is not None else s.port)


@app.command()
def demo(
    tour: Annotated[bool, typer.Option("--tour", help="run the guided tour and exit")] = False,
    rows: Annotated[int, typer.Option(help="hotline tickets in the first load")] = 20_000,
    port: Annotated[
        int | None, typer.Option(help="port to serve on (default $BLOCKHUB_PORT or 8000)")
    ] = None,
) -> None:
    """Build the sample world of Guiyang, ingest it, and serve it (or tour it and exit)."""
    from hub.demo import run_demo

    s = settings()
    run_demo(s, tour=tour, rows=rows, port=port if port is not None else s.port, console=out)


_register_quality(app, hub, out, acting)
_register_sources(app, hub, out, cli_caller)
_register_db(app, settings, out)
audit_app = typer.Typer(
    help="The hash-chained audit log of exchanges and state changes.", no_args_is_help=True
)
app.add_typer(audit_app, name="audit")


def _read_anchor(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidRequest(f"{path}: not a readable anchor file ({e})", file=str(path)) from None


@audit_app.command("verify")
def audit_verify(
    anchor: Annotated[
        list[Path] | None,
        typer.Option(help="an exported head (audit anchor): the chain must still extend it"),
    ] = None,
) -> None:
    """Recompute the audit chain and the rows it binds; exit 1 naming the first problem."""
    anchors = [_read_anchor(p) for p in anchor or []]
    r = hub().audit.verify(anchors)
    if r.ok:
        more = f", extends {len(anchors)} anchor(s)" if anchors else ""
        out.print(f"audit log intact: {r.entries} entries{more}")
        return
    err.print(f"[red]audit log TAMPERED:[/] {r.problem} (checked {r.entries} entries)")
    raise typer.Exit(1)


@audit_app.command("anchor")
def audit_anchor(
    out_file: Annotated[
        Path | None, typer.Option("--out", help="write the anchor here (default: stdout)")
    ] = None,
) -> None:
    """Export the head of a verified chain, signed, to keep outside this hub
    (docs/operations.md, 'Anchoring the audit log')."""
    doc = json.dumps(hub().audit.anchor(), ensure_ascii=False, indent=2)
    if out_file is None:
        print(doc)
        return
    out_file.write_text(doc + "\n", encoding="utf-8")
    err.print(f"anchor written to {out_file}")


@audit_app.command("list")
def audit_list(
    limit: Annotated[int, typer.Option(help="entries, newest first")] = 20,
    dataset: Annotated[str | None, typer.Option(help="only entries touching it")] = None,
    action: Annotated[
        str | None, typer.Option(help="an action (query, order.close) or a family (order.*)")
    ] = None,
) -> None:
    """Show recent audit entries."""
    t = Table("seq", "at", "action", "principal", "datasets / order", "rows", "outcome")
    for e in hub().audit.entries(dataset=dataset, action=action, limit=limit):
        names = ",".join(f"{k}@{v}" if v else k for k, v in e.datasets.items())
        if not names and "order" in e.detail:
            names = f"order {e.detail['order']}"
        t.add_row(str(e.seq), e.at, e.action, e.principal, names, str(e.row_count), e.outcome)
    out.print(t)


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
