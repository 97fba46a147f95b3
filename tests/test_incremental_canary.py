"""Canary: the Keras internals the incremental walk reads (bench.engine.incremental) are still there.

If this fails on a new Keras version, ``auto`` already falls back to full passes (with the
problems as its recorded reason) and ``strategy="incremental"`` raises a ConfigError; update
bench/engine/incremental.py (the only module that walks Keras graphs) and the keras pin in
pyproject.toml together.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from bench.engine.curves import evaluate_aopc  # noqa: E402
from bench.engine.forward import ForwardBatch  # noqa: E402
from bench.engine.incremental import (  # noqa: E402
    KERAS_INTERNALS,
    IncrementalForward,
    analyse_model,
    check_keras_internals,
)
from bench.errors import ConfigError  # noqa: E402


def _tiny(size: int = 12) -> object:
    L = keras.layers
    x_in = keras.Input((size, size, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu")(x_in)
    x = L.BatchNormalization()(x)
    x = L.MaxPooling2D(2)(x)
    return keras.Model(x_in, L.Softmax()(L.Dense(3)(L.Flatten()(x))))


def test_keras_internals_the_walk_reads_are_there() -> None:
    problems = check_keras_internals()
    assert problems == [], (
        f"Keras {keras.__version__} changed the private attributes that bench.engine.incremental "
        f"reads ({', '.join(KERAS_INTERNALS)}): {problems}. `auto` now falls back to full passes; "
        "update the graph walk and the keras pin in pyproject.toml."
    )
    km = _tiny()
    assert check_keras_internals(km) == []
    plan = analyse_model(km)
    assert [type(op.layer).__name__ for op in plan.ops] == ["Conv2D", "BatchNormalization", "MaxPooling2D"]
    assert plan.stop_reason == "locality"


def test_walk_failure_means_full_passes_for_auto_and_a_clear_error_for_incremental(monkeypatch) -> None:
    """A Keras without the attribute the walk starts from: auto records why and runs full passes."""
    km = _tiny()
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (2, 12, 12, 3)).astype("float32")
    heatmaps = rng.uniform(0, 1, (2, 3, 3)).astype("float32")
    full = evaluate_aopc(km, images, None, heatmaps, grid=3, batch_size=4, strategy="full")
    # the nodes lose an attribute the walk reads (as a Keras release might rename it)
    node_cls = type(km._nodes_by_depth[0][0])
    monkeypatch.setattr(node_cls, "is_input", property(lambda self: (_ for _ in ()).throw(AttributeError("gone"))),
                        raising=False)
    strat = IncrementalForward(mode="auto")
    auto = evaluate_aopc(km, images, full.targets, heatmaps, grid=3, batch_size=4, strategy=strat)
    assert auto.strategy == "full"
    assert "Keras" in auto.strategy_info["reason"] and "is_input" in auto.strategy_info["reason"]
    np.testing.assert_array_equal(auto.curves, full.curves)
    with pytest.raises(ConfigError, match="Keras"):
        IncrementalForward(mode="incremental").prepare(km, batch_size=4, image_shape=(12, 12, 3), mask_local=True)


def test_failure_at_run_time_means_full_passes_for_auto(monkeypatch) -> None:
    """The suffix replays Keras nodes through ``node.arguments.fill_in``: if that breaks at run time,
    auto switches to full passes for the rest of the evaluation and records why; never a crash."""
    km = _tiny(13)
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (2, 13, 13, 3)).astype("float32")
    heatmaps = rng.uniform(0, 1, (2, 3, 3)).astype("float32")
    full = evaluate_aopc(km, images, None, heatmaps, grid=3, batch_size=4, strategy="full")
    strat = IncrementalForward(mode="auto", min_gain=0.0)
    strat.prepare(km, batch_size=4, image_shape=(13, 13, 3), mask_local=True)
    assert strat.name == "incremental"

    def broken(self, *a, **k):  # noqa: ANN001, ANN002, ANN003
        raise RuntimeError("boxes exploded")

    monkeypatch.setattr(IncrementalForward, "_lockstep", broken)
    x = images[:1].repeat(3, axis=0)
    batch = ForwardBatch(images=x, image_index=np.zeros(3, np.int64), step=np.arange(3),
                         changed_box=np.zeros((3, 4), np.int64), targets=np.zeros(3, np.int64))
    out = strat.forward(batch)
    np.testing.assert_allclose(out, np.asarray(km(x)), atol=1e-5)
    assert strat.name == "full"
    assert "boxes exploded" in strat.info["reason"]
    assert strat.info["used"] == "full"
    monkeypatch.undo()
    auto = evaluate_aopc(km, images, full.targets, heatmaps, grid=3, batch_size=4, strategy=strat)
    assert np.abs(auto.curves - full.curves).max() <= 1e-5
