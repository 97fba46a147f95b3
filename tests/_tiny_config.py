"""The smallest real grid the cache tests run: synthetic-cxr at 32 px, simple-cnn, random, AOPC."""

from __future__ import annotations

import json
from pathlib import Path

TINY = {
    "preset": "demo",
    "dataset": {
        "name": "synthetic-cxr",
        "params": {"image_size": 32, "per_class": 20, "shortcut": 1.0, "lesion_contrast": 2.0},
    },
    "models": {"names": ["simple-cnn"]},
    "training": {"epochs": 3, "batch_size": 16},
    "explainers": {"names": ["random"]},
    "perturbations": {"names": ["gaussian-noise"]},
    "aopc": {"grid": 2, "max_images": 3, "bootstrap": 20, "baseline": ""},
    "metrics": {"names": ["aopc"]},
}


def tiny(out: Path, **sections: dict) -> dict:
    """A fresh copy of :data:`TINY` writing into ``out``, ``sections`` merged in."""
    cfg = json.loads(json.dumps(TINY))
    cfg["run"] = {"out": str(out)}
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg
