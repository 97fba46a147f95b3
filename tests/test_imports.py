"""bench's modules import each other without cycles, and no private name crosses a module.

The import graph is read from the source (every ``import`` and ``from ... import``, at
module level and inside functions: a function-level import is a dependency too, only a
later one; imports under ``if TYPE_CHECKING:`` never run and are left out). A name taken from a package (``from .pipeline import Stages``) is an edge to
the module its lazy table (``_LAZY``) says defines it. Executors are plugins
(``plugins/bench_executors``): the core imports none of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

#: Cycles still to remove. The test fails when one of these is gone, so the list only shrinks,
#: and on any other cycle. (The last one, leaderboard <-> report, went with the split of
#: bench/publish into one module per job: issue 11 item 7.)
KNOWN_CYCLES: list[set[str]] = []


def _modules() -> dict[str, Path]:
    out = {}
    for path in BENCH.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _lazy_table(path: Path, package: str) -> dict[str, str]:
    """name -> module of a package's ``_LAZY`` dict (``"module"`` or ``("bench.x", "attr")``)."""
    table: dict[str, str] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id == "_LAZY" and isinstance(node.value, ast.Dict):
            for k, v in zip(node.value.keys, node.value.values, strict=False):
                if isinstance(k, ast.Constant) and isinstance(v, ast.Constant):
                    table[k.value] = f"{package}.{v.value}"
                elif isinstance(k, ast.Constant) and isinstance(v, ast.Tuple):
                    table[k.value] = v.elts[0].value  # type: ignore[attr-defined]
    return table


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree`` outside ``if TYPE_CHECKING:`` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skipped]


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    lazy = {m: _lazy_table(p, m) for m, p in mods.items() if p.name == "__init__.py"}
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                for alias in node.names:
                    sub = f"{origin}.{alias.name}"
                    if sub in mods:
                        targets.append(sub)
                    elif alias.name in lazy.get(origin, {}):
                        targets.append(lazy[origin][alias.name])
                    else:
                        targets.append(origin)
            for target in targets:
                if target in mods and target != mod and target != "bench":
                    edges[mod].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_reader_sees_function_level_imports_and_lazy_names():
    edges = import_graph()
    assert "bench.pipeline.driver" in edges["bench.pipeline"] or not edges["bench.pipeline"]
    assert "bench.publish.leaderboard" in edges["bench.pipeline.driver"]  # a function-level import
    assert "bench.pipeline.executors" in edges["bench.testing.checks"]  # RunContext, a lazy name


def test_no_import_cycle_in_bench():
    found = cycles(import_graph())
    unknown = [sorted(c) for c in found if c not in KNOWN_CYCLES]
    assert not unknown, f"import cycles: {unknown}"
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not gone, f"{gone} is no longer a cycle: remove it from KNOWN_CYCLES"


def test_runner_and_executors_do_not_import_each_other():
    edges = import_graph()
    run_machinery = {m for m in edges if m == "bench.pipeline" or m.startswith("bench.pipeline")}
    for m in run_machinery:
        assert not any("executor" in t and not t.startswith("bench.pipeline") for t in edges[m]), m
    # the built-in executors are a plugin the core never imports
    for path in BENCH.rglob("*.py"):
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not any(n.startswith("bench_") for n in names), f"{path} imports a plugin: {names}"


def test_no_private_name_is_imported_across_modules():
    hits = []
    for path in [*BENCH.rglob("*.py"), *(ROOT / "plugins" / "bench_executors").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        hits.append(f"{path.relative_to(ROOT)}:{node.lineno}: {alias.name}")
    assert not hits, "private names imported across modules:\n" + "\n".join(hits)
