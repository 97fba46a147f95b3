"""The CAM family (bench_cams) against independent computations and known identities.

Every reference here is written from the definition: a per-image ``GradientTape`` loop
for the gradient CAMs, brute-force per-channel loops for Score-CAM and Ablation-CAM,
NumPy's SVD for Eigen-CAM.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from bench_cams.channel_cams import AblationCAM, ScoreCAM  # noqa: E402
from bench_cams.eigencam import EigenCAM  # noqa: E402
from bench_cams.gradient_cams import GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM  # noqa: E402
from bench_gradcam.featuremap import TRACE_NAME  # noqa: E402
from bench_gradcam.gradcam import GradCAM  # noqa: E402

import bench  # noqa: E402
from bench.engine.tracing import traces  # noqa: E402
from bench.models import ModelError  # noqa: E402
from bench.testing import check_component, tiny_model  # noqa: E402

NAMES = {
    "gradcam-plus-plus": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,
}


# ---- independent references --------------------------------------------------------------
class Parts:
    """A model split by hand: ``feat(x) -> A`` and ``head(A) -> logits`` (a chain of layers)."""

    def __init__(self, probs_model, feat, head_layers):
        self.probs_model, self.feat, self.head_layers = probs_model, feat, list(head_layers)

    @classmethod
    def split(cls, keras_model, feature_layer):
        layers = keras_model.layers
        idx = [layer.name for layer in layers].index(feature_layer)
        feat = keras.Model(keras_model.inputs[0], layers[idx].output)
        return cls(keras_model, feat, layers[idx + 1 :])

    def head(self, a):
        h = a
        for j, layer in enumerate(self.head_layers):
            last = j == len(self.head_layers) - 1
            if last and type(layer).__name__ == "Softmax":
                break
            if last and type(layer).__name__ == "Dense":  # softmax Dense: its pre-activation
                return tf.matmul(h, layer.kernel) + layer.bias
            h = layer(h, training=False)
        return h

    def tape(self, images, targets):
        """A, dy/dA (float64 (N, h, w, K)) and y (N,), one image at a time."""
        a_all, g_all, y_all = [], [], []
        features = self.feat(images, training=False)  # the feature pass itself is no CAM
        for i in range(len(images)):
            a = tf.convert_to_tensor(features[i : i + 1])
            with tf.GradientTape() as tape:
                tape.watch(a)
                y = self.head(a)[0, int(targets[i])]
            a_all.append(a.numpy()[0])
            g_all.append(tape.gradient(y, a).numpy()[0])
            y_all.append(float(y))
        return (np.stack(a_all).astype(np.float64), np.stack(g_all).astype(np.float64),
                np.array(y_all))


def _relu(m, relu=True):
    return np.maximum(m, 0) if relu else m


def ref_gradient_cam(name, parts, images, targets, relu=True, exp=True, eps=1e-7):
    a, g, y = parts.tape(images, targets)
    if name == "gradcam":
        m = np.einsum("nhwk,nk->nhw", a, g.mean(axis=(1, 2)))
    elif name == "hirescam":
        m = (g * a).sum(-1)
    elif name == "layercam":
        m = (np.maximum(g, 0) * a).sum(-1)
    elif name == "xgradcam":
        w = (a / (a.sum(axis=(1, 2), keepdims=True) + eps) * g).sum(axis=(1, 2))
        m = np.einsum("nhwk,nk->nhw", a, w)
    elif name == "gradcam-plus-plus":
        ws = []
        for i in range(len(a)):  # per image, per channel: the closed form as written
            s = np.exp(y[i]) if exp else 1.0
            w = np.zeros(a.shape[-1])
            for k in range(a.shape[-1]):
                gk, ak = g[i, :, :, k], a[i, :, :, k]
                den = 2 * gk**2 + ak.sum() * gk**3
                alpha = np.divide(gk**2, den, out=np.zeros_like(gk), where=den != 0)
                w[k] = (alpha * np.maximum(s * gk, 0)).sum()
            ws.append(w)
        m = np.einsum("nhwk,nk->nhw", a, np.stack(ws))
    else:  # pragma: no cover
        raise KeyError(name)
    return _relu(m, relu)


def ref_eigencam(parts, images):
    out = []
    for a in np.asarray(parts.feat(images), dtype=np.float64):
        h, w, k = a.shape
        m = a.reshape(h * w, k)
        c = m - m.mean(axis=0)
        _, _, vt = np.linalg.svd(c, full_matrices=False)
        proj = c @ vt[0]
        if proj @ m.mean(axis=1) < 0:
            proj = -proj
        out.append(proj.reshape(h, w))
    return np.stack(out)


def ref_scorecam(parts, images, targets, softmax=True, max_channels=None, baseline=0.0, relu=True):
    n, hh, ww, _ = images.shape
    p_base = parts.probs_model(np.full((1, hh, ww, 3), baseline, np.float32)).numpy()[0]
    out = []
    for i, a in enumerate(np.asarray(parts.feat(images))):
        k_all = a.shape[-1]
        var = a.reshape(-1, k_all).var(axis=0)
        chans = range(k_all) if max_channels is None else np.argsort(-var, kind="stable")[:max_channels]
        chans, masked = list(chans), []
        for k in chans:
            up = tf.image.resize(a[None, :, :, k : k + 1], (hh, ww), method="bilinear").numpy()[0, :, :, 0]
            span = up.max() - up.min()
            mask = (up - up.min()) / span if span > 0 else np.zeros_like(up)
            masked.append(baseline + (images[i] - baseline) * mask[..., None])
        masked = np.stack(masked).astype(np.float32)
        p = np.concatenate([parts.probs_model(masked[j : j + 256]).numpy()[:, targets[i]]
                            for j in range(0, len(masked), 256)])
        s = p.astype(np.float64) - float(p_base[targets[i]])
        w = np.exp(s - s.max()) / np.exp(s - s.max()).sum() if softmax else s
        out.append(_relu(np.einsum("hwk,k->hw", a[:, :, chans].astype(np.float64), w), relu))
    return np.stack(out)


def ref_ablationcam(parts, images, targets, relu=True, chunk=256, max_channels=None):
    out = []
    for i, a in enumerate(np.asarray(parts.feat(images))):
        k_all = a.shape[-1]
        if max_channels is not None:  # only the channels of highest spatial variance count
            var = a.reshape(-1, k_all).var(axis=0)
            keep = np.argsort(-var, kind="stable")[:max_channels]
        y = float(parts.head(a[None])[0, targets[i]])
        yk = np.empty(k_all)
        for start in range(0, k_all, chunk):  # per channel k: the map with channel k zeroed
            ks = np.arange(start, min(start + chunk, k_all))
            ablated = np.repeat(a[None], len(ks), axis=0)
            ablated[np.arange(len(ks)), :, :, ks] = 0.0
            yk[ks] = np.asarray(parts.head(ablated))[:, targets[i]]
        w = (y - yk) / y if y != 0 else np.zeros(k_all)
        if max_channels is not None:
            w = np.where(np.isin(np.arange(k_all), keep), w, 0.0)  # the others get no weight
        out.append(_relu(np.einsum("hwk,k->hw", a.astype(np.float64), w), relu))
    return np.stack(out)


def reference(name, parts, images, targets, **params):
    if name == "eigencam":
        return ref_eigencam(parts, images)
    if name == "scorecam":
        keep = {k: params[k] for k in ("softmax", "max_channels", "baseline", "relu") if k in params}
        return ref_scorecam(parts, images, targets, **keep)
    if name == "ablationcam":
        return ref_ablationcam(parts, images, targets, relu=params.get("relu", True))
    keep = {k: params[k] for k in ("relu", "exp", "eps") if k in params}
    return ref_gradient_cam(name, parts, images, targets, **keep)


def assert_close(ours, ref, rtol=1e-4):
    ref = np.asarray(ref)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    scale = max(float(np.abs(ref).max()), 1e-12)
    np.testing.assert_allclose(ours, ref, atol=rtol * scale, rtol=rtol)


def normalised(m):
    """Each map divided by its peak |value| (an all-zero map stays zero; most must not be)."""
    peak = np.abs(m).max(axis=(1, 2), keepdims=True)
    assert (peak > 0).mean() >= 0.5
    return m / np.where(peak > 0, peak, 1.0)


# ---- models --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    """A flat CNN with a nonlinear head (gradients vary over the 8x8x6 feature map)."""
    keras.utils.set_random_seed(11)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="features")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, activation="relu")(x)
    out = keras.layers.Dense(3, activation="softmax", name="out")(x)
    km = keras.Model(inp, out)
    images = np.random.default_rng(0).random((3, 16, 16, 3)).astype(np.float32)
    return bench.KerasModel(km, feature_layer="features"), Parts.split(km, "features"), images


@pytest.fixture(scope="module")
def nested():
    """A backbone sub-model called as one layer, then a head."""
    keras.utils.set_random_seed(12)
    b_in = keras.Input((16, 16, 3))
    b = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv_a")(b_in)
    b = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="last_conv")(b)
    backbone = keras.Model(b_in, b, name="backbone")
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Flatten()(keras.layers.MaxPooling2D(2)(backbone(inp)))
    x = keras.layers.Dense(6, activation="relu")(x)
    out = keras.layers.Dense(3, activation="softmax")(x)
    km = keras.Model(inp, out)
    images = np.random.default_rng(1).random((3, 16, 16, 3)).astype(np.float32)
    return km, backbone, images


def gap_model(nonneg: bool, seed: int = 13):
    """Conv(relu) "features" -> GlobalAveragePooling -> Dense(softmax): dy/dA = W[k, c] / (h w)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((12, 12, 3))
    feats = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="features")(inp)
    dense = keras.layers.Dense(3, activation="softmax")
    km = keras.Model(inp, dense(keras.layers.GlobalAveragePooling2D()(feats)))
    if nonneg:
        kernel, bias = dense.get_weights()
        dense.set_weights([np.abs(kernel), bias])
    return bench.KerasModel(km, feature_layer="features")


