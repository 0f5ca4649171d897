"""The dependency direction holds, written down here and checked on the code's imports.

Floors, bottom up (each imports only floors below it and itself):

    catalog  <  eventlog  <  connectors, expectations  <  pipelines  <  hub

Inside catalog, the sub-packages (docs/architecture.md, "Ground floor"):

    catalog (errors, outbox, sqltext, vocabulary, db, runtime)   imports nothing of ours
    catalog.domain, catalog.audit                         → catalog
    catalog.identity                                      → catalog, audit
    catalog.datasets                                      → catalog, audit, identity
    catalog.access                                        → catalog, domain, datasets, identity
    catalog.lake                                          → catalog, datasets
    catalog.sources, catalog.ops                          → catalog, audit, datasets, identity

And nowhere a circle: no module imports itself through others, and no package does
(a package's own modules count as the package).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("catalog", "eventlog", "connectors", "expectations", "pipelines", "hub")

#: What each top-level package may import of ours.
FLOORS: dict[str, set[str]] = {
    "catalog": {"catalog"},
    "eventlog": {"catalog", "eventlog"},
    "connectors": {"catalog", "connectors"},
    "expectations": {"catalog", "expectations"},
    "pipelines": {"catalog", "eventlog", "connectors", "expectations", "pipelines"},
}

#: What each catalog sub-package may import of catalog ("catalog": its top-level modules).
CATALOG_ROOMS: dict[str, set[str]] = {
    "catalog": set(),
    "catalog.domain": {"catalog"},
    "catalog.audit": {"catalog"},
    "catalog.datasets": {"catalog", "catalog.audit", "catalog.identity"},
    "catalog.identity": {"catalog", "catalog.audit"},
    "catalog.access": {"catalog", "catalog.domain", "catalog.datasets", "catalog.identity"},
    "catalog.lake": {"catalog", "catalog.datasets"},
    "catalog.sources": {"catalog", "catalog.audit", "catalog.datasets", "catalog.identity"},
    "catalog.ops": {"catalog", "catalog.audit", "catalog.datasets", "catalog.identity"},
}

#: Package circles of the top floor that house-top (hub/ in wings) removes; each entry must
#: still be a real circle, so the list can only shrink.  Empty once the wings land.
KNOWN_HUB_CIRCLES: set[frozenset[str]] = set()


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


@cache
def _parsed() -> tuple[dict[str, set[str]], dict[str, Path]]:
    """Module → the project modules it imports (anywhere in it: function-level and
    ``TYPE_CHECKING`` imports are dependencies too)."""
    modules = _modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges[name] |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    if full in modules:
                        edges[name].add(full)
                    elif node.module in modules:
                        edges[name].add(node.module)
    return edges, modules


def import_graph() -> tuple[dict[str, set[str]], dict[str, Path]]:
    """A fresh copy of the parsed graph (tests may edit it)."""
    edges, modules = _parsed()
    return {m: set(t) for m, t in edges.items()}, modules


def circles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, todo = work[-1]
            step = next(todo, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(edges.get(step, ())))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def package_edges() -> dict[str, set[str]]:
    edges, modules = import_graph()

    def package(m: str) -> str:
        return m if modules[m].name == "__init__.py" else m.rpartition(".")[0]

    out: dict[str, set[str]] = {}
    for m, targets in edges.items():
        for t in targets:
            if package(m) != package(t):
                out.setdefault(package(m), set()).add(package(t))
    return out


def test_circles_are_found() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_through_others() -> None:
    edges, _ = import_graph()
    assert circles(edges) == []


def test_no_package_circles() -> None:
    edges = package_edges()
    for pair in KNOWN_HUB_CIRCLES:
        a, b = sorted(pair)
        assert b in edges.get(a, ()) and a in edges.get(b, ()), f"{a} ↔ {b} is gone: drop it"
        edges[a].discard(b)  # set aside until house-top's wings land
    assert circles(edges) == []


def test_floors_import_only_downwards() -> None:
    edges, _ = import_graph()
    bad = [
        f"{m} → {t}"
        for m, targets in edges.items()
        for t in targets
        if m.split(".")[0] in FLOORS and t.split(".")[0] not in FLOORS[m.split(".")[0]]
    ]
    assert bad == []


def test_catalog_rooms_follow_their_direction() -> None:
    packages = package_edges()
    bad = [
        f"{room} → {target}"
        for room, allowed in CATALOG_ROOMS.items()
        for target in packages.get(room, ())
        if target.startswith("catalog") and target not in allowed
    ]
    assert bad == []
    rooms = {p for p in packages if p.startswith("catalog")}
    assert rooms <= set(CATALOG_ROOMS), "a new catalog sub-package needs its direction here"


def _modules_after(imports: str) -> set[str]:
    code = f"import sys; {imports}; print('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return {m.split(".")[0] for m in out.split()}


def test_ground_floor_imports_neither_fastapi_nor_airflow() -> None:
    loaded = _modules_after(
        "import catalog.datasets.store, catalog.lake.tables, catalog.datasets.manifest, "
        "catalog.access.policy, eventlog.backend, eventlog.redislog, catalog.domain.channels, "
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
