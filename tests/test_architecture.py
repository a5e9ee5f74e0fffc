"""The house (issue 21): the package's own imports, read with ast, form no circle — between modules or between rooms;
the layers only look down (core ← data ← jobs ← cli/gui); no folder holds more than 15 modules and no module more than
500 lines; every module says what it is for."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "diffusion_studio"
MAX_MODULES = 15
MAX_LINES = 500
# Which top-level rooms each room may import (the app launch in cli imports gui lazily: see below).
ALLOWED = {
    "core": {"core", "resources"},
    "data": {"data", "core", "resources"},
    "jobs": {"jobs", "core", "data", "resources"},
    "cli": {"cli", "jobs", "core", "data", "resources", "__init__"},
    "gui": {"gui", "jobs", "core", "data", "resources", "__init__"},
    "resources": set(),
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported module of this package, line, inside a function) for every import in the file, lazy ones too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found = []

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            lazy = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)] if child.level > 1 else base
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.split(".")[0] == "diffusion_studio":
                    for alias in child.names:
                        sub = f"{target}.{alias.name}"
                        found.append((sub if sub in MODULES else target, child.lineno, in_function))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "diffusion_studio":
                        found.append((alias.name, child.lineno, in_function))
            visit(child, lazy)

    visit(tree, False)
    return [(t, line, lazy) for t, line, lazy in found if t in MODULES and t != name]


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            strong(v)
    return out


def _room(module: str, depth: int) -> str:
    return ".".join(module.split(".")[:depth])


def test_the_cycle_finder_finds_a_planted_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_between_modules():
    edges = {m: {t for t, _, _ in imps} for m, imps in GRAPH.items()}
    circles = _cycles(edges)
    detail = ["; ".join(f"{a} → {b}" for a in c for b in sorted(edges[a] & set(c))) for c in circles]
    assert not circles, detail


@pytest.mark.parametrize("depth", [2, 3])
def test_no_import_circles_between_rooms(depth):
    """Rooms are the top-level folders (depth 2: core, data, jobs …) and their sub-packages (depth 3)."""
    edges: dict[str, set[str]] = {}
    for m, imps in GRAPH.items():
        for t, _, _ in imps:
            a, b = _room(m, depth), _room(t, depth)
            if a != b:
                edges.setdefault(a, set()).add(b)
    assert not _cycles(edges)


def test_layers_only_look_down():
    bad = []
    for m, imps in GRAPH.items():
        room = m.split(".")[1] if "." in m else "__init__"
        if room.endswith("__main__"):
            continue
        for t, line, lazy in imps:
            target = t.split(".")[1] if "." in t else "__init__"
            if target in ALLOWED.get(room, {room}) or target == room:
                continue
            if room == "cli" and target == "gui" and lazy and m == "diffusion_studio.cli":
                continue  # `diffusion-studio` with no command opens the app: Qt only then
            bad.append(f"{m}:{line} imports {t}")
    assert not bad, bad


CORE_FLOORS = ["errors", "limits", "nets", "runtime", "diffusion", "io", "train", "metrics"]  # docs/architecture.md


def test_cores_rooms_stand_in_floors():
    """Inside core/ a room imports only the rooms below it: errors ← nets ← runtime ← diffusion ← io ← train ← metrics."""
    bad = []
    for m, imps in GRAPH.items():
        parts = m.split(".")
        if len(parts) < 3 or parts[1] != "core":
            continue
        for t, line, _ in imps:
            tp = t.split(".")
            if len(tp) < 3 or tp[1] != "core" or tp[2] == parts[2]:
                continue
            if CORE_FLOORS.index(tp[2]) > CORE_FLOORS.index(parts[2]):
                bad.append(f"{m}:{line} imports {t} (a floor up)")
    assert not bad, bad


def test_no_crowded_folder_and_no_long_module():
    crowded = {str(d.relative_to(ROOT)): n for d in [PKG, *PKG.rglob("*")] if d.is_dir() and d.name != "__pycache__"
               if (n := sum(1 for f in d.glob("*.py") if f.name != "__init__.py")) > MAX_MODULES}
    assert not crowded, crowded
    long = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


def test_every_module_and_room_says_what_it_is_for():
    silent = [str(p.relative_to(ROOT)) for p in PKG.rglob("*.py")
              if not (ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) or "").strip()]
    assert not silent, silent


def test_the_manifest_checks_every_field_of_a_run_config():
    """The manifest's train table is explicit (the manifest sits below the trainer); it must name every field."""
    from diffusion_studio.core.io.manifest import TRAIN_FIELDS
    from diffusion_studio.core.train.config import TrainConfig

    missing = {f.name for f in dataclasses.fields(TrainConfig)} - set(TRAIN_FIELDS)
    assert not missing, missing
