"""The gradient family (bench_gradients) against independent computations and known identities."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from bench_gradients.engine import ParameterError, compiled_functions  # noqa: E402
from bench_gradients.methods import (  # noqa: E402
    GradientInput,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
    SmoothGradSquared,
    VarGrad,
)

import bench  # noqa: E402
from bench.engine.regions import derive_seed  # noqa: E402
from bench.testing import check_component, checks_for, tiny_model  # noqa: E402

NAMES = {
    "saliency": Saliency,
    "gradient-x-input": GradientInput,
    "integrated-gradients": IntegratedGradients,
    "smoothgrad": SmoothGrad,
    "smoothgrad-squared": SmoothGradSquared,
    "vargrad": VarGrad,
}
NOISY = ("smoothgrad", "smoothgrad-squared", "vargrad")


# ---- the independent computation: one image at a time, eager, own tape -----------------------
def logit_model(keras_model):
    """images -> pre-softmax logits, cut from the model's own graph (its last layer is a Softmax)."""
    last = keras_model.layers[-1]
    assert type(last).__name__ == "Softmax"
    return keras.Model(keras_model.inputs[0], last.input)


def tape_gradient(lm, image: np.ndarray, target: int, compiled: bool = False) -> np.ndarray:
    """d logit_target / d image for one image: eager, or the same code in a tf.function."""

    def grad(x, t):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = lm(x, training=False)[0, t]
        return tape.gradient(y, x)

    if compiled:
        grad = _COMPILED.setdefault(id(lm), (lm, tf.function(grad)))[1]
    x = tf.constant(image[None].astype(np.float32))
    return grad(x, tf.constant(int(target))).numpy()[0].astype(np.float64)


_COMPILED: dict[int, tuple[object, object]] = {}  # id(logit model) -> (model, its tf.function)


def reference(name: str, params: dict, lm, images, targets, ids=None, compiled: bool = False) -> np.ndarray:
    """Raw (N, H, W, C) attributions of method ``name`` by its definition, image by image.

    The points the gradient is taken at are formed in float32, as the harness's images are:
    the random DenseNet201's input gradient changes by ~1% of its maximum under a last-bit
    change of the input (max-pooling ties), which a float64 path point would cause.
    """

    def grad(point, t):
        return tape_gradient(lm, point, t, compiled)

    ids = np.arange(len(images)) if ids is None else ids
    out = []
    for x, t, image_id in zip(images.astype(np.float32), targets, ids, strict=True):
        if name == "saliency":
            out.append(grad(x, t))
        elif name == "gradient-x-input":
            out.append(x * grad(x, t))
        elif name == "integrated-gradients":
            m, rule = params.get("steps", 32), params.get("method", "riemann_right")
            b = np.float32({"black": 0.0, "white": 1.0}.get(params.get("baseline", "black"), params.get("baseline")))
            if rule == "trapezoid":
                alphas, w = np.linspace(0, 1, m + 1), np.r_[0.5, np.ones(m - 1), 0.5] / m
            else:
                k = np.arange(1, m + 1)
                alphas = {"riemann_right": k / m, "riemann_left": (k - 1) / m, "riemann_middle": (k - 0.5) / m}[rule]
                w = np.full(m, 1 / m)
            g = sum(wk * grad(b + np.float32(a) * (x - b), t) for a, wk in zip(alphas, w, strict=True))
            out.append((x - b) * g)
        else:  # the noisy family, the noise by the documented recipe
            n, sigma = params["n"], params["sigma"]
            scale = np.float32(sigma * (x.max() - x.min()) if params.get("noise_range", "image") == "image" else sigma)
            base = derive_seed(params.get("seed", 0), image_id, "gradients.noise")
            grads = np.stack([
                grad(x + scale * np.random.default_rng([base, j]).standard_normal(x.shape, dtype=np.float32), t)
                for j in range(n)
            ])
            out.append({"smoothgrad": grads.mean(0), "smoothgrad-squared": (grads**2).mean(0),
                        "vargrad": grads.var(0)}[name])
    return np.stack(out)


def reduced(raw: np.ndarray, how: str) -> np.ndarray:
    return {"sum": raw.sum(-1), "abs-sum": np.abs(raw).sum(-1), "max-abs": np.abs(raw).max(-1)}[how]


