"""The family's math imports torch, the standard library and unigen only, except matcher.py, which imports scipy's
`linear_sum_assignment` (ARCHITECTURE.md, rule 1); tests/test_architecture.py checks the unigen imports."""
import ast
import sys
from pathlib import Path

FOLDER = Path(__file__).resolve().parents[2] / "src" / "unigen" / "families" / "detection"
ALLOWED = {"torch", "unigen", "__future__", *sys.stdlib_module_names}
EXTRA = {"matcher": {"scipy"}, "task": {"*"}, "presets": {"*"}, "network": {"*"}, "evaluate": {"*"}}


def test_math_modules_import_nothing_else():
    bad = []
    for path in sorted(FOLDER.glob("*.py")):
        extra = EXTRA.get(path.stem, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            bad += [f"{path.name}: {n}" for n in names if n.split(".")[0] not in ALLOWED | extra and "*" not in extra]
    assert not bad, bad
