"""Insertion (Petsiuk et al. 2018) as the engine's complement mask, and the insertion-auc metric.

The curves are checked against an independent computation written here: the images
x^(k) built by hand from the definition (every region black except the k most relevant
ones, restored from the original), run through the Keras model directly. The model is
constructed, not trained: its class-0 logit reads the mean brightness of one grid cell
only, so the answer (the curve jumps when that cell is restored) is known on any machine.
"""

from __future__ import annotations

import numpy as np
import pytest

import bench
from bench.engine.curves import evaluate_aopc
from bench.pipeline.metrics import compute_columns, metric_data

SIZE = 12
GRID = 3
CELL = SIZE // GRID
#: the grid cell (row 1, col 2) the model reads
BLOCK = (1 * CELL, 2 * CELL)


def block_model():
    """Class-0 logit = 12 * mean(block) - 3, class-1 logit 0: p0 ~ 1 on a bright block, ~0 on a black one."""
    import keras

    top, left = BLOCK
    inputs = keras.Input(shape=(SIZE, SIZE, 3))
    crop = keras.layers.Cropping2D(((top, SIZE - top - CELL), (left, SIZE - left - CELL)))(inputs)
    mean = keras.layers.GlobalAveragePooling2D()(crop)
    head = keras.layers.Dense(2, trainable=False)
    probs = keras.layers.Softmax()(head(mean))
    model = keras.Model(inputs, probs)
    kernel = np.zeros((3, 2), np.float32)
    kernel[:, 0] = 4.0  # 12 x the mean over the 3 channels
    head.set_weights([kernel, np.array([-3.0, 0.0], np.float32)])
    return model


