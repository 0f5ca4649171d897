"""``blockhub quality``, ``blockhub quarantine …`` and ``blockhub freshness``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from catalog.access.policy import can_manage
from catalog.datasets.quality import QualityResult, QualityStore
from catalog.errors import AccessDenied
from catalog.identity.store import Principal
from hub.assembly.context import Hub
from hub.quality_report import render_report
from pipelines.freshness import FreshnessStatus, check_freshness, freshness
from pipelines.quarantine import discard, quarantine_rows, release


def _fresh_line(status: FreshnessStatus) -> str:
    if status.update_frequency is None:
        return "freshness: no update_frequency in the manifest"
    last = (
        status.last_published_at.strftime("%Y-%m-%d %H:%M:%S")
        if status.last_published_at
        else "never"
    )
    state = "[red]stale[/]" if status.stale else "[green]fresh[/]"
    return f"freshness: {state} (every {status.update_frequency}; last good publish {last})"


def _results_table(result: QualityResult) -> Table:
    t = Table("", "expectation", "unexpected", "observed", "sample (masked)")
    for r in result.document.get("results", []):
        config, res = r["expectation_config"], r.get("result", {})
        t.add_row(
            "[green]✓[/]" if r["success"] else "[red]✗[/]",
            config["meta"].get("blockhub_key", config["type"]).removeprefix("column_values_to_"),
            f"{res['unexpected_count']:,}" if "unexpected_count" in res else "",
            str(res.get("observed_value", "")),
            ", ".join(map(str, res.get("partial_unexpected_list", [])[:3])),
        )
    return t


def _manager(principal: Principal, agency: str) -> Principal:
    """The quarantine is the owning agency's stewards' (and admins') to handle."""
    if not can_manage(principal, agency):
        raise AccessDenied(
            f"only a steward of {agency!r} (or an admin) may handle its quarantine",
            principal=principal.id,
        )
    return principal


def register(
    app: typer.Typer,
    get_hub: Callable[[], Hub],
    out: Console,
    acting: Callable[[str | None, str], Principal],
) -> None:
    """Add the quality commands to the CLI (``acting`` resolves the caller and ``--as``)."""
    quarantine_app = typer.Typer(help="Quarantined rows: list, show, release, discard.")
    app.add_typer(quarantine_app, name="quarantine")

    def qstore() -> QualityStore:
        return get_hub().store.quality

    @app.command()
    def quality(
        dataset: str,
        run: Annotated[str | None, typer.Option(help="a given run instead of the latest")] = None,
        html: Annotated[Path | None, typer.Option(help="also write the report page here")] = None,
        history: Annotated[int, typer.Option(help="recent runs to list")] = 10,
    ) -> None:
        """Quality of a dataset: the latest validation, recent runs and freshness."""
        h = get_hub()
        record = h.store.get_dataset(dataset)
        fresh = freshness(record, h.store.latest_versions().get(dataset))
        out.print(
            f"[bold]{dataset}[/] suite {record.manifest.expectations or '-'} · "
            f"policy {record.manifest.quality.policy}"
        )
        out.print(_fresh_line(fresh))
        results = qstore().results(dataset, limit=max(history, 1))
        result = qstore().get_result(run) if run else (results[0] if results else None)
        if result is None:
            out.print("no validation has run yet")
        else:
            color = "green" if result.success else "red"
            out.print(
                f"run {result.run_id[:8]} [{color}]{result.status}[/]: "
                f"{result.rows_checked:,} rows, {result.rows_quarantined:,} quarantined, "
                f"{result.evaluated - result.failed}/{result.evaluated} expectations met"
            )
            out.print(_results_table(result))
            if len(results) > 1:
                t = Table("run", "validated", "status", "rows", "quarantined", "failed")
                for r in results:
                    t.add_row(
                        r.run_id[:8],
                        r.validated_at.strftime("%Y-%m-%d %H:%M:%S"),
                        r.status,
                        f"{r.rows_checked:,}",
                        f"{r.rows_quarantined:,}",
                        str(r.failed),
                    )
                out.print(t)
        if html is not None:
            html.write_text(render_report(dataset, record.title, result, fresh), encoding="utf-8")
            out.print(f"report written to {html}")

    @quarantine_app.command("list")
    def quarantine_list(
        dataset: str, status: Annotated[str | None, typer.Option(help="held, released, …")] = None
    ) -> None:
        """Quarantine batches of a dataset and the actions taken on them."""
        get_hub().store.get_dataset(dataset)
        t = Table("batch", "run", "created", "rows", "policy", "status", "failed")
        for b in qstore().batches(dataset, status=status):
            t.add_row(
                b.id,
                b.run_id[:8],
                b.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                f"{b.rows:,}",
                b.policy,
                b.status,
                ", ".join(b.failed),
            )
        out.print(t)
        actions = qstore().actions(dataset)
        if actions:
            a_t = Table(
                "when", "action", "by", "batch", "published", "discarded", "held", "version"
            )
            for a in actions:
                a_t.add_row(
                    a.at.strftime("%Y-%m-%d %H:%M:%S"),
                    a.action,
                    a.principal,
                    a.batch_id[:8],
                    f"{a.rows_published:,}",
                    f"{a.rows_discarded:,}",
                    f"{a.rows_held:,}",
                    str(a.version or ""),
                )
            out.print(a_t)

    @quarantine_app.command("show")
    def quarantine_show(
        dataset: str,
        batch: str,
        limit: Annotated[int, typer.Option()] = 20,
        as_: Annotated[str | None, typer.Option("--as", help="show as this principal")] = None,
    ) -> None:
        """Rows of a batch: key, failed expectations, values (personal data masked)."""
        record = get_hub().store.get_dataset(dataset)
        b = qstore().get_batch(batch, dataset)
        viewer = acting(as_, "quarantine show")
        rows = quarantine_rows(b, get_hub().exchange.access(viewer, dataset), limit=limit)
        keys = record.manifest.primary_key or ["_bh_row"]
        t = Table(*keys, "failed expectations", "values")
        for r in rows:
            rest = {k: v for k, v in r.items() if k not in keys and not k.startswith("_bh_")}
            checked = {k: rest[k] for k in rest if any(k in f for f in r["_bh_failed"])}
            t.add_row(
                *(str(r[k]) for k in keys),
                "\n".join(r["_bh_failed"]),
                ", ".join(f"{k}={v}" for k, v in checked.items()),
            )
        out.print(t)
        out.print(f"[dim]{b.rows:,} rows in batch {b.id} ({b.status})[/]")

    @quarantine_app.command("release")
    def quarantine_release(
        dataset: str,
        batch: str,
        force: Annotated[bool, typer.Option(help="publish without re-validating")] = False,
        note: Annotated[str | None, typer.Option(help="why")] = None,
        as_: Annotated[str | None, typer.Option("--as", help="act as this principal")] = None,
    ) -> None:
        """Re-validate a held batch with the current suite; publish the rows that pass."""
        h = get_hub()
        record = h.store.get_dataset(dataset)
        actor = _manager(acting(as_, "quarantine release"), record.agency_id)
        o = release(
            batch,
            record.manifest,
            store=h.store,
            lake=h.lake,
            publisher=h.bus.publish,
            principal=actor.id,
            suites_dir=h.settings.suites,
            force=force,
            note=note,
        )
        text = f"released {o.rows_published:,} row(s)"
        if o.version:
            text += f" → version {o.version}"
        if o.new_batch:
            text += f"; {o.rows_held:,} still failing, held in batch {o.new_batch}"
        out.print(text)

    @quarantine_app.command("discard")
    def quarantine_discard(
        dataset: str,
        batch: str,
        note: Annotated[str | None, typer.Option(help="why")] = None,
        as_: Annotated[str | None, typer.Option("--as", help="act as this principal")] = None,
    ) -> None:
        """Discard a held batch for good (recorded; its file is deleted)."""
        h = get_hub()
        record = h.store.get_dataset(dataset)
        actor = _manager(acting(as_, "quarantine discard"), record.agency_id)
        a = discard(batch, record.manifest, store=h.store, principal=actor.id, note=note)
        out.print(f"discarded {a.rows_discarded:,} row(s) of batch {a.batch_id}")

    @app.command("freshness")
    def freshness_cmd() -> None:
        """Check every dataset's freshness now (announces datasets that just went stale)."""
        h = get_hub()
        t = Table("dataset", "every", "last good publish", "state")
        for s in check_freshness(h.store, h.bus.publish):
            last = (
                s.last_published_at.strftime("%Y-%m-%d %H:%M:%S")
                if s.last_published_at
                else "never"
            )
            t.add_row(
                s.dataset_id,
                s.update_frequency or "",
                last,
                "[red]stale[/]" if s.stale else "[green]fresh[/]",
            )
        out.print(t)
