"""``bench run --dry-run`` shows what the plan will cost: forward passes per cell and model, the time
from a calibration (``--calibrate``); a finished cell records predicted vs measured.

The pass counts are checked against a count written here from the config's numbers; no timing
value is asserted anywhere.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from _tiny_config import tiny

import bench
from bench.cli import main
from bench.config.loading import load_config
from bench.pipeline import make_plan
from bench.pipeline.estimate import (
    calibration_dir,
    estimate_plan,
    find_calibration,
    read_calibration,
)
from bench.pipeline.record import CellRecord, CostEstimate
from bench.plugin.specs import MetricInputs, MetricSpec

GRID = 2
STEPS = GRID * GRID + 1  # regions + the unperturbed image
IMAGES = 3  # aopc.max_images of the tiny config
OCCLUSION_GRID = 2


def _plan(out: Path, **sections):
    sections.setdefault("explainers", {"names": ["random", "gradcam", "occlusion"],
                                       "params": {"occlusion": {"grid": OCCLUSION_GRID}}})
    sections.setdefault("metrics", {"names": ["aopc", "lerf-aopc"]})
    return make_plan(load_config(None, overrides=tiny(out, **sections)))


def _cells(est):
    return {c.task.explainer: c for c in est.cells}


def test_pass_counts_equal_an_independent_count(tmp_path):
    est = estimate_plan(_plan(tmp_path / "r"))
    assert est.steps == STEPS and not est.cache_probed  # nothing cached yet: everything counted
    per_map = {"random": 0, "gradcam": 1, "occlusion": OCCLUSION_GRID * OCCLUSION_GRID + 1}
    curves = 2 * IMAGES * STEPS  # aopc reads morf, lerf-aopc reads lerf: both on every explained image
    cells = _cells(est)
    assert set(cells) == set(per_map)
    for name, cell in cells.items():
        assert cell.images == IMAGES and not cell.images_exact  # at most the cap: the model is not trained
        assert cell.explain_passes == per_map[name] * IMAGES
        assert [(c.order, c.perturbation, c.images, c.steps) for c in cell.curves] == [
            ("morf", "gaussian-noise", IMAGES, STEPS), ("lerf", "gaussian-noise", IMAGES, STEPS)]
        assert cell.curve_passes == curves
        assert cell.metrics == {"aopc": 0.0, "lerf-aopc": 0.0}  # they read curves only
        assert cell.passes == per_map[name] * IMAGES + curves and not cell.unknown
    # the dataset is not cached: its split_sizes() says the splits (4 classes x 20 images, 80/10/10),
    # simple-cnn trains end to end for 3 epochs: epochs x (train forward + backward + val), then test
    from bench.pipeline.estimate import BACKWARD_PASSES

    train = 3 * (64 * (1 + BACKWARD_PASSES) + 8) + 8
    assert est.models["simple-cnn"].train_passes == train and "training simple-cnn" not in est.unknown
    assert est.passes == train + sum(c.passes for c in cells.values())


def test_metrics_that_re_explain_plan_their_cost_from_the_explainers(tmp_path):
    """The sanity, robustness and faithfulness metrics say before a run what a cell will cost
    (``planned_passes``): heatmaps per image x the explainer's passes per map, within their budget."""
    metrics = {"names": ["aopc", "max-sensitivity", "random-logit", "model-randomisation",
                         "faithfulness-correlation"],
               "max_images": {"random-logit": 2},
               "params": {"max-sensitivity": {"n_samples": 3}, "model-randomisation": {"max_blocks": 2},
                          "faithfulness-correlation": {"n_subsets": 5}}}
    cells = _cells(estimate_plan(_plan(tmp_path / "r", metrics=metrics)))
    per_map = {"random": 0, "gradcam": 1, "occlusion": OCCLUSION_GRID * OCCLUSION_GRID + 1}
    for name, cell in cells.items():
        p = per_map[name]
        assert cell.metrics["max-sensitivity"] == IMAGES * (3 + 1) * p
        assert cell.metrics["random-logit"] == 2 * 2 * p  # its budget: 2 of the 3 images
        assert cell.metrics["model-randomisation"] == IMAGES * (2 + 1) * p  # at most max_blocks + 1 maps
        assert cell.metrics["faithfulness-correlation"] == IMAGES * (5 + 1)  # whatever the explainer
        assert not [u for u in cell.unknown if u.startswith("metric")]


