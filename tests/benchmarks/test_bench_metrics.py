"""What each metric costs, as a ratio to the study's MoRF AOPC on the same cell, measured in one run.

Run: ``pytest tests/benchmarks/test_bench_metrics.py --benchmark-only -s``.

One round is one ``bench.run`` of a single demo-like cell (synthetic-cxr, simple-cnn,
Grad-CAM, Gaussian noise; the demo's 6x6 grid and metric budgets) with every registered
metric. A first, untimed run trains the model, explains the images and traces the model's
call (else the first curve computed, MoRF's, would pay the trace); the timed round then
removes the cached curves and metric results and runs again in the same process, so every
curve and every metric is computed, on the same model, heatmaps and images. Each
cell record holds each metric's cost (``metric_timings``): its own forward passes (as it
reports them; heatmaps at the explainer's passes per map) and seconds, and the passes and
seconds of the curves it reads (a curve shared by several metrics is counted in full for
each: what the metric would cost alone). The table prints, per metric, those totals and
their ratio to ``aopc``'s (one MoRF curve: N x (L+1) passes), all from the same run.
"""

from __future__ import annotations

import math
import shutil

from bench_faithfulness import correlation
from bench_sanity import randomisation

import bench
from bench import pipeline as runner
from bench.pipeline.cell import metric_timings

CONFIG = {
    "preset": "demo",
    "dataset": {"name": "synthetic-cxr", "params": {"image_size": 64, "per_class": 150, "lesion_contrast": 1.5}},
    "models": {"names": ["simple-cnn"]},
    "training": {"epochs": 10, "batch_size": 32},
    "explainers": {"names": ["gradcam"]},
    "perturbations": {"names": ["gaussian-noise"]},
    "aopc": {"grid": 6, "max_images": 20, "bootstrap": 200},
    "metrics": {"names": ["aopc", "all"]},
    "leaderboard": {"formats": ["csv"], "figures": False},
}


def _table(costs: dict[str, dict]) -> tuple[list[dict], str]:
    ref = costs["aopc"]
    ref_passes, ref_seconds = ref["total_passes"], ref["total_seconds"]
    rows = []
    for name, cost in costs.items():
        own = cost["forward_passes"]
        rows.append({
            "metric": name,
            "passes": cost["total_passes"] if own is not None else math.nan,
            "passes_ratio": (cost["total_passes"] / ref_passes) if own is not None else math.nan,
            "seconds": cost["total_seconds"],
            "seconds_ratio": cost["total_seconds"] / ref_seconds,
            "curves": ", ".join(cost["curves"]) or "-",
        })
    rows.sort(key=lambda r: (-(r["passes_ratio"] if math.isfinite(r["passes_ratio"]) else -1), r["metric"]))
    lines = ["| metric | forward passes | x AOPC | seconds | x AOPC | curves read |",
             "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        passes = "?" if not math.isfinite(r["passes"]) else f"{r['passes']:.0f}"
        ratio = "?" if not math.isfinite(r["passes_ratio"]) else f"{r['passes_ratio']:.2f}"
        lines.append(f"| {r['metric']} | {passes} | {ratio} | {r['seconds']:.3f} | {r['seconds_ratio']:.2f} | "
                     f"{r['curves']} |")
    return rows, "\n".join(lines)


def test_metric_costs_relative_to_morf_aopc(benchmark, tmp_path):
    rounds: list[dict] = []
    cfg = {**CONFIG, "run": {"out": str(tmp_path / "results")}}

    def one_run() -> None:
        for stage in ("curves", "metrics"):  # everything downstream of the heatmaps is computed again
            shutil.rmtree(tmp_path / "results" / "cache" / stage, ignore_errors=True)
        # and the metrics' in-process memos (shared by the cells of a model): a first cell's cost
        randomisation.clear_copies()
        correlation.clear_memo()
        result = bench.run(cfg, quiet=True)
        assert result.ok, [c.error for c in result.failed]
        (cell,) = result.cells
        failed = {k: m.error for k, m in cell.metrics.items() if m.status != "ok"}
        rounds.append({"cell": cell, "costs": metric_timings(cell), "failed": failed})

    runner.clear_memo()
    one_run()  # warm: train, explain, trace (untimed)
    benchmark.pedantic(one_run, rounds=1, iterations=1)
    last = rounds[-1]
    rows, table = _table(last["costs"])
    cell = last["cell"]
    benchmark.extra_info["n_images"] = cell.n_images
    benchmark.extra_info["metrics"] = {r["metric"]: {k: v for k, v in r.items() if k != "metric"} for r in rows}
    print(f"\n[metrics] one cell: {cell.n_images} images, grid 6x6 (L+1 = 37 steps), gradcam on simple-cnn at 64 px; "
          f"AOPC = one MoRF curve, {last['costs']['aopc']['total_passes']:.0f} passes in "
          f"{last['costs']['aopc']['total_seconds']:.3f} s\n{table}")
    if last["failed"]:
        print("not ok:", last["failed"])
