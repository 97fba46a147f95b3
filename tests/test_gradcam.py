"""Grad-CAM (bench_gradcam.gradcam) against independent computations."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from bench_gradcam.gradcam import GradCAM  # noqa: E402

import bench  # noqa: E402


def independent_gradcam(keras_model, feature_layer: str, images, targets, relu: bool = True) -> np.ndarray:
    """Grad-CAM by the definition, one image at a time, eager, own GradientTape.

    Splits the model at ``feature_layer`` (a linear chain of layers after it) and
    recomputes the pre-softmax logit from the final layer's weights.
    """
    layers = keras_model.layers
    idx = [layer.name for layer in layers].index(feature_layer)
    feat_model = keras.Model(keras_model.inputs[0], layers[idx].output)
    head = layers[idx + 1 :]
    maps = []
    for i in range(len(images)):
        a = tf.convert_to_tensor(feat_model(images[i : i + 1], training=False))
        with tf.GradientTape() as tape:
            tape.watch(a)
            h = a
            for j, layer in enumerate(head):
                last = j == len(head) - 1
                if last and type(layer).__name__ == "Softmax":
                    break
                if last and type(layer).__name__ == "Dense":  # softmax Dense: its pre-activation
                    h = tf.matmul(h, layer.kernel) + layer.bias
                    break
                h = layer(h, training=False)
            y = h[0, int(targets[i])]
        g = tape.gradient(y, a)
        w = tf.reduce_mean(g, axis=(1, 2))
        cam = tf.reduce_sum(a * w[:, None, None, :], axis=-1)
        maps.append((tf.nn.relu(cam) if relu else cam).numpy()[0])
    return np.stack(maps).astype(np.float32)


@pytest.fixture(scope="module")
def small():
    keras.utils.set_random_seed(1)
    inp = keras.Input((20, 20, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    x = keras.layers.Conv2D(5, 3, strides=2, padding="same", activation="relu", name="features")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, activation="relu")(x)
    out = keras.layers.Dense(3, activation="softmax", name="out")(x)
    model = keras.Model(inp, out)
    images = np.random.default_rng(0).random((5, 20, 20, 3)).astype(np.float32)
    return bench.KerasModel(model, feature_layer="features"), images


def test_registered_with_params():
    g = bench.create("explainer", "gradcam")
    assert isinstance(g, GradCAM) and g.get_params() == {"layer": None, "relu": True}
    assert bench.create("explainer", "gradcam", relu=False).relu is False


def test_matches_independent_tape_on_small_model(small):
    model, images = small
    targets = np.array([0, 1, 2, 1, 0])
    for relu in (True, False):
        ours = GradCAM(relu=relu).explain(model, images, targets)
        ref = independent_gradcam(model.keras, "features", images, targets, relu=relu)
        assert ours.shape == (5, 10, 10) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, atol=1e-5 * max(1.0, float(np.abs(ref).max())), rtol=1e-5)
    assert np.abs(GradCAM(relu=False).explain(model, images, targets)).max() > 0


def test_closed_form_for_global_average_pooling():
    """logit_c = sum_k W[k, c] mean(A^k) + b_c  =>  CAM = ReLU(sum_k W[k, c] / (h w) A^k)."""
    keras.utils.set_random_seed(2)
    inp = keras.Input((12, 12, 3))
    feats = keras.layers.Conv2D(4, 3, padding="same", name="features")(inp)
    dense = keras.layers.Dense(3, activation="softmax")
    out = dense(keras.layers.GlobalAveragePooling2D()(feats))
    km = keras.Model(inp, out)
    images = np.random.default_rng(3).random((3, 12, 12, 3)).astype(np.float32)
    a = keras.Model(inp, feats)(images).numpy()
    kernel = dense.get_weights()[0]
    targets = np.array([2, 0, 1])
    expected = np.maximum(0, np.einsum("nhwk,kn->nhw", a, kernel[:, targets] / (12 * 12)))
    ours = GradCAM().explain(km, images, targets)  # a plain keras.Model is accepted
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_batched_equals_one_by_one_and_traces_once(small):
    model, images = small
    targets = np.array([2, 2, 0, 1, 1])
    g = GradCAM()
    batched = g.explain(model, images, targets)
    singles = np.concatenate([g.explain(model, images[i : i + 1], targets[i : i + 1]) for i in range(5)])
    g.explain(model, images[:3], targets[:3])
    np.testing.assert_allclose(batched, singles, atol=1e-6)
    ((_, fn),) = g._fn_cache.values()
    assert fn.experimental_get_tracing_count() == 1


def test_other_layer(small):
    model, images = small
    targets = np.zeros(5, int)
    maps = GradCAM(layer="conv1").explain(model, images, targets)
    ref = independent_gradcam(model.keras, "conv1", images, targets)
    assert maps.shape == (5, 20, 20)
    np.testing.assert_allclose(maps, ref, atol=1e-5 * max(1.0, float(np.abs(ref).max())), rtol=1e-5)
    with pytest.raises(Exception, match="conv9"):
        GradCAM(layer="conv9").explain(model, images, targets)


def test_nested_backbone_model():
    keras.utils.set_random_seed(4)
    b_in = keras.Input((16, 16, 3))
    b_out = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="last_conv")(b_in)
    backbone = keras.Model(b_in, b_out, name="backbone")
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Flatten()(keras.layers.MaxPooling2D(2)(backbone(inp)))
    out = keras.layers.Dense(3, activation="softmax")(x)
    km = keras.Model(inp, out)
    images = np.random.default_rng(5).random((3, 16, 16, 3)).astype(np.float32)
    targets = np.array([0, 1, 2])
    by_name = GradCAM().explain(bench.KerasModel(km, feature_layer="backbone"), images, targets)
    inner = GradCAM().explain(bench.KerasModel(km, feature_layer="backbone/last_conv"), images, targets)
    assert by_name.shape == (3, 8, 8)
    np.testing.assert_allclose(by_name, inner, atol=1e-6)
    # independent: features from the backbone, head applied on top
    a = backbone(images).numpy()
    a_t = tf.convert_to_tensor(a)
    head = km.layers[2:]
    ref = []
    for i in range(3):
        ai = a_t[i : i + 1]
        with tf.GradientTape() as tape:
            tape.watch(ai)
            h = head[0](ai)
            h = head[1](h)
            y = (tf.matmul(h, head[2].kernel) + head[2].bias)[0, targets[i]]
        g = tape.gradient(y, ai)
        w = tf.reduce_mean(g, axis=(1, 2))
        ref.append(tf.nn.relu(tf.reduce_sum(ai * w[:, None, None, :], -1)).numpy()[0])
    np.testing.assert_allclose(by_name, np.stack(ref), atol=1e-5)


def test_bad_targets(small):
    model, images = small
    with pytest.raises(ValueError, match="targets"):
        GradCAM().explain(model, images, np.array([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match="targets"):
        GradCAM().explain(model, images, np.array([0, 1]))


def _has_model(name: str) -> bool:
    try:
        bench.registry().get("model", name).spec.load_factory()
        return True
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.skipif(not _has_model("vgg16"), reason="vgg16 model plugin not available")
def test_real_vgg16_head_matches_independent_tape():
    model = bench.create("model", "vgg16", weights="none", input_shape=(299, 299, 3), num_classes=4)
    images = np.random.default_rng(6).random((2, 299, 299, 3)).astype(np.float32)
    targets = np.array([1, 3])
    ours_signed = GradCAM(relu=False).explain(model, images, targets)
    ours = GradCAM().explain(model, images, targets)
    ref_signed = independent_gradcam(model.keras, model.feature_layer, images, targets, relu=False)
    assert ours.shape == (2, 9, 9)
    scale = max(1.0, float(np.abs(ref_signed).max()))
    assert np.abs(ref_signed).max() > 0
    np.testing.assert_allclose(ours_signed, ref_signed, atol=1e-5 * scale, rtol=1e-5)
    np.testing.assert_allclose(ours, np.maximum(ref_signed, 0), atol=1e-5 * scale, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not _has_model("densenet201"), reason="densenet201 model plugin not available")
def test_densenet201_transfer_model_runs():
    model = bench.create("model", "densenet201", weights="none", input_shape=(128, 128, 3), num_classes=4)
    images = np.random.default_rng(7).random((2, 128, 128, 3)).astype(np.float32)
    maps = GradCAM(relu=False).explain(model, images, np.array([0, 2]))
    fmap = model.features_and_logits(images[:1])[0]
    assert maps.shape == (2, *fmap.shape[1:3])
    assert np.isfinite(maps).all() and np.abs(maps).max() > 0


def test_plain_keras_model_traces_once_across_calls(small):
    model, images = small
    g = GradCAM()
    for _ in range(3):
        g.explain(model.keras, images[:2], np.array([0, 1]))  # wrapped afresh every call
    ((_, fn),) = g._fn_cache.values()
    assert fn.experimental_get_tracing_count() == 1