TARGETS3 = np.array([0, 2, 1])


# ---- registration and conformance ------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(NAMES))
def test_registered_spec_matches_the_component(name):
    spec = bench.registry().get("explainer", name).spec
    component = bench.create("explainer", name)
    assert isinstance(component, NAMES[name])
    assert dict(spec.parameters) == component.get_params()
    assert "forward" in spec.description and "A^k" in spec.description


@pytest.mark.parametrize("name", sorted(NAMES))
def test_conformance_kit(name):
    check_component(bench.create("explainer", name), tiny_model())


# ---- against the independent computations --------------------------------------------------
@pytest.mark.parametrize("name", ["gradcam-plus-plus", "xgradcam", "layercam", "hirescam"])
@pytest.mark.parametrize("relu", [True, False])
def test_gradient_cams_match_a_per_image_tape(small, name, relu):
    model, parts, images = small
    ours = NAMES[name](relu=relu).explain(model, images, TARGETS3)
    assert ours.shape == (3, 8, 8)
    assert_close(ours, ref_gradient_cam(name, parts, images, TARGETS3, relu=relu))
    assert np.abs(ours).max() > 0


def test_gradcam_plus_plus_exp_form_is_the_simplification_times_exp_score(small):
    model, parts, images = small
    with_exp = GradCAMPlusPlus().explain(model, images, TARGETS3)
    plain = GradCAMPlusPlus(exp=False).explain(model, images, TARGETS3)
    assert_close(plain, ref_gradient_cam("gradcam-plus-plus", parts, images, TARGETS3, exp=False))
    _, _, y = parts.tape(images, TARGETS3)
    assert_close(with_exp, plain * np.exp(y)[:, None, None])
    assert not np.allclose(with_exp, plain)


