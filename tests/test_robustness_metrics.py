"""Max-sensitivity (bench_robustness) and faithfulness correlation (bench_faithfulness), against
direct references on tiny Keras models, plus known answers and the conformance kit."""

from __future__ import annotations

import numpy as np
import pytest
from bench_faithfulness.correlation import FaithfulnessCorrelation
from bench_robustness.sensitivity import MaxSensitivity

import bench
from bench.data import to_model_input
from bench.engine.regions import derive_seed
from bench.pipeline.metrics import compute_columns, metric_data
from bench.testing import check_component, tiny_images, tiny_model

N = 4


class MeanImage:
    """E(x) = the image's channel mean (a known, model-free map)."""

    def get_params(self):
        return {}

    def explain(self, model, images, targets):
        return np.asarray(images, np.float32).mean(axis=-1)


class Constant:
    def get_params(self):
        return {}

    def explain(self, model, images, targets):
        return np.full((len(images), 4, 4), 2.0, np.float32)


class ZeroOnGrid:
    """Zero on images of whole grey levels (the originals), one elsewhere (any perturbed copy)."""

    def get_params(self):
        return {}

    def explain(self, model, images, targets):
        x = np.asarray(images, np.float64) * 255
        exact = np.all(np.abs(x - np.round(x)) < 1e-3, axis=(1, 2, 3))
        return np.where(exact[:, None, None], 0.0, 1.0) * np.ones((len(images), 4, 4), np.float32)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _data(name, model, explainer=None, heatmaps=None, n=N, grid=(4, 4)):
    spec = bench.registry().get("metric", name).spec
    images = (tiny_images(n, seed=9)[..., 0] * 255).astype(np.uint8)
    targets = np.argmax(model.predict_proba(images), axis=1)
    return spec, metric_data(spec, ids=np.array([f"img-{i}" for i in range(n)]), grid=grid, model=model,
                             explainer=explainer, images=images, targets=targets, heatmaps=heatmaps)


# ---- max-sensitivity -------------------------------------------------------------------------
def _max_sensitivity_reference(metric, data, explainer, model):
    out = []
    for i, image_id in enumerate(data.ids):
        x = to_model_input(data.images[i:i + 1])
        t = data.targets[i:i + 1]
        base = np.asarray(explainer.explain(model, x, t), np.float64)[0]
        worst = 0.0
        for j in range(metric.n_samples):
            rng = np.random.default_rng(derive_seed(metric.seed, image_id, f"max-sensitivity/{j}"))
            delta = rng.uniform(-metric.radius, metric.radius, size=x.shape[1:]).astype(np.float32)
            e = np.asarray(explainer.explain(model, x + delta[None], t), np.float64)[0]
            worst = max(worst, np.linalg.norm(e - base) / np.linalg.norm(base))
        out.append(worst)
    return np.array(out)


def test_max_sensitivity_equals_a_direct_reference(model):
    gradcam = bench.create("explainer", "gradcam")
    for explainer in (MeanImage(), gradcam):
        spec, data = _data("max-sensitivity", model, explainer)
        metric = MaxSensitivity(radius=0.05, n_samples=4, seed=1, batch_size=3)  # batches across images
        cols = compute_columns(metric, spec, data)
        ref = _max_sensitivity_reference(metric, data, explainer, model)
        np.testing.assert_allclose(cols["max-sensitivity"], ref, rtol=1e-4, atol=1e-6)
        assert (cols["mean-sensitivity"] <= cols["max-sensitivity"] + 1e-12).all()
        assert (cols["heatmaps"] == 5).all()
    # the batch size changes nothing
    again = compute_columns(MaxSensitivity(radius=0.05, n_samples=4, seed=1, batch_size=64), spec, data)
    np.testing.assert_allclose(again["max-sensitivity"], cols["max-sensitivity"], rtol=1e-5)


def test_max_sensitivity_known_answers(model):
    spec, data = _data("max-sensitivity", model, Constant())
    assert (compute_columns(MaxSensitivity(), spec, data)["max-sensitivity"] == 0).all()  # never moves
    spec, data = _data("max-sensitivity", model, ZeroOnGrid())
    assert np.isnan(compute_columns(MaxSensitivity(), spec, data)["max-sensitivity"]).all()  # 0 at x: undefined
    # E(x) = channel mean: the ratio grows with the radius
    spec, data = _data("max-sensitivity", model, MeanImage())
    small = compute_columns(MaxSensitivity(radius=0.01), spec, data)["max-sensitivity"]
    large = compute_columns(MaxSensitivity(radius=0.1), spec, data)["max-sensitivity"]
    assert (large > 5 * small).all()


