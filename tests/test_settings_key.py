"""No mixed rows: the settings fingerprint is part of the row key, and rows pair only within one.

Cell records come from :func:`bench.pipeline.execute_cell` driven by stub stages with known
numbers (no TensorFlow, no training), or from :mod:`_fake_runs`; nothing asserted here
depends on CPU rounding.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _fake_runs import FakeCell, curves_for, default_ids, make_splits, write_run

import bench
from bench.config import loading as config_mod
from bench.pipeline import (
    CellTask,
    CurvesArtifact,
    DatasetArtifact,
    HeatmapsArtifact,
    MetricOutput,
    ModelArtifact,
    Plan,
    Stages,
    execute_cell,
)
from bench.pipeline.metrics import compute_columns, metric_data
from bench.pipeline.settings import (
    cell_settings,
    count_constant_heatmaps,
    explainer_params_key,
    settings_key,
)
from bench.pipeline.store import Cache, read_json
from bench.publish.collect import KEY_COLUMNS, PAIR_COLUMNS, collect, short_keys
from bench.publish.comparisons import attach_gain_ci, paired_comparisons
from bench.publish.formats import render
from bench.publish.leaderboard import build_leaderboard

GRADCAM = [0.50, 0.40, 0.60, 0.45, 0.55, 0.35, 0.52, 0.48]
RANDOM = [0.20, 0.25, 0.10, 0.30, 0.15, 0.22, 0.18, 0.20]
N = len(GRADCAM)


# ---------------------------------------------------------------------------------------
# execute_cell with stub stages: the record the runner really writes
# ---------------------------------------------------------------------------------------
class StubStages(Stages):
    """:class:`bench.pipeline.Stages` whose stages return known heatmaps and per-image AOPC
    (no TensorFlow, no training); the metric and cell code is the real one (nothing cached)."""

    def __init__(self, cfg: dict[str, Any], per_image: dict[str, list[float]],
                 explainer_params: dict[str, dict[str, Any]], heatmaps: dict[str, np.ndarray] | None = None,
                 sigma: float = 0.1, weights_md5: str = "a" * 32):
        reg = bench.registry()
        plan = Plan(config=cfg, dataset="synthetic-cxr", models=["simple-cnn"], explainers=list(per_image),
                    perturbations=["gaussian-noise"], metrics=config_mod.resolve_names(cfg, "metrics", reg))
        super().__init__(plan, cache=Cache("unused-cache"), quiet=True)
        self.per_image = per_image
        self.explainer_params = explainer_params
        self.maps = heatmaps or {}
        self.sigma = sigma
        self.weights_md5 = weights_md5
        self.splits = make_splits("synthetic-cxr", n_test=N)

    def dataset(self) -> DatasetArtifact:
        return DatasetArtifact(splits=self.splits, key="dkey", file=Path("unused.npz"), params={"image_size": 32})

    def model(self, name: str, data: DatasetArtifact) -> ModelArtifact:
        labels = np.asarray(self.splits.test.labels, np.int64)
        record = {
            "dataset": "synthetic-cxr", "model": name, "weights": "none", "weights_md5": self.weights_md5,
            "weights_info": {"md5": self.weights_md5}, "params": {"input_shape": [32, 32, 3]},
            "provenance": {}, "key": "mkey",
            "classification": {"macro avg": {"recall": 0.8, "f1-score": 0.79, "precision": 0.81},
                               "accuracy": 0.81},
        }
        return ModelArtifact(model=None, key="mkey", params={}, record=record, predictions=labels,
                             labels=labels, ids=np.asarray(self.splits.test.ids))

    def explained_subset(self, data: DatasetArtifact, model: ModelArtifact) -> np.ndarray:
        return np.arange(N)

    def heatmaps(self, name: str, data: DatasetArtifact, model: ModelArtifact,
                 index: np.ndarray | None = None) -> HeatmapsArtifact:
        default = np.random.default_rng(0).random((N, 6, 6)).astype(np.float32)
        index = np.arange(N)
        return HeatmapsArtifact(explainer=name, heatmaps=self.maps.get(name, default), key=f"h-{name}",
                                params=dict(self.explainer_params.get(name, {})), index=index,
                                ids=np.asarray(data.splits.test.ids)[index].astype(str), seconds=0.1)

    def curves(self, name: str, order: str, data: DatasetArtifact, model: ModelArtifact,
               heat: HeatmapsArtifact, **_: Any) -> CurvesArtifact:
        values = np.asarray(self.per_image[heat.explainer], np.float64)
        grid = config_mod.grid_shape(self.plan.config["aopc"]["grid"])
        L = grid[0] * grid[1]
        # curves whose AOPC is the known per-image value (LeRF: a fifth of it)
        return CurvesArtifact(
            perturbation=name, order=order, key=f"c-{heat.explainer}-{order}", params={"sigma": self.sigma, "clip": True},
            curves=curves_for(values if order == "morf" else values / 5, L), per_image=values,
            region_order=np.tile(np.arange(L), (N, 1)), ids=np.asarray(default_ids(N)), forward_passes=N * (L + 1),
            seconds=1.0, strategy="full",
        )

    def metric(self, name: str, inputs: Mapping[str, Any], **_: Any) -> MetricOutput:
        spec = self.plan.metric_spec(name)
        metric = bench.create("metric", name)
        columns = compute_columns(metric, spec, metric_data(spec, **inputs))
        return MetricOutput(name=name, columns=columns, params=metric.get_params(), key=f"m-{name}")


def _config(**aopc: Any) -> dict[str, Any]:
    cfg = config_mod.defaults()
    cfg["aopc"].update({"grid": 3, "max_images": 0, "bootstrap": 200, **aopc})
    cfg["metrics"]["names"] = ["aopc"]
    return cfg


def _run(results: Path, run_id: str, stages: StubStages, explainers: list[str], *,
         finished: str = "2026-01-01T00:00:00+00:00") -> list[dict[str, Any]]:
    run_dir = results / "runs" / run_id
    records = []
    for name in explainers:
        rec = execute_cell(stages, CellTask("synthetic-cxr", "simple-cnn", name, "gaussian-noise"), run_dir, run_id)
        assert rec.ok, rec.traceback
        # a deterministic "latest" order for the leaderboard
        cell_file = run_dir / "cells" / f"{rec.cell_id}.json"
        data = read_json(cell_file)
        data["finished"] = finished
        cell_file.write_text(json.dumps(data))
        records.append(data)
    return records


PARAMS = {"gradcam": {"layer": "auto"}, "random": {"scale": 1.0}}


def test_execute_cell_records_settings_block_key_and_constant_heatmaps(tmp_path):
    maps = {"random": np.stack([np.full((6, 6), 0.5, np.float32)] * 3
                               + [np.eye(6, dtype=np.float32)] * (N - 3))}
    stages = StubStages(_config(), {"gradcam": GRADCAM, "random": RANDOM}, PARAMS, heatmaps=maps)
    gradcam, random = _run(tmp_path, "r", stages, ["gradcam", "random"])
    assert random["constant_heatmaps"] == 3 and gradcam["constant_heatmaps"] == 0
    s = gradcam["settings"]
    assert s["aopc"]["grid"] == [3, 3] and s["aopc"]["bootstrap"] == 200 and s["seed"] == 0
    assert s["perturbation"]["params"] == {"sigma": 0.1, "clip": True}
    assert s["dataset"] == {"params": {"image_size": 32}, "fingerprint": "fake0000"}
    assert s["model"]["weights_hash"] == {"md5": "a" * 32}
    assert s["training"] == config_mod.defaults()["training"]
    assert "explainer" not in s  # an explainer's own params are its row key only
    assert gradcam["settings_key"] == settings_key(s) == random["settings_key"]
    assert gradcam["explainer_params_key"] == explainer_params_key(PARAMS["gradcam"])
    assert gradcam["explainer_params_key"] != random["explainer_params_key"]


@pytest.mark.parametrize("change", [
    {"aopc": {"grid": 5}},
    {"metrics": {"names": ["aopc", "lerf-aopc"]}},  # other metrics, and so other curve orders
    {"metrics": {"names": ["aopc", "deletion-auc"]}},  # other metrics, the same curve orders
    {"aopc": {"max_images": 4}},
    {"aopc": {"bootstrap": 500}},
    {"aopc": {"confidence": 0.9}},
    {"run": {"seed": 1}},
    {"training": {"epochs": 3}},
    {"sigma": 0.3},
    {"weights_md5": "b" * 32},
])
def test_every_setting_that_changes_a_number_changes_the_key(tmp_path, change):
    base = StubStages(_config(), {"gradcam": GRADCAM}, PARAMS)
    cfg = _config()
    for section in ("aopc", "run", "training", "metrics"):
        cfg[section].update(change.get(section, {}))
    other = StubStages(cfg, {"gradcam": GRADCAM}, PARAMS, sigma=change.get("sigma", 0.1),
                       weights_md5=change.get("weights_md5", "a" * 32))
    (a,) = _run(tmp_path, "a", base, ["gradcam"])
    (b,) = _run(tmp_path, "b", other, ["gradcam"])
    assert a["settings_key"] != b["settings_key"]


def test_batch_sizes_and_explainer_params_do_not_change_the_settings_key(tmp_path):
    cfg = _config(batch_size=7)
    cfg["explainers"]["batch_size"] = 3
    (a,) = _run(tmp_path, "a", StubStages(_config(), {"gradcam": GRADCAM}, PARAMS), ["gradcam"])
    (b,) = _run(tmp_path, "b", StubStages(cfg, {"gradcam": GRADCAM}, {"gradcam": {"layer": "x"}}), ["gradcam"])
    assert a["settings_key"] == b["settings_key"]
    assert a["explainer_params_key"] != b["explainer_params_key"]


def test_two_grids_never_pair_and_never_give_a_gain(tmp_path):
    """The issue's repro: random at grid 3 into R, then Grad-CAM at grid 5 into the same R."""
    _run(tmp_path, "r1", StubStages(_config(grid=3), {"random": RANDOM}, PARAMS), ["random"])
    _run(tmp_path, "r2", StubStages(_config(grid=5), {"gradcam": GRADCAM}, PARAMS), ["gradcam"],
         finished="2026-01-02T00:00:00+00:00")
    df = collect(tmp_path)
    assert len(df) == 2 and df["settings"].nunique() == 2
    g = df[df.explainer == "gradcam"].iloc[0]
    assert math.isnan(g.gain_over_baseline)
    comp = paired_comparisons(df, n_resamples=200)
    assert comp.empty
    out = attach_gain_ci(df, comp, "random")
    assert out[out.explainer == "gradcam"].gain_over_baseline.isna().all()


