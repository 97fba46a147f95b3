"""Every registered explainer's cost per map, in batched forward passes of the same model, same run.

Run: ``pytest tests/benchmarks/test_bench_explainers.py --benchmark-enable -s`` (``-k simple``
for the small CNN only). The Markdown cost table is printed at the end of the module.

For each (model, explainer) a round times ``compute_heatmaps(<explainer>, ...)`` (the harness's
heatmap stage: per-batch uint8 conversion, ``ids=``, the masks the spec declares) on N uint8
images, after an untimed call on one image (the trace). The unit is measured in the same run,
on the same model: one image's share of raw batched inference (``predict_proba`` on a pool of
``RAW_IMAGES`` images at ``BATCH`` a call, a warm ``tf.function``), the best of ``RAW_ROUNDS``
taken just before the explainer's rounds (untimed ``setup``: the reference tracks the machine's
load). ``forward passes per map = (seconds per map) / (seconds per raw image)``, from the
fastest round of each; ``extra_info`` holds it beside the passes the explainer declares
(``passes_per_map()``, a forward+backward pass counting as 1: gradient methods measure about
2-3x their declared count on a CNN, since a backward pass costs about two forward passes).

Parameters are the registered defaults (RISE 1000 masks, SmoothGrad-family 50 copies, IG 32
steps, Occlusion on the 9x9 grid, Score-CAM on every channel), on a small CNN at 64 px and on
VGG16 (weights none, pool size 2) at 64 px. Timings are of this machine and its load, not a
claim: read the ratios, not the seconds.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import bench
from bench.pipeline.explain import compute_heatmaps
from bench.pipeline.stages import passes_per_map_of

SIZE = 64
BATCH = 32
RAW_IMAGES = 64
RAW_ROUNDS = 3
#: (model, N images, timed rounds)
MODELS = {"simple-cnn": (16, 3), "vgg16": (2, 1)}
EXPLAINERS = sorted(bench.registry().names("explainer"))

_models: dict[str, object] = {}
_rows: list[dict[str, object]] = []


def _model(name: str):
    if name not in _models:
        extra = {"pool_size": 2} if name == "vgg16" else {}  # a 2x2 feature map at 64 px
        model = bench.create("model", name, weights="none", input_shape=(SIZE, SIZE, 3), num_classes=4, **extra)
        model.keras  # noqa: B018 - build now, not in the timed code
        _models[name] = model
    return _models[name]


def disc_masks(n: int, size: int, seed: int = 0) -> np.ndarray:
    """bool (n, size, size): one disc per image (what an oracle reads)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    out = np.zeros((n, size, size), bool)
    for i in range(n):
        cy, cx = rng.uniform(size / 4, 3 * size / 4, size=2)
        out[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size / 6) ** 2
    return out


def cost_table(rows: list[dict[str, object]]) -> str:
    """The Markdown cost table of measured rows (explainer, role, declared passes, measured per model)."""
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    by = {(r["model"], r["explainer"]): r for r in rows}
    lines = ["| explainer | role | passes_per_map (declared) | "
             + " | ".join(f"forward-pass equivalents, {m} {SIZE} px" for m in models) + " |",
             "|---|---|---|" + "---|" * len(models)]
    for name in dict.fromkeys(str(r["explainer"]) for r in sorted(rows, key=lambda r: str(r["explainer"]))):
        cells = {m: by[(m, name)] for m in models if (m, name) in by}
        declared = {m: r["passes_per_map"] for m, r in cells.items()}
        shown = {"" if d is None else f"{d:g}" for d in declared.values()}
        text = shown.pop() if len(shown) == 1 else "; ".join(f"{m}: {d:g}" for m, d in declared.items())
        role = next(iter(cells.values()))["role"]
        lines.append(f"| {name} | {role} | {text} | "
                     + " | ".join(f"{cells[m]['forward_passes_per_map']:.1f}" if m in cells else "" for m in models)
                     + " |")
    raw = ", ".join(
        f"{m} {float(np.median([1.0 / float(r['raw_seconds_per_image']) for r in rows if r['model'] == m])):.0f}"
        for m in models)
    return f"Raw batched inference, the unit (median over the rows, images/s): {raw}\n\n" + "\n".join(lines)


@pytest.fixture(scope="module", autouse=True)
def print_cost_table():
    yield
    if _rows:
        print("\n\n" + cost_table(_rows) + "\n")


def _run(benchmark, model_name: str, explainer_name: str) -> None:
    n_images, rounds = MODELS[model_name]
    model = _model(model_name)
    entry = bench.registry().get("explainer", explainer_name)
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, (RAW_IMAGES, SIZE, SIZE), dtype=np.uint8)
    images, targets = pool[:n_images], rng.integers(0, 4, n_images)
    ids = np.array([f"img-{i}" for i in range(n_images)])
    declared = tuple(getattr(entry.spec, "masks", ()) or ())
    masks = {m: disc_masks(n_images, SIZE) for m in declared} or None
    explainer = bench.create("explainer", explainer_name)
    raw_times: list[float] = []

    def raw_round() -> None:
        for _ in range(RAW_ROUNDS):
            t0 = time.perf_counter()
            model.predict_proba(pool, batch_size=BATCH)
            raw_times.append(time.perf_counter() - t0)

    def explain(n: int = n_images):
        sub = None if masks is None else {k: v[:n] for k, v in masks.items()}
        return compute_heatmaps(explainer, model, images[:n], targets[:n], ids=ids[:n], masks=sub,
                                batch_size=BATCH, name=explainer_name)

    raw_round()
    explain(1)  # warm: the trace is not timed
    raw_times.clear()
    benchmark.pedantic(explain, setup=raw_round, rounds=rounds, iterations=1)
    seconds_per_map = benchmark.stats.stats.min / n_images
    raw_per_image = min(raw_times) / RAW_IMAGES
    ratio = seconds_per_map / raw_per_image
    passes = passes_per_map_of(explainer)
    info = {
        "explainer": explainer_name,
        "role": entry.role,
        "params": explainer.get_params(),
        "model": model_name,
        "image_size": SIZE,
        "images": n_images,
        "seconds_per_map": seconds_per_map,
        "raw_seconds_per_image": raw_per_image,
        "forward_passes_per_map": ratio,
        "passes_per_map": passes,
    }
    benchmark.extra_info.update({k: v for k, v in info.items() if k != "params"}
                                | {"params": {k: repr(v) for k, v in info["params"].items()}})
    _rows.append(info)
    print(f"\n[{explainer_name}] {model_name} {SIZE}px: {seconds_per_map * 1e3:.2f} ms/map = {ratio:.1f} forward "
          f"passes per map (declared {passes}); raw {1 / raw_per_image:.0f} images/s")


@pytest.mark.parametrize("explainer", EXPLAINERS)
def test_explainer_cost_simple_cnn(benchmark, explainer):
    _run(benchmark, "simple-cnn", explainer)


@pytest.mark.parametrize("explainer", EXPLAINERS)
def test_explainer_cost_vgg16(benchmark, explainer):
    _run(benchmark, "vgg16", explainer)
