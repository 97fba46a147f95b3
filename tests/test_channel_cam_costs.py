"""Score-CAM's and Ablation-CAM's ``passes_per_map`` against the passes they really ran.

A bench model that counts, at run time inside the traced graphs, the rows (images or feature
maps) through the whole model and through the layers after the feature layer (the suffix);
``passes_per_map`` must be those counts per map, suffix rows weighted by the suffix's share of
the model's multiply-adds, which is checked against a hand count of the layers.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import bench_cams.channel_cams as channel_cams  # noqa: E402
from bench_cams.channel_cams import AblationCAM, ScoreCAM, multiply_adds, suffix_share  # noqa: E402

import bench  # noqa: E402

N, SIZE = 3, 16
TARGETS = np.array([0, 2, 1])
# hand count of the model below (multiply-adds per image)
CONV1 = 16 * 16 * 4 * (3 * 3 * 3)  # 16x16x4 outputs, a 3x3x3 kernel each
FEATURES = 8 * 8 * 6 * (3 * 3 * 4)  # 8x8x6 outputs (stride 2), a 3x3x4 kernel each
HIDDEN = (4 * 4 * 6) * 8  # Flatten(MaxPool(2)) = 96 -> Dense(8)
LOGITS = 8 * 3  # Dense(3) before its softmax
MODEL_MACS = CONV1 + FEATURES + HIDDEN + LOGITS
SUFFIX_MACS = HIDDEN + LOGITS
CHANNELS = 6


def keras_model(seed: int = 11):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    x = keras.layers.Conv2D(CHANNELS, 3, strides=2, padding="same", activation="relu", name="features")(x)
    x = keras.layers.Flatten()(keras.layers.MaxPooling2D(2)(x))
    x = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="out")(x))


class Counting(bench.KerasModel):
    """Counts the rows and calls through the whole model and through the suffix as they run."""

    def __init__(self, km, **kwargs):
        super().__init__(km, **kwargs)
        self.model_rows = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.suffix_rows = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.suffix_calls = tf.Variable(0, dtype=tf.int64, trainable=False)

    def features_and_logits(self, images, training=False):
        self.model_rows.assign_add(tf.cast(tf.shape(images)[0], tf.int64))
        return super().features_and_logits(images, training=training)

    def logits_from_features(self, features, training=False):
        self.suffix_rows.assign_add(tf.cast(tf.shape(features)[0], tf.int64))
        self.suffix_calls.assign_add(1)
        return super().logits_from_features(features, training=training)

    def counts(self):
        return int(self.model_rows.numpy()), int(self.suffix_rows.numpy()), int(self.suffix_calls.numpy())


@pytest.fixture
def counting():
    """A fresh Keras model per test (the trace memo is per Keras model: nothing shared)."""
    return Counting(keras_model(), feature_layer="features")


@pytest.fixture
def images():
    return np.random.default_rng(0).random((N, SIZE, SIZE, 3)).astype(np.float32)


def _traced_graph(fn, shape):
    return tf.function(fn).get_concrete_function(tf.TensorSpec((1, *shape), tf.float32)).graph


# ---- counting multiply-adds --------------------------------------------------------------
def test_multiply_adds_of_the_model_and_its_suffix_match_a_hand_count(counting):
    assert multiply_adds(_traced_graph(counting.features_and_logits, (SIZE, SIZE, 3))) == MODEL_MACS
    assert multiply_adds(_traced_graph(counting.logits_from_features, (8, 8, CHANNELS))) == SUFFIX_MACS
    info = suffix_share(counting, (SIZE, SIZE, 3), (8, 8, CHANNELS))
    assert info["measured"] and info["suffix_share"] == pytest.approx(SUFFIX_MACS / MODEL_MACS)
    assert (info["model_multiply_adds"], info["suffix_multiply_adds"]) == (MODEL_MACS, SUFFIX_MACS)


def test_multiply_adds_of_depthwise_transposed_and_einsum_layers():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(inp)  # 8x8x6, 3x3 each
    x = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same")(x)  # 8x8x6 in, 3x3x4 out each
    x = keras.layers.EinsumDense("ab,bc->ac", output_shape=5)(keras.layers.Flatten()(x))
    km = keras.Model(inp, x)
    want = 8 * 8 * 6 * 9 + 8 * 8 * 6 * (9 * 4) + (16 * 16 * 4) * 5
    assert multiply_adds(_traced_graph(lambda t: km(t), (8, 8, 3))) == want

    a, b = tf.zeros((2, 3, 4)), tf.zeros((2, 4, 5))
    graph = tf.function(lambda: (tf.raw_ops.Einsum(inputs=[a, b], equation="nij,njk->nik"),
                                 tf.linalg.matmul(a, b))).get_concrete_function().graph
    assert multiply_adds(graph) == 2 * (2 * 3 * 4 * 5)


def test_multiply_adds_refuses_what_it_cannot_see_into():
    inner = tf.function(lambda t: tf.linalg.matmul(t, t))
    assert multiply_adds(_traced_graph(lambda t: inner(t), (4, 4))) is None  # a function call
    unknown = tf.function(lambda t: tf.linalg.matmul(t, t, transpose_a=True)).get_concrete_function(
        tf.TensorSpec((None, None), tf.float32)).graph
    assert multiply_adds(unknown) is None


# ---- Ablation-CAM ----------------------------------------------------------------------------
@pytest.mark.parametrize("max_channels, batch_size", [(None, 4), (None, 128), (2, 4)])
def test_ablationcam_passes_per_map_is_what_ran(counting, images, max_channels, batch_size):
    explainer = AblationCAM(max_channels=max_channels, batch_size=batch_size)
    assert explainer.passes_per_map() is None and explainer.cost_info_ is None  # depends on the model
    explainer.explain(counting, images, TARGETS)
    model_rows, suffix_rows, suffix_calls = counting.counts()
    k = CHANNELS if max_channels is None else max_channels
    # one forward pass per image, then one suffix pass per (image, ablated channel), in batches
    assert model_rows == N and suffix_rows == N * k
    assert suffix_calls == -(-N * k // batch_size)
    share = SUFFIX_MACS / MODEL_MACS
    assert explainer.passes_per_map() == pytest.approx((model_rows + suffix_rows * share) / N)
    info = explainer.cost_info_
    assert info["measured"] and info["channels"] == k and info["images"] == N
    assert (info["suffix_passes"], info["suffix_batches"]) == (suffix_rows, suffix_calls)
    # the recorded cost is what the run records (the pipeline reads passes_per_map after the maps)
    from bench.pipeline.stages import passes_per_map_of

    assert passes_per_map_of(explainer) == pytest.approx(1 + k * share)


def test_ablationcam_counts_its_last_call(counting, images):
    explainer = AblationCAM()
    explainer.explain(counting, images, TARGETS)
    first = explainer.passes_per_map()
    explainer.explain(counting, images[:1], TARGETS[:1])  # per map: the same
    assert explainer.passes_per_map() == pytest.approx(first)
    AblationCAM(max_channels=1).explain(counting, images, TARGETS)  # another instance: its own count
    assert explainer.passes_per_map() == pytest.approx(first)


def test_ablationcam_measures_the_share_once_per_model_layer_and_size(counting, images, monkeypatch):
    calls = []
    real = channel_cams.suffix_share

    def spy(*args):
        calls.append(args[1:])
        return real(*args)

    monkeypatch.setattr(channel_cams, "suffix_share", spy)
    AblationCAM().explain(counting, images, TARGETS)
    fresh = bench.KerasModel(counting.keras, feature_layer="features")  # another wrapper of the model
    AblationCAM(max_channels=3).explain(fresh, images, TARGETS)  # ... and other parameters
    assert calls == [((SIZE, SIZE, 3), (8, 8, CHANNELS))]
    AblationCAM(layer="conv1").explain(counting, images, TARGETS)  # another layer: measured anew
    assert len(calls) == 2 and calls[1] == ((SIZE, SIZE, 3), (SIZE, SIZE, 4))


def test_ablationcam_counts_a_suffix_pass_as_a_full_pass_when_it_cannot_count(counting, images, monkeypatch):
    monkeypatch.setattr(channel_cams, "multiply_adds", lambda graph: None)
    explainer = AblationCAM(max_channels=4)
    explainer.explain(counting, images, TARGETS)
    assert explainer.passes_per_map() == 1 + 4  # an upper bound
    info = explainer.cost_info_
    assert not info["measured"] and info["suffix_share"] == 1.0 and "could not be counted" in info["reason"]


def test_ablationcam_inside_a_nested_backbone_counts_the_rest_of_the_backbone():
    """Feature layer inside a nested sub-model: the suffix is its last conv, then the outer head."""
    keras.utils.set_random_seed(12)
    b_in = keras.Input((SIZE, SIZE, 3))
    b = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv_a")(b_in)
    b = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="last_conv")(b)
    backbone = keras.Model(b_in, b, name="backbone")
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Flatten()(keras.layers.MaxPooling2D(2)(backbone(inp)))
    x = keras.layers.Dense(6, activation="relu")(x)
    km = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    model = Counting(km, feature_layer="backbone/conv_a")
    images = np.random.default_rng(1).random((N, SIZE, SIZE, 3)).astype(np.float32)
    explainer = AblationCAM(batch_size=8)
    explainer.explain(model, images, TARGETS)
    model_rows, suffix_rows, suffix_calls = model.counts()
    assert (model_rows, suffix_rows, suffix_calls) == (N, N * 5, -(-N * 5 // 8))
    conv_a, last_conv = 16 * 16 * 5 * (9 * 3), 8 * 8 * 4 * (9 * 5)
    head = (4 * 4 * 4) * 6 + 6 * 3
    share = (last_conv + head) / (conv_a + last_conv + head)
    assert explainer.passes_per_map() == pytest.approx((model_rows + suffix_rows * share) / N)


# ---- Score-CAM (every scored channel is a pass of the whole model) ---------------------------
@pytest.mark.parametrize("max_channels, batch_size", [(None, 4), (2, 32)])
def test_scorecam_passes_per_map_is_what_ran(counting, images, max_channels, batch_size):
    explainer = ScoreCAM(max_channels=max_channels, batch_size=batch_size)
    explainer.explain(counting, images, TARGETS)
    model_rows, suffix_rows, _ = counting.counts()
    k = CHANNELS if max_channels is None else max_channels
    # the images and the baseline image, then one masked image per (image, scored channel)
    assert model_rows == N + 1 + N * k and suffix_rows == 0
    assert explainer.passes_per_map() == pytest.approx(model_rows / N)
