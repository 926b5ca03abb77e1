"""The family's third-party imports: its math imports torch and the standard library only, except noise.py, which
imports torchsde for the Brownian tree (ARCHITECTURE.md, rule 1). tests/test_architecture.py checks the unigen
imports; this checks the rest for this family."""
import ast
import sys
from pathlib import Path

FAMILY = Path(__file__).resolve().parents[2] / "src" / "unigen" / "families" / "continuous_diffusion"
GLUE = {"task", "presets", "network", "evaluate"}
EXTRA = {"noise": {"torchsde"}}                  # module -> third-party packages it may import besides torch


def _top_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add((node.module or "").split(".")[0])
    return names


def test_family_math_imports_only_torch_the_standard_library_and_declared_extras():
    bad = []
    for path in sorted(FAMILY.glob("*.py")):
        if path.stem in GLUE:
            continue
        allowed = {"torch", "unigen", "__future__"} | EXTRA.get(path.stem, set())
        extra = {m for m in _top_level_imports(path) if m not in allowed and m not in sys.stdlib_module_names}
        bad += [f"{path.name} imports {m}" for m in sorted(extra)]
    assert not bad, bad