def test_gradcam_plus_plus_overflow_says_what_to_do():
    model = gap_model(nonneg=True)
    kernel, bias = model.keras.layers[-1].get_weights()
    model.keras.layers[-1].set_weights([kernel * 1e4, bias])
    images = np.random.default_rng(4).random((2, 12, 12, 3)).astype(np.float32)
    targets = np.argmax(model.keras(images).numpy(), axis=1)
    with pytest.raises(ValueError, match="exp=False"):
        GradCAMPlusPlus().explain(model, images, targets)
    assert np.isfinite(GradCAMPlusPlus(exp=False).explain(model, images, targets)).all()


def test_eigencam_matches_numpy_svd_and_the_sign_rule(small):
    model, parts, images = small
    ours = EigenCAM().explain(model, images, TARGETS3)
    ref = ref_eigencam(parts, images)
    assert_close(ours, ref)
    mean_map = np.asarray(parts.feat(images)).mean(-1)
    agree = (ours * mean_map).sum(axis=(1, 2))
    assert (agree > 0).all()
    # class-agnostic
    np.testing.assert_array_equal(ours, EigenCAM().explain(model, images, TARGETS3[::-1].copy()))


@pytest.mark.parametrize(
    "params",
    [{}, {"softmax": False}, {"max_channels": 2}, {"softmax": False, "baseline": 0.5, "relu": False}],
    ids=["default", "no-softmax", "max2", "baseline0.5-signed"],
)
def test_scorecam_matches_a_brute_force_loop(small, params):
    model, parts, images = small
    ours = ScoreCAM(**params).explain(model, images, TARGETS3)
    assert_close(ours, ref_scorecam(parts, images, TARGETS3, **params))


