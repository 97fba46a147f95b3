"""Curves per (order, perturbation), and what a metric gets from the cell (issue 13, the core contract).

* A metric may read curves under another perturbation than the cell's (``road-aopc`` beside the
  noise AOPC): the stage graph has one curves job per (order, perturbation) the cell's metrics
  read, shared with the cell whose perturbation it is; the cache key holds the perturbation and
  its parameters; those parameters are part of the metric's column identity, not of the row's
  settings; a failing one fails only the metrics that read it.
* A metric gets the cell's perturbation (declared) and the run's seed; the masks its parameters
  name (``mask_params``); the cell's explainer with the masks it declares (an oracle can be
  re-explained); and its cost (own forward passes, its curves') is in the record.
"""

from __future__ import annotations

import numpy as np
import pytest
from _tiny_config import tiny

import bench
from bench import pipeline as runner
from bench.config import loading as config_mod
from bench.engine.curves import evaluate_aopc
from bench.errors import BenchError
from bench.pipeline import STAGE_GRAPH, make_plan
from bench.pipeline.cell import metric_timings
from bench.pipeline.metrics import MetricData, MetricInputError, metric_needs
from bench.plugin.specs import MetricInputs, MetricSpec

SEED = 3
N_IMAGES = 3
GRID = 2
L = GRID * GRID


class Metrics:
    """Test metrics: a mask chosen by a parameter, a reader of the cell's perturbation, a costly one."""

    seen: list = []
    costly_calls = 0

    class MaskShare:
        def __init__(self, *, mask: str = "lesion"):
            self.mask = mask

        def get_params(self):
            return {"mask": self.mask}

        def compute(self, data):
            return {"t-mask-share": np.asarray(data.mask(self.mask), np.float64).mean(axis=(1, 2))}

    class PerturbationReader:
        def get_params(self):
            return {}

        def compute(self, data):
            Metrics.seen.append((data.perturbation, dict(data.perturbation_params), data.seed))
            return {"t-perturbation": np.zeros(len(data))}

    class Costly:
        def get_params(self):
            return {}

        def compute(self, data):
            Metrics.costly_calls += 1
            self._n = len(data)
            return {"t-costly": np.asarray(data.heatmaps, np.float64).mean(axis=(1, 2))}

        def forward_passes(self):
            return 7.0 * self._n

    @bench.hookimpl
    def bench_register_metrics(self):
        return [
            MetricSpec(name="t-mask-share", factory=self.MaskShare, family="localisation",
                       inputs=MetricInputs(masks=("lesion",)), mask_params=("mask",)),
            MetricSpec(name="t-perturbation", factory=self.PerturbationReader,
                       inputs=MetricInputs(perturbation=True)),
            MetricSpec(name="t-costly", factory=self.Costly, family="complexity",
                       inputs=MetricInputs(heatmaps=True)),
        ]


@pytest.fixture(scope="module")
def plugin():
    bench.register_plugin(Metrics(), name="curve-perturbations-test-plugin")
    yield Metrics
    bench.unregister_plugin("curve-perturbations-test-plugin")


METRICS = ["aopc", "road-aopc", "road-abpc", "insertion-auc", "t-mask-share", "t-perturbation", "t-costly",
           "model-randomisation", "random-logit"]


def config(out, **sections):
    cfg = tiny(out, explainers={"names": ["gradcam", "oracle"]},
               perturbations={"names": ["gaussian-noise", "road"]},
               metrics={"names": METRICS, "params": {"t-mask-share": {"mask": "lung"},
                                                     "model-randomisation": {"max_blocks": 2}}},
               aopc={"grid": GRID, "max_images": N_IMAGES, "bootstrap": 20})
    cfg["run"]["seed"] = SEED
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def _counting(monkeypatch):
    import bench.engine.curves as engine

    calls: list[tuple[str, str]] = []
    real = engine.evaluate_aopc

    def counted(*args, **kwargs):
        pert = kwargs["perturbation"]
        calls.append((kwargs["order"], getattr(pert, "name", str(pert))))
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate_aopc", counted)
    return calls


@pytest.fixture(scope="module")
def first(plugin, tmp_path_factory):
    out = tmp_path_factory.mktemp("curve-perturbations")
    with pytest.MonkeyPatch.context() as mp:
        calls = _counting(mp)
        plugin.seen.clear()
        plugin.costly_calls = 0
        runner.clear_memo()
        result = bench.run(config(out), quiet=True, leaderboard=False)
    assert result.ok, [c.error for c in result.failed]
    return out, result, list(calls)


