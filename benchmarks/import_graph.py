"""The package's import graph: circles, floors, and what the command line costs to start.

Every ``import`` of a package module counts (top level, inside functions and under
``TYPE_CHECKING`` alike): a circle is a circle wherever its edges sit. A module's floor is the
length of the longest import chain below it inside the package (0: imports nothing of ours).

    python benchmarks/import_graph.py [--package ronas_optuna] [--repeat 5]
"""

from __future__ import annotations

import argparse
import ast
import statistics
import subprocess
import sys
import tempfile
import time
from functools import cache
from pathlib import Path


def module_name(root: Path, file: Path) -> str:
    parts = list(file.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path) -> dict[str, set[str]]:
    """``module -> package modules it imports`` for every module under ``root``."""
    files = {module_name(root, f): f for f in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, file in files.items():
        pkg = mod if file.name == "__init__.py" else mod.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                if t in files and t != mod:
                    found.add(t)
                    break
        graph[mod] = found
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    """Longest import chain below each module (modules of a circle are cut at the circle)."""

    @cache
    def floor(v: str, seen: frozenset[str] = frozenset()) -> int:
        below = [floor(w, seen | {v}) for w in graph[v] if w not in seen and w != v]
        return 1 + max(below) if below else 0

    return {v: floor(v) for v in graph}


def startup_seconds(args: list[str], repeat: int) -> float:
    """Median wall time of ``python -m ronas_optuna ARGS`` over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ronas_optuna", *args], capture_output=True, check=False)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", default="ronas_optuna")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    root = Path(__file__).resolve().parents[1] / a.package
    graph = imports(root)
    found = circles(graph)
    fl = floors(graph)
    print(f"modules: {len(graph)}, import edges: {sum(map(len, graph.values()))}")
    print(f"circles: {len(found)}" + "".join(f"\n  {' <-> '.join(c)}" for c in found))
    print(f"floors: {max(fl.values())} (the longest chain of package imports)")
    for mod in sorted(fl, key=lambda m: (-fl[m], m))[:5]:
        print(f"  {mod}: {fl[mod]}")
    helpers = sorted(m for m, deps in graph.items() if f"{a.package}.supernet" in deps)
    print(f"modules importing {a.package}.supernet: {len(helpers)} ({', '.join(helpers)})")
    print(f"ronas --help: {startup_seconds(['--help'], a.repeat):.2f} s (median of {a.repeat})")
    bad = ["search", "/no/such/folder", "--storage", "sqlite:///:memory:"]
    print(f"one-line usage error: {startup_seconds(bad, a.repeat):.2f} s (median of {a.repeat})")
    with (
        tempfile.TemporaryDirectory() as data
    ):  # a dataset folder that exists, a storage folder that does not
        wrong = ["search", data, "--storage", "sqlite:////no/such/folder/s.db"]
        print(
            f"a storage in a missing folder: {startup_seconds(wrong, a.repeat):.2f} s (median of {a.repeat})"
        )
        export = ["export", "--storage", f"sqlite:///{data}/none.db", "--study", "s", "-o", f"{data}/m.pt"]
        seconds = startup_seconds(export, a.repeat)
        print(f"export from a missing database: {seconds:.2f} s (median of {a.repeat})")


if __name__ == "__main__":
    main()
