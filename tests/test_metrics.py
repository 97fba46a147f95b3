"""Curve metrics (bench_metrics.curve_metrics)."""

from __future__ import annotations

import numpy as np
import pytest

import bench
from bench.aopc import aopc_from_curves


def test_aopc_metric_by_hand():
    m = bench.create("metric", "aopc")
    curves = np.array([[0.9, 0.5, 0.3, 0.1], [0.8, 0.8, 0.8, 0.8]])
    # (0.4 + 0.6 + 0.8) / 4 = 0.45 ; 0
    np.testing.assert_allclose(m.score(curves), [0.45, 0.0])
    np.testing.assert_allclose(aopc_from_curves(curves), [0.45, 0.0])
    assert m.get_params() == {}


def test_deletion_auc_by_hand_and_relation_to_aopc():
    d = bench.create("metric", "deletion-auc")
    a = bench.create("metric", "aopc")
    curves = np.random.default_rng(0).random((5, 10))
    np.testing.assert_allclose(d.score(curves), curves.mean(axis=1))
    np.testing.assert_allclose(a.score(curves), curves[:, 0] - d.score(curves), atol=1e-12)


def test_metrics_reject_bad_curves():
    for name in ("aopc", "deletion-auc"):
        m = bench.create("metric", name)
        with pytest.raises(ValueError, match="curves"):
            m.score(np.zeros(5))
        with pytest.raises(ValueError, match="NaN"):
            m.score(np.array([[0.5, np.nan]]))
