"""Figures: valid images from known data, bilinear upsampling, overlays on shared images.

The figures must read with the zoo (22 explainers, 16 ranked methods, 17 metrics): the
checks below build each figure from synthetic inputs of that size, look at its artists
(legend entries, texts, contour sets) and at the PNG's pixel size, never at pixel colours.
"""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from _fake_runs import FakeCell, write_run

from bench.publish.collect import collect
from bench.publish.figures import (
    mean_band,
    normalise,
    plot_agreement,
    plot_curves,
    plot_overlays,
    plot_per_class,
    plot_ranks,
    upsample_bilinear,
)
from bench.publish.report import make_figures

PNG = b"\x89PNG\r\n\x1a\n"


def _png_shape(path):
    assert path.read_bytes()[:8] == PNG
    return mpimg.imread(path).shape


def test_mean_band_is_a_t_interval():
    from scipy import stats

    v = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [6.0, 0.0]])
    mean, lo, hi = mean_band(v)
    half = stats.t.ppf(0.975, 3) * np.std(v[:, 0], ddof=1) / 2
    assert mean[0] == pytest.approx(3.0)
    assert (lo[0], hi[0]) == pytest.approx((3.0 - half, 3.0 + half))
    assert lo[1] == hi[1] == 0.0
    m1, lo1, hi1 = mean_band(v[:1])
    assert np.array_equal(lo1, m1) and np.array_equal(hi1, m1)


def test_plot_curves(tmp_path):
    rng = np.random.default_rng(0)
    k = np.arange(10)
    curves = {
        "vgg16": {"gradcam": 0.9 - 0.05 * k + rng.normal(0, 0.02, (6, 10)),
                  "random": 0.9 - 0.02 * k + rng.normal(0, 0.02, (6, 10))},
        "densenet $x_1$ \\": {"gradcam": 0.9 - 0.04 * k + rng.normal(0, 0.02, (5, 10))},
    }
    p = plot_curves(curves, tmp_path / "c.png", title="t$_%")
    h, w, _ = _png_shape(p)
    assert w > h  # two panels side by side
    p2 = plot_curves(curves, tmp_path / "sub" / "drop.png", drop=True)
    assert p2.exists()
    with pytest.raises(ValueError, match="no curves"):
        plot_curves({}, tmp_path / "none.png")


def test_upsample_bilinear_by_hand():
    h = np.array([[[0.0, 1.0], [0.0, 1.0]]], np.float32)
    up = upsample_bilinear(h, (4, 4))
    # half-pixel centres: x = (j + .5) * 2 / 4 - .5 = -.25, .25, .75, 1.25 -> clamped 0, .25, .75, 1
    np.testing.assert_allclose(up[0, 0], [0.0, 0.25, 0.75, 1.0], atol=1e-6)
    np.testing.assert_allclose(up[0, :, 1], 0.25, atol=1e-6)
    const = upsample_bilinear(np.full((2, 3, 5), 0.4, np.float32), (9, 7))
    assert const.shape == (2, 9, 7) and np.allclose(const, 0.4)
    same = upsample_bilinear(h, (2, 2))
    assert np.array_equal(same, h)


def test_normalise():
    np.testing.assert_allclose(normalise(np.array([[2.0, 4.0], [3.0, np.nan]])), [[0.5, 1.0], [0.75, 0.0]])
    assert not normalise(np.full((3, 3), 7.0)).any()


def test_plot_overlays(tmp_path):
    images = (np.random.default_rng(0).random((2, 32, 32)) * 255).astype(np.uint8)
    maps = {"m / gradcam": np.random.default_rng(1).random((2, 9, 9)),
            "m / $random$_{x}": np.random.default_rng(2).random((2, 4, 4))}
    p = plot_overlays(images, maps, tmp_path / "o.png", alphas=(0.3, 0.5, 0.7), image_titles=["a", "b"])
    h, w, _ = _png_shape(p)
    assert h > w  # one row per image x alpha (6), one column per explainer (2) beside the image
    rgb = np.repeat(images[..., None], 3, axis=-1).astype(np.float32) / 255
    assert plot_overlays(rgb, maps, tmp_path / "rgb.png").exists()
    with pytest.raises(ValueError, match="expected 2"):
        plot_overlays(images, {"x": np.zeros((3, 9, 9))}, tmp_path / "bad.png")


