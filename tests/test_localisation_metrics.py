"""Localisation metrics (bench_localisation): each against a direct reference on hand-computable
masks and heatmaps, the oracle > random > anti-oracle ordering on synthetic-cxr's real masks, empty
masks left out and counted, the mask parameter, and the conformance kit."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from bench_localisation import localisation_specs
from bench_localisation.measures import at_image_resolution
from sklearn.metrics import roc_auc_score

import bench
from bench.pipeline.metrics import metric_data, summarise

LOCALISATION = ("pointing-game", "relevance-mass", "relevance-rank", "energy-pointing-game",
                "pixel-auc", "topk-iou", "lung-relevance")


def spec_of(name):
    return bench.registry().get("metric", name).spec


def compute(name, heatmaps, masks, **params):
    """The registered metric ``name`` on heatmaps (N, h, w) and masks {name: (N, H, W)}: its columns."""
    spec = spec_of(name)
    metric = bench.create("metric", name, **params)
    heatmaps = np.asarray(heatmaps, np.float32)
    masks = {k: np.asarray(v, bool) for k, v in masks.items()}
    data = metric_data(spec, ids=np.arange(len(heatmaps)), heatmaps=heatmaps, masks=masks)
    return {k: np.asarray(v) for k, v in metric.compute(data).items()}


def headline(name, heatmaps, mask, mask_name="lesion", **params):
    return compute(name, heatmaps, {mask_name: mask}, **params)[name]


# ---------------------------------------------------------------------------------------
# direct references: brute force, written from the papers' definitions
# ---------------------------------------------------------------------------------------
def ref_pointing_game(h, m, tol_px):
    """Per maximal pixel: is a mask pixel within tol_px (Euclidean, pixel centres)? The fraction that is."""
    mask_pts = np.argwhere(m)
    top = np.argwhere(h == h.max())
    hits = [np.sqrt(((mask_pts - p) ** 2).sum(axis=1)).min() <= tol_px for p in top]
    return float(np.mean(hits))


def ref_topk_hits(h, m, k):
    """Expected |top-k ∩ mask| over every way of breaking the ties at the k-th value (enumerated)."""
    v, mm = h.ravel(), m.ravel()
    t = np.sort(v)[::-1][k - 1]
    above = np.flatnonzero(v > t)
    tied = np.flatnonzero(v == t)
    need = k - len(above)
    counts = [mm[above].sum() + mm[list(c)].sum() for c in itertools.combinations(tied, need)]
    return float(np.mean(counts))


def ref_mass(h, m):
    pos = np.clip(h.astype(np.float64), 0, None)
    return pos[m].sum() / pos.sum()


def ref_energy(h, m):
    rows, cols = np.nonzero(m)
    box = np.zeros_like(m)
    box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
    pos = np.clip(h.astype(np.float64), 0, None)
    return pos[box].sum() / pos.sum()


def block(shape, r0, r1, c0, c1):
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


# ---------------------------------------------------------------------------------------
# hand cases
# ---------------------------------------------------------------------------------------
def test_pointing_game_hand_cases_and_tolerance():
    m = block((8, 8), 2, 4, 2, 4)  # rows 2-3, cols 2-3
    inside, far, near2 = (np.zeros((8, 8)) for _ in range(3))
    inside[3, 2] = 1.0
    far[7, 7] = 1.0
    near2[5, 3] = 1.0  # 2 px below the mask
    # tolerance = a fraction of the image side: 0.25 * 8 = 2 px reaches it, 0.2 * 8 = 1.6 px does not
    assert headline("pointing-game", [inside], [m], tolerance=0.0)[0] == 1.0
    assert headline("pointing-game", [far], [m])[0] == 0.0
    assert headline("pointing-game", [near2], [m], tolerance=0.25)[0] == 1.0
    assert headline("pointing-game", [near2], [m], tolerance=0.2)[0] == 0.0
    # the default tolerance is 15/224 of the image size: 15 px at 224 px, ~4.29 px at 64
    assert spec_of("pointing-game").parameters["tolerance"] == pytest.approx(15 / 224)
    big = block((64, 64), 10, 20, 10, 20)
    for dist, hit in ((4, 1.0), (5, 0.0)):
        h = np.zeros((64, 64))
        h[19 + dist, 15] = 1.0
        assert headline("pointing-game", [h], [big])[0] == hit
    # ties: the fraction of the maximal pixels that hit; a constant map scores the chance level
    tie = np.zeros((8, 8))
    tie[3, 3] = tie[7, 7] = 2.0
    assert headline("pointing-game", [tie], [m], tolerance=0.0)[0] == 0.5
    cols = compute("pointing-game", [np.full((8, 8), 3.0)], {"lesion": [m]}, tolerance=0.0)
    assert cols["pointing-game"][0] == pytest.approx(4 / 64) == cols["chance"][0]


def test_pointing_game_matches_the_brute_force_reference():
    rng = np.random.default_rng(1)
    for trial in range(20):
        m = rng.random((12, 12)) < 0.15
        m[rng.integers(12), rng.integers(12)] = True
        h = rng.integers(0, 4, size=(12, 12)).astype(np.float32)  # many ties at the max
        tol = [0.0, 0.1, 0.2][trial % 3]
        got = headline("pointing-game", [h], [m], tolerance=tol)[0]
        assert got == pytest.approx(ref_pointing_game(h, m, tol * 12), abs=1e-12)


def test_relevance_mass_and_energy_pointing_game_hand_cases():
    m = np.zeros((4, 4), bool)
    m[0, 0] = m[1, 1] = True  # bounding box: rows 0-1, cols 0-1
    h = np.array([[3, 1, 0, 0],
                  [0, 1, 0, 0],
                  [0, 0, -5, 0],
                  [0, 0, 0, 5]], np.float32)
    # positive part: total 3 + 1 + 1 + 5 = 10; in the mask 3 + 1; in its box 3 + 1 + 1 (the -5 is ignored)
    assert headline("relevance-mass", [h], [m])[0] == pytest.approx(0.4)
    assert headline("energy-pointing-game", [h], [m])[0] == pytest.approx(0.5)
    cols = compute("energy-pointing-game", [h], {"lesion": [m]})
    assert cols["chance"][0] == pytest.approx(4 / 16)  # the box's area share
    rng = np.random.default_rng(2)
    for _ in range(10):
        mm = rng.random((9, 9)) < 0.2
        mm[4, 4] = True
        hh = rng.normal(size=(9, 9)).astype(np.float32)
        assert headline("relevance-mass", [hh], [mm])[0] == pytest.approx(ref_mass(hh, mm), abs=1e-9)
        assert headline("energy-pointing-game", [hh], [mm])[0] == pytest.approx(ref_energy(hh, mm), abs=1e-9)
    # no positive relevance: nothing to share out, NaN (left out, counted)
    for name in ("relevance-mass", "energy-pointing-game"):
        assert np.isnan(headline(name, [-np.abs(h)], [m])[0])
        assert np.isnan(headline(name, [np.zeros_like(h)], [m])[0])


def test_relevance_rank_and_topk_iou_hand_cases_with_ties():
    m = np.zeros((4, 4), bool)
    m[0, 0] = m[0, 1] = True  # K = 2
    h = np.zeros((4, 4), np.float32)
    h[0, 0] = 5.0               # the top pixel, in the mask
    h[0, 1] = h[3, 3] = 2.0     # tied for second place: one in, one out -> half a hit
    assert headline("relevance-rank", [h], [m])[0] == pytest.approx(1.5 / 2)
    assert headline("topk-iou", [h], [m])[0] == pytest.approx(1.5 / (2 + 2 - 1.5))
    # k = fraction x image size: the top 4 of 16 = {5, 2, 2} + one of the 13 zeros (none in the mask)
    assert headline("topk-iou", [h], [m], fraction=0.25)[0] == pytest.approx(2 / (4 + 2 - 2))
    rng = np.random.default_rng(3)
    for trial in range(15):
        mm = rng.random((5, 5)) < 0.3
        mm[2, 2] = True
        hh = rng.integers(0, 3, size=(5, 5)).astype(np.float32)
        k = int(mm.sum())
        assert headline("relevance-rank", [hh], [mm])[0] == pytest.approx(ref_topk_hits(hh, mm, k) / k, abs=1e-12)
        frac = [None, 0.2, 0.48][trial % 3]
        kk = k if frac is None else max(1, round(frac * 25))
        hits = ref_topk_hits(hh, mm, kk)
        got = headline("topk-iou", [hh], [mm], fraction=frac)[0]
        assert got == pytest.approx(hits / (kk + k - hits), abs=1e-12)
    # a constant map scores the chance level, which is the 'chance' column
    for name in ("relevance-rank", "topk-iou"):
        cols = compute(name, [np.full((4, 4), 7.0)], {"lesion": [m]})
        assert cols[name][0] == pytest.approx(cols["chance"][0])
    assert compute("relevance-rank", [h], {"lesion": [m]})["chance"][0] == pytest.approx(2 / 16)


def test_pixel_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(4)
    hs, ms = [], []
    for _ in range(12):
        mm = rng.random((7, 7)) < 0.3
        mm[0, 0], mm[6, 6] = True, False
        hs.append(rng.integers(0, 4, size=(7, 7)).astype(np.float32))  # heavy ties
        ms.append(mm)
    got = headline("pixel-auc", hs, ms)
    ref = [roc_auc_score(m.ravel(), h.ravel()) for h, m in zip(hs, ms, strict=True)]
    np.testing.assert_allclose(got, ref, atol=1e-12)
    m = block((4, 4), 0, 2, 0, 2)
    assert headline("pixel-auc", [m.astype(np.float32)], [m])[0] == 1.0
    assert headline("pixel-auc", [(~m).astype(np.float32)], [m])[0] == 0.0
    assert headline("pixel-auc", [np.zeros((4, 4))], [m])[0] == 0.5
    assert np.isnan(headline("pixel-auc", [np.ones((4, 4))], [np.ones((4, 4), bool)])[0])  # no negatives


def test_heatmaps_are_compared_at_image_resolution_with_the_harness_bilinear_resize():
    # 2 -> 4 bilinear, half-pixel centres, edges clamped: sources 0, 0.25, 0.75, 1 along each axis
    weights = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    h = np.array([[0.0, 1.0], [2.0, 4.0]], np.float32)
    np.testing.assert_allclose(at_image_resolution(h, (4, 4)), weights @ h @ weights.T, atol=1e-6)
    # the same operator as the harness's region scores (bench.engine.regions), which equals tf.image.resize
    from bench.engine.regions import bilinear_matrix

    np.testing.assert_allclose(bilinear_matrix(4, 2), weights)
    m = np.zeros((4, 4), bool)
    m[3, 2:] = True
    up = weights @ h @ weights.T
    assert headline("relevance-mass", [h], [m])[0] == pytest.approx(up[m].sum() / up.sum(), abs=1e-6)
    assert headline("pixel-auc", [h], [m])[0] == pytest.approx(roc_auc_score(m.ravel(), up.ravel()))
    # a constant coarse map stays exactly constant at image resolution: a tie, not a hit everywhere
    assert headline("pointing-game", [np.full((3, 3), 0.7)], [m], tolerance=0.0)[0] == pytest.approx(2 / 16)


def test_the_pointing_game_finds_the_maximum_on_the_heatmap_grid_and_spreads_it_over_its_cell():
    # a bilinear resize would move a coarse map's maximum (border cells keep their peak, interior
    # cells are averaged down): the maximal cell covers its pixels (nearest neighbour) instead
    m = np.zeros((4, 4), bool)
    m[3, 2:] = True
    h = np.array([[0.0, 1.0], [2.0, 4.0]], np.float32)  # max: cell (1, 1) = pixels rows 2-3, cols 2-3
    assert headline("pointing-game", [h], [m], tolerance=0.0)[0] == pytest.approx(2 / 4)
    h9 = np.zeros((9, 9), np.float32)
    h9[4, 4] = 1.0  # the centre cell of a 9x9 map on 64 px covers rows/cols 28..35
    big = np.zeros((64, 64), bool)
    big[28:36, 28:32] = True
    assert headline("pointing-game", [h9], [big], tolerance=0.0)[0] == pytest.approx(0.5)
    # a corner cell that a bilinear resize would favour stays a corner cell
    h9[0, 0] = 0.99
    assert headline("pointing-game", [h9], [big], tolerance=0.0)[0] == pytest.approx(0.5)


def test_empty_masks_are_left_out_and_counted():
    rng = np.random.default_rng(5)
    h = rng.random((4, 8, 8)).astype(np.float32)
    masks = np.zeros((4, 16, 16), bool)
    masks[0, 2:6, 2:6] = masks[2, 8:, 8:] = True  # images 1 and 3 have no lesion
    for name in LOCALISATION[:-1]:
        cols = compute(name, h, {"lesion": masks})
        assert np.isnan(cols[name][[1, 3]]).all() and np.isfinite(cols[name][[0, 2]]).all(), name
        assert np.isnan(cols["chance"][[1, 3]]).all()
        s = summarise(cols[name], n_resamples=100)
        assert (s.n, s.n_excluded) == (2, 2)
        assert "empty get NaN" in spec_of(name).description


def test_lung_relevance_is_relevance_mass_on_the_lung_mask():
    rng = np.random.default_rng(6)
    h = rng.normal(size=(3, 6, 6)).astype(np.float32)
    lung = rng.random((3, 12, 12)) < 0.4
    ref = compute("relevance-mass", h, {"lesion": lung})["relevance-mass"]
    cols = compute("lung-relevance", h, {"lung": lung})
    np.testing.assert_allclose(cols["lung-relevance"], ref)
    np.testing.assert_allclose(cols["chance"], lung.mean(axis=(1, 2)))
    spec = spec_of("lung-relevance")
    assert spec.inputs.masks == ("lung",) and bench.create("metric", "lung-relevance").get_params() == {"mask": "lung"}


def test_every_measure_declares_what_it_is():
    for name in LOCALISATION:
        spec = spec_of(name)
        assert spec.family == "localisation" and spec.higher_is_better, name
        assert spec.inputs.heatmaps and len(spec.inputs.masks) == 1, name
        assert not spec.inputs.curves and not spec.inputs.model, name  # no forward pass
        assert ("maximum is found on the heatmap's own grid" if name == "pointing-game"
                else "resized bilinearly to the image") in spec.description, name
    transforms = {n: spec_of(n).heatmap_transform for n in LOCALISATION}
    assert transforms["relevance-mass"] == transforms["energy-pointing-game"] == "positive-normalised"
    assert transforms["pointing-game"] == transforms["pixel-auc"] == "none"
    zero = {n: spec_of(n).zero_map_value for n in LOCALISATION}
    assert zero["pixel-auc"] == 0.5 and math.isnan(zero["relevance-mass"]) and zero["pointing-game"] is None


# ---------------------------------------------------------------------------------------
# the mask parameter
# ---------------------------------------------------------------------------------------
def test_a_mask_parameter_that_is_not_a_mask_name_is_refused_at_validation_naming_the_parameter():
    bench.create("metric", "pointing-game", mask="lung").validate()  # any mask name: the run hands it that mask
    for bad in ("Lung", "../lung", "", 3):
        with pytest.raises(ValueError, match="is not a mask name") as info:
            bench.create("metric", "pointing-game", mask=bad).validate()
        assert info.value.param == "mask"
    with pytest.raises(ValueError) as info:
        bench.create("metric", "topk-iou", fraction=1.5).validate()
    assert info.value.param == "fraction"


MASK_METRICS = ("pointing-game", "relevance-mass", "relevance-rank", "energy-pointing-game", "pixel-auc",
                "topk-iou", "aopc-lesion")


def test_every_metric_that_reads_a_mask_names_it_by_a_declared_mask_parameter():
    for name in (*MASK_METRICS, "lung-relevance"):
        spec = spec_of(name)
        assert spec.mask_params == ("mask",), name
        assert spec.inputs.masks == (spec.parameters["mask"],), name  # what the default reads


def _reference(name, heatmap, mask):
    """``name`` on one heatmap (h, w) and one bool mask (H, W), from the references above, at the mask's resolution."""
    # the harness's resize, which equals tf.image.resize (tests/test_regions.py)
    from bench.engine.regions import bilinear_matrix

    rows, cols = mask.shape
    up = (bilinear_matrix(rows, heatmap.shape[0]) @ heatmap.astype(np.float64)
          @ bilinear_matrix(cols, heatmap.shape[1]).T).astype(np.float32)
    if name == "pointing-game":  # the maximal cell(s) of the heatmap's own grid, over the pixels whose centre they hold
        cell_r = np.floor((np.arange(rows) + 0.5) * heatmap.shape[0] / rows).astype(int)
        cell_c = np.floor((np.arange(cols) + 0.5) * heatmap.shape[1] / cols).astype(int)
        top = (heatmap == heatmap.max())[cell_r][:, cell_c].astype(np.float32)
        return ref_pointing_game(top, mask, 15 / 224 * math.sqrt(rows * cols))
    k = int(mask.sum())
    if name == "relevance-mass":
        return ref_mass(up, mask)
    if name == "energy-pointing-game":
        return ref_energy(up, mask)
    if name == "pixel-auc":
        return roc_auc_score(mask.ravel(), up.ravel())
    if name == "relevance-rank":
        return ref_topk_hits(up, mask, k) / k
    if name == "topk-iou":
        hits = ref_topk_hits(up, mask, k)
        return hits / (2 * k - hits)
    raise AssertionError(name)