def images(n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(150, 256, size=(n, SIZE, SIZE), dtype=np.uint8)  # bright everywhere


def region_of(r: int) -> tuple[slice, slice]:
    row, col = divmod(r, GRID)
    return slice(row * CELL, (row + 1) * CELL), slice(col * CELL, (col + 1) * CELL)


def by_hand(model, x_uint8: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    """Insertion curves from the definition: x^(k) = the original on the k highest-scoring
    regions, black elsewhere; f = the model's probability of class 0."""
    n = len(x_uint8)
    out = np.zeros((n, GRID * GRID + 1))
    for i in range(n):
        order = np.argsort(-heatmaps[i].reshape(-1), kind="stable")  # distinct scores: no ties
        original = np.repeat(x_uint8[i, ..., None].astype(np.float32) / 255.0, 3, axis=-1)
        for k in range(GRID * GRID + 1):
            xk = np.zeros_like(original)
            for r in order[:k]:
                ys, xs = region_of(int(r))
                xk[ys, xs] = original[ys, xs]
            out[i, k] = float(np.asarray(model(xk[None], training=False))[0, 0])
    return out


def heatmaps_putting_the_block(position: int, n: int) -> np.ndarray:
    """(n, 3, 3) maps with distinct scores, the model's block at rank ``position`` (0 = most relevant)."""
    block = (BLOCK[0] // CELL) * GRID + BLOCK[1] // CELL
    others = [r for r in range(GRID * GRID) if r != block]
    ranking = others[:position] + [block] + others[position:]
    maps = np.zeros((n, GRID * GRID), np.float32)
    for rank, r in enumerate(ranking):
        maps[:, r] = GRID * GRID - rank
    return maps.reshape(n, GRID, GRID)


@pytest.fixture(scope="module")
def model():
    return block_model()


@pytest.mark.parametrize("position", [0, 4, 8])
def test_insertion_curves_equal_the_definition(model, position):
    x = images()
    maps = heatmaps_putting_the_block(position, len(x))
    result = evaluate_aopc(model, x, np.zeros(len(x), np.int64), maps, perturbation="black", grid=GRID,
                           order="insertion", batch_size=5)
    expected = by_hand(model, x, maps)
    np.testing.assert_allclose(result.curves, expected, atol=1e-5)
    # x^(0) is the fully perturbed (black) image, x^(L) the original
    assert result.curves[:, 0].max() < 0.06 and result.curves[:, -1].min() > 0.99
    # the probability comes back exactly when the block is restored: at step position + 1
    assert result.curves[:, position].max() < 0.06 and result.curves[:, position + 1].min() > 0.99
    # the regions are restored in MoRF order
    np.testing.assert_array_equal(result.order, evaluate_aopc(
        model, x, None, maps, perturbation="black", grid=GRID, order="morf").order)
    assert result.forward_passes == len(x) * (GRID * GRID + 1)


def test_insertion_does_not_depend_on_the_batch_and_is_paired_by_id(model):
    x = images(4)
    maps = np.random.default_rng(3).random((4, GRID, GRID)).astype(np.float32)
    kw = dict(perturbation="gaussian-noise", grid=GRID, order="insertion", ids=["a", "b", "c", "d"])
    a = evaluate_aopc(model, x, np.zeros(4, np.int64), maps, batch_size=3, **kw)
    b = evaluate_aopc(model, x, np.zeros(4, np.int64), maps, batch_size=40, **kw)
    np.testing.assert_allclose(a.curves, b.curves, atol=1e-6)
    # with noise as the perturbation, x^(L) is still the original (nothing perturbed)
    clean = np.asarray(model(np.repeat(x[..., None].astype(np.float32) / 255.0, 3, axis=-1)))[:, 0]
    np.testing.assert_allclose(a.curves[:, -1], clean, atol=1e-6)


def test_insertion_auc_metric_by_hand_and_it_ranks_the_known_order(model):
    x = images()
    spec = bench.registry().get("metric", "insertion-auc").spec
    assert spec.inputs.curves == ("insertion",) and spec.higher_is_better and spec.perturbation_param == "perturbation"
    assert bench.create("metric", "insertion-auc").get_params() == {"perturbation": "blur"}  # the paper's
    values = {}
    for position in (0, 8):
        maps = heatmaps_putting_the_block(position, len(x))
        curves = evaluate_aopc(model, x, np.zeros(len(x), np.int64), maps, perturbation="black", grid=GRID,
                               order="insertion").curves
        out = compute_columns(bench.create("metric", "insertion-auc"), spec,
                              metric_data(spec, ids=["a", "b", "c"], curves={"insertion": curves}))
        np.testing.assert_allclose(out["insertion-auc"], curves.astype(np.float64).mean(axis=1), atol=1e-12)
        np.testing.assert_allclose(out["baseline"], curves[:, 0], atol=1e-7)
        values[position] = out["insertion-auc"]
    L = GRID * GRID
    # the oracle order (block first) restores the signal at step 1: AUC ~ L / (L+1); last: ~ 1 / (L+1)
    assert values[0].min() > (L - 0.5) / (L + 1) and values[8].max() < 1.5 / (L + 1)


def test_unknown_perturbation_parameter_is_refused_with_a_suggestion():
    metric = bench.create("metric", "insertion-auc", perturbation="blurr")
    with pytest.raises(Exception, match="did you mean 'blur'"):
        metric.validate()
    bench.create("metric", "insertion-auc", perturbation="").validate()  # "": the cell's


@pytest.mark.parametrize("name", ["insertion-auc", "road-aopc", "road-lerf-aopc", "road-abpc"])
def test_conformance_kit_and_no_pass_of_their_own(name):
    from bench.testing import check_component

    metric = bench.create("metric", name)
    check_component(metric)
    assert metric.forward_passes() == 0.0  # their cost is their curves'
    spec = bench.registry().get("metric", name).spec
    assert spec.perturbation_param == "perturbation" and spec.family == "faithfulness"


def test_road_metrics_by_hand_on_curves_given_by_entry():
    from bench_metrics.curve_metrics import aopc_per_image

    morf = np.array([[0.9, 0.5, 0.2], [0.7, 0.7, 0.1]])
    lerf = np.array([[0.9, 0.8, 0.6], [0.7, 0.7, 0.6]])
    for name, want in (("road-aopc", aopc_per_image(morf)), ("road-lerf-aopc", aopc_per_image(lerf)),
                       ("road-abpc", (lerf[:, 1:] - morf[:, 1:]).sum(axis=1) / 3)):
        spec = bench.registry().get("metric", name).spec
        out = compute_columns(bench.create("metric", name), spec,
                              metric_data(spec, ids=["a", "b"], curves={"morf": morf, "lerf": lerf}))
        np.testing.assert_allclose(out[name], want, atol=1e-12)
    # in a run the curves are named by their perturbation: a noise cell's road curves are morf@road
    spec = bench.registry().get("metric", "road-aopc").spec
    data = metric_data(spec, ids=["a", "b"], curves={"morf": lerf, "morf@road": morf}, perturbation="gaussian-noise",
                       params={"perturbation": "road"})
    np.testing.assert_allclose(data.curve("morf"), morf)
    assert data.curve_perturbation("morf") == "road"
