"""The Ray executor (the ``bench_executors`` plugin): same results as local, sharded curves,
failures, cache reuse, missing Ray.

One local Ray instance (2 CPUs, no dashboard) serves the whole module. The failing
explainer is a real installed plugin (a fake *.dist-info on sys.path and PYTHONPATH),
because Ray workers are other processes and only see installed plugins.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pandas as pd
import pytest
from _plugin_fixtures import make_distribution

import bench
from bench import pipeline
from bench import pipeline as runner
from bench.cli import main
from bench.config import loading as config_mod
from bench.errors import BenchError
from bench.pipeline.store import read_json

TINY = {
    "preset": "demo",
    "dataset": {
        "name": "synthetic-cxr",
        "params": {"image_size": 32, "per_class": 16, "split": [0.5, 0.1, 0.4]},
    },
    "models": {"names": ["simple-cnn"]},
    "training": {"epochs": 1, "batch_size": 16},
    "explainers": {"names": ["gradcam", "random", "t-ray-raise"]},
    "perturbations": {"names": ["gaussian-noise"]},
    "aopc": {"grid": 3, "max_images": 4, "bootstrap": 200},
    # the built-in curve metrics and the installed plugin's mask metric (t-ray-mass)
    "metrics": {"names": ["aopc", "all"]},
}

RAISING_PLUGIN = """
import os
from pathlib import Path

import numpy as np

from bench import ExplainerSpec, MetricInputs, MetricSpec, hookimpl


class Crashing:
    # kills its Ray worker: once (Ray's retry then succeeds) or always

    def __init__(self, *, always=False):
        self.always = always

    def get_params(self):
        return {"always": self.always}

    def explain(self, model, images, targets):
        if os.getpid() == int(os.environ.get("BENCH_RAY_TEST_DRIVER_PID", "0")):
            raise RuntimeError("the crashing test explainer must only run in a Ray worker")
        marker = Path(os.environ["BENCH_RAY_TEST_MARKERS"]) / ("always" if self.always else "once")
        if self.always or not marker.exists():
            marker.touch()
            os._exit(1)
        n, h, w, _ = images.shape
        return np.repeat(np.arange(h * w, dtype=np.float32).reshape(1, h, w), n, axis=0)


class Raising:
    def get_params(self):
        return {}

    def explain(self, model, images, targets):
        raise RuntimeError("explainer blew up on purpose")


class MaskMass:
    # the share of a heatmap's positive relevance inside the lesion mask (nearest-neighbour upsampled)

    def get_params(self):
        return {}

    def compute(self, data):
        maps = np.clip(np.asarray(data.heatmaps, np.float64), 0, None)
        mask = data.mask("lesion")
        n, h, w = mask.shape
        rows = np.arange(h) * maps.shape[1] // h
        cols = np.arange(w) * maps.shape[2] // w
        up = maps[:, rows][:, :, cols]
        total = up.sum(axis=(1, 2))
        inside = (up * mask).sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"t-ray-mass": inside / total}


@hookimpl
def bench_register_metrics():
    return [MetricSpec(name="t-ray-mass", factory=MaskMass, family="localisation",
                       inputs=MetricInputs(heatmaps=True, masks=("lesion",)), heatmap_transform="positive")]


@hookimpl
def bench_register_explainers():
    return [
        ExplainerSpec(name="t-ray-raise", factory=Raising),
        ExplainerSpec(name="t-ray-crash-once", factory=Crashing),
        ExplainerSpec(name="t-ray-crash-always", factory=lambda: Crashing(always=True)),
    ]