def test_plot_per_class(tmp_path):
    stats = {"vgg16": {"gradcam": {"COVID": (0.5, 0.4, 0.6, 10), "Normal": (0.3, 0.25, 0.35, 12)},
                       "random": {"COVID": (0.2, 0.1, 0.3, 10), "Normal": (0.1, 0.05, 0.2, 12)}}}
    p = plot_per_class(stats, tmp_path / "pc.png", title="x")
    assert _png_shape(p)[2] in (3, 4)


def test_make_figures_from_runs_uses_images_every_cell_of_the_model_explained(tmp_path, monkeypatch):
    ids = [f"test-{i:03d}" for i in range(8)]
    write_run(tmp_path, "r", [
        FakeCell("covid", "vgg16", "gradcam", per_image=[0.4] * 6, ids=ids[:6]),
        FakeCell("covid", "vgg16", "random", per_image=[0.2] * 5, ids=ids[3:]),
        FakeCell("covid", "densenet", "gradcam", per_image=[0.3] * 8, ids=ids),
    ])
    import bench.publish.figures as fg

    seen = {}
    real = fg.plot_overlays

    def spy(images, heatmaps, path, **kw):
        model = kw["title"].split(" / ")[1].split(" ")[0]
        seen[model] = {"titles": kw["image_titles"], "labels": list(heatmaps), "n": len(images),
                       "alphas": tuple(kw["alphas"]), "caption": kw["caption"]}
        return real(images, heatmaps, path, **kw)

    monkeypatch.setattr(fg, "plot_overlays", spy)
    figs = make_figures(collect(tmp_path), tmp_path / "figures")
    assert [len(v) for v in figs.values()] == [1, 2, 1]  # curves, one overlay figure per model, per class
    # vgg16: the ids both its explainers explained, test-003..test-005 (labels 3, 0, 1): one per class,
    # in class order; Normal (test-002, test-006) was not explained by both: said in the caption
    assert [t.split("\n")[1] for t in seen["vgg16"]["titles"]] == ["test-004", "test-005", "test-003"]
    assert seen["vgg16"]["n"] == 3 and seen["vgg16"]["labels"] == ["gradcam", "random"]
    assert "No row for Normal" in seen["vgg16"]["caption"]
    # densenet: its own images, the first of each class
    assert [t.split("\n")[1] for t in seen["densenet"]["titles"]] == ["test-000", "test-001", "test-002",
                                                                       "test-003"]
    assert seen["densenet"]["alphas"] == (0.4, 0.7)
    for paths in figs.values():
        for p in paths:
            assert p.parent == tmp_path / "figures"
            assert p.read_bytes()[:8] == PNG if p.suffix == ".png" else p.read_bytes()[8:12] == b"WEBP"


def test_make_figures_without_dataset_file_warns_and_keeps_the_rest(tmp_path):
    run = write_run(tmp_path, "r", [FakeCell("covid", "vgg16", "gradcam", per_image=[0.4] * 8)])
    (run / "covid.npz").unlink()
    with pytest.warns(UserWarning, match="dataset file"):
        figs = make_figures(collect(tmp_path), tmp_path / "figures")
    assert figs["Heatmap overlays"] == []
    assert len(figs["Mean MoRF curves (AOPC graphs)"]) == 1