def test_budgets_reduce_the_counts(tmp_path):
    full = _cells(estimate_plan(_plan(tmp_path / "a")))["gradcam"]
    # aopc.max_images: fewer explained images, fewer maps and curve rows
    fewer = _cells(estimate_plan(_plan(tmp_path / "b", aopc={"grid": GRID, "max_images": 2})))["gradcam"]
    assert fewer.images == 2 and fewer.explain_passes == 2 and fewer.curve_passes == 2 * 2 * STEPS
    # metrics.max_images: only the curves that budgeted metric alone reads
    budget = _cells(estimate_plan(_plan(tmp_path / "c", metrics={"names": ["aopc", "lerf-aopc"],
                                                                 "max_images": {"lerf-aopc": 1}})))["gradcam"]
    assert {c.order: c.images for c in budget.curves} == {"morf": IMAGES, "lerf": 1}
    assert budget.curve_passes == (IMAGES + 1) * STEPS < full.curve_passes
    # a budget on one of two metrics reading the same curves leaves those curves whole
    both = _cells(estimate_plan(_plan(tmp_path / "d", metrics={"names": ["aopc", "abpc"],
                                                               "max_images": {"aopc": 1}})))["gradcam"]
    assert {c.order: c.images for c in both.curves}["morf"] == IMAGES


def _dry(capsys, out: Path, *extra: str) -> tuple[str, str]:
    args = ["run", "--dry-run", "--out", str(out), "--set", f'dataset.params={_inline(tiny(out)["dataset"]["params"])}',
            "--set", 'models.names=["simple-cnn"]', "--set", 'explainers.names=["random"]',
            "--set", 'metrics.names=["aopc"]', "--set", f"aopc.grid={GRID}", "--set", f"aopc.max_images={IMAGES}",
            *extra]
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out, captured.err


def _inline(d: dict) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in d.items()) + " }"


def test_dry_run_without_calibration_shows_passes_and_how_to_get_a_time(tmp_path, capsys):
    out, _ = _dry(capsys, tmp_path / "r")
    assert re.search(r"simple-cnn\s+random\s+gaussian-noise\s+3\s+0\s+15\s+0\s+15\s+-", out), out
    assert "no time estimate for simple-cnn" in out and "--calibrate" in out
    assert "about" not in out  # no time without a calibration
    assert not (tmp_path / "r" / "cache" / "calibration").exists()
    assert max(len(line) for line in out.splitlines()) <= 120


def test_calibrate_writes_a_calibration_a_plain_dry_run_reads(tmp_path, capsys):
    results = tmp_path / "r"
    _, err = _dry(capsys, results, "--calibrate")
    assert "calibrated simple-cnn" in err
    files = list(calibration_dir(results).glob("simple-cnn-*.json"))
    assert len(files) == 1 and read_calibration(files[0]).passes_per_second > 0
    out, _ = _dry(capsys, results)  # a later plain dry run: the time comes from the file
    assert "on this machine" in out and "no time estimate" not in out
    out, _ = _dry(capsys, results, "--json")
    est = json.loads(out)["estimate"]
    assert est["uncalibrated"] == [] and est["seconds"] is not None
    assert est["cells"][0]["passes"] == IMAGES * STEPS  # random: 0 passes per map; aopc: the morf curves
    # a corrupt calibration file is named and ignored
    files[0].write_text("{not json")
    out, err = _dry(capsys, results)
    assert str(files[0]) in err and "corrupt" in err
    assert "no time estimate for simple-cnn" in out


