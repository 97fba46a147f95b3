"""Built-in models: exact parameter counts, shapes, logits/probabilities, preprocessing, nesting."""

from __future__ import annotations

import numpy as np
import pytest

import bench
from bench.models import KerasModel, ModelError

keras = pytest.importorskip("keras")


def _counts(kmodel) -> tuple[int, int]:
    trainable = sum(int(np.prod(w.shape)) for w in kmodel.trainable_weights)
    return int(kmodel.count_params()), trainable


@pytest.mark.parametrize(
    ("name", "total", "trainable", "channels"),
    [("vgg16", 14_846_084, 131_396, 512), ("densenet201", 18_813_828, 491_844, 1920)],
)
def test_transfer_model_matches_the_study(name, total, trainable, channels):
    m = bench.create("model", name, weights="none", input_shape=(299, 299, 3), num_classes=4)
    assert m.frozen_backbone is True
    assert _counts(m.keras) == (total, trainable)
    # the feature map Grad-CAM uses: the backbone output, 9x9 at 299
    assert tuple(m.keras.get_layer(m.feature_layer).output.shape[1:]) == (9, 9, channels)
    assert tuple(m.feature_extractor.output.shape[1:]) == (2, 2, channels)
    assert tuple(m.head.input.shape[1:]) == (2, 2, channels)
    assert tuple(m.keras.output.shape[1:]) == (4,)
    assert m.input_shape == (299, 299, 3) and m.num_classes == 4
    # flat graph: no nested sub-model, so gradients reach the feature map
    assert not any(isinstance(layer, keras.Model) for layer in m.keras.layers)
    assert m.weights_info()["source"] == "none"


