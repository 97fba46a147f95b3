"""Occlusion (bench_occlusion) against a brute-force loop of single-window perturbations."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from _perturbation_models import logit_model, softmax_cnn  # noqa: E402
from bench_gradients.engine import ParameterError  # noqa: E402
from bench_occlusion.engine import compiled_functions  # noqa: E402
from bench_occlusion.occlusion import Occlusion  # noqa: E402

import bench  # noqa: E402
from bench.testing import check_component, checks_for, tiny_model  # noqa: E402

SIZE = 32


@pytest.fixture(scope="module")
def setup():
    model = softmax_cnn(SIZE, seed=3)
    rng = np.random.default_rng(7)
    images = rng.random((3, SIZE, SIZE, 3), dtype=np.float32)
    images[1] = images[1].mean(axis=-1, keepdims=True)  # a gray one among colour ones
    targets = np.array([2, 0, 3])
    return model, logit_model(model), images, targets


# ---- the independent computation: one occluded image per model call, eager ----------------
def grid_windows(size: int, parts: int) -> list[tuple[int, int, int, int]]:
    """The grid's blocks as np.array_split cuts them (the first size % parts blocks 1 px larger)."""
    cuts = [(int(b[0]), int(b[-1]) + 1) for b in np.array_split(np.arange(size), parts)]
    return [(y0, y1, x0, x1) for y0, y1 in cuts for x0, x1 in cuts]


def sliding_windows(size: int, patch: int, stride: int) -> list[tuple[int, int, int, int]]:
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] + patch < size:
        starts.append(size - patch)
    return [(y, y + patch, x, x + patch) for y in starts for x in starts]


def brute_drops(model, lm, images, targets, windows, fill, score) -> np.ndarray:
    """(N, L): f(x) - f(x with window l set to the fill), one model call per occluded image."""

    def f(image, t):
        out = (lm if score == "logit" else model)(image[None], training=False)
        return float(np.asarray(out)[0, t])

    drops = np.empty((len(images), len(windows)))
    for i, (image, t) in enumerate(zip(images, targets, strict=True)):
        value = float(image.mean()) if fill == "mean" else fill
        base = f(image, t)
        for k, (y0, y1, x0, x1) in enumerate(windows):
            occluded = image.copy()
            occluded[y0:y1, x0:x1, :] = value
            drops[i, k] = base - f(occluded, t)
    return drops


# ---- the method --------------------------------------------------------------------------
@pytest.mark.parametrize("score", ["probability", "logit"])
@pytest.mark.parametrize("fill", [0.0, "mean"])
def test_grid_equals_brute_force(setup, score, fill):
    model, lm, images, targets = setup
    occ = Occlusion(grid=9, fill=fill, score=score, batch_size=37)  # chunks span images
    maps = occ.explain(model, images, targets)
    assert maps.shape == (3, 9, 9) and maps.dtype == np.float32
    ref = brute_drops(model, lm, images, targets, grid_windows(SIZE, 9), fill, score)
    np.testing.assert_allclose(maps.reshape(3, -1), ref, rtol=1e-4, atol=2e-6)
    assert np.abs(ref).max() > 1e-3  # the drops are not all ~0: the comparison has teeth


def test_rectangular_grid_and_fill_value(setup):
    model, lm, images, targets = setup
    occ = Occlusion(grid=(2, 4), fill=0.5, score="logit")
    maps = occ.explain(model, images[:1], targets[:1])
    rows = [(0, 16), (16, 32)]
    cols = [(0, 8), (8, 16), (16, 24), (24, 32)]
    windows = [(y0, y1, x0, x1) for y0, y1 in rows for x0, x1 in cols]
    ref = brute_drops(model, lm, images[:1], targets[:1], windows, 0.5, "logit")
    assert maps.shape == (1, 2, 4)
    np.testing.assert_allclose(maps.reshape(1, -1), ref, rtol=1e-4, atol=2e-6)


def test_patch_stride_pixel_map_averages_overlaps(setup):
    model, lm, images, targets = setup
    occ = Occlusion(patch=8, stride=5, fill="mean", batch_size=16)
    maps = occ.explain(model, images[:2], targets[:2])
    windows = sliding_windows(SIZE, 8, 5)  # starts 0, 5, 10, 15, 20 and 24 (flush with the edge)
    assert len(windows) == 36 and occ.passes_per_map((SIZE, SIZE)) == 37
    drops = brute_drops(model, lm, images[:2], targets[:2], windows, "mean", "probability")
    ref = np.zeros((2, SIZE, SIZE))
    for i in range(2):
        for y in range(SIZE):
            for x in range(SIZE):
                covering = [k for k, (y0, y1, x0, x1) in enumerate(windows) if y0 <= y < y1 and x0 <= x < x1]
                ref[i, y, x] = np.mean(drops[i, covering])
    assert maps.shape == (2, SIZE, SIZE)
    np.testing.assert_allclose(maps, ref, rtol=1e-4, atol=2e-6)


