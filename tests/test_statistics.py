"""Bootstrap CIs, paired tests of the mean, verdicts, Holm, sanity gates (bench.stats)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bench.stats import (
    bootstrap_ci,
    bootstrap_means,
    bootstrap_p,
    bootstrap_row_means,
    effect_verdict,
    finite_rows,
    holm,
    paired_comparison,
    pairwise_comparisons,
    percentile_interval,
    sanity_flags,
    summarize,
    wilcoxon_p,
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


def test_paired_comparison_tests_the_mean_it_estimates():
    rng = np.random.default_rng(4)
    b = rng.random(60)
    a = b + rng.normal(0.05, 0.05, size=60)
    res = paired_comparison(a, b, n_resamples=4000, seed=7)
    d = a - b
    assert res["n"] == 60
    assert res["diff"] == pytest.approx(np.mean(d))
    # the CI and the test come from the same resamples of the images
    means = bootstrap_means(d, n_resamples=4000, seed=7)
    assert res["ci"] == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])), rel=1e-12)
    assert res["ci"] == bootstrap_ci(d, n_resamples=4000, seed=7)
    k = min((means <= 0).sum(), (means >= 0).sum())
    assert res["p_value"] == min(1.0, 2 * (1 + k) / (4000 + 1))
    assert res["p_value"] < 0.001 and res["significant"] and res["verdict"] == "better"
    # the Wilcoxon p-value stays available, as a descriptive extra
    assert res["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert wilcoxon_p(d) == res["p_wilcoxon"]
    assert res["wins"] + res["losses"] == 60
    assert res["alpha"] == pytest.approx(0.05) and res["min_effect"] == 0.01


def test_paired_comparison_identical_and_mismatched():
    a = np.array([0.1, 0.2, 0.3])
    res = paired_comparison(a, a)
    assert res["diff"] == 0 and res["p_value"] == 1.0 and res["p_wilcoxon"] == 1.0
    assert res["ci"] == (0.0, 0.0) and not res["significant"] and res["verdict"] == "negligible"
    with pytest.raises(ValueError, match="same images"):
        paired_comparison(a, a[:2])
    empty = paired_comparison([], [])
    assert empty["n"] == 0 and np.isnan(empty["p_value"]) and empty["verdict"] == "not significant"


def test_significant_agrees_with_the_ci_excluding_zero():
    rng = np.random.default_rng(11)
    n, trials, agree = 30, 300, 0
    for t in range(trials):
        # effects from 0 to ~4 standard errors, so many land near the boundary
        effect = rng.uniform(-0.75, 0.75) * 1.0
        b = rng.random(n)
        a = b + rng.normal(effect, 1.0, size=n)
        res = paired_comparison(a, b, n_resamples=2000, seed=t, min_effect=0.0)
        lo, hi = res["ci"]
        agree += res["significant"] == (lo > 0 or hi < 0)
    assert agree / trials >= 0.95
    for t in range(50):  # far from 0: always both
        b = rng.random(n)
        a = b + rng.normal(rng.choice([-1.0, 1.0]) * 2.0, 0.5, size=n)
        res = paired_comparison(a, b, n_resamples=2000, seed=t)
        lo, hi = res["ci"]
        assert res["significant"] and (lo > 0 or hi < 0), res


def test_below_the_minimum_effect_is_negligible_whatever_p():
    b = np.random.default_rng(12).random(200)
    a = b + 0.004  # every image: p as small as the resamples allow
    res = paired_comparison(a, b, n_resamples=2000)
    assert res["p_value"] == pytest.approx(2 / 2001) and res["significant"]
    assert res["verdict"] == "negligible"
    assert paired_comparison(a, b, n_resamples=2000, min_effect=0.001)["verdict"] == "better"
    assert paired_comparison(b, a, n_resamples=2000, min_effect=0.001)["verdict"] == "worse"
    # lower is better: a larger value is worse
    assert paired_comparison(a, b, n_resamples=2000, min_effect=0.001, higher_is_better=False)["verdict"] == "worse"
    with pytest.raises(ValueError, match="min_effect"):
        paired_comparison(a, b, min_effect=-1)


def test_effect_verdict_rules():
    assert effect_verdict(0.5, 0.001) == "better"
    assert effect_verdict(-0.5, 0.001) == "worse"
    assert effect_verdict(-0.5, 0.001, higher_is_better=False) == "better"
    assert effect_verdict(0.5, 0.2) == "not significant"
    assert effect_verdict(0.005, 1e-9) == "negligible"
    assert effect_verdict(0.005, 0.9) == "negligible"
    assert effect_verdict(0.5, 0.04, alpha=0.01) == "not significant"
    assert effect_verdict(float("nan"), float("nan")) == "not significant"


def test_bootstrap_p_edges():
    assert bootstrap_p(np.zeros(99)) == 1.0
    assert bootstrap_p(np.full(99, 0.3)) == pytest.approx(2 / 100)
    assert bootstrap_p(np.r_[np.full(49, -1.0), np.full(50, 1.0)]) == 1.0
    assert np.isnan(bootstrap_p([]))


def test_bootstrap_row_means_are_paired_and_match_one_column():
    rng = np.random.default_rng(13)
    x = rng.random((40, 3))
    x[:, 2] = x[:, 0]
    rows = bootstrap_row_means(x, n_resamples=500, seed=3)
    assert rows.shape == (500, 3)
    for j in range(3):
        np.testing.assert_array_equal(rows[:, j], bootstrap_means(x[:, j], n_resamples=500, seed=3))
    np.testing.assert_array_equal(rows[:, 0], rows[:, 2])  # identical columns, identical resamples
    # the documented draw: default_rng(seed).integers(0, N, (B, N)), the same rows for every column
    idx = np.random.default_rng(3).integers(0, 40, size=(500, 40))
    np.testing.assert_allclose(rows, np.stack([x[i].mean(axis=0) for i in idx]), rtol=0, atol=1e-12)


def test_finite_rows_and_percentile_interval():
    x = np.array([[1.0, 2.0], [np.nan, 1.0], [3.0, np.inf], [4.0, 5.0]])
    kept, mask = finite_rows(x)
    np.testing.assert_array_equal(kept, [[1.0, 2.0], [4.0, 5.0]])
    np.testing.assert_array_equal(mask, [True, False, False, True])
    s = np.arange(1, 101, dtype=float)
    assert percentile_interval(s, 0.9) == pytest.approx(tuple(np.quantile(s, [0.05, 0.95])), rel=1e-12)
    lo, hi = percentile_interval(s, 0.9, discrete=True)
    assert lo in s and hi in s and lo <= np.quantile(s, 0.05) and hi >= np.quantile(s, 0.95)
    assert percentile_interval([1.0, np.nan, 2.0, np.nan], 0.5) == pytest.approx((1.25, 1.75))
    assert np.isnan(percentile_interval([np.nan], 0.9)).all()


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
    # the family's verdicts come from the Holm-adjusted p-values
    for r in rows:
        assert r["significant_holm"] == (r["p_holm"] < 0.05)
        assert r["verdict"] == effect_verdict(r["diff"], r["p_holm"])
    assert rows[0]["verdict"] == "better"


def test_sanity_flags_name_the_check_and_the_value():
    # a constant map is trivially invariant to randomisation: similarity 1
    flags = sanity_flags(randomisation=1.0)
    assert [f.check for f in flags] == ["model-randomisation"]
    assert flags[0].text == "survives model randomisation (Spearman 1.00 >= 0.5)"
    assert flags[0].value == 1.0 and flags[0].threshold == 0.5
    assert sanity_flags(randomisation=0.93)[0].text == "survives model randomisation (Spearman 0.93 >= 0.5)"
    both = sanity_flags(randomisation=0.7, random_logit=0.81)
    assert [f.check for f in both] == ["model-randomisation", "random-logit"]
    assert both[1].text == "fails the random-logit test (similarity 0.81 >= 0.5)"
    assert sanity_flags(randomisation=0.2, random_logit=0.1) == []
    assert sanity_flags() == [] and sanity_flags(randomisation=float("nan")) == []
    assert sanity_flags(randomisation=0.5) != []  # the threshold itself fails
    assert sanity_flags(randomisation=0.7, randomisation_threshold=0.8) == []
    assert sanity_flags(random_logit=0.3, random_logit_threshold=0.25)[0].text.endswith("(similarity 0.30 >= 0.25)")
    with pytest.raises(ValueError, match="randomisation_threshold"):
        sanity_flags(randomisation=0.5, randomisation_threshold=float("nan"))