def test_a_run_measures_against_the_mask_the_parameter_names(tmp_path):
    """``[metrics.params.<metric>] mask = "lung"``: a run hands each metric the lung mask and the values
    are those of the lung mask, computed here from the references on the run's own heatmaps."""
    from _tiny_config import TINY, tiny

    names = list(MASK_METRICS)
    cfg = tiny(tmp_path, metrics={"names": ["aopc", *names], "params": {n: {"mask": "lung"} for n in names}},
               aopc={"grid": 2, "max_images": 8, "bootstrap": 20})
    result = bench.run(cfg, quiet=True, leaderboard=False)
    assert result.ok, [c.error for c in result.failed]
    (cell,) = result.cells
    assert all(m.ok for m in cell.metrics.values()), {k: m.error for k, m in cell.metrics.items()}
    heat = np.load(result.run_dir / cell.heatmaps_file)
    test = bench.create("dataset", "synthetic-cxr", **TINY["dataset"]["params"]).load().test
    row = {str(i): k for k, i in enumerate(test.ids)}
    rows = [row[str(i)] for i in heat["ids"]]
    lung, lesion = test.masks["lung"][rows], test.masks["lesion"][rows]
    assert len(rows) >= 3 and lung.any(axis=(1, 2)).all() and not np.array_equal(lung, lesion)
    for name in names:
        record = cell.metrics[name]
        assert record.params["mask"] == "lung", name
        stored = np.load(result.run_dir / record.file)
        got = stored[f"{name}/{spec_of(name).headline_column}"]
        if name == "aopc-lesion":  # every image has lungs: the plain AOPC of every image
            np.testing.assert_allclose(got, np.load(result.run_dir / cell.metrics["aopc"].file)["aopc/aopc"])
            continue
        expected = [_reference(name, h, m) for h, m in zip(heat["heatmaps"], lung, strict=True)]
        np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=name)
        if name == "relevance-rank":  # its chance level is the mask's area share: the lung's
            np.testing.assert_allclose(stored[f"{name}/chance"], lung.mean(axis=(1, 2)))


