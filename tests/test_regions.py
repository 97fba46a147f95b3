"""Region grid, region scores and orders (bench.engine.regions)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.engine.regions import (
    bilinear_matrix,
    count_ties,
    derive_seed,
    grid_shape,
    rank_of_regions,
    region_boxes,
    region_labels,
    region_masks,
    region_order,
    region_scores,
    resize_bilinear,
    split_bounds,
    union_mask,
)
from bench.errors import ComponentOutputError, ConfigError


def test_split_bounds_match_numpy_array_split_at_299():
    bounds = split_bounds(299, 9)
    assert np.diff(bounds).tolist() == [34, 34, 33, 33, 33, 33, 33, 33, 33]
    for size, parts in [(299, 9), (10, 3), (64, 9), (7, 7), (33, 4)]:
        expected = [len(a) for a in np.array_split(np.arange(size), parts)]
        assert np.diff(split_bounds(size, parts)).tolist() == expected


def test_grid_shape_accepts_int_and_pair_and_rejects_bad():
    assert grid_shape(9) == (9, 9)
    assert grid_shape((3, 4)) == (3, 4)
    assert grid_shape([2, 5]) == (2, 5)
    with pytest.raises(ConfigError):
        grid_shape(0)
    with pytest.raises(ConfigError):
        grid_shape("abc")
    with pytest.raises(ConfigError, match="larger than image"):
        split_bounds(5, 9)


def test_region_labels_index_is_row_times_cols_plus_col():
    labels = region_labels((10, 7), (3, 2))
    # rows split 4,3,3 ; cols split 4,3
    assert labels[0, 0] == 0 and labels[0, 6] == 1
    assert labels[4, 0] == 2 and labels[4, 4] == 3
    assert labels[9, 6] == 5
    rows = [len(a) for a in np.array_split(np.arange(10), 3)]
    cols = [len(a) for a in np.array_split(np.arange(7), 2)]
    counts = np.bincount(labels.ravel(), minlength=6)
    assert counts.tolist() == [r * c for r in rows for c in cols]


def test_region_masks_partition_the_image_and_match_boxes():
    masks = region_masks((299, 299), 9)
    assert masks.shape == (81, 299, 299)
    assert (masks.sum(axis=0) == 1).all()
    boxes = region_boxes((299, 299), 9)
    for r in (0, 8, 40, 80):
        y0, y1, x0, x1 = boxes[r]
        expected = np.zeros((299, 299), bool)
        expected[y0:y1, x0:x1] = True
        assert (masks[r] == expected).all()
    assert tuple(boxes[0]) == (0, 34, 0, 34)
    assert tuple(boxes[80]) == (266, 299, 266, 299)


def test_union_mask_covers_first_k_regions():
    order = np.array([4, 0, 8, 1, 2, 3, 5, 6, 7])
    m = union_mask(order, 3, (9, 9), 3)
    expected = region_masks((9, 9), 3)[[4, 0, 8]].any(axis=0)
    assert (m == expected).all()
    assert not union_mask(order, 0, (9, 9), 3).any()
    assert union_mask(order, 9, (9, 9), 3).all()


def test_grid_shaped_heatmap_is_used_as_is():
    hm = np.arange(2 * 9, dtype=np.float32).reshape(2, 3, 3)
    scores = region_scores(hm, (30, 30), 3)
    assert scores.shape == (2, 9)
    np.testing.assert_array_equal(scores, hm.reshape(2, 9))


def test_image_sized_heatmap_gives_region_means():
    rng = np.random.default_rng(0)
    hm = rng.random((3, 31, 29)).astype(np.float32)
    scores = region_scores(hm, (31, 29), (3, 4))
    labels = region_labels((31, 29), (3, 4))
    for i in range(3):
        expected = [hm[i][labels == r].mean() for r in range(12)]
        np.testing.assert_allclose(scores[i], expected, rtol=1e-6)


def test_other_sizes_are_resized_bilinearly_like_tensorflow_then_averaged():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(1)
    hm = rng.random((2, 9, 9)).astype(np.float32)
    size = (64, 48)
    resized = tf.image.resize(hm[..., None], size, method="bilinear", antialias=False).numpy()[..., 0]
    labels = region_labels(size, (4, 3))
    expected = np.array([[resized[i][labels == r].mean() for r in range(12)] for i in range(2)])
    np.testing.assert_allclose(region_scores(hm, size, (4, 3)), expected, atol=1e-5)


@pytest.mark.parametrize("in_shape, size", [((9, 9), (64, 48)), ((2, 7), (5, 3)), ((13, 11), (13, 40)), ((3, 3), (1, 1))])
def test_resize_bilinear_equals_tensorflow_resize_bilinear(in_shape, size):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(3, *in_shape)).astype(np.float32)
    expected = tf.image.resize(maps[..., None], size, method="bilinear", antialias=False).numpy()[..., 0]
    batched = resize_bilinear(maps, size)  # (N, h, w) -> (N, H, W), float64
    assert batched.shape == (3, *size) and batched.dtype == np.float64
    np.testing.assert_allclose(batched, expected, atol=1e-5)
    for i in range(3):  # one map (h, w), the same values as the batch
        np.testing.assert_allclose(resize_bilinear(maps[i], size), batched[i], rtol=0, atol=1e-12)


def test_resize_bilinear_keeps_maps_of_the_size_and_is_the_bilinear_matrix_product():
    m = np.arange(12, dtype=np.float32).reshape(3, 4)
    same = resize_bilinear(m, (3, 4))
    assert same.dtype == np.float64
    np.testing.assert_array_equal(same, m)
    np.testing.assert_array_equal(resize_bilinear(m, (8, 5)), bilinear_matrix(8, 3) @ m.astype(np.float64)
                                  @ bilinear_matrix(5, 4).T)
    with pytest.raises(ValueError, match="expected maps"):
        resize_bilinear(np.zeros(4), (2, 2))


def test_bilinear_matrix_rows_sum_to_one_and_identity_at_same_size():
    m = bilinear_matrix(299, 9)
    np.testing.assert_allclose(m.sum(axis=1), 1.0)
    np.testing.assert_array_equal(bilinear_matrix(5, 5), np.eye(5))


def test_region_scores_rejects_bad_heatmaps():
    with pytest.raises(ComponentOutputError, match="NaN"):
        region_scores(np.full((1, 3, 3), np.nan), (9, 9), 3)
    with pytest.raises(ComponentOutputError, match="shape"):
        region_scores(np.zeros((9, 9)), (9, 9), 3)


def test_morf_lerf_orders_with_distinct_scores():
    scores = np.array([[0.1, 0.9, 0.5, 0.3]])
    assert region_order(scores, "morf").tolist() == [[1, 2, 3, 0]]
    assert region_order(scores, "lerf").tolist() == [[0, 3, 2, 1]]
    with pytest.raises(ConfigError, match="did you mean"):
        region_order(scores, "morff")


def test_ties_are_broken_by_seeded_permutation_per_image_id():
    scores = np.zeros((3, 81))
    a = region_order(scores, "morf", seed=0, ids=["x", "y", "z"])
    b = region_order(scores[:1], "morf", seed=0, ids=["x"])
    c = region_order(scores, "morf", seed=1, ids=["x", "y", "z"])
    assert (a[0] == b[0]).all()  # independent of the other images
    assert not (a[0] == a[1]).all()  # different ids, different permutation
    assert not (a[0] == c[0]).all()  # different seed, different permutation
    for row in a:
        assert sorted(row.tolist()) == list(range(81))
    # ties broken only among equals: the top group stays on top
    s = np.array([[1.0, 2.0, 2.0, 2.0, 0.0]])
    o = region_order(s, "morf", ids=[7])
    assert set(o[0, :3].tolist()) == {1, 2, 3} and o[0, 3] == 0 and o[0, 4] == 4
    assert count_ties(s).tolist() == [3]


def test_random_order_is_a_seeded_permutation():
    scores = np.zeros((2, 9))
    r1 = region_order(scores, "random", seed=3, ids=[10, 11])
    r2 = region_order(scores + 5, "random", seed=3, ids=[10, 11])
    assert (r1 == r2).all()
    assert sorted(r1[0].tolist()) == list(range(9))


def test_rank_is_inverse_of_order():
    order = np.array([[2, 0, 1], [1, 2, 0]])
    rank = rank_of_regions(order)
    for i in range(2):
        assert (order[i][rank[i]] == np.arange(3)).all()


def test_derive_seed_is_stable_and_id_type_insensitive():
    assert derive_seed(0, 3) == derive_seed(0, np.int64(3)) == derive_seed(0, "3")
    assert derive_seed(0, 3) != derive_seed(1, 3)
    assert derive_seed(0, 3, "a") != derive_seed(0, 3, "b")
    assert 0 <= derive_seed(123, "img_001.png") < 2**63
    # pinned value: a change here silently changes every published result
    assert derive_seed(0, 0) == 6506378232470971193
    assert derive_seed(7, "img_001.png", "perturbation") == 3497235662624159232
