"""A peer side by side: Quantus 0.6 ``RegionPerturbation`` vs ``bench.evaluate_aopc``.

Run: ``pytest tests/benchmarks/test_bench_quantus.py --benchmark-only -s`` (the timing) and
``pytest tests/benchmarks/test_bench_quantus.py`` (the agreement checks; add ``-m slow`` for
the study's VGG16 only). Everything is skipped when ``quantus`` is not installed.

Both evaluate the same MoRF region-perturbation curve (Samek et al. 2016) of the same model
(the study's VGG16 + head, ``weights="none"``, weights re-initialised so that the
probabilities move along the sequence), on the same float32 [0, 1] images, with the same
target (the predicted class), the same 9x9 grid ranking (one heatmap value per cell, all
distinct: no ties), the same baseline replacement (Quantus ``perturb_baseline="black"``, the
image's minimum, which is 0 on these images; bench ``"black"``, 0) and the same number of
steps (81 regions, 82 forward passes per image; Quantus's ``regions_evaluation=81``).

What each returns. Quantus returns, per image, the 81 drops ``f(x^(0)) - f(x^(k))``,
k = 1..81 (softmax probability of the target). bench returns the curve ``f(x^(k))``,
k = 0..81, and the AOPC ``sum_k (f(x^(0)) - f(x^(k))) / (L + 1)``. So, exactly,

    quantus[i, k-1] == curves[i, 0] - curves[i, k]    and    per_image[i] == sum(quantus[i]) / 82

up to float32 rounding (different batch compositions, oneDNN kernels and bench's exact
incremental inference, which ``test_incremental`` holds to 1e-5 of full passes): the
agreement tests assert ``max |diff| <= 2e-5`` on probabilities. (Quantus's own summary,
``get_auc_score``, is ``np.trapz`` of those drops, not an AOPC: not compared.)

Patches. Quantus cuts square ``patch_size`` blocks after padding each side by half the
remainder (``get_padding_size``), ranks them by the *sum* of the attributions inside, and
``np.argsort(-sums)`` (unstable for ties). bench splits H and W with ``numpy.array_split``
(blocks of 33/34 px at 299) and ranks by the heatmap cell (a 9x9 heatmap is the grid).
Where the size is divisible by 9 (297 px, 33-px patches; 63 px, 7-px patches) the two grids
are identical: the agreement tests run there. 299 is not: the timed benchmark runs at 299
with ``patch_size=34`` (Quantus pads to 306: 3 px before, 4 after, 81 patches of which the
first/last row and column are 31/30 px inside the image), bench with its 9x9 grid: the same
cells in the same order, the same steps and the same passes, boundaries up to 3 px apart.
The attributions given to Quantus are each cell's heatmap value divided by the area of its
patch inside the image, so that Quantus's patch sums rank the cells exactly as bench does.
The per-image AOPCs of that run are recorded for information, not asserted.

Timing: each round times Quantus (pytest-benchmark's untimed ``setup``) and bench (timed,
``strategy="auto"``: exact incremental inference). Ratio = Quantus best / bench best, in
``benchmark.extra_info``. Goal (issue 16): >= 5x. No timing is asserted. Quantus calls
``model.predict`` once per step on all the images (its ``batch_size`` is images per batch,
64 by default), bench streams 64 (image, step) pairs per call.

Sizes (env): ``BENCH_QUANTUS_IMAGES`` (default 4: Quantus takes ~70 s on 2 CPU cores),
``BENCH_QUANTUS_ROUNDS`` (default 1), ``BENCH_QUANTUS_SIZE`` (default 299; a multiple of 9
such as 297 also asserts the agreement in the timed run).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _bench_models import build_model
from _readme import readme_row

from bench.engine.curves import evaluate_aopc
from bench.engine.regions import split_bounds

quantus = pytest.importorskip("quantus")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_incremental import calibrate, reinit  # noqa: E402

GRID = 9
STEPS = GRID * GRID  # regions perturbed; forward passes per image = STEPS + 1
BATCH = 64
TOL = 2e-5  # float32 probabilities of the same model on bit-identical inputs
IMAGES = int(os.environ.get("BENCH_QUANTUS_IMAGES", "4"))
ROUNDS = int(os.environ.get("BENCH_QUANTUS_ROUNDS", "1"))
SIZE = int(os.environ.get("BENCH_QUANTUS_SIZE", "299"))


def _patch_size(size: int) -> int:
    """The smallest Quantus patch that gives a GRID x GRID patch grid after its padding."""
    p = math.ceil(size / GRID)
    assert math.ceil(size / p) == GRID, f"no patch size gives {GRID}x{GRID} patches on {size} px"
    return p


def _quantus_rows(size: int, patch: int) -> np.ndarray:
    """int (size,): the Quantus patch row (or column) of every pixel, after its padding."""
    before, after = quantus.helpers.utils.get_padding_size(size, patch)
    assert (size + before + after) // patch == GRID
    return (np.arange(size) + before) // patch


def _quantus_bounds(size: int, patch: int) -> list[int]:
    rows = _quantus_rows(size, patch)
    return [0] + [int(y) for y in np.flatnonzero(np.diff(rows)) + 1] + [size]


def _attributions(heatmaps: np.ndarray, size: int, patch: int) -> np.ndarray:
    """float32 (N, size, size): cell value / its patch's area in the image (patch sums = heatmap)."""
    rows = _quantus_rows(size, patch)
    area = np.bincount(rows, minlength=GRID).astype(np.float64)
    per_pixel = heatmaps[:, rows][:, :, rows] / (area[rows][:, None] * area[rows][None, :])
    return per_pixel.astype(np.float32)


