"""Ranks with intervals, control power, normalised scores, agreement, aggregate (bench.ranking)."""

from __future__ import annotations

import math

import krippendorff
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.ranking import (
    AGGREGATE_LABEL,
    CONTROLS_BACKWARDS,
    CONTROLS_CORRECT,
    CONTROLS_UNSEPARATED,
    aggregate_ranks,
    control_power,
    kendall_matrix,
    krippendorff_alpha,
    normalised_scores,
    per_image_ranks,
    rank_alpha,
    rank_methods,
)

B = 400  # resamples: enough for the definitions tested here, quick on two cores


def _base(n=50, seed=0):
    return np.random.default_rng(seed).random(n)


# --------------------------------------------------------------------------- ranks


def test_better_on_every_image_is_always_first():
    b = _base()
    res = rank_methods(np.column_stack([b + 1.0, b]), ["a", "b"], n_resamples=B)
    assert res.rank == (1.0, 2.0)
    assert res.p_best == (1.0, 0.0)
    assert (res.rank_low[0], res.rank_high[0]) == (1.0, 1.0)
    assert (res.rank_low[1], res.rank_high[1]) == (2.0, 2.0)
    assert res.n == 50 and res.n_dropped == 0
    # lower is better: the same scores, the other order
    low = rank_methods(np.column_stack([b + 1.0, b]), ["a", "b"], higher_is_better=False, n_resamples=B)
    assert low.rank == (2.0, 1.0) and low.p_best == (0.0, 1.0)


def test_identical_methods_share_the_rank_and_p_best():
    b = _base()
    res = rank_methods({"x": b, "y": b.copy(), "worse": b - 1.0}, n_resamples=B)
    assert res.methods == ("x", "y", "worse")
    assert res.rank == (1.5, 1.5, 3.0)
    assert res.p_best == (0.5, 0.5, 0.0)
    assert (res.rank_low[0], res.rank_high[0]) == (1.5, 1.5)
    frame = res.to_frame()
    assert list(frame.columns) == ["method", "mean", "rank", "rank_low", "rank_high", "p_best", "n", "n_dropped"]
    assert frame.p_best.sum() == pytest.approx(1.0)


def test_rank_resampling_follows_its_definition():
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, size=(25, 4)) + np.array([0.3, 0.2, 0.2, 0.0])
    res = rank_methods(x, list("abcd"), n_resamples=300, seed=5, confidence=0.8)
    # by hand: the same image rows for every method, ranks of the means, ties share the win
    idx = np.random.default_rng(5).integers(0, 25, size=(300, 25))
    means = np.stack([x[i].mean(axis=0) for i in idx])
    ranks = stats.rankdata(-means, axis=1)
    best = ranks == ranks.min(axis=1, keepdims=True)
    np.testing.assert_allclose(res.p_best, (best / best.sum(axis=1, keepdims=True)).mean(axis=0))
    np.testing.assert_array_equal(res.rank, stats.rankdata(-x.mean(axis=0)))
    for j in range(4):
        assert res.rank_low[j] == np.quantile(ranks[:, j], 0.1, method="lower")
        assert res.rank_high[j] == np.quantile(ranks[:, j], 0.9, method="higher")
        assert res.rank_low[j] <= res.rank[j] <= res.rank_high[j]
    assert sum(res.p_best) == pytest.approx(1.0)
    # deterministic given the seed; other seed, other resamples
    assert rank_methods(x, list("abcd"), n_resamples=300, seed=5, confidence=0.8) == res
    assert rank_methods(x, list("abcd"), n_resamples=300, seed=6, confidence=0.8).p_best != res.p_best


