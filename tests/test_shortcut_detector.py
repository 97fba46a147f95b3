"""The shortcut detector, on a case whose answer is known on any machine (DeGrave et al. 2021).

With ``shortcut=1.0`` synthetic-cxr burns a class tag ("CV", "LO", "NM", "VP", a 3x5 bitmap
font) into the top-right corner, outside the body: the tag alone identifies the class. Two
*constructed* models (every weight fixed, like ``test_known_answer.BlockReader``) see the
same tagged test images:

- the marker reader: four zero-mean matched filters, one per tag (cut out of one training
  image of each class at the box the dataset records), over the whole image (ReLU above 0.75
  of a perfect match), then the best match per class. It classifies by the tag alone, and only
  the tag matches its filters;
- the lung reader: the image's intensity inside two fixed blocks that lie inside the lung
  mask of every image of this dataset, averaged, then ordinal bins of that mean. It reads
  nothing outside the lungs.

Grad-CAM over each model's feature map (64x64, so no resize) must then put the marker
reader's relevance outside the lungs (lung relevance ~0) and the lung reader's inside
(~1): a margin near 1, where machine noise is below 1e-6. The run goes through
``bench.run`` with both models registered in-process, so the metric is in the cell record.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import bench
from bench import pipeline as runner
from bench.models import KerasModel

IMAGE = 64
PER_CLASS = 100
#: (row0, row1, col0, col1): inside the lung mask of all 400 images of synthetic-cxr(64 px, 100 per class)
LUNG_BLOCKS = ((26, 40, 16, 24), (20, 30, 42, 48))
DATASET = {"image_size": IMAGE, "per_class": PER_CLASS, "shortcut": 1.0}


def lung_gate(shape=(IMAGE, IMAGE)):
    gate = np.zeros(shape, bool)
    for r0, r1, c0, c1 in LUNG_BLOCKS:
        gate[r0:r1, c0:c1] = True
    return gate


class MarkerReader(KerasModel):
    """Class c's logit = 50 x max over the image of ReLU(match of tag c - 0.75); reads nothing else."""

    frozen_backbone = False

    def __init__(self, *, input_shape=(IMAGE, IMAGE, 3), num_classes=4, tags=()):
        self._input_shape = tuple(input_shape)
        self._num_classes = int(num_classes)
        self.tags = [[[int(b) for b in row] for row in tag] for tag in tags]  # per class: the tag's bits
        super().__init__(None, name="marker-reader", feature_layer="matches")

    def get_params(self):
        return {"input_shape": list(self._input_shape), "num_classes": self._num_classes, "tags": self.tags}

    def _build_keras(self):
        import keras

        inputs = keras.Input(shape=self._input_shape, name="image")
        k = len(self.tags)
        shape = np.asarray(self.tags[0]).shape
        templates = keras.layers.Conv2D(k, shape, padding="same", trainable=False, name="templates")
        matches = keras.layers.Activation("relu", name="matches")(templates(inputs))
        best = keras.layers.GlobalMaxPooling2D(name="best")(matches)
        head = keras.layers.Dense(self._num_classes, trainable=False, name="logits")
        probs = keras.layers.Softmax(name="probabilities")(head(best))
        model = keras.Model(inputs, probs, name="marker_reader")
        kernel = np.zeros((*shape, 3, k), np.float32)
        for c, tag in enumerate(self.tags):
            bits = np.asarray(tag, bool)
            # zero-mean, 1 on a perfect bright-on-black match; the images are gray: the red channel is enough
            kernel[:, :, 0, c] = np.where(bits, 1.0 / bits.sum(), -1.0 / (~bits).sum())
        templates.set_weights([kernel, np.full(k, -0.75, np.float32)])
        head.set_weights([50.0 * np.eye(k, self._num_classes, dtype=np.float32),
                          np.zeros(self._num_classes, np.float32)])
        return model


