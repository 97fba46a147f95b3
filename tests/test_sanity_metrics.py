"""Sanity checks as metrics (bench_sanity): the similarity measures, the block rule, the cascade
of randomised copies, and the two metrics against direct references on a tiny Keras model."""

from __future__ import annotations

import numpy as np
import pytest
from bench_sanity.randomisation import (
    ModelRandomisation,
    RandomLogit,
    cascade,
    layer_blocks,
    stage_of,
)
from bench_sanity.similarity import pearson_rows, spearman_rows, ssim_rows
from scipy.stats import spearmanr

import bench
from bench.engine.regions import derive_seed
from bench.pipeline.metrics import compute_columns, metric_data
from bench.testing import check_component, tiny_images, tiny_model

N = 5


# ---- similarity -------------------------------------------------------------------------------
def _ssim_reference(a: np.ndarray, b: np.ndarray, win: int = 7, data_range: float = 1.0) -> float:
    """SSIM written window by window (Wang et al. 2004, skimage's defaults)."""
    h, w = a.shape
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for r in range(h - win + 1):
        for c in range(w - win + 1):
            x, y = a[r:r + win, c:c + win].ravel(), b[r:r + win, c:c + win].ravel()
            vx, vy = x.var(ddof=1), y.var(ddof=1)
            vxy = ((x - x.mean()) * (y - y.mean())).sum() / (x.size - 1)
            values.append(((2 * x.mean() * y.mean() + c1) * (2 * vxy + c2))
                          / ((x.mean() ** 2 + y.mean() ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_similarities_equal_direct_references():
    rng = np.random.default_rng(0)
    a = rng.random((4, 9, 9))
    b = a + rng.random((4, 9, 9))
    b[1] = -a[1]
    b[2, :4] = 0.0  # ties
    for i in range(4):
        assert spearman_rows(a, b)[i] == pytest.approx(spearmanr(a[i].ravel(), b[i].ravel())[0], abs=1e-12)
        assert pearson_rows(a, b)[i] == pytest.approx(np.corrcoef(a[i].ravel(), b[i].ravel())[0, 1], abs=1e-12)
    bn = b / np.abs(b).max(axis=(1, 2), keepdims=True)
    an = a / a.max(axis=(1, 2), keepdims=True)
    for i in range(4):
        assert ssim_rows(an, np.abs(bn))[i] == pytest.approx(_ssim_reference(an[i], np.abs(bn[i])), abs=1e-12)


def test_ssim_equals_skimage_where_it_is_installed():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    a, b = rng.random((3, 12, 10)), rng.random((3, 12, 10))
    ref = [skm.structural_similarity(a[i], b[i], data_range=1.0) for i in range(3)]
    np.testing.assert_allclose(ssim_rows(a, b), ref, atol=1e-12)


def test_zero_variance_maps_count_as_unchanged():
    const = np.full((2, 6, 6), 0.3)
    other = np.random.default_rng(2).random((2, 6, 6))
    assert (spearman_rows(const, const * 7) == 1).all() and (pearson_rows(const, const) == 1).all()
    assert (ssim_rows(const, const) == pytest.approx(1.0))
    assert (spearman_rows(const, other) == 0).all() and (spearman_rows(other, const) == 0).all()
    assert (spearman_rows(np.zeros((1, 4, 4)), np.zeros((1, 4, 4))) == 1).all()


# ---- blocks -------------------------------------------------------------------------------------
def test_stage_names():
    assert [stage_of(n) for n in ("block3_conv2", "conv4_block12_1_conv", "pool3_conv", "conv1/conv", "bn",
                                  "head_dense", "logits", "conv2d_1", "dense", "features", "block1a_expand_conv")] == [
        "block3", "conv4", "pool3", "conv1", "bn", "head_dense", "logits", "conv2d_1", "dense", "features", "block1a"]


def _staged_model():
    import keras

    keras.utils.set_random_seed(1)
    x_in = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="block1_conv1")(x_in)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="block1_conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="block1_pool")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="block2_conv1")(x)
    x = keras.layers.BatchNormalization(name="block2_bn")(x)
    x = keras.layers.Activation("relu", name="block2_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(8, activation="relu", name="head_dense")(x)
    out = keras.layers.Dense(3, activation="softmax", name="logits")(x)
    return bench.KerasModel(keras.Model(x_in, out, name="staged"), feature_layer="block2_relu")


def test_blocks_follow_stage_names_and_merge_beyond_max_blocks():
    model = _staged_model()
    blocks = layer_blocks(model.keras)
    assert [(b.name, b.layers) for b in blocks] == [
        ("block1", ("block1_conv1", "block1_conv2")), ("block2", ("block2_conv1", "block2_bn")),
        ("head_dense", ("head_dense",)), ("logits", ("logits",)),
    ]
    merged = layer_blocks(model.keras, max_blocks=2)
    assert [(b.name, len(b.layers)) for b in merged] == [("block1..block2", 4), ("head_dense..logits", 2)]
    tiny = tiny_model().keras  # Keras numbers default layer names globally: read them off the model
    weighted = [layer.name for layer in tiny.layers if layer.weights]
    assert [b.layers for b in layer_blocks(tiny)] == [(name,) for name in weighted] and len(weighted) == 3


def test_the_cascade_randomises_copies_top_down_and_never_the_trained_model():
    model = _staged_model()
    trained = {v.path: np.array(v.numpy()) for v in model.keras.weights}
    blocks = layer_blocks(model.keras)
    seen = []
    for k, (block, copy) in enumerate(cascade(model, blocks, seed=0), start=1):
        assert copy.keras is not model.keras and copy.feature_layer == "block2_relu"
        randomised = {p for b in blocks[len(blocks) - k:] for p in b.layers}
        for layer in copy.keras.layers:
            for v in layer.weights:
                same = np.array_equal(np.asarray(v.numpy()), trained[f"{layer.name}/{v.name}"])
                if layer.name in randomised and v.name == "kernel":  # biases and BN start at 0 and 1 anyway
                    assert not same, (k, layer.name, v.name)
                elif layer.name not in randomised:
                    assert same, (k, layer.name, v.name)
        seen.append(block.name)
    assert seen == ["logits", "head_dense", "block2", "block1"]
    for v in model.keras.weights:
        np.testing.assert_array_equal(np.asarray(v.numpy()), trained[v.path])
    # seeded: the same seed re-draws the same weights
    (_, a), (_, b) = next(iter(cascade(model, blocks, seed=3))), next(iter(cascade(model, blocks, seed=3)))
    np.testing.assert_array_equal(a.keras.get_layer("logits").kernel.numpy(), b.keras.get_layer("logits").kernel.numpy())


# ---- the metrics ----------------------------------------------------------------------------------
class Constant:
    def get_params(self):
        return {}

    def explain(self, model, images, targets):
        return np.ones((len(images), 8, 8), np.float32)


def _data(name, model, explainer, n=N):
    spec = bench.registry().get("metric", name).spec
    images = (tiny_images(n, seed=7)[..., 0] * 255).astype(np.uint8)
    targets = np.argmax(model.predict_proba(images), axis=1)
    return spec, metric_data(spec, ids=np.array([f"img-{i}" for i in range(n)]), grid=(4, 4), model=model,
                             explainer=explainer, images=images, targets=targets)


def _rho(a: np.ndarray, b: np.ndarray) -> float:
    """scipy's Spearman, with the zero-variance rule: both constant 1, one constant 0."""
    ca, cb = np.ptp(a) == 0, np.ptp(b) == 0
    if ca or cb:
        return 1.0 if ca and cb else 0.0
    return float(spearmanr(a.ravel(), b.ravel())[0])


def _unit(m: np.ndarray) -> np.ndarray:
    m = np.abs(m)
    return m / m.max() if m.max() > 0 else m


def _maps(explainer, model, images, targets):
    """The explainer directly, one image at a time."""
    from bench.data import to_model_input

    return np.concatenate([np.asarray(explainer.explain(model, to_model_input(images[i:i + 1]), targets[i:i + 1]))
                           for i in range(len(images))])


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def gradcam():
    return bench.create("explainer", "gradcam")


def test_model_randomisation_equals_a_direct_reference(model, gradcam):
    spec, data = _data("model-randomisation", model, gradcam)
    metric = ModelRandomisation(seed=0)
    before = [w.copy() for w in model.keras.get_weights()]
    probs = model.predict_proba(data.images)
    cols = compute_columns(metric, spec, data)
    blocks = metric.blocks(model)
    k = len(blocks)
    assert cols["spearman"].shape == cols["ssim"].shape == cols["layers"].shape == (N, k) == (N, 3)
    ref_maps = _maps(gradcam, model, data.images, data.targets)
    rho, ssim = np.empty((N, k)), np.empty((N, k))
    for step, (_, copy) in enumerate(cascade(model, blocks, seed=0)):
        maps = _maps(gradcam, copy, data.images, data.targets)
        for i in range(N):
            rho[i, step] = _rho(np.abs(ref_maps[i]), np.abs(maps[i]))
            ssim[i, step] = _ssim_reference(_unit(ref_maps[i]), _unit(maps[i]))
    np.testing.assert_allclose(cols["spearman"], rho, atol=1e-4)
    np.testing.assert_allclose(cols["ssim"], ssim, atol=1e-4)
    np.testing.assert_allclose(cols["model-randomisation"], rho.mean(axis=1), atol=1e-4)
    np.testing.assert_array_equal(cols["last"], cols["spearman"][:, -1])
    assert cols["layers"][0].tolist() == [1, 2, 3] and (cols["heatmaps"] == k + 1).all()
    # Grad-CAM changes under randomisation; the trained model did not change
    assert cols["last"].mean() < 0.5 and cols["model-randomisation"].mean() < 0.5
    for w0, w1 in zip(before, model.keras.get_weights(), strict=True):
        np.testing.assert_array_equal(w0, w1)
    np.testing.assert_array_equal(model.predict_proba(data.images), probs)


def test_a_constant_explainer_fails_both_sanity_checks(model):
    for name, metric in (("model-randomisation", ModelRandomisation()), ("random-logit", RandomLogit())):
        spec, data = _data(name, model, Constant())
        cols = compute_columns(metric, spec, data)
        np.testing.assert_allclose(cols[name], 1.0)
        np.testing.assert_allclose(cols["spearman"], 1.0)


def test_random_logit_equals_a_direct_reference(model, gradcam):
    spec, data = _data("random-logit", model, gradcam)
    cols = compute_columns(RandomLogit(seed=4), spec, data)
    others = []
    for i, t in zip(data.ids, data.targets, strict=True):
        c = int(np.random.default_rng(derive_seed(4, i, "random-logit")).integers(model.num_classes - 1))
        others.append(c + (c >= t))
    others = np.array(others)
    assert (others != data.targets).all()
    np.testing.assert_array_equal(cols["other-class"], others)
    a = _maps(gradcam, model, data.images, data.targets)
    b = _maps(gradcam, model, data.images, others)
    for i in range(N):
        assert cols["spearman"][i] == pytest.approx(_rho(np.abs(a[i]), np.abs(b[i])), abs=1e-4)
        assert cols["random-logit"][i] == pytest.approx(_ssim_reference(_unit(a[i]), _unit(b[i])), abs=1e-4)
    assert cols["random-logit"].mean() < 0.9  # Grad-CAM of another class is another map


def test_a_nested_backbone_is_walked_into_and_cloned():
    import keras

    keras.utils.set_random_seed(2)
    inner_in = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1_a")(inner_in)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2_a")(h)
    backbone = keras.Model(inner_in, h, name="backbone")
    x_in = keras.Input((32, 32, 3))
    y = keras.layers.GlobalAveragePooling2D()(backbone(x_in))
    out = keras.layers.Dense(3, activation="softmax", name="logits")(y)
    model = bench.KerasModel(keras.Model(x_in, out), feature_layer="backbone/conv2_a")
    blocks = layer_blocks(model.keras)
    assert [b.name for b in blocks] == ["backbone/conv1", "backbone/conv2", "logits"]
    spec, data = _data("model-randomisation", model, bench.create("explainer", "gradcam"), n=3)
    cols = compute_columns(ModelRandomisation(), spec, data)
    assert cols["spearman"].shape == (3, 3) and np.isfinite(cols["spearman"]).all()


@pytest.mark.parametrize("name", ["model-randomisation", "random-logit"])
def test_conformance_kit(name):
    check_component(bench.create("metric", name))


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="max_blocks"):
        ModelRandomisation(max_blocks=0).validate()
    with pytest.raises(ValueError, match="seed"):
        RandomLogit(seed=-1).validate()


def test_in_a_run_every_new_metric_is_computed_and_the_null_control_fails_the_sanity_checks(tmp_path):
    """bench run with the new metrics (ROAD as the cell's perturbation): all ok; the random control,
    whose maps ignore the model and the class, scores 1 on both sanity checks."""
    from bench import pipeline as runner

    names = ["aopc", "model-randomisation", "random-logit", "max-sensitivity", "faithfulness-correlation"]
    cfg = {
        "preset": "demo",
        "dataset": {"name": "synthetic-cxr", "params": {"image_size": 48, "per_class": 20, "lesion_contrast": 2.0}},
        "models": {"names": ["simple-cnn"]},
        "training": {"epochs": 2, "batch_size": 16},
        "explainers": {"names": ["random", "gradcam"], "params": {"random": {"size": 12}}},
        "perturbations": {"names": ["road"]},
        "aopc": {"grid": 3, "max_images": 3, "bootstrap": 200},
        "metrics": {"names": names, "params": {"max-sensitivity": {"n_samples": 3}}},
        "run": {"out": str(tmp_path)},
    }
    runner.clear_memo()
    result = bench.run(cfg, quiet=True, leaderboard=False)
    assert result.ok, [c.error for c in result.failed]
    cells = {c.cell_id.split("__")[2]: c for c in result.cells}
    for cell in cells.values():
        for name in names:
            assert cell.metrics[name].ok, (cell.cell_id, name, cell.metrics[name].error)
    control = cells["random"].metrics
    assert control["model-randomisation"].value == pytest.approx(1.0)
    assert control["random-logit"].value == pytest.approx(1.0)
    assert control["max-sensitivity"].value == pytest.approx(0.0)  # seeded by id: the noise changes nothing
    assert cells["gradcam"].metrics["model-randomisation"].value < 0.5
    stored = np.load(result.run_dir / cells["gradcam"].metrics["model-randomisation"].file)
    n, k = stored["model-randomisation/spearman"].shape
    assert n == cells["gradcam"].n_images and 2 <= k <= 12 and stored["model-randomisation/layers"].shape == (n, k)


class MaskReader:
    """An explainer that reads a dataset mask (like an oracle control)."""

    def get_params(self):
        return {}

    def explain(self, model, images, targets, *, masks=None):
        return masks["lesion"].astype(np.float32)

    @bench.hookimpl
    def bench_register_explainers(self):
        return [bench.ExplainerSpec(name="t-mask-reader", factory=MaskReader, role="positive-control",
                                    masks=("lesion",))]


def _box_masks(n: int, size: int = 32) -> np.ndarray:
    m = np.zeros((n, size, size), bool)
    for i in range(n):
        if i % 3 == 2:
            continue  # an empty mask, as a Normal image's lesion
        m[i, 2 + 3 * i: 10 + 3 * i, 4 + i: 14 + 2 * i] = True
    return m


def _mask_data(name, model, n=N, masks=None):
    spec = bench.registry().get("metric", name).spec
    images = (tiny_images(n, seed=7)[..., 0] * 255).astype(np.uint8)
    targets = np.argmax(model.predict_proba(images), axis=1)
    return spec, metric_data(spec, ids=np.array([f"img-{i}" for i in range(n)]), grid=(4, 4), model=model,
                             explainer=MaskReader(), images=images, targets=targets,
                             explainer_masks=None if masks is None else {"lesion": masks})


def test_an_explainer_that_reads_masks_is_re_run_with_the_declared_masks(model):
    """The harness hands a metric the masks the cell's explainer declares (``data.explainer_masks``):
    re-explaining passes them, row by row. A mask reader ignores the model and the class (both
    sanity checks 1), and its maps do not move under input noise (max-sensitivity 0: a row given
    another image's mask would move)."""
    from bench_robustness.sensitivity import MaxSensitivity

    bench.register_plugin(MaskReader(), name="mask-reader-plugin")
    try:
        masks = _box_masks(N)
        for name, metric in (("model-randomisation", ModelRandomisation(max_blocks=2)),
                             ("random-logit", RandomLogit()), ("max-sensitivity", MaxSensitivity(n_samples=2))):
            spec, data = _mask_data(name, model, masks=masks)
            np.testing.assert_array_equal(data.explainer_masks["lesion"], masks)
            cols = compute_columns(metric, spec, data)
            expected = 0.0 if name == "max-sensitivity" else 1.0
            np.testing.assert_allclose(cols[name], expected, atol=1e-6, err_msg=name)
        # without the masks: refused with the reason (the metric fails in that cell only)
        spec, data = _mask_data("random-logit", model)
        with pytest.raises(ValueError, match="reads the dataset mask.*'lesion'.*not given them"):
            compute_columns(RandomLogit(), spec, data)
    finally:
        bench.unregister_plugin("mask-reader-plugin")


def test_sanity_metrics_report_their_forward_passes(model, gradcam):
    spec, data = _data("random-logit", model, gradcam, n=3)
    metric = RandomLogit()
    assert metric.forward_passes() is None  # nothing computed yet
    compute_columns(metric, spec, data)
    assert metric.forward_passes() == pytest.approx(2 * 3 * gradcam.passes_per_map())
    spec, data = _data("model-randomisation", model, gradcam, n=3)
    metric = ModelRandomisation(max_blocks=2)
    compute_columns(metric, spec, data)
    assert metric.forward_passes() == pytest.approx(3 * (2 + 1) * gradcam.passes_per_map())