def test_scorecam_softmax_switch_and_max_channels_weights(small):
    """With one channel kept, softmax makes its weight 1 (map = A^k*); without, the CIC score."""
    model, parts, images = small
    a = np.asarray(parts.feat(images), dtype=np.float64)
    top = a.reshape(3, -1, a.shape[-1]).var(axis=1).argmax(axis=1)
    a_top = a[np.arange(3), :, :, top]
    soft = ScoreCAM(max_channels=1, relu=False).explain(model, images, TARGETS3)
    assert_close(soft, a_top)
    raw = ScoreCAM(max_channels=1, relu=False, softmax=False).explain(model, images, TARGETS3)
    ref = ref_scorecam(parts, images, TARGETS3, softmax=False, max_channels=1, relu=False)
    assert_close(raw, ref)
    assert not np.allclose(raw, soft)
    # all channels kept = no selection
    every = ScoreCAM(max_channels=a.shape[-1]).explain(model, images, TARGETS3)
    np.testing.assert_allclose(every, ScoreCAM().explain(model, images, TARGETS3), atol=1e-7)


def test_scorecam_select_channels_keeps_the_highest_variance():
    pattern = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)  # variance = scale^2 * var(pattern)
    scales = np.array([[0.1, 3.0, 0.0, 2.0, 1.0], [5.0, 0.2, 0.3, 0.0, 4.0]], np.float32)
    a = pattern * scales[:, None, None, :] + 7.0  # an offset changes no variance
    np.testing.assert_array_equal(ScoreCAM(max_channels=3).select_channels(a), [[1, 3, 4], [0, 4, 2]])
    assert ScoreCAM().select_channels(a).shape == (2, 5)


@pytest.mark.parametrize("relu", [True, False])
def test_ablationcam_matches_a_brute_force_loop(small, relu):
    model, parts, images = small
    ours = AblationCAM(relu=relu).explain(model, images, TARGETS3)
    assert_close(ours, ref_ablationcam(parts, images, TARGETS3, relu=relu))
    assert np.abs(ours).max() > 0


@pytest.mark.parametrize("m", [1, 2])
def test_ablationcam_max_channels_ablates_only_the_most_varying_channels(small, m):
    model, parts, images = small
    ours = AblationCAM(max_channels=m, relu=False).explain(model, images, TARGETS3)
    assert_close(ours, ref_ablationcam(parts, images, TARGETS3, relu=False, max_channels=m))
    k = np.asarray(parts.feat(images)).shape[-1]
    every = AblationCAM(max_channels=k).explain(model, images, TARGETS3)
    np.testing.assert_array_equal(every, AblationCAM().explain(model, images, TARGETS3))
    assert AblationCAM(max_channels=m).get_params()["max_channels"] == m
    with pytest.raises(ValueError, match="max_channels"):
        AblationCAM(max_channels=0).validate()


@pytest.mark.parametrize("cls", [ScoreCAM, AblationCAM])
def test_channel_batch_size_independence(small, cls):
    """18 (image, channel) pairs in batches of 1 or 7 (batches straddle images): the same maps."""
    model, _, images = small
    one = cls(batch_size=1).explain(model, images, TARGETS3)
    seven = cls(batch_size=7).explain(model, images, TARGETS3)
    np.testing.assert_allclose(one, seven, atol=1e-6)
    singles = np.concatenate([cls(batch_size=7).explain(model, images[i : i + 1], TARGETS3[i : i + 1])
                              for i in range(3)])
    np.testing.assert_allclose(singles, seven, atol=1e-6)


