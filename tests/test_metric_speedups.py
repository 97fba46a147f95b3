"""The memos that make the re-explaining metrics cheap across the cells of one model give the
values a fresh computation gives, never change the trained model, never keep a model alive and
stay bounded: model-randomisation's randomised copies, faithfulness-correlation's probabilities."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from bench_faithfulness import correlation
from bench_faithfulness.correlation import FaithfulnessCorrelation
from bench_sanity import randomisation
from bench_sanity.randomisation import ModelRandomisation, cascade, layer_blocks, memoised_copies

import bench
from bench.pipeline.metrics import compute_columns, metric_data
from bench.testing import tiny_images, tiny_model

N = 4


@pytest.fixture(autouse=True)
def fresh_memos():
    randomisation.clear_copies()
    correlation.clear_memo()
    yield
    randomisation.clear_copies()
    correlation.clear_memo()


def _data(name, model, explainer=None, heatmaps=None, n=N):
    spec = bench.registry().get("metric", name).spec
    images = (tiny_images(n, seed=7)[..., 0] * 255).astype(np.uint8)
    targets = np.argmax(model.predict_proba(images), axis=1)
    return spec, metric_data(spec, ids=np.array([f"img-{i}" for i in range(n)]), grid=(4, 4), model=model,
                             explainer=explainer, images=images, targets=targets, heatmaps=heatmaps)


def _randomisation(model, explainer, **params):
    spec, data = _data("model-randomisation", model, explainer)
    return compute_columns(ModelRandomisation(**params), spec, data)


def _assert_same_columns(a, b):
    assert set(a) == set(b)
    for column in a:
        np.testing.assert_array_equal(a[column], b[column], err_msg=column)


def _weights(model):
    return [np.array(w) for w in model.keras.get_weights()]


# ---- model-randomisation: one randomised copy per model, blocks and seed -----------------------
@pytest.mark.parametrize("explainer", ["gradcam", "saliency"])
def test_the_memoised_copy_gives_the_values_of_a_fresh_clone(explainer):
    model = tiny_model(seed=11)
    trained = _weights(model)
    first = _randomisation(model, bench.create("explainer", explainer))
    (copy,) = memoised_copies(model)
    second = _randomisation(model, bench.create("explainer", explainer))  # another cell: the memo
    assert memoised_copies(model) == [copy]
    randomisation.clear_copies()
    fresh = _randomisation(model, bench.create("explainer", explainer))  # cloned again
    assert memoised_copies(model) != [copy]
    _assert_same_columns(first, second)
    _assert_same_columns(first, fresh)
    for w0, w1 in zip(trained, _weights(model), strict=True):
        np.testing.assert_array_equal(w0, w1)


def test_the_copy_is_reset_to_the_trained_weights_of_the_moment():
    """A trained model whose weights change between two calls (trained further) is randomised from
    its new weights: the memoised copy equals a fresh clone of the changed model."""
    model = tiny_model(seed=12)
    gradcam = bench.create("explainer", "gradcam")
    _randomisation(model, gradcam)
    kernel = model.keras.layers[1].kernel
    kernel.assign(kernel.numpy() * -1.5)
    memoised = _randomisation(model, gradcam)
    randomisation.clear_copies()
    _assert_same_columns(memoised, _randomisation(model, gradcam))


def test_the_cascade_steps_equal_randomise_layer_on_a_fresh_clone():
    model = tiny_model(seed=13)
    blocks = layer_blocks(model.keras)
    list(cascade(model, blocks, seed=5))  # fills the memo (the copy ends with every block randomised)
    fresh = randomisation.clone_model(model)
    for block, copy in cascade(model, blocks, seed=5):
        for path in block.layers:
            randomisation.randomise_layer(randomisation._layer_at(fresh.keras, path), path, 5)
        for a, b in zip(copy.keras.get_weights(), fresh.keras.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_two_seeds_give_two_different_copies():
    model = tiny_model(seed=14)
    gradcam = bench.create("explainer", "gradcam")
    a = _randomisation(model, gradcam, seed=0)
    b = _randomisation(model, gradcam, seed=1)
    copies = memoised_copies(model)
    assert len(copies) == 2 and copies[0] is not copies[1]
    assert not np.array_equal(a["spearman"], b["spearman"])
    kernels = [c.keras.layers[-1].kernel.numpy() for c in copies]
    assert not np.array_equal(*kernels)


def test_a_cascade_in_progress_is_never_disturbed_by_another():
    """Two cascades of one model at once: the second gets a copy of its own, so the first's copy
    keeps its step's weights."""
    model = tiny_model(seed=15)
    blocks = layer_blocks(model.keras)
    outer = cascade(model, blocks, seed=2)
    _, first = next(outer)
    before = [np.array(w) for w in first.keras.get_weights()]
    steps = list(cascade(model, blocks, seed=2))
    assert all(copy is not first for _, copy in steps)
    for a, b in zip(before, first.keras.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    outer.close()
    assert memoised_copies(model) == [first]


def test_the_copies_of_every_cell_share_one_trace():
    """The gradient explainers of a model's cells trace one gradient of the randomised copy."""
    from bench_gradients.engine import compiled_functions

    model = tiny_model(seed=16)
    for name in ("saliency", "gradient-x-input", "smoothgrad"):
        _randomisation(model, bench.create("explainer", name, **({"n": 2} if name == "smoothgrad" else {})))
    (copy,) = memoised_copies(model)
    fns = compiled_functions(copy.keras)
    assert len(fns) == 1 and next(iter(fns.values())).experimental_get_tracing_count() == 1


def test_the_memo_keeps_no_model_alive_and_stays_bounded():
    models = [tiny_model(seed=20 + i) for i in range(randomisation.COPY_MEMO_SIZE + 1)]
    gradcam = bench.create("explainer", "gradcam")
    for model in models:
        _randomisation(model, gradcam)
    assert sum(len(memoised_copies(m)) for m in models) == randomisation.COPY_MEMO_SIZE
    assert memoised_copies(models[0]) == []  # the least recently used went first
    last = models[-1]
    copy_ref = weakref.ref(memoised_copies(last)[0].keras)
    ref = weakref.ref(last.keras)
    del models, model, last, gradcam
    gc.collect()  # frees the trained model, whose memo entry then goes
    assert ref() is None
    gc.collect()  # the copy, freed with its entry (a Keras model is a cycle: the collector frees it)
    assert copy_ref() is None


# ---- faithfulness-correlation: one probability table per model, images and subsets ---------------
def _faithfulness(model, heatmaps, **params):
    spec, data = _data("faithfulness-correlation", model, heatmaps=heatmaps)
    return compute_columns(FaithfulnessCorrelation(n_subsets=6, **params), spec, data)


def test_faithfulness_probabilities_are_shared_by_the_cells_of_a_model_and_equal_a_fresh_run():
    model = tiny_model(seed=30)
    rng = np.random.default_rng(0)
    maps = [rng.random((N, 8, 8)).astype(np.float32) for _ in range(2)]
    first = [_faithfulness(model, m) for m in maps]
    assert correlation.memoised_tables(model.keras) == 1  # two explainers, one table
    correlation.clear_memo()
    fresh = [_faithfulness(model, m) for m in maps[::-1]][::-1]
    for a, b in zip(first, fresh, strict=True):
        _assert_same_columns(a, b)
    assert not np.array_equal(first[0]["faithfulness-correlation"], first[1]["faithfulness-correlation"])


def test_faithfulness_probabilities_follow_every_input():
    model = tiny_model(seed=31)
    maps = np.random.default_rng(1).random((N, 8, 8)).astype(np.float32)
    _faithfulness(model, maps)
    _faithfulness(model, maps, seed=1)
    _faithfulness(model, maps, perturbation="black")
    assert correlation.memoised_tables(model.keras) == 3
    layer = model.keras.layers[-1]
    layer.kernel.assign(layer.kernel.numpy() * 2.0)  # the model changed: a new table
    changed = _faithfulness(model, maps)
    assert correlation.memoised_tables(model.keras) == 4
    correlation.clear_memo()
    _assert_same_columns(changed, _faithfulness(model, maps))


def test_the_faithfulness_memo_keeps_no_model_alive():
    model = tiny_model(seed=32)
    _faithfulness(model, np.ones((N, 8, 8), np.float32))
    ref = weakref.ref(model.keras)
    del model
    gc.collect()
    assert ref() is None


def test_faithfulness_counts_the_passes_it_ran_once_per_table():
    """The first cell of a model runs N x (n_subsets + 1) passes, the next reuses them: it ran none.
    The per-image ``forward-passes`` column keeps what the measure costs, whoever paid it."""
    model = tiny_model(seed=33)
    rng = np.random.default_rng(2)
    spec, data = _data("faithfulness-correlation", model, heatmaps=rng.random((N, 8, 8)).astype(np.float32))
    first, second = FaithfulnessCorrelation(n_subsets=6), FaithfulnessCorrelation(n_subsets=6)
    a = compute_columns(first, spec, data)
    b = compute_columns(second, spec, data)
    assert first.forward_passes() == N * 7 and second.forward_passes() == 0.0
    np.testing.assert_array_equal(a["forward-passes"], np.full(N, 7.0))
    np.testing.assert_array_equal(b["forward-passes"], a["forward-passes"])
