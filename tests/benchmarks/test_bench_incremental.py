"""Incremental MoRF inference vs full passes, side by side in the same run.

Run: ``pytest tests/benchmarks/test_bench_incremental.py --benchmark-only -s``.

Each round times ``evaluate_aopc`` with the strategy under test and, just before it
(pytest-benchmark's untimed ``setup``), the same evaluation with ``strategy="full"``
(same images, heatmaps, targets, batch size). The ratio full seconds / strategy
seconds uses the fastest round of each (robust to other load on the machine) and
is stored in ``benchmark.extra_info`` and printed. The curves of both are checked
to agree within 1e-5 (weights re-initialised so that they move along the sequence).
Targets (issue 7): VGG16 at 299 >= 3x; ``auto`` never slower than full (ratio ~1 where
it chooses full: DenseNet201, simple-cnn).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _bench_models import build_model

from bench.engine.curves import evaluate_aopc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_incremental import calibrate, reinit  # noqa: E402

BATCH = 64

CASES = [
    # name, size, strategy, images, rounds
    ("vgg16", 299, "incremental", 1, 2),
    ("densenet201", 299, "auto", 1, 2),
    ("simple-cnn", 64, "auto", 4, 3),
    ("simple-cnn", 64, "incremental", 4, 3),
]


@pytest.mark.parametrize(("name", "size", "strategy", "n_images", "rounds"), CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_incremental_vs_full(benchmark, name: str, size: int, strategy: str, n_images: int,
                             rounds: int) -> None:
    model = build_model(name, size)
    rng = np.random.default_rng(0)
    images = rng.random((n_images, size, size, 3)).astype(np.float32)
    heatmaps = rng.random((n_images, 9, 9)).astype(np.float32)
    reinit(model.keras)
    calibrate(model.keras, images)
    targets = rng.integers(0, 4, n_images)

    def run(s: str, grid: int = 9):
        return evaluate_aopc(model, images, targets, heatmaps, grid=grid, batch_size=BATCH, strategy=s)

    full_times: list[float] = []
    full_results: list = []

    def full_round() -> None:
        t0 = time.perf_counter()
        full_results.append(run("full"))
        full_times.append(time.perf_counter() - t0)

    # warm both (traces)
    run("full", grid=3)
    run(strategy, grid=3)
    result = benchmark.pedantic(lambda: run(strategy), setup=full_round, rounds=rounds, iterations=1)

    t_strategy = float(benchmark.stats.stats.min)
    t_full = min(full_times)
    ratio = t_full / t_strategy
    diff = float(np.abs(result.curves - full_results[0].curves).max())
    benchmark.extra_info.update(
        {
            "full_seconds": t_full,
            "strategy_seconds": t_strategy,
            "speedup_vs_full": ratio,
            "used": result.strategy,
            "strategy_info": result.strategy_info,
            "max_abs_diff": diff,
            "passes": int(result.forward_passes),
        }
    )
    print(
        f"\n{name}@{size} {strategy} (used {result.strategy}): full {t_full:.2f}s, "
        f"{strategy} {t_strategy:.2f}s, speedup {ratio:.2f}x, max |diff| {diff:.2e}, "
        f"info {result.strategy_info}"
    )
    assert diff <= 1e-5
    assert float(np.ptp(full_results[0].curves, axis=1).min()) > 1e-4
