"""The streaming AOPC engine (bench.engine.curves.evaluate_aopc)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from bench_metrics.curve_metrics import abpc_per_image as abpc  # noqa: E402

import bench  # noqa: E402
from bench.engine import curves as aopc_mod  # noqa: E402
from bench.engine.curves import AOPCResult, correctly_classified, evaluate_aopc  # noqa: E402
from bench.engine.forward import FullForward  # noqa: E402
from bench.engine.regions import region_boxes  # noqa: E402
from bench.errors import ComponentOutputError, ConfigError, DataError  # noqa: E402
from bench.pipeline.explain import compute_heatmaps  # noqa: E402
from bench.stats import paired_comparison  # noqa: E402


class ZeroFill:
    """A deterministic perturbation: masked pixels set to 0."""

    name = "zero-fill"
    mask_local = True

    def get_params(self):
        return {}

    def perturb(self, images, masks, seeds):
        return images * (~masks)[..., None].astype(np.float32)


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def linear_model(pixel_weights: np.ndarray) -> keras.Model:
    """p(class 0) = sigmoid(sum(pixel_weights * x[..., 0])), p(class 1) = 1 - p(class 0)."""
    h, w = pixel_weights.shape
    inp = keras.Input((h, w, 3))
    dense = keras.layers.Dense(2, activation="softmax", name="out")
    out = dense(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    kernel = np.zeros((h * w * 3, 2), np.float32)
    kernel[:, 0] = (pixel_weights[..., None] * np.array([1.0, 0.0, 0.0])).ravel()
    dense.set_weights([kernel, np.zeros(2, np.float32)])
    return model


def region_contribution_model(size: int, grid: int, contributions: np.ndarray) -> keras.Model:
    """Each region r adds contributions[r] to the logit of class 0 when its pixels are 1."""
    bounds = [len(a) for a in np.array_split(np.arange(size), grid)]
    edges = np.concatenate([[0], np.cumsum(bounds)])
    pw = np.zeros((size, size), np.float32)
    for r in range(grid):
        for c in range(grid):
            area = bounds[r] * bounds[c]
            pw[edges[r] : edges[r + 1], edges[c] : edges[c + 1]] = contributions[r * grid + c] / area
    return linear_model(pw)


def expected_curve(contributions: np.ndarray, order: list[int]) -> list[float]:
    z = float(np.sum(contributions))
    curve = [sigmoid(z)]
    for r in order:
        z -= float(contributions[r])
        curve.append(sigmoid(z))
    return curve


def test_two_regions_by_hand():
    model = linear_model(np.array([[1.0, 2.0]], np.float32))  # image 1x2, region 0 -> 1.0, region 1 -> 2.0
    images = np.ones((1, 1, 2, 3), np.float32)
    hm = np.array([[[0.2, 0.7]]], np.float32)
    morf = evaluate_aopc(model, images, [0], hm, perturbation=ZeroFill(), grid=(1, 2), order="morf")
    # MoRF removes region 1 first: z = 3, 1, 0
    np.testing.assert_allclose(morf.curves[0], [sigmoid(3), sigmoid(1), 0.5], atol=1e-6)
    assert morf.order.tolist() == [[1, 0]]
    assert morf.aopc == pytest.approx(((sigmoid(3) - sigmoid(1)) + (sigmoid(3) - 0.5)) / 3, abs=1e-6)
    assert morf.aopc == pytest.approx(0.224696, abs=1e-5)
    lerf = evaluate_aopc(model, images, [0], hm, perturbation=ZeroFill(), grid=(1, 2), order="lerf")
    np.testing.assert_allclose(lerf.curves[0], [sigmoid(3), sigmoid(2), 0.5], atol=1e-6)
    assert lerf.aopc == pytest.approx(0.174784, abs=1e-5)
    np.testing.assert_allclose(abpc(morf.curves, lerf.curves), [(sigmoid(2) - sigmoid(1)) / 3], atol=1e-6)


@pytest.mark.parametrize("size,grid", [(6, 3), (20, 9)])
@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_hand_computed_curves_grid(size, grid, order):
    n_regions = grid * grid
    rng = np.random.default_rng(grid)
    contributions = rng.uniform(-1.0, 1.0, size=(2, n_regions)).astype(np.float32) * 3 / grid
    images = np.full((2, size, size), 255, np.uint8)  # x = 1 everywhere
    hm = np.stack([rng.permutation(n_regions) for _ in range(2)]).astype(np.float32).reshape(2, grid, grid)
    for i in range(2):
        model = region_contribution_model(size, grid, contributions[i])
        res = evaluate_aopc(
            model, images[i : i + 1], [0], hm[i : i + 1], perturbation=ZeroFill(), grid=grid, order=order
        )
        values = hm[i].ravel()
        by_hand = sorted(range(n_regions), key=lambda r: -values[r] if order == "morf" else values[r])
        assert res.order[0].tolist() == by_hand
        curve = expected_curve(contributions[i], by_hand)
        np.testing.assert_allclose(res.curves[0], curve, atol=2e-6)
        L = n_regions
        per_image = sum(curve[0] - curve[k] for k in range(1, L + 1)) / (L + 1)
        assert res.per_image[0] == pytest.approx(per_image, abs=2e-6)
        assert res.aopc == pytest.approx(per_image, abs=2e-6)
        assert res.curves.shape == (1, L + 1) and res.order.shape == (1, L) and res.n == 1


def test_image_sized_heatmap_orders_by_region_mean():
    size, grid = 9, 3
    contributions = np.linspace(-1, 1, 9).astype(np.float32)
    model = region_contribution_model(size, grid, contributions)
    region_values = np.array([5, 3, 8, 1, 0, 7, 2, 6, 4], np.float32)
    hm = np.repeat(np.repeat(region_values.reshape(3, 3), 3, axis=0), 3, axis=1)[None]  # 9x9 image-sized
    res = evaluate_aopc(model, np.ones((1, 9, 9, 3), np.float32), [0], hm, perturbation=ZeroFill(), grid=3)
    by_hand = [int(r) for r in np.argsort(-region_values)]
    assert res.order[0].tolist() == by_hand
    np.testing.assert_allclose(res.curves[0], expected_curve(contributions, by_hand), atol=2e-6)


# ---- a small CNN for the invariance tests ------------------------------------------------------
@pytest.fixture(scope="module")
def cnn():
    keras.utils.set_random_seed(0)
    inp = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="features")(inp)
    x = keras.layers.MaxPooling2D(4)(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(3, activation="softmax")(x)
    return bench.KerasModel(keras.Model(inp, out), feature_layer="features")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 24, 24), dtype=np.uint8)
    targets = rng.integers(0, 3, size=7)
    heatmaps = rng.random((7, 6, 6)).astype(np.float32)
    ids = np.array([f"img{i:03d}" for i in range(7)])
    return images, targets, heatmaps, ids


def test_batch_size_does_not_change_results(cnn, data):
    images, targets, heatmaps, ids = data
    a = evaluate_aopc(cnn, images, targets, heatmaps, grid=3, ids=ids, batch_size=1)
    b = evaluate_aopc(cnn, images, targets, heatmaps, grid=3, ids=ids, batch_size=64)
    c = evaluate_aopc(cnn, images, targets, heatmaps, grid=3, ids=ids, batch_size=7, prefetch=False)
    assert (a.order == b.order).all() and (a.order == c.order).all()
    np.testing.assert_allclose(a.curves, b.curves, atol=1e-5)
    np.testing.assert_allclose(a.curves, c.curves, atol=1e-5)
    np.testing.assert_allclose(a.per_image, b.per_image, atol=1e-5)
    assert a.forward_passes == b.forward_passes == 7 * 10


def test_permuting_images_permutes_results(cnn, data):
    images, targets, heatmaps, ids = data
    perm = np.array([3, 0, 6, 1, 5, 2, 4])
    a = evaluate_aopc(cnn, images, targets, heatmaps, grid=3, ids=ids, batch_size=16)
    b = evaluate_aopc(cnn, images[perm], targets[perm], heatmaps[perm], grid=3, ids=ids[perm], batch_size=16)
    assert (b.order == a.order[perm]).all()
    np.testing.assert_allclose(b.curves, a.curves[perm], atol=1e-5)
    np.testing.assert_allclose(b.per_image, a.per_image[perm], atol=1e-5)
    # a subset gives the same per-image values: noise is keyed by the id, not the position
    s = evaluate_aopc(cnn, images[4:6], targets[4:6], heatmaps[4:6], grid=3, ids=ids[4:6])
    np.testing.assert_allclose(s.curves, a.curves[4:6], atol=1e-5)
    # another seed changes the noise
    other = evaluate_aopc(cnn, images, targets, heatmaps, grid=3, ids=ids, seed=1)
    assert not np.allclose(other.curves[:, 1:], a.curves[:, 1:])
    np.testing.assert_allclose(other.curves[:, 0], a.curves[:, 0], atol=1e-6)


def test_uint8_and_float_images_agree_and_plain_keras_is_accepted(cnn, data):
    images, targets, heatmaps, ids = data
    a = evaluate_aopc(cnn, images, targets, heatmaps, grid=3, ids=ids)
    b = evaluate_aopc(cnn.keras, images.astype(np.float32)[..., None].repeat(3, -1) / 255.0, targets, heatmaps, grid=3, ids=ids)
    np.testing.assert_allclose(a.curves, b.curves, atol=1e-5)


def test_first_point_is_the_model_probability(cnn, data):
    images, targets, heatmaps, ids = data
    res = evaluate_aopc(cnn, images, targets, heatmaps, grid=3, ids=ids)
    probs = cnn.predict_proba(images)
    np.testing.assert_allclose(res.curves[:, 0], probs[np.arange(7), targets], atol=1e-6)
    assert res.ci[0] <= res.aopc <= res.ci[1]
    assert res.grid == (3, 3) and res.order_name == "morf" and res.strategy == "full"
    assert res.perturbation == "gaussian-noise" and res.perturbation_params == {"sigma": 0.1, "clip": False}


def test_the_python_api_defaults_to_auto_as_a_run_does(cnn, data):
    """``evaluate_aopc`` without ``strategy=`` decides like a run's ``aopc.strategy = "auto"``
    (and records the request and its reason); forcing ``full`` gives the same curves."""
    import inspect

    from bench.config.loading import load_config

    images, targets, heatmaps, ids = data
    default = inspect.signature(evaluate_aopc).parameters["strategy"].default
    assert default == "auto" == load_config(None)["aopc"]["strategy"]
    res = evaluate_aopc(cnn, images, targets, heatmaps, grid=3, ids=ids)
    assert res.strategy_info["requested"] == "auto" and res.strategy_info["reason"]
    forced = evaluate_aopc(cnn, images, targets, heatmaps, grid=3, ids=ids, strategy="full")
    assert "requested" not in forced.strategy_info or forced.strategy_info["requested"] == "full"
    np.testing.assert_allclose(res.curves, forced.curves, atol=1e-5)


def test_streaming_memory_is_bounded_by_batch_size(cnn, data, monkeypatch):
    images, targets, heatmaps, ids = data
    seen_convert: list[int] = []
    seen_perturb: list[int] = []
    real = aopc_mod.to_model_input

    def spy_convert(x):
        seen_convert.append(len(x))
        return real(x)

    class Spy(ZeroFill):
        def perturb(self, images, masks, seeds):
            seen_perturb.append(len(images))
            return super().perturb(images, masks, seeds)

    monkeypatch.setattr(aopc_mod, "to_model_input", spy_convert)
    res = evaluate_aopc(cnn, images, targets, heatmaps, grid=3, perturbation=Spy(), batch_size=5)
    assert max(seen_perturb) <= 5
    assert max(seen_convert) <= 2  # 5 pairs span at most 2 images of 10 steps
    assert sum(seen_perturb) == 70 and res.forward_passes == 70


def test_first_point_is_the_original_even_for_a_global_perturbation(cnn, data):
    images, targets, heatmaps, ids = data

    class Darken:
        name = "darken-everything"

        def perturb(self, images, masks, seeds):
            return images * 0.5  # touches pixels outside the mask, even with an empty mask

    res = evaluate_aopc(cnn, images, targets, heatmaps, grid=3, perturbation=Darken(), batch_size=8)
    probs = cnn.predict_proba(images)
    np.testing.assert_allclose(res.curves[:, 0], probs[np.arange(7), targets], atol=1e-6)
    half = cnn.predict_proba(images.astype(np.float32)[..., None].repeat(3, -1) / 255.0 * 0.5)
    np.testing.assert_allclose(res.curves[:, 5], half[np.arange(7), targets], atol=1e-5)


class RecordingStrategy(FullForward):
    name = "recording"

    def __init__(self):
        super().__init__()
        self.batches = []
        self.prepared = None

    def prepare(self, model, *, batch_size, image_shape, mask_local):
        self.prepared = (batch_size, image_shape, mask_local)
        super().prepare(model, batch_size=batch_size, image_shape=image_shape, mask_local=mask_local)

    def forward(self, batch):
        self.batches.append(batch)
        return super().forward(batch)


def test_engine_calls_the_model_only_through_the_strategy_seam(cnn, data):
    images, targets, heatmaps, ids = data
    strat = RecordingStrategy()
    res = evaluate_aopc(cnn, images, targets, heatmaps, grid=3, ids=ids, batch_size=16, strategy=strat)
    assert strat.prepared == (16, (24, 24, 3), True)
    assert res.strategy == "recording"
    sizes = [len(b) for b in strat.batches]
    assert sizes == [16, 16, 16, 16, 6]  # full batches across images and steps
    img = np.concatenate([b.image_index for b in strat.batches])
    step = np.concatenate([b.step for b in strat.batches])
    assert img.tolist() == np.repeat(np.arange(7), 10).tolist()
    assert step.tolist() == np.tile(np.arange(10), 7).tolist()
    boxes = np.concatenate([b.changed_box for b in strat.batches])
    all_boxes = region_boxes((24, 24), 3)
    for p in range(70):
        i, k = divmod(p, 10)
        expected = all_boxes[res.order[i, k - 1]] if k else np.zeros(4)
        assert (boxes[p] == expected).all()


def test_unknown_strategy_and_bad_arguments(cnn, data):
    images, targets, heatmaps, ids = data
    with pytest.raises(ConfigError, match="strategy"):
        evaluate_aopc(cnn, images, targets, heatmaps, strategy="incremantal")
    with pytest.raises(ConfigError, match="order"):
        evaluate_aopc(cnn, images, targets, heatmaps, order="most")
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        evaluate_aopc(cnn, images.astype(np.float32), targets, heatmaps)
    with pytest.raises(DataError, match="targets"):
        evaluate_aopc(cnn, images, targets[:3], heatmaps)
    with pytest.raises(DataError, match="class indices"):
        evaluate_aopc(cnn, images, targets + 5, heatmaps)
    with pytest.raises(ComponentOutputError, match="heatmaps"):
        evaluate_aopc(cnn, images, targets, heatmaps[:2])
    with pytest.raises(ConfigError, match="ids"):
        evaluate_aopc(cnn, images, targets, heatmaps, ids=ids[:2])
    with pytest.raises(ConfigError, match="grid"):
        evaluate_aopc(cnn, images, targets, heatmaps, grid=30)
    with pytest.raises(bench.UnknownComponentError, match="gaussian-noise"):
        evaluate_aopc(cnn, images, targets, heatmaps, perturbation="gaussian-nois")


@pytest.mark.parametrize(
    "bad,match",
    [
        (lambda x, m, s: x[:, :4], "shape"),
        (lambda x, m, s: (x * 255).astype(np.uint8), "dtype"),
        (lambda x, m, s: x * np.nan, "NaN"),
    ],
)
def test_bad_perturbation_output_names_the_plugin(cnn, data, bad, match):
    images, targets, heatmaps, ids = data

    class Bad:
        name = "bad-perturbation"

        def perturb(self, images, masks, seeds):
            return bad(images, masks, seeds)

    with pytest.raises(ComponentOutputError, match=f"bad-perturbation.*{match}|{match}.*bad-perturbation"):
        evaluate_aopc(cnn, images, targets, heatmaps, perturbation=Bad())


def test_random_order_needs_no_heatmaps_and_targets_default_to_predictions(cnn, data):
    images, targets, heatmaps, ids = data
    res = evaluate_aopc(cnn, images, None, None, order="random", grid=3, ids=ids)
    pred = cnn.predict_proba(images).argmax(axis=1)
    assert res.targets.tolist() == pred.tolist()
    for row in res.order:
        assert sorted(row.tolist()) == list(range(9))
    with pytest.raises(ConfigError, match="heatmaps"):
        evaluate_aopc(cnn, images, targets, None)


def test_empty_input(cnn):
    res = evaluate_aopc(cnn, np.zeros((0, 24, 24), np.uint8), np.zeros(0, int), np.zeros((0, 3, 3)))
    assert res.n == 0 and res.curves.shape == (0, 82) and math.isnan(res.aopc)


def test_result_serialises_and_round_trips(cnn, data, tmp_path):
    images, targets, heatmaps, ids = data
    res = evaluate_aopc(cnn, images, targets, heatmaps, grid=(2, 3), ids=ids)
    d = res.to_dict()
    json.dumps(d)
    assert d["grid"] == [2, 3] and d["n"] == 7 and d["order"] == "morf" and d["n_regions"] == 6
    res.save(tmp_path / "cell")
    back = AOPCResult.load(tmp_path / "cell")
    np.testing.assert_array_equal(back.curves, res.curves)
    np.testing.assert_array_equal(back.order, res.order)
    assert back.ids.tolist() == ids.tolist()
    assert back.aopc == res.aopc and back.ci == res.ci and back.grid == (2, 3)
    assert res.mean_curve.shape == (7,)


def test_correctly_classified(cnn, data):
    images, _, _, _ = data
    pred = cnn.predict_proba(images).argmax(axis=1)
    labels = pred.copy()
    labels[[0, 3]] = (labels[[0, 3]] + 1) % 3
    idx, p = correctly_classified(cnn, images, labels)
    assert idx.tolist() == [1, 2, 4, 5, 6] and p.tolist() == pred[idx].tolist()


# ---- an obvious spatial signal: Grad-CAM must beat random ----------------------------------------
def blob_model(size: int) -> bench.KerasModel:
    """p(class 0) rises with the amount of bright (> 0.5) pixels, through a concave ramp.

    feature = relu(x - 0.5) - relu(x - 0.9): noise on a bright pixel lowers it on average,
    noise on the dark background (0.1) leaves it at 0.
    """
    inp = keras.Input((size, size, 3))
    ramp = keras.layers.Conv2D(2, 1, activation="relu", name="ramp")
    f = ramp(inp)
    combine = keras.layers.Conv2D(1, 1, name="features")
    feat = combine(f)
    pooled = keras.layers.GlobalAveragePooling2D()(feat)
    dense = keras.layers.Dense(2, activation="softmax")
    out = dense(pooled)
    model = keras.Model(inp, out)
    ramp.set_weights([np.full((1, 1, 3, 2), 1 / 3, np.float32), np.array([-0.5, -0.9], np.float32)])
    combine.set_weights([np.array([1.0, -1.0], np.float32).reshape(1, 1, 2, 1), np.zeros(1, np.float32)])
    dense.set_weights([np.array([[60.0, -60.0]], np.float32), np.array([-1.0, 1.0], np.float32)])
    return bench.KerasModel(model, feature_layer="features")


def test_gradcam_beats_random_on_an_obvious_spatial_signal():
    size, n = 32, 12
    rng = np.random.default_rng(0)
    images = np.full((n, size, size), int(0.1 * 255), np.uint8)
    for i in range(n):
        y, x = rng.integers(0, size - 12, size=2)
        images[i, y : y + 12, x : x + 12] = int(0.9 * 255)
    model = blob_model(size)
    targets = np.zeros(n, np.int64)
    ids = [f"blob{i}" for i in range(n)]
    gc = compute_heatmaps(bench.create("explainer", "gradcam"), model, images, targets, ids=ids)
    rnd = compute_heatmaps(bench.create("explainer", "random"), model, images, targets, ids=ids)
    pert = bench.create("perturbation", "gaussian-noise", sigma=0.3)
    r_gc = evaluate_aopc(model, images, targets, gc, perturbation=pert, grid=8, ids=ids)
    r_rnd = evaluate_aopc(model, images, targets, rnd, perturbation=pert, grid=8, ids=ids)
    assert r_gc.aopc > r_rnd.ci[1] and r_gc.ci[0] > r_rnd.aopc
    cmp = paired_comparison(r_gc.per_image, r_rnd.per_image)
    assert cmp["diff"] > 0 and cmp["ci"][0] > 0 and cmp["p_value"] < 0.01
    # LeRF removes the background first: its curve stays high, so ABPC is positive
    r_lerf = evaluate_aopc(model, images, targets, gc, perturbation=pert, grid=8, ids=ids, order="lerf")
    assert abpc(r_gc.curves, r_lerf.curves).mean() > 0


def test_full_forward_traces_once_whatever_the_batch_sizes(cnn, data):
    from bench.engine.forward import traced_call

    images, targets, heatmaps, ids = data
    evaluate_aopc(cnn, images, targets, heatmaps, grid=3, batch_size=16)  # last batch: 6 pairs
    evaluate_aopc(cnn, images[:3], targets[:3], heatmaps[:3], grid=2, batch_size=7)
    evaluate_aopc(cnn, images, targets, heatmaps, grid=3, batch_size=64, order="lerf")
    fn = traced_call(cnn.keras, (None, 24, 24, 3))
    assert fn.experimental_get_tracing_count() == 1


def test_padded_batches_give_the_same_curves(cnn, data):
    images, targets, heatmaps, ids = data
    a = evaluate_aopc(cnn, images, targets, heatmaps, grid=3, batch_size=16)
    b = evaluate_aopc(
        cnn, images, targets, heatmaps, grid=3, batch_size=16, strategy=FullForward(pad_batches=True)
    )
    np.testing.assert_allclose(a.curves, b.curves, atol=1e-5)
