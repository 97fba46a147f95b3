"""The built-in oracle controls, end to end, on a case whose answer is known on any machine.

``oracle`` (the lesion mask as the heatmap) and ``anti-oracle`` (its inverse), registered by
``bench_controls``, must rank a metric's power: oracle > random > anti-oracle. Here they run
through a whole ``bench.run`` on a *constructed* dataset and a *constructed* model (every weight
fixed by hand, nothing trained), so the answer is known:

* The images are gray (R = G = B exactly): a faint background (at most 0.2) and, on the lesion
  images, one bright disc (1.0), the lesion mask. The Normal images have no disc: an empty mask.
* The model gates every pixel by its brightness, ``g = ReLU(2 mean(RGB) - 1)`` (1 on the disc,
  0 on the background, even under the noise: the background would need a 5-sigma draw), and
  reads two numbers: the disc's area ``a = mean(g)`` and the gated energy of the channel
  differences ``e = mean(g ((R-G)^2 + (G-B)^2))``, which is 0 on a clean image and about
  ``4 sigma^2`` per noisy disc pixel. ``logit_lesion = 120 a - 6000 e - 5``, ``logit_normal =
  5 - 120 a``. A clean lesion image is "lesion" with p > 0.99, a Normal image "normal" with
  p > 0.99; noise on the disc destroys the lesion's confidence once about half the disc is
  noisy, noise anywhere else changes nothing.

So on the lesion images the oracle (disc regions first) must score a MoRF AOPC near 1, the
anti-oracle (disc regions last) near 0 and random in between: gaps of tenths, where machine
noise is below 1e-5. On the Normal images the oracles are undefined: their maps are constant,
so their order is the harness's seeded tie-break (the same for both) and every curve is flat.
Every comparison involving the oracles therefore uses the images whose mask is non-empty:
``aopc-lesion`` (bench_localisation) is the MoRF AOPC there, NaN on the Normal images (left out
and counted), as the localisation metrics are.
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
L = GRID * GRID
N_TEST_LESION, N_TEST_NORMAL = 24, 8
METRICS = ["aopc", "aopc-lesion", "pointing-game", "relevance-mass"]
EXPLAINERS = ["oracle", "random", "anti-oracle"]

pytestmark = pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")


# ---- the constructed dataset ----------------------------------------------------------------
def draw(n_lesion: int, n_normal: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 images (N, S, S), labels (0 lesion, 1 normal), bool lesion masks (N, S, S)."""
    rng = np.random.default_rng(seed)
    n = n_lesion + n_normal
    rows = np.arange(IMAGE)[:, None] + 0.5
    cols = np.arange(IMAGE)[None, :] + 0.5
    background = 0.05 + 0.15 * (rows / IMAGE) * np.ones((1, IMAGE))  # a faint gradient, at most 0.2
    images = np.empty((n, IMAGE, IMAGE), np.uint8)
    masks = np.zeros((n, IMAGE, IMAGE), bool)
    for i in range(n):
        img = background.copy()
        if i < n_lesion:
            r = rng.integers(7, 10)
            cy, cx = rng.uniform(r + 2, IMAGE - r - 2, size=2)
            masks[i] = (rows - cy) ** 2 + (cols - cx) ** 2 <= r * r
            img[masks[i]] = 1.0
        images[i] = np.round(img * 255).astype(np.uint8)
    labels = (np.arange(n) >= n_lesion).astype(np.int64)
    return images, labels, masks


class LesionDiscs:
    """Gray images, a bright disc on the lesion images (its mask), none on the Normal images."""

    def get_params(self):
        return {}

    def fingerprint(self):
        return "lesion-discs-v1"

    def load(self):
        from bench.data import DatasetSplits, Split

        def split(name, n_lesion, n_normal, seed):
            images, labels, masks = draw(n_lesion, n_normal, seed)
            ids = np.array([f"{name}-{i:03d}" for i in range(len(images))])
            return Split(images=images, labels=labels, ids=ids, masks={"lesion": masks})

        return DatasetSplits(name="lesion-discs", class_names=("lesion", "normal"),
                             train=split("train", 6, 6, 1), val=split("val", 2, 2, 2),
                             test=split("test", N_TEST_LESION, N_TEST_NORMAL, 3),
                             fingerprint=self.fingerprint())


