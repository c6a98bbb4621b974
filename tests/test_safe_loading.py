"""Safety net: every checkpoint is loaded with ``weights_only=True`` (issue 10, item 10).

Checked on the syntax tree of every shipped module, so a new ``torch.load`` anywhere in
the core, the CLI, the plugins or the benchmarks fails here unless it passes
``weights_only=True`` literally; ``pickle`` loading is refused outright.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for folder in ("dnas_core", "cli", "plugins", "benchmarks")
                 for p in (ROOT / folder).rglob("*.py"))


def _unsafe_loads(tree: ast.AST) -> list[int]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        if name in ("pickle.load", "pickle.loads"):
            found.append(node.lineno)
        if name == "torch.load":
            safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                       and k.value.value is True for k in node.keywords)
            if not safe:
                found.append(node.lineno)
    return found


def test_the_check_catches_an_unsafe_load():
    assert _unsafe_loads(ast.parse("import torch\ntorch.load(p)\n")) == [2]
    assert _unsafe_loads(ast.parse("torch.load(p, weights_only=False)")) == [1]
    assert _unsafe_loads(ast.parse("pickle.loads(b)")) == [1]
    assert _unsafe_loads(ast.parse("torch.load(p, weights_only=True)")) == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_checkpoint_is_loaded_unsafely(path):
    assert SOURCES, "no sources found"
    lines = _unsafe_loads(ast.parse(path.read_text(), filename=str(path)))
    assert not lines, f"{path.relative_to(ROOT)}: unsafe load at lines {lines}"