@pytest.mark.parametrize("name", sorted(NAMES))
def test_traced_once_per_model_and_image_size(small, name):
    model, _, images = small
    explainer = NAMES[name]()
    explainer.explain(model, images, TARGETS3)
    explainer.explain(model.keras, images[:2], TARGETS3[:2])  # a plain keras.Model, wrapped afresh
    fns = [fn for key, (fn, _) in traces(model.keras, TRACE_NAME).items() if key[1] is type(explainer)]
    assert fns and all(fn.experimental_get_tracing_count() == 1 for fn in fns)


def test_bad_parameters_and_targets(small):
    model, _, images = small
    for bad in (ScoreCAM(batch_size=0), ScoreCAM(max_channels=0), AblationCAM(batch_size=1.5),
                XGradCAM(eps=0)):
        with pytest.raises(ValueError):
            bad.validate()
    with pytest.raises(ValueError, match="targets"):
        LayerCAM().explain(model, images, np.array([0, 1, 3]))


# ---- known identities on a global-average-pooling + linear head ------------------------------
@pytest.mark.parametrize("relu", [True, False])
def test_gap_identities(relu):
    images = np.random.default_rng(6).random((4, 12, 12, 3)).astype(np.float32)
    targets = np.array([0, 1, 2, 1])
    signed = gap_model(nonneg=False)
    grad = GradCAM(relu=relu).explain(signed, images, targets)
    # HiResCAM = Grad-CAM exactly (the gradient is the same at every position)
    np.testing.assert_allclose(HiResCAM(relu=relu).explain(signed, images, targets), grad,
                               atol=1e-6 * np.abs(grad).max())
    # XGrad-CAM: w_k = W[k, c] / (h w) * S_k / (S_k + eps)
    np.testing.assert_allclose(normalised(XGradCAM(relu=relu).explain(signed, images, targets)),
                               normalised(grad), atol=1e-5)
    # LayerCAM differs while some W[k, c] < 0 ...
    assert not np.allclose(normalised(LayerCAM(relu=relu).explain(signed, images, targets)),
                           normalised(grad), atol=1e-3)
    # ... and equals Grad-CAM when the head's weights are non-negative
    nonneg = gap_model(nonneg=True)
    grad_nn = GradCAM(relu=relu).explain(nonneg, images, targets)
    np.testing.assert_allclose(normalised(LayerCAM(relu=relu).explain(nonneg, images, targets)),
                               normalised(grad_nn), atol=1e-5)


# ---- nested backbones -----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(NAMES))
def test_nested_backbone(nested, name):
    km, backbone, images = nested
    parts = Parts(km, backbone, km.layers[2:])
    params = {"max_channels": 3} if name == "scorecam" else {}
    ours = NAMES[name](**params).explain(bench.KerasModel(km, feature_layer="backbone"), images, TARGETS3)
    assert ours.shape == (3, 8, 8)
    assert_close(ours, reference(name, parts, images, TARGETS3, **params))


def test_ablationcam_inside_a_nested_backbone(nested):
    """A feature layer inside the sub-model: the rest of the sub-model, then the outer head."""
    km, backbone, images = nested
    inner = keras.Model(backbone.inputs[0], backbone.get_layer("conv_a").output)
    parts = Parts(km, inner, [backbone.get_layer("last_conv"), *km.layers[2:]])
    model = bench.KerasModel(km, feature_layer="backbone/conv_a")
    ours = AblationCAM().explain(model, images, TARGETS3)
    assert ours.shape == (3, 16, 16)
    assert_close(ours, ref_ablationcam(parts, images, TARGETS3))
    assert_close(AblationCAM(layer="backbone/conv_a").explain(km, images, TARGETS3), ours, rtol=1e-6)


def test_ablationcam_refuses_a_head_that_skips_around_the_feature_layer():
    keras.utils.set_random_seed(14)
    inp = keras.Input((12, 12, 3))
    c1 = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    feats = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(c1)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Add()([feats, c1]))
    km = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    model = bench.KerasModel(km, feature_layer="features")
    images = np.random.default_rng(7).random((2, 12, 12, 3)).astype(np.float32)
    with pytest.raises(ModelError, match="do not depend on its output alone"):
        AblationCAM().explain(model, images, np.array([0, 1]))
    assert HiResCAM().explain(model, images, np.array([0, 1])).shape == (2, 12, 12)