# ---- the constructed model ------------------------------------------------------------------
def disc_reader() -> KerasModel:
    """The bench model: reads the bright pixels only, their area and the energy of their channel differences."""
    import keras

    inputs = keras.Input(shape=(IMAGE, IMAGE, 3), name="image")
    gate_layer = keras.layers.Conv2D(2, 1, activation="relu", trainable=False, name="gate")
    diff_layer = keras.layers.Conv2D(2, 1, use_bias=False, trainable=False, name="features")
    gate = gate_layer(inputs)  # ReLU(2 mean(RGB) - 1), twice (one per difference channel)
    diffs = diff_layer(inputs)  # (R - G, G - B)
    energy = keras.layers.Multiply(name="gated_energy")([diffs, diffs, gate])
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(
        keras.layers.Concatenate(name="parts")([energy, gate]))  # (e1, e2, a, a)
    head = keras.layers.Dense(2, trainable=False, name="logits")
    probs = keras.layers.Softmax(name="probabilities")(head(pooled))
    model = keras.Model(inputs, probs, name="disc_reader")
    gate_layer.set_weights([np.full((1, 1, 3, 2), 2 / 3, np.float32), np.full(2, -1.0, np.float32)])
    diff_layer.set_weights([np.array([[1, 0], [-1, 1], [0, -1]], np.float32)[None, None]])
    w = np.zeros((4, 2), np.float32)
    w[0:2, 0] = -6000.0  # e = e1 + e2
    w[2:4, 0] = 60.0  # 120 a, a counted twice
    w[2:4, 1] = -60.0
    head.set_weights([w, np.array([-5.0, 5.0], np.float32)])
    return KerasModel(model, feature_layer="features", name="disc-reader")


class KnownAnswerPlugin:
    @bench.hookimpl
    def bench_register_datasets(self):
        return [bench.DatasetSpec(name="t-lesion-discs", factory=LesionDiscs)]

    @bench.hookimpl
    def bench_register_models(self):
        return [bench.ModelSpec(name="t-disc-reader", factory=disc_reader)]


@pytest.fixture(scope="module")
def plugin():
    bench.register_plugin(KnownAnswerPlugin(), name="oracle-known-answer-test-plugin")
    yield
    bench.unregister_plugin("oracle-known-answer-test-plugin")


@pytest.fixture(scope="module")
def run(plugin, tmp_path_factory):
    cfg = {
        "preset": "demo",
        "run": {"out": str(tmp_path_factory.mktemp("oracle-known-answer"))},
        "dataset": {"name": "t-lesion-discs", "params": {}},
        "models": {"names": ["t-disc-reader"]},
        "training": {"epochs": 1, "batch_size": 8},
        "explainers": {"names": EXPLAINERS},
        "perturbations": {"names": ["gaussian-noise"]},
        "aopc": {"grid": GRID, "max_images": N_TEST_LESION + N_TEST_NORMAL, "bootstrap": 500},
        "metrics": {"names": METRICS},
    }
    runner.clear_memo()
    try:
        yield bench.run(json.loads(json.dumps(cfg)), quiet=True, leaderboard=False)
    finally:
        runner.clear_memo()


def _cells(result):
    assert result.ok, [c.error for c in result.failed]
    return {c.explainer: c for c in result.cells}


