"""Helpers that install fake plugin distributions (a *.dist-info with entry_points.txt) on sys.path."""

from __future__ import annotations

import textwrap
from pathlib import Path


def make_distribution(
    root: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]
) -> Path:
    """Write ``<dist>-<version>.dist-info`` plus modules into ``root`` (to be put on sys.path)."""
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = ["[bench]"] + [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    return root


EXPLAINER_PLUGIN = """
import numpy as np
from bench import ExplainerSpec, hookimpl


class CenterPrior:
    def __init__(self, *, power: float = 1.0):
        self.power = power

    def get_params(self):
        return {"power": self.power}

    def explain(self, model, images, targets):
        n, h, w, _ = images.shape
        yy, xx = np.mgrid[0:h, 0:w]
        d = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
        m = (1.0 / (1.0 + d)) ** self.power
        return np.repeat(m[None].astype(np.float32), n, axis=0)


@hookimpl
def bench_register_explainers():
    return [ExplainerSpec(name="{name}", factory=CenterPrior, description="center prior")]
"""