def test_stride_defaults_to_the_patch(setup):
    model, _, images, targets = setup
    a = Occlusion(patch=(8, 16)).explain(model, images[:1], targets[:1])
    b = Occlusion(patch=(8, 16), stride=(8, 16)).explain(model, images[:1], targets[:1])
    np.testing.assert_array_equal(a, b)
    assert Occlusion(patch=(8, 16)).passes_per_map((SIZE, SIZE)) == 4 * 2 + 1
    assert len(np.unique(a[0])) <= 8  # one value per non-overlapping window


# ---- batching: chunks bounded, one trace, independent of batch size and order --------------
def test_streamed_in_bounded_chunks_through_one_trace():
    log: list[int] = []
    model = softmax_cnn(SIZE, seed=5, spy=log)
    rng = np.random.default_rng(1)
    images = rng.random((4, SIZE, SIZE, 3), dtype=np.float32)
    targets = np.array([0, 1, 2, 3])
    ref = Occlusion(grid=4, batch_size=1, strategy="full").explain(model, images, targets)
    for batch_size in (5, 17, 100):
        del log[:]
        maps = Occlusion(grid=4, batch_size=batch_size, strategy="full").explain(model, images, targets)
        assert max(log) <= batch_size and sum(log) == 4 * 17, (batch_size, log)
        np.testing.assert_allclose(maps, ref, rtol=1e-5, atol=1e-7)
    perm = np.array([2, 0, 3, 1])
    shuffled = Occlusion(grid=4, batch_size=5, strategy="full").explain(model, images[perm], targets[perm])
    np.testing.assert_allclose(shuffled, ref[perm], rtol=1e-5, atol=1e-7)
    Occlusion(grid=9, score="logit", strategy="full").explain(model, images[:1], targets[:1])
    fns = compiled_functions(model)
    assert list(fns) == [(SIZE, SIZE, 3)]  # both scores and every batch size: one function ...
    assert fns[(SIZE, SIZE, 3)].experimental_get_tracing_count() == 1  # ... traced once


def test_through_the_harness(setup):
    from bench.pipeline.explain import compute_heatmaps

    model, _, images, targets = setup
    uint8 = (images * 255).round().astype(np.uint8)
    via = compute_heatmaps("occlusion", model, uint8, targets, batch_size=2)
    direct = Occlusion().explain(model, uint8.astype(np.float32) / 255, targets)
    np.testing.assert_allclose(via, direct, rtol=1e-5, atol=1e-7)