def test_record_round_trips_predicted_and_measured():
    base = {"dataset": "d", "model": "m", "explainer": "e", "perturbation": "p", "status": "ok"}
    rec = CellRecord.from_dict({"schema": 2, **base})
    assert rec.estimate is None  # a record written before estimates
    est = CostEstimate(predicted_passes=33.0, predicted_seconds=0.5, measured_passes=33.0,
                       measured_seconds=0.75, passes_per_second=66.0, calibration="m-abc.json", unknown=["metric x"])
    rec.estimate = est
    back = CellRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert back.estimate == est and back.estimate.ratio == pytest.approx(1.5)
    assert CellRecord.from_dict({"schema": 2, **base, "estimate": {"version": 99}}).estimate is None


def test_a_calibrated_run_records_both_and_a_dry_run_then_sees_it_cached(tmp_path):
    results = tmp_path / "r"
    plan = _plan(results, explainers={"names": ["random", "gradcam"]})
    cfg = plan.config
    uncal = bench.run(cfg, quiet=True)  # no calibration: nothing predicted
    assert uncal.ok and all(c.estimate is None for c in uncal.cells)
    from bench.pipeline.estimate import calibrate_model

    calibrate_model(plan, "simple-cnn", (32, 32), seconds=0.2)
    assert find_calibration(plan, "simple-cnn", (32, 32)) is not None
    result = bench.run(cfg, quiet=True)
    assert result.ok
    by_explainer = {c.explainer: c for c in result.cells}
    for name, per_map in {"random": 0, "gradcam": 1}.items():
        rec = by_explainer[name]
        n = rec.n_images
        assert rec.estimate is not None
        assert rec.estimate.predicted_passes == per_map * n + 2 * n * STEPS
        assert rec.estimate.measured_passes == rec.estimate.predicted_passes
        assert rec.estimate.predicted_seconds > 0 and rec.estimate.measured_seconds > 0
        stored = json.loads((result.run_dir / "cells" / f"{rec.cell_id}.json").read_text())
        assert CellRecord.from_dict(stored).estimate == rec.estimate
    # everything is in the cache now: the dry run says so and counts nothing
    est = estimate_plan(plan)
    assert est.cache_probed and est.models["simple-cnn"].train_cached
    assert est.models["simple-cnn"].images_exact
    assert all(c.cached and c.passes == 0 for c in est.cells) and est.passes == 0
    # with the dataset cached, training passes are counted from its splits (end to end: epochs x
    # (train forward + backward) + val, then test)
    from bench.pipeline.estimate import BACKWARD_PASSES

    train, val, test = (4 * s for s in (16, 2, 2))  # 4 classes x 20 images, split 80/10/10
    assert est.models["simple-cnn"].train_passes == 3 * (train * (1 + BACKWARD_PASSES) + val) + test


# --------------------------------------------------------------------------------------
# the dry run's cache probe uses the run's own keys (bench.pipeline.Stages' key-only methods)
# --------------------------------------------------------------------------------------
class _PerturbationReader:
    """A metric keyed on the cell's perturbation and its parameters (it reads no curves)."""

    def get_params(self):
        return {}

    def compute(self, data):
        return {"t-estimate-perturbation": np.zeros(len(data))}


class _ReaderPlugin:
    @bench.hookimpl
    def bench_register_metrics(self):
        return [MetricSpec(name="t-estimate-perturbation", factory=_PerturbationReader,
                           inputs=MetricInputs(perturbation=True))]


#: every branch of the keys: curves under the cell's perturbation (morf, lerf) and under another
#: (insertion-auc's blur curves), a budgeted metric (lerf-aopc: its curves budgeted too) and a
#: metric keyed on the cell's perturbation parameters
PROBE_METRICS = ["aopc", "lerf-aopc", "insertion-auc", "t-estimate-perturbation"]


