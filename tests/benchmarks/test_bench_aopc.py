"""AOPC engine throughput vs raw batched ``model(x)``, measured in the same run.

Run: ``pytest tests/benchmarks/test_bench_aopc.py --benchmark-only -s``.

Each round times ``evaluate_aopc`` (N images x (L+1) = 82 forward passes each,
everything included: ordering, perturbation, bootstrap CI) and, just before it
(pytest-benchmark's untimed ``setup``), the raw baseline: the same number of
forward passes of the same model at the same batch size through a warm
``tf.function`` on float32 batches already in memory. The ratio
(engine passes/s) / (raw passes/s) uses the fastest round of each, which is
robust to other load on the machine. Target: >= 0.95. The engine runs full passes here
(``strategy="full"``; the default ``auto`` may go incremental and beat raw inference:
that is test_bench_incremental.py's measure).
"""

from __future__ import annotations

import time

import numpy as np
from _bench_models import build_model
from _readme import readme_row

from bench.engine.curves import evaluate_aopc
from bench.engine.forward import FullForward

BATCH = 64
ROUNDS = 5


_model = build_model


def _run(benchmark, name: str, size: int, n_images: int, grid: int = 9, rounds: int = ROUNDS) -> None:
    model = _model(name, size)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, size, size), dtype=np.uint8)
    targets = rng.integers(0, 4, n_images)
    heatmaps = rng.random((n_images, 9, 9)).astype(np.float32)
    passes = n_images * (grid * grid + 1)

    raw = FullForward()
    raw.prepare(model, batch_size=BATCH, image_shape=(size, size, 3))
    xs = rng.random((BATCH, size, size, 3)).astype(np.float32)
    raw_times: list[float] = []

    def raw_round() -> None:
        t0 = time.perf_counter()
        done = 0
        while done < passes:
            b = min(BATCH, passes - done)
            raw.predict(xs[:b])
            done += b
        raw_times.append(time.perf_counter() - t0)

    def engine():
        return evaluate_aopc(model, images, targets, heatmaps, grid=grid, batch_size=BATCH, strategy="full")

    # warm both (traces, noise fields allocation paths)
    raw_round()
    engine()
    raw_times.clear()
    result = benchmark.pedantic(engine, setup=raw_round, rounds=rounds, iterations=1)
    engine_best = benchmark.stats.stats.min
    raw_best = min(raw_times)
    ratio = raw_best / engine_best
    info = {
        "model": getattr(model, "name", name),
        "image_size": size,
        "images": n_images,
        "forward_passes": passes,
        "batch_size": BATCH,
        "raw_passes_per_s": passes / raw_best,
        "engine_passes_per_s": passes / engine_best,
        "ratio": ratio,
    }
    benchmark.extra_info.update(info)
    readme_row(benchmark, f"AOPC engine (full passes) vs raw `model(x)`, {info['model']} {size} px", ratio,
               unit="", goal=">= 0.95", detail=f"{n_images} images x {grid * grid + 1} steps")
    print(
        f"\n[aopc] {info['model']} {size}px: raw {info['raw_passes_per_s']:.1f} passes/s, "
        f"engine {info['engine_passes_per_s']:.1f} passes/s, ratio {ratio:.3f} (target >= 0.95)"
    )
    assert result.forward_passes == passes  # a sanity check, never a timing


def test_aopc_throughput_simple_cnn(benchmark):
    _run(benchmark, "simple-cnn", 64, 16)


def test_aopc_throughput_vgg16_reduced(benchmark):
    _run(benchmark, "vgg16", 128, 2, rounds=3)  # the smallest size the study head takes
