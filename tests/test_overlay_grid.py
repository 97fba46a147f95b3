"""The heatmap overlay grid: one figure per model, fixed images per class, masks as contours, two alphas.

The layout is checked through the figure's :class:`bench.publish.figures.OverlayGrid` (rows,
columns, tiles) and its artists (contour sets by gid), never through pixel colours; the files
through their format and size (the page inlines them all, so they must stay small).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from _fake_runs import CLASS_NAMES, FakeCell, default_ids, write_run
from PIL import Image

import bench.publish.figures as fg
from bench.data import DatasetSplits, Split
from bench.publish.collect import collect
from bench.publish.figures import overlays_figure
from bench.publish.report import OVERLAY_ALPHAS, first_per_class, make_figures

SIZE = 32


def _contours(fig) -> set[str]:
    return {c.get_gid() for ax in fig.axes for c in ax.collections if str(c.get_gid()).startswith("mask:")}


def _masked_splits(name: str = "covid", n_test: int = 8) -> DatasetSplits:
    """A tiny dataset like the fake runs' (ids test-000.., labels cycling over 4 classes) with a
    lung mask on every image and a lesion mask on all but the Normal ones."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    lung = ((yy - 16) ** 2 / 144 + (xx - 16) ** 2 / 100) < 1

    def split(prefix: str, n: int) -> Split:
        labels = np.arange(n) % len(CLASS_NAMES)
        rng = np.random.default_rng(len(prefix))
        images = (rng.random((n, SIZE, SIZE)) * 200 + 30).astype(np.uint8)
        lesion = np.stack([((yy - 10 - i % 5) ** 2 + (xx - 12) ** 2 < 12) & (labels[i] != 2) for i in range(n)])
        ids = np.array(default_ids(n) if prefix == "test" else [f"{prefix}-{i:03d}" for i in range(n)])
        return Split(images=images, labels=labels, ids=ids,
                     masks={"lesion": lesion, "lung": np.stack([lung] * n)})

    return DatasetSplits(name=name, class_names=CLASS_NAMES, train=split("train", 4), val=split("val", 4),
                         test=split("test", n_test), fingerprint="fake0000")


def _control(name: str, role: str, **kw) -> FakeCell:
    return FakeCell(extra={"provenance": {"explainer": {"role": role}}}, explainer=name, **kw)


# ---------------------------------------------------------------------------------------
# the figure
# ---------------------------------------------------------------------------------------
def test_grid_has_a_row_per_image_and_a_column_per_explainer_at_both_alphas():
    rng = np.random.default_rng(0)
    m = 3
    images = (rng.random((m, SIZE, SIZE)) * 255).astype(np.uint8)
    names = ["gradcam", "saliency", "occlusion", "oracle", "random"]
    heat = {n: rng.random((m, 4, 4)) for n in names}  # CAM-sized maps: upsampled for display
    roles = {"oracle": "positive-control", "random": "null-control", "gradcam": "method"}
    masks = {"lesion": np.zeros((m, SIZE, SIZE), bool), "lung": np.ones((m, SIZE, SIZE), bool)}
    masks["lesion"][1, 5:12, 5:12] = True
    fig = overlays_figure(images, heat, alphas=(0.4, 0.7), image_titles=["COVID\na", "Normal\nb", "Viral\nc"],
                          roles=roles, masks=masks, max_columns=3)
    grid = fig.overlay_grid
    assert grid.rows == ("COVID\na", "Normal\nb", "Viral\nc")
    assert grid.columns == tuple(names) and grid.controls == ("oracle", "random")
    assert grid.alphas == (0.4, 0.7)
    assert [len(cols) for _, cols in grid.blocks] == [3, 2]  # 5 explainers wrapped at 3: balanced 3 + 2
    # every (image, explainer) is drawn once per alpha, and the image itself beside it in every block
    for j in range(m):
        for name in names:
            assert sorted(t.alpha for t in grid.tiles if t.row == j and t.column == name) == [0.4, 0.7]
        assert sum(t.column is None for t in grid.tiles if t.row == j) == 2 * len(grid.blocks)
    assert {t.row for t in grid.tiles} == set(range(m))
    # tiles never overlap
    boxes = {t.box for t in grid.tiles}
    assert len(boxes) == len(grid.tiles)
    # the masks as contours, one set per mask with a pixel set, each in the legend
    assert _contours(fig) == {"mask:lesion", "mask:lung"} and grid.masks == ("lesion", "lung")
    assert [t.get_text() for lg in fig.legends for t in lg.get_texts()] == ["lesion mask", "lung mask"]
    # controls marked in their column header, and the mark explained
    texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]
    assert "oracle *" in texts and "random *" in texts and "gradcam" in texts
    assert any("* control" in t for t in texts)
    assert sum(t == "alpha 0.4" for t in texts) == m * len(grid.blocks)