@pytest.mark.parametrize(("name", "channels", "full"), [("vgg16", 512, True), ("densenet201", 1920, False)])
def test_transfer_model_outputs_and_gradients(name, channels, full):
    """Runtime checks at a small size (32x32, pool 1) to stay fast (DenseNet: gradients only)."""
    import tensorflow as tf

    m = bench.create(
        "model", name, weights="none", input_shape=(32, 32, 3), num_classes=4, pool_size=1
    )
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        feats, logits = m.features_and_logits(xt)
        score = tf.reduce_sum(logits[:, 1])
    grads = tape.gradient(score, feats)
    assert tuple(feats.shape) == (2, 1, 1, channels) and tuple(logits.shape) == (2, 4)
    assert grads is not None and tuple(grads.shape) == tuple(feats.shape)
    assert float(tf.reduce_sum(tf.abs(grads))) > 0
    if not full:
        return
    probs = m.predict_proba(x)
    assert probs.shape == (2, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(keras.ops.softmax(logits).numpy(), probs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(m.logits_keras(xt)), np.asarray(logits), atol=1e-4)
    # the trainer's split view equals the whole model (shared weights)
    head = np.asarray(m.head(m.feature_extractor(xt)))
    np.testing.assert_allclose(head, probs, atol=1e-5)


def test_constructor_does_no_work_and_records_params():
    from bench_keras_models.transfer import VGG16Transfer

    m = VGG16Transfer(weights="none", input_shape=(64, 64, 3), num_classes=3)
    assert m._keras is None  # nothing built yet
    assert m.get_params() == {
        "weights": "none", "input_shape": [64, 64, 3], "num_classes": 3,
        "dense_units": 64, "pool_size": 4, "feature_layer": None, "train_from": None,
        "head_norm": False, "standardize": False,
    }
    assert m._keras is None


def test_preprocessing_layers_match_keras_preprocess_input():
    from bench_keras_models.transfer import CaffePreprocess, TorchPreprocess

    x = np.random.default_rng(1).random((2, 8, 8, 3), dtype=np.float32)
    caffe = keras.applications.vgg16.preprocess_input(x * 255.0)
    torch = keras.applications.densenet.preprocess_input(x * 255.0)
    np.testing.assert_allclose(np.asarray(CaffePreprocess()(x)), caffe, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(np.asarray(TorchPreprocess()(x)), torch, rtol=1e-5, atol=1e-4)


def test_small_input_and_bad_params_fail_clearly():
    m = bench.create("model", "vgg16", weights="none", input_shape=(64, 64, 3))
    with pytest.raises(bench.ConfigError, match="too small.*128x128"):
        m.keras  # noqa: B018
    bad = bench.create("model", "densenet201", weights="sometimes", input_shape=(64, 64, 3))
    with pytest.raises(bench.WeightsError, match="sometimes"):
        bad.keras  # noqa: B018
    with pytest.raises(bench.ConfigError, match="no ImageNet"):
        bench.create("model", "simple-cnn", weights="imagenet").keras  # noqa: B018


def test_saved_transfer_model_loads_in_safe_mode(tmp_path):
    m = bench.create(
        "model", "vgg16", weights="none", input_shape=(32, 32, 3), num_classes=3, pool_size=1
    )
    x = np.random.default_rng(2).random((3, 32, 32, 3), dtype=np.float32)
    m.save(tmp_path / "m.keras")
    loaded = KerasModel.from_file(tmp_path / "m.keras", feature_layer="block5_pool")
    np.testing.assert_allclose(loaded.predict_proba(x), m.predict_proba(x), atol=1e-5)
    f1, l1 = loaded.features_and_logits(x)
    f2, l2 = m.features_and_logits(x)
    np.testing.assert_allclose(np.asarray(l1), np.asarray(l2), atol=1e-4)
    with pytest.raises(ModelError, match="does not exist"):
        KerasModel.from_file(tmp_path / "missing.keras")


def test_simple_cnn_shapes():
    m = bench.create("model", "simple-cnn", input_shape=(32, 32, 3), num_classes=3)
    assert m.frozen_backbone is False
    x = np.random.default_rng(3).random((4, 32, 32, 3), dtype=np.float32)
    feats, logits = m.features_and_logits(x)
    assert tuple(feats.shape) == (4, 4, 4, 64) and tuple(logits.shape) == (4, 3)  # 3 pools
    probs = m.predict_proba(x)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(keras.ops.softmax(logits).numpy(), probs, atol=1e-5)
    # uint8 input is scaled to [0, 1] by predict_proba
    u8 = (x[..., 0] * 255).astype(np.uint8)
    assert m.predict_proba(u8).shape == (4, 3)


def test_simple_cnn_standardises_each_image_and_pools_by_max():
    m = bench.create("model", "simple-cnn", input_shape=(32, 32, 3), num_classes=3)
    names = [layer.name for layer in m.keras.layers]
    assert "standardize" in names and "gmp" in names
    x = np.random.default_rng(4).random((2, 32, 32, 3), dtype=np.float32)
    # exposure (gain and offset) does not change the prediction
    np.testing.assert_allclose(m.predict_proba(x), m.predict_proba(0.5 * x + 0.2), atol=1e-5)
    plain = bench.create(
        "model", "simple-cnn", input_shape=(32, 32, 3), num_classes=3, standardize=False, pooling="avg"
    )
    plain_names = [layer.name for layer in plain.keras.layers]
    assert "standardize" not in plain_names and "gap" in plain_names
    with pytest.raises(bench.ConfigError, match="pooling"):
        bench.create("model", "simple-cnn", input_shape=(32, 32, 3), pooling="median").keras  # noqa: B018


def _nested_model():
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(2.0, offset=-1.0)(inp)
    sub_in = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(sub_in)
    h = keras.layers.Conv2D(6, 3, activation="relu", name="c2")(h)
    sub = keras.Model(sub_in, h, name="backbone")
    y = keras.layers.GlobalAveragePooling2D()(sub(x))
    y = keras.layers.Dense(3, activation="softmax", name="out")(y)
    return keras.Model(inp, y)


@pytest.mark.parametrize("feature_layer", ["c2", "backbone/c2", "backbone/c1"])
def test_feature_layer_inside_a_nested_submodel(feature_layer):
    import tensorflow as tf

    m = KerasModel(_nested_model(), feature_layer=feature_layer)
    x = tf.constant(np.random.default_rng(4).random((2, 32, 32, 3), dtype=np.float32))
    with tf.GradientTape() as tape:
        feats, logits = m.features_and_logits(x)
        score = tf.reduce_sum(logits[:, 0])
    grads = tape.gradient(score, feats)
    assert grads is not None and feats.shape[0] == 2 and len(feats.shape) == 4
    np.testing.assert_allclose(
        keras.ops.softmax(logits).numpy(), m.predict_proba(x.numpy()), atol=1e-5
    )


def test_nested_feature_layer_errors_name_the_layer():
    m = KerasModel(_nested_model(), feature_layer="backbone/c9")
    with pytest.raises(ModelError, match="'c9'.*did you mean"):
        m.features_and_logits(np.zeros((1, 32, 32, 3), np.float32))
    m = KerasModel(_nested_model(), feature_layer="nothing")
    with pytest.raises(ModelError, match="no layer 'nothing'"):
        m.features_and_logits(np.zeros((1, 32, 32, 3), np.float32))


@pytest.mark.parametrize("feature_layer", [None, "backbone"])
def test_nested_backbone_named_as_a_whole_or_by_default(feature_layer):
    model = KerasModel(_nested_model(), feature_layer=feature_layer)
    x = np.random.default_rng(5).random((2, 32, 32, 3), dtype=np.float32)
    feats, logits = model.features_and_logits(x)
    assert tuple(feats.shape) == (2, 28, 28, 6)
    np.testing.assert_allclose(keras.ops.softmax(logits).numpy(), model.predict_proba(x), atol=1e-5)


def test_random_backbone_is_the_same_in_every_build():
    """weights='none' must not depend on the global random state (runs are reproducible)."""
    def backbone_weights():
        keras.utils.set_random_seed(np.random.SeedSequence().entropy % 2**31)  # disturb global state
        m = bench.create("model", "vgg16", weights="none", input_shape=(32, 32, 3), num_classes=4, pool_size=1)
        return [np.asarray(w) for w in m.keras.get_layer("block1_conv1").get_weights()]

    a, b = backbone_weights(), backbone_weights()
    np.testing.assert_array_equal(a[0], b[0])


def test_backbone_layer_names_are_built_once_per_keras_version_and_remembered(tmp_path, monkeypatch):
    """Plan validation of feature_layer reads the backbone's layer names: built once (3 s for
    DenseNet201), then read from the per-user file; a corrupt file is rebuilt; the names are the
    live backbone's."""
    from bench_keras_models import transfer

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("BENCH_DIGEST_MEMO", raising=False)
    cls = type(bench.create("model", "vgg16", weights="none"))
    transfer._layer_names.cache_clear()
    live = cls.backbone_layer_names()
    assert "block5_conv3" in live and live[-1] == "block5_pool"
    path = transfer.layer_names_file(cls)
    assert path.is_file() and path.parent.parent == tmp_path / "bench"
    transfer._layer_names.cache_clear()
    path.write_text('["only_this"]')
    assert cls.backbone_layer_names() == ("only_this",)  # read, not rebuilt
    transfer._layer_names.cache_clear()
    path.write_text("{not json")
    assert cls.backbone_layer_names() == live  # rebuilt and rewritten

    class Edited(cls):  # the same backbone name, edited building code: its own file
        def _backbone(self, inputs):
            return cls._backbone(self, inputs)

    assert transfer.layer_names_file(Edited) != path and transfer.layer_names_file(Edited).parent == path.parent
    monkeypatch.setenv("BENCH_DIGEST_MEMO", "off")
    assert transfer.layer_names_file(cls) is None
    transfer._layer_names.cache_clear()