def test_rank_drops_images_invalid_for_any_method():
    x = np.random.default_rng(2).random((30, 3))
    dirty = x.copy()
    dirty[3, 0] = np.nan
    dirty[7, 2] = np.inf
    res = rank_methods(dirty, n_resamples=B)
    assert res.n == 28 and res.n_dropped == 2
    clean = rank_methods(np.delete(x, [3, 7], axis=0), n_resamples=B)
    assert (res.mean, res.rank, res.p_best) == (clean.mean, clean.rank, clean.p_best)
    frame = pd.DataFrame(dirty, columns=["a", "b", "c"])
    assert rank_methods(frame, n_resamples=B).p_best == res.p_best
    dead = dirty.copy()
    dead[:, 1] = np.nan
    with pytest.raises(ValueError, match="no finite value: b"):
        rank_methods(pd.DataFrame(dead, columns=["a", "b", "c"]), n_resamples=B)
    with pytest.raises(ValueError, match="same images"):
        rank_methods({"a": [1.0, 2.0], "b": [1.0]})


# --------------------------------------------------------------------------- controls


def test_control_power_verdicts():
    rng = np.random.default_rng(3)
    r = rng.random(60)
    same = control_power(r, oracle=r.copy(), anti=r.copy(), n_resamples=B)
    assert same.verdict == CONTROLS_UNSEPARATED
    assert same.oracle_minus_random.diff == 0 and same.oracle_minus_random.ci_low == 0
    oracle, anti = r + 0.2 + rng.normal(0, 0.02, 60), r - 0.2 + rng.normal(0, 0.02, 60)
    good = control_power(r, oracle=oracle, anti=anti, n_resamples=B)
    assert good.verdict == CONTROLS_CORRECT
    assert good.oracle_minus_random.diff == pytest.approx(np.mean(oracle - r))
    assert good.random_minus_anti.diff == pytest.approx(np.mean(r - anti))
    assert good.oracle_minus_random.ci_low > 0 and good.random_minus_anti.ci_low > 0
    assert control_power(r, oracle=anti, anti=oracle, n_resamples=B).verdict == CONTROLS_BACKWARDS
    # direction-aware: for a lower-is-better metric the same numbers are backwards
    assert control_power(r, oracle=oracle, anti=anti, higher_is_better=False, n_resamples=B).verdict == CONTROLS_BACKWARDS
    assert control_power(r, oracle=anti, anti=oracle, higher_is_better=False, n_resamples=B).verdict == CONTROLS_CORRECT
    # one control is enough; one right and one wrong is backwards; one right and one tied cannot separate
    only = control_power(r, oracle=oracle, n_resamples=B)
    assert only.verdict == CONTROLS_CORRECT and only.random_minus_anti is None
    assert control_power(r, oracle=oracle, anti=oracle, n_resamples=B).verdict == CONTROLS_BACKWARDS
    assert control_power(r, oracle=oracle, anti=r.copy(), n_resamples=B).verdict == CONTROLS_UNSEPARATED
    with pytest.raises(ValueError, match="oracle or an anti-oracle"):
        control_power(r)


def test_control_power_drops_invalid_images():
    r = np.linspace(0, 1, 20)
    oracle = r + 0.5
    oracle[4] = np.nan
    res = control_power(r, oracle=oracle, n_resamples=B)
    assert res.n == 19 and res.n_dropped == 1 and res.verdict == CONTROLS_CORRECT
    assert res.oracle_minus_random.diff == pytest.approx(0.5)


def test_normalised_scores():
    rng = np.random.default_rng(4)
    r = rng.random(40)
    o = r + 0.3 + rng.normal(0, 0.05, 40)
    m = r + rng.normal(0.1, 0.05, 40)
    out = normalised_scores({"oracle": o, "random": r, "m": m}, random=r, oracle=o, n_resamples=B).set_index("method")
    assert out.loc["oracle", "normalised"] == 1.0
    assert (out.loc["oracle", "ci_low"], out.loc["oracle", "ci_high"]) == (1.0, 1.0)
    assert out.loc["random", "normalised"] == 0.0
    assert (out.loc["random", "ci_low"], out.loc["random", "ci_high"]) == (0.0, 0.0)
    by_hand = (m.mean() - r.mean()) / (o.mean() - r.mean())
    assert out.loc["m", "normalised"] == pytest.approx(by_hand)
    assert out.loc["m", "ci_low"] < by_hand < out.loc["m", "ci_high"]
    assert (out.n == 40).all()
    # oracle == random: no scale, NaN, no error
    flat = normalised_scores({"m": m}, random=r, oracle=r.copy(), n_resamples=B)
    assert math.isnan(flat.normalised.iloc[0]) and math.isnan(flat.ci_low.iloc[0])