def _npz(result, name):
    with np.load(result.run_dir / name, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _column(arrays, metric, column):
    """A metric's per-image column from a cell's metrics file (stored as ``<metric>/<column>``)."""
    return arrays[f"{metric}/{column}"]


def _lesion_rows(ids):
    """Which of the explained test images carry a lesion (ids ``test-000`` .. ``test-023``)."""
    return np.array([int(str(i).split("-")[1]) < N_TEST_LESION for i in ids])


# ---- the construction -----------------------------------------------------------------------
def test_the_constructed_model_reads_only_the_lesion(plugin):
    from bench.data import to_model_input

    model = bench.create("model", "t-disc-reader")
    images, labels, masks = draw(6, 2, seed=9)
    x = to_model_input(images)
    probs = model.predict_proba(images)
    assert (probs[np.arange(8), labels] > 0.99).all()  # clean: the right class, confidently
    noise = bench.create("perturbation", "gaussian-noise")
    seeds = np.arange(8)
    outside = noise.perturb(x, ~masks, seeds)  # noise everywhere but the lesion
    np.testing.assert_allclose(model.predict_proba(outside), probs, atol=1e-4)
    on_lesion = model.predict_proba(noise.perturb(x, masks, seeds))
    assert (on_lesion[:6, 0] < 0.01).all()  # the whole lesion noisy: the lesion is gone
    assert (on_lesion[6:, 1] > 0.99).all()  # a Normal image has no lesion to perturb


# ---- through the harness --------------------------------------------------------------------
def test_every_test_image_is_explained_and_the_normal_ones_get_constant_oracle_maps(run):
    cells = _cells(run)
    for name in EXPLAINERS:
        assert cells[name].n_images == N_TEST_LESION + N_TEST_NORMAL, name
    # an empty mask: the oracle's map is all 0, the anti-oracle's all 1: constant, counted
    assert cells["oracle"].constant_heatmaps == cells["anti-oracle"].constant_heatmaps == N_TEST_NORMAL
    assert cells["random"].constant_heatmaps == 0


def test_on_the_normal_images_the_oracles_are_undefined_ties(run):
    """Both constant maps take the same seeded tie-break order: identical, flat curves there."""
    cells = _cells(run)
    oracle = _npz(run, cells["oracle"].curves_file)
    anti = _npz(run, cells["anti-oracle"].curves_file)
    assert oracle["ids"].tolist() == anti["ids"].tolist()
    normal = ~_lesion_rows(oracle["ids"])
    assert normal.sum() == N_TEST_NORMAL
    np.testing.assert_array_equal(oracle["morf_order"][normal], anti["morf_order"][normal])
    np.testing.assert_allclose(oracle["morf_curves"][normal], anti["morf_curves"][normal], atol=1e-6)
    flat = oracle["morf_curves"][normal]
    np.testing.assert_allclose(flat, np.broadcast_to(flat[:, :1], flat.shape), atol=1e-4)


def test_aopc_on_the_lesion_images_ranks_oracle_random_anti_oracle_by_wide_margins(run):
    from bench.stats import paired_comparison

    cells = _cells(run)
    masked = {name: cells[name].metrics["aopc-lesion"] for name in EXPLAINERS}
    for name, m in masked.items():  # the Normal images: left out and counted
        assert (m.n, m.n_excluded) == (N_TEST_LESION, N_TEST_NORMAL), name
    value = {name: m.value for name, m in masked.items()}
    # the known answers: the oracle destroys the lesion within a few regions, the anti-oracle last
    assert value["oracle"] > 0.8 and value["anti-oracle"] < 0.2
    assert value["oracle"] - value["random"] > 0.15
    assert value["random"] - value["anti-oracle"] > 0.15
    per_image = {}
    for name in EXPLAINERS:
        arrays = _npz(run, cells[name].metrics_file)
        lesion = _lesion_rows(arrays["ids"])
        per_image[name] = _column(arrays, "aopc-lesion", "masked-aopc")
        assert np.isnan(per_image[name][~lesion]).all() and np.isfinite(per_image[name][lesion]).all()
        per_image[name] = per_image[name][lesion]
        curves = _npz(run, cells[name].curves_file)
        assert curves["ids"].tolist() == arrays["ids"].tolist()  # the same images, in the same rows
        np.testing.assert_allclose(per_image[name], curves["morf_per_image"][lesion], atol=1e-9)
    for better, worse in (("oracle", "random"), ("random", "anti-oracle")):
        cmp = paired_comparison(per_image[better], per_image[worse])
        assert cmp["ci"][0] > 0.05, (better, worse, cmp)
    print("aopc-lesion: " + ", ".join(f"{n} {v:.3f}" for n, v in value.items()))


def test_the_plain_aopc_is_the_same_ranking_diluted_by_the_normal_images(run):
    """On every image the Normal ones add ~0 to each explainer (flat curves): the gaps shrink by
    the lesion images' share, which is why the oracle comparisons use ``aopc-lesion``."""
    cells = _cells(run)
    share = N_TEST_LESION / (N_TEST_LESION + N_TEST_NORMAL)
    for name in EXPLAINERS:
        plain, masked = cells[name].metrics["aopc"], cells[name].metrics["aopc-lesion"]
        assert (plain.n, plain.n_excluded) == (N_TEST_LESION + N_TEST_NORMAL, 0)
        assert plain.value == pytest.approx(share * masked.value, abs=1e-3), name


def test_localisation_ranks_oracle_random_anti_oracle_on_the_lesion_images(run):
    cells = _cells(run)
    for metric in ("pointing-game", "relevance-mass"):
        for name in EXPLAINERS:
            m = cells[name].metrics[metric]
            assert (m.n, m.n_excluded) == (N_TEST_LESION, N_TEST_NORMAL), (metric, name)
    cols = {}
    for name in EXPLAINERS:
        arrays = _npz(run, cells[name].metrics_file)
        lesion = _lesion_rows(arrays["ids"])
        cols[name] = {
            "pg": _column(arrays, "pointing-game", "pointing-game")[lesion],
            "chance": _column(arrays, "pointing-game", "chance")[lesion],
            "mass": _column(arrays, "relevance-mass", "relevance-mass")[lesion],
        }
    o, r, a = cols["oracle"], cols["random"], cols["anti-oracle"]
    # the oracle's maximum is the lesion, and all its relevance lies there; the anti-oracle's none
    np.testing.assert_array_equal(o["pg"], 1.0)
    np.testing.assert_array_equal(o["mass"], 1.0)
    np.testing.assert_array_equal(a["mass"], 0.0)
    assert (r["mass"] > 0).all() and (r["mass"] < 1).all()  # a positive random map: some in, some out
    assert o["mass"].mean() - r["mass"].mean() > 0.5 and r["mass"].mean() - a["mass"].mean() > 0.03
    assert o["pg"].mean() - r["pg"].mean() > 0.5
    # the anti-oracle's maxima are every pixel off the lesion: fewer of them lie near it than of
    # all pixels, so it scores below the chance level (a random map's expected score) on every image
    assert (a["pg"] < a["chance"]).all()
