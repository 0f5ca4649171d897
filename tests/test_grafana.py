"""The example Grafana dashboard queries only metrics the hub exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastapi.testclient import TestClient

from hub.api.app import create_app
from hub.assembly.context import Hub
from hub.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docs" / "grafana" / "blockhub.json"
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def exported(tmp_path: Path) -> set[str]:
    """Every sample name /metrics can hold: each family of the exposition (``# TYPE``),
    with the suffixes of its type."""
    hub = Hub.open(Settings(home=tmp_path / "home", metrics_token="t" * 32))
    try:
        with TestClient(create_app(hub.settings, hub=hub)) as client:
            r = client.get("/metrics", headers={"Authorization": "Bearer " + "t" * 32})
    finally:
        hub.close()
    assert r.status_code == 200
    names = set()
    for line in r.text.splitlines():
        m = re.match(r"# TYPE (\S+) (\w+)", line)
        if m:
            family, kind = m.groups()
            family = family.removesuffix("_total")
            names.add(family)
            if kind == "counter":
                names.update({family + "_total", family + "_created"})
            elif kind == "histogram":
                names.update(family + s for s in ("_bucket", "_sum", "_count", "_created"))
    return names


def test_every_panel_queries_exported_metrics(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text("utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    used = {n for e in exprs for n in re.findall(r"\bblockhub_[a-z_]+", e)}
    names = exported(tmp_path)
    assert sorted(used - names) == []
    # Every family the hub exports is on the dashboard, so a new metric is shown too.
    families = {n for n in names if not n.endswith(SUFFIXES)}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
    assert sorted(f for f in families if f.startswith("blockhub_") and f not in shown) == []
    # Totals of the catalog are the same on every replica: never summed across them.
    for e in exprs:
        for name in ("ingest_runs", "ingest_rows", "quality_", "outbox_"):
            if f"blockhub_{name}" in e:
                assert not e.startswith("sum"), e
