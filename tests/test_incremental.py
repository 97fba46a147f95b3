"""Incremental MoRF inference: exact against full passes, boxes, and the ``auto`` decision."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import bench  # noqa: E402
from bench.engine.curves import evaluate_aopc  # noqa: E402
from bench.engine.forward import ForwardBatch  # noqa: E402
from bench.engine.incremental import (  # noqa: E402
    IncrementalForward,
    PrefixOp,
    analyse_model,
    estimate_gain,
    out_box,
    propagate,
)
from bench.engine.strategies import get_strategy  # noqa: E402

TOL = 1e-5


def reinit(keras_model: object, seed: int = 0) -> None:
    """He-normal kernels, small random biases and BN statistics, so activations stay alive."""
    rng = np.random.default_rng(seed)
    for layer in keras_model.layers:  # type: ignore[attr-defined]
        cls = type(layer).__name__
        if cls in ("Conv2D", "Dense", "DepthwiseConv2D"):
            k = layer.kernel
            fan_in = int(np.prod(k.shape[:2])) if cls == "DepthwiseConv2D" else int(np.prod(k.shape[:-1]))
            k.assign(rng.normal(0, np.sqrt(2.0 / fan_in), k.shape).astype("float32"))
            if layer.use_bias:
                layer.bias.assign(rng.normal(0, 0.05, layer.bias.shape).astype("float32"))
        elif cls == "BatchNormalization":
            c = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.1, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            if layer.gamma is not None:
                layer.gamma.assign(rng.uniform(0.8, 1.2, c).astype("float32"))
            if layer.beta is not None:
                layer.beta.assign(rng.normal(0, 0.1, c).astype("float32"))


def calibrate(keras_model: object, images: np.ndarray, target_sd: float = 2.0) -> None:
    """Scale the last Dense so logits spread by ~target_sd (probabilities move, not saturate)."""
    last = [lay for lay in keras_model.layers if type(lay).__name__ == "Dense"][-1]  # type: ignore[attr-defined]
    sub = keras.Model(keras_model.inputs[0], last.output)  # type: ignore[attr-defined]
    for _ in range(3):
        lg = np.asarray(sub(images[:4]))
        sd = float(np.std(lg - lg.mean(axis=1, keepdims=True))) + 1e-12
        last.kernel.assign(last.kernel * (target_sd / sd))
        last.bias.assign(last.bias * (target_sd / sd))


def _compare(model: object, images: np.ndarray, heatmaps: np.ndarray, *, grid: int, batch_size: int,
             perturbation: object = "gaussian-noise") -> tuple[object, object]:
    full = evaluate_aopc(model, images, None, heatmaps, grid=grid, batch_size=batch_size,
                         strategy="full", perturbation=perturbation)
    inc = evaluate_aopc(model, images, full.targets, heatmaps, grid=grid, batch_size=batch_size,
                        strategy="incremental", perturbation=perturbation)
    return full, inc


def _assert_exact_and_moving(full: object, inc: object) -> None:
    assert inc.strategy == "incremental"  # type: ignore[attr-defined]
    assert inc.strategy_info["used"] == "incremental"  # type: ignore[attr-defined]
    diff = np.abs(full.curves - inc.curves).max()  # type: ignore[attr-defined]
    assert diff <= TOL, f"incremental differs from full by {diff}"
    # the check is not trivial: the probabilities move along the sequence
    assert float(np.ptp(full.curves, axis=1).min()) > 1e-3  # type: ignore[attr-defined]
    np.testing.assert_allclose(full.per_image, inc.per_image, atol=TOL)  # type: ignore[attr-defined]


def hand_built_net(size: int = 37) -> object:
    L = keras.layers
    x_in = keras.Input((size, size, 3))
    x = L.Rescaling(2.0, offset=-1.0)(x_in)
    x = L.ZeroPadding2D(((2, 1), (1, 2)))(x)
    a = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    b = L.Conv2D(8, 5, strides=2, padding="same")(x)
    b = L.BatchNormalization()(b)
    b = L.ReLU()(b)
    x = L.Add()([a, b])
    c = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)
    x = L.Concatenate()([x, c])
    x = L.Conv2D(12, 3, padding="valid", activation="relu")(x)
    x = L.MaxPooling2D(3, strides=2, padding="same")(x)
    x = L.Conv2D(12, 1, activation="relu")(x)
    x = L.AveragePooling2D(2)(x)
    x = L.Activation("tanh")(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Softmax()(L.Dense(4)(x))
    return keras.Model(x_in, out)


def _nested(size: int = 35, flatten_inside: bool = False) -> object:
    """A backbone as a nested Keras model (not inlined), as keras.applications without input_tensor."""
    L = keras.layers
    inner_in = keras.Input((size, size, 3))
    y = L.Conv2D(8, 3, padding="same", activation="relu")(inner_in)
    y = L.MaxPooling2D(2)(y)
    y = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(y)
    if flatten_inside:
        y = L.Dense(6)(L.Flatten()(y))
    backbone = keras.Model(inner_in, y, name="backbone")
    x_in = keras.Input((size, size, 3))
    x = backbone(L.Rescaling(2.0, offset=-1.0)(x_in))
    if not flatten_inside:
        x = L.Flatten()(L.MaxPooling2D(2)(x))
    out = L.Softmax()(L.Dense(4)(x))
    return keras.Model(x_in, out)


@pytest.mark.parametrize("flatten_inside", [False, True])
def test_nested_backbone_is_walked_through(flatten_inside: bool) -> None:
    km = _nested(35, flatten_inside)
    reinit(km, seed=8)
    images, heatmaps = _data(2, 35, hm=5)
    calibrate(km, images)
    plan = analyse_model(km)
    assert [type(op.layer).__name__ for op in plan.ops][:4] == ["Rescaling", "Conv2D", "MaxPooling2D", "Conv2D"]
    assert plan.stop_reason == "locality"
    full, inc = _compare(km, images, heatmaps, grid=5, batch_size=7)
    _assert_exact_and_moving(full, inc)


def _data(n: int, size: int, hm: int = 9, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 1, (n, size, size, 3)).astype("float32"),
            rng.uniform(0, 1, (n, hm, hm)).astype("float32"))


# ---- exactness --------------------------------------------------------------------------------
def test_vgg16_incremental_equals_full_at_every_step() -> None:
    model = bench.create("model", "vgg16", weights="none", input_shape=(64, 64, 3), num_classes=4, pool_size=2)
    images, heatmaps = _data(2, 64)
    reinit(model.keras)
    calibrate(model.keras, images)
    # batch 23: batches span two images and each image spans several batches
    full, inc = _compare(model, images, heatmaps, grid=9, batch_size=23)
    _assert_exact_and_moving(full, inc)
    assert inc.strategy_info["prefix_ends_at"].startswith("head_flatten")


def test_hand_built_net_every_supported_layer_odd_size() -> None:
    km = hand_built_net(37)
    reinit(km, seed=3)
    images, heatmaps = _data(3, 37, hm=5)
    calibrate(km, images)
    plan = analyse_model(km)
    kinds = {type(op.layer).__name__ for op in plan.ops}
    assert {"Rescaling", "ZeroPadding2D", "Conv2D", "BatchNormalization", "ReLU", "Add",
            "DepthwiseConv2D", "Concatenate", "MaxPooling2D", "AveragePooling2D", "Activation"} <= kinds
    assert plan.stop_reason == "locality"
    full, inc = _compare(km, images, heatmaps, grid=(4, 5), batch_size=9)
    _assert_exact_and_moving(full, inc)


def dense_twin_net(size: int = 40) -> object:
    """DenseNet201's layer kinds and wiring in miniature: stem (ZeroPadding, strided conv, BN, ReLU,
    max pool), dense layers (BN-ReLU-1x1 conv-BN-ReLU-3x3 conv, concatenated), a transition
    (BN-ReLU-1x1 conv, 2x2 average pool), then the study's head."""
    L = keras.layers
    x_in = keras.Input((size, size, 3))
    x = L.ZeroPadding2D(3)(L.Rescaling(1 / 0.25, offset=-2.0)(x_in))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 7, strides=2, use_bias=False)(x)))
    x = L.MaxPooling2D(3, strides=2)(L.ZeroPadding2D(1)(x))
    for block in range(2):
        for _ in range(3):
            y = L.Activation("relu")(L.BatchNormalization()(x))
            y = L.Conv2D(8, 1, use_bias=False)(y)
            y = L.Activation("relu")(L.BatchNormalization()(y))
            y = L.Conv2D(4, 3, padding="same", use_bias=False)(y)
            x = L.Concatenate()([x, y])
        if block == 0:
            x = L.Conv2D(8, 1, use_bias=False)(L.Activation("relu")(L.BatchNormalization()(x)))
            x = L.AveragePooling2D(2, strides=2)(x)
    x = L.Activation("relu")(L.BatchNormalization()(x))
    x = L.Flatten()(L.MaxPooling2D(2)(x))
    out = L.Softmax()(L.Dense(4)(L.Dense(16, activation="relu")(x)))
    return keras.Model(x_in, out)