def _setup(name: str, size: int, n_images: int, seed: int = 0):
    model = build_model(name, size)
    rng = np.random.default_rng(seed)
    images = (rng.integers(0, 256, (n_images, size, size, 3)).astype(np.float32) / np.float32(255.0))
    images[:, 0, 0, :] = 0.0  # Quantus's "black" is the image's minimum: make it 0, bench's black
    reinit(model.keras)
    calibrate(model.keras, images)
    # distinct cell values 1..81 per image: one ranking, no ties for either tool to break
    heatmaps = np.stack([rng.permutation(STEPS) + 1.0 for _ in range(n_images)]).reshape(n_images, GRID, GRID)
    targets = np.asarray(model.keras(images)).argmax(axis=1)
    return model, images, heatmaps.astype(np.float32), targets


def _quantus_metric(patch: int, steps: int = STEPS):
    return quantus.RegionPerturbation(patch_size=patch, order="morf", regions_evaluation=steps,
                                      perturb_baseline="black", disable_warnings=True)


def _quantus(model, images, targets, attributions, patch: int, steps: int = STEPS) -> np.ndarray:
    out = _quantus_metric(patch, steps)(model=model.keras, x_batch=images, y_batch=targets,
                                       a_batch=attributions, channel_first=False, softmax=True,
                                       batch_size=BATCH)
    return np.asarray(out, dtype=np.float64)


def _bench(model, images, targets, heatmaps):
    return evaluate_aopc(model, images, targets, heatmaps, grid=GRID, perturbation="black",
                         order="morf", batch_size=BATCH, strategy="auto")


def _compare(result, drops: np.ndarray) -> dict[str, float]:
    mine = result.curves[:, :1].astype(np.float64) - result.curves[:, 1:]
    return {
        "max_abs_drop_diff": float(np.abs(mine - drops).max()),
        "max_abs_aopc_diff": float(np.abs(result.per_image - drops.sum(axis=1) / (STEPS + 1)).max()),
    }


@pytest.mark.parametrize(("name", "size", "n_images"), [
    ("simple-cnn", 63, 3),
    pytest.param("vgg16", 297, 2, marks=pytest.mark.slow),
], ids=["simple-cnn-63", "vgg16-297"])
def test_quantus_region_perturbation_agrees(name: str, size: int, n_images: int) -> None:
    """Where the patch grids coincide (size = 9 x patch), the curves are the same numbers."""
    patch = _patch_size(size)
    assert size == GRID * patch and _quantus_bounds(size, patch) == list(split_bounds(size, GRID))
    model, images, heatmaps, targets = _setup(name, size, n_images)
    drops = _quantus(model, images, targets, _attributions(heatmaps, size, patch), patch)
    result = _bench(model, images, targets, heatmaps)
    assert drops.shape == (n_images, STEPS)
    # the same order: most relevant cell first
    np.testing.assert_array_equal(result.order, np.argsort(-heatmaps.reshape(n_images, -1), axis=1))
    diff = _compare(result, drops)
    assert diff["max_abs_drop_diff"] <= TOL, diff
    assert diff["max_abs_aopc_diff"] <= TOL, diff
    # not trivially equal: the probabilities move along the sequence
    assert float(np.ptp(result.curves, axis=1).min()) > 1e-3