def test_two_sigmas_never_pair(tmp_path):
    write_run(tmp_path, "r1", [FakeCell("d", "m", "random", per_image=RANDOM, sigma=0.1)])
    write_run(tmp_path, "r2", [FakeCell("d", "m", "gradcam", per_image=GRADCAM, sigma=0.3)])
    df = collect(tmp_path)
    assert df["settings"].nunique() == 2
    assert df.gain_over_baseline[df.explainer == "gradcam"].isna().all()
    assert paired_comparisons(df, n_resamples=200).empty


def test_gradcam_and_random_with_their_own_params_still_pair(tmp_path):
    _run(tmp_path, "r", StubStages(_config(), {"gradcam": GRADCAM, "random": RANDOM}, PARAMS),
         ["gradcam", "random"])
    df = collect(tmp_path)
    assert df["settings"].nunique() == 1 and df["explainer_params"].nunique() == 2
    g = df[df.explainer == "gradcam"].iloc[0]
    assert g.gain_over_baseline == pytest.approx(np.mean(GRADCAM) - np.mean(RANDOM))
    comp = paired_comparisons(df, n_resamples=200)
    assert len(comp) == 1
    c = comp.iloc[0]
    assert (c.explainer_a, c.explainer_b) == ("gradcam", "random") and c.n == N
    assert c.settings == g.settings
    assert c["diff"] == pytest.approx(np.mean(GRADCAM) - np.mean(RANDOM))
    out = attach_gain_ci(df, comp, "random")
    row = out[out.explainer == "gradcam"].iloc[0]
    assert row.gain_ci_low <= row.gain_over_baseline <= row.gain_ci_high