# --------------------------------------------------------------------------- agreement


def test_kendall_matrix_by_hand():
    means = pd.DataFrame(
        {"m1": [4, 3, 2, 1], "m2": [3, 4, 2, 1], "m3": [1, 2, 3, 4], "m4": [4, 4, 2, 1]},
        index=["a", "b", "c", "d"], dtype=float,
    )
    tau = kendall_matrix(means, {"m1": True, "m2": True, "m3": False, "m4": True})
    assert list(tau.index) == list(tau.columns) == ["m1", "m2", "m3", "m4"]
    np.testing.assert_array_equal(np.diag(tau), 1.0)
    np.testing.assert_array_equal(tau.to_numpy(), tau.to_numpy().T)
    # 6 pairs of methods; m1 vs m2: one discordant pair (a, b) -> (5 - 1) / 6
    assert tau.loc["m1", "m2"] == pytest.approx(2 / 3)
    # m3 is lower-is-better: the same order of merit as m1
    assert tau.loc["m1", "m3"] == pytest.approx(1.0)
    assert tau.loc["m2", "m3"] == pytest.approx(2 / 3)
    # tau-b with one tie in m4: 5 concordant, 0 discordant, sqrt(6 * 5)
    assert tau.loc["m1", "m4"] == pytest.approx(5 / math.sqrt(30))
    # a mapping with a method missing under one metric uses the methods common to both
    sparse = kendall_matrix({"x": {"a": 3.0, "b": 2.0, "c": 1.0}, "y": {"a": 1.0, "b": 2.0}})
    assert sparse.loc["x", "y"] == pytest.approx(-1.0)
    assert math.isnan(kendall_matrix({"x": {"a": 1.0, "b": 2.0}, "y": {"a": 5.0, "b": 5.0}}).loc["x", "y"])


def test_alpha_is_one_when_every_image_agrees():
    rng = np.random.default_rng(6)
    base = np.array([0.9, 0.5, 0.4, 0.1])
    # every image keeps the order, values vary
    scores = base + rng.random((30, 1)) + rng.random((30, 4)) * 0.01
    res = rank_alpha(scores, list("abcd"))
    assert res.alpha == pytest.approx(1.0, abs=1e-12)
    assert res.n == 30 and res.n_dropped == 0
    assert rank_alpha(-scores, higher_is_better=False).alpha == pytest.approx(1.0, abs=1e-12)


def test_alpha_follows_the_per_image_rankings():
    rng = np.random.default_rng(7)
    scores = rng.random((20, 5)) + np.linspace(0.5, 0, 5)
    scores[2, 1] = np.nan
    ranks, names, dropped = per_image_ranks(scores, higher_is_better=False)
    kept = np.delete(scores, 2, axis=0)
    np.testing.assert_array_equal(ranks, stats.rankdata(kept, axis=1))
    assert dropped == 1 and names == ("0", "1", "2", "3", "4")
    expected = krippendorff.alpha(reliability_data=stats.rankdata(-kept, axis=1), level_of_measurement="ordinal")
    assert rank_alpha(scores).alpha == pytest.approx(expected)
    assert rank_alpha(scores).alpha < 1.0


