"""Complexity metrics (bench_complexity): sparseness (Gini) and entropy complexity against direct
references on hand-computable maps, their transforms (absolute values, scale-free), image resolution,
known orderings on real masks, and the conformance kit."""

from __future__ import annotations

import math

import numpy as np
import pytest

import bench
from bench.pipeline.metrics import metric_data

NAMES = ("sparseness", "entropy-complexity")


def spec_of(name):
    return bench.registry().get("metric", name).spec


def compute(name, heatmaps, image_size):
    heatmaps = np.asarray(heatmaps, np.float32)
    n = len(heatmaps)
    images = np.zeros((n, image_size, image_size), np.uint8)  # read for their size only
    data = metric_data(spec_of(name), ids=np.arange(n), heatmaps=heatmaps, images=images)
    return {k: np.asarray(v) for k, v in bench.create("metric", name).compute(data).items()}


def ref_gini(x):
    """The Gini index as the mean absolute difference over twice the mean (Chalasani et al. 2020, eq. 4's equivalent)."""
    x = np.abs(np.asarray(x, np.float64)).ravel()
    return np.abs(x[:, None] - x[None, :]).sum() / (2 * x.size**2 * x.mean())


def ref_entropy(x):
    p = np.abs(np.asarray(x, np.float64)).ravel()
    p = p / p.sum()
    return -sum(v * math.log(v) for v in p if v > 0)


def test_sparseness_hand_cases():
    one = np.zeros((1, 2, 2))
    one[0, 1, 1] = 3.0
    assert compute("sparseness", one, 2)["sparseness"][0] == pytest.approx(1 - 1 / 4)  # all on one pixel
    assert compute("sparseness", np.full((1, 2, 2), 5.0), 2)["sparseness"][0] == pytest.approx(0.0)  # uniform
    ramp = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    # sum_i (2i - n - 1) x_(i) / (n sum x) = (-3 - 2 + 3 + 12) / (4 * 10)
    assert compute("sparseness", ramp, 2)["sparseness"][0] == pytest.approx(0.25)
    assert compute("sparseness", -ramp, 2)["sparseness"][0] == pytest.approx(0.25)  # absolute values
    assert compute("sparseness", np.zeros((1, 2, 2)), 2)["sparseness"][0] == 0.0  # all-zero = uniform
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(6, 7, 7)) * (rng.random((6, 7, 7)) < 0.4)
    np.testing.assert_allclose(compute("sparseness", maps, 7)["sparseness"], [ref_gini(m) for m in maps], atol=1e-9)


def test_entropy_complexity_hand_cases():
    h = np.array([[[1.0, 1.0], [2.0, 0.0]]])  # p = 1/4, 1/4, 1/2, 0
    cols = compute("entropy-complexity", h, 2)
    assert cols["nats"][0] == pytest.approx(1.5 * math.log(2))
    assert cols["entropy-complexity"][0] == pytest.approx(1.5 * math.log(2) / math.log(4))
    one = np.zeros((1, 3, 3))
    one[0, 0, 2] = -2.0
    assert compute("entropy-complexity", one, 3)["entropy-complexity"][0] == 0.0  # one pixel: no entropy
    for const in (np.full((1, 3, 3), 0.3), np.zeros((1, 3, 3))):  # uniform, and all-zero counted as uniform
        assert compute("entropy-complexity", const, 3)["entropy-complexity"][0] == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(5, 6, 6)) * (rng.random((5, 6, 6)) < 0.5)
    np.testing.assert_allclose(compute("entropy-complexity", maps, 6)["nats"], [ref_entropy(m) for m in maps],
                               atol=1e-9)


def test_both_are_scale_free_and_sign_blind():
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(4, 8, 8)).astype(np.float32)
    for name in NAMES:
        base = compute(name, maps, 8)[name]
        np.testing.assert_allclose(compute(name, 7.5 * maps, 8)[name], base, rtol=1e-5)
        np.testing.assert_allclose(compute(name, -maps, 8)[name], base, rtol=1e-6)


def test_maps_are_compared_at_image_resolution():
    # a 2x2 map on 4x4 images: bilinear, half-pixel centres, edges clamped (the harness's resize)
    weights = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    h = np.array([[0.0, 1.0], [2.0, 4.0]])
    up = weights @ h @ weights.T
    assert compute("sparseness", [h], 4)["sparseness"][0] == pytest.approx(ref_gini(up), abs=1e-6)
    cols = compute("entropy-complexity", [h], 4)
    assert cols["nats"][0] == pytest.approx(ref_entropy(up), abs=1e-6)
    assert cols["entropy-complexity"][0] == pytest.approx(ref_entropy(up) / math.log(16), abs=1e-6)
    # so a one-hot cell of a coarse map and the same cell at full resolution agree
    coarse = np.zeros((1, 4, 4))
    coarse[0, 1, 2] = 1.0
    fine = np.kron(coarse, np.ones((1, 4, 4)))
    a, b = compute("sparseness", coarse, 16)["sparseness"], compute("sparseness", fine, 16)["sparseness"]
    assert abs(a[0] - b[0]) < 0.1  # bilinear spreads the cell a little: close, not equal


def test_known_orderings_on_real_masks():
    """A lesion mask is sparser and simpler than a random map, which is sparser than a constant one."""
    test = bench.create("dataset", "synthetic-cxr", image_size=64, per_class=40).load().test
    lesion = test.masks["lesion"][test.masks["lesion"].any(axis=(1, 2))].astype(np.float32)
    rand = bench.create("explainer", "random", size="image").explain(None, test.images, None, ids=test.ids)
    const = np.ones_like(rand)
    gini = {k: compute("sparseness", v, 64)["sparseness"].mean() for k, v in
            (("mask", lesion), ("random", rand), ("constant", const))}
    ent = {k: compute("entropy-complexity", v, 64)["entropy-complexity"].mean() for k, v in
           (("mask", lesion), ("random", rand), ("constant", const))}
    assert gini["mask"] > 0.9 and 0.25 < gini["random"] < 0.4 and gini["constant"] == pytest.approx(0.0)
    assert ent["mask"] < 0.7 < ent["random"] < ent["constant"] == pytest.approx(1.0)
    # the lesion mask's entropy is exactly log(area) / log(H W)
    area = lesion.sum(axis=(1, 2))
    np.testing.assert_allclose(compute("entropy-complexity", lesion, 64)["entropy-complexity"],
                               np.log(area) / math.log(64 * 64), atol=1e-9)


def test_specs_declare_family_direction_transform_and_zero_map():
    s, e = spec_of("sparseness"), spec_of("entropy-complexity")
    assert s.family == e.family == "complexity"
    assert s.higher_is_better and not e.higher_is_better
    assert (s.heatmap_transform, e.heatmap_transform) == ("abs", "abs-normalised")
    assert (s.zero_map_value, e.zero_map_value) == (0.0, 1.0)
    for spec in (s, e):
        assert spec.inputs.heatmaps and spec.inputs.images and not spec.inputs.masks and not spec.inputs.model


@pytest.mark.parametrize("name", NAMES)
def test_conformance_kit(name):
    from bench.testing import check_component, checks_for

    metric = bench.create("metric", name)
    assert "check_metric_zero_map" in [n for n, _ in checks_for(metric)]
    check_component(metric)