# ---- strategies: the incremental engine equals full passes ----------------------------------
def vgg_like(size: int = 32, *, softmax_layer: bool = False, seed: int = 0):
    """A small VGG-shaped conv net: (Conv, Conv, MaxPool) x 2, Conv, MaxPool, Flatten, Dense, softmax."""
    L = keras.layers
    keras.utils.set_random_seed(seed)
    x_in = keras.Input((size, size, 3))
    x = L.Rescaling(2.0, offset=-1.0)(x_in)
    for filters in (8, 16):
        x = L.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = L.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = L.MaxPooling2D(2)(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = L.Flatten()(L.MaxPooling2D(2)(x))
    x = L.Dense(16, activation="relu")(x)
    out = L.Softmax()(L.Dense(4)(x)) if softmax_layer else L.Dense(4, activation="softmax")(x)
    return keras.Model(x_in, out, name=f"vgg_like_{size}_{int(softmax_layer)}")


def _live(keras_model, images, seed: int = 0, target_sd: float = 2.0):
    """Weights re-initialised and the logits spread by ~target_sd (probabilities move, not
    saturate); the last Dense is scaled whether it carries the softmax or a Softmax layer follows."""
    from test_incremental import reinit

    from bench.models import as_bench_model

    reinit(keras_model, seed=seed)
    logits = as_bench_model(keras_model).logits_keras
    last = [layer for layer in keras_model.layers if type(layer).__name__ == "Dense"][-1]
    for _ in range(3):
        z = np.asarray(logits(images[:4]))
        sd = float(np.std(z - z.mean(axis=1, keepdims=True))) + 1e-12
        last.kernel.assign(last.kernel * (target_sd / sd))
        last.bias.assign(last.bias * (target_sd / sd))
    return keras_model


NETS = ("vgg-like", "vgg-like-softmax-layer", "hand-built", "tiny", "softmax-cnn")


@pytest.fixture(scope="module")
def nets():
    """name -> (model, images, targets): the models built once (their traces are shared)."""
    from test_incremental import hand_built_net

    rng = np.random.default_rng(11)
    out = {}
    for name in NETS:
        size = 37 if name == "hand-built" else SIZE
        images = rng.random((2, size, size, 3), dtype=np.float32)
        if name == "vgg-like":
            model = _live(vgg_like(size), images)
        elif name == "vgg-like-softmax-layer":
            model = _live(vgg_like(size, softmax_layer=True), images, seed=1)
        elif name == "hand-built":
            model = _live(hand_built_net(size), images, seed=2)
        elif name == "tiny":
            model = tiny_model(size)  # bench.testing's (a bench model, Dense softmax)
        else:
            model = softmax_cnn(size, seed=9)  # this file's (an explicit Softmax layer)
        out[name] = (model, images, np.array([1, 3]))
    return out


WINDOWS = {"grid": {"grid": 4}, "overlapping": {"patch": 12, "stride": 7}}


@pytest.mark.parametrize("fill", [0.0, "mean"])
@pytest.mark.parametrize("windows", list(WINDOWS))
@pytest.mark.parametrize("score", ["probability", "logit"])
@pytest.mark.parametrize("net", NETS)
def test_incremental_equals_full_passes(nets, net, score, windows, fill):
    model, images, targets = nets[net]
    params = {**WINDOWS[windows], "fill": fill, "score": score, "batch_size": 7}
    full = Occlusion(**params, strategy="full")
    inc = Occlusion(**params, strategy="incremental")
    ref = full.explain(model, images, targets)
    maps = inc.explain(model, images, targets)
    assert full.strategy_info_["used"] == "full" and inc.strategy_info_["used"] == "incremental"
    assert maps.shape == ref.shape and maps.dtype == np.float32
    np.testing.assert_allclose(maps, ref, rtol=0, atol=1e-5)
    assert np.abs(ref).max() > 1e-3  # the maps are not all ~0: the comparison has teeth
    n_windows = len(full.windows(images.shape[1:3]))
    assert full.passes_per_map() == n_windows + 1
    gain = inc.strategy_info_["predicted_gain"]
    assert inc.passes_per_map() == pytest.approx(1 + n_windows / gain)


def test_auto_runs_incrementally_where_a_gain_is_predicted():
    size = 96
    images = np.random.default_rng(5).random((2, size, size, 3), dtype=np.float32)
    model = _live(vgg_like(size), images, seed=3)
    targets = np.array([0, 2])
    auto = Occlusion(grid=6, strategy="auto")
    maps = auto.explain(model, images, targets)
    info = auto.strategy_info_
    assert info["requested"] == "auto" and info["used"] == "incremental", info
    assert info["predicted_gain"] > 1 and "predicted gain" in info["reason"]
    ref = Occlusion(grid=6, strategy="full").explain(model, images, targets)
    np.testing.assert_allclose(maps, ref, rtol=0, atol=1e-5)
    assert auto.passes_per_map() < 37 and Occlusion(grid=6).passes_per_map() == 37  # before a call: full


def test_auto_falls_back_to_full_passes_with_the_reason():
    model = bench.create("model", "simple-cnn", weights="none", input_shape=(SIZE, SIZE, 3), num_classes=4)
    images = np.random.default_rng(6).random((2, SIZE, SIZE, 3), dtype=np.float32)
    _live(model.keras, images, seed=4)
    targets = np.array([1, 2])
    auto = Occlusion(grid=4, score="logit")
    maps = auto.explain(model, images, targets)
    assert auto.strategy_info_["used"] == "full"
    assert "PerImageStandardization" in auto.strategy_info_["reason"]
    full = Occlusion(grid=4, score="logit", strategy="full")
    np.testing.assert_array_equal(maps, full.explain(model, images, targets))  # the same full-pass path
    assert auto.passes_per_map() == 17
    forced = Occlusion(grid=4, score="logit", strategy="incremental")
    np.testing.assert_allclose(forced.explain(model, images, targets), maps, rtol=0, atol=1e-5)


def test_a_failed_graph_walk_falls_back_or_fails_as_requested(monkeypatch):
    from bench.engine import incremental
    from bench.errors import ConfigError

    def broken(*args, **kwargs):
        raise RuntimeError("the walk broke")

    model = softmax_cnn(SIZE, seed=12)
    images = np.random.default_rng(8).random((2, SIZE, SIZE, 3), dtype=np.float32)
    targets = np.array([0, 1])
    ref = Occlusion(grid=3, strategy="full").explain(model, images, targets)
    monkeypatch.setattr(incremental, "cached_plan", broken)
    auto = Occlusion(grid=3)
    np.testing.assert_array_equal(auto.explain(model, images, targets), ref)
    assert auto.strategy_info_["used"] == "full" and "the walk broke" in auto.strategy_info_["reason"]
    with pytest.raises(ConfigError, match="the walk broke"):
        Occlusion(grid=3, strategy="incremental").explain(model, images, targets)


def test_pixel_map_cost_is_known_after_a_call(setup):
    """The harness asks ``passes_per_map()`` after the maps, without the image size."""
    model, _, images, targets = setup
    occ = Occlusion(patch=8, stride=5, strategy="full")
    occ.explain(model, images[:1], targets[:1])
    assert occ.passes_per_map() == 37 == occ.passes_per_map((SIZE, SIZE))


# ---- registration, parameters, the conformance kit ------------------------------------------
def test_registered_with_documented_defaults():
    spec = bench.registry().get("explainer", "occlusion").spec
    occ = bench.create("explainer", "occlusion")
    assert type(occ) is Occlusion and spec.role == "method"
    assert occ.get_params() == dict(spec.parameters)
    for stated in ("grid=9", "fill=0.0", "black", "score='probability'", "L+1 forward passes"):
        assert stated in spec.description, stated
    assert occ.passes_per_map() == 82 and Occlusion(grid=(3, 4)).passes_per_map() == 13
    with pytest.raises(ValueError, match="image_shape"):
        Occlusion(patch=8).passes_per_map()


@pytest.mark.parametrize(
    "params, culprit",
    [
        ({"grid": 0}, "grid"), ({"grid": "nine"}, "grid"), ({"patch": 0}, "patch"),
        ({"patch": 4, "stride": (0, 1)}, "stride"), ({"stride": 4}, "stride"),
        ({"fill": "grey"}, "fill"), ({"fill": float("nan")}, "fill"), ({"score": "loss"}, "score"),
        ({"batch_size": 0}, "batch_size"), ({"strategy": "fast"}, "strategy"),
    ],
)
def test_bad_parameters_name_the_parameter(params, culprit):
    with pytest.raises(ParameterError) as info:
        Occlusion(**params).validate()
    assert info.value.param == culprit


def test_window_larger_than_the_image_is_a_clear_error(setup):
    model, _, images, targets = setup
    with pytest.raises(ParameterError, match="patch 40 is larger than the image"):
        Occlusion(patch=40).explain(model, images[:1], targets[:1])
    with pytest.raises(ParameterError, match="grid"):
        Occlusion(grid=33).explain(model, images[:1], targets[:1])


def test_conformance_kit():
    occ = bench.create("explainer", "occlusion", grid=4)
    names = [n for n, _ in checks_for(occ)]
    assert "check_explainer_batch_independent" in names
    assert "check_control_ignores_the_model" not in names  # a method
    check_component(occ, tiny_model())
    check_component(bench.create("explainer", "occlusion", grid=4, strategy="incremental"), tiny_model())


# ---- the nested transfer model --------------------------------------------------------------
@pytest.fixture(scope="module")
def vgg16():
    model = bench.create("model", "vgg16", weights="none", input_shape=[64, 64, 3], pool_size=2)
    model.keras  # noqa: B018
    return model


def test_smoke_on_nested_vgg16(vgg16):
    images = np.random.default_rng(2).random((1, 64, 64, 3), dtype=np.float32)
    targets = np.array([1])
    maps = Occlusion(grid=3, fill="mean", score="logit", batch_size=4).explain(vgg16, images, targets)
    assert maps.shape == (1, 3, 3) and np.all(np.isfinite(maps))
    ref = brute_drops(vgg16.keras, logit_model(vgg16.keras), images, targets, grid_windows(64, 3), "mean", "logit")
    np.testing.assert_allclose(maps.reshape(1, -1), ref, rtol=1e-3, atol=1e-4)


def test_the_incremental_path_does_not_keep_a_model_alive():
    import gc
    import weakref

    model = tiny_model(size=16, seed=3)
    images = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    for score in ("probability", "logit"):  # the model itself, then its memoised logits network
        occ = Occlusion(grid=2, score=score, strategy="incremental")
        occ.explain(model, images, [0, 1])
        assert occ.strategy_info_["used"] == "incremental"
    ref = weakref.ref(model.keras)
    del model, occ
    gc.collect()
    assert ref() is None