def test_quantus_vs_bench_speed(benchmark) -> None:
    size, n = SIZE, IMAGES
    patch = _patch_size(size)
    model, images, heatmaps, targets = _setup("vgg16", size, n)
    attributions = _attributions(heatmaps, size, patch)
    # warm both: Quantus's predict function (the same batch of images), bench's traces
    _quantus(model, images, targets, attributions, patch, steps=1)
    _bench(model, images[:2], targets[:2], heatmaps[:2])

    q_times: list[float] = []
    q_out: list[np.ndarray] = []

    def quantus_round() -> None:
        t0 = time.perf_counter()
        q_out.append(_quantus(model, images, targets, attributions, patch))
        q_times.append(time.perf_counter() - t0)

    result = benchmark.pedantic(lambda: _bench(model, images, targets, heatmaps), setup=quantus_round,
                                rounds=ROUNDS, iterations=1)
    bench_best, quantus_best = float(benchmark.stats.stats.min), min(q_times)
    passes = n * (STEPS + 1)
    drops = q_out[-1]
    diff = _compare(result, drops)
    same_grid = size % GRID == 0
    info = {
        "model": getattr(model, "name", "vgg16"),
        "image_size": size,
        "images": n,
        "steps": STEPS,
        "forward_passes": passes,
        "quantus_patch_size": patch,
        "quantus_bounds": _quantus_bounds(size, patch),
        "bench_bounds": [int(b) for b in split_bounds(size, GRID)],
        "same_grid": same_grid,
        "perturbation": "black (bench: 0; quantus: the image's min = 0)",
        "bench_strategy": result.strategy,
        "bench_strategy_used": result.strategy_info.get("used"),
        "quantus_seconds": quantus_best,
        "bench_seconds": bench_best,
        "quantus_passes_per_s": passes / quantus_best,
        "bench_passes_per_s": passes / bench_best,
        "ratio": quantus_best / bench_best,
        "target": 5.0,
        "bench_aopc_per_image": [float(v) for v in result.per_image],
        "quantus_aopc_per_image": [float(v) for v in drops.sum(axis=1) / (STEPS + 1)],
        **diff,
    }
    benchmark.extra_info.update(info)
    readme_row(benchmark, f"`bench.evaluate_aopc` (auto) vs Quantus 0.6 `RegionPerturbation`, VGG16 {size} px",
               info["ratio"], goal=">= 5x",
               detail=f"{n} images x {STEPS + 1} passes, black patches; bench ran {info['bench_strategy_used']}")
    print(f"\n[quantus] {info['model']} {size}px, {n} images x {STEPS + 1} passes: "
          f"Quantus {quantus_best:.1f} s ({info['quantus_passes_per_s']:.1f} passes/s), "
          f"bench {bench_best:.1f} s ({info['bench_passes_per_s']:.1f} passes/s, "
          f"{result.strategy}/{info['bench_strategy_used']}), ratio {info['ratio']:.2f}x (target >= 5)")
    print(f"  grid: quantus {info['quantus_bounds']} (patch {patch}), bench {info['bench_bounds']}"
          f"{' (identical)' if same_grid else ''}")
    print(f"  AOPC per image: bench {np.round(result.per_image, 5).tolist()}, "
          f"quantus sum/{STEPS + 1} {np.round(drops.sum(axis=1) / (STEPS + 1), 5).tolist()}; "
          f"max |d drop| {diff['max_abs_drop_diff']:.1e}, max |d AOPC| {diff['max_abs_aopc_diff']:.1e}")
    assert drops.shape == (n, STEPS) and result.forward_passes == passes  # sanity, never a timing
    if same_grid:
        assert diff["max_abs_drop_diff"] <= TOL, diff