def test_one_explainer_with_two_param_sets_gives_two_rows_both_compared(tmp_path):
    write_run(tmp_path, "r1", [FakeCell("d", "m", "random", per_image=RANDOM),
                               FakeCell("d", "m", "gradcam", per_image=GRADCAM, explainer_params={"layer": "a"})])
    write_run(tmp_path, "r2", [FakeCell("d", "m", "gradcam", per_image=RANDOM, explainer_params={"layer": "b"})])
    df = collect(tmp_path)
    assert len(df) == 3 and df["settings"].nunique() == 1
    gains = df[df.explainer == "gradcam"].set_index("run_id").gain_over_baseline
    assert gains["r1"] == pytest.approx(np.mean(GRADCAM) - np.mean(RANDOM)) and gains["r2"] == pytest.approx(0.0)
    comp = paired_comparisons(df, n_resamples=200)
    assert len(comp) == 3  # gradcam[a], gradcam[b], random: every pair once
    out = attach_gain_ci(df, comp, "random").set_index("run_id")
    assert out.loc["r1"][out.loc["r1"].explainer == "gradcam"].gain_over_baseline.iloc[0] == pytest.approx(
        np.mean(GRADCAM) - np.mean(RANDOM))
    md = render(df, "md")
    assert "Explainer params" in md and '{"layer": "a"}' in md and '{"layer": "b"}' in md


