"""Small dataset splits and files for the readers' tests: random splits, a schema-1 file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.data import Split


def random_split(n: int, size: int, *, seed: int = 0, masks: tuple[str, ...] = ()) -> Split:
    """``n`` random uint8 ``size`` x ``size`` images, labels alternating, ids ``img-<seed>-<i>``,
    a random bool mask per name in ``masks``."""
    rng = np.random.default_rng(seed)
    return Split(
        images=rng.integers(0, 256, (n, size, size), dtype=np.uint8),
        labels=np.arange(n) % 2,
        ids=np.array([f"img-{seed}-{i}" for i in range(n)]),
        masks={name: rng.random((n, size, size)) > 0.5 for name in masks},
    )


def write_legacy_dataset(path: Path, size: int) -> dict[str, dict[str, np.ndarray]]:
    """Write ``path``: masks as '<split>/<name>_masks', 'disease_classes' in meta.json, no mask
    order; returns each split's masks (name -> bool (N, size, size))."""
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    masks: dict[str, dict[str, np.ndarray]] = {}
    for k, split_name in enumerate(("train", "val", "test")):
        n = 2 + k
        arrays[f"{split_name}/images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        arrays[f"{split_name}/labels"] = (np.arange(n) % 2).astype(np.int64)
        arrays[f"{split_name}/ids"] = np.array([f"{split_name}-{i}" for i in range(n)])
        lung, lesion = rng.random((n, size, size)) > 0.5, rng.random((n, size, size)) > 0.8
        arrays[f"{split_name}/lung_masks"] = np.packbits(lung, axis=-1)
        arrays[f"{split_name}/lesion_masks"] = np.packbits(lesion, axis=-1)
        masks[split_name] = {"lung": lung, "lesion": lesion}
    meta = {"name": "old", "class_names": ["a", "b"], "fingerprint": "f0",
            "disease_classes": ["b"], "metadata": {"note": 1}}
    arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    return masks
