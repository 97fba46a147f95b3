"""Metrics are plugins: an outside metric installed through a real entry point runs in ``bench run``
and becomes a leaderboard column; the run computes only the curves its metrics need; a metric that
raises fails only itself; metric results are cached; config errors name their key."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from _plugin_fixtures import make_distribution

import bench
from bench import pipeline as runner
from bench.cli import main
from bench.config import loading as config_mod
from bench.data import DatasetSplits
from bench.errors import ConfigError
from bench.pipeline.store import read_json
from bench.plugin import registry as plugins_mod
from bench.stats import bootstrap_ci

TINY = {
    "preset": "demo",
    "dataset": {"name": "synthetic-cxr", "params": {"image_size": 48, "per_class": 20, "lesion_contrast": 2.0}},
    "models": {"names": ["simple-cnn"]},
    "training": {"epochs": 2, "batch_size": 16},
    "explainers": {"names": ["random", "gradcam"], "params": {"random": {"size": 12}}},
    "perturbations": {"names": ["gaussian-noise"]},
    "aopc": {"grid": 3, "max_images": 3, "bootstrap": 200},
    "leaderboard": {"formats": ["md", "csv", "json", "html", "tex"], "figures": False},
}

#: An outside plugin: the share of a heatmap's positive relevance inside the dataset's "lesion" mask.
LESION_MASS_PLUGIN = """
import numpy as np
from bench import MetricInputs, MetricSpec, hookimpl


class LesionMass:
    def __init__(self, *, mask: str = "lesion"):
        self.mask = mask

    def get_params(self):
        return {"mask": self.mask}

    def compute(self, data):
        maps = np.clip(np.asarray(data.heatmaps, np.float64), 0, None)
        mask = data.mask(self.mask)
        n, h, w = mask.shape
        rows = np.arange(h) * maps.shape[1] // h          # nearest neighbour onto the mask's pixels
        cols = np.arange(w) * maps.shape[2] // w
        up = maps[:, rows][:, :, cols]
        with np.errstate(invalid="ignore", divide="ignore"):
            mass = (up * mask).sum(axis=(1, 2)) / up.sum(axis=(1, 2))
        return {"lesion-mass": mass, "mask-share": mask.mean(axis=(1, 2))}


@hookimpl
def bench_register_metrics():
    return [MetricSpec(name="lesion-mass", factory=LesionMass, family="localisation", label="Lesion mass",
                       description="share of the positive relevance inside the lesion mask",
                       inputs=MetricInputs(heatmaps=True, masks=("lesion",)),
                       heatmap_transform="positive-normalised")]