class LungReader(KerasModel):
    """Reads the mean intensity s inside :data:`LUNG_BLOCKS` only; class = the bin of s among ``thresholds``.

    Bins in the order Normal < COVID < Lung_Opacity < Viral Pneumonia (the order of the classes'
    mean lung intensity on the training split). Every class's logit rises with s, so Grad-CAM's
    map for any class is positive exactly where the blocks are bright.
    """

    frozen_backbone = False
    bin_order = (2, 0, 1, 3)

    def __init__(self, *, input_shape=(IMAGE, IMAGE, 3), num_classes=4, thresholds=(0.2, 0.23, 0.28)):
        self._input_shape = tuple(input_shape)
        self._num_classes = int(num_classes)
        self.thresholds = [float(t) for t in thresholds]
        super().__init__(None, name="lung-reader", feature_layer="lungs")

    def get_params(self):
        return {"input_shape": list(self._input_shape), "num_classes": self._num_classes,
                "thresholds": self.thresholds}

    def _build_keras(self):
        import keras

        h, w, _ = self._input_shape
        inputs = keras.Input(shape=self._input_shape, name="image")
        gray = keras.layers.Conv2D(1, 1, use_bias=False, trainable=False, name="intensity")
        x = gray(inputs)
        parts = []
        for j, (r0, r1, c0, c1) in enumerate(LUNG_BLOCKS):  # keep the blocks, zero elsewhere
            crop = keras.layers.Cropping2D(((r0, h - r1), (c0, w - c1)), name=f"crop{j}")(x)
            parts.append(keras.layers.ZeroPadding2D(((r0, h - r1), (c0, w - c1)), name=f"pad{j}")(crop))
        lungs = keras.layers.Add(name="lungs")(parts)
        mean = keras.layers.GlobalAveragePooling2D(name="mean")(lungs)
        head = keras.layers.Dense(self._num_classes, trainable=False, name="logits")
        probs = keras.layers.Softmax(name="probabilities")(head(mean))
        model = keras.Model(inputs, probs, name="lung_reader")
        gray.set_weights([np.array([1, 0, 0], np.float32).reshape(1, 1, 3, 1)])
        area = lung_gate((h, w)).mean()  # GAP = area x s
        slope, bias, cum = 100.0, np.zeros(self._num_classes, np.float32), 0.0
        kernel = np.zeros((1, self._num_classes), np.float32)
        for j, c in enumerate(self.bin_order):  # logit_j - logit_(j-1) = slope (s - threshold_j)
            cum += self.thresholds[j - 1] if j else 0.0
            kernel[0, c] = slope * (j + 1) / area
            bias[c] = -slope * cum
        head.set_weights([kernel, bias])
        return model


class ShortcutPlugin:
    @bench.hookimpl
    def bench_register_models(self):
        return [bench.ModelSpec(name="t-marker-reader", factory=MarkerReader),
                bench.ModelSpec(name="t-lung-reader", factory=LungReader)]


pytestmark = pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")


@pytest.fixture(scope="module")
def splits():
    return bench.create("dataset", "synthetic-cxr", **DATASET).load()


@pytest.fixture(scope="module")
def construction(splits):
    """The models' parameters, from the training split: the tags' bits and the lung reader's bins."""
    # the marker reader's filters: each class's tag, cut out of its first training image
    boxes = splits.metadata["marker_boxes"]
    tags = []
    for c in range(len(splits.class_names)):
        i = int(np.flatnonzero(splits.train.labels == c)[0])
        r0, c0, r1, c1 = boxes[str(splits.train.ids[i])]
        tags.append((splits.train.images[i, r0:r1, c0:c1] > 200).astype(int).tolist())
    assert len({json.dumps(t) for t in tags}) == 4 and np.asarray(tags).shape == (4, 5, 7)
    # the lung reader's bins: quartiles of the training images' mean intensity inside the blocks
    s = splits.train.images[:, lung_gate()].mean(axis=1) / 255.0
    return {"t-marker-reader": {"tags": tags},
            "t-lung-reader": {"thresholds": [float(t) for t in np.quantile(s, [0.25, 0.5, 0.75])]}}


