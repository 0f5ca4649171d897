"""The dependency direction holds: catalog and connectors never pull in the service or Airflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules_after(imports: str) -> set[str]:
    code = f"import sys; {imports}; print('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return {m.split(".")[0] for m in out.split()}


def test_catalog_and_connectors_import_neither_fastapi_nor_airflow() -> None:
    loaded = _modules_after(
        "import catalog.store, catalog.lake, catalog.manifest, catalog.eventlog, catalog.policy, "
        "connectors.base, connectors.postgres, connectors.files"
    )
    assert "fastapi" not in loaded
    assert "starlette" not in loaded
    assert "airflow" not in loaded
    assert "hub" not in loaded and "pipelines" not in loaded


def test_pipelines_do_not_reach_up_into_hub() -> None:
    loaded = _modules_after("import pipelines.ingest, pipelines.steps, pipelines.config")
    assert "hub" not in loaded
    assert "fastapi" not in loaded
    assert "airflow" not in loaded


def test_source_imports_follow_the_layers() -> None:
    allowed = {
        "catalog": {"catalog"},
        "connectors": {"catalog", "connectors"},
        "expectations": {"catalog", "expectations"},
        "pipelines": {"catalog", "connectors", "expectations", "pipelines"},
    }
    ours = {"catalog", "connectors", "expectations", "pipelines", "hub"}
    bad = []
    for package, ok in allowed.items():
        for path in (ROOT / package).rglob("*.py"):
            for line in path.read_text(encoding="utf-8").splitlines():
                words = line.split()
                if len(words) >= 2 and words[0] in ("import", "from"):
                    top = words[1].split(".")[0]
                    if top in ours and top not in ok:
                        bad.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert bad == []
