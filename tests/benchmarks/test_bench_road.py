"""ROAD's noisy linear imputation: its cost per image and step against the forward pass it feeds.

Run: ``pytest tests/benchmarks/test_bench_road.py --benchmark-only -s``.

One round perturbs every (image, step) pair of a whole curve (82 steps on a 9x9 grid,
image-major in batches of 64, as the curve engine asks) with ``road`` at 299x299. Before
it (pytest-benchmark's untimed ``setup``), the same number of raw batched forward passes
of VGG16 + head at 299 (weights none) through a warm ``tf.function``, and of the
``gaussian-noise`` perturbation. Printed: seconds per image and step for each, and the
ratio ROAD / forward pass. Measured on the 2-core AVX-512 CPU: about 0.09 s (MoRF) per
image and step, ~0.4-0.55x a VGG16 forward pass.
"""

from __future__ import annotations

import time

import numpy as np
from _bench_models import build_model

import bench
from bench.engine.forward import FullForward
from bench.engine.regions import region_order, union_mask

BATCH = 64
SIZE = 299
IMAGES = 1


def _rows(order: np.ndarray) -> list[tuple[int, int]]:
    return [(i, k) for i in range(len(order)) for k in range(order.shape[1] + 1)]


def _perturb_all(pert, images, order, rows) -> None:
    for a in range(0, len(rows), BATCH):
        batch = rows[a:a + BATCH]
        x = images[[i for i, _ in batch]]
        masks = np.stack([union_mask(order[i], k, (SIZE, SIZE), 9) for i, k in batch])
        pert.perturb(x, masks, np.array([i for i, _ in batch]))


def test_road_cost_per_image_and_step(benchmark):
    rng = np.random.default_rng(0)
    images = np.repeat(rng.random((IMAGES, SIZE, SIZE, 1), dtype=np.float32), 3, axis=-1)
    order = region_order(rng.random((IMAGES, 81)), "morf", ids=np.arange(IMAGES))
    rows = _rows(order)
    model = build_model("vgg16", SIZE)
    raw = FullForward()
    raw.prepare(model, batch_size=BATCH, image_shape=(SIZE, SIZE, 3))
    xs = rng.random((BATCH, SIZE, SIZE, 3)).astype(np.float32)
    raw.predict(xs[:2])
    times: dict[str, list[float]] = {"forward": [], "noise": []}

    def baselines() -> None:
        t0 = time.perf_counter()
        for a in range(0, len(rows), BATCH):
            raw.predict(xs[: min(BATCH, len(rows) - a)])
        times["forward"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _perturb_all(bench.create("perturbation", "gaussian-noise"), images, order, rows)
        times["noise"].append(time.perf_counter() - t0)

    def road() -> None:
        _perturb_all(bench.create("perturbation", "road"), images, order, rows)  # a fresh cache each round

    benchmark.pedantic(road, setup=baselines, rounds=2, iterations=1)
    per = {
        "road": benchmark.stats.stats.min / len(rows),
        "forward": min(times["forward"]) / len(rows),
        "noise": min(times["noise"]) / len(rows),
    }
    benchmark.extra_info.update({f"{k}_s_per_image_step": v for k, v in per.items()})
    benchmark.extra_info["road_over_forward"] = per["road"] / per["forward"]
    print(
        f"\n[road] {SIZE}px, {len(rows)} (image, step) pairs: road {per['road']:.3f} s, gaussian-noise "
        f"{per['noise']:.4f} s, VGG16 forward {per['forward']:.3f} s per image and step; road / forward "
        f"{per['road'] / per['forward']:.2f}"
    )