def test_krippendorff_alpha_reproduces_the_package_examples():
    # krippendorff.alpha's docstring examples, in the same layout (raters x units, NaN missing):
    # raters = images, units = methods
    nan = np.nan
    first = [[nan, nan, nan, nan, nan, 3, 4, 1, 2, 1, 1, 3, 3, nan, 3],
             [1, nan, 2, 1, 3, 3, 4, 3, nan, nan, nan, nan, nan, nan, nan],
             [nan, nan, 2, 1, 3, 4, 4, nan, 2, 1, 1, 3, 3, nan, 4]]
    assert round(krippendorff_alpha(first, level="nominal"), 6) == 0.691358
    assert round(krippendorff_alpha(first, level="interval"), 6) == 0.810845
    # Krippendorff's own ordinal example (4 coders x 12 units), documented as 0.815
    second = [[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
              [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
              [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
              [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]]
    assert round(krippendorff_alpha(second), 3) == 0.815
    assert math.isnan(krippendorff_alpha([[1.0, 1.0], [1.0, 1.0]]))


# --------------------------------------------------------------------------- aggregate


def test_aggregate_ranks():
    b = _base(40)
    # m1: a > b > c on every image; m2 (lower is better): b best, then a, then c
    m1 = {"a": b + 2.0, "b": b + 1.0, "c": b}
    m2 = {"a": b + 1.0, "b": b, "c": b + 2.0}
    res = aggregate_ranks({"m1": m1, "m2": m2}, higher_is_better={"m1": True, "m2": False}, n_resamples=B)
    assert res.methods == ("a", "b", "c") and res.metrics == ("m1", "m2")
    assert res.metric_ranks == ((1.0, 2.0, 3.0), (2.0, 1.0, 3.0))
    assert res.mean_rank == (1.5, 1.5, 3.0)
    assert res.rank_low == res.rank_high == (1.5, 1.5, 3.0)  # separated on every image: no doubt
    assert res.label == AGGREGATE_LABEL and "never a single truth" in res.label
    frame = res.to_frame()
    assert list(frame["rank[m2]"]) == [2.0, 1.0, 3.0]
    # a selection of the metrics
    only = aggregate_ranks({"m1": m1, "m2": m2}, higher_is_better={"m1": True, "m2": False}, metrics=["m2"],
                           n_resamples=B)
    assert only.mean_rank == (2.0, 1.0, 3.0)


def test_aggregate_ranks_match_the_per_metric_ranks():
    rng = np.random.default_rng(8)
    n = 35
    s1 = rng.random((n, 4))
    s2 = rng.random((n, 4))
    s2[5, 3] = np.nan  # dropped for both metrics
    res = aggregate_ranks({"m1": s1, "m2": s2}, higher_is_better={"m1": True, "m2": False}, n_resamples=300,
                          seed=2)
    keep = np.ones(n, bool)
    keep[5] = False
    r1 = stats.rankdata(-s1[keep].mean(axis=0))
    r2 = stats.rankdata(s2[keep].mean(axis=0))
    np.testing.assert_allclose(res.mean_rank, (r1 + r2) / 2)
    assert res.n == n - 1 and res.n_dropped == 1
    # joint resampling by hand: the same image rows for both metrics
    idx = np.random.default_rng(2).integers(0, n - 1, size=(300, n - 1))
    a, c = s1[keep], s2[keep]
    boot = np.stack([(stats.rankdata(-a[i].mean(0)) + stats.rankdata(c[i].mean(0))) / 2 for i in idx])
    for j in range(4):
        assert res.rank_low[j] == np.quantile(boot[:, j], 0.025, method="lower")
        assert res.rank_high[j] == np.quantile(boot[:, j], 0.975, method="higher")
    with pytest.raises(ValueError, match="same methods on the same images"):
        aggregate_ranks({"m1": s1, "m2": s2[:10]}, n_resamples=B)
    with pytest.raises(KeyError, match="higher_is_better"):
        aggregate_ranks({"m1": s1, "m2": s2}, higher_is_better={"m1": True}, n_resamples=B)
