"""Write fake run folders (the runner's format) with known numbers, for the leaderboard tests.

Nothing here imports TensorFlow: the folders are plain JSON and NPZ files laid out
exactly as ``bench.pipeline`` writes them: schema-2 cell records
(:class:`bench.pipeline.record.CellRecord`, per-image metric columns in ``metrics/<cell>.npz``),
or, with ``FakeCell(schema=1)`` / ``legacy=True``, the schema-1 records of earlier
versions (``results: {morf: {aopc, ci, n}, ...}``, ``abpc``), which must still load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import DatasetSplits, Split
from bench.pipeline.metrics import metric_params_key, summarise
from bench.pipeline.record import CellRecord, MetricResult, Timings
from bench.pipeline.settings import cell_settings, explainer_params_key, settings_key
from bench.pipeline.store import write_json, write_npz

CLASS_NAMES = ("COVID", "Lung Opacity", "Normal", "Viral Pneumonia")
GRID = 3  # 3x3 regions, L = 9: curves have 10 points
IMAGE_SIZE = 32


@dataclass
class FakeCell:
    """One cell. ``per_image`` are the MoRF per-image AOPC values (the known numbers)."""

    dataset: str
    model: str
    explainer: str
    per_image: Sequence[float] | None = None
    ids: Sequence[str] | None = None
    perturbation: str = "gaussian-noise"
    weights: str = "none"
    lerf_per_image: Sequence[float] | None = None
    status: str = "ok"
    error: str | None = None
    finished: str = "2026-01-01T00:00:00+00:00"
    recall_macro: float = 0.8
    f1_macro: float = 0.79
    accuracy: float = 0.81
    evaluate_seconds: float = 12.5
    sigma: float = 0.1
    ci: tuple[float, float] | None = None
    #: regions per side (curves have grid**2 + 1 points)
    grid: int = GRID
    #: the cell's ``aopc.orders``; default: the run's (see :func:`write_run`)
    orders: Sequence[str] | None = None
    explainer_params: dict[str, Any] = field(default_factory=dict)
    #: how many of the cell's heatmaps are constant (written as ``constant_heatmaps``; None: left out)
    constant_heatmaps: int | None = None
    #: an old record: schema 1 and no ``settings`` block, ``settings_key``, ``explainer_params_key``
    legacy: bool = False
    #: the record's schema: 2 (today's) or 1 (``results``/``abpc`` blocks, per-image values in the curves file)
    schema: int = 2
    #: extra metric results of a schema-2 record: name -> (per-image values, higher is better, label)
    metrics: dict[str, tuple[Sequence[float], bool, str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cell_id(self) -> str:
        return f"{self.dataset}__{self.model}__{self.explainer}__{self.perturbation}"


def default_ids(n: int) -> list[str]:
    return [f"test-{i:03d}" for i in range(n)]


def make_splits(name: str = "synthetic", n_test: int = 8, size: int = IMAGE_SIZE) -> DatasetSplits:
    """A tiny dataset whose test ids match :func:`default_ids`; labels cycle over the classes."""
    rng = np.random.default_rng(0)

    def split(prefix: str, n: int) -> Split:
        yy, xx = np.mgrid[0:size, 0:size]
        images = np.stack(
            [
                ((np.sin(xx / (2 + i % 5)) + np.cos(yy / (3 + i % 3))) * 60 + 128
                 + rng.normal(0, 5, (size, size))).clip(0, 255).astype(np.uint8)
                for i in range(n)
            ]
        ) if n else np.zeros((0, size, size), np.uint8)
        ids = np.array(default_ids(n) if prefix == "test" else [f"{prefix}-{i:03d}" for i in range(n)])
        return Split(images=images, labels=np.arange(n) % len(CLASS_NAMES), ids=ids)

    return DatasetSplits(
        name=name,
        class_names=CLASS_NAMES,
        train=split("train", 4),
        val=split("val", 4),
        test=split("test", n_test),
        fingerprint="fake0000",
    )


def curves_for(per_image: np.ndarray, L: int = GRID * GRID, f0: float = 0.95) -> np.ndarray:
    """Decreasing curves (N, L+1) whose AOPC sum_k (f0 - f_k) / (L+1) equals ``per_image``."""
    k = np.arange(1, L + 1, dtype=np.float64)
    shape = 1.0 - np.exp(-k / 3.0)
    drops = np.asarray(per_image, np.float64)[:, None] * (L + 1) * shape / shape.sum()
    curves = np.empty((len(per_image), L + 1))
    curves[:, 0] = f0
    curves[:, 1:] = f0 - drops
    return curves.astype(np.float32)


def _result(values: np.ndarray, ci: tuple[float, float] | None) -> dict[str, Any]:
    mean = float(np.mean(values))
    lo, hi = ci if ci is not None else (mean - 0.02, mean + 0.02)
    return {"aopc": mean, "ci": [lo, hi], "n": len(values)}


def _metric(name: str, values: np.ndarray, *, cell_id: str, label: str, higher: bool,
            ci: tuple[float, float] | None = None) -> MetricResult:
    """A schema-2 metric result with known numbers (value = the mean, CI = ci or mean +- 0.02)."""
    stats = summarise(values, n_resamples=50)
    lo, hi = ci if ci is not None else (stats.value - 0.02, stats.value + 0.02)
    return MetricResult(
        name=name, value=stats.value, ci=(lo, hi), n=stats.n, n_excluded=stats.n_excluded, confidence=0.95,
        higher_is_better=higher, label=label, headline=name, columns={name: [len(values)]},
        file=f"metrics/{cell_id}.npz", key=f"{name}/{name}", params_key=metric_params_key({}),
        description=f"fake {name}",
    )


def _schema_2(cell: dict[str, Any]) -> dict[str, Any]:
    """The fake cell as the runner writes it: a :class:`CellRecord` through ``to_dict``."""
    known = {k: v for k, v in cell.items() if k not in ("metrics", "timings")}
    record = CellRecord(
        **{k: v for k, v in known.items() if k in (
            "cell_id", "run_id", "status", "error", "stage", "dataset", "model", "weights", "explainer",
            "perturbation", "params", "classification", "n_images", "strategy", "curves_file",
            "heatmaps_file", "metrics_file", "constant_heatmaps", "settings", "settings_key",
            "explainer_params_key", "finished")},
        orders=list(cell["params"]["aopc"]["orders"]),
        metrics=cell.get("metrics") or {},
        timings=Timings.from_dict(cell.get("timings")),
    )
    return record.to_dict()


def write_run(
    results_dir: str | Path,
    run_id: str,
    cells: Sequence[FakeCell],
    *,
    created: str = "2026-01-01T00:00:00+00:00",
    splits: DatasetSplits | None = None,
    n_test: int = 8,
    seed: int = 0,
    orders: Sequence[str] | None = None,
) -> Path:
    """Write ``results_dir/runs/<run_id>/`` with a manifest, model reports, cells, curves, heatmaps.

    ``orders`` is the run's ``aopc.orders`` (default: morf and lerf when some cell has LeRF
    values, else morf), as the runner writes one value for every cell of a run; a cell's
    own ``orders`` wins. Cells get the runner's ``settings`` block unless ``legacy``.
    """
    if orders is None:
        orders = ["morf", "lerf"] if any(c.lerf_per_image is not None for c in cells) else ["morf"]
    run_dir = Path(results_dir) / "runs" / run_id
    (run_dir / "cells").mkdir(parents=True, exist_ok=True)
    datasets = sorted({c.dataset for c in cells})
    splits_by_name: dict[str, DatasetSplits] = {}
    for ds in datasets:
        s = splits if splits is not None else make_splits(ds, n_test=n_test)
        splits_by_name[ds] = s
        s.save(run_dir / f"{ds}.npz")
    for c in cells:
        s = splits_by_name[c.dataset]
        grid = [c.grid, c.grid]
        L = c.grid * c.grid
        cell_orders = list(c.orders if c.orders is not None else orders)
        schema = 1 if c.legacy else c.schema
        metric_names = [m for m, order in (("aopc", "morf"), ("lerf-aopc", "lerf")) if order in cell_orders]
        if "lerf-aopc" in metric_names:
            metric_names.append("abpc")
        metric_names += [m for m in c.metrics if m not in metric_names]
        cell: dict[str, Any] = {
            "cell_id": c.cell_id,
            "run_id": run_id,
            "status": c.status,
            "error": c.error,
            "stage": None if c.status == "ok" else "explain",
            "dataset": c.dataset,
            "model": c.model,
            "weights": c.weights,
            "explainer": c.explainer,
            "perturbation": c.perturbation,
            "params": {
                "dataset": {"image_size": IMAGE_SIZE},
                "model": {},
                "explainer": dict(c.explainer_params),
                "perturbation": {"sigma": c.sigma, "clip": False},
                "aopc": {"grid": grid, "orders": cell_orders, "seed": seed, "batch_size": 64},
                **({"metrics": {m: {} for m in metric_names}} if schema == 2 else {}),
            },
            "finished": c.finished,
            "strategy": "full",
        }
        if not c.legacy:
            settings = cell_settings(cell["params"], dataset_fingerprint="fake0000",
                                     weights_hash={"md5": "0" * 32}, bootstrap=1000)
            cell.update(settings=settings, settings_key=settings_key(settings),
                        explainer_params_key=explainer_params_key(c.explainer_params))
        if c.constant_heatmaps is not None:
            cell["constant_heatmaps"] = c.constant_heatmaps
        if c.status == "ok":
            assert c.per_image is not None
            morf = np.asarray(c.per_image, np.float64)
            n = len(morf)
            ids = np.asarray(list(c.ids) if c.ids is not None else default_ids(n))
            id_to_label = {str(i): int(lab) for i, lab in zip(s.test.ids, s.test.labels, strict=True)}
            labels = np.array([id_to_label.get(str(i), 0) for i in ids], np.int64)
            arrays: dict[str, np.ndarray] = {
                "ids": ids.astype(str),
                "targets": labels,
                "labels": labels,
                "morf_curves": curves_for(morf, L),
                "morf_per_image": morf.astype(np.float32),
                "morf_order": np.tile(np.arange(L), (n, 1)),
            }
            results = {"morf": _result(morf, c.ci)}
            abpc = None
            if c.lerf_per_image is not None:
                lerf = np.asarray(c.lerf_per_image, np.float64)
                arrays["lerf_curves"] = curves_for(lerf, L)
                arrays["lerf_per_image"] = lerf.astype(np.float32)
                arrays["lerf_order"] = np.tile(np.arange(L)[::-1], (n, 1))
                results["lerf"] = _result(lerf, None)
                value = float(np.mean(morf - lerf))
                abpc = {"value": value, "ci": [value - 0.01, value + 0.01], "n": n}
            write_npz(run_dir / "curves" / f"{c.cell_id}.npz", **arrays)
            if schema == 2:
                columns: dict[str, np.ndarray] = {}
                metrics: dict[str, MetricResult] = {}
                per_metric: dict[str, tuple[np.ndarray, bool, str, tuple[float, float] | None]] = {
                    "aopc": (morf, True, "AOPC", c.ci)}
                if c.lerf_per_image is not None:
                    lerf = np.asarray(c.lerf_per_image, np.float64)
                    per_metric["lerf-aopc"] = (lerf, False, "LeRF AOPC", None)
                    per_metric["abpc"] = (morf - lerf, True, "ABPC", None)
                for name, (vals, higher, label) in c.metrics.items():
                    per_metric[name] = (np.asarray(vals, np.float64), higher, label, None)
                for name, (vals, higher, label, ci) in per_metric.items():
                    # the per-image values as float32, like the engine's curves
                    columns[f"{name}/{name}"] = vals.astype(np.float32)
                    metrics[name] = _metric(name, vals, cell_id=c.cell_id, label=label, higher=higher, ci=ci)
                write_npz(run_dir / "metrics" / f"{c.cell_id}.npz", ids=ids.astype(str), labels=labels,
                          targets=labels, **columns)
            # heatmaps: a blob whose position depends on the explainer and the image
            hm = np.zeros((n, c.grid * 3, c.grid * 3), np.float32)
            for i in range(n):
                cy, cx = (i + len(c.explainer)) % (c.grid * 3), (2 * i + len(c.model)) % (c.grid * 3)
                yy, xx = np.mgrid[0 : c.grid * 3, 0 : c.grid * 3]
                hm[i] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6.0)
            write_npz(run_dir / "heatmaps" / f"{c.cell_id}.npz", ids=ids.astype(str), heatmaps=hm)
            cell.update(
                classification={
                    "recall_macro": c.recall_macro,
                    "f1_macro": c.f1_macro,
                    "precision_macro": c.recall_macro + 0.01,
                    "accuracy": c.accuracy,
                },
                n_images=n,
                timings={
                    "explain_seconds": 1.5,
                    "evaluate_seconds": c.evaluate_seconds,
                    "forward_passes": n * (L + 1),
                    "passes_per_second": n * (L + 1) / c.evaluate_seconds,
                },
                curves_file=f"curves/{c.cell_id}.npz",
                heatmaps_file=f"heatmaps/{c.cell_id}.npz",
            )
            if schema == 1:
                cell.update(results=results, abpc=abpc)
            else:
                cell.update(metrics=metrics, metrics_file=f"metrics/{c.cell_id}.npz")
        if schema == 2:
            cell = _schema_2(cell)
        cell.update(c.extra)
        write_json(run_dir / "cells" / f"{c.cell_id}.json", cell)

    for ds in datasets:
        for model, weights in sorted({(c.model, c.weights) for c in cells if c.dataset == ds}):
            names = list(CLASS_NAMES)
            per_class = {
                name: {"precision": 0.8 + 0.01 * i, "recall": 0.7 + 0.02 * i,
                       "f1-score": 0.75 + 0.01 * i, "support": 2}
                for i, name in enumerate(names)
            }
            write_json(
                run_dir / "models" / f"{ds}__{model}.json",
                {
                    "dataset": ds,
                    "model": model,
                    "weights": weights,
                    "weights_md5": "0" * 32,
                    "params": {},
                    "classification": {
                        "class_names": names,
                        "per_class": per_class,
                        "accuracy": 0.81,
                        "macro avg": {"precision": 0.81, "recall": 0.8, "f1-score": 0.79, "support": 8},
                        "weighted avg": {"precision": 0.81, "recall": 0.8, "f1-score": 0.79, "support": 8},
                        "confusion_matrix": [[2 if i == j else 0 for j in range(4)] for i in range(4)],
                    },
                    "training": {"history": [], "best_epoch": 3},
                    "predictions_file": f"models/{ds}__{model}.npz",
                },
            )

    manifest = {
        "run_id": run_id,
        "created": created,
        "finished": created,
        "bench_version": "0.1.0",
        "config": {"aopc": {"grid": [GRID, GRID], "seed": seed, "bootstrap": 1000}},
        "environment": {"python": "3.11.0", "platform": "linux", "tensorflow": "2.21.0",
                        "keras": "3.99.0", "numpy": "2.4.6", "git_commit": "abc1234"},
        "plugins": [{"name": "gradcam", "distribution": "saliency-bench", "version": "0.1.0"}],
        "dataset": {
            "name": datasets[0] if datasets else "",
            "fingerprint": "fake0000",
            "params": {},
            "file": str(run_dir / f"{datasets[0]}.npz") if datasets else "",
            "class_names": list(CLASS_NAMES),
        },
        "seeds": {"run": seed},
        "timings": {},
        "cells": [c.cell_id for c in cells],
        "failed": [c.cell_id for c in cells if c.status != "ok"],
    }
    write_json(run_dir / "manifest.json", manifest)
    return run_dir
