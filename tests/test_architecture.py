"""The import rules of ARCHITECTURE.md, read from the source so the picture and the code cannot drift apart.

Every `import` statement of src/unigen is parsed (module level and inside functions alike); a unigen module is
named by its dotted path and sits in a *unit*: `families.<name>` for a family, else its first package under
`unigen` (`train`, `nn`, ...) or its top-level module (`run`, `cli`, ...).
"""
from __future__ import annotations

import ast
import importlib
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "unigen"
GLUE = {"task", "presets", "network", "evaluate"}           # family modules that may use the rest of unigen
MATH_MAY_IMPORT = {"unigen.errors"}                          # besides torch, the standard library and its own folder
LOW_LEVEL = {"nn", "models"}                                 # parameters only: they import no family or machinery
MAX_FILE_LINES, MAX_FUNCTION_LINES = 500, 60


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    parts = module.split(".")[1:]
    if not parts:
        return "unigen"
    if parts[0] == "families" and len(parts) > 1:
        return f"families.{parts[1]}"
    return parts[0]


@cache
def sources() -> dict[str, tuple[Path, ast.Module]]:
    return {module_name(p): (p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(ROOT.rglob("*.py"))}


def imports(tree: ast.Module, module: str) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, relative ones resolved; `from a import b` counts as
    a.b when a.b is a module of unigen, else as a."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".")[: len(module.split(".")) - node.level + (module in packages())]
                base = ".".join(pkg + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                out.append((full if full in sources() else base, node.lineno))
    return out


@cache
def packages() -> frozenset[str]:
    return frozenset(module_name(p) for p in ROOT.rglob("__init__.py"))


def unigen_imports(module: str) -> list[tuple[str, int]]:
    return [(m, line) for m, line in imports(sources()[module][1], module) if m == "unigen" or m.startswith("unigen.")]


def family_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "families" else None


def declared_uses(family: str) -> tuple[str, ...]:
    return tuple(getattr(importlib.import_module(f"unigen.families.{family}"), "USES", ()))


def test_every_module_is_seen():
    assert "unigen.train.loop" in sources() and "unigen.families.continuous_diffusion.samplers" in sources()
    assert unit("unigen.families.discrete_diffusion.bd3") == "families.discrete_diffusion"
    assert unit("unigen.run") == "run" and unit("unigen.nn.attention") == "nn"


def test_family_math_imports_only_torch_and_its_own_folder():
    bad = []
    for module in sources():
        fam = family_of(module)
        if fam is None or module.split(".")[-1] in GLUE:
            continue
        own = f"unigen.families.{fam}"
        for m, line in unigen_imports(module):
            if not (m == own or m.startswith(own + ".") or m in MATH_MAY_IMPORT):
                bad.append(f"{module}:{line} imports {m}")
    assert not bad, "family math must import only torch, its own folder and unigen.errors:\n" + "\n".join(bad)


def test_nn_and_models_import_no_family_or_machinery():
    bad = [f"{module}:{line} imports {m}" for module in sources() if unit(module) in LOW_LEVEL
           for m, line in unigen_imports(module) if unit(m) not in LOW_LEVEL | {"errors"}]
    assert not bad, "\n".join(bad)


def test_families_import_each_other_only_as_declared():
    bad = []
    for module in sources():
        fam = family_of(module)
        for m, line in unigen_imports(module) if fam else ():
            other = family_of(m)
            if other and other != fam and other not in declared_uses(fam):
                bad.append(f"{module}:{line} imports family {other} (not in unigen.families.{fam}.USES)")
    assert not bad, "\n".join(bad)


def unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in sources():
        src = unit(module)
        for m, _ in unigen_imports(module):
            dst = unit(m)
            if dst != src and dst != "unigen":
                graph.setdefault(src, set()).add(dst)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state and (c := visit(v)):
                return c
        state[u] = 2
        stack.pop()
        return None

    for u in sorted(graph):
        if u not in state and (c := visit(u)):
            return c
    return None


def test_no_import_cycle_between_folders():
    cycle = find_cycle(unit_graph())
    assert cycle is None, "import cycle between units: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_imports_of_unigen_sit_at_module_level():
    """An import inside a function hides a dependency (and usually a cycle); third-party lazy imports are fine."""
    bad = []
    for module, (path, tree) in sources().items():
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n == "unigen" or n.startswith("unigen.") for n in names):
                    bad.append(f"{module}:{node.lineno}")
    assert not bad, "unigen imports inside functions:\n" + "\n".join(bad)


def test_files_and_functions_stay_readable():
    long_files = [f"{p.relative_to(SRC)}: {n}" for p, _ in sources().values()
                  if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES]
    long_functions = []
    for module, (path, tree) in sources().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{module}.{node.name}: {n} lines")
    assert not long_files, f"files over {MAX_FILE_LINES} lines: {long_files}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


@pytest.mark.parametrize("family", sorted(p.name for p in (ROOT / "families").iterdir()
                                          if (p / "__init__.py").exists()))
def test_every_family_is_a_task_and_presets(family):
    """A family folder holds one task.py with a Task, and one presets.py whose presets name a registered task."""
    from unigen.registry import PRESETS, TASKS
    from unigen.task import Task
    task_mod = importlib.import_module(f"unigen.families.{family}.task")
    presets_mod = importlib.import_module(f"unigen.families.{family}.presets")
    assert any(isinstance(v, Task) for v in vars(task_mod).values())
    assert presets_mod.PRESETS and all(PRESETS[name] is fn for name, fn in presets_mod.PRESETS.items())
    assert all(fn().task in TASKS for fn in presets_mod.PRESETS.values())


def test_the_rule_checker_sees_a_planted_violation(monkeypatch):
    """Plant a math module that imports the training loop: the math rule must name it."""
    fake = ast.parse("from unigen.train import fit\n")
    src = dict(sources())
    src["unigen.families.continuous_diffusion.planted"] = (Path("planted.py"), fake)
    monkeypatch.setitem(globals(), "sources", lambda: src)
    with pytest.raises(AssertionError, match="planted:1 imports unigen.train"):
        test_family_math_imports_only_torch_and_its_own_folder()