class LungVariants:
    @bench.hookimpl
    def bench_register_metrics(self):
        return localisation_specs(mask="lung", suffix="-lung")


def test_the_measures_register_for_another_mask_and_pass_the_conformance_kit():
    from bench.testing import check_component

    bench.register_plugin(LungVariants(), name="lung-variants-test-plugin")
    try:
        spec = spec_of("pointing-game-lung")
        assert spec.inputs.masks == ("lung",) and spec.label == "Pointing game (lung)"
        assert spec.headline_column == "pointing-game"
        metric = bench.create("metric", "relevance-mass-lung")
        assert metric.get_params() == {"mask": "lung"}
        metric.validate()
        rng = np.random.default_rng(7)
        h = rng.random((2, 5, 5)).astype(np.float32)
        lung = rng.random((2, 10, 10)) < 0.5
        got = compute("relevance-mass-lung", h, {"lung": lung})["relevance-mass"]  # its headline column
        np.testing.assert_allclose(got, compute("relevance-mass", h, {"lesion": lung})["relevance-mass"])
        check_component(bench.create("metric", "pointing-game-lung", tolerance=0.1))
    finally:
        bench.unregister_plugin("lung-variants-test-plugin")


@pytest.mark.parametrize("name", LOCALISATION)
def test_conformance_kit(name):
    from bench.testing import check_component, checks_for

    metric = bench.create("metric", name)
    names = [n for n, _ in checks_for(metric)]
    assert ("check_metric_zero_map" in names) == (spec_of(name).zero_map_value is not None)
    check_component(metric)


