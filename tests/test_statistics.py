"""Bootstrap CIs, paired comparisons, Holm, ABPC (bench.stats)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bench.stats import (
    bootstrap_ci,
    holm,
    paired_comparison,
    pairwise_comparisons,
    summarize,
)


def test_bootstrap_ci_covers_the_mean_and_is_deterministic():
    rng = np.random.default_rng(0)
    v = rng.normal(0.4, 0.1, size=500)
    lo, hi = bootstrap_ci(v)
    assert lo < v.mean() < hi
    # close to the normal-theory interval
    se = v.std(ddof=1) / np.sqrt(len(v))
    assert abs((hi - lo) - 2 * 1.96 * se) < 0.2 * (2 * 1.96 * se)
    assert bootstrap_ci(v) == (lo, hi)
    assert bootstrap_ci(v, seed=1) != (lo, hi)


def test_bootstrap_ci_width_shrinks_with_confidence():
    v = np.random.default_rng(2).random(200)
    lo90, hi90 = bootstrap_ci(v, confidence=0.90)
    lo99, hi99 = bootstrap_ci(v, confidence=0.99)
    assert lo99 < lo90 < hi90 < hi99


def test_bootstrap_ci_edge_cases():
    assert np.isnan(bootstrap_ci([])).all()
    assert bootstrap_ci([0.3]) == (0.3, 0.3)
    assert bootstrap_ci([0.2, 0.2, 0.2]) == (0.2, 0.2)
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([0.1, np.nan])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([0.1, 0.2], confidence=95)


def test_bootstrap_ci_large_n_is_chunked_and_fast_enough():
    v = np.random.default_rng(3).random(5000)
    lo, hi = bootstrap_ci(v, n_resamples=2000)
    assert lo < v.mean() < hi


def test_summarize():
    s = summarize([0.1, 0.2, 0.3])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.2)
    assert s["ci"][0] <= 0.2 <= s["ci"][1]


def test_paired_comparison_matches_scipy_wilcoxon():
    rng = np.random.default_rng(4)
    b = rng.random(60)
    a = b + rng.normal(0.05, 0.05, size=60)
    res = paired_comparison(a, b)
    assert res["n"] == 60
    assert res["diff"] == pytest.approx(np.mean(a - b))
    assert res["ci"][0] < res["diff"] < res["ci"][1]
    assert res["p_value"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert res["p_value"] < 0.001
    assert res["wins"] + res["losses"] == 60


def test_paired_comparison_identical_and_mismatched():
    a = np.array([0.1, 0.2, 0.3])
    res = paired_comparison(a, a)
    assert res["diff"] == 0 and res["p_value"] == 1.0
    with pytest.raises(ValueError, match="same images"):
        paired_comparison(a, a[:2])


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])
    out = holm([0.01, np.nan, 0.02])
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.02])
    assert holm([]).shape == (0,)


def test_pairwise_comparisons_against_baseline_and_all_pairs():
    rng = np.random.default_rng(5)
    base = rng.random(40)
    scores = {"gradcam": base + 0.2, "random": base + rng.normal(0, 0.01, 40), "other": base + 0.1}
    rows = pairwise_comparisons(scores, baseline="random")
    assert [(r["a"], r["b"]) for r in rows] == [("gradcam", "random"), ("other", "random")]
    raw = [r["p_value"] for r in rows]
    np.testing.assert_allclose([r["p_holm"] for r in rows], holm(raw))
    assert rows[0]["diff"] == pytest.approx(np.mean(scores["gradcam"] - scores["random"]))
    all_pairs = pairwise_comparisons(scores)
    assert [(r["a"], r["b"]) for r in all_pairs] == [
        ("gradcam", "random"),
        ("gradcam", "other"),
        ("random", "other"),
    ]
    with pytest.raises(KeyError, match="baseline"):
        pairwise_comparisons(scores, baseline="nope")