def _probe_plan(out: Path, *, metric_budget: int = 2, **sections):
    sections.setdefault("explainers", {"names": ["random", "gradcam"]})
    return _plan(out, metrics={"names": PROBE_METRICS, "max_images": {"lerf-aopc": metric_budget}}, **sections)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished tiny run of :func:`_probe_plan`'s grid (its results folder)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras_home")))
    bench.register_plugin(_ReaderPlugin(), name="cost-estimate-test-plugin")
    try:
        results = tmp_path_factory.mktemp("probe") / "r"
        result = bench.run(_probe_plan(results).config, quiet=True)
        assert result.ok and all(c.ok for c in result.cells)
        yield results
    finally:
        bench.unregister_plugin("cost-estimate-test-plugin")
        mp.undo()


def _cached(plan) -> dict[str, bool]:
    """stage -> whether the dry run reports it cached (``<explainer> <stage>`` per cell)."""
    est = estimate_plan(plan)
    assert est.cache_probed and not est.problems, est.problems
    out = {"training": est.models["simple-cnn"].train_cached}
    for c in est.cells:
        e = c.task.explainer
        out[f"{e} heatmaps"] = c.explain_cached
        out.update({f"{e} {x.order}@{x.perturbation}": x.cached for x in c.curves})
        out.update({f"{e} {m}": c.metrics_cached.get(m, False) for m in c.metrics})
    return out


def _stale(plan) -> set[str]:
    return {stage for stage, cached in _cached(plan).items() if not cached}


def test_the_dry_run_probes_the_keys_the_run_caches_under(finished):
    """Right after a run every stage is cached; a parameter that feeds a key makes exactly the
    stages downstream of it not cached (were the estimate's keys not the run's, this fails)."""
    stages = _cached(_probe_plan(finished))
    per_cell = ["heatmaps", "morf@gaussian-noise", "lerf@gaussian-noise", "insertion@blur", *PROBE_METRICS]
    assert set(stages) == {"training"} | {f"{e} {s}" for e in ("random", "gradcam") for s in per_cell}
    assert all(stages.values()), stages
    both = ("random", "gradcam")
    # the cell's perturbation: its curves and the metrics that read them or its parameters
    assert _stale(_probe_plan(finished, perturbations={"params": {"gaussian-noise": {"sigma": 0.2}}})) == {
        f"{e} {s}" for e in both for s in ("morf@gaussian-noise", "lerf@gaussian-noise", "aopc", "lerf-aopc",
                                           "t-estimate-perturbation")}
    # a perturbation only a metric's curves use: those curves and that metric
    assert _stale(_probe_plan(finished, perturbations={"params": {"blur": {"sigma": 2.0}}})) == {
        f"{e} {s}" for e in both for s in ("insertion@blur", "insertion-auc")}
    # one explainer's parameter: everything of its cells, nothing of the others
    assert _stale(_probe_plan(finished, explainers={"names": ["random", "gradcam"],
                                                    "params": {"gradcam": {"relu": False}}})) == {
        f"gradcam {s}" for s in per_cell}
    # a metric's image budget: its budgeted curves and itself
    assert _stale(_probe_plan(finished, metric_budget=1)) == {
        f"{e} {s}" for e in both for s in ("lerf@gaussian-noise", "lerf-aopc")}
    # the training: the model and everything after it
    assert _stale(_probe_plan(finished, training={"epochs": 2})) == set(stages)


def test_a_probe_that_fails_is_named_and_the_rest_still_probed(finished, monkeypatch):
    from bench.pipeline.stages import Stages

    real = Stages.curves_key

    def failing(self, name, order, heatmaps_key):
        if name == "blur":
            raise RuntimeError("no blur today")
        return real(self, name, order, heatmaps_key)

    monkeypatch.setattr(Stages, "curves_key", failing)
    est = estimate_plan(_probe_plan(finished))
    assert any("curves key of perturbation 'blur'" in p and "RuntimeError: no blur today" in p
               for p in est.problems), est.problems
    assert len(est.problems) == 1  # said once, not once per cell, nor again for the metric reading them
    for cell in est.cells:  # only what needs that key is counted as not cached
        assert {c.order: c.cached for c in cell.curves} == {"morf": True, "lerf": True, "insertion": False}
        assert {m for m in cell.metrics if not cell.metrics_cached.get(m)} == {"insertion-auc"}
        assert cell.explain_cached


