"""Grad-CAM throughput vs raw inference of the same model, measured in the same run.

Run: ``pytest tests/benchmarks/test_bench_gradcam.py --benchmark-only -s``.

Each round times ``compute_heatmaps(GradCAM(), ...)`` on N uint8 images and,
just before it (untimed ``setup``), raw batched inference on the same images
at the same batch size (``predict_proba``: per-batch conversion plus a warm
``tf.function``). The ratio (Grad-CAM images/s) / (raw images/s), from the
fastest round of each, is the cost of Grad-CAM in forward passes (the design
note: about 1 / 1.04 for the study's 9x9 head).
"""

from __future__ import annotations

import time

import numpy as np
from _bench_models import build_model
from _readme import readme_row
from bench_gradcam.gradcam import GradCAM

from bench.pipeline.explain import compute_heatmaps

BATCH = 32
ROUNDS = 5


_model = build_model


def _run(benchmark, name: str, size: int, n_images: int, rounds: int = ROUNDS) -> None:
    model = _model(name, size)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, size, size), dtype=np.uint8)
    targets = rng.integers(0, 4, n_images)
    explainer = GradCAM()
    raw_times: list[float] = []

    def raw_round() -> None:
        t0 = time.perf_counter()
        model.predict_proba(images, batch_size=BATCH)
        raw_times.append(time.perf_counter() - t0)

    def gradcam():
        return compute_heatmaps(explainer, model, images, targets, batch_size=BATCH)

    raw_round()
    maps = gradcam()
    raw_times.clear()
    benchmark.pedantic(gradcam, setup=raw_round, rounds=rounds, iterations=1)
    cam_best = benchmark.stats.stats.min
    raw_best = min(raw_times)
    ratio = raw_best / cam_best
    info = {
        "model": getattr(model, "name", name),
        "image_size": size,
        "images": n_images,
        "batch_size": BATCH,
        "raw_images_per_s": n_images / raw_best,
        "gradcam_images_per_s": n_images / cam_best,
        "ratio": ratio,
        "forward_passes_per_map": 1 / ratio,
        "map_shape": list(maps.shape[1:]),
    }
    benchmark.extra_info.update(info)
    readme_row(benchmark, f"Grad-CAM maps/s vs raw inference, {info['model']} {size} px", ratio, unit="",
               goal="about 1", detail=f"= {1 / ratio:.2f} forward passes per map")
    print(
        f"\n[gradcam] {info['model']} {size}px: raw {info['raw_images_per_s']:.1f} img/s, "
        f"Grad-CAM {info['gradcam_images_per_s']:.1f} img/s, ratio {ratio:.3f} "
        f"(= {1 / ratio:.2f} forward passes per map)"
    )
    assert maps.shape[0] == n_images


def test_gradcam_throughput_simple_cnn(benchmark):
    _run(benchmark, "simple-cnn", 64, 256)


def test_gradcam_throughput_vgg16_reduced(benchmark):
    _run(benchmark, "vgg16", 128, 16, rounds=3)  # the smallest size the study head takes
