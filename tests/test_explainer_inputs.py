"""Explainers receive the dataset masks their spec declares, and every heatmap stage records its cost.

* ``ExplainerSpec(masks=("lesion",))``: ``explain`` gets ``masks={"lesion": bool (N, H, W)}``
  aligned with its images, batch by batch (checked here against the dataset by image id);
  the heatmaps' cache key holds the masks' content.
* A dataset without the declared mask: a cell that names the explainer fails with the mask
  and the dataset in its message, the other cells run; selected through ``all`` the
  explainer is left out of the grid with a warning.
* Cost: seconds and forward passes per map (``passes_per_map()``, else None) are in the cell
  record and in every leaderboard format.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import bench
from bench import pipeline
from bench.errors import BenchError, ComponentOutputError, DataError, PluginError
from bench.pipeline.explain import compute_heatmaps
from bench.pipeline.record import Timings
from bench.pipeline.store import read_json

SEEN: list[dict[str, np.ndarray]] = []


class MaskReader:
    """Returns the lesion mask as its heatmap (an oracle) and keeps what it was given."""

    def __init__(self, *, passes: float | None = 2.5):
        self.passes = passes

    def get_params(self) -> dict:
        return {"passes": self.passes}

    def explain(self, model, images, targets, *, ids=None, masks=None):
        SEEN.append({"ids": np.asarray(ids).astype(str), "lesion": np.asarray(masks["lesion"]),
                     "n": len(images), "shape": images.shape})
        return np.asarray(masks["lesion"], np.float32)

    def passes_per_map(self):
        return self.passes


class NeedsTumour:
    def get_params(self) -> dict:
        return {}

    def explain(self, model, images, targets, *, masks=None):
        raise AssertionError("must not run: the dataset has no tumour mask")


class Plugin:
    @bench.hookimpl
    def bench_register_explainers(self):
        return [
            bench.ExplainerSpec(name="t-mask-reader", factory=MaskReader, role="positive-control",
                                masks=("lesion",)),
            bench.ExplainerSpec(name="t-needs-tumour", factory=NeedsTumour, role="positive-control",
                                masks=("tumour",)),
        ]


@pytest.fixture(scope="module")
def plugin():
    bench.register_plugin(Plugin(), name="explainer-inputs-test")
    yield
    bench.unregister_plugin("explainer-inputs-test")


def grid(out, explainers, **extra):
    cfg = {
        "preset": "demo",
        "run": {"out": str(out)},
        "dataset": {"name": "synthetic-cxr", "params": {"image_size": 32, "per_class": 16,
                                                        "split": [0.5, 0.1, 0.4]}},
        "models": {"names": ["simple-cnn"]},
        "training": {"epochs": 1, "batch_size": 16},
        "explainers": {"names": explainers, "batch_size": 3},
        "perturbations": {"names": ["gaussian-noise"]},
        "aopc": {"grid": 3, "max_images": 7, "bootstrap": 200},
        "metrics": {"names": ["aopc"]},
        "leaderboard": {"control": "random", "figures": False},
    }
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def masked_run(plugin, tmp_path_factory):
    out = tmp_path_factory.mktemp("masks")
    SEEN.clear()
    pipeline.clear_memo()
    result = bench.run(grid(out, ["t-mask-reader", "random", "t-needs-tumour", "gradcam"]), quiet=True)
    return out, result, list(SEEN)


def _cell(result, explainer):
    return next(c for c in result.cells if c.explainer == explainer)


def test_spec_declares_masks_as_names():
    spec = bench.ExplainerSpec(name="x", factory=MaskReader, masks=["lesion", "lesion", "lung"])
    assert spec.masks == ("lesion", "lung")
    assert bench.ExplainerSpec(name="y", factory=MaskReader).masks == ()
    with pytest.raises(TypeError, match="tuple of names"):
        bench.ExplainerSpec(name="z", factory=MaskReader, masks="lesion")
    with pytest.raises(bench.InvalidNameError):
        bench.ExplainerSpec(name="z", factory=MaskReader, masks=("Bad Name",))


def test_the_explainer_gets_its_masks_aligned_with_its_images(masked_run):
    out, result, seen = masked_run
    cell = _cell(result, "t-mask-reader")
    assert cell.ok, cell.error
    from bench_datasets.synthetic import SyntheticCXR

    test = SyntheticCXR(image_size=32, per_class=16, split=[0.5, 0.1, 0.4]).load().test
    by_id = {i: k for k, i in enumerate(test.ids.astype(str))}
    assert sum(s["n"] for s in seen) == cell.n_images == 7
    assert [s["n"] for s in seen] == [3, 3, 1]  # explainers.batch_size = 3: sliced per batch
    for s in seen:
        rows = [by_id[i] for i in s["ids"]]
        assert s["lesion"].dtype == np.bool_ and s["lesion"].shape == (s["n"], 32, 32)
        np.testing.assert_array_equal(s["lesion"], test.masks["lesion"][rows])
    # the oracle's maps are the dataset's masks of the explained images, in their order
    maps = np.load(out / "runs" / result.run_id / cell.heatmaps_file)
    rows = [by_id[i] for i in maps["ids"].astype(str)]
    np.testing.assert_array_equal(maps["heatmaps"] > 0.5, test.masks["lesion"][rows])


def test_a_dataset_without_the_mask_fails_that_cell_only(masked_run):
    _, result, _ = masked_run
    failed = _cell(result, "t-needs-tumour")
    assert failed.status == "failed" and failed.stage == "explain"
    assert "'tumour'" in failed.error and "'synthetic-cxr'" in failed.error
    assert "its masks: lesion, lung" in failed.error
    assert [c.explainer for c in result.failed] == ["t-needs-tumour"]
    assert all(c.ok for c in result.cells if c.explainer != "t-needs-tumour")


def test_selected_through_all_it_is_left_out_with_a_warning(plugin, tmp_path):
    plan = pipeline.make_plan(bench.load_config(grid(tmp_path, ["t-mask-reader", "all"])))
    assert {"t-needs-tumour", "t-mask-reader"} <= set(plan.explainers)
    dropped = pipeline.drop_unavailable_explainers(plan, ("lesion", "lung"))
    assert "t-needs-tumour" in dropped and "t-mask-reader" not in dropped
    assert "t-needs-tumour" not in plan.explainers and "t-mask-reader" in plan.explainers
    assert "'tumour'" in plan.dropped["t-needs-tumour"] and "synthetic-cxr" in plan.dropped["t-needs-tumour"]
    assert all(c.explainer != "t-needs-tumour" for c in plan.cells)
    # named explicitly, it stays (its cells then fail with the reason)
    named = pipeline.make_plan(bench.load_config(grid(tmp_path, ["t-needs-tumour", "all"])))
    assert "t-needs-tumour" not in pipeline.drop_unavailable_explainers(named, ("lesion",))


def test_a_run_through_all_warns_and_records_the_skipped_cells(plugin, tmp_path, monkeypatch, capsys):
    # only the built-in random control and this test's explainers: block every other explainer plugin
    reg = bench.registry()
    others = [p.name for p in reg.plugins if p.components.get("explainer") and p.name != "baselines"
              and p.name != "explainer-inputs-test"]
    monkeypatch.setenv("BENCH_DISABLE_PLUGINS", ",".join(others))
    bench.registry(reload=True)
    cfg = grid(tmp_path, ["all"])
    cfg.pop("preset")  # the demo preset holds params of the blocked explainers
    try:
        result = bench.run(cfg, quiet=False, leaderboard=False)
    finally:
        monkeypatch.delenv("BENCH_DISABLE_PLUGINS")
        bench.registry(reload=True)
    assert result.ok, [c.error for c in result.failed]
    assert sorted(c.explainer for c in result.cells) == ["random", "t-mask-reader"]
    manifest = read_json(result.run_dir / "manifest.json")
    assert "t-needs-tumour" in manifest["skipped"]["explainers"]
    assert manifest["skipped"]["cells"] == ["synthetic-cxr__simple-cnn__t-needs-tumour__gaussian-noise"]
    assert "synthetic-cxr__simple-cnn__t-needs-tumour__gaussian-noise" not in manifest["cells"]
    err = capsys.readouterr().err
    assert "warning:" in err and "'tumour'" in err and "left out of this grid" in err


def test_compute_heatmaps_checks_and_slices_the_masks():
    images = np.zeros((5, 4, 4), np.uint8)
    masks = {"lesion": np.arange(5 * 16).reshape(5, 4, 4) % 3 == 0}
    SEEN.clear()
    maps = compute_heatmaps(MaskReader(), _NoModel(), images, np.zeros(5, int), masks=masks, batch_size=2)
    np.testing.assert_array_equal(maps > 0.5, masks["lesion"])
    assert [s["n"] for s in SEEN] == [2, 2, 1]
    with pytest.raises(DataError, match="must be bool"):
        compute_heatmaps(MaskReader(), _NoModel(), images, np.zeros(5, int), masks={"lesion": masks["lesion"][:4]})

    class NoMasksKeyword:
        def explain(self, model, images, targets):
            return np.zeros((len(images), 2, 2), np.float32)

    with pytest.raises(PluginError, match="takes no masks keyword"):
        compute_heatmaps(NoMasksKeyword(), _NoModel(), images, np.zeros(5, int), masks=masks)


class _NoModel:
    """A stand-in bench model (the explainers here never call it)."""

    keras = None

    def features_and_logits(self, x):  # pragma: no cover - never called
        raise AssertionError


def test_the_heatmaps_key_holds_the_masks_content(plugin, tmp_path):
    from _fake_runs import make_splits

    plan = pipeline.make_plan(bench.load_config(grid(tmp_path, ["t-mask-reader", "random"])))
    stages = pipeline.Stages(plan, quiet=True, cached_only=True)
    splits = make_splits("synthetic-cxr", n_test=6)
    labels = np.asarray(splits.test.labels, np.int64)
    model = pipeline.ModelArtifact(model=None, key="mkey", params={}, record={"model": "m"}, predictions=labels,
                                   labels=labels, ids=np.asarray(splits.test.ids))

    def key(masks):
        test = splits.test
        object.__setattr__(test, "masks", masks)
        data = pipeline.DatasetArtifact(splits=splits, key="dkey", file=tmp_path / "x.npz", params={})
        with pytest.raises(pipeline.NotCached) as info:
            stages.heatmaps("t-mask-reader", data, model)
        return info.value.key

    h, w = splits.test.images.shape[1:3]
    empty = np.zeros((6, h, w), bool)
    some = empty.copy()
    some[0, 0, 0] = True
    assert key({"lesion": empty}) == key({"lesion": empty.copy()})
    assert key({"lesion": empty}) != key({"lesion": some})
    with pytest.raises(BenchError, match="needs the dataset mask"):
        key({"lung": empty})


def test_cost_per_map_is_recorded(masked_run):
    out, result, _ = masked_run
    reader, random, gradcam = (_cell(result, e) for e in ("t-mask-reader", "random", "gradcam"))
    assert reader.timings.passes_per_map == 2.5 and random.timings.passes_per_map == 0.0
    assert gradcam.timings.passes_per_map == 1.0  # one forward + backward pass
    for cell in (reader, random, gradcam):
        assert cell.timings.explain_maps == cell.n_images == 7
        assert cell.timings.seconds_per_map == pytest.approx(cell.timings.explain_seconds / 7)
        assert cell.timings.seconds_per_map > 0
    on_disk = read_json(out / "runs" / result.run_id / "cells" / f"{reader.cell_id}.json")
    assert on_disk["timings"]["passes_per_map"] == 2.5 and on_disk["timings"]["seconds_per_map"] > 0
    # cached: the original cost is kept, nothing recomputed
    pipeline.clear_memo()
    SEEN.clear()
    again = bench.run(grid(out, ["t-mask-reader"], leaderboard={"control": "", "figures": False}), quiet=True,
                      leaderboard=False)
    assert not SEEN
    assert again.cells[0].timings.to_dict() == reader.timings.to_dict()


def test_an_explainer_without_passes_per_map_records_none(plugin, tmp_path):
    class Quiet(MaskReader):
        passes_per_map = None  # type: ignore[assignment]

    assert pipeline.passes_per_map_of(Quiet()) is None
    assert pipeline.passes_per_map_of(MaskReader(passes=None)) is None
    assert pipeline.passes_per_map_of(MaskReader(passes=3)) == 3.0
    with pytest.raises(ComponentOutputError, match="passes_per_map"):
        pipeline.passes_per_map_of(MaskReader(passes=-1))
    t = Timings(explain_seconds=2.0, explain_maps=4)
    assert t.seconds_per_map == 0.5 and t.passes_per_map is None
    assert Timings.from_dict(t.to_dict()) == t
    assert Timings.from_dict({"explain_seconds": 1.0}).seconds_per_map is None  # an older record


def test_the_leaderboard_shows_cost_per_map_in_every_format(masked_run):
    out, result, _ = masked_run
    import pandas as pd

    csv = pd.read_csv(out / "leaderboard.csv")
    row = csv[csv["explainer"] == "t-mask-reader"].iloc[0]
    assert row["passes_per_map"] == 2.5 and row["seconds_per_map"] > 0
    assert csv[csv["explainer"] == "random"].iloc[0]["passes_per_map"] == 0
    doc = json.loads((out / "leaderboard.json").read_text())
    jrow = next(r for r in doc["rows"] if r["explainer"] == "t-mask-reader")
    assert jrow["passes_per_map"] == 2.5 and jrow["seconds_per_map"] > 0
    for fmt in ("md", "html", "tex"):
        text = (out / f"leaderboard.{fmt}").read_text()
        assert "passes/map" in text and "s/map" in text, fmt
        assert "2.5" in text, fmt


def test_the_conformance_kit_passes_the_declared_masks(plugin):
    from bench.testing import check_component

    SEEN.clear()
    check_component(MaskReader())  # registered with masks=("lesion",): the kit passes box masks
    assert SEEN and all(s["lesion"].shape == (s["n"], *s["shape"][1:3]) for s in SEEN)
    assert any(s["lesion"].any() for s in SEEN)