# ---- faithfulness correlation --------------------------------------------------------------------
def _faithfulness_reference(metric, data, model, heatmaps):
    """Per image and subset: the subset's relevance by hand, the drop from single model calls."""
    h, w = data.images.shape[1:]
    rows, cols = data.grid
    labels = (np.arange(h)[:, None] * rows // h) * cols + (np.arange(w)[None, :] * cols // w)
    pert = bench.create("perturbation", metric.perturbation, **(metric.perturbation_params or {}))
    n_regions = rows * cols
    k = max(1, round(metric.subset_fraction * n_regions))
    out = []
    for i, image_id in enumerate(data.ids):
        rng = np.random.default_rng(derive_seed(metric.seed, image_id, "faithfulness-correlation"))
        picks = np.argsort(rng.random((metric.n_subsets, n_regions)), axis=1)[:, :k]
        x = to_model_input(data.images[i:i + 1])
        t = int(data.targets[i])
        f0 = float(np.asarray(model.keras(x, training=False))[0, t])
        rel, drop = [], []
        for subset in picks:
            mask = np.isin(labels, subset)
            rel.append(float(heatmaps[i][mask].sum()))
            xs = pert.perturb(x, mask[None], np.array([derive_seed(metric.seed, image_id)]))
            drop.append(f0 - float(np.asarray(model.keras(xs, training=False))[0, t]))
        out.append(np.corrcoef(rel, drop)[0, 1])
    return np.array(out)


@pytest.mark.parametrize("perturbation", ["mean", "gaussian-noise"])
def test_faithfulness_correlation_equals_a_direct_reference(model, perturbation):
    heat = np.random.default_rng(3).random((N, 32, 32)).astype(np.float32)  # at image size: no resize
    spec, data = _data("faithfulness-correlation", model, heatmaps=heat)
    metric = FaithfulnessCorrelation(n_subsets=6, subset_fraction=0.25, perturbation=perturbation, seed=2,
                                     batch_size=5)  # batches across images
    cols = compute_columns(metric, spec, data)
    ref = _faithfulness_reference(metric, data, model, heat)
    np.testing.assert_allclose(cols["faithfulness-correlation"], ref, atol=1e-4)
    assert (cols["forward-passes"] == 7).all()


def test_faithfulness_correlation_invariances_and_a_constant_map(model):
    heat = np.random.default_rng(4).random((N, 8, 8)).astype(np.float32)
    spec, data = _data("faithfulness-correlation", model, heatmaps=heat)
    metric = FaithfulnessCorrelation(n_subsets=8, perturbation="black")
    base = compute_columns(metric, spec, data)["faithfulness-correlation"]
    for other, expected in ((-heat, -base), (3 * heat + 1, base)):  # equal regions: an offset adds a constant
        _, d = _data("faithfulness-correlation", model, heatmaps=other)
        np.testing.assert_allclose(compute_columns(metric, spec, d)["faithfulness-correlation"], expected, atol=1e-6)
    _, d = _data("faithfulness-correlation", model, heatmaps=np.ones_like(heat))
    assert (compute_columns(metric, spec, d)["faithfulness-correlation"] == 0).all()


def _linear_model(weights: np.ndarray):
    """p(class 0) = sigmoid(sum(x * W)): the drop grows with the removed W-weighted intensity."""
    import keras

    x_in = keras.Input((32, 32, 3))
    dense = keras.layers.Dense(2, activation="softmax", name="logits")
    out = dense(keras.layers.Flatten()(x_in))
    kernel = np.zeros((32 * 32 * 3, 2), np.float32)
    kernel[:, 0] = weights.reshape(-1)
    dense.set_weights([kernel, np.zeros(2, np.float32)])
    return bench.KerasModel(keras.Model(x_in, out))


def test_the_exact_contribution_map_correlates_and_a_random_map_does_not():
    w = np.random.default_rng(5).random((32, 32, 3)).astype(np.float32) * 4e-3
    lin = _linear_model(w)
    images = (tiny_images(N, seed=9)[..., 0] * 255).astype(np.uint8)
    contribution = (to_model_input(images) * w).sum(axis=-1)  # black removes exactly this from the logit
    metric = FaithfulnessCorrelation(n_subsets=24, perturbation="black")
    spec = bench.registry().get("metric", "faithfulness-correlation").spec
    scores = {}
    for label, heat in (("exact", contribution), ("random", np.random.default_rng(6).random(contribution.shape))):
        d = metric_data(spec, ids=np.array([f"img-{i}" for i in range(N)]), grid=(8, 8), model=lin,
                        images=images, targets=np.zeros(N, int), heatmaps=heat.astype(np.float32))
        scores[label] = compute_columns(metric, spec, d)["faithfulness-correlation"]
    assert (scores["exact"] > 0.99).all()
    assert scores["random"].mean() < 0.6


def test_unknown_perturbation_is_refused_with_a_suggestion():
    with pytest.raises(Exception, match="blurr|blur"):
        FaithfulnessCorrelation(perturbation="blurr").validate()
    with pytest.raises(ValueError, match="subset_fraction"):
        FaithfulnessCorrelation(subset_fraction=0).validate()


@pytest.mark.parametrize("name", ["max-sensitivity", "faithfulness-correlation"])
def test_conformance_kit(name):
    check_component(bench.create("metric", name))