def test_settings_column_in_every_format_and_legend_in_the_notes(tmp_path):
    write_run(tmp_path, "r1", [FakeCell("d", "m", "random", per_image=RANDOM)])
    write_run(tmp_path, "r2", [FakeCell("d", "m", "gradcam", per_image=GRADCAM, grid=5, sigma=0.3)])
    paths = build_leaderboard(tmp_path, figures=False)
    df = collect(tmp_path)
    keys = sorted(df["settings"])
    assert all(len(k) == 6 and int(k, 16) >= 0 for k in keys) and len(set(keys)) == 2
    md, html, tex = (paths[f].read_text() for f in ("md", "html", "tex"))
    for text, header in ((md, r"\| Settings "), (html, r"<th[^>]*>(<button[^>]*>)?Settings<"), (tex, "& Settings &")):
        assert re.search(header, text), header
        assert all(k in text for k in keys)
    for text in (md, tex):  # the legend: what each fingerprint stands for
        assert "grid=5x5" in text and "grid=3x3" in text
        assert "perturbation.sigma=0.3" in text and "perturbation.sigma=0.1" in text
    # the page's legend is a table: one row per setting, one column per fingerprint
    legend_html = html[html.index("Settings fingerprints"):]
    for field, values in (("grid", ("5x5", "3x3")), ("perturbation.sigma", ("0.3", "0.1"))):
        assert f">{field}<" in legend_html and all(v in legend_html for v in values)
    csv = pd.read_csv(io.StringIO(paths["csv"].read_text()), dtype={"settings": str})
    assert sorted(csv["settings"]) == keys
    doc = json.loads(paths["json"].read_text())
    assert "settings" in doc["columns"] and sorted(r["settings"] for r in doc["rows"]) == keys
    legend = doc["provenance"]["settings"]
    assert sorted(legend) == keys
    assert {legend[k]["grid"] for k in keys} == {"3x3", "5x5"}
    assert all(v["seed"] == "0" for v in legend.values())


