"""The typed artifacts the stages of a cell produce (one dataclass per stage of the graph).

Each artifact carries its content ``key`` (the cache key of the stage result) and what the
next stages and the cell record read. :meth:`summary` is its plain-data digest (the key,
the number of images, the cost): what an executor may send between processes, the
arrays staying in the shared cache.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.pipeline.record import MetricResult


@dataclass
class DatasetArtifact:
    """The dataset stage: the loaded splits and where they are cached."""

    splits: Any
    key: str
    file: Path
    params: dict[str, Any]

    @property
    def n_images(self) -> int:
        return int(len(self.splits.test))

    def summary(self) -> dict[str, Any]:
        return {"key": self.key, "n": self.n_images}


@dataclass
class ModelArtifact:
    """The model stage: the trained model and its test-split evaluation.

    ``model`` is the bench model (None in a stand-in built from cached data);
    ``predictions`` / ``labels`` / ``ids`` are the test split's, in split order; ``record``
    holds the model's parameters, provenance, weights and classification report.
    """

    model: Any
    key: str
    params: dict[str, Any]
    record: dict[str, Any]
    predictions: np.ndarray
    labels: np.ndarray
    ids: np.ndarray

    @property
    def n_images(self) -> int:
        return int(len(self.ids))

    def summary(self) -> dict[str, Any]:
        return {"key": self.key, "n": self.n_images}


@dataclass
class HeatmapsArtifact:
    """The heatmaps stage: one explainer's maps of the explained images of one model.

    ``index``: the explained images (positions in the test split); ``ids`` their ids;
    ``heatmaps`` float32 (N, h, w) in that order. ``seconds``: how long computing them took
    (when they were computed, also for a cached result); ``passes_per_map``: the
    explainer's forward-pass equivalents per map (``passes_per_map()``), None when it does
    not say.
    """

    explainer: str
    heatmaps: np.ndarray
    key: str
    params: dict[str, Any]
    index: np.ndarray
    ids: np.ndarray
    seconds: float = 0.0
    passes_per_map: float | None = None

    @property
    def n_images(self) -> int:
        return int(len(self.index))

    @property
    def seconds_per_map(self) -> float | None:
        return self.seconds / self.n_images if self.n_images else None

    def summary(self) -> dict[str, Any]:
        return {"key": self.key, "n": self.n_images, "seconds": self.seconds,
                "passes_per_map": self.passes_per_map}


@dataclass
class CurvesArtifact:
    """The curves stage: ``f(x^(k))`` of one (heatmaps, perturbation, order), or of a shard of it.

    ``curves`` float32 (N, L+1); ``per_image`` the engine's per-image AOPC (an engine detail:
    metrics read the curves); ``region_order`` int (N, L), the regions in perturbation order;
    ``ids`` (N,). A shard (``start``/``stop`` set, ``key`` the whole stage's) covers the
    explained images ``start:stop`` and is not stored on its own; :meth:`bench.pipeline.Stages.merge_curves`
    concatenates shards into the stage's result.
    """

    perturbation: str
    order: str
    key: str
    params: dict[str, Any]
    curves: np.ndarray
    per_image: np.ndarray
    region_order: np.ndarray
    ids: np.ndarray
    forward_passes: int = 0
    seconds: float = 0.0
    strategy: str = ""
    strategy_info: dict[str, Any] = field(default_factory=dict)
    images_with_ties: int = 0
    start: int | None = None
    stop: int | None = None

    @property
    def n_images(self) -> int:
        return int(len(self.ids))

    @property
    def aopc(self) -> float:
        """The engine's mean per-image AOPC (NaN without images)."""
        return float(np.mean(self.per_image)) if len(self.per_image) else math.nan

    @property
    def is_shard(self) -> bool:
        return self.start is not None

    def arrays(self) -> dict[str, np.ndarray]:
        """The stored arrays (cache NPZ members)."""
        return {"curves": np.asarray(self.curves, np.float32), "per_image": np.asarray(self.per_image, np.float64),
                "order": np.asarray(self.region_order, np.int32), "ids": np.asarray(self.ids).astype(str)}

    def meta(self) -> dict[str, Any]:
        """The stored summary (cache JSON)."""
        return {"aopc": self.aopc, "n": self.n_images, "forward_passes": int(self.forward_passes),
                "seconds": float(self.seconds), "strategy": self.strategy,
                "strategy_info": dict(self.strategy_info), "images_with_ties": int(self.images_with_ties),
                "params": dict(self.params)}

    def summary(self) -> dict[str, Any]:
        return {"key": self.key, "n": self.n_images, "forward_passes": int(self.forward_passes),
                "seconds": float(self.seconds)}

    @classmethod
    def from_stored(cls, perturbation: str, order: str, key: str, meta: Mapping[str, Any],
                    arrays: Mapping[str, np.ndarray]) -> CurvesArtifact:
        return cls(
            perturbation=perturbation, order=order, key=key, params=dict(meta.get("params") or {}),
            curves=arrays["curves"], per_image=arrays["per_image"], region_order=arrays["order"],
            ids=np.asarray(arrays["ids"]).astype(str), forward_passes=int(meta.get("forward_passes", 0)),
            seconds=float(meta.get("seconds", 0.0)), strategy=str(meta.get("strategy", "")),
            strategy_info=dict(meta.get("strategy_info") or {}),
            images_with_ties=int(meta.get("images_with_ties", 0)),
        )


@dataclass
class MetricOutput:
    """One metric's per-image columns on one cell (the metric stage, cached).

    Its cost: ``seconds`` and ``forward_passes`` of its own ``compute`` (when it was
    computed, also for a cached result; passes as the metric reports them through its
    optional ``forward_passes()``, None when it does not say), and ``curve_passes`` /
    ``curve_seconds`` of the curves it reads (computed by the curves stage, shared with
    the other metrics that read them).
    """

    name: str
    columns: dict[str, np.ndarray]
    params: dict[str, Any]
    key: str
    seconds: float = 0.0
    forward_passes: float | None = None
    curve_passes: int = 0
    curve_seconds: float = 0.0
    #: the curves it read, by name (``morf``, ``morf@<perturbation>``) -> their perturbation
    curves: dict[str, str] = field(default_factory=dict)
    #: with an image budget (``metrics.max_images``): the positions of the images it ran on
    #: (its columns hold NaN elsewhere) and the budget; None / 0 = every explained image
    positions: np.ndarray | None = None
    budget: int = 0

    def cost(self) -> dict[str, Any]:
        """What the metric cost on the cell: its own passes and seconds, its curves', their sums."""
        own = self.forward_passes
        return {
            "seconds": float(self.seconds),
            "forward_passes": None if own is None else float(own),
            "curve_passes": int(self.curve_passes),
            "curve_seconds": float(self.curve_seconds),
            "total_passes": float(self.curve_passes + (own or 0.0)),
            "total_seconds": float(self.seconds + self.curve_seconds),
            "curves": dict(self.curves),
        }


@dataclass
class MetricsArtifact:
    """The metrics stage of a cell: each selected metric's result (ok, failed or skipped) and columns.

    ``columns`` holds every ok metric's per-image columns as ``<metric>/<column>``;
    ``costs`` each ok metric's :meth:`MetricOutput.cost`.
    """

    results: dict[str, MetricResult] = field(default_factory=dict)
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    costs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return float(sum(r.seconds for r in self.results.values()))

    @property
    def forward_passes(self) -> float:
        """The forward passes the metrics' own computations cost (not their curves')."""
        return float(sum(c.get("forward_passes") or 0.0 for c in self.costs.values()))

    def summary(self) -> dict[str, Any]:
        return {"metrics": {name: r.status for name, r in self.results.items()}}