# ---------------------------------------------------------------------------------------
# known answers on synthetic-cxr's real masks: oracle > random > anti-oracle
# ---------------------------------------------------------------------------------------
N_RANDOM = 30  # maps of the registered random control (9x9, the harness default) per image, one per seed


@pytest.fixture(scope="module")
def cxr_test():
    return bench.create("dataset", "synthetic-cxr", image_size=64, per_class=40).load().test


def _mean_se(v):
    """Mean of the finite values and, for (seeds, N), the standard error of the mean over seeds."""
    v = np.asarray(v, np.float64)
    if v.ndim == 1:
        return float(np.nanmean(v)), 0.0
    per_seed = np.nanmean(v, axis=1)
    return float(per_seed.mean()), float(per_seed.std(ddof=1) / math.sqrt(len(per_seed)))


@pytest.fixture(scope="module")
def control_scores(cxr_test):
    """name -> role -> (mean, standard error): the oracle (the mask), the random control, the anti-oracle."""
    out = {}
    for name in LOCALISATION:
        mask_name = spec_of(name).inputs.masks[0]
        masks = {mask_name: cxr_test.masks[mask_name]}
        oracle = masks[mask_name].astype(np.float32)
        draws = [compute(name, bench.create("explainer", "random", seed=seed).explain(
                     None, cxr_test.images, None, ids=cxr_test.ids), masks)[name] for seed in range(N_RANDOM)]
        out[name] = {"oracle": _mean_se(compute(name, oracle, masks)[name]),
                     "random": _mean_se(np.stack(draws)),
                     "anti": _mean_se(compute(name, 1.0 - oracle, masks)[name])}
    return out


