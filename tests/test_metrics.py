"""The metric contract: specs that declare their inputs, MetricData, checked columns, statistics,
and the built-in curve metrics (bench_metrics) checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

import bench
from bench.engine.regions import ORDERS
from bench.errors import ComponentOutputError
from bench.pipeline.metrics import (
    MetricData,
    MetricInputError,
    MetricSkipped,
    check_columns,
    compute_columns,
    metric_data,
    required_orders,
    summarise,
)
from bench.plugin.specs import CURVE_ORDERS, MetricInputs, MetricSpec
from bench.stats import bootstrap_ci


def _spec(name: str) -> MetricSpec:
    spec = bench.registry().get("metric", name).spec
    assert isinstance(spec, MetricSpec)
    return spec


def _run(name: str, **inputs):
    spec = _spec(name)
    return compute_columns(bench.create("metric", name), spec, metric_data(spec, **inputs))


def test_curve_orders_are_the_engine_orders():
    # the region orders (deletion), then insertion: the complement mask of MoRF
    assert CURVE_ORDERS == (*ORDERS, "insertion")
    from bench.engine.curves import RANKING

    assert set(RANKING) == set(CURVE_ORDERS) and RANKING["insertion"] == "morf"


def test_builtin_specs_declare_what_they_need_and_which_way_is_better():
    want = {
        "aopc": (("morf",), True), "lerf-aopc": (("lerf",), False),
        "abpc": (("morf", "lerf"), True), "deletion-auc": (("morf",), False),
    }
    for name, (orders, higher) in want.items():
        spec = _spec(name)
        assert spec.inputs.curves == orders and spec.higher_is_better is higher, name
        assert spec.family == "faithfulness" and spec.headline_column == name
        assert not (spec.inputs.heatmaps or spec.inputs.masks or spec.inputs.model), name
    assert required_orders([_spec("aopc"), _spec("deletion-auc")]) == ("morf",)
    assert required_orders([_spec("lerf-aopc"), _spec("aopc")]) == ("morf", "lerf")
    assert required_orders([]) == ()


def test_aopc_by_hand():
    curves = np.array([[0.9, 0.5, 0.3, 0.1], [0.8, 0.8, 0.8, 0.8]])
    out = _run("aopc", ids=["a", "b"], curves={"morf": curves})
    # (0.4 + 0.6 + 0.8) / 4 = 0.45 ; 0
    np.testing.assert_allclose(out["aopc"], [0.45, 0.0])
    assert bench.create("metric", "aopc").get_params() == {}


def test_lerf_aopc_reads_the_lerf_curves_only():
    lerf = np.array([[1.0, 0.9, 0.9, 0.8]])
    out = _run("lerf-aopc", ids=["a"], curves={"lerf": lerf, "morf": np.zeros((1, 4))})
    np.testing.assert_allclose(out["lerf-aopc"], [(0.1 + 0.1 + 0.2) / 4])


def test_abpc_by_hand():
    morf = np.array([[1.0, 0.5, 0.2, 0.0]])
    lerf = np.array([[1.0, 0.9, 0.8, 0.0]])
    # sum_{k=1..3} (lerf - morf) / 4 = (0.4 + 0.6 + 0) / 4
    np.testing.assert_allclose(_run("abpc", ids=["a"], curves={"morf": morf, "lerf": lerf})["abpc"], [0.25])
    with pytest.raises(ValueError, match="same shape"):
        _run("abpc", ids=["a"], curves={"morf": morf, "lerf": lerf[:, :3]})


def test_deletion_auc_by_hand_and_relation_to_aopc():
    curves = np.random.default_rng(0).random((5, 10))
    ids = [str(i) for i in range(5)]
    d = _run("deletion-auc", ids=ids, curves={"morf": curves})["deletion-auc"]
    a = _run("aopc", ids=ids, curves={"morf": curves})["aopc"]
    np.testing.assert_allclose(d, curves.mean(axis=1))
    np.testing.assert_allclose(a, curves[:, 0] - d, atol=1e-12)


def test_a_non_finite_curve_gives_a_non_finite_value_not_a_crash():
    curves = np.array([[0.9, 0.5, 0.1], [0.5, np.nan, 0.2]])
    out = _run("aopc", ids=["a", "b"], curves={"morf": curves})["aopc"]
    assert math.isfinite(out[0]) and not math.isfinite(out[1])


def test_metric_data_holds_only_what_the_spec_declared():
    inputs = MetricInputs(curves=("morf",), masks=("lesion",), labels=True)
    data = MetricData(inputs=inputs, name="m", ids=["a", "b"], curves={"morf": np.zeros((2, 3))},
                      masks={"lesion": np.zeros((2, 4, 4), bool)}, labels=[0, 1])
    assert data.n == len(data) == 2 and data.curve("morf").shape == (2, 3)
    assert data.mask("lesion").dtype == bool and list(data.labels) == [0, 1]
    for read in (lambda: data.heatmaps, lambda: data.model, lambda: data.curve("lerf"),
                 lambda: data.mask("lung"), lambda: data.targets, lambda: data.images):
        with pytest.raises(MetricInputError, match="does not declare"):
            read()
    with pytest.raises(ValueError, match="read-only"):
        data.curve("morf")[0, 0] = 1.0
    with pytest.raises(MetricSkipped, match="'lesion'.*its masks: lung"):
        metric_data(MetricSpec(name="m", factory="json:dumps", inputs=inputs), ids=["a"],
                    curves={"morf": np.zeros((1, 3))}, masks={"lung": np.zeros((1, 4, 4), bool)}, labels=[0])


@pytest.mark.parametrize("out, match", [
    ([0.1, 0.2], "must return a mapping"),
    ({"other": [0.1, 0.2]}, "no headline column 'm'"),
    ({"m": [0.1]}, r"must be \(N,\) or \(N, K\) with N = 2"),
    ({"m": [[0.1, 0.2], [0.3, 0.4]]}, r"headline column 'm' must be \(N,\)"),
    ({"m": ["a", "b"]}, "must be numeric"),
    ({"m": [0.1, 0.2], "Bad Name": [1, 2]}, "column name 'Bad Name' is invalid"),
])
def test_wrong_outputs_are_named(out, match):
    with pytest.raises(ComponentOutputError, match=match):
        check_columns("m", "m", out, 2)


def test_columns_may_be_per_image_matrices():
    cols = check_columns("m", "m", {"m": [0.1, np.nan], "per-layer": np.ones((2, 3))}, 2)
    assert cols["per-layer"].shape == (2, 3) and cols["m"].dtype == np.float64


def test_statistics_leave_non_finite_values_out_and_count_them():
    values = np.array([0.2, np.nan, 0.4, np.inf, 0.3])
    s = summarise(values, confidence=0.9, n_resamples=500, seed=3)
    assert (s.n, s.n_excluded) == (3, 2)
    assert s.value == pytest.approx(0.3)
    assert s.ci == bootstrap_ci([0.2, 0.4, 0.3], confidence=0.9, n_resamples=500, seed=3)
    empty = summarise([np.nan])
    assert empty.n == 0 and empty.n_excluded == 1 and math.isnan(empty.value)


def test_spec_validation():
    with pytest.raises(ValueError, match="families: faithfulness"):
        MetricSpec(name="m", factory="json:dumps", family="accuracy")
    with pytest.raises(ValueError, match="transforms: none"):
        MetricSpec(name="m", factory="json:dumps", heatmap_transform="squared")
    with pytest.raises(TypeError, match="MetricInputs"):
        MetricSpec(name="m", factory="json:dumps", inputs={"curves": ("morf",)})
    with pytest.raises(ValueError, match="not an order"):
        MetricInputs(curves=("mrof",))
    with pytest.raises(TypeError, match="tuple of names"):
        MetricInputs(curves="morf")
    with pytest.raises(ValueError, match="is invalid"):
        MetricInputs(masks=("../lesion",))
    minimal = MetricSpec(name="m", factory="json:dumps", inputs=MetricInputs(curves=["morf", "morf"]))
    assert minimal.inputs.curves == ("morf",) and minimal.headline_column == "m" and minimal.display_label == "m"
    assert minimal.higher_is_better and minimal.zero_map_value is None
