"""The benchmark's headline, on a case whose answer is known on any machine.

A trained model differs in its last digits between CPUs (kernels, rounding), so a
claim such as "Grad-CAM beats random" on one small training run flips between
machines. Here the model is *constructed*, not learnt: every weight is fixed and
non-trainable, and it reads only one block of the image (one cell of the region
grid). The dataset's images are gray (R = G = B exactly); the model's class-0 score
falls with the energy of the channel differences R - G and G - B inside the block,
which is exactly 0 on every clean image and about 2 sigma^2 where the perturbation
added independent noise to each channel. Noise in the block destroys its
confidence; noise anywhere else changes nothing. An explainer that points at the block (the oracle) must then score a
MoRF AOPC near ``f(x) * L / (L + 1)``, its inverse (the anti-oracle) near
``f(x) / (L + 1)``, and a random order in between: margins of tenths, where machine
noise is below 1e-5.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import bench
from bench import pipeline as runner
from bench.models import KerasModel

IMAGE = 48
GRID = 6
CELL = IMAGE // GRID
#: the block the model reads: grid cell (row 2, col 3)
BLOCK = (2 * CELL, 3 * CELL)


class BlockReader(KerasModel):
    """Class-0 logit = 5 - 1000 * mean((R - G)^2, (G - B)^2) over one grid cell; other logits 0."""

    frozen_backbone = False

    def __init__(self, *, input_shape=(IMAGE, IMAGE, 3), num_classes=4):
        self._input_shape = tuple(input_shape)
        self._num_classes = int(num_classes)
        super().__init__(None, name="block-reader")

    def get_params(self):
        return {"input_shape": list(self._input_shape), "num_classes": self._num_classes}

    def _build_keras(self):
        import keras

        h, w, _ = self._input_shape
        top, left = BLOCK
        inputs = keras.Input(shape=self._input_shape, name="image")
        crop = keras.layers.Cropping2D(((top, h - top - CELL), (left, w - left - CELL)), name="block")(inputs)
        diff = keras.layers.Conv2D(2, 1, use_bias=False, trainable=False, name="features")
        x = diff(crop)
        energy = keras.layers.GlobalAveragePooling2D(name="energy")(keras.layers.Multiply()([x, x]))
        head = keras.layers.Dense(self._num_classes, trainable=False, name="logits")
        probs = keras.layers.Softmax(name="probabilities")(head(energy))
        model = keras.Model(inputs, probs, name="block_reader")
        rgb_to_diffs = np.array([[1, 0], [-1, 1], [0, -1]], np.float32)  # (R-G, G-B)
        diff.set_weights([rgb_to_diffs[None, None]])
        dense = np.zeros((2, self._num_classes), np.float32)
        dense[:, 0] = -500.0  # -1000 x the mean of the two channels' energies
        bias = np.zeros(self._num_classes, np.float32)
        bias[0] = 5.0
        head.set_weights([dense, bias])
        return model


def block_map(n: int, *, inverse: bool) -> np.ndarray:
    m = np.zeros((n, IMAGE, IMAGE), np.float32)
    top, left = BLOCK
    m[:, top:top + CELL, left:left + CELL] = 1.0
    return 1.0 - m if inverse else m


class Oracle:
    """Relevance 1 on the block the model reads (``inverse``: everywhere else)."""

    def __init__(self, *, inverse: bool = False):
        self.inverse = inverse

    def get_params(self):
        return {"inverse": self.inverse}

    def explain(self, model, images, targets):
        return block_map(len(images), inverse=self.inverse)


class KnownAnswerPlugin:
    @bench.hookimpl
    def bench_register_models(self):
        return [bench.ModelSpec(name="t-block-reader", factory=BlockReader)]

    @bench.hookimpl
    def bench_register_explainers(self):
        return [
            bench.ExplainerSpec(name="t-oracle", factory=Oracle),
            bench.ExplainerSpec(name="t-anti-oracle", factory=lambda: Oracle(inverse=True)),
        ]


pytestmark = pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")


@pytest.fixture(scope="module")
def known_answer_run(tmp_path_factory):
    bench.register_plugin(KnownAnswerPlugin(), name="known-answer-test-plugin")
    try:
        out = tmp_path_factory.mktemp("known-answer")
        cfg = {
            "preset": "demo",
            "run": {"out": str(out)},
            "dataset": {"name": "synthetic-cxr", "params": {"image_size": IMAGE, "per_class": 100}},
            "models": {"names": ["t-block-reader"]},
            "training": {"epochs": 1, "batch_size": 32},
            "explainers": {"names": ["t-oracle", "random", "t-anti-oracle"]},
            "perturbations": {"names": ["gaussian-noise"]},
            "aopc": {"grid": GRID, "max_images": 12, "bootstrap": 500},
            "metrics": {"names": ["aopc", "lerf-aopc", "abpc"]},
        }
        runner.clear_memo()
        result = bench.run(json.loads(json.dumps(cfg)), quiet=True, leaderboard=False)
        yield result
    finally:
        bench.unregister_plugin("known-answer-test-plugin")
        runner.clear_memo()


def _cells(result):
    assert result.ok, [c.error for c in result.failed]
    return {c.explainer: c for c in result.cells}


def _arrays(result, cell):
    with np.load(result.run_dir / cell.curves_file, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_the_constructed_model_is_confident_and_only_the_block_matters(known_answer_run):
    cells = _cells(known_answer_run)
    oracle = _arrays(known_answer_run, cells["t-oracle"])
    curves = oracle["morf_curves"]  # (n, L + 1): f(x^(0)) .. f(x^(L))
    assert curves.shape[1] == GRID * GRID + 1
    assert curves[:, 0].min() > 0.95  # clean images: class 0, confidently
    assert curves[:, 1:].max() < 0.05  # the block perturbed first: confidence gone at step 1
    anti = _arrays(known_answer_run, cells["t-anti-oracle"])["morf_curves"]
    # noise everywhere but the block: nothing moves until the last step
    steady = anti[:, : GRID * GRID]
    np.testing.assert_allclose(steady, np.broadcast_to(anti[:, :1], steady.shape), atol=1e-4)
    assert anti[:, -1].max() < 0.05


def test_oracle_beats_random_beats_anti_oracle_by_margins_far_above_machine_noise(known_answer_run):
    from bench.stats import paired_comparison

    cells = _cells(known_answer_run)
    aopc = {name: c.metrics["aopc"].value for name, c in cells.items()}
    L = GRID * GRID
    f0 = _arrays(known_answer_run, cells["t-oracle"])["morf_curves"][:, 0].mean()
    # the known answers, to within what the last step's residual confidence can move them
    assert aopc["t-oracle"] == pytest.approx(f0 * L / (L + 1), abs=0.03)
    assert aopc["t-anti-oracle"] == pytest.approx(f0 / (L + 1), abs=0.03)
    assert aopc["t-oracle"] - aopc["random"] > 0.1
    assert aopc["random"] - aopc["t-anti-oracle"] > 0.1
    per_image = {name: _arrays(known_answer_run, c)["morf_per_image"] for name, c in cells.items()}
    ids = {name: _arrays(known_answer_run, c)["ids"].tolist() for name, c in cells.items()}
    assert ids["t-oracle"] == ids["random"] == ids["t-anti-oracle"]  # same images: paired
    for better, worse in (("t-oracle", "random"), ("random", "t-anti-oracle")):
        cmp = paired_comparison(per_image[better], per_image[worse])
        assert cmp["ci"][0] > 0.05, (better, worse, cmp)


def test_abpc_and_lerf_agree_with_the_construction(known_answer_run):
    cells = _cells(known_answer_run)
    # LeRF removes the least relevant first: the oracle's block goes last, the anti-oracle's first
    assert cells["t-oracle"].metrics["lerf-aopc"].value < 0.1
    assert cells["t-anti-oracle"].metrics["lerf-aopc"].value > 0.6
    assert cells["t-oracle"].metrics["abpc"].ci[0] > 0.5
    assert cells["t-anti-oracle"].metrics["abpc"].ci[1] < -0.5