def test_densenet_twin_is_exact() -> None:
    """The default-suite twin of the slow DenseNet201 test: the same layer kinds, in seconds."""
    km = dense_twin_net(40)
    reinit(km, seed=2)
    images, heatmaps = _data(2, 40, hm=5)
    calibrate(km, images)
    kinds = {type(op.layer).__name__ for op in analyse_model(km).ops}
    assert {"ZeroPadding2D", "Conv2D", "BatchNormalization", "ReLU", "MaxPooling2D", "Activation",
            "Concatenate", "AveragePooling2D"} <= kinds
    full, inc = _compare(km, images, heatmaps, grid=5, batch_size=16)
    _assert_exact_and_moving(full, inc)


@pytest.mark.slow
def test_densenet201_small_is_exact() -> None:
    model = bench.create("model", "densenet201", weights="none", input_shape=(32, 32, 3), num_classes=4,
                         pool_size=1)
    images, heatmaps = _data(1, 32, hm=3)
    reinit(model.keras, seed=2)
    calibrate(model.keras, images)
    full, inc = _compare(model, images, heatmaps, grid=3, batch_size=4)
    _assert_exact_and_moving(full, inc)


class ShiftEverywhere:
    """Not mask-local: besides noise in the mask, shifts every pixel by a step-dependent amount."""

    name = "shift-everywhere"
    mask_local = False

    def perturb(self, images: np.ndarray, masks: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        frac = masks.reshape(len(masks), -1).mean(axis=1)[:, None, None, None]
        out = images + 0.3 * masks[..., None] + 0.05 * frac
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    def get_params(self) -> dict[str, object]:
        return {}


def test_non_local_perturbation_incremental_exact_and_auto_falls_back() -> None:
    km = hand_built_net(33)
    reinit(km, seed=5)
    images, heatmaps = _data(2, 33, hm=3)
    calibrate(km, images)
    full, inc = _compare(km, images, heatmaps, grid=3, batch_size=5, perturbation=ShiftEverywhere())
    _assert_exact_and_moving(full, inc)
    auto = evaluate_aopc(km, images, full.targets, heatmaps, grid=3, batch_size=5, strategy="auto",
                         perturbation=ShiftEverywhere())
    assert auto.strategy == "full"
    assert "mask_local" in auto.strategy_info["reason"]
    np.testing.assert_array_equal(auto.curves, full.curves)


def test_simple_cnn_auto_chooses_full_with_reason_and_forced_incremental_is_exact() -> None:
    model = bench.create("model", "simple-cnn", weights="none", input_shape=(32, 32, 3), num_classes=4)
    images, heatmaps = _data(2, 32, hm=4)
    reinit(model.keras, seed=4)
    calibrate(model.keras, images)
    auto = evaluate_aopc(model, images, None, heatmaps, grid=4, batch_size=8, strategy="auto")
    assert auto.strategy == "full"
    assert auto.strategy_info["requested"] == "auto"
    assert "PerImageStandardization" in auto.strategy_info["reason"]
    assert auto.to_dict()["strategy_info"]["used"] == "full"
    inc = evaluate_aopc(model, images, auto.targets, heatmaps, grid=4, batch_size=8, strategy="incremental")
    assert np.abs(inc.curves - auto.curves).max() <= TOL


def test_out_of_order_rows_get_full_passes() -> None:
    km = hand_built_net(33)
    reinit(km, seed=6)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (4, 33, 33, 3)).astype("float32")
    x[1] = x[0]
    x[1, 3:9, 4:12] = rng.uniform(0, 1, (6, 8, 3))
    x[2] = x[1]
    x[2, 20:30, 0:5] = 0.0
    strat = IncrementalForward()
    strat.prepare(km, batch_size=4, image_shape=(33, 33, 3), mask_local=True)
    expected = np.asarray(km(x), dtype=np.float32)

    def batch(rows: list[int], img: list[int], steps: list[int]) -> ForwardBatch:
        n = len(rows)
        return ForwardBatch(images=x[rows], image_index=np.asarray(img), step=np.asarray(steps),
                            changed_box=np.zeros((n, 4), np.int64), targets=np.zeros(n, np.int64))

    # image 7: steps 0, 1 | 2 across batches; image 9 interleaved; step 5 after 0 = no reuse
    out1 = strat.forward(batch([0, 1, 3], [7, 7, 9], [0, 1, 0]))
    out2 = strat.forward(batch([2, 3, 0], [7, 9, 9], [2, 5, 0]))
    np.testing.assert_allclose(out1, expected[[0, 1, 3]], atol=TOL)
    np.testing.assert_allclose(out2, expected[[2, 3, 0]], atol=TOL)