def test_no_masks_no_contours():
    rng = np.random.default_rng(1)
    images = (rng.random((2, SIZE, SIZE)) * 255).astype(np.uint8)
    fig = overlays_figure(images, {"gradcam": rng.random((2, 9, 9))})
    assert _contours(fig) == set() and fig.overlay_grid.masks == () and not fig.legends
    # a mask that is empty on every chosen image is in the legend, but draws no contour
    fig = overlays_figure(images, {"gradcam": rng.random((2, 9, 9))},
                          masks={"lesion": np.zeros((2, SIZE, SIZE), bool)})
    assert _contours(fig) == set() and [t.get_text() for t in fig.legends[0].get_texts()] == ["lesion mask"]
    with pytest.raises(ValueError, match="mask 'lesion'"):
        overlays_figure(images, {"gradcam": rng.random((2, 9, 9))}, masks={"lesion": np.zeros((2, 8, 8), bool)})


def test_formats_by_suffix_palette_png_and_lossy_webp(tmp_path):
    rng = np.random.default_rng(2)
    images = (rng.random((2, SIZE, SIZE)) * 255).astype(np.uint8)
    heat = {"gradcam": rng.random((2, 4, 4)), "random": rng.random((2, SIZE, SIZE))}
    png = fg.plot_overlays(images, heat, tmp_path / "o.png")
    webp = fg.plot_overlays(images, heat, tmp_path / "o.webp")
    with Image.open(png) as a, Image.open(webp) as b:
        assert a.format == "PNG" and a.mode == "P"  # a palette PNG (fg.PNG_COLOURS colours)
        assert a.convert("RGB").getpixel((1, 1)) == (255, 255, 255)  # the palette keeps white exact
        assert b.format == "WEBP" and b.size == a.size
    assert webp.stat().st_size < png.stat().st_size
    with pytest.raises(ValueError, match="unknown figure format"):
        fg.plot_overlays(images, heat, tmp_path / "o.tiff")


def test_first_per_class_is_deterministic_and_covers_every_class():
    labels = {"b": 0, "a": 0, "e": 1, "c": 2, "d": 1, "z": 3}
    assert first_per_class(["e", "a", "z", "b", "c", "d"], labels) == ["a", "d", "c", "z"]
    assert first_per_class(list(labels), labels, per_class=2) == ["a", "b", "d", "e", "c", "z"]
    assert first_per_class([], labels) == []


# ---------------------------------------------------------------------------------------
# from runs: one figure per model
# ---------------------------------------------------------------------------------------
@pytest.fixture
def spied(monkeypatch):
    calls: list[dict] = []
    real = fg.plot_overlays

    def spy(images, heatmaps, path, **kw):
        fig = overlays_figure(images, heatmaps, **kw)
        calls.append({"images": images, "heat": dict(heatmaps), "path": Path(path), "fig": fig, **kw})
        return real(images, heatmaps, path, **kw)

    monkeypatch.setattr(fg, "plot_overlays", spy)
    return calls


