"""``blockhub audit``: the hash-chained audit log — verify it, anchor its head, list it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from catalog.errors import InvalidRequest
from hub.cli.console import err, hub, out

audit_app = typer.Typer(
    help="The hash-chained audit log of exchanges and state changes.", no_args_is_help=True
)


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
