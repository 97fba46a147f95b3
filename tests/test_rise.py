"""RISE (bench_occlusion.rise) against a direct reference implementation of the paper's recipe."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from _perturbation_models import softmax_cnn  # noqa: E402
from bench_gradients.engine import ParameterError  # noqa: E402
from bench_occlusion.engine import compiled_functions  # noqa: E402
from bench_occlusion.occlusion import Occlusion  # noqa: E402
from bench_occlusion.rise import RISE  # noqa: E402

import bench  # noqa: E402
from bench.engine.regions import derive_seed  # noqa: E402
from bench.testing import check_component, checks_for, tiny_model  # noqa: E402

SIZE = 32


@pytest.fixture(scope="module")
def setup():
    model = softmax_cnn(SIZE, seed=11)
    images = np.random.default_rng(4).random((3, SIZE, SIZE, 3), dtype=np.float32)
    return model, images, np.array([1, 3, 0]), np.array(["a-17", "b-2", "c-9"])


# ---- the reference: the paper's recipe written out, one masked image per model call --------
def reference_masks(seed, image_id, n_masks, cell, p, h, w) -> np.ndarray:
    """(n_masks, H, W): binary cell x cell grids, bilinear upsampling (tf.image.resize, half-pixel
    centres, no antialiasing) to (cell + 1) * ceil(size / cell), cropped at a random shift."""
    rng = np.random.default_rng(derive_seed(seed, image_id, "rise.masks"))
    grids = rng.random((n_masks, cell, cell)) < p
    ch, cw = math.ceil(h / cell), math.ceil(w / cell)
    dy, dx = rng.integers(0, ch, n_masks), rng.integers(0, cw, n_masks)
    up = tf.image.resize(grids[..., None].astype(np.float32), ((cell + 1) * ch, (cell + 1) * cw), "bilinear")
    up = up.numpy()[..., 0]
    return np.stack([up[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n_masks)])


def reference_rise(model, images, targets, ids, *, n_masks, cell, p, seed=0) -> np.ndarray:
    out = []
    for image, t, image_id in zip(images, targets, ids, strict=True):
        masks = reference_masks(seed, image_id, n_masks, cell, p, SIZE, SIZE)
        s = np.zeros((SIZE, SIZE))
        for m in masks:
            prob = float(np.asarray(model((image * m[..., None])[None], training=False))[0, t])
            s += prob * m
        out.append(s / (n_masks * p))
    return np.stack(out)


@pytest.mark.parametrize("cell, p", [(7, 0.5), (5, 0.3)])
def test_equals_the_reference(setup, cell, p):
    model, images, targets, ids = setup
    rise = RISE(n_masks=40, cell=cell, p=p, seed=3, batch_size=13)  # chunks span images
    maps = rise.explain(model, images, targets, ids=ids)
    assert maps.shape == (3, SIZE, SIZE) and maps.dtype == np.float32
    ref = reference_rise(model, images, targets, ids, n_masks=40, cell=cell, p=p, seed=3)
    np.testing.assert_allclose(maps, ref, rtol=1e-4, atol=1e-6)
    masks = rise.masks_of(ids[0], (SIZE, SIZE))
    np.testing.assert_allclose(masks, reference_masks(3, ids[0], 40, cell, p, SIZE, SIZE), atol=1e-6)
    assert masks.min() >= 0 and masks.max() <= 1 and 0 < masks.mean() < 1


def test_masks_seeded_by_id_and_seed():
    rise = RISE(n_masks=30)
    a = rise.masks_of("img-1", (SIZE, SIZE))
    np.testing.assert_array_equal(a, RISE(n_masks=30).masks_of("img-1", (SIZE, SIZE)))
    assert not np.allclose(a, rise.masks_of("img-2", (SIZE, SIZE)))
    assert not np.allclose(a, RISE(n_masks=30, seed=1).masks_of("img-1", (SIZE, SIZE)))
    # an id's canonical form seeds it: np.int64(5) and "5" are the same image
    np.testing.assert_array_equal(rise.masks_of(np.int64(5), (SIZE, SIZE)), rise.masks_of("5", (SIZE, SIZE)))


def test_independent_of_batch_size_and_image_order(setup):
    model, images, targets, ids = setup
    ref = RISE(n_masks=50, batch_size=7).explain(model, images, targets, ids=ids)
    big = RISE(n_masks=50, batch_size=500).explain(model, images, targets, ids=ids)
    np.testing.assert_allclose(big, ref, rtol=1e-5, atol=1e-7)
    perm = np.array([2, 0, 1])
    shuffled = RISE(n_masks=50, batch_size=11).explain(model, images[perm], targets[perm], ids=ids[perm])
    np.testing.assert_allclose(shuffled, ref[perm], rtol=1e-5, atol=1e-7)
    single = RISE(n_masks=50).explain(model, images[1:2], targets[1:2], ids=ids[1:2])
    np.testing.assert_allclose(single, ref[1:2], rtol=1e-5, atol=1e-7)
    other_ids = RISE(n_masks=50).explain(model, images, targets, ids=np.array(["x", "y", "z"]))
    assert not np.allclose(other_ids, ref)


def test_4000_masks_streamed_in_bounded_chunks():
    log: list[int] = []
    model = softmax_cnn(SIZE, seed=2, spy=log)
    image = np.random.default_rng(0).random((1, SIZE, SIZE, 3), dtype=np.float32)
    rise = RISE(n_masks=4000, batch_size=50)
    tracemalloc.start()
    try:
        maps = rise.explain(model, image, np.array([2]), ids=np.array(["big"]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert maps.shape == (1, SIZE, SIZE) and np.all(np.isfinite(maps))
    assert max(log) <= 50 and sum(log) == 4000 and len(log) == 80
    # all 4000 upsampled masks at once would be 4000 * 32 * 32 * 8 B = 32 MB
    assert peak < 8e6, f"peak NumPy memory {peak / 1e6:.1f} MB: the masks are not streamed"
    assert rise.passes_per_map() == 4000


def test_shares_one_trace_with_occlusion(setup):
    model = softmax_cnn(SIZE, seed=21)
    _, images, targets, ids = setup
    RISE(n_masks=9, batch_size=4).explain(model, images, targets, ids=ids)
    RISE(n_masks=5, batch_size=64).explain(model, images[:1], targets[:1])
    Occlusion(grid=3, batch_size=6, strategy="full").explain(model, images, targets)
    fns = compiled_functions(model)
    assert list(fns) == [(SIZE, SIZE, 3)]
    assert fns[(SIZE, SIZE, 3)].experimental_get_tracing_count() == 1


def test_through_the_harness(setup):
    from bench.pipeline.explain import compute_heatmaps

    model, images, targets, ids = setup
    uint8 = (images * 255).round().astype(np.uint8)
    via = compute_heatmaps(RISE(n_masks=20), model, uint8, targets, ids=ids, batch_size=2)
    direct = RISE(n_masks=20).explain(model, uint8.astype(np.float32) / 255, targets, ids=ids)
    np.testing.assert_allclose(via, direct, rtol=1e-5, atol=1e-7)


# ---- registration, parameters, the conformance kit ------------------------------------------
def test_registered_with_documented_defaults():
    spec = bench.registry().get("explainer", "rise").spec
    rise = bench.create("explainer", "rise")
    assert type(rise) is RISE and spec.role == "method"
    assert rise.get_params() == dict(spec.parameters)
    assert rise.get_params()["n_masks"] == 1000 and rise.passes_per_map() == 1000
    for stated in ("n_masks = 1000", "cell=7", "p=0.5", "seeded by image id", "n_masks forward passes"):
        assert stated in spec.description, stated


@pytest.mark.parametrize(
    "params, culprit",
    [
        ({"n_masks": 0}, "n_masks"), ({"cell": 0}, "cell"), ({"p": 0.0}, "p"), ({"p": 1.5}, "p"),
        ({"seed": -1}, "seed"), ({"batch_size": 0}, "batch_size"), ({"n_masks": 2.5}, "n_masks"),
    ],
)
def test_bad_parameters_name_the_parameter(params, culprit):
    with pytest.raises(ParameterError) as info:
        RISE(**params).validate()
    assert info.value.param == culprit


def test_conformance_kit():
    rise = bench.create("explainer", "rise", n_masks=20)
    names = [n for n, _ in checks_for(rise)]
    assert "check_explainer_batch_independent" in names
    check_component(rise, tiny_model())


# ---- the nested transfer model --------------------------------------------------------------
@pytest.fixture(scope="module")
def vgg16():
    model = bench.create("model", "vgg16", weights="none", input_shape=[64, 64, 3], pool_size=2)
    model.keras  # noqa: B018
    return model


def test_smoke_on_nested_vgg16(vgg16):
    images = np.random.default_rng(2).random((1, 64, 64, 3), dtype=np.float32)
    maps = RISE(n_masks=12, batch_size=5).explain(vgg16, images, np.array([3]), ids=np.array(["v"]))
    assert maps.shape == (1, 64, 64) and np.all(np.isfinite(maps))
    masks = RISE(n_masks=12).masks_of("v", (64, 64))
    probs = np.asarray(vgg16.keras(images * masks[..., None].astype(np.float32), training=False))[:, 3]
    ref = np.tensordot(probs, masks, axes=1) / (12 * 0.5)
    np.testing.assert_allclose(maps[0], ref, rtol=1e-3, atol=1e-6)
