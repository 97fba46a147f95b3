"""The core names no mask, no domain class and no control explainer: plugins and presets do.

Masks are a mapping whose names the dataset plugin chooses; the classes a selection rule
averages over are dataset metadata; the gain reference is found by role. This test reads
``bench/**/*.py`` (presets are TOML and may name plugins) and fails on any such name.
``random`` is also an *order* (``morf``/``lerf``/``random``): that vocabulary is the core's
own, so the check for the random *explainer* reads the code's string constants (not its
docstrings) and allows ``"random"`` only where it is an order.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SOURCES = sorted(p for p in BENCH.rglob("*.py") if "presets" not in p.parts)

#: mask names of the built-in datasets, and the study's class names (as classes are spelt)
MASK_WORDS = re.compile(r"lesion|lung", re.IGNORECASE)
CLASS_WORDS = re.compile(r"COVID|Opacity|Pneumonia")


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _identifiers(node: ast.AST) -> list[str]:
    names = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            names.append(sub.id)
        elif isinstance(sub, ast.Attribute):
            names.append(sub.attr)
    return names


def _order_context(node: ast.Constant, parents: dict[ast.AST, ast.AST]) -> bool:
    """``"random"`` as an order: an element of the order vocabulary (a literal that also holds
    ``morf`` and ``lerf``), or compared with something named ``*order*`` (or inside a function
    that takes an ``*order*`` argument)."""
    parent = parents.get(node)
    if isinstance(parent, (ast.Tuple, ast.List, ast.Set)):
        values = {e.value for e in parent.elts if isinstance(e, ast.Constant)}
        return {"morf", "lerf"} <= values
    if isinstance(parent, ast.Compare):
        others = [o for o in (parent.left, *parent.comparators) if o is not node]
        if any("order" in name.lower() for o in others for name in _identifiers(o)):
            return True
        scope = parent
        while scope in parents and not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
            scope = parents[scope]
        if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = scope.args
            return any("order" in a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs))
    return False


def random_explainer_references(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string constant that names ``random`` other than as an order."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in docs:
            continue
        if node.value == "random" and not _order_context(node, parents):
            found.append((node.lineno, node.value))
        elif node.value != "random" and re.search(r"""['"`]random['"`]""", node.value):
            found.append((node.lineno, node.value))
    return found


@pytest.mark.parametrize(
    "snippet, flagged",
    [
        ('ORDERS = ("morf", "lerf", "random")', False),
        ('def f(order_name):\n    return order_name != "random"', False),
        ('def f(order):\n    name = str(order)\n    return name == "random"', False),
        ('def f(x):\n    """Compare with the random explainer: "random"."""\n    return x', False),
        ('def collect(baseline="random"):\n    pass', True),
        ('SCHEMA = {"baseline": ((str,), "random")}', True),
        ('b = attrs.get("baseline", "random")', True),
        ('p.add_argument("--baseline", default="random")', True),
        ('def f(name):\n    return name == "random"', True),
        ("msg = \"gain over the 'random' explainer\"", True),
    ],
)
def test_the_random_check_tells_an_order_from_an_explainer(snippet, flagged):
    assert bool(random_explainer_references(snippet)) is flagged


def test_bench_names_no_mask():
    hits = [f"{p.relative_to(BENCH.parent)}:{i}: {line.strip()}"
            for p in SOURCES for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if MASK_WORDS.search(line)]
    assert not hits, "mask names belong to dataset plugins:\n" + "\n".join(hits)


def test_bench_names_no_domain_class():
    hits = [f"{p.relative_to(BENCH.parent)}:{i}: {line.strip()}"
            for p in SOURCES for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if CLASS_WORDS.search(line)]
    assert not hits, "class names belong to dataset plugins (metadata['positive_classes']):\n" + "\n".join(hits)


def test_bench_names_the_random_explainer_nowhere():
    hits = [f"{p.relative_to(BENCH.parent)}:{line}: {text!r}"
            for p in SOURCES for line, text in random_explainer_references(p.read_text(encoding="utf-8"))]
    assert not hits, "the gain reference is found by role, not by name:\n" + "\n".join(hits)


def test_the_checks_read_the_whole_core():
    names = {p.name for p in SOURCES}
    assert {"data.py", "leaderboard.py", "report.py", "loading.py", "cli.py", "regions.py"} <= names