def test_a_figure_the_latest_build_did_not_write_is_removed(tmp_path):
    """A stale overlay (skipped this time) must not sit beside tables that no longer hold it."""
    run = write_run(tmp_path, "r", [FakeCell("covid", "vgg16", "gradcam", per_image=[0.4] * 8)])
    (run / "covid.npz").unlink()  # the overlay cannot be drawn this time
    figures = tmp_path / "figures"
    figures.mkdir()
    stale = figures / "overlays__covid-0123ab.png"  # an overlay PNG of an earlier version
    stale.write_bytes(PNG)
    stale_webp = figures / "overlays__covid__vgg16__none-0123ab.webp"
    stale_webp.write_bytes(b"RIFF\x00\x00\x00\x00WEBP")
    mine = figures / "my-own-plot.png"  # not one of the report's figures: left alone
    mine.write_bytes(PNG)
    with pytest.warns(UserWarning, match="dataset file"):
        figs = make_figures(collect(tmp_path), figures)
    assert not stale.exists() and not stale_webp.exists() and mine.exists()
    (curves,) = figs["Mean MoRF curves (AOPC graphs)"]
    assert curves.exists()


# ---------------------------------------------------------------------------------------
# the zoo: 22 explainers (17 methods, 5 controls), 16 ranked methods, 17 metrics
# ---------------------------------------------------------------------------------------
ZOO = [f"method-{i:02d}" for i in range(17)] + ["pos-ctrl", "neg-ctrl", "null-ctrl", "prior-a", "prior-b"]
ROLES = {"pos-ctrl": "positive-control", "neg-ctrl": "negative-control", "null-ctrl": "null-control",
         "prior-a": "other-control", "prior-b": "other-control"}
CLASSES = ["class-a", "class-b", "class-c", "class-d"]


def _texts(fig):
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text)]


def _px(path):
    from PIL import Image

    assert path.read_bytes()[:8] == PNG
    with Image.open(path) as im:
        return im.size  # (width, height)


def _zoo_curves(rng, n=12, steps=16):
    k = np.arange(steps + 1)
    return {e: np.clip(np.exp(-(0.02 + 0.004 * i) * k)[None] + rng.normal(0, 0.02, (n, steps + 1)), 0, 1)
            for i, e in enumerate(ZOO)}


def test_curves_with_22_explainers_highlight_the_best_and_draw_controls_as_references(tmp_path):
    from bench.publish.figures import CONTROL_GREY, curves_figure

    rng = np.random.default_rng(0)
    curves = {"model-a": _zoo_curves(rng), "model-b": _zoo_curves(rng)}
    curves["model-b"]["method-03"][2, 5] = np.nan  # one image with a NaN: left out of that line
    curves["model-b"]["method-04"][:] = np.nan  # nothing finite: no line at all
    fig = curves_figure(curves, title="t", roles=ROLES, highlight=5)
    ax_a, ax_b = [ax for ax in fig.axes if ax.get_legend() is not None]
    entries = [t.get_text() for t in ax_a.get_legend().get_texts()]
    assert len(entries) == 5 + 1 + 5  # the top 5 methods, one entry for the 12 others, every control
    assert entries[5].startswith("12 other methods")
    # the highest AOPC (fastest drop) first: method-16 decays fastest
    assert entries[0].startswith("method-16")
    for role in ROLES.values():
        assert any(e.endswith(f"[{role}]") for e in entries)
    controls = [line for line in ax_a.get_lines() if line.get_label().split()[0] in ROLES]
    assert len(controls) == 5
    assert all(line.get_color() == CONTROL_GREY and line.is_dashed() for line in controls)
    others = [line for line in ax_a.get_lines() if line.get_label().split()[0] in ZOO[:17]]
    assert len(others) == 17  # every method is drawn (12 of them thin grey, no band)
    b_entries = [t.get_text() for t in ax_b.get_legend().get_texts()]
    assert not any(e.startswith("method-04") for e in b_entries)
    assert "11 other methods" in " ".join(b_entries)
    assert any(e.startswith("method-03") and e.endswith("(n=11)") for e in
               [line.get_label() for line in ax_b.get_lines()])  # its n differs from the panel's
    assert "model-b  (n=12 images)" in _texts(fig)
    w, h = _px(plot_curves(curves, tmp_path / "zoo.png", title="t", roles=ROLES))
    assert 900 <= w <= 1700 and 300 <= h <= 1000


