"""Paired comparisons, per-class AOPC, classification tables and report.md."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from _fake_runs import CLASS_NAMES, FakeCell, write_run

from bench import stats as st
from bench.publish.classification import classification_tables
from bench.publish.collect import collect, primary_column
from bench.publish.comparisons import (
    attach_gain_ci,
    compare_explainers,
    group_by_class,
    paired_comparisons,
    per_class_values,
)
from bench.publish.leaderboard import build_leaderboard
from bench.publish.report import build_report, choose_images, render_report, slug

A = [0.50, 0.40, 0.60, 0.45, 0.55, 0.35, 0.52, 0.48]
B = [0.20, 0.25, 0.10, 0.30, 0.15, 0.22, 0.18, 0.20]
C = [0.49, 0.43, 0.58, 0.41, 0.50, 0.37, 0.55, 0.47]
IDS = [f"test-{i:03d}" for i in range(8)]


def _hand_holm(p):
    p = np.asarray(p, float)
    order = np.argsort(p)
    m = len(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def test_compare_explainers_by_hand():
    values = {name: pd.Series(v, index=IDS) for name, v in {"a": A, "c": C, "b": B}.items()}
    comp = compare_explainers(values, n_resamples=2000)
    assert [tuple(x) for x in comp[["explainer_a", "explainer_b"]].to_numpy()] == [("a", "c"), ("a", "b"), ("c", "b")]
    pairs = {"a": np.array(A), "b": np.array(B), "c": np.array(C)}
    p_hand = []
    for _, row in comp.iterrows():
        d = pairs[row.explainer_a] - pairs[row.explainer_b]
        assert row["diff"] == pytest.approx(d.mean())
        assert row.n == 8
        assert row.mean_a == pytest.approx(pairs[row.explainer_a].mean())
        assert row.ci_low <= row["diff"] <= row.ci_high
        # the p-value is the statistics layer's test of the paired values (whichever test it runs)
        p = st.paired_comparison(pairs[row.explainer_a], pairs[row.explainer_b], n_resamples=2000)["p_value"]
        assert row.p_value == pytest.approx(p)
        p_hand.append(p)
    # a - b: all 8 differences positive: clearly significant under any paired test
    assert comp.p_value.iloc[1] < 0.01
    np.testing.assert_allclose(comp.p_holm.to_numpy(), _hand_holm(p_hand))
    assert comp.family_size.iloc[0] == 3
    assert list(comp.significant) == list(comp.p_holm < 0.05)


def test_compare_aligns_by_ids_on_the_intersection():
    # b lists its images in another order and lacks two of a's; one extra id of its own
    a = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0], index=["i0", "i1", "i2", "i3", "i4"])
    b = pd.Series([0.5, 10.0, 1.0, 7.0], index=["i4", "zz", "i0", "i2"])
    comp = compare_explainers({"a": a, "b": b}, n_resamples=500)
    row = comp.iloc[0]
    # shared: i0 (1 - 1), i2 (3 - 7), i4 (5 - 0.5)
    assert row.n == 3
    assert row["diff"] == pytest.approx(np.mean([0.0, -4.0, 4.5]))
    assert row.mean_b == pytest.approx(np.mean([1.0, 7.0, 0.5]))


def test_compare_no_shared_images():
    comp = compare_explainers({"a": pd.Series([1.0], index=["x"]), "b": pd.Series([2.0], index=["y"])})
    assert comp.n.iloc[0] == 0 and np.isnan(comp["diff"].iloc[0]) and not comp.significant.iloc[0]


@pytest.fixture()
def results(tmp_path):
    write_run(tmp_path, "run-1", [
        FakeCell("covid", "vgg16", "gradcam", per_image=A),
        FakeCell("covid", "vgg16", "random", per_image=B),
        # scored on a subset of the images, in reverse order
        FakeCell("covid", "vgg16", "occlusion", per_image=C[::-1][:6], ids=IDS[::-1][:6]),
        FakeCell("covid", "densenet201", "gradcam", per_image=C),
        FakeCell("covid", "densenet201", "broken", status="failed", error="ZeroDivisionError: oops"),
    ])
    return tmp_path


def test_paired_comparisons_from_run_folders(results):
    df = collect(results)
    comp = paired_comparisons(df, n_resamples=1000)
    # vgg16 family: 3 explainers -> 3 pairs; densenet201 has one explainer -> none
    assert set(comp.model) == {"vgg16"} and len(comp) == 3
    row = comp[(comp.explainer_a == "gradcam") & (comp.explainer_b == "occlusion")].iloc[0]
    shared = IDS[2:]  # occlusion scored test-002 .. test-007
    # the curves files store per-image values as float32
    a = np.array(A, np.float32)[2:].astype(np.float64)
    c = np.array(C, np.float32)[2:].astype(np.float64)
    assert row.n == len(shared)
    assert row["diff"] == pytest.approx((a - c).mean(), abs=1e-6)
    assert row.p_value == pytest.approx(st.paired_comparison(a, c, n_resamples=1000)["p_value"])
    assert row.run_a == row.run_b == "run-1"
    np.testing.assert_allclose(comp.p_holm, _hand_holm(comp.p_value))


def test_gain_over_baseline_uses_the_paired_difference(results):
    df = collect(results)
    comp = paired_comparisons(df, n_resamples=1000)
    out = attach_gain_ci(df, comp, "random").set_index(["model", "explainer"])
    g = out.loc[("vgg16", "gradcam")]
    assert g.gain_over_baseline == pytest.approx(np.mean(A) - np.mean(B), abs=1e-6)
    assert g.gain_ci_low < g.gain_over_baseline < g.gain_ci_high
    # occlusion is "a" or "b" relative to random: the sign is always explainer - baseline
    o = out.loc[("vgg16", "occlusion")]
    assert o.gain_over_baseline == pytest.approx(np.mean(np.array(C)[2:] - np.array(B)[2:]), abs=1e-6)
    assert o.gain_ci_low < o.gain_over_baseline < o.gain_ci_high
    assert np.isnan(out.loc[("densenet201", "gradcam"), "gain_ci_low"])


def test_gain_ci_sign_flip_when_baseline_ranks_first():
    df = pd.DataFrame({"dataset": ["d", "d"], "model": ["m", "m"], "weights": ["w", "w"],
                       "perturbation": ["p", "p"], "explainer": ["random", "x"], "aopc": [0.5, 0.3],
                       "gain_over_baseline": [0.0, -0.2], "gain_ci_low": [np.nan] * 2,
                       "gain_ci_high": [np.nan] * 2})
    comp = pd.DataFrame([{"dataset": "d", "model": "m", "weights": "w", "perturbation": "p",
                          "explainer_a": "random", "explainer_b": "x", "diff": 0.2, "ci_low": 0.1,
                          "ci_high": 0.3}])
    out = attach_gain_ci(df, comp, "random")
    assert out.loc[1, "gain_over_baseline"] == pytest.approx(-0.2)
    assert (out.loc[1, "gain_ci_low"], out.loc[1, "gain_ci_high"]) == pytest.approx((-0.3, -0.1))


def test_group_by_class_by_hand():
    values = np.array([0.1, 0.2, 0.3, 0.5, 0.7])
    labels = np.array([0, 0, 1, 1, 1])
    out = group_by_class(values, labels, ["no", "yes"])
    assert list(out) == ["no", "yes"]
    assert out["no"][0] == pytest.approx(0.15) and out["no"][3] == 2
    assert out["yes"][0] == pytest.approx(0.5) and out["yes"][3] == 3
    assert out["yes"][1] <= 0.5 <= out["yes"][2]
    full = group_by_class(values, labels, ["no", "yes", "maybe"], include_empty=True)
    assert list(full) == ["no", "yes", "maybe"] and full["maybe"][3] == 0 and np.isnan(full["maybe"][0])


def test_per_class_aopc_from_a_cell(results):
    df = collect(results)
    row = df[(df.model == "vgg16") & (df.explainer == "gradcam")].iloc[0]
    out = per_class_values(row, primary_column(df), CLASS_NAMES)
    # fake labels cycle over the 4 classes: class c gets images c and c + 4
    for c, name in enumerate(CLASS_NAMES):
        assert out[name][0] == pytest.approx((A[c] + A[c + 4]) / 2, abs=1e-6)
        assert out[name][3] == 2


def test_classification_tables(results):
    tables = classification_tables(collect(results))
    assert {(t["model"], t["weights"]) for t in tables} == {("vgg16", "none"), ("densenet201", "none")}
    t = next(t for t in tables if t["model"] == "vgg16")
    assert t["headers"] == ["Class", "Precision", "Recall", "F1", "Support"]
    assert [r[0] for r in t["rows"]] == [*CLASS_NAMES, "macro avg", "weighted avg"]
    assert t["rows"][1] == ["Lung Opacity", "0.810", "0.720", "0.760", "2"]  # one number format


def test_report_md(results):
    path = build_report(results)
    text = path.read_text()
    assert path == results / "report.md"
    for heading in ("## Leaderboard", "## Classification (test split)", "### covid / vgg16 (weights none)",
                    "## Paired comparisons", "Holm", "## Failed cells", "## Provenance",
                    "Confusion matrix"):
        assert heading in text, heading
    assert "ZeroDivisionError: oops" in text
    # per-class AOPC: vgg16/gradcam, class COVID = images 0 and 4 of A
    per_class = text[text.index("## AOPC ↑ per class"):text.index("## Paired comparisons")]
    gradcam_row = next(line for line in per_class.splitlines() if line.startswith("| gradcam"))
    assert f"| {(A[0] + A[4]) / 2:.3f} [" in gradcam_row and "(2)" in gradcam_row
    assert "| Viral Pneumonia " in text
    # figures are linked relative to the report
    assert "](figures/curves__" in text and (results / "figures").is_dir()


def test_report_without_comparisons_says_so(tmp_path):
    write_run(tmp_path, "r", [FakeCell("d", "m", "only", per_image=A)])
    text = render_report(collect(tmp_path))
    assert "nothing to compare" in text


def test_build_leaderboard_and_report_agree(results):
    paths = build_leaderboard(results, figures=False)
    report = paths["report"].read_text()
    md = paths["md"].read_text()
    table = [line for line in md.splitlines() if line.startswith("| covid")]
    assert table and all(line in report for line in table)


def test_choose_images_one_per_class_first():
    ids = ["a", "b", "c", "d", "e"]
    labels = {"a": 0, "b": 0, "c": 1, "d": 2, "e": 1}
    assert choose_images(ids, labels, 3) == ["a", "c", "d"]
    assert choose_images(ids, labels, 4) == ["a", "b", "c", "d"]
    assert choose_images(["x"], {"x": 0}, 3) == ["x"]


def test_slug_is_safe_and_distinct():
    s1, s2 = slug("a/b", "c"), slug("a?b", "c")
    assert s1 != s2
    assert all(ch.isalnum() or ch in "._-" for ch in s1 + s2)


def test_non_finite_per_image_values_are_left_out_without_a_warning(tmp_path):
    """An image a metric does not define (an empty mask) is expected: a count in the tables, no warning."""
    write_run(tmp_path, "r", [
        FakeCell("d", "m", "x", per_image=[0.5, np.nan, 0.4, 0.6]),
        FakeCell("d", "m", "y", per_image=[0.1, 0.2, 0.3, 0.2]),
    ], n_test=4)
    df = collect(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        comp = paired_comparisons(df, n_resamples=200)
        paths = build_leaderboard(tmp_path, figures=False)
    assert comp.n.iloc[0] == 3
    sign = 1 if comp.explainer_a.iloc[0] == "x" else -1
    assert comp["diff"].iloc[0] == pytest.approx(sign * np.mean(np.float32([0.4, 0.1, 0.4])), abs=1e-6)
    # the count of left-out values is in the rows and the tables
    x = df[df.explainer == "x"].iloc[0]
    assert x["aopc_n_excluded"] == 1 and x["aopc_n"] == 3
    assert "1 non-finite value(s) left out" in paths["md"].read_text()


def test_overlay_figure_reads_only_the_test_split_of_a_legacy_dataset_file(tmp_path, monkeypatch):
    """The overlay figure asks ``DatasetSplits.load_split`` for the test split: a schema-1 file
    ('<split>/<name>_masks', no mask order) whose train members are gone still draws, masks
    included, in the order ``load_file`` gives (by name)."""
    import io
    import json
    import zipfile

    from _fake_runs import make_splits

    from bench.data import DatasetSplits, Split
    from bench.publish import figures as fg
    from bench.publish.report import make_figures

    base = make_splits("covid")
    t = base.test
    yy, _ = np.mgrid[: t.images.shape[1], : t.images.shape[2]]
    masks = {"lung": np.stack([yy < 10] * len(t)), "lesion": np.stack([yy > 20] * len(t))}
    splits = DatasetSplits(name="covid", class_names=base.class_names, train=base.train, val=base.val,
                           test=Split(images=t.images, labels=t.labels, ids=t.ids, masks=masks),
                           fingerprint=base.fingerprint)
    run_dir = write_run(tmp_path, "r", [FakeCell("covid", "vgg16", "gradcam", per_image=A)], splits=splits)
    path = run_dir / "covid.npz"
    legacy = tmp_path / "legacy.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(legacy, "w") as dst:
        for info in src.infolist():
            name = info.filename
            if name.startswith("train/"):
                continue  # no training members at all
            data = src.read(info)
            if name == "meta.json.npy":
                with src.open(info) as fh:
                    meta = json.loads(bytes(np.lib.format.read_array(fh)).decode())
                meta.pop("masks")
                buf = io.BytesIO()
                np.save(buf, np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
                data = buf.getvalue()
            elif "/masks/" in name:
                split, _, mask = name.removesuffix(".npy").partition("/masks/")
                name = f"{split}/{mask}_masks.npy"
            dst.writestr(name, data)
    legacy.replace(path)
    calls = []
    real = fg.plot_overlays

    def spy(images, heatmaps, out, **kw):
        calls.append(kw)
        return real(images, heatmaps, out, **kw)

    monkeypatch.setattr(fg, "plot_overlays", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a figure that failed would only warn
        figs = make_figures(collect(tmp_path), tmp_path / "figures")
    assert len(figs["Heatmap overlays"]) == 1 and len(calls) == 1
    assert list(calls[0]["masks"]) == ["lesion", "lung"]
    test = DatasetSplits.load_split(path, "test")
    chosen = [int(title.split("test-")[1]) for title in calls[0]["image_titles"]]
    for name, m in calls[0]["masks"].items():
        np.testing.assert_array_equal(m, masks[name][chosen])
        np.testing.assert_array_equal(test.masks[name], masks[name])
