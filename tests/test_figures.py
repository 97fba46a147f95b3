"""Figures: valid PNGs from known data, bilinear upsampling, overlays on shared images."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
from _fake_runs import FakeCell, write_run

from bench.publish.collect import collect
from bench.publish.figures import (
    mean_band,
    normalise,
    plot_curves,
    plot_overlays,
    plot_per_class,
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
    assert w > h
    rgb = np.repeat(images[..., None], 3, axis=-1).astype(np.float32) / 255
    assert plot_overlays(rgb, maps, tmp_path / "rgb.png").exists()
    with pytest.raises(ValueError, match="expected 2"):
        plot_overlays(images, {"x": np.zeros((3, 9, 9))}, tmp_path / "bad.png")


def test_plot_per_class(tmp_path):
    stats = {"vgg16": {"gradcam": {"COVID": (0.5, 0.4, 0.6, 10), "Normal": (0.3, 0.25, 0.35, 12)},
                       "random": {"COVID": (0.2, 0.1, 0.3, 10), "Normal": (0.1, 0.05, 0.2, 12)}}}
    p = plot_per_class(stats, tmp_path / "pc.png", title="x")
    assert _png_shape(p)[2] in (3, 4)


def test_make_figures_from_runs_uses_images_every_cell_explained(tmp_path, monkeypatch):
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
        seen["titles"] = kw["image_titles"]
        seen["labels"] = list(heatmaps)
        seen["n"] = len(images)
        return real(images, heatmaps, path, **kw)

    monkeypatch.setattr(fg, "plot_overlays", spy)
    figs = make_figures(collect(tmp_path), tmp_path / "figures")
    assert [len(v) for v in figs.values()] == [1, 1, 1]
    # shared ids: test-003..test-005 (labels 3, 0, 1): one per class, in class order
    assert [t.split("\n")[0] for t in seen["titles"]] == ["test-004", "test-005", "test-003"]
    assert seen["n"] == 3 and len(seen["labels"]) == 3
    for paths in figs.values():
        for p in paths:
            assert p.parent == tmp_path / "figures" and p.read_bytes()[:8] == PNG


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
    stale = figures / "overlays__covid-0123ab.png"
    stale.write_bytes(PNG)
    mine = figures / "my-own-plot.png"  # not one of the report's figures: left alone
    mine.write_bytes(PNG)
    with pytest.warns(UserWarning, match="dataset file"):
        figs = make_figures(collect(tmp_path), figures)
    assert not stale.exists() and mine.exists()
    (curves,) = figs["Mean MoRF curves (AOPC graphs)"]
    assert curves.exists()