# ---- boxes and the auto decision ----------------------------------------------------------------
def test_out_box_growth_stride_padding_and_clipping() -> None:
    conv = PrefixOp(layer=None, kind="window", inputs=[], output=0, out_hw=(32, 32), in_hw=(32, 32),
               k=(3, 3), s=(1, 1), pad=(1, 1))
    assert out_box(conv, (10, 14, 0, 4)) == (9, 15, 0, 5)  # halo 1, clipped at 0
    assert out_box(conv, (30, 32, 30, 32)) == (29, 32, 29, 32)
    pool = PrefixOp(layer=None, kind="window", inputs=[], output=0, out_hw=(16, 16), in_hw=(32, 32),
               k=(2, 2), s=(2, 2), pad=(0, 0))
    assert out_box(pool, (10, 14, 3, 4)) == (5, 7, 1, 2)
    s2 = PrefixOp(layer=None, kind="window", inputs=[], output=0, out_hw=(16, 16), in_hw=(31, 31),
             k=(3, 3), s=(2, 2), pad=(1, 1))
    # input row r feeds outputs i with 2i-1 <= r <= 2i+1
    assert out_box(s2, (4, 5, 4, 5)) == (2, 3, 2, 3)
    assert out_box(s2, (5, 6, 5, 6)) == (2, 4, 2, 4)
    zp = PrefixOp(layer=None, kind="window", inputs=[], output=0, out_hw=(35, 36), in_hw=(32, 32),
             k=(1, 1), s=(1, 1), pad=(2, 1))
    assert out_box(zp, (0, 3, 5, 6)) == (2, 5, 6, 7)


