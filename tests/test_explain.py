"""compute_heatmaps (bench.pipeline.explain) and the random explainer."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from bench_baselines.random_explainer import RandomExplainer  # noqa: E402

import bench  # noqa: E402
from bench.errors import ComponentOutputError, ConfigError  # noqa: E402
from bench.pipeline import explain as explain_mod  # noqa: E402
from bench.pipeline.explain import accepts_keyword, compute_heatmaps  # noqa: E402


@pytest.fixture(scope="module")
def model():
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="features")(inp)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    return bench.KerasModel(keras.Model(inp, out), feature_layer="features")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (9, 16, 16), dtype=np.uint8)


class MeanExplainer:
    """Heatmap = the image's first channel, so the input form is visible in the output."""

    def __init__(self):
        self.calls = []

    def get_params(self):
        return {}

    def explain(self, model, images, targets):
        self.calls.append((images.dtype, images.shape, targets.copy()))
        return images[..., 0] * (1 + targets[:, None, None])


def test_batches_convert_uint8_per_batch_and_concatenate(model, images, monkeypatch):
    seen = []
    real = explain_mod.to_model_input

    def spy(x):
        seen.append(len(x))
        return real(x)

    monkeypatch.setattr(explain_mod, "to_model_input", spy)
    e = MeanExplainer()
    targets = np.arange(9) % 2
    hm = compute_heatmaps(e, model, images, targets, batch_size=4)
    assert seen == [4, 4, 1]
    assert [c[1] for c in e.calls] == [(4, 16, 16, 3), (4, 16, 16, 3), (1, 16, 16, 3)]
    assert all(c[0] == np.float32 for c in e.calls)
    expected = images.astype(np.float32) / 255.0 * (1 + targets[:, None, None])
    assert hm.dtype == np.float32 and hm.shape == (9, 16, 16)
    np.testing.assert_allclose(hm, expected, rtol=1e-6)


def test_ids_passed_only_when_accepted(model, images):
    got = {}

    class WithIds:
        def explain(self, model, images, targets, *, ids=None):
            got.setdefault("ids", []).extend(list(ids))
            return np.zeros((len(images), 2, 2), np.float32)

    class WithKwargs:
        def explain(self, model, images, targets, **kwargs):
            got.setdefault("kw", []).append(sorted(kwargs))
            return np.zeros((len(images), 2, 2), np.float32)

    compute_heatmaps(WithIds(), model, images, np.zeros(9, int), ids=[f"a{i}" for i in range(9)], batch_size=4)
    assert got["ids"] == [f"a{i}" for i in range(9)]
    compute_heatmaps(WithKwargs(), model, images, np.zeros(9, int), batch_size=5)
    assert got["kw"] == [["ids"], ["ids"]]
    compute_heatmaps(MeanExplainer(), model, images, np.zeros(9, int))  # no ids: no TypeError
    assert accepts_keyword(WithIds().explain, "ids") and not accepts_keyword(MeanExplainer().explain, "ids")


class Returns:
    def __init__(self, fn, name="bad"):
        self.fn = fn

    def explain(self, model, images, targets):
        return self.fn(images)


@pytest.mark.parametrize(
    "fn,match",
    [
        (lambda x: x, "4-D"),
        (lambda x: x[:-1, ..., 0], "heatmaps for"),
        (lambda x: (x[..., 0] * 10).astype(np.int32), "dtype int32"),
        (lambda x: np.where(x[..., 0] > 0.5, np.nan, 0.0), "NaN"),
        (lambda x: x[..., 0] + np.inf, "inf"),
        (lambda x: np.zeros((len(x), 0, 3), np.float32), "empty"),
        (lambda x: [object()] * len(x), "object"),
    ],
)
def test_bad_outputs_raise_component_output_error_naming_the_explainer(model, images, fn, match):
    with pytest.raises(ComponentOutputError, match=f"my-explainer.*{match}"):
        compute_heatmaps(Returns(fn), model, images, np.zeros(9, int), name="my-explainer")