"""


def tiny(out, **sections):
    cfg = json.loads(json.dumps(TINY))
    cfg["run"] = {"out": str(out)}
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


@pytest.fixture(scope="module")
def lesion_mass_plugin(tmp_path_factory):
    """``bench-lesion-mass``, installed through a real ``bench`` entry point (a dist-info on sys.path)."""
    root = make_distribution(tmp_path_factory.mktemp("dist"), "bench-lesion-mass", "0.3.0",
                             {"lesion_mass": "bench_lesion_mass_mod"}, {"bench_lesion_mass_mod": LESION_MASS_PLUGIN})
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        plugins_mod._cached = None
        bench.registry(reload=True)
        yield root
    plugins_mod._cached = None
    bench.registry(reload=True)


@pytest.fixture(scope="module")
def outside_run(lesion_mass_plugin, tmp_path_factory):
    out = tmp_path_factory.mktemp("outside")
    config = tmp_path_factory.mktemp("cfg") / "grid.toml"
    config.write_text(
        'preset = "demo"\n'
        '[dataset]\nname = "synthetic-cxr"\nparams = { image_size = 48, per_class = 20, lesion_contrast = 2.0 }\n'
        '[models]\nnames = ["simple-cnn"]\n[training]\nepochs = 2\nbatch_size = 16\n'
        '[explainers]\nnames = ["random", "gradcam"]\n[explainers.params.random]\nsize = 12\n'
        '[perturbations]\nnames = ["gaussian-noise"]\n'
        '[aopc]\ngrid = 3\nmax_images = 3\nbootstrap = 200\n'
        '[metrics]\nnames = ["aopc", "lesion-mass"]\n'
        '[leaderboard]\nformats = ["md", "csv", "json", "html", "tex"]\nfigures = false\n'
    )
    runner.clear_memo()
    code = main(["run", "--config", str(config), "--out", str(out), "--quiet"])
    return out, code


def test_an_outside_metric_runs_in_bench_run_and_is_a_leaderboard_column(outside_run):
    out, code = outside_run
    assert code == 0
    entry = bench.registry().get("metric", "lesion-mass")
    assert entry.plugin.distribution == "bench-lesion-mass" and entry.version == "0.3.0"
    (run_dir,) = (out / "runs").iterdir()
    cell = read_json(run_dir / "cells" / "synthetic-cxr__simple-cnn__random__gaussian-noise.json")
    mass = cell["metrics"]["lesion-mass"]
    assert mass["status"] == "ok" and mass["family"] == "localisation" and mass["params"] == {"mask": "lesion"}
    assert cell["provenance"]["metrics"]["lesion-mass"]["distribution"] == "bench-lesion-mass"
    assert cell["orders"] == ["morf"]  # aopc needs MoRF; lesion-mass needs no curves
    # the value by hand: the random maps (12x12) blown up 4x onto the 48x48 lesion masks of the same images
    heat = np.load(run_dir / cell["heatmaps_file"], allow_pickle=False)
    splits = DatasetSplits.load_file(read_json(run_dir / "manifest.json")["dataset"]["file"])
    pos = {str(i): k for k, i in enumerate(splits.test.ids)}
    masks = splits.test.masks["lesion"][[pos[str(i)] for i in heat["ids"]]]
    maps = np.kron(np.clip(heat["heatmaps"].astype(np.float64), 0, None), np.ones((1, 4, 4)))
    by_hand = (maps * masks).sum(axis=(1, 2)) / maps.sum(axis=(1, 2))
    stored = np.load(run_dir / mass["file"], allow_pickle=False)
    np.testing.assert_allclose(stored[mass["key"]], by_hand, atol=1e-12)
    np.testing.assert_allclose(stored["lesion-mass/mask-share"], masks.mean(axis=(1, 2)))  # a second column
    assert mass["value"] == pytest.approx(by_hand.mean(), abs=1e-12)
    assert mass["ci"] == pytest.approx(list(bootstrap_ci(by_hand, n_resamples=200, seed=0)))
    # a leaderboard column with its CI, in every format
    csv = pd.read_csv(out / "leaderboard.csv", dtype={"settings": str})
    assert {"lesion-mass", "lesion-mass_ci_low", "lesion-mass_ci_high", "lesion-mass_n"} <= set(csv.columns)
    row = csv.set_index("explainer").loc["random"]
    assert row["lesion-mass"] == pytest.approx(by_hand.mean(), abs=1e-9)
    assert row["lesion-mass_ci_low"] <= row["lesion-mass"] <= row["lesion-mass_ci_high"]
    assert list(csv.columns).index("aopc") < list(csv.columns).index("lesion-mass")  # the config's order
    md = (out / "leaderboard.md").read_text()
    assert "Lesion mass ↑ [95% CI]" in md and "AOPC ↑ [95% CI]" in md
    assert "share of the positive relevance inside the lesion mask" in md  # described in the notes
    assert "Lesion mass ↑" in (out / "leaderboard.html").read_text()
    assert r"Lesion mass $\uparrow$" in (out / "leaderboard.tex").read_text()
    doc = json.loads((out / "leaderboard.json").read_text())
    assert [m["id"] for m in doc["metrics"]] == ["aopc", "lesion-mass"] and doc["primary"] == "aopc"
    # paired comparisons of every metric in the report, the primary one on the leaderboard
    report = (out / "report.md").read_text()
    assert "Paired comparisons, AOPC ↑" in report and "Paired comparisons, Lesion mass ↑" in report


def test_the_outside_metric_passes_the_conformance_checks(lesion_mass_plugin):
    from bench.testing import check_component, checks_for

    metric = bench.create("metric", "lesion-mass")
    names = [n for n, _ in checks_for(metric)]  # its registered spec drives the checks
    assert "check_metric_output" in names and "check_metric_image_independent" in names
    check_component(metric)


# ---------------------------------------------------------------------------------------
# only the curves the metrics need; failing metrics; the metric cache
# ---------------------------------------------------------------------------------------
class Metrics:
    """In-process metrics: one that raises, one with a wrong shape, one with non-finite values,
    one that needs a mask the dataset lacks, and one that counts its calls."""

    calls = 0

    class Raising:
        def get_params(self):
            return {}

        def compute(self, data):
            raise RuntimeError("metric blew up on purpose")

    class WrongShape:
        def get_params(self):
            return {}

        def compute(self, data):
            return {"t-shape": np.zeros((len(data), 2))}

    class HalfNaN:
        def __init__(self, *, scale: float = 1.0):
            self.scale = scale

        def get_params(self):
            return {"scale": self.scale}

        def compute(self, data):
            Metrics.calls += 1
            c = np.asarray(data.curve("morf"), np.float64)
            values = self.scale * (c[:, 0] - c[:, -1])
            values[::2] = np.nan
            return {"t-half-nan": values}

    @bench.hookimpl
    def bench_register_metrics(self):
        return [
            bench.MetricSpec(name="t-raise", factory=self.Raising, inputs=bench.MetricInputs(curves=("morf",))),
            bench.MetricSpec(name="t-shape", factory=self.WrongShape, inputs=bench.MetricInputs(curves=("morf",))),
            bench.MetricSpec(name="t-half-nan", factory=self.HalfNaN, inputs=bench.MetricInputs(curves=("morf",))),
            bench.MetricSpec(name="t-no-mask", factory=self.Raising, family="localisation",
                             inputs=bench.MetricInputs(heatmaps=True, masks=("no-such-mask",))),
        ]


@pytest.fixture
def metrics_plugin():
    bench.register_plugin(Metrics(), name="metric-test-plugin")
    Metrics.calls = 0
    yield Metrics
    bench.unregister_plugin("metric-test-plugin")


@pytest.fixture(scope="module")
def fresh_out(tmp_path_factory):
    return tmp_path_factory.mktemp("orders")


def _counting(monkeypatch):
    import bench.engine.curves as aopc_mod

    calls: list[tuple[str, int]] = []
    real = aopc_mod.evaluate_aopc

    def counted(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append((kwargs["order"], result.forward_passes))
        return result

    monkeypatch.setattr(aopc_mod, "evaluate_aopc", counted)
    return calls


def test_a_run_with_only_aopc_computes_no_lerf_curves(fresh_out, monkeypatch):
    calls = _counting(monkeypatch)
    runner.clear_memo()
    result = bench.run(tiny(fresh_out, metrics={"names": ["aopc"]}, explainers={"names": ["random"]}),
                       quiet=True, leaderboard=False)
    assert result.ok, [c.error for c in result.failed]
    (cell,) = result.cells
    n, L = cell.n_images, 9
    assert [order for order, _ in calls] == ["morf"]  # the curve stage ran once, for MoRF
    assert cell.orders == ["morf"] and list(cell.metrics) == ["aopc"]
    assert cell.timings.forward_passes == sum(p for _, p in calls) == n * (L + 1)
    curves = np.load(result.run_dir / cell.curves_file, allow_pickle=False)
    assert "morf_curves" in curves.files and "lerf_curves" not in curves.files
    assert cell.settings["aopc"]["orders"] == ["morf"] and cell.settings["metrics"] == ["aopc"]
    # asking for LeRF AOPC adds the LeRF curves, and only those (MoRF is in the cache)
    calls.clear()
    runner.clear_memo()
    again = bench.run(tiny(fresh_out, metrics={"names": ["aopc", "lerf-aopc"]}, explainers={"names": ["random"]}),
                      quiet=True, leaderboard=False)
    (cell2,) = again.cells
    assert [order for order, _ in calls] == ["lerf"]
    assert cell2.orders == ["morf", "lerf"] and cell2.timings.forward_passes == 2 * n * (L + 1)
    assert cell2.settings_key != cell.settings_key  # another set of metrics: never paired with the first


def test_a_metric_that_raises_fails_only_itself(fresh_out, metrics_plugin, capsys):
    runner.clear_memo()
    names = ["aopc", "t-raise", "t-shape", "t-half-nan", "t-no-mask"]
    result = bench.run(tiny(fresh_out, metrics={"names": names}, explainers={"names": ["random"]},
                            leaderboard={"formats": ["md", "csv", "json"], "figures": False}), quiet=True)
    assert result.ok  # the cell is ok: its curves and its other metrics are kept
    (cell,) = result.cells
    m = cell.metrics
    assert m["aopc"].ok and np.isfinite(m["aopc"].value)
    assert m["t-raise"].status == "failed" and m["t-raise"].error == "RuntimeError: metric blew up on purpose"
    assert m["t-shape"].status == "failed" and "must be (N,)" in m["t-shape"].error
    assert m["t-no-mask"].status == "skipped" and "no mask 'no-such-mask'" in m["t-no-mask"].error
    assert "its masks: lesion, lung" in m["t-no-mask"].error
    half = m["t-half-nan"]
    assert half.ok and half.n + half.n_excluded == cell.n_images and half.n_excluded == (cell.n_images + 1) // 2
    stored = np.load(result.run_dir / half.file, allow_pickle=False)[half.key]
    assert np.isnan(stored[::2]).all() and half.value == pytest.approx(np.nanmean(stored))
    on_disk = read_json(result.run_dir / "cells" / f"{cell.cell_id}.json")
    assert on_disk["status"] == "ok" and on_disk["metrics"]["t-raise"]["status"] == "failed"
    md = result.leaderboard["md"].read_text()
    assert "t-raise failed: RuntimeError: metric blew up on purpose" in md
    assert f"t-half-nan: {half.n_excluded} non-finite value(s) left out" in md
    csv = pd.read_csv(result.leaderboard["csv"])
    assert "t-raise" not in csv.columns  # no value anywhere: no column
    mine = csv[csv.run_id == result.run_id].iloc[0]
    assert int(mine["t-half-nan_n_excluded"]) == half.n_excluded and "t-raise failed" in mine["metric_notes"]


def test_metric_results_are_cached(fresh_out, metrics_plugin):
    cfg = tiny(fresh_out, metrics={"names": ["aopc", "t-half-nan"]}, explainers={"names": ["random"]})
    runner.clear_memo()
    first = bench.run(cfg, quiet=True, leaderboard=False)
    calls = metrics_plugin.calls
    runner.clear_memo()
    second = bench.run(cfg, quiet=True, leaderboard=False)
    assert metrics_plugin.calls == calls  # not computed again
    assert second.cells[0].metrics["t-half-nan"].value == first.cells[0].metrics["t-half-nan"].value
    # another parameter: computed again, and recorded with its own parameters
    cfg["metrics"]["params"] = {"t-half-nan": {"scale": 2.0}}
    runner.clear_memo()
    third = bench.run(cfg, quiet=True, leaderboard=False)
    assert metrics_plugin.calls == calls + 1
    m3, m1 = third.cells[0].metrics["t-half-nan"], first.cells[0].metrics["t-half-nan"]
    assert m3.params == {"scale": 2.0} and m3.params_key != m1.params_key
    assert m3.value == pytest.approx(2 * m1.value)
    # a metric's own parameters are its column's identity, not the row's settings
    assert third.cells[0].settings_key == first.cells[0].settings_key


# ---------------------------------------------------------------------------------------
# plan-time checks
# ---------------------------------------------------------------------------------------
def _plan(**sections):
    cfg = {"preset": "demo", **sections}
    return runner.make_plan(config_mod.load_config(cfg))


def test_metric_names_params_and_primary_are_checked_at_plan_time(metrics_plugin):
    plan = _plan(metrics={"names": ["deletion-auc", "aopc"]})
    assert plan.metrics == ["deletion-auc", "aopc"] and plan.orders == ("morf",)
    assert plan.primary == "deletion-auc"  # the first selected metric
    assert _plan(metrics={"names": ["abpc"]}).orders == ("morf", "lerf")
    assert _plan(metrics={"names": ["lerf-aopc", "aopc"]}, leaderboard={"primary": "aopc"}).primary == "aopc"
    assert _plan().metrics[0] == "aopc" and _plan().primary == "aopc"  # the demo preset: "aopc", then "all"
    study = config_mod.load_config(preset="covid-radiography")
    assert study["metrics"]["names"] == ["aopc", "lerf-aopc", "abpc"] and study["leaderboard"]["primary"] == "aopc"
    with pytest.raises(ConfigError, match=r"metrics.names\[0\]: unknown metric 'aopx'.*did you mean 'aopc'"):
        _plan(metrics={"names": ["aopx"]})
    with pytest.raises(ConfigError, match="metrics.params.aopcc: unknown metric.*did you mean 'aopc'"):
        _plan(metrics={"params": {"aopcc": {}}})
    with pytest.raises(ConfigError, match="metrics.params.t-half-nan has no parameter 'scael'.*did you mean 'scale'"):
        _plan(metrics={"names": ["t-half-nan"], "params": {"t-half-nan": {"scael": 2}}})
    with pytest.raises(ConfigError, match="leaderboard.primary = 'abpc' is not a selected metric"):
        _plan(metrics={"names": ["aopc"]}, leaderboard={"primary": "abpc"})


def test_dry_run_shows_the_metrics_and_the_curve_orders(capsys):
    assert main(["run", "--dry-run", "--json", "--set", 'metrics.names=["deletion-auc"]']) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["metrics"] == ["deletion-auc"] and plan["orders"] == ["morf"] and plan["primary"] == "deletion-auc"
    # --metric (repeatable) selects the metrics; the first one ranks the rows
    assert main(["run", "--dry-run", "--json", "--metric", "lerf-aopc", "--metric", "aopc"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["metrics"] == ["lerf-aopc", "aopc"] and plan["primary"] == "lerf-aopc"
    assert plan["orders"] == ["morf", "lerf"]


def test_aopc_orders_is_refused_with_the_way_forward(capsys):
    assert main(["run", "--dry-run", "--set", 'aopc.orders=["morf"]']) == 2
    err = capsys.readouterr().err
    assert "aopc.orders was removed" in err and "[metrics] names" in err


def test_a_run_whose_metrics_need_no_curves_computes_none(outside_run, monkeypatch):
    out, _ = outside_run
    calls = _counting(monkeypatch)
    runner.clear_memo()
    result = bench.run(tiny(out, metrics={"names": ["lesion-mass"]}, explainers={"names": ["random"]}),
                       quiet=True, leaderboard=False)
    assert result.ok, [c.error for c in result.failed]
    (cell,) = result.cells
    assert calls == [] and cell.orders == [] and cell.curves_file is None
    assert cell.timings.forward_passes == 0 and cell.metrics["lesion-mass"].ok
    assert cell.params["perturbation"]["sigma"] == 0.1  # still in the settings