# ---- the study's transfer models (weights='none', 64 px: 2x2 feature maps) ------------------
def _transfer(name):
    return bench.create("model", name, weights="none", input_shape=(64, 64, 3), num_classes=4, pool_size=1)


@pytest.fixture(scope="module")
def vgg16():
    model = _transfer("vgg16")
    return model, Parts.split(model.keras, model.feature_layer)


@pytest.fixture(scope="module")
def densenet201():
    model = _transfer("densenet201")
    return model, Parts.split(model.keras, model.feature_layer)


@pytest.fixture(scope="module")
def transfer_images():
    return np.random.default_rng(8).random((2, 64, 64, 3)).astype(np.float32)


TARGETS2 = np.array([1, 3])
#: every method on VGG16; on DenseNet201 (its traces are slow) one of each kind, the rest slow
FAST = [("vgg16", n) for n in sorted(NAMES)] + [
    ("densenet201", n) for n in ("hirescam", "eigencam", "scorecam", "ablationcam")
]
#: the rest of the method x model matrix, and Score-CAM over every channel (512 / 1,920)
SLOW = [("densenet201", n) for n in sorted(NAMES) if ("densenet201", n) not in FAST] + [
    ("vgg16", "scorecam"), ("densenet201", "scorecam")
]


def _check_transfer(request, model_name, name, params, n_images=2):
    model, parts = request.getfixturevalue(model_name)
    images = request.getfixturevalue("transfer_images")[:n_images]
    targets = TARGETS2[:n_images]
    ours = NAMES[name](**params).explain(model, images, targets)
    assert ours.shape == (n_images, 2, 2)
    ref = reference(name, parts, images, targets, **params)
    # Ablation-CAM's y^c - y^c_k cancels: one of 512 / 1,920 channels moves a float32 logit by
    # ~1e-3 of itself, so its rounding shows at ~1e-3 of the map (a wrong method is off by O(1))
    assert_close(ours, ref, rtol=2e-3 if name == "ablationcam" else 2e-4)


@pytest.mark.parametrize("model_name, name", FAST)
def test_transfer_models(request, model_name, name):
    params = {"max_channels": 6} if name == "scorecam" else {}
    _check_transfer(request, model_name, name, params)


@pytest.mark.slow
@pytest.mark.parametrize("model_name, name", SLOW)
def test_transfer_models_full_matrix(request, model_name, name):
    """The rest of the matrix (signed maps), and Score-CAM with its defaults: every channel."""
    if name == "scorecam":  # K + 1 forward passes per map: one image
        _check_transfer(request, model_name, name, {}, n_images=1)
    else:
        _check_transfer(request, model_name, name, {"relu": False})


# ---- one trace per model, shared, never keeping the model alive -------------------------------
@pytest.mark.parametrize("cls", [GradCAM, GradCAMPlusPlus, EigenCAM, AblationCAM])
def test_traces_are_shared_across_instances_and_release_the_model(cls):
    import gc
    import weakref

    model = tiny_model(size=16, seed=5)
    images = np.random.default_rng(1).random((3, 16, 16, 3), dtype=np.float32)
    first = cls().explain(model, images, TARGETS3)
    again = cls().explain(model.keras, images, TARGETS3)  # another instance, a fresh wrapper
    np.testing.assert_array_equal(first, again)
    fns = {key: fn for key, (fn, _) in traces(model.keras, TRACE_NAME).items() if key[1] is cls}
    assert fns and all(fn.experimental_get_tracing_count() == 1 for fn in fns.values())
    keep = cls()  # an explainer that outlives its model keeps no reference to it
    keep.explain(model, images, TARGETS3)
    ref = weakref.ref(model.keras)
    del model
    gc.collect()
    assert ref() is None


def test_a_shared_cam_trace_runs_eagerly_on_the_model_of_the_call():
    """Under ``run_functions_eagerly`` the traced body runs on every call: it reads the model of
    the call in progress (a weak reference the explainer points before each call)."""
    model = tiny_model(size=16, seed=6)
    images = np.random.default_rng(2).random((3, 16, 16, 3), dtype=np.float32)
    graph = LayerCAM().explain(model, images, TARGETS3)
    tf.config.run_functions_eagerly(True)
    try:
        eager = LayerCAM().explain(model.keras, images, TARGETS3)
    finally:
        tf.config.run_functions_eagerly(False)
    np.testing.assert_allclose(eager, graph, atol=1e-5)