def test_one_figure_per_model_on_its_own_images_with_the_dataset_masks(tmp_path, spied):
    ids = default_ids(8)  # labels 0, 1, 2, 3, 0, 1, 2, 3
    not_normal = [i for k, i in enumerate(ids) if k % 4 != 2]  # the model got no Normal image right
    write_run(tmp_path, "r", [
        FakeCell("covid", "vgg16", "gradcam", per_image=[0.4] * 6, ids=not_normal),
        FakeCell("covid", "vgg16", "saliency", per_image=[0.3] * 6, ids=not_normal),
        _control("random", "null-control", dataset="covid", model="vgg16", per_image=[0.2] * 6, ids=not_normal),
        _control("oracle", "positive-control", dataset="covid", model="vgg16", per_image=[0.5] * 6,
                 ids=not_normal),
        FakeCell("covid", "densenet", "gradcam", per_image=[0.3] * 8, ids=ids),
        FakeCell("covid", "densenet", "saliency", per_image=[0.3] * 4, ids=ids[4:]),
    ], splits=_masked_splits())
    figs = make_figures(collect(tmp_path, control="random"), tmp_path / "figures")
    overlays = figs["Heatmap overlays"]
    assert len(overlays) == 2 and len(spied) == 2
    by_model = {c["title"].split(" / ")[1].split(" (")[0]: c for c in spied}
    vgg, dense = by_model["vgg16"], by_model["densenet"]
    # vgg16: the first correctly classified image of each class it got right (no Normal), by id
    assert [t.split("\n")[1] for t in vgg["image_titles"]] == ["test-000", "test-001", "test-003"]
    assert [t.split("\n")[0] for t in vgg["image_titles"]] == ["COVID", "Lung Opacity", "Viral Pneumonia"]
    # densenet: the images every one of its explainers explained (test-004..), one per class
    assert [t.split("\n")[1] for t in dense["image_titles"]] == ["test-004", "test-005", "test-006", "test-007"]
    # columns: methods by name, then the controls (positive before null), marked
    assert vgg["fig"].overlay_grid.columns == ("gradcam", "saliency", "oracle", "random")
    assert vgg["fig"].overlay_grid.controls == ("oracle", "random")
    assert len(vgg["fig"].overlay_grid.rows) == 3 and len(dense["fig"].overlay_grid.rows) == 4
    # the study's two alpha levels, the dataset's masks as contours (in its order)
    assert tuple(vgg["alphas"]) == OVERLAY_ALPHAS == (0.4, 0.7)
    assert list(vgg["masks"]) == ["lesion", "lung"]
    assert _contours(vgg["fig"]) == {"mask:lesion", "mask:lung"}
    # the caption says how the images were chosen
    assert "first test image of each class (by id)" in vgg["caption"] and "lesion, lung" in vgg["caption"]
    for p in overlays:
        assert p.suffix == ".webp" and p.name.startswith("overlays__")
        with Image.open(p) as im:
            assert im.format == "WEBP"


def test_a_dataset_without_masks_draws_no_contour(tmp_path, spied):
    write_run(tmp_path, "r", [FakeCell("covid", "vgg16", "gradcam", per_image=[0.4] * 8)])
    figs = make_figures(collect(tmp_path), tmp_path / "figures")
    (call,) = spied
    assert call["masks"] == {} and _contours(call["fig"]) == set()
    assert "no masks" in call["caption"]
    assert len(call["fig"].overlay_grid.rows) == 4  # one image of each of the 4 classes
    assert len(figs["Heatmap overlays"]) == 1


def test_page_of_a_zoo_stays_small(tmp_path):
    """2 models x 22 explainers with masks: every figure inlined, the page within its budget
    (an RGB PNG overlay alone, as before, was over 1.5 MB at the demo's size)."""
    from bench.publish.analysis import StatisticsOptions
    from bench.publish.leaderboard import build

    zoo = [f"method-{k:02d}" for k in range(18)]
    controls = {"oracle": "positive-control", "random": "null-control", "anti-oracle": "negative-control",
                "edge": "other-control"}
    rng = np.random.default_rng(3)
    cells = []
    for model in ("vgg16", "densenet201"):
        cells += [FakeCell("covid", model, e, per_image=rng.random(8).tolist()) for e in zoo]
        cells += [_control(e, role, dataset="covid", model=model, per_image=rng.random(8).tolist())
                  for e, role in controls.items()]
    write_run(tmp_path, "r", cells, splits=_masked_splits())
    board = build(tmp_path, control="random", formats=("html",), report=False,
                  options=StatisticsOptions(n_resamples=200))
    html = board.paths["html"].read_bytes()
    figures = sorted((tmp_path / "figures").iterdir())
    overlays = [p for p in figures if p.name.startswith("overlays__")]
    assert len(overlays) == 2 and all(p.suffix == ".webp" for p in overlays)
    assert html.count(b"data:image/webp;base64,") == 2
    for p in figures:
        if p.suffix == ".png":
            with Image.open(p) as im:
                assert im.mode == "P", p.name  # palette PNGs
    assert max(p.stat().st_size for p in overlays) < 400_000
    assert len(html) < 1_800_000, len(html)  # 1.3 MB today
    # every inlined image decodes
    import base64
    import re

    for _mime, data in re.findall(rb'src="data:image/(png|webp);base64,([^"]+)"', html):
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            im.load()