def _class_stats(rng, empty_classes=(), nan_class=None):
    out = {}
    for e in ZOO:
        out[e] = {}
        for c in CLASSES:
            if c in empty_classes:
                out[e][c] = (float("nan"), float("nan"), float("nan"), 0)
            elif c == nan_class and e == "method-00":
                out[e][c] = (float("nan"), float("nan"), float("nan"), 7)  # n > 0 but no finite value
            else:
                m = float(rng.random())
                out[e][c] = (m, m - 0.05, m + 0.05, 9)
    return out


def test_per_class_draws_no_n0_label_and_says_so_in_grey_where_a_panel_is_empty(tmp_path):
    from matplotlib.colors import to_hex

    from bench.publish.figures import NOTE_GREY, per_class_figure

    rng = np.random.default_rng(0)
    stats = {"model-a": _class_stats(rng, nan_class="class-b"),
             "model-b": _class_stats(rng, empty_classes=("class-c",)),
             "model-c": _class_stats(rng, empty_classes=tuple(CLASSES))}  # classified nothing correctly
    fig = per_class_figure(stats, title="t", roles=ROLES)
    texts = _texts(fig)
    assert not any("n=0" in t for t in texts)
    from matplotlib.text import Text

    notes = [t for t in fig.findobj(Text) if "no correctly classified image" in t.get_text()]
    assert notes and all(to_hex(t.get_color()) == NOTE_GREY for t in notes)
    # model-b's empty class keeps its slot with the note; model-c has no panel, only the note naming it
    assert sum(t.get_text() == "no correctly classified image" for t in notes) == 1
    assert any("model-c" in t.get_text() for t in notes)
    assert not any(ax.get_ylabel() == "model-c" for ax in fig.axes)
    assert sum(1 for ax in fig.axes if ax.get_ylabel()) == 2
    # every explainer on the shared axis, controls last and marked
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == 22 and all(lab.endswith(" *") for lab in labels[-5:])
    assert "n=9" in texts
    w, h = _px(plot_per_class(stats, tmp_path / "pc.png", title="t", roles=ROLES))
    assert 700 <= w <= 1700 and 500 <= h <= 1600


def test_per_class_with_nothing_at_all_writes_a_note_not_a_panel(tmp_path):
    from bench.publish.figures import per_class_figure

    stats = {"model-c": {"e": {"class-a": (float("nan"), float("nan"), float("nan"), 0)}}}
    texts = _texts(per_class_figure(stats, title="t"))
    assert any("model-c: no correctly classified image" in t for t in texts)
    assert not any("n=0" in t for t in texts)
    assert plot_per_class(stats, tmp_path / "none.png").exists()
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_per_class({}, tmp_path / "x.png")


def test_overlays_of_22_explainers_with_every_mask_as_a_contour(tmp_path):
    from bench.publish.figures import overlays_figure

    rng = np.random.default_rng(0)
    m, size = 4, 24
    images = (rng.random((m, size, size)) * 255).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    masks = {"region-a": np.stack([(yy - 12) ** 2 + (xx - 12) ** 2 < 81] * m),
             "region-b": np.stack([(yy - 6 - i) ** 2 + (xx - 8) ** 2 < 9 for i in range(m)]),
             "region-c": np.zeros((m, size, size), bool)}  # empty everywhere: in the legend, no contour
    heat = {f"{model} / {e}": rng.random((m, 6, 6)) for model in ("model-a", "model-b") for e in ZOO}
    heat["model-b / method-00"][1] = np.nan  # a NaN map is drawn as a constant one
    titles = [f"img-{j}\n{CLASSES[j]}" for j in range(m)]
    fig = overlays_figure(images, heat, masks=masks, image_titles=titles, title="t", alphas=(0.4, 0.7))
    gids = {c.get_gid() for ax in fig.axes for c in ax.collections}
    assert {"mask:region-a", "mask:region-b"} <= gids and "mask:region-c" not in gids
    legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    assert legend == ["region-a mask", "region-b mask", "region-c mask"]
    texts = _texts(fig)
    blocks = 4  # two models, 22 explainers each, wrapped at 12 columns: two blocks of 11 per model
    assert sum(t.endswith("alpha 0.4") for t in texts) == m * blocks
    assert sum(t.endswith("alpha 0.7") for t in texts) == m * blocks
    for e in ZOO:  # every explainer has a column header in every block of its model
        assert sum(t.replace("\n", "") == e for t in texts) == 2
    assert sum(t.startswith("model-a") for t in texts) == 2  # "model-a" and "model-a (continued)"
    w, h = _px(plot_overlays(images, heat, tmp_path / "zoo.png", masks=masks, image_titles=titles))
    assert 800 <= w <= 1600 and h > w
    nested = {"model-a": {e: heat[f"model-a / {e}"] for e in ZOO[:3]}}
    assert _px(plot_overlays(images, nested, tmp_path / "nested.png"))[0] < w
    with pytest.raises(ValueError, match="mask 'region-a'"):
        plot_overlays(images, nested, tmp_path / "bad.png", masks={"region-a": masks["region-a"][:2]})