def test_the_oracle_beats_random_beats_the_anti_oracle_on_every_localisation_measure(cxr_test, control_scores):
    assert (~cxr_test.masks["lesion"].any(axis=(1, 2))).sum() == 4  # the Normal images: left out
    for name, s in control_scores.items():
        assert s["oracle"][0] == pytest.approx(1.0), name  # a perfect map scores 1 on every measure
        (o, _), (r, r_se), (a, _) = s["oracle"], s["random"], s["anti"]
        # margins of many standard errors of the random control (the only noisy one; machine noise < 1e-6)
        assert o - r > max(0.5, 10 * r_se), (name, s)
        if name != "pointing-game":  # its margin to the anti-oracle is below one seed-sampled SE: see below
            assert r - a > max(0.005, 5 * r_se), (name, s)
    for name in ("relevance-mass", "relevance-rank", "pixel-auc", "topk-iou", "lung-relevance"):
        assert control_scores[name]["anti"][0] == pytest.approx(0.0, abs=1e-12), name
    assert control_scores["pixel-auc"]["random"][0] == pytest.approx(0.5, abs=0.03)
    for name, s in control_scores.items():
        print(f"{name}: " + ", ".join(f"{role} {m:.4f} (se {se:.4f})" for role, (m, se) in s.items()))


