"""The top floor's direction holds: routes lean on the wings, the wings never on routes.

``hub/`` is in wings (docs/architecture.md, docs/decisions.md D47).  Each may import
only what is written down here — what it imports is read from its source (every ``import``,
module-level or in a function, except those under ``if TYPE_CHECKING:``), so a new arrow
that points the wrong way fails this test before it becomes a habit.

- ``exchange`` (SQL checked and run in rooms, encoders, rows, blocks) leans on nothing else
  of hub but the settings;
- ``live`` (bus, channels, feeds, alerts, dispatch, presence, ops) neither: of the
  exchange it knows only the protocol in ``hub.live.host``, which the assembly fills;
- ``assembly`` (``hub.assembly.context.Hub``) builds the wings; ``api`` (routes: parse, call,
  answer; the websocket; the server) runs them; ``cli`` and ``demo`` are entry points on
  top; the demo does not use the CLI, and no wing imports the assembly, the API or an entry
  point.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HUB = ROOT / "hub"

# part of hub → the parts of hub it may import (its own part is always allowed)
ALLOWED: dict[str, set[str]] = {
    "settings": set(),
    "client": set(),
    "quality_report": set(),
    # metrics, readiness, logs, request ids: a leaf every wing may report through
    "observability": set(),
    "exchange": {"settings", "observability"},
    "live": {"settings", "observability"},
    "assembly": {"exchange", "live", "settings", "observability"},
    "api": {"exchange", "live", "assembly", "settings", "quality_report", "observability"},
    "demo": {"exchange", "live", "assembly", "api", "settings", "client", "observability"},
    "cli": {
        "exchange",
        "live",
        "assembly",
        "api",
        "settings",
        "quality_report",
        "demo",
        "observability",
    },
}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                skip.update(id(n) for n in ast.walk(sub))
    return skip


def _imports(path: Path) -> set[str]:
    """The hub modules ``path`` imports (a ``from hub.x import y`` counts ``hub.x.y`` when
    that is a module, else ``hub.x``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "hub"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "hub":
                continue
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


MODULES = {_module(p) for p in HUB.rglob("*.py")}
GRAPH = {_module(p): _imports(p) for p in HUB.rglob("*.py")}


def test_every_part_of_hub_has_a_written_direction() -> None:
    parts = {_part(m) for m in MODULES} - {""}
    assert parts <= set(ALLOWED), f"parts of hub with no rule here: {parts - set(ALLOWED)}"


def test_wings_import_only_what_their_direction_allows() -> None:
    bad = []
    for module, targets in sorted(GRAPH.items()):
        part = _part(module)
        for target in sorted(targets):
            other = _part(target)
            if other and other != part and other not in ALLOWED.get(part, set()):
                bad.append(f"{module} imports {target} ({part} ↛ {other})")
    assert bad == []


def test_no_import_circles_in_hub() -> None:
    """No module of hub reaches itself through its imports (a package's ``__init__`` counts
    as the package)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for module, targets in GRAPH.items():
        edges[module] |= {t for t in targets if t in MODULES and t != module}
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])
    assert circles == []
