"""The house's shape: no import circle (lazy and type-only imports included), a ground floor of
contracts that imports nothing above it, and no refactor that moves a number."""

from __future__ import annotations

import ast
import json
import math
from collections import defaultdict
from pathlib import Path

import benchkit

ROOT = Path(benchkit.__file__).parent
#: The ground floor: what these import of benchkit must itself be on it.
GROUND = (
    "benchkit.contracts",
    "benchkit.errors",
    "benchkit.files",
    "benchkit.hashing",
    "benchkit.spec",
)


def _modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module → the package's modules it imports anywhere in its text (functions and
    ``TYPE_CHECKING`` blocks too); ``from a import b`` names ``a.b`` when that is a module."""
    mods = _modules(root)
    pkg = root.name

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = defaultdict(set)
    for mod, path in mods.items():
        here = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                target = resolve(name) if name.split(".")[0] == pkg else None
                if target and target != mod:
                    graph[mod].add(target)
        graph.setdefault(mod, set())
    return dict(graph)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def _on(mod: str, floor: tuple[str, ...]) -> bool:
    return any(mod == f or mod.startswith(f + ".") for f in floor)


def test_the_package_has_no_import_circle():
    assert circles(import_graph()) == []


def test_the_circle_finder_sees_a_lazy_circle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import c\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
    )
    assert circles(import_graph(pkg)) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_the_ground_floor_imports_nothing_above_it():
    graph = import_graph()
    upward = {
        (mod, target)
        for mod, targets in graph.items()
        if _on(mod, GROUND)
        for target in targets
        if not _on(target, GROUND)
    }
    assert upward == set()


def test_nothing_inside_imports_the_package_root():
    """The root is the users' door (``benchkit.load``); a module inside that imports it would put
    the whole model package under every plugin."""
    graph = import_graph()
    assert sorted(m for m, targets in graph.items() if "benchkit" in targets) == []


def test_data_does_not_reach_up():
    graph = import_graph()
    up = (
        "benchkit.api",
        "benchkit.train",
        "benchkit.evaluate",
        "benchkit.method",
        "benchkit.experiments",
        "benchkit.executors",
        "benchkit.cli",
        "benchkit.plugins",
    )
    assert {
        (m, t) for m, ts in graph.items() if m.startswith("benchkit.data") for t in ts if _on(t, up)
    } == set()


def test_pinned_runs_keep_their_keys_and_bitwise_metrics():
    """A fixed set of runs (``tests/pins.py``) gives the keys it gave before the refactor, and on
    the kind of machine that wrote them, bitwise the same metrics."""
    import pins

    pinned = json.loads(pins.PINS.read_text())
    now = pins.pinned_runs()
    assert {name: run["key"] for name, run in now.items()} == {
        name: run["key"] for name, run in pinned["runs"].items()
    }
    if pins.machine() == pinned["machine"]:
        assert now == pinned["runs"]
    else:  # other kernels round differently: the same metrics, finite, and no bitwise claim
        for name, run in now.items():
            assert run["metrics"].keys() == pinned["runs"][name]["metrics"].keys()
            assert all(math.isfinite(float.fromhex(v)) for v in run["metrics"].values())
