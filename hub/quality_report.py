"""A readable page of one validation result: what was checked, what failed, where.

Our own page rather than GX Data Docs: Data Docs needs a GX file context and a site
build step, while the gate keeps GX-shaped results in the catalog; this renders them
(escaped, no scripts) and is served by the API at ``/v1/datasets/{id}/quality/report``.
"""

from __future__ import annotations

from html import escape
from typing import Any

from catalog.datasets.quality import QualityResult
from pipelines.freshness import FreshnessStatus

_STYLE = """
body{font-family:system-ui,"PingFang SC","Microsoft YaHei",sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;width:100%;margin:1rem 0}
th,td{border:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top;font-size:.9rem}
th{background:#f4f4f4}.ok{color:#1a7f37}.bad{color:#b42318;font-weight:600}
.pill{display:inline-block;padding:.1rem .6rem;border-radius:1rem;background:#eee}
code{font-size:.85rem}
"""


def _kwargs(kwargs: dict[str, Any]) -> str:
    parts = []
    for k, v in kwargs.items():
        if k in ("column", "batch_id"):
            continue
        text = ", ".join(map(str, v)) if isinstance(v, list) else str(v)
        if len(text) > 120:
            text = text[:117] + "…"
        parts.append(f"{escape(k)}=<code>{escape(text)}</code>")
    return "<br>".join(parts)


def render_report(
    dataset: str, title: str, result: QualityResult | None, fresh: FreshnessStatus | None
) -> str:
    head = (
        f"<!doctype html><html lang='zh'><head><meta charset='utf-8'>"
        f"<title>{escape(dataset)} · quality</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(title)} <small>({escape(dataset)})</small></h1>"
    )
    if fresh is not None and fresh.update_frequency:
        state = "<span class='bad'>stale</span>" if fresh.stale else "<span class='ok'>fresh</span>"
        last = fresh.last_published_at.isoformat() if fresh.last_published_at else "never"
        head += (
            f"<p>Freshness: {state} · expected every {escape(fresh.update_frequency)} · "
            f"last good publish {escape(last)}</p>"
        )
    if result is None:
        return head + "<p>No validation has run yet.</p></body></html>"
    cls = "ok" if result.success else "bad"
    head += (
        f"<p>Suite <b>{escape(result.suite)}</b> · run <code>{escape(result.run_id)}</code> · "
        f"{escape(result.validated_at.isoformat())}</p>"
        f"<p>Status <span class='pill {cls}'>{escape(result.status)}</span> · policy "
        f"<b>{escape(result.policy)}</b> · {result.rows_checked:,} rows checked · "
        f"{result.rows_quarantined:,} quarantined · {result.evaluated - result.failed}/"
        f"{result.evaluated} expectations met · {result.seconds:.2f} s</p>"
    )
    if result.quarantine_batch:
        head += f"<p>Quarantine batch <code>{escape(result.quarantine_batch)}</code></p>"
    rows = []
    for r in result.document.get("results", []):
        config = r["expectation_config"]
        res = r.get("result", {})
        ok = r["success"]
        sample = ", ".join(escape(str(v)) for v in res.get("partial_unexpected_list", [])[:10])
        rows.append(
            f"<tr><td class='{'ok' if ok else 'bad'}'>{'✓' if ok else '✗'}</td>"
            f"<td><code>{escape(config['type'])}</code></td>"
            f"<td>{escape(str(config['kwargs'].get('column', '')))}</td>"
            f"<td>{_kwargs(config['kwargs'])}</td>"
            f"<td>{escape(str(res.get('observed_value', '')))}</td>"
            f"<td>{res.get('unexpected_count', '')}</td><td>{sample}</td></tr>"
        )
    table = (
        "<table><tr><th></th><th>expectation</th><th>column</th><th>arguments</th>"
        "<th>observed</th><th>unexpected</th><th>sample (masked)</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    return head + table + "</body></html>"
