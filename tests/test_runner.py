"""The run: cells, cache and resume, failure isolation, Ctrl-C, manifest, the five leaderboard files."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import bench
from bench import pipeline as runner
from bench.cli import main
from bench.pipeline.store import read_json

TINY = {
    "preset": "demo",
    "dataset": {"name": "synthetic-cxr", "params": {"image_size": 48, "per_class": 20, "lesion_contrast": 2.0}},
    "models": {"names": ["simple-cnn"]},
    "training": {"epochs": 2, "batch_size": 16},
    "explainers": {"names": ["gradcam", "random"]},
    "perturbations": {"names": ["gaussian-noise"]},
    "aopc": {"grid": 3, "max_images": 3, "bootstrap": 200},
    "metrics": {"names": ["aopc", "abpc", "deletion-auc", "lerf-aopc"]},
}


def tiny(out, **sections):
    cfg = json.loads(json.dumps(TINY))
    cfg.setdefault("run", {})["out"] = str(out)
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


class Counting:
    """An in-process plugin: explainers that count calls, raise, return NaN / wrong shapes, interrupt."""

    calls = 0

    class Center:
        def __init__(self, *, mode: str = "ok"):
            self.mode = mode

        def get_params(self):
            return {"mode": self.mode}

        def explain(self, model, images, targets):
            Counting.calls += 1
            n, h, w, _ = images.shape
            if self.mode == "raise":
                raise RuntimeError("explainer blew up on purpose")
            if self.mode == "interrupt":
                raise KeyboardInterrupt
            if self.mode == "nan":
                return np.full((n, 3, 3), np.nan, np.float32)
            if self.mode == "shape":
                return np.zeros((n, 3), np.float32)
            yy, xx = np.mgrid[0:h, 0:w]
            m = -np.hypot(yy - h / 2, xx - w / 2).astype(np.float32)
            return np.repeat(m[None], n, axis=0)

    @bench.hookimpl
    def bench_register_explainers(self):
        make = self.Center
        return [
            bench.ExplainerSpec(name="t-center", factory=make),
            bench.ExplainerSpec(name="t-raise", factory=lambda: make(mode="raise")),
            bench.ExplainerSpec(name="t-nan", factory=lambda: make(mode="nan")),
            bench.ExplainerSpec(name="t-shape", factory=lambda: make(mode="shape")),
            bench.ExplainerSpec(name="t-interrupt", factory=lambda: make(mode="interrupt")),
        ]


@pytest.fixture
def counting_plugin():
    bench.register_plugin(Counting(), name="counting-test-plugin")
    Counting.calls = 0
    yield Counting
    bench.unregister_plugin("counting-test-plugin")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    runner.clear_memo()
    result = bench.run(tiny(out), quiet=True)
    return out, result


def test_run_writes_cells_manifest_and_leaderboards(first_run):
    out, result = first_run
    assert result.ok, [c.error for c in result.failed]
    assert [c.cell_id for c in result.cells] == [
        "synthetic-cxr__simple-cnn__gradcam__gaussian-noise",
        "synthetic-cxr__simple-cnn__random__gaussian-noise",
    ]
    manifest = read_json(result.run_dir / "manifest.json")
    assert manifest["status"] == "ok"
    env = manifest["environment"]
    for key in ("bench", "python", "platform", "tensorflow", "keras", "numpy"):
        assert env[key], key
    assert manifest["config"]["aopc"]["grid"] == 3
    assert manifest["config"]["training"]["learning_rate"] == 0.001  # every default resolved
    assert manifest["dataset"]["fingerprint"]
    assert {p["name"] for p in manifest["plugins"]} >= {"gradcam", "baselines", "datasets"}
    cell = read_json(result.run_dir / "cells" / "synthetic-cxr__simple-cnn__gradcam__gaussian-noise.json")
    assert cell["status"] == "ok"
    assert cell["params"]["perturbation"] == {"sigma": 0.1, "clip": False}
    assert cell["provenance"]["explainer"]["distribution"] == "saliency-bench"
    assert cell["schema"] == 2 and cell["orders"] == ["morf", "lerf"]  # what the metrics need
    assert list(cell["metrics"]) == ["aopc", "abpc", "deletion-auc", "lerf-aopc"]  # the config's order
    assert all(m["status"] == "ok" for m in cell["metrics"].values())
    curves = np.load(result.run_dir / cell["curves_file"], allow_pickle=False)
    n = cell["n_images"]
    assert curves["morf_curves"].shape == (n, 10)
    assert curves["morf_order"].shape == (n, 9)
    # AOPC per image by hand from the curves: sum_k (f0 - fk) / (L+1)
    c = curves["morf_curves"].astype(np.float64)
    by_hand = (c[:, :1] - c[:, 1:]).sum(axis=1) / c.shape[1]
    aopc = cell["metrics"]["aopc"]
    assert aopc["value"] == pytest.approx(by_hand.mean(), abs=1e-9) and aopc["n"] == n
    per_image = np.load(result.run_dir / aopc["file"], allow_pickle=False)
    np.testing.assert_allclose(per_image[aopc["key"]], by_hand, atol=1e-9)
    assert per_image["ids"].tolist() == curves["ids"].tolist()
    for fmt in ("md", "csv", "json", "html", "tex"):
        assert (out / f"leaderboard.{fmt}").exists(), fmt
    table = pd.read_csv(out / "leaderboard.csv")
    assert len(table) == 2
    frame = result.to_frame()
    assert set(frame["explainer"]) == {"gradcam", "random"}
    assert {"aopc", "aopc_ci_low", "lerf-aopc", "abpc", "recall_macro", "f1_macro"} <= set(frame.columns)


def test_rerun_recomputes_nothing(first_run, counting_plugin, monkeypatch):
    out, _ = first_run
    cfg = tiny(out, explainers={"names": ["t-center"]})
    runner.clear_memo()
    bench.run(cfg, quiet=True, leaderboard=False)
    calls_first = counting_plugin.calls
    assert calls_first >= 1

    import bench.engine.curves as aopc_mod
    import bench.training as training_mod

    def no_fit(*args, **kwargs):
        raise AssertionError("a cached stage was recomputed")

    runner.clear_memo()  # as a fresh process would be
    monkeypatch.setattr(aopc_mod, "evaluate_aopc", no_fit)
    result = bench.run(cfg, quiet=True, leaderboard=False)
    assert result.ok
    assert counting_plugin.calls == calls_first  # explainer not called again
    model_record = read_json(result.run_dir / "models" / "synthetic-cxr__simple-cnn.json")
    assert model_record["training"]["from_cache"] is True
    assert training_mod is not None


def test_failing_cells_are_isolated(first_run, counting_plugin, capsys):
    out, _ = first_run
    cfg = tiny(out, explainers={"names": ["t-raise", "t-center", "t-nan", "t-shape"]})
    runner.clear_memo()
    result = bench.run(cfg, quiet=True)
    status = {c.explainer: c for c in result.cells}
    assert status["t-center"].status == "ok"
    assert status["t-raise"].status == "failed"
    assert status["t-raise"].stage == "explain"
    assert "explainer blew up on purpose" in status["t-raise"].error
    assert "t-nan" in status["t-nan"].error and "NaN" in status["t-nan"].error
    assert "t-shape" in status["t-shape"].error
    assert not result.ok
    manifest = read_json(result.run_dir / "manifest.json")
    assert manifest["status"] == "failed" and len(manifest["failed"]) == 3
    # a failed cell keeps its record on disk
    on_disk = read_json(result.run_dir / "cells" / "synthetic-cxr__simple-cnn__t-raise__gaussian-noise.json")
    assert on_disk["status"] == "failed" and "blew up" in on_disk["traceback"]


def test_cli_exit_status_and_summary_for_failed_cells(first_run, counting_plugin, capsys, tmp_path):
    out, _ = first_run
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(
        'preset = "demo"\n[dataset]\nname = "synthetic-cxr"\nparams = { image_size = 48, per_class = 20, lesion_contrast = 2.0 }\n'
        '[models]\nnames = ["simple-cnn"]\n[training]\nepochs = 2\nbatch_size = 16\n'
        '[explainers]\nnames = ["t-raise", "t-center"]\n[perturbations]\nnames = ["gaussian-noise"]\n'
        '[aopc]\ngrid = 3\nmax_images = 3\nbootstrap = 200\n'
    )
    code = main(["run", "--config", str(cfg_file), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    assert "t-raise" in captured.err and "blew up on purpose" in captured.err
    assert re.search(r"^simple-cnn\s+t-center\s", captured.out, re.M)  # the leaderboard is printed


def test_ctrl_c_keeps_finished_cells(first_run, counting_plugin):
    out, _ = first_run
    cfg = tiny(out, explainers={"names": ["t-center", "t-interrupt"]})
    runner.clear_memo()
    result = bench.run(cfg, quiet=True)
    assert result.interrupted
    assert [c.explainer for c in result.cells] == ["t-center"]
    assert (result.run_dir / "cells" / "synthetic-cxr__simple-cnn__t-center__gaussian-noise.json").exists()
    assert read_json(result.run_dir / "manifest.json")["status"] == "interrupted"


def test_dry_run_lists_cells(capsys):
    """--all: every model x explainer under the config's perturbations; --perturbation all adds every one."""
    reg = bench.registry()
    assert main(["run", "--all", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["perturbations"] == ["gaussian-noise"]  # the demo preset's: the study's perturbation
    assert len(plan["cells"]) == len(reg.names("model")) * len(reg.names("explainer"))
    assert main(["run", "--all", "--perturbation", "all", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert len(plan["cells"]) == (
        len(reg.names("model")) * len(reg.names("explainer")) * len(reg.names("perturbation"))
    )


def test_cli_config_error_exit_code(capsys):
    assert main(["run", "--set", "aopc.gird=3"]) == 2
    assert "did you mean 'aopc.grid'" in capsys.readouterr().err
    assert main(["run", "--model", "vgg61", "--dry-run"]) == 2
    assert "did you mean 'vgg16'" in capsys.readouterr().err


def test_data_flag_rejected_for_generated_dataset(capsys):
    assert main(["run", "--data", "/nowhere", "--dry-run"]) == 2
    assert "--data" in capsys.readouterr().err


def test_leaderboard_command_rebuilds_from_runs(first_run, capsys, tmp_path):
    out, _ = first_run
    assert main(["leaderboard", "--results", str(out), "--format", "latex"]) == 0
    text = capsys.readouterr().out
    assert "\\toprule" in text and "gradcam" in text
    target = tmp_path / "lb.csv"
    assert main(["leaderboard", "--results", str(out), "--format", "csv", "--out", str(target)]) == 0
    assert "gradcam" in target.read_text()
    assert main(["leaderboard", "--results", str(tmp_path / "empty")]) == 2


def test_max_images_is_a_class_stratified_seeded_sample():
    index = np.arange(100)
    labels = np.repeat([0, 1, 2, 3], 25)  # a test split sorted by class
    pick = runner.stratified_sample(index, labels, 8, seed=0)
    assert np.bincount(labels[pick], minlength=4).tolist() == [2, 2, 2, 2]
    assert np.all(np.diff(pick) > 0)
    assert pick.tolist() == runner.stratified_sample(index, labels, 8, seed=0).tolist()
    assert pick.tolist() != runner.stratified_sample(index, labels, 8, seed=1).tolist()
    uneven = runner.stratified_sample(index[:30], labels[:30], 10, seed=0)  # class 1 has only 5
    assert len(uneven) == 10 and np.bincount(labels[uneven]).tolist() == [5, 5]
    assert runner.stratified_sample(index, labels, 0, seed=0).tolist() == index.tolist()


def test_missing_data_folder_is_a_clear_error_before_any_cell(tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "COVID-19_Radiography_Dataset"
    code = main([
        "run", "--preset", "covid-radiography", "--data", str(missing), "--weights", "none",
        "--out", str(tmp_path / "results"), "--quiet",
    ])
    err = capsys.readouterr().err
    assert code == 2
    assert str(missing) in err
    (run_dir,) = (tmp_path / "results" / "runs").iterdir()
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "error" and str(missing) in manifest["error"]
    assert not (run_dir / "cells").exists()


def test_a_run_gives_back_the_incremental_engines_buffers(tmp_path, monkeypatch):
    from bench.engine import incremental

    released = []
    monkeypatch.setattr(incremental, "release_buffers", lambda: released.append(True))
    from _tiny_config import tiny as tiny_cfg

    bench.run(tiny_cfg(tmp_path / "out"), quiet=True, leaderboard=False)
    assert released == [True]  # once, at the end of the run, whatever strategy the cells used


def test_a_failing_cost_prediction_is_a_warning_and_the_cell_is_kept(tmp_path, monkeypatch):
    from _tiny_config import tiny as tiny_cfg

    from bench.pipeline import cell

    def broken(*args, **kwargs):
        raise RuntimeError("calibration file unreadable")

    monkeypatch.setattr(cell, "record_estimate", broken)
    with warnings.catch_warnings(record=True) as caught:  # not pytest.warns: it re-emits others' warnings
        warnings.simplefilter("always", UserWarning)
        result = bench.run(tiny_cfg(tmp_path / "out"), quiet=True, leaderboard=False)
    ours = [str(w.message) for w in caught if "predicted cost could not be computed" in str(w.message)]
    assert ours and all("(RuntimeError: calibration file unreadable)" in m for m in ours)
    assert result.ok and all(c.ok for c in result.cells)