def _cells(result):
    return {tuple(c.cell_id.split("__")[2:]): c for c in result.cells}


def _explained(out, result, cell):
    """(test split, model artifact, heatmaps file, rows of the cell's images in the test split), from the cache."""
    stages = runner.Stages(make_plan(config_mod.load_config(config(out))), quiet=True)
    data = stages.dataset()
    model = stages.model("simple-cnn", data)
    heat = np.load(result.run_dir / cell.heatmaps_file)
    pos = {str(i): k for k, i in enumerate(data.splits.test.ids)}
    return data.splits.test, model, heat, [pos[str(i)] for i in heat["ids"]]


def test_the_graph_has_one_curves_job_per_order_and_perturbation_shared_between_cells(plugin, tmp_path):
    plan = make_plan(config_mod.load_config(config(tmp_path)))
    assert plan.orders == ("morf", "lerf", "insertion")
    by_cell = {(t.explainer, t.perturbation): [(j.order, j.perturbation) for j in STAGE_GRAPH.cell_jobs(plan, t)
                                               if j.stage == "curves"] for t in plan.cells}
    # the cell's own perturbation first, then the others the metrics ask for (road, blur)
    assert by_cell["gradcam", "gaussian-noise"] == [
        ("morf", "gaussian-noise"), ("insertion", "blur"), ("morf", "road"), ("lerf", "road")]
    assert by_cell["gradcam", "road"] == [("morf", "road"), ("lerf", "road"), ("insertion", "blur")]
    every = STAGE_GRAPH.grid_jobs(plan, plan.cells)
    curves = [j for j in every if j.stage == "curves"]
    assert len(curves) == 2 * 4 == len({j.id for j in curves})  # per explainer: 4 curves, not 7
    road = next(j for j in curves if j.perturbation == "road" and j.order == "morf" and j.explainer == "gradcam")
    assert road.id == "curves[dataset=synthetic-cxr,model=simple-cnn,explainer=gradcam,perturbation=road,order=morf]"
    noise_metrics = next(j for j in STAGE_GRAPH.cell_jobs(plan, plan.cells[0]) if j.stage == "metrics")
    assert road.id in {d.id for d in STAGE_GRAPH.deps(plan, noise_metrics)}


def test_curves_under_another_perturbation_are_computed_once_and_read_by_the_metric(first):
    out, result, calls = first
    # per explainer: noise MoRF, ROAD MoRF and LeRF, blur insertion; the road cell's are the same jobs
    assert sorted(calls) == sorted(2 * [("morf", "gaussian-noise"), ("morf", "road"), ("lerf", "road"),
                                        ("insertion", "blur")])
    cells = _cells(result)
    noise, road = cells["gradcam", "gaussian-noise"], cells["gradcam", "road"]
    for cell in cells.values():
        assert all(m.ok for m in cell.metrics.values()), {k: m.error for k, m in cell.metrics.items()}
    # road-aopc in the noise cell is the road cell's own AOPC: the same curves
    assert noise.metrics["road-aopc"].value == pytest.approx(road.metrics["aopc"].value, abs=1e-12)
    assert noise.keys["curves:morf@road"] == road.keys["curves:morf"]
    assert noise.metrics["insertion-auc"].value == pytest.approx(road.metrics["insertion-auc"].value, abs=1e-12)
    # ... and it equals AOPC computed here from ROAD curves of the cell's heatmaps
    test, model, heat, rows = _explained(out, result, noise)
    curves = evaluate_aopc(model.model, test.images[rows], model.predictions[rows], heat["heatmaps"],
                           perturbation=bench.create("perturbation", "road"), grid=GRID, order="morf",
                           seed=SEED, ids=heat["ids"]).curves.astype(np.float64)
    by_hand = ((curves[:, :1] - curves[:, 1:]).sum(axis=1) / (L + 1)).mean()
    assert noise.metrics["road-aopc"].value == pytest.approx(by_hand, abs=1e-6)
    stored = np.load(result.run_dir / noise.curves_file)
    assert {"morf_curves", "morf@road_curves", "lerf@road_curves", "insertion@blur_curves"} <= set(stored.files)
    np.testing.assert_allclose(stored["morf@road_curves"], curves, atol=1e-6)


