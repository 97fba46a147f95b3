"""The settings fingerprint of a cell: every shared input that can change its numbers.

Two cells are compared (paired differences, gain over a baseline, per-class tables)
only when their settings blocks are equal: same dataset parameters and content, same
model parameters and weights content, same training recipe, same perturbation
parameters, grid, computed curve orders, selected metrics, image sample, confidence,
bootstrap and seed. An explainer's own parameters are not in it (they are its row key
only, so Grad-CAM and random still pair), nor are the component names (the
leaderboard's key columns).

The set of selected metrics is in it (a row is one cell record: a run that computed
fewer metrics must not replace a row that holds more), but a metric's own parameters
are not: they are part of that metric's column identity
(:func:`bench.pipeline.metrics.metric_params_key`), so changing one metric's parameters never
stops the other metrics' rows from pairing, and values of one metric under two
parameter sets are never compared (the leaderboard shows them as two columns).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bench.pipeline.store import content_key

#: Bumped when the shape of a cell record's ``settings`` block changes.
SETTINGS_VERSION = 2


def cell_settings(
    params: Mapping[str, Any],
    *,
    dataset_fingerprint: Any = None,
    weights_hash: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    bootstrap: Any = None,
) -> dict[str, Any]:
    """The ``settings`` block of a cell record: every shared input that can change its numbers.

    ``params`` is the record's ``params`` block (dataset, model, perturbation, ``aopc``
    and ``metrics`` parameters); the explainer's own parameters are left out (they are the
    explainer's row key, :func:`explainer_params_key`), and so are the component names
    (the leaderboard's key columns) and each metric's own parameters (its column's
    identity): of ``metrics`` only the sorted names are kept. Two cells whose blocks are
    equal may be paired.
    """
    aopc = params.get("aopc") or {}
    grid = aopc.get("grid")
    return {
        "version": SETTINGS_VERSION,
        "dataset": {"params": dict(params.get("dataset") or {}), "fingerprint": dataset_fingerprint},
        "model": {"params": dict(params.get("model") or {}), "weights_hash": dict(weights_hash or {})},
        "training": dict(training or {}),
        "perturbation": {"params": dict(params.get("perturbation") or {})},
        "aopc": {
            "grid": list(grid) if isinstance(grid, (list, tuple)) else grid,
            "orders": list(aopc.get("orders") or []),
            "max_images": aopc.get("max_images"),
            "confidence": aopc.get("confidence"),
            "bootstrap": bootstrap,
        },
        "metrics": sorted(params.get("metrics") or {}),
        "seed": aopc.get("seed"),
    }


def settings_key(settings: Mapping[str, Any]) -> str:
    """The settings fingerprint: a content key of a :func:`cell_settings` block."""
    return content_key("settings", settings)


def explainer_params_key(params: Mapping[str, Any] | None) -> str:
    """The fingerprint of an explainer's own (resolved) parameters."""
    return content_key("explainer-params", dict(params or {}))


def weights_hash(model_record: Mapping[str, Any]) -> dict[str, Any]:
    """The content hashes of a model's weights file (``{"md5": ..., "sha256": ...}``, those known)."""
    info = model_record.get("weights_info") or {}
    out = {k: info.get(k) for k in ("sha256", "md5") if info.get(k)}
    if not out and model_record.get("weights_md5"):
        out["md5"] = model_record["weights_md5"]
    return out


def count_constant_heatmaps(heatmaps: np.ndarray) -> int:
    """How many heatmaps are constant (all values equal): their region order is arbitrary."""
    h = np.asarray(heatmaps)
    if h.size == 0:
        return 0
    flat = h.reshape(len(h), -1)
    return int(np.count_nonzero(flat.max(axis=1) == flat.min(axis=1)))
