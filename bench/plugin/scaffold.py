"""``bench new-plugin``: render a ready-to-install plugin package from bench/_template."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from string import Template

from bench.errors import BenchError

KIND_INFO = {
    "explainer": ("ExplainerSpec", "explainers", "Gradient x input saliency (template)"),
    "perturbation": ("PerturbationSpec", "perturbations", "Constant fill inside the mask (template)"),
    "model": ("ModelSpec", "models", "A small Keras CNN (template)"),
    "dataset": ("DatasetSpec", "datasets", "A tiny random two-class dataset (template)"),
    "metric": ("MetricSpec", "metrics", "Mean drop of the MoRF curve over its first steps (template)"),
    "executor": ("ExecutorSpec", "executors", "Computes the grid stage by stage, then writes the records (template)"),
}

#: What a kind's spec declares beyond name, factory and description (rendered into ``__init__.py``):
#: (extra names imported from bench, extra keyword arguments).
SPEC_EXTRA: dict[str, tuple[str, str]] = {
    "metric": (
        "MetricInputs, ",
        "\n            # what compute(data) gets: the MoRF curves of the cell's perturbation"
        '\n            inputs=MetricInputs(curves=("morf",)),'
        "\n            higher_is_better=True,",
    ),
}


def _template(name: str) -> str:
    return (resources.files("bench") / "_template" / name).read_text(encoding="utf-8")


def render_plugin(name: str, *, kind: str, directory: Path = Path(".")) -> Path:
    """Write ``<directory>/bench-<name>/`` and return that folder."""
    if kind not in KIND_INFO:
        raise BenchError(f"--kind must be one of {', '.join(KIND_INFO)}, got {kind!r}")
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name) or "__" in name:
        raise BenchError(
            f"plugin name {name!r} must be lower case letters, digits, '-' or '_', starting with a letter, without '__'"
        )
    slug = name.replace("-", "_")
    spec, hook, description = KIND_INFO[kind]
    values = {
        "name": name,
        "kind": kind,
        "dist": f"bench-{name}",
        "package": f"bench_{slug}",
        "cls": "".join(part.capitalize() for part in re.split(r"[-_]", name)) + kind.capitalize(),
        "spec": spec,
        "hook": hook,
        "description": description,
        "spec_imports": f"{SPEC_EXTRA.get(kind, ('', ''))[0]}{spec}, ",
        "spec_extra": SPEC_EXTRA.get(kind, ("", ""))[1],
    }
    root = Path(directory) / values["dist"]
    if root.exists():
        raise BenchError(f"{str(root)!r} already exists: choose another name or --dir")
    files = {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        f"{values['package']}/__init__.py": "__init__.py.tmpl",
        f"{values['package']}/component.py": f"component_{kind}.py.tmpl",
        f"tests/test_{slug}.py": "test_plugin.py.tmpl",
    }
    for rel, tmpl in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(Template(_template(tmpl)).substitute(values), encoding="utf-8")
    return root
