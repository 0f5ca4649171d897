"""Block answers as readable terminal tables (``blockhub block``, the demo tour)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _figure_text(fig: dict[str, Any], limit: int = 4) -> str:
    title = fig.get("title") or fig["name"]
    if fig.get("by"):
        values = [v for v in fig.get("values", []) if v["value"] not in (None, 0)]
        values.sort(key=lambda v: v["value"] if isinstance(v["value"], int | float) else 0)
        values.reverse()
        shown = ", ".join(f"{v['key']} {_value(v['value'])}" for v in values[:limit])
        more = f" … (+{len(values) - limit})" if len(values) > limit else ""
        return f"{title}: {shown or '-'}{more}"
    return f"{title}: {_value(fig.get('value'))}"


def _value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)  # years stay 2024, not 2,024
    if isinstance(v, float):
        return f"{v:,.1f}"
    return str(v)


def block_title(answer: dict[str, Any]) -> str:
    block = answer["block"]
    if block["kind"] == "region":
        return f"{block['code']} {block.get('full_name', block['name'])} ({block['level']})"
    where = block.get("registered_in")
    suffix = f" · 登记机关 {where['code']} {where['name']}" if where else ""
    return f"enterprise {block['code']}{suffix}"


def summary_table(answer: dict[str, Any]) -> Table:
    t = Table("dataset", "rows", "latest", "figures")
    for d in answer["datasets"]:
        label = (
            f"[bold]{d['dataset']}[/] v{d.get('version', '?')}\n"
            f"[dim]{d['title']}\n{d['agency']} · {d['sharing']}[/]"
        )
        if "error" in d:
            t.add_row(label, "", "", f"[red]{d['error']['message']}[/]")
            continue
        figures = "\n".join(_figure_text(f) for f in d.get("figures", []))
        latest = str(d.get("latest") or "-")[:19].replace("T", " ")
        t.add_row(label, f"{d.get('rows', 0):,}", latest, figures)
    return t


def children_table(answer: dict[str, Any]) -> Table:
    names = [d["dataset"] for d in answer["datasets"] if "children" in d]
    t = Table("child", "name", *names)
    per = {
        d["dataset"]: {c["code"]: c["rows"] for c in d["children"]}
        for d in answer["datasets"]
        if "children" in d
    }
    for child in answer.get("children", []):
        t.add_row(
            child["code"],
            child["name"],
            *(f"{per[n].get(child['code'], 0):,}" for n in names),
        )
    return t


def print_block(console: Console, answer: dict[str, Any]) -> None:
    console.print(f"[bold]{block_title(answer)}[/]")
    console.print(summary_table(answer))
    if answer.get("children"):
        console.print(children_table(answer))
    versions = ", ".join(f"{k} v{v}" for k, v in answer["versions"].items()) or "none"
    console.print(f"[dim]versions used: {versions} · {answer['query_ms']} ms[/]")