@pytest.fixture(scope="module")
def shortcut_run(construction, tmp_path_factory):
    bench.register_plugin(ShortcutPlugin(), name="shortcut-test-plugin")
    try:
        cfg = {
            "preset": "demo",
            "run": {"out": str(tmp_path_factory.mktemp("shortcut"))},
            "dataset": {"name": "synthetic-cxr", "params": DATASET},
            "models": {"names": ["t-marker-reader", "t-lung-reader"],
                       "params": construction},
            "training": {"epochs": 1, "batch_size": 64},
            "explainers": {"names": ["gradcam"]},
            "perturbations": {"names": ["gaussian-noise"]},
            "aopc": {"grid": 8, "max_images": 0, "bootstrap": 500},  # 0: every correct image
            "metrics": {"names": ["lung-relevance"]},
        }
        runner.clear_memo()
        yield bench.run(json.loads(json.dumps(cfg)), quiet=True, leaderboard=False)
    finally:
        bench.unregister_plugin("shortcut-test-plugin")
        runner.clear_memo()


def test_the_lung_blocks_lie_inside_every_lung_mask(splits):
    gate = lung_gate()
    for split in (splits.train, splits.val, splits.test):
        assert split.masks["lung"][:, gate].all()
    assert len(splits.metadata["marker_boxes"]) == 4 * PER_CLASS  # shortcut=1.0: every image is tagged


def test_each_model_reads_only_what_it_is_built_to_read(splits, construction):
    """The same test images without the tags (shortcut=0: every other pixel is bit-identical):
    the marker reader sees nothing (all logits equal), the lung reader does not change at all."""
    from bench.data import to_model_input

    plain = bench.create("dataset", "synthetic-cxr", **{**DATASET, "shortcut": 0.0}).load().test
    assert (plain.ids == splits.test.ids).all()
    tagged, untagged = to_model_input(splits.test.images), to_model_input(plain.images)
    marker = MarkerReader(**construction["t-marker-reader"])
    assert (marker.keras.predict(tagged, verbose=0).argmax(axis=1) == splits.test.labels).all()
    np.testing.assert_allclose(marker.keras.predict(untagged, verbose=0), 0.25, atol=1e-6)
    lung = LungReader(**construction["t-lung-reader"])
    np.testing.assert_array_equal(lung.keras.predict(tagged, verbose=0), lung.keras.predict(untagged, verbose=0))


def test_gradcam_of_a_marker_reader_has_far_lower_lung_relevance_than_a_lung_reader(shortcut_run, splits):
    result = shortcut_run
    assert result.ok, [c.error for c in result.failed]
    cells = {c.model: c for c in result.cells}
    marker, lung = cells["t-marker-reader"], cells["t-lung-reader"]
    # the marker reader classifies every tagged test image by its tag alone
    assert marker.n_images == len(splits.test.ids) == 40
    assert lung.n_images >= 5  # the lung reader is a weak classifier; its correct images are explained
    m, lr = marker.metrics["lung-relevance"], lung.metrics["lung-relevance"]
    assert m.ok and lr.ok and m.family == "localisation"
    assert (m.n, m.n_excluded) == (marker.n_images, 0)  # every map has positive relevance
    assert (lr.n, lr.n_excluded) == (lung.n_images, 0)
    # per image, from the run's stored values: the marker's maps sit outside the lungs, the lung reader's inside
    mv = np.load(result.run_dir / m.file, allow_pickle=False)[m.key]
    lv = np.load(result.run_dir / lr.file, allow_pickle=False)[lr.key]
    assert mv.max() < 0.01 and lv.min() > 0.99
    chance = np.load(result.run_dir / m.file, allow_pickle=False)[m.key.rsplit("/", 1)[0] + "/chance"]
    assert (mv < chance - 0.1).all()  # far below the lungs' area share (chance level)
    margin = lr.value - m.value
    print(f"lung relevance: marker reader {m.value:.6f} [{m.ci[0]:.6f}, {m.ci[1]:.6f}] (n={m.n}), "
          f"lung reader {lr.value:.6f} [{lr.ci[0]:.6f}, {lr.ci[1]:.6f}] (n={lr.n}); margin {margin:.6f}")
    assert margin > 0.9 and lr.ci[0] - m.ci[1] > 0.9  # machine noise is below 1e-6