def test_the_pointing_game_ranks_the_random_control_above_the_anti_oracle_exactly(cxr_test, control_scores):
    """The anti-oracle's maxima cover everything outside the mask, the tolerance ring included: it
    trails a random map's expected score by about the mask's area share (~0.03 here), below what a
    few dozen random maps resolve (one hit or miss each). The expectation is computed exactly instead:
    a random 9x9 map's maximum is equally likely in each cell, so its expected score is the mean over
    the 81 one-hot maps."""
    masks = {"lesion": cxr_test.masks["lesion"]}
    n = len(cxr_test.ids)
    one_hot = np.zeros((81, n, 9, 9), np.float32)
    one_hot[np.arange(81), :, np.arange(81) // 9, np.arange(81) % 9] = 1.0
    expected = np.nanmean([compute("pointing-game", maps, masks)["pointing-game"] for maps in one_hot])
    s = control_scores["pointing-game"]
    assert s["oracle"][0] - expected > 0.5
    assert expected - s["anti"][0] > 0.015, (expected, s)  # deterministic: machine noise is < 1e-6
    assert abs(s["random"][0] - expected) < 3 * s["random"][1]  # the sampled control agrees with it
    print(f"pointing game: oracle {s['oracle'][0]:.4f}, random (exact) {expected:.4f}, anti-oracle {s['anti'][0]:.4f}")


# ---------------------------------------------------------------------------------------
# aopc-lesion: the study's MoRF AOPC on the images that have a lesion (where the oracles are defined)
# ---------------------------------------------------------------------------------------
def _masked_aopc(curves, masks, name="aopc-lesion", mask_name="lesion"):
    spec = spec_of(name)
    data = metric_data(spec, ids=np.arange(len(curves)), curves={"morf": np.asarray(curves)},
                       masks={mask_name: np.asarray(masks, bool)})
    return bench.create("metric", name).compute(data)


def test_aopc_lesion_is_the_morf_aopc_of_the_images_with_a_lesion_and_nan_elsewhere():
    rng = np.random.default_rng(11)
    curves = rng.random((5, 10))
    masks = np.zeros((5, 8, 8), bool)
    for i in (0, 2, 3):
        masks[i, i : i + 2, 1:4] = True
    cols = _masked_aopc(curves, masks)
    assert list(cols) == ["masked-aopc"] == [spec_of("aopc-lesion").headline_column]
    got = cols["masked-aopc"]
    for i in range(5):
        if masks[i].any():  # written from the definition: sum_{k=1..L} (f0 - fk) / (L + 1)
            assert got[i] == pytest.approx(sum(curves[i, 0] - curves[i, k] for k in range(1, 10)) / 10, abs=1e-12)
        else:
            assert math.isnan(got[i])
    s = summarise(got)
    assert (s.n, s.n_excluded) == (3, 2)  # the two images without a lesion: left out and counted
    spec = spec_of("aopc-lesion")
    assert spec.family == "faithfulness" and spec.higher_is_better
    assert spec.inputs.curves == ("morf",) and spec.inputs.masks == ("lesion",) and not spec.inputs.heatmaps
    assert "non-empty" in spec.description and "oracle" in spec.description


def test_aopc_lesion_for_another_mask_and_the_conformance_kit():
    from bench_localisation import masked_aopc_spec

    from bench.testing import check_component, checks_for

    metric = bench.create("metric", "aopc-lesion")
    assert [n for n, _ in checks_for(metric)][:2] == ["check_get_params", "check_clone"]
    check_component(metric)

    class Tumour:
        @bench.hookimpl
        def bench_register_metrics(self):
            return [masked_aopc_spec(mask="tumour")]

    bench.register_plugin(Tumour(), name="aopc-tumour-test-plugin")
    try:
        assert spec_of("aopc-tumour").inputs.masks == ("tumour",)
        tumour = bench.create("metric", "aopc-tumour")
        assert tumour.get_params() == {"mask": "tumour"}
        curves = np.linspace(1, 0, 12).reshape(2, 6)
        masks = np.zeros((2, 4, 4), bool)
        masks[1, 0, 0] = True
        got = _masked_aopc(curves, masks, "aopc-tumour", "tumour")["masked-aopc"]
        assert math.isnan(got[0]) and got[1] == pytest.approx(_masked_aopc(curves, masks)["masked-aopc"][1])
        check_component(tumour)
    finally:
        bench.unregister_plugin("aopc-tumour-test-plugin")