def test_heatmap_size_must_not_change_between_batches(model, images):
    class Varying:
        n = 0

        def explain(self, model, images, targets):
            self.n += 1
            return np.zeros((len(images), self.n, self.n), np.float32)

    with pytest.raises(ComponentOutputError, match="same size"):
        compute_heatmaps(Varying(), model, images, np.zeros(9, int), batch_size=4, name="varying")


def test_exceptions_get_a_note_naming_explainer_and_batch(model, images):
    class Boom:
        def explain(self, model, images, targets):
            raise RuntimeError("kaput")

    with pytest.raises(RuntimeError, match="kaput") as info:
        compute_heatmaps(Boom(), model, images, np.zeros(9, int), name="boom", batch_size=4)
    assert any("boom" in note and "0:4" in note for note in info.value.__notes__)


def test_registered_name_plain_keras_and_bad_arguments(model, images):
    hm = compute_heatmaps("gradcam", model.keras, images, np.zeros(9, int))
    assert hm.shape == (9, 16, 16)
    with pytest.raises(ConfigError, match="explain"):
        compute_heatmaps(object(), model, images, np.zeros(9, int))
    with pytest.raises(bench.DataError, match="targets"):
        compute_heatmaps(MeanExplainer(), model, images, np.zeros(3, int))
    with pytest.raises(ConfigError, match="batch_size"):
        compute_heatmaps(MeanExplainer(), model, images, np.zeros(9, int), batch_size=0)
    assert compute_heatmaps(MeanExplainer(), model, images[:0], np.zeros(0, int)).shape[0] == 0


# ---- random explainer ------------------------------------------------------------------------
def test_random_explainer_is_keyed_by_id(model, images):
    e = bench.create("explainer", "random")
    assert isinstance(e, RandomExplainer) and e.get_params() == {"seed": 0, "size": None}
    ids = np.array([f"x{i}" for i in range(9)])
    a = compute_heatmaps(e, model, images, np.zeros(9, int), ids=ids, batch_size=4)
    perm = np.random.default_rng(1).permutation(9)
    b = compute_heatmaps(e, model, images[perm], np.zeros(9, int), ids=ids[perm], batch_size=2)
    np.testing.assert_array_equal(b, a[perm])
    assert a.shape == (9, 9, 9) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() < 1.0
    assert not np.array_equal(a[0], a[1])
    c = compute_heatmaps(RandomExplainer(seed=1), model, images, np.zeros(9, int), ids=ids)
    assert not np.array_equal(a, c)


def test_random_explainer_size(model, images):
    hm = RandomExplainer(size=9).explain(model, np.zeros((3, 16, 16, 3), np.float32), np.zeros(3, int))
    assert hm.shape == (3, 9, 9)
    hm = RandomExplainer(size=(2, 5)).explain(model, np.zeros((1, 16, 16, 3), np.float32), np.zeros(1, int))
    assert hm.shape == (1, 2, 5)
    hm = RandomExplainer(size="image").explain(model, np.zeros((1, 16, 12, 3), np.float32), np.zeros(1, int))
    assert hm.shape == (1, 16, 12)
    with pytest.raises(ValueError, match="image"):
        RandomExplainer(size="pixels").explain(model, np.zeros((1, 4, 4, 3), np.float32), np.zeros(1, int))
    # default ids 0..N-1
    d = RandomExplainer().explain(model, np.zeros((2, 4, 4, 3), np.float32), np.zeros(2, int))
    e = RandomExplainer().explain(model, np.zeros((2, 4, 4, 3), np.float32), np.zeros(2, int), ids=[0, 1])
    np.testing.assert_array_equal(d, e)
    with pytest.raises(ValueError, match="size"):
        RandomExplainer(size=0).explain(model, np.zeros((1, 4, 4, 3), np.float32), np.zeros(1, int))


def test_random_explainer_gives_uniform_region_orders():
    """With the default (grid-sized) map every region is equally likely first (chi-square check)."""
    from bench.engine.regions import region_order, region_scores

    n = 8100
    hm = RandomExplainer().explain(None, np.zeros((n, 2, 2, 3), np.float32), np.zeros(n, int))
    first = region_order(region_scores(hm, (299, 299), 9), "morf")[:, 0]
    counts = np.bincount(first, minlength=81)
    expected = n / 81
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 124.8  # chi-square(80) at p = 0.001