def test_old_records_without_settings_still_load_and_pair_by_their_params(tmp_path):
    write_run(tmp_path, "old", [
        FakeCell("d", "m", "random", per_image=RANDOM, legacy=True, explainer_params={"scale": 1}),
        FakeCell("d", "m", "gradcam", per_image=GRADCAM, legacy=True),
    ])
    write_run(tmp_path, "old5", [FakeCell("d", "m", "occlusion", per_image=RANDOM, legacy=True, grid=5)])
    cell = read_json(tmp_path / "runs" / "old" / "cells" / "d__m__gradcam__gaussian-noise.json")
    assert "settings" not in cell and "settings_key" not in cell
    df = collect(tmp_path).set_index("explainer")
    assert df.loc["gradcam", "settings"] == df.loc["random", "settings"] != df.loc["occlusion", "settings"]
    assert df.loc["gradcam", "gain_over_baseline"] == pytest.approx(np.mean(GRADCAM) - np.mean(RANDOM))
    assert math.isnan(df.loc["occlusion", "gain_over_baseline"])
    assert pd.isna(df.loc["gradcam", "constant_heatmaps"])
    # rebuilt from params + manifest + model report with the runner's own function: an old record
    # and a new one with the same inputs get the same fingerprint
    write_run(tmp_path, "new", [FakeCell("d", "m", "edge", per_image=RANDOM)])
    assert collect(tmp_path).set_index("explainer").loc["edge", "settings"] == df.loc["gradcam", "settings"]


def test_constant_heatmaps_are_flagged(tmp_path):
    write_run(tmp_path, "r", [FakeCell("d", "m", "random", per_image=RANDOM),
                              FakeCell("d", "m", "t-flat", per_image=RANDOM, constant_heatmaps=N)])
    df = collect(tmp_path).set_index("explainer")
    assert df.loc["t-flat", "constant_heatmaps"] == N and df.loc["random", "constant_heatmaps"] is pd.NA
    paths = build_leaderboard(tmp_path, figures=False, report=False)
    for fmt in ("md", "html", "tex"):
        text = paths[fmt].read_text()
        assert f"{N}/{N} constant heatmaps: order is arbitrary" in text, fmt
        assert "Flags" in text and "all-equal heatmap" in text
    csv = pd.read_csv(paths["csv"])
    assert csv.set_index("explainer").loc["t-flat", "constant_heatmaps"] == N
    # no flag column when nothing is constant
    clean = collect(tmp_path)
    clean = clean[clean.explainer == "random"]
    clean.attrs = collect(tmp_path).attrs
    assert "Flags" not in render(clean, "md").split("## ")[0]


def test_count_constant_heatmaps_by_hand():
    maps = np.zeros((4, 3, 3), np.float32)
    maps[1, 0, 0] = 1.0
    maps[2] = 7.0
    maps[3, 2, 2] = -1e-6
    assert count_constant_heatmaps(maps) == 2
    assert count_constant_heatmaps(np.zeros((0, 3, 3))) == 0


def test_short_keys_are_unique_prefixes():
    # 6 characters unless two keys share them; then one length for all, long enough to tell them apart
    assert short_keys(["0123456789", "abcdef0123"]) == {"0123456789": "012345", "abcdef0123": "abcdef"}
    assert short_keys(["abcdef01", "abcdef02", "123456ff"]) == {
        "abcdef01": "abcdef01", "abcdef02": "abcdef02", "123456ff": "123456ff"}


def test_key_and_pair_columns():
    assert {"settings", "explainer_params"} <= set(KEY_COLUMNS)
    assert "settings" in PAIR_COLUMNS and "explainer" not in PAIR_COLUMNS
    assert "explainer_params" not in PAIR_COLUMNS
    block = cell_settings({"aopc": {"grid": [3, 3], "seed": 0}, "explainer": {"x": 1}})
    assert "explainer" not in block and block["aopc"]["grid"] == [3, 3]