def test_propagate_matches_actual_changes() -> None:
    """Every activation that really changes lies inside the propagated box."""
    km = hand_built_net(37)
    reinit(km, seed=7)
    plan = analyse_model(km)
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (1, 37, 37, 3)).astype("float32")
    x2 = x.copy()
    box = (12, 19, 25, 33)
    x2[0, box[0]:box[1], box[2]:box[3]] += 0.5
    boxes = propagate(plan, box)
    for op in plan.ops:
        sub = keras.Model(km.inputs[0], op.layer.output)
        d = np.abs(np.asarray(sub(x2)) - np.asarray(sub(x)))[0].max(axis=-1)
        b = boxes[op.output]
        assert b is not None
        outside = d.copy()
        outside[b[0]:b[1], b[2]:b[3]] = 0
        assert outside.max() <= 1e-5, op.layer.name


def test_auto_decision_from_box_counting() -> None:
    vgg = bench.create("model", "vgg16", weights="none", input_shape=(299, 299, 3), num_classes=4)
    plan = analyse_model(vgg.keras)
    assert estimate_gain(plan) >= 5.0
    assert plan.bytes_per_image > 80 * 2**20  # ~100 MiB of cached activations per image at 299
    auto = get_strategy("auto")
    auto.prepare(vgg, batch_size=64, image_shape=(299, 299, 3), mask_local=True)
    assert auto.name == "incremental" and auto.info["used"] == "incremental"
    assert auto.info["predicted_gain"] >= 2.0
    assert auto.info["cached_images"] >= 1
    tight = IncrementalForward(mode="auto", memory_budget_mb=1)
    tight.prepare(vgg, batch_size=64, image_shape=(299, 299, 3), mask_local=True)
    assert tight.info["cached_images"] == 1
    fussy = IncrementalForward(mode="auto", min_gain=1000.0)
    fussy.prepare(vgg, batch_size=64, image_shape=(299, 299, 3), mask_local=True)
    assert fussy.name == "full" and "below min_gain" in fussy.info["reason"]


def test_constructor_discipline_and_errors() -> None:
    strat = IncrementalForward(mode="auto", min_gain=3.0, memory_budget_mb=512.0, estimate_grid=7)
    assert strat.get_params() == {"mode": "auto", "min_gain": 3.0, "memory_budget_mb": 512.0,
                                  "estimate_grid": 7, "lockstep_rows": None, "split": None}
    assert get_strategy("incremental").get_params()["mode"] == "incremental"
    with pytest.raises(bench.errors.ConfigError, match="mode"):
        IncrementalForward(mode="sometimes").prepare(hand_built_net(33), batch_size=1,
                                                     image_shape=(33, 33, 3), mask_local=True)
    with pytest.raises(bench.errors.ConfigError, match="33"):
        IncrementalForward().prepare(hand_built_net(33), batch_size=1, image_shape=(40, 40, 3),
                                     mask_local=True)
    with pytest.raises(bench.errors.ConfigError, match="incremantal|strategies"):
        get_strategy("incremantal")