def test_the_cell_keeps_its_own_perturbation_and_names_the_others(first):
    _, result, _ = first
    noise = _cells(result)["gradcam", "gaussian-noise"]
    assert noise.params["perturbation"] == {"sigma": 0.1, "clip": False}  # not road's, not blur's
    assert noise.params["curves"]["morf@road"] == {"perturbation": "road", "order": "morf", "params": {"noise": 0.01}}
    assert noise.params["curves"]["insertion@blur"]["params"] == {"sigma": 5.0}
    assert noise.params["aopc"]["curves"] == ["morf", "insertion@blur", "morf@road", "lerf@road"]
    assert set(noise.provenance["curve_perturbations"]) == {"road", "blur"}
    assert noise.strategy_info["morf@road"]["step_local"] is False  # ROAD is not step-local


def test_metrics_get_the_cell_perturbation_the_seed_and_the_masks_their_parameters_name(first, plugin):
    out, result, _ = first
    # declared: the cell's perturbation and its resolved parameters, and the run's seed, per cell
    assert sorted(plugin.seen, key=str) == sorted(
        2 * [("gaussian-noise", {"sigma": 0.1, "clip": False}, SEED), ("road", {"noise": 0.01}, SEED)], key=str)
    # not declared: one computation per heatmaps, shared by the two perturbation cells (cached)
    assert plugin.costly_calls == 2
    cells = _cells(result)
    noise = cells["gradcam", "gaussian-noise"]
    test, _, _, rows = _explained(out, result, noise)
    lung = test.masks["lung"][rows]
    share = np.load(result.run_dir / noise.metrics["t-mask-share"].file)["t-mask-share/t-mask-share"]
    np.testing.assert_allclose(share, lung.mean(axis=(1, 2)))  # the lung mask, as its parameter asks
    assert noise.metrics["t-mask-share"].params == {"mask": "lung"}


def test_an_oracle_is_re_explained_with_its_masks(first):
    _, result, _ = first
    oracle = _cells(result)["oracle", "gaussian-noise"].metrics
    assert oracle["model-randomisation"].ok and oracle["random-logit"].ok
    # the oracle's map is the mask: it ignores the model and the class
    assert oracle["model-randomisation"].value == pytest.approx(1.0)
    assert oracle["random-logit"].value == pytest.approx(1.0)


def test_each_metric_cost_is_in_the_record(first):
    _, result, _ = first
    cells = _cells(result)
    noise, road = cells["gradcam", "gaussian-noise"], cells["gradcam", "road"]
    n = noise.n_images
    costs = metric_timings(noise)
    assert costs["aopc"]["curve_passes"] == n * (L + 1) and costs["aopc"]["forward_passes"] == 0
    assert costs["road-aopc"]["curve_passes"] == n * (L + 1) and costs["road-aopc"]["curves"] == {"morf@road": "road"}
    assert costs["road-abpc"]["curve_passes"] == 2 * n * (L + 1)
    assert costs["t-costly"]["forward_passes"] == 7 * n == metric_timings(road)["t-costly"]["forward_passes"]
    assert costs["t-mask-share"]["forward_passes"] == 0  # neither model nor explainer: no pass possible
    gradcam = bench.create("explainer", "gradcam")
    assert costs["random-logit"]["forward_passes"] == pytest.approx(2 * n * gradcam.passes_per_map())
    assert noise.timings.forward_passes == 4 * n * (L + 1)  # the cell's four curves
    again = type(noise).from_dict(noise.to_dict())
    assert metric_timings(again) == costs


def test_the_other_perturbation_params_are_the_metric_column_identity_not_the_row_settings(first, plugin,
                                                                                          monkeypatch):
    out, result, _ = first
    cfg = config(out, perturbations={"names": ["gaussian-noise"], "params": {"road": {"noise": 0.05}}},
                 explainers={"names": ["gradcam"]})
    cfg["metrics"]["names"] = ["aopc", "road-aopc", "road-abpc", "insertion-auc", "t-mask-share", "t-perturbation",
                               "t-costly", "model-randomisation", "random-logit"]
    calls = _counting(monkeypatch)
    runner.clear_memo()
    again = bench.run(cfg, quiet=True, leaderboard=False)
    assert again.ok
    (cell,) = again.cells
    before = _cells(result)["gradcam", "gaussian-noise"]
    assert sorted(calls) == [("lerf", "road"), ("morf", "road")]  # only the ROAD curves: new parameters
    assert cell.keys["curves:morf@road"] != before.keys["curves:morf@road"]
    assert cell.keys["curves:morf"] == before.keys["curves:morf"]
    assert cell.metrics["road-aopc"].params_key != before.metrics["road-aopc"].params_key
    assert cell.metrics["aopc"].params_key == before.metrics["aopc"].params_key
    assert cell.settings_key == before.settings_key  # the row still pairs with the first run's


