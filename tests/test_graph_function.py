"""bench.engine.tracing.graph_function: a tf.function whose traces are counted for it alone."""

from __future__ import annotations

import logging

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from bench.engine.tracing import graph_function  # noqa: E402


def _scaled(k: float):
    def scale(x):
        return x * k

    return scale  # every closure shares scale's code object


def test_closures_each_traced_once_raise_no_retracing_warning(caplog: pytest.LogCaptureFixture) -> None:
    x = tf.constant(np.ones((2, 3), np.float32))
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        fns = [graph_function(_scaled(float(k))) for k in range(8)]
        outs = [float(fn(x)[0, 0]) for fn in fns]
    assert outs == [float(k) for k in range(8)]  # each computes its own closure
    assert [fn.experimental_get_tracing_count() for fn in fns] == [1] * 8
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
    # the same closures as plain tf.functions trip TensorFlow's detector (what graph_function avoids)
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        for k in range(8):
            tf.function(_scaled(float(k)))(x)
    assert [r for r in caplog.records if "retracing" in r.getMessage()]


def test_a_real_retrace_is_still_counted_and_signatures_hold() -> None:
    fn = graph_function(_scaled(2.0))
    fn(tf.constant(np.ones((2, 3), np.float32)))
    fn(tf.constant(np.ones((4, 5, 6), np.float32)))  # a new shape: a real retrace
    assert fn.experimental_get_tracing_count() == 2
    sig = graph_function(_scaled(3.0), input_signature=[tf.TensorSpec((None, 3), tf.float32)])
    assert float(sig(tf.constant(np.ones((5, 3), np.float32)))[4, 2]) == 3.0
    with pytest.raises((TypeError, ValueError)):
        sig(tf.constant(np.ones((5, 4), np.float32)))
    assert fn.python_function.__name__ == "scale"
