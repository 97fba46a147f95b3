"""The gradient family's cost per map, in batched forward passes of the same model, same run.

Run: ``pytest tests/benchmarks/test_bench_gradients.py --benchmark-only -s``.

Each round times ``compute_heatmaps(<method>, ...)`` on N uint8 images and, just before
it (untimed ``setup``), raw batched inference on the same images at the same batch size
(``predict_proba``: per-batch conversion plus a warm ``tf.function``). From the fastest
round of each: ``forward passes per map = method seconds / raw seconds`` (the cost of a
map as a multiple of one image's batched forward pass), and that divided by the method's
``passes_per_map()`` is the cost of one forward+backward pass (about 2-3 on a CNN).

The simple CNN runs the registered defaults (IG 32 steps, SmoothGrad-family 50 copies);
the reduced VGG16 runs fewer steps/copies to keep a round short on 2 cores: multiply its
per-pass cost by a method's passes for its defaults.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from _bench_models import build_model

import bench
from bench.pipeline.explain import compute_heatmaps

BATCH = 32
METHODS = (
    "saliency", "gradient-x-input", "integrated-gradients", "smoothgrad", "smoothgrad-squared", "vargrad",
)
#: parameters for the reduced VGG16 (the defaults elsewhere)
REDUCED = {"integrated-gradients": {"steps": 8}, "smoothgrad": {"n": 8}, "smoothgrad-squared": {"n": 8},
           "vargrad": {"n": 8}}

_models: dict[tuple[str, int], object] = {}


def _model(name: str, size: int):
    key = (name, size)
    if key not in _models:
        _models[key] = build_model(name, size)
    return _models[key]


def _run(benchmark, method: str, model_name: str, size: int, n_images: int, params: dict, rounds: int) -> None:
    model = _model(model_name, size)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, size, size), dtype=np.uint8)
    targets = rng.integers(0, 4, n_images)
    explainer = bench.create("explainer", method, **params)
    raw_times: list[float] = []

    def raw_round() -> None:
        t0 = time.perf_counter()
        model.predict_proba(images, batch_size=BATCH)
        raw_times.append(time.perf_counter() - t0)

    def explain():
        return compute_heatmaps(explainer, model, images, targets, batch_size=BATCH)

    raw_round()
    maps = explain()  # warm: the trace is not timed
    raw_times.clear()
    benchmark.pedantic(explain, setup=raw_round, rounds=rounds, iterations=1)
    best = benchmark.stats.stats.min
    raw_best = min(raw_times)
    per_map = best / raw_best
    passes = explainer.passes_per_map()
    info = {
        "method": method,
        "params": explainer.get_params(),
        "model": getattr(model, "name", model_name),
        "image_size": size,
        "images": n_images,
        "raw_images_per_s": n_images / raw_best,
        "maps_per_s": n_images / best,
        "forward_passes_per_map": per_map,
        "gradient_passes_per_map": passes,
        "forward_passes_per_gradient_pass": per_map / passes,
    }
    benchmark.extra_info.update(info)
    print(
        f"\n[{method}] {info['model']} {size}px ({passes} grad passes/map): raw {info['raw_images_per_s']:.1f} "
        f"img/s, {info['maps_per_s']:.2f} maps/s = {per_map:.1f} forward passes per map "
        f"({per_map / passes:.2f} per forward+backward pass)"
    )
    assert maps.shape == (n_images, size, size)


@pytest.mark.parametrize("method", METHODS)
def test_gradients_cost_simple_cnn(benchmark, method):
    _run(benchmark, method, "simple-cnn", 64, 64, {}, rounds=3)


@pytest.mark.parametrize("method", METHODS)
def test_gradients_cost_vgg16_reduced(benchmark, method):
    _run(benchmark, method, "vgg16", 128, 8, REDUCED.get(method, {}), rounds=2)