def test_a_failing_declared_cost_is_named_and_the_dry_run_completes(tmp_path, capsys, monkeypatch):
    from bench.plugin.registry import registry

    def boom(self, **kwargs):
        raise RuntimeError("cost unknowable")

    monkeypatch.setattr(registry().get("explainer", "gradcam").load_factory(), "passes_per_map", boom)
    est = estimate_plan(_plan(tmp_path / "a"))
    (problem,) = [p for p in est.problems if "gradcam" in p]
    assert "explainer 'gradcam'" in problem and "passes_per_map" in problem
    assert "RuntimeError: cost unknowable" in problem
    cells = _cells(est)
    assert cells["gradcam"].explain_passes is None and "explainer gradcam" in cells["gradcam"].unknown
    assert cells["occlusion"].explain_passes is not None  # the other explainers are still counted
    out, err = _dry(capsys, tmp_path / "b", "--set", 'explainers.names=["random", "gradcam"]')
    assert "bench: warning: explainer 'gradcam'" in err and "cost unknowable" in err
    assert re.search(r"simple-cnn\s+gradcam\s+gaussian-noise", out), out  # the table is still printed


# --------------------------------------------------------------------------------------
# one cache layout: the files a run writes are those the probe looks for (STAGE_FILES)
# --------------------------------------------------------------------------------------
def _stage_keys(results: Path, stages) -> dict[str, set[str]]:
    """stage -> the keys the finished run's cells computed it under (from their records)."""
    from bench.pipeline.stages import evaluation_key

    records = [CellRecord.from_dict(json.loads(p.read_text())) for p in results.glob("runs/*/cells/*.json")]
    assert records and all(r.ok for r in records)
    keys: dict[str, set[str]] = {s: set() for s in ("dataset", "model", "evaluation", "heatmaps", "curves",
                                                    "metric")}
    keys["dataset"].add(stages.dataset_key())
    for rec in records:
        keys["model"].add(rec.keys["model"])
        keys["evaluation"].add(evaluation_key(rec.keys["model"]))
        keys["heatmaps"].add(rec.keys["heatmaps"])
        curves = {k.removeprefix("curves:"): v for k, v in rec.keys.items() if k.startswith("curves:")}
        keys["curves"].update(curves.values())
        for name in rec.metrics:
            mkey = stages.metric_key(name, heatmaps_key=rec.keys["heatmaps"], curve_keys=curves,
                                     n_images=rec.n_images, cell_perturbation=rec.perturbation)
            assert mkey is not None, name
            keys["metric"].add(mkey)
    return keys


def test_every_file_a_run_writes_lies_where_the_probe_looks(finished):
    """Each stage folder of the cache holds exactly the files :data:`STAGE_FILES` names for the
    keys the run used (the stage methods and the trainer write from the same table that
    ``Stages.is_cached`` / ``Stages.cache_file`` read), and nothing lies elsewhere."""
    from bench.pipeline.stages import STAGE_FILES, Stages
    from bench.pipeline.store import STAGE_FILES as STORE_STAGE_FILES

    assert STAGE_FILES is STORE_STAGE_FILES  # one table, re-exported
    stages = Stages(_probe_plan(finished), quiet=True)
    root = stages.cache.root
    keys = _stage_keys(finished, stages)
    assert set(keys) == set(STAGE_FILES)
    for stage, (folder, suffixes) in STAGE_FILES.items():
        assert keys[stage], stage
        expected = {stages.cache_file(stage, k, s) for k in keys[stage] for s in suffixes}
        assert all(stages.is_cached(stage, k) for k in keys[stage]), stage
        assert {stages.cache_file(stage, k) for k in keys[stage]} <= expected
        written = {p for p in (root / folder).iterdir()
                   if not (stage == "model" and p.name.endswith("-trained.npz"))}  # frozen-part weights
        assert written == expected, (stage, sorted(p.name for p in written ^ expected))
    # the other folders are no stage's: training features, calibrations and the like
    others = {p.name for p in root.iterdir() if p.is_dir()} - {f for f, _ in STAGE_FILES.values()}
    assert not others & {"dataset", "model", "heatmap", "curve", "metric", "evaluations"}, others
    with pytest.raises(ValueError, match="writes no '.keras' file"):
        stages.cache_file("heatmaps", "k", ".keras")


