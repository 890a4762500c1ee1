"""The library's modules import each other without a cycle (a cycle ties two rooms into one)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "include"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every copyhunt module this file imports, at the top or inside a function alike."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            # "from copyhunt import hunt" names the module copyhunt.hunt; "from copyhunt.hunt import x" names copyhunt.hunt.
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != "copyhunt":
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in (PACKAGE_ROOT / "copyhunt").rglob("*.py") if "migrations" not in p.parts}
    known = set(files)
    return {name: imported_modules(path, known) - {name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            # A package's __init__ importing its own submodules is the package's face, not a cycle.
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_copyhunt_has_no_import_cycle():
    graph = import_graph()
    assert "copyhunt.stages.registry_snapshot" in graph and "copyhunt.references" in graph["copyhunt.stages.registry_snapshot"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# Modules every room may lean on: the settings, the lake and the blob store are the house's floor.
SHARED_FOUNDATIONS = {"copyhunt.config", "copyhunt.lake", "copyhunt.blobs"}


def hubs(graph: dict[str, set[str]], allowed: set[str] = SHARED_FOUNDATIONS) -> dict[str, int]:
    """Module -> its importers, for each module outside ``allowed`` that more than half of the
    other modules import (a hub: a change there reaches most of the house)."""
    importers = {name: sum(1 for other, deps in graph.items() if other != name and name in deps) for name in graph}
    half = (len(graph) - 1) / 2
    return {name: count for name, count in importers.items() if count > half and name not in allowed}


def test_the_hub_finder_sees_a_hub():
    spokes = {f"m{i}": {"hub", "copyhunt.config"} for i in range(4)}
    assert hubs({**spokes, "hub": set(), "copyhunt.config": set()}) == {"hub": 4}
    # Half exactly is not more than half; the foundations may be imported by everyone.
    assert hubs({"a": {"hub"}, "b": {"hub"}, "c": set(), "d": set(), "hub": set()}) == {}


def test_no_module_is_imported_by_more_than_half_the_others():
    graph = import_graph()
    found = hubs(graph)
    assert not found, f"hub modules (importers of {len(graph) - 1} others): {found}"


# Runs in a fresh interpreter: imports every module of the library and reports what changed.
_IMPORT_EVERYTHING = r"""
import json, logging, multiprocessing, os, sys, threading

def children():
    me = str(os.getpid())
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[1] == me:
                    out.append(pid)
        except OSError:
            pass
    return out

def handlers():
    loggers = [logging.getLogger()] + [l for l in logging.root.manager.loggerDict.values() if isinstance(l, logging.Logger)]
    return sorted(f"{l.name}:{type(h).__name__}" for l in loggers for h in l.handlers)

def state():
    return {"environ": dict(os.environ), "cwd": os.getcwd(), "handlers": handlers(), "root_level": logging.getLogger().level,
            # Python threads only: importing the numba kernels (copyhunt.kernels, via copyhunt.fingerprint)
            # leaves one native thread of numba's own; a Python thread or a process would be ours.
            "threads": sorted(t.name for t in threading.enumerate()),
            "children": children() + [p.name for p in multiprocessing.active_children()]}

# The third-party libraries first: what they do when imported is theirs, not the library's.
import importlib
for name in sys.argv[2].split(","):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
before = state()
for name in sys.argv[1].split(","):
    importlib.import_module(name)
after = state()
print(json.dumps({k: [before[k], after[k]] for k in before if before[k] != after[k]}, default=str))
"""

THIRD_PARTY = ["numpy", "pandas", "pyarrow", "pyarrow.parquet", "PIL", "cv2", "numba", "scipy", "sqlalchemy", "fastapi", "starlette",
               "pydantic", "yaml", "typer", "rich", "scrapy", "twisted", "aiohttp", "pyspark", "airflow", "airflow.sdk", "jinja2", "httpx", "requests", "urllib3"]


def test_importing_any_module_only_defines_things():
    import json
    import os
    import subprocess
    import sys

    modules = sorted(import_graph())
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    proc = subprocess.run([sys.executable, "-c", _IMPORT_EVERYTHING, ",".join(modules), ",".join(THIRD_PARTY)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=PACKAGE_ROOT.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    changed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert changed == {}, f"importing the library changed: {changed}"


def generated_code_calls(path: Path) -> list[str]:
    """Calls of exec, eval or the builtin compile in a file: source made at run time, which nobody
    can read or step through (``re.compile`` and other methods named compile are not these)."""
    tree = ast.parse(path.read_text(), str(path))
    return [f"{path.name}:{node.lineno} {node.func.id}()" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("exec", "eval", "compile")]


def test_the_generated_code_finder_sees_exec(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("import re\nre.compile('x')\nexec(compile('y = 1', 'm', 'exec'), globals())\n")
    assert generated_code_calls(sample) == ["m.py:3 exec()", "m.py:3 compile()"]


def test_the_library_runs_no_generated_code():
    found = [call for p in sorted((PACKAGE_ROOT / "copyhunt").rglob("*.py")) for call in generated_code_calls(p)]
    assert not found, found


# Left for the bench suites' owner: bench/edits.py (held-out) and bench/suite.py (tuning) each have
# their own Generated and Pool.
KNOWN_SHARED_CLASS_NAMES = {"Generated", "Pool"}


def test_class_names_are_unique_across_the_library():
    where: dict[str, list[str]] = {}
    for path in sorted((PACKAGE_ROOT / "copyhunt").rglob("*.py")):
        if "migrations" in path.parts:
            continue
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.ClassDef):
                where.setdefault(node.name, []).append(module_name(path))
    shared = {name: modules for name, modules in where.items() if len(modules) > 1 and name not in KNOWN_SHARED_CLASS_NAMES}
    assert not shared, f"one name, several classes: {shared}"