def assert_close(ours, ref, rtol=1e-4):
    ref = np.asarray(ref)
    scale = max(float(np.abs(ref).max()), 1e-12)
    assert np.abs(ref).max() > 0
    np.testing.assert_allclose(ours, ref, atol=rtol * scale, rtol=rtol)


# ---- tiny models -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def linear():
    """logits = W . vec(x) + b, softmax on top."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 5, 3))
    dense = keras.layers.Dense(4, name="logits")
    out = keras.layers.Softmax()(dense(keras.layers.Flatten()(inp)))
    km = keras.Model(inp, out)
    rng = np.random.default_rng(1)
    kernel, bias = rng.normal(size=(90, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    dense.set_weights([kernel, bias])
    images = rng.random((4, 6, 5, 3), dtype=np.float32)
    return bench.KerasModel(km), kernel, images


@pytest.fixture(scope="module")
def smooth():
    """A small nonlinear (smooth) CNN: tanh / softplus, so Riemann errors are visible but shrink."""
    keras.utils.set_random_seed(2)
    inp = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="tanh")(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="softplus")(x)
    x = keras.layers.Dense(16, activation="tanh")(keras.layers.Flatten()(x))
    out = keras.layers.Softmax()(keras.layers.Dense(3)(x))
    km = keras.Model(inp, out)
    km.set_weights([w * 2 for w in km.get_weights()])  # stronger curvature, logit gaps of ~0.2-3
    images = np.random.default_rng(3).random((5, 10, 10, 3), dtype=np.float32)
    targets = np.array([0, 1, 2, 1, 0])
    return bench.KerasModel(km), logit_model(km), images, targets


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


# ---- registration and the conformance kit -----------------------------------------------------
def test_registered_with_documented_defaults():
    for name, cls in NAMES.items():
        spec = bench.registry().get("explainer", name).spec
        component = bench.create("explainer", name)
        assert type(component) is cls
        assert component.get_params() == dict(spec.parameters), name
        reduce = component.get_params()["reduce"]
        assert f"reduce='{reduce}'" in spec.description and "pass" in spec.description, name
    assert bench.create("explainer", "integrated-gradients", steps=8).passes_per_map() == 8
    assert IntegratedGradients(steps=8, method="trapezoid").passes_per_map() == 9
    assert SmoothGrad(n=7).passes_per_map() == 7 and Saliency().passes_per_map() == 1


@pytest.mark.parametrize("name", list(NAMES))
def test_conformance_kit(name, tiny):
    component = bench.create("explainer", name)
    names = [n for n, _ in checks_for(component)]
    assert "check_explainer_output" in names and "check_explainer_batch_independent" in names
    check_component(component, tiny)


def test_bad_parameters_name_the_parameter(smooth):
    model, _, images, targets = smooth
    bad = [
        (IntegratedGradients(steps=0), "steps"), (IntegratedGradients(baseline="grey"), "baseline"),
        (IntegratedGradients(method="simpson"), "method"), (Saliency(reduce="mean"), "reduce"),
        (SmoothGrad(sigma=-0.1), "sigma"), (VarGrad(noise_range="global"), "noise_range"),
        (SmoothGradSquared(n=0), "n"), (GradientInput(batch_size=0), "batch_size"),
    ]
    for component, param in bad:
        with pytest.raises(ParameterError, match=param) as info:
            component.validate()
        assert info.value.param == param
        with pytest.raises(ParameterError):
            component.explain(model, images, targets)
    with pytest.raises(ValueError, match="targets"):
        Saliency().explain(model, images, np.array([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match="targets"):
        Saliency().explain(model, images, targets[:2])


# ---- closed forms on a linear model -----------------------------------------------------------
def test_linear_model_closed_forms(linear):
    model, kernel, images = linear
    targets = np.array([0, 3, 1, 2])
    w = kernel.T.reshape(4, 6, 5, 3)[targets]  # d logit_c / d x = W_c
    np.testing.assert_allclose(Saliency().attributions(model, images, targets), w, atol=1e-6)
    np.testing.assert_allclose(Saliency().explain(model, images, targets), np.abs(w).max(-1), atol=1e-6)
    gxi = GradientInput().explain(model, images, targets)
    np.testing.assert_allclose(gxi, (images * w).sum(-1), atol=1e-5)
    for how in ("abs-sum", "max-abs"):
        np.testing.assert_allclose(
            GradientInput(reduce=how).explain(model, images, targets), reduced(images * w, how), atol=1e-5
        )
    # zero baseline: IG == Gradient x Input exactly, whatever the steps and the rule
    raw_gxi = GradientInput().attributions(model, images, targets)
    for steps in (1, 2, 7, 32):
        for method in ("riemann_right", "riemann_left", "riemann_middle", "trapezoid"):
            ig = IntegratedGradients(steps=steps, method=method, batch_size=5)
            np.testing.assert_allclose(ig.attributions(model, images, targets), raw_gxi, atol=1e-6)
            np.testing.assert_allclose(ig.explain(model, images, targets), gxi, atol=1e-5)
    ig_white = IntegratedGradients(steps=3, baseline="white").attributions(model, images, targets)
    np.testing.assert_allclose(ig_white, (images - 1) * w, atol=1e-5)
    ig_gray = IntegratedGradients(steps=3, baseline=0.5).attributions(model, images, targets)
    np.testing.assert_allclose(ig_gray, (images - 0.5) * w, atol=1e-5)


# ---- against the independent per-image tape on a nonlinear model -------------------------------
CASES = [
    ("saliency", {}), ("saliency", {"reduce": "sum"}), ("gradient-x-input", {}),
    ("gradient-x-input", {"reduce": "abs-sum"}),
    ("integrated-gradients", {"steps": 4}), ("integrated-gradients", {"steps": 3, "method": "riemann_left"}),
    ("integrated-gradients", {"steps": 3, "method": "riemann_middle", "baseline": "white"}),
    ("integrated-gradients", {"steps": 3, "method": "trapezoid", "baseline": 0.3, "reduce": "max-abs"}),
    ("smoothgrad", {"n": 4, "sigma": 0.2}), ("smoothgrad", {"n": 3, "sigma": 0.3, "noise_range": "input"}),
    ("smoothgrad-squared", {"n": 4, "sigma": 0.2, "seed": 5}), ("vargrad", {"n": 4, "sigma": 0.2}),
    ("vargrad", {"n": 3, "sigma": 0.1, "reduce": "max-abs"}),
]


@pytest.mark.parametrize("name, params", CASES, ids=[f"{n}-{'-'.join(map(str, p.values()))}" for n, p in CASES])
def test_matches_independent_tape(smooth, name, params):
    model, lm, images, targets = smooth
    ids = np.array(["a", "b", "c", "d", "e"])
    explainer = NAMES[name](**params, batch_size=3)
    raw = explainer.attributions(model, images, targets, ids=ids)
    ref = reference(name, params, lm, images, targets, ids)
    assert raw.shape == images.shape and raw.dtype == np.float32
    assert_close(raw, ref)
    maps = explainer.explain(model, images, targets, ids=ids)
    assert maps.shape == (5, 10, 10) and maps.dtype == np.float32
    assert_close(maps, reduced(ref, explainer.reduce))


def test_integrated_gradients_completeness(smooth):
    """sum of raw attributions = logit(x) - logit(baseline), the error shrinking with steps."""
    model, lm, images, targets = smooth
    rows = np.arange(len(images))
    # right Riemann: error O(1/m); midpoint and trapezoid: O(1/m^2)
    for baseline, method, shrink, tol in (
        ("black", "riemann_right", 4, 1e-2), (0.5, "riemann_right", 4, 1e-2),
        ("black", "riemann_middle", 50, 1e-3), ("white", "trapezoid", 50, 1e-3),
    ):
        b = {"black": 0.0, "white": 1.0}.get(baseline, baseline)
        gap = lm(images).numpy()[rows, targets].astype(np.float64)
        gap -= lm(np.full_like(images, b)).numpy()[rows, targets]
        assert np.abs(gap).min() > 0.1  # a real gap to account for
        errors = {}
        for steps in (8, 128):
            ig = IntegratedGradients(steps=steps, baseline=baseline, method=method, batch_size=64)
            total = ig.attributions(model, images, targets).astype(np.float64).sum(axis=(1, 2, 3))
            errors[steps] = np.abs(total - gap).max()
        assert errors[8] > 1e-3, (baseline, method, errors)  # the coarse rule's error is visible
        assert errors[128] < errors[8] / shrink, (baseline, method, errors)
        assert errors[128] < tol * max(1.0, np.abs(gap).max()), (baseline, method, errors)


# ---- identities of the noisy family ----------------------------------------------------------
def test_smoothgrad_one_noiseless_copy_is_saliency(smooth):
    model, _, images, targets = smooth
    sal = Saliency()
    for noise_range in ("image", "input"):
        sg = SmoothGrad(n=1, sigma=0.0, noise_range=noise_range)
        np.testing.assert_allclose(sg.attributions(model, images, targets), sal.attributions(model, images, targets), rtol=1e-6, atol=0)
        np.testing.assert_allclose(sg.explain(model, images, targets), sal.explain(model, images, targets), rtol=1e-6, atol=0)
    sq = SmoothGradSquared(n=1, sigma=0.0).attributions(model, images, targets)
    np.testing.assert_allclose(sq, sal.attributions(model, images, targets).astype(np.float64) ** 2, rtol=1e-5, atol=1e-12)
    assert not VarGrad(n=1, sigma=0.3).explain(model, images, targets).any()


def test_second_moment_identities(smooth):
    model, _, images, targets = smooth
    params = {"n": 8, "sigma": 0.25, "seed": 3}
    mean = SmoothGrad(**params).attributions(model, images, targets).astype(np.float64)
    mean_sq = SmoothGradSquared(**params).attributions(model, images, targets).astype(np.float64)
    var = VarGrad(**params).attributions(model, images, targets).astype(np.float64)
    assert (mean_sq >= mean**2 - 1e-6 * mean_sq.max()).all()  # E[g^2] >= E[g]^2
    np.testing.assert_allclose(var, mean_sq - mean**2, atol=1e-5 * mean_sq.max())
    assert var.max() > 1e-3 * mean_sq.max()  # the noise really changes the gradient
    assert (SmoothGradSquared(**params).explain(model, images, targets) >= 0).all()


def _quadratic_model(shape):
    """logit_0 = sum(x^2) / 2: its gradient is x itself, so noisy gradients are x + noise."""
    inp = keras.Input(shape)
    sq = keras.layers.Flatten()(keras.layers.Multiply()([inp, inp]))
    dense = keras.layers.Dense(2, use_bias=False)
    km = keras.Model(inp, keras.layers.Softmax()(dense(sq)))
    kernel = np.zeros((int(np.prod(shape)), 2), np.float32)
    kernel[:, 0] = 0.5
    dense.set_weights([kernel])
    return km


def test_noise_level_relative_to_the_range():
    """VarGrad of logit = |x|^2 / 2 is the noise variance: (sigma * (max - min))^2 or sigma^2."""
    km = _quadratic_model((4, 4, 3))
    rng = np.random.default_rng(4)
    images = rng.uniform(0.25, 0.75, (3, 4, 4, 3)).astype(np.float32)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = 0.25, 0.75  # range 0.5 exactly
    targets = np.zeros(3, int)
    for noise_range, sd in (("image", 0.2 * 0.5), ("input", 0.2)):
        params = {"n": 300, "sigma": 0.2, "noise_range": noise_range, "batch_size": 128}
        var = VarGrad(**params).attributions(km, images, targets)
        assert abs(var.mean() / sd**2 - 1) < 0.1, (noise_range, var.mean(), sd**2)
        mean = SmoothGrad(**params).attributions(km, images, targets)
        assert np.abs(mean - images).max() < 5 * sd / np.sqrt(300)


# ---- batching, ids, tracing ------------------------------------------------------------------
@pytest.mark.parametrize("name, params", [
    ("integrated-gradients", {"steps": 5}), ("smoothgrad", {"n": 5, "sigma": 0.2}),
    ("vargrad", {"n": 5, "sigma": 0.2}),
])
def test_independent_of_batch_size_and_order(smooth, name, params):
    model, _, images, targets = smooth
    ids = np.array([11, 12, 13, 14, 15])
    base = NAMES[name](**params, batch_size=64).explain(model, images, targets, ids=ids)
    for bs in (1, 3, 7):
        np.testing.assert_allclose(
            NAMES[name](**params, batch_size=bs).explain(model, images, targets, ids=ids), base,
            rtol=1e-5, atol=1e-6 * np.abs(base).max(),
        )
    perm = np.array([3, 0, 4, 2, 1])
    shuffled = NAMES[name](**params, batch_size=4).explain(model, images[perm], targets[perm], ids=ids[perm])
    np.testing.assert_allclose(shuffled, base[perm], rtol=1e-5, atol=1e-6 * np.abs(base).max())
    singles = np.concatenate([
        NAMES[name](**params).explain(model, images[i : i + 1], targets[i : i + 1], ids=ids[i : i + 1])
        for i in range(5)
    ])
    np.testing.assert_allclose(singles, base, rtol=1e-5, atol=1e-6 * np.abs(base).max())
    if name in NOISY:  # the noise follows the id: other ids, other maps; no ids = the index
        other = NAMES[name](**params).explain(model, images, targets, ids=ids + 100)
        assert np.abs(other - base).max() > 1e-3 * np.abs(base).max()
        by_index = NAMES[name](**params).explain(model, images, targets)
        np.testing.assert_allclose(
            by_index, NAMES[name](**params).explain(model, images, targets, ids=np.arange(5)), rtol=1e-6
        )


def test_one_trace_per_model_and_shape_shared_by_the_family(smooth):
    model, _, images, targets = smooth
    km = keras.models.clone_model(model.keras)  # a fresh model: nothing cached yet
    km.set_weights(model.keras.get_weights())
    for cls, kw in ((Saliency, {}), (IntegratedGradients, {"steps": 3, "batch_size": 4}),
                    (SmoothGrad, {"n": 3, "batch_size": 7}), (VarGrad, {"n": 2}), (GradientInput, {})):
        for n in (5, 2, 1):
            cls(**kw).explain(km, images[:n], targets[:n])  # a plain keras.Model, wrapped afresh
    fns = compiled_functions(km)
    assert list(fns) == [(10, 10, 3)]
    assert fns[(10, 10, 3)].experimental_get_tracing_count() == 1


def test_empty_batch(smooth):
    model, _, images, targets = smooth
    for cls in NAMES.values():
        out = cls().explain(model, images[:0], targets[:0])
        assert out.shape == (0, 10, 10) and out.dtype == np.float32


def test_harness_compute_heatmaps_passes_ids(smooth):
    from bench.pipeline.explain import compute_heatmaps

    model, _, images, targets = smooth
    ids = np.array(["p", "q", "r", "s", "t"])
    sg = SmoothGrad(n=3, sigma=0.2)
    via_harness = compute_heatmaps(sg, model, images, targets, ids=ids, batch_size=2)
    np.testing.assert_allclose(via_harness, sg.explain(model, images, targets, ids=ids), rtol=1e-5, atol=1e-9)


# ---- the nested transfer models --------------------------------------------------------------
_TRANSFER: dict[str, object] = {}


def transfer(name: str):
    """vgg16 / densenet201 at 32 px (random backbone), built once per module."""
    if name not in _TRANSFER:
        m = bench.create("model", name, weights="none", input_shape=[32, 32, 3], num_classes=4, pool_size=1)
        m.keras  # noqa: B018
        _TRANSFER[name] = m
    return _TRANSFER[name]


_LOGITS: dict[str, object] = {}
SMALL = {
    "saliency": {}, "gradient-x-input": {}, "integrated-gradients": {"steps": 3},
    "smoothgrad": {"n": 2, "sigma": 0.2}, "smoothgrad-squared": {"n": 2, "sigma": 0.2},
    "vargrad": {"n": 2, "sigma": 0.2},
}


def _check_on_transfer(model_name: str, name: str, n_images: int = 2) -> None:
    model = transfer(model_name)
    images = np.random.default_rng(8).random((n_images, 32, 32, 3), dtype=np.float32)
    targets = np.arange(n_images) % 4
    explainer = NAMES[name](**SMALL[name])
    maps = explainer.explain(model, images, targets)
    assert maps.shape == (n_images, 32, 32) and maps.dtype == np.float32
    # DenseNet201's reference runs in a tf.function: with oneDNN on, TensorFlow's eager and
    # graph kernels give input gradients of this random 201-layer net that differ by ~1.5% of
    # their maximum (with TF_ENABLE_ONEDNN_OPTS=0 they agree to 1e-7)
    if model_name not in _LOGITS:
        _LOGITS[model_name] = logit_model(model.keras)
    lm = _LOGITS[model_name]
    ref = reference(name, SMALL[name], lm, images, targets, compiled=model_name == "densenet201")
    assert_close(explainer.attributions(model, images, targets), ref, rtol=2e-4)
    assert_close(maps, reduced(ref, explainer.reduce), rtol=2e-4)


@pytest.mark.parametrize("name", list(NAMES))
def test_every_method_on_nested_vgg16(name):
    _check_on_transfer("vgg16", name)


@pytest.mark.parametrize("name", ["saliency", "integrated-gradients"])
def test_nested_densenet201(name):
    _check_on_transfer("densenet201", name, n_images=1)


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["vgg16", "densenet201"])
@pytest.mark.parametrize("name", list(NAMES))
def test_full_method_model_matrix(model_name, name):
    _check_on_transfer(model_name, name, n_images=3)


# ---- the shared trace memo (bench.engine.tracing) ---------------------------------------------
def test_the_trace_memo_keys_by_model_structure_and_function_name():
    import gc
    import weakref

    from bench.engine import tracing

    km = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d1")])
    built = []

    def build(tag):
        def make():
            built.append(tag)
            return object()
        return make

    a = tracing.traced(km, ("t.one", 1), build("a"))
    assert tracing.traced(km, ("t.one", 1), build("again")) is a  # memoised: built once
    b = tracing.traced(km, ("t.two", 1), build("b"))  # another function: never the same trace
    c = tracing.traced(km, ("t.one", 2), build("c"))  # another signature
    assert len({id(a), id(b), id(c)}) == 3 and built == ["a", "b", "c"]
    assert set(tracing.traces(km)) == {("t.one", 1), ("t.two", 1), ("t.one", 2)}
    assert set(tracing.traces(km, "t.two")) == {("t.two", 1)}
    other = keras.models.clone_model(km)  # equal, but another model: its own traces
    assert tracing.traced(other, ("t.one", 1), build("other")) is not a
    km.add(keras.layers.Dense(2, name="d2"))  # a changed model: the old traces are stale
    assert tracing.traces(km) == {}
    assert tracing.traced(km, ("t.one", 1), build("changed")) is not a and built[-1] == "changed"
    tracing.forget(km)
    assert tracing.traces(km) == {}
    for bad in ("t.one", (), (1, 2), ("",), ("t", [1])):
        with pytest.raises(TypeError, match="trace key"):
            tracing.traced(km, bad, build("bad"))
    class NoWeakRef:
        __slots__ = ()

    odd = NoWeakRef()  # cannot be held weakly: built afresh each time (correct, not memoised)
    assert tracing.traced(odd, ("t.one", 1), build("x")) is not tracing.traced(odd, ("t.one", 1), build("y"))
    assert tracing.traces(odd) == {}
    # weak in the model: dropping it drops its traces
    ref = weakref.ref(other)
    del other
    gc.collect()
    assert ref() is None


def test_the_gradient_and_score_traces_do_not_keep_a_model_alive():
    import gc
    import weakref

    from bench_occlusion.engine import compiled_functions as score_functions
    from bench_occlusion.occlusion import Occlusion

    model = tiny_model(size=16, seed=3)
    images = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    Saliency().explain(model, images, [0, 1])
    Occlusion(grid=2).explain(model, images, [0, 1])
    keras_model = model.keras
    assert list(compiled_functions(keras_model)) == [(16, 16, 3)] == list(score_functions(keras_model))
    ref = weakref.ref(keras_model)
    del model, keras_model
    gc.collect()
    assert ref() is None