# --------------------------------------------------------------------------------------
# each problem said once; a finished cell's estimate keeps its problems
# --------------------------------------------------------------------------------------
def test_a_dataset_that_cannot_be_constructed_is_named_once(tmp_path, monkeypatch):
    import functools

    from bench.pipeline.estimate import image_shape_of
    from bench.plugin.registry import registry

    plan = _plan(tmp_path / "r")
    factory = registry().get("dataset", plan.dataset).load_factory()
    real = factory.__init__

    @functools.wraps(real)  # the same signature: its parameters still check
    def boom(self, *args, **kwargs):
        raise RuntimeError("no data today")

    monkeypatch.setattr(factory, "__init__", boom)
    est = estimate_plan(plan)
    (problem,) = [p for p in est.problems if "dataset" in p]
    assert problem.startswith(f"dataset {plan.dataset!r} could not be constructed")
    assert "RuntimeError: no data today" in problem and "image size" in problem and "split sizes" in problem
    assert not est.cache_probed and est.image_shape is None
    problems: list[str] = []  # asked alone, it says the same
    assert image_shape_of(plan, problems=problems) is None and problems == [problem]


def test_a_finished_cells_estimate_keeps_its_problems(tmp_path, monkeypatch):
    from bench.pipeline.estimate import (
        Calibration,
        calibration_key,
        calibration_path,
        record_estimate,
    )
    from bench.pipeline.store import atomic_write_text, to_json
    from bench.plugin.registry import registry

    plan = _plan(tmp_path / "r", explainers={"names": ["random", "gradcam"]})
    shape = (32, 32)
    path = calibration_path(plan, "simple-cnn", shape)
    cal = Calibration(model="simple-cnn", passes_per_second=100.0, batch_size=8, measured_batch=8,
                      image_shape=shape, key=calibration_key(plan, "simple-cnn", shape), path=path)
    path.parent.mkdir(parents=True)
    atomic_write_text(path, to_json(cal.to_dict()))
    by_explainer = {t.explainer: t for t in plan.cells}

    def record(task):
        return CellRecord.from_dict({"schema": 2, "cell_id": task.cell_id, "dataset": task.dataset,
                                     "model": task.model, "explainer": task.explainer,
                                     "perturbation": task.perturbation, "status": "ok", "n_images": 3})

    clean = record_estimate(plan, by_explainer["random"], record(by_explainer["random"]), shape)
    assert clean is not None and clean.unknown == []

    def boom(self, **kwargs):
        raise RuntimeError("cost unknowable")

    monkeypatch.setattr(registry().get("explainer", "gradcam").load_factory(), "passes_per_map", boom)
    task = by_explainer["gradcam"]
    rec = record(task)
    rec.estimate = record_estimate(plan, task, rec, shape)
    assert rec.estimate is not None
    assert rec.estimate.unknown[0] == "explainer gradcam"  # what it could not count, then why
    (problem,) = rec.estimate.unknown[1:]
    assert "explainer 'gradcam'" in problem and "RuntimeError: cost unknowable" in problem
    back = CellRecord.from_dict(json.loads(json.dumps(rec.to_dict())))  # kept in the record's JSON
    assert back.estimate == rec.estimate