"""

CELL = "synthetic-cxr__simple-cnn__{}__gaussian-noise"


def tiny(out, executor="local", ray=None, **sections):
    cfg = json.loads(json.dumps(TINY))
    cfg["run"] = {"out": str(out), "executor": executor}
    cfg["executors"] = {"params": {"ray": dict(ray or {})}}
    cfg["leaderboard"] = {"control": ""}  # the grid's own null control (if any), whatever the preset names
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


@pytest.fixture(scope="module")
def raising_plugin(tmp_path_factory):
    """An installed plugin (visible to Ray workers through PYTHONPATH) whose explainer raises."""
    root = make_distribution(
        tmp_path_factory.mktemp("plugin"), "bench-ray-test-plugin", "0.1",
        {"ray_test": "bench_ray_test_plugin"}, {"bench_ray_test_plugin": RAISING_PLUGIN},
    )
    markers = tmp_path_factory.mktemp("crash-markers")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_RAY_TEST_MARKERS", str(markers))
        mp.setenv("BENCH_RAY_TEST_DRIVER_PID", str(os.getpid()))
        mp.syspath_prepend(str(root))
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
        bench.registry(reload=True)
        yield root
    bench.registry(reload=True)


@pytest.fixture(scope="module")
def ray_instance(raising_plugin):
    ray = pytest.importorskip("ray")
    # the workers inherit this process's environment (PYTHONPATH, KERAS_HOME, TF_CPP_MIN_LOG_LEVEL)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def runs(ray_instance, tmp_path_factory):
    """The same tiny grid, local and on Ray (curves in shards of 2 images)."""
    local_out = tmp_path_factory.mktemp("local")
    ray_out = tmp_path_factory.mktemp("ray")
    runner.clear_memo()
    local = bench.run(tiny(local_out), quiet=True)
    runner.clear_memo()  # the driver starts cold, as a fresh `bench run` would
    on_ray = bench.run(tiny(ray_out, "ray", ray={"shard_images": 2}), quiet=True)
    return local_out, local, ray_out, on_ray


def _by_id(result):
    return {c.cell_id: c for c in result.cells}


def test_ray_grid_equals_local(runs):
    local_out, local, ray_out, on_ray = runs
    assert read_json(on_ray.run_dir / "manifest.json")["executor"] == "ray"
    lcells, rcells = _by_id(local), _by_id(on_ray)
    assert set(lcells) == set(rcells) and len(rcells) == 3
    for cell_id in (CELL.format("gradcam"), CELL.format("random")):
        lc, rc = lcells[cell_id], rcells[cell_id]
        assert lc.status == rc.status == "ok", rc.error
        assert rc.n_images == lc.n_images >= 3  # so the curves ran in 2 shards
        assert rc.classification == lc.classification
        assert rc.orders == lc.orders == ["morf", "lerf", "insertion"]
        assert list(rc.metrics) == list(lc.metrics) and {"aopc", "lerf-aopc", "abpc", "t-ray-mass"} <= set(rc.metrics)
        for name, lm in lc.metrics.items():
            rm = rc.metrics[name]
            assert rm.status == lm.status == "ok", (name, rm.error)
            np.testing.assert_allclose(rm.value, lm.value, atol=1e-5)
            np.testing.assert_allclose(rm.ci, lm.ci, atol=1e-5)
            assert rm.n == lm.n and rm.n_excluded == lm.n_excluded
        lmet = np.load(local.run_dir / lc.metrics_file, allow_pickle=False)
        rmet = np.load(on_ray.run_dir / rc.metrics_file, allow_pickle=False)
        assert set(lmet.files) == set(rmet.files)
        for key in lmet.files:
            if key != "ids":
                np.testing.assert_allclose(rmet[key], lmet[key], atol=1e-5)
        larr = np.load(local.run_dir / lc.curves_file, allow_pickle=False)
        rarr = np.load(on_ray.run_dir / rc.curves_file, allow_pickle=False)
        assert set(larr.files) == set(rarr.files)
        np.testing.assert_array_equal(rarr["ids"], larr["ids"])
        for order in ("morf", "lerf"):
            np.testing.assert_allclose(rarr[f"{order}_curves"], larr[f"{order}_curves"], atol=1e-5)
            np.testing.assert_allclose(rarr[f"{order}_per_image"], larr[f"{order}_per_image"], atol=1e-5)
            np.testing.assert_array_equal(rarr[f"{order}_order"], larr[f"{order}_order"])
        # the same record layout: the leaderboard cannot tell the executors apart
        assert set(rc.to_dict()) == set(lc.to_dict())
    # the published leaderboards carry the same numbers
    lb_local = pd.read_csv(local_out / "leaderboard.csv")
    lb_ray = pd.read_csv(ray_out / "leaderboard.csv")
    assert list(lb_local.columns) == list(lb_ray.columns) and len(lb_ray) == len(lb_local) >= 2
    timing = {"evaluate_seconds", "explain_seconds", "passes_per_second", "seconds_per_map"}
    numeric = [c for c in lb_local.columns if pd.api.types.is_numeric_dtype(lb_local[c]) and c not in timing]
    assert {"aopc", "aopc_ci_low", "lerf-aopc", "abpc", "t-ray-mass", "gain_over_baseline", "n_images"} <= set(numeric)
    lb_local, lb_ray = lb_local.sort_values("cell_id"), lb_ray.sort_values("cell_id")
    np.testing.assert_allclose(lb_ray[numeric].to_numpy(float), lb_local[numeric].to_numpy(float), atol=1e-5)


def test_raising_explainer_fails_its_cell_only(runs):
    _, local, _, on_ray = runs
    failed = _by_id(on_ray)[CELL.format("t-ray-raise")]
    assert failed.status == "failed"
    assert failed.stage == "explain"
    assert failed.error == _by_id(local)[CELL.format("t-ray-raise")].error
    assert "explainer blew up on purpose" in failed.error
    assert "Ray worker" in failed.traceback and "blew up" in failed.traceback
    on_disk = read_json(on_ray.run_dir / "cells" / f"{CELL.format('t-ray-raise')}.json")
    assert on_disk["status"] == "failed" and on_disk["stage"] == "explain"
    assert not on_ray.ok and len(on_ray.failed) == 1
    assert read_json(on_ray.run_dir / "manifest.json")["failed"] == [CELL.format("t-ray-raise")]


def test_cached_cells_are_not_submitted_and_caches_are_shared(runs, monkeypatch):
    from bench_executors.ray_executor import RayExecutor

    local_out, local, ray_out, on_ray = runs

    def no_ray(self, *args, **kwargs):
        raise AssertionError("a cached cell was submitted to Ray")

    monkeypatch.setattr(RayExecutor, "_connect", no_ray)
    runner.clear_memo()
    ok_only = {"names": ["gradcam", "random"]}
    again = bench.run(tiny(ray_out, "ray", explainers=ok_only), quiet=True, leaderboard=False)
    assert again.ok
    for cell_id, cell in _by_id(again).items():
        first = _by_id(on_ray)[cell_id]
        assert {n: (m.value, m.ci, m.n) for n, m in cell.metrics.items()} == {
            n: (m.value, m.ci, m.n) for n, m in first.metrics.items()}
        assert cell.timings.forward_passes == first.timings.forward_passes
    # Ray's work sits under the very keys the local executor looks up, and the other way round
    for out in (ray_out, local_out):
        plan = runner.make_plan(config_mod.load_config(tiny(out, explainers=ok_only)))
        context = pipeline.RunContext(plan=plan, stages=pipeline.Stages(plan, quiet=True), run_dir=out / "unused",
                                      run_id="probe", quiet=True)
        assert all(context.is_cached(task) for task in plan.cells)


def test_metrics_that_need_no_curves_finish_on_the_heatmaps(runs):
    """A grid whose metrics read no curves submits no curve shards; its cells finish with their heatmaps."""
    _, _, ray_out, _ = runs
    runner.clear_memo()
    cfg = tiny(ray_out, "ray", explainers={"names": ["random"], "params": {"random": {"seed": 7}}},
               metrics={"names": ["t-ray-mass"]})
    result = bench.run(cfg, quiet=True, leaderboard=False)
    assert result.ok, [c.error for c in result.failed]
    (cell,) = result.cells
    assert cell.orders == [] and cell.curves_file is None and cell.timings.forward_passes == 0
    assert cell.metrics["t-ray-mass"].ok and 0 <= cell.metrics["t-ray-mass"].value <= 1


def test_dead_worker_is_retried_then_its_cell_recorded_failed(runs):
    _, _, ray_out, _ = runs
    runner.clear_memo()
    crashing = {"names": ["t-ray-crash-once", "t-ray-crash-always"]}
    result = bench.run(tiny(ray_out, "ray", ray={"max_retries": 1}, explainers=crashing), quiet=True,
                       leaderboard=False)
    once, always = (_by_id(result)[CELL.format(e)] for e in crashing["names"])
    markers = os.environ["BENCH_RAY_TEST_MARKERS"]
    assert os.path.exists(os.path.join(markers, "once"))  # it did kill a worker, then Ray retried it
    assert once.status == "ok", once.error
    assert once.n_images >= 3 and once.orders == ["morf", "lerf", "insertion"]
    assert all(m.ok for m in once.metrics.values()), {n: (m.status, m.error) for n, m in once.metrics.items() if not m.ok}
    assert always.status == "failed"
    assert always.stage == "explain"
    assert always.error.startswith("Ray task (heatmaps) failed after 1 retries: WorkerCrashedError: ")
    assert "\x1b" not in always.error


def test_sharded_curves_merged_equal_unsharded(runs):
    """Shards computed one by one (the Ray task functions, called here) and merged give the
    unsharded curves, stored under the key the local executor reads."""
    from bench_executors.ray_executor import merge_stage, shard_stage

    local_out, local, _, _ = runs
    cfg = config_mod.load_config(tiny(local_out))
    plan = runner.make_plan(cfg)
    stages = pipeline.Stages(plan, quiet=True)
    graph = pipeline.STAGE_GRAPH
    ctx = {"config": cfg, "key": "sharding-test", "cache_root": str(stages.cache.root), "cwd": os.getcwd()}
    (task,) = [t for t in plan.cells if t.explainer == "gradcam"]
    heat = graph.compute(stages, next(j for j in graph.cell_jobs(plan, task) if j.stage == "heatmaps"))
    n = heat.n_images
    assert pipeline.shard_bounds(4, 3) == [(0, 3), (3, 4)] and pipeline.shard_bounds(4, 1)[-1] == (3, 4)
    assert n >= 3
    for job in [j for j in graph.cell_jobs(plan, task) if j.stage == "curves"]:
        whole = graph.compute(stages, job)  # the local executor's result (from the cache)
        assert graph.images(stages, job) == n
        shards = [shard_stage(ctx, job.to_dict(), s, e) for s, e in pipeline.shard_bounds(n, 1)]
        assert all(s["ok"] for s in shards), shards
        merged = merge_stage(ctx, job.to_dict(), *shards[::-1])  # in image order whatever the arrival order
        assert merged["ok"], merged
        assert merged["key"] == whole.key and merged["shards"] == n  # stored under the local key
        assert merged["forward_passes"] == whole.forward_passes
        again = graph.compute(stages, job)  # what the cache now holds: the merged result
        np.testing.assert_array_equal(again.ids, whole.ids)
        np.testing.assert_allclose(again.curves, whole.curves, atol=1e-5)
        np.testing.assert_allclose(again.per_image, whole.per_image, atol=1e-5)
        np.testing.assert_array_equal(again.region_order, whole.region_order)
    # shards that do not tile the images, or cover other images, are refused with the job's stage
    parts = [s["shard"] for s in shards]
    with pytest.raises(pipeline.CellFailure, match="do not tile") as info:
        graph.merge_shards(stages, job, [parts[0], parts[2]])
    assert info.value.stage == "evaluate" and info.value.job == job.id
    bad = merge_stage(ctx, job.to_dict(), shards[0], shards[2])
    assert not bad["ok"] and bad["stage"] == "evaluate" and "do not tile" in bad["error"]


def test_in_process_plugin_cells_run_on_the_driver(runs, monkeypatch):
    from bench_executors.ray_executor import RayExecutor

    _, _, ray_out, _ = runs

    class Center:
        def get_params(self):
            return {}

        def explain(self, model, images, targets):
            n, h, w, _ = images.shape
            yy, xx = np.mgrid[0:h, 0:w]
            return np.repeat(-np.hypot(yy - h / 2, xx - w / 2)[None].astype(np.float32), n, axis=0)

    class Plugin:
        @bench.hookimpl
        def bench_register_explainers(self):
            return [bench.ExplainerSpec(name="t-inproc-center", factory=Center)]

    def no_ray(self, *args, **kwargs):
        raise AssertionError("an in-process plugin's cell was submitted to Ray")

    monkeypatch.setattr(RayExecutor, "_connect", no_ray)
    bench.register_plugin(Plugin(), name="ray-inproc-test")
    try:
        runner.clear_memo()
        result = bench.run(
            tiny(ray_out, "ray", explainers={"names": ["t-inproc-center"]}), quiet=True, leaderboard=False
        )
    finally:
        bench.unregister_plugin("ray-inproc-test")
    assert result.ok, [c.error for c in result.failed]
    assert result.cells[0].n_images >= 3


def test_executor_params_and_gpu_request(monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("BENCH_RAY_GPUS", raising=False)
    from bench_executors.ray_executor import RayExecutor

    ex = RayExecutor(address="auto", num_gpus=0.5, shard_images=16)
    assert ex.get_params()["address"] == "auto" and ex.get_params()["num_gpus"] == 0.5
    assert ex._gpus({"run": {}}) == 0.5
    assert RayExecutor()._gpus({"run": {"ray_gpus": 1}}) == 1.0
    assert RayExecutor()._gpus({"run": {}}) == 0.0
    assert ex._shard_size(100, 0.5) == 16
    monkeypatch.setenv("BENCH_RAY_GPUS", "1")
    assert RayExecutor()._gpus({"run": {}}) == 1.0
    monkeypatch.setenv("BENCH_RAY_GPUS", "lots")
    with pytest.raises(bench.errors.ConfigError, match="BENCH_RAY_GPUS"):
        RayExecutor()._gpus({"run": {}})


def test_missing_ray_fails_at_once_with_the_install_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    monkeypatch.delitem(sys.modules, "bench_executors.ray_executor", raising=False)
    with pytest.raises(BenchError, match=r"pip install 'saliency-bench\[ray\]'"):
        pipeline.get_executor("ray")
    with pytest.raises(BenchError, match="--executor ray .*needs the module 'ray'"):
        bench.run(tiny(tmp_path, "ray"), quiet=True)
    assert not (tmp_path / "runs").exists()  # nothing started
    code = main(["run", "--preset", "demo", "--executor", "ray", "--out", str(tmp_path), "--quiet"])
    assert code != 0
    assert "pip install 'saliency-bench[ray]'" in capsys.readouterr().err