def _zoo_ranks(rng, n_methods=16, n_metrics=17):
    rows = []
    for j in range(n_metrics):
        order = rng.permutation(n_methods) + 1.0
        for i in range(n_methods):
            r = order[i]
            rows.append({"metric": f"metric-{j:02d}", "method": f"method-{i:02d}", "rank": r,
                         "rank_low": max(1.0, r - 2), "rank_high": min(float(n_methods), r + 1),
                         "p_best": 0.7 if r == 1 else (0.3 if r == 2 else 0.0)})
    return pd.DataFrame(rows)


def test_plot_ranks_with_16_methods_and_17_metrics(tmp_path):
    from bench.publish.figures import ranks_figure

    rng = np.random.default_rng(0)
    ranks = _zoo_ranks(rng)
    best = ranks.groupby("method")["rank"].mean().idxmin()
    ranks.loc[3, ["rank", "rank_low", "p_best"]] = np.nan  # NaN: that point / bar / value left out
    ranks = ranks.drop(index=[20])  # a method missing under one metric
    fig = ranks_figure(ranks, title="t")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [f"metric-{j:02d}" for j in range(17)]
    first = fig.axes[0]
    labels = [t.get_text() for t in first.get_yticklabels()]
    assert len(labels) == 16 and labels[0] == best  # shared order, best mean rank at the top
    y0, y1 = first.get_ylim()
    assert y0 > y1  # rank 1 (position 0) at the top
    texts = _texts(fig)
    assert texts.count("0.70") == 17 and texts.count("P(best)") == 17 and "-" in texts
    w, h = _px(plot_ranks(ranks, tmp_path / "ranks.png", title="t"))
    assert 1000 <= w <= 1650 and 800 <= h <= 2200
    one = _zoo_ranks(rng, n_methods=3, n_metrics=1).drop(columns="metric")
    w1, _ = _px(plot_ranks(one, tmp_path / "one.png", title="one"))
    assert w1 < w
    with pytest.raises(ValueError, match="p_best"):
        plot_ranks(one.drop(columns="p_best"), tmp_path / "bad.png", title="x")


def test_plot_agreement_with_17_metrics_and_nan(tmp_path):
    from bench.publish.figures import agreement_figure

    rng = np.random.default_rng(0)
    names = [f"metric-{j:02d}" for j in range(17)]
    tau = rng.uniform(-1, 1, (17, 17))
    tau = (tau + tau.T) / 2
    np.fill_diagonal(tau, 1.0)
    tau[2, 5] = tau[5, 2] = np.nan
    matrix = pd.DataFrame(tau, index=names, columns=names)
    fig = agreement_figure(matrix, title="t")
    texts = _texts(fig)
    assert texts.count("n/a") == 2 and texts.count("1.00") >= 17
    assert f"{tau[0, 1]:.2f}" in texts
    (image,) = fig.axes[0].get_images()
    assert image.get_clim() == (-1.0, 1.0)
    w, h = _px(plot_agreement(matrix, tmp_path / "agree.png", title="t"))
    assert 700 <= w <= 1500 and 700 <= h <= 1500
    with pytest.raises(ValueError, match="empty"):
        plot_agreement(pd.DataFrame(), tmp_path / "bad.png", title="t")