def test_curves_under_another_perturbation_that_fail_fail_only_their_metrics(first, plugin, tmp_path, monkeypatch):
    """A perturbation only a metric uses that fails at run time fails only that metric (a bad
    parameter of it is a config error at plan time: tests/test_plan_validation.py)."""
    from bench_perturbations.road import NoisyLinearImputation

    def broken(self, images, masks, seeds):
        raise ValueError("noise field exploded")

    monkeypatch.setattr(NoisyLinearImputation, "perturb", broken)
    cfg = config(tmp_path, perturbations={"names": ["gaussian-noise"]}, explainers={"names": ["gradcam"]})
    cfg["metrics"]["names"] = ["aopc", "road-aopc", "insertion-auc"]
    runner.clear_memo()
    result = bench.run(cfg, quiet=True, leaderboard=False)
    assert result.ok  # the cell is ok: its own curves and the other metrics are kept
    (cell,) = result.cells
    assert cell.metrics["aopc"].ok and cell.metrics["insertion-auc"].ok
    failed = cell.metrics["road-aopc"]
    assert failed.status == "failed" and "morf@road curves failed" in failed.error and "exploded" in failed.error


def test_metric_needs_resolve_the_perturbation_and_mask_parameters():
    spec = MetricSpec(name="t-needs", factory=dict, inputs=MetricInputs(curves=("morf", "lerf@black"),
                      masks=("lesion",)), perturbation_param="perturbation", mask_params=("mask", "extra"))
    needs = metric_needs(spec, {"perturbation": "blur", "mask": "lung", "extra": ["a", "b"]})
    assert [(c.entry, c.order, c.perturbation) for c in needs.curves] == [("morf", "morf", "blur"),
                                                                           ("lerf@black", "lerf", "black")]
    assert needs.inputs.masks == ("lung", "a", "b")
    assert needs.curve_keys("blur") == {"morf": "morf", "lerf@black": "lerf@black"}
    assert needs.curve_keys("black") == {"morf": "morf@blur", "lerf@black": "lerf"}
    cell = metric_needs(spec, {"perturbation": "", "mask": ""})
    assert cell.curves[0].perturbation == "" and cell.inputs.masks == ()
    with pytest.raises(BenchError, match="'perturbation' must name"):
        metric_needs(spec, {"perturbation": 3})
    with pytest.raises(BenchError, match="'mask'"):
        metric_needs(spec, {"mask": "../x"})
    with pytest.raises(ValueError, match="invalid"):
        MetricInputs(curves=("morf@",))  # an empty perturbation name
    with pytest.raises(ValueError):
        MetricInputs(curves=("sideways@road",))


def test_metric_data_gives_the_seed_always_and_the_perturbation_only_when_declared():
    data = MetricData(inputs=MetricInputs(perturbation=True), ids=["a"], seed=9, perturbation="blur",
                      perturbation_params={"sigma": 2.0})
    assert (data.seed, data.perturbation, dict(data.perturbation_params)) == (9, "blur", {"sigma": 2.0})
    plain = MetricData(inputs=MetricInputs(heatmaps=True), ids=["a"], heatmaps=np.zeros((1, 2, 2)), seed=9)
    assert plain.seed == 9
    with pytest.raises(MetricInputError, match="perturbation"):
        _ = plain.perturbation
    with pytest.raises(MetricInputError, match="explainer_masks"):
        _ = plain.explainer_masks


def test_without_parameters_a_mask_param_metric_reads_its_declared_masks():
    spec = MetricSpec(name="t-needs2", factory=dict, inputs=MetricInputs(masks=("lesion",)), mask_params=("mask",))
    assert metric_needs(spec).inputs.masks == ("lesion",)  # the testing kit's case: the defaults
    assert metric_needs(spec, {}).inputs.masks == ("lesion",)
    assert metric_needs(spec, {"mask": "lung"}).inputs.masks == ("lung",)
