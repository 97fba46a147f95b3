"""Confidence intervals, paired tests of the mean and sanity gates for per-image scores.

Resampling
    Every bootstrap here resamples *images* (rows) with replacement, seeded by
    ``numpy.random.default_rng(seed)``, in chunks so memory stays bounded for large n.
    For the same ``seed`` and the same number of images every function draws the same
    resamples: :func:`bootstrap_ci` of one column, :func:`bootstrap_row_means` of many
    columns, and the CI and p-value of :func:`paired_comparison` all see identical rows.

Functions
    - :func:`bootstrap_ci`: percentile bootstrap interval of the mean.
    - :func:`bootstrap_means` / :func:`bootstrap_row_means`: the resample means themselves
      (one column / paired columns: the same rows for every column).
    - :func:`finite_rows`: the images valid for every column (rows with any NaN/inf dropped).
    - :func:`percentile_interval`: the percentile interval of resampled statistics.
    - :func:`paired_comparison`: two scores on the same images: the mean difference, its
      bootstrap CI, and a bootstrap test of that same mean (one estimand), with a verdict.
    - :func:`effect_verdict`: "better" / "worse" / "negligible" / "not significant".
    - :func:`holm`: Holm-Bonferroni adjusted p-values (step-down, monotone).
    - :func:`pairwise_comparisons`: every pair (or each against a baseline), Holm-corrected.
    - :func:`wilcoxon_p`: the Wilcoxon signed-rank p-value, kept as a descriptive extra;
      it tests the median and is *not* the significance test.
    - :func:`sanity_flags`: which sanity gates (model randomisation, random logit) a method fails.
    - :func:`summarize`: mean, CI and n of one score, as every table needs.

Ranks with intervals, metric power from controls, agreement between metrics and the
aggregate rank live in :mod:`bench.ranking`, built on the helpers above.

Only numpy and scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_CHUNK = 2_000_000  # elements of the resample-index matrix drawn at once

#: verdicts of :func:`effect_verdict` (and of :func:`paired_comparison`)
BETTER = "better"
WORSE = "worse"
NEGLIGIBLE = "negligible"
NOT_SIGNIFICANT = "not significant"
VERDICTS = (BETTER, WORSE, NEGLIGIBLE, NOT_SIGNIFICANT)

#: default smallest |mean difference| worth reporting, in the metric's own units
DEFAULT_MIN_EFFECT = 0.01

#: what :func:`paired_comparison`'s ``p_value`` is, for a table's notes
MEAN_TEST = (
    "paired bootstrap test of the mean difference (the same resamples as its CI: "
    "significant exactly when the CI excludes 0, up to resampling)"
)


def _values(values: Any, name: str = "values") -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        v = v.reshape(-1)
    if np.isnan(v).any():
        raise ValueError(f"{name} contain NaN ({int(np.isnan(v).sum())} of {v.size})")
    return v


def _check_confidence(confidence: float) -> float:
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return c


def _check_resamples(n_resamples: int) -> int:
    b = int(n_resamples)
    if b < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples!r}")
    return b


def _check_alpha(alpha: float | None, confidence: float) -> float:
    a = 1.0 - float(confidence) if alpha is None else float(alpha)
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return a


def _check_min_effect(min_effect: float) -> float:
    e = float(min_effect)
    if not (math.isfinite(e) and e >= 0.0):
        raise ValueError(f"min_effect must be a finite number >= 0, got {min_effect!r}")
    return e


def finite_rows(scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """The rows (images) of an (N, K) score matrix that are finite in every column.

    Returns ``(kept, mask)``: float64 (n, K) with the rows that hold no NaN or inf, and the
    bool (N,) mask of those rows (``N - mask.sum()`` rows were dropped). A 1-D input is one
    column. This is "the intersection of the images valid for every method".
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"scores must be an (images, columns) matrix, got shape {x.shape}")
    mask = np.isfinite(x).all(axis=1)
    return x[mask], mask


def bootstrap_row_means(scores: Any, n_resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """float64 (n_resamples, K): column means of paired bootstrap resamples of the rows.

    Each resample draws N row indices with replacement (``default_rng(seed)``) and every
    column is averaged over *those same rows*: the paired bootstrap that keeps the common
    random numbers of a paired design. Column ``k`` equals ``bootstrap_means(scores[:, k],
    n_resamples, seed)`` exactly (same draws, same arithmetic), so identical columns give
    identical resample means. ``scores`` must be finite (see :func:`finite_rows`); with no
    rows every mean is NaN.
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"scores must be an (images, columns) matrix, got shape {x.shape}")
    b = _check_resamples(n_resamples)
    n, k = x.shape
    out = np.empty((b, k), dtype=np.float64)
    if n == 0:
        out.fill(np.nan)
        return out
    cols = np.ascontiguousarray(x.T)
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK // n)
    for start in range(0, b, per_chunk):
        stop = min(start + per_chunk, b)
        idx = rng.integers(0, n, size=(stop - start, n))
        for j in range(k):
            out[start:stop, j] = cols[j][idx].mean(axis=1)
    return out


def bootstrap_means(values: Any, n_resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """float64 (n_resamples,): means of bootstrap resamples of ``values``."""
    return bootstrap_row_means(_values(values)[:, None], n_resamples=n_resamples, seed=seed)[:, 0]


def percentile_interval(
    samples: Any, confidence: float = 0.95, *, discrete: bool = False
) -> tuple[float, float]:
    """Percentile interval ``(lo, hi)`` of resampled statistics, NaN resamples ignored.

    ``lo`` / ``hi`` are the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles.
    ``discrete=False`` interpolates linearly (numpy's default, as :func:`bootstrap_ci`);
    ``discrete=True`` takes the resampled values just outside (numpy's ``lower`` /
    ``higher`` methods), so an interval of ranks is made of ranks that occurred.
    ``(nan, nan)`` when no resample is finite.
    """
    c = _check_confidence(confidence)
    s = np.asarray(samples, dtype=np.float64).reshape(-1)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return (float("nan"), float("nan"))
    a = (1.0 - c) / 2.0
    if discrete:
        return (float(np.quantile(s, a, method="lower")), float(np.quantile(s, 1.0 - a, method="higher")))
    lo, hi = np.quantile(s, [a, 1.0 - a])
    return (float(lo), float(hi))


def bootstrap_ci(
    values: Any, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(lo, hi)`` of the mean of ``values``.

    Deterministic for a given ``seed``. ``(nan, nan)`` for no values; a single
    value (or constant values) gives a zero-width interval.
    """
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    v = _values(values)
    if v.size == 0:
        return (float("nan"), float("nan"))
    if np.all(v == v[0]):
        return (float(v[0]), float(v[0]))
    return percentile_interval(bootstrap_means(v, n_resamples=n_resamples, seed=seed), confidence)


def summarize(
    values: Any, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """``{"mean", "ci": [lo, hi], "n", "std"}`` of per-image values."""
    v = _values(values)
    lo, hi = bootstrap_ci(v, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return {
        "mean": float(v.mean()) if v.size else float("nan"),
        "ci": [lo, hi],
        "n": int(v.size),
        "std": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
        "confidence": confidence,
    }


def wilcoxon_p(diff: Any) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (zeros dropped).

    A test of the *median* (of the Walsh averages), not of the mean: kept as a descriptive
    extra (``p_wilcoxon`` of :func:`paired_comparison`), never the significance test.
    1.0 when every difference is zero; NaN when there are no differences.
    """
    d = _values(diff, "differences")
    if d.size == 0:
        return float("nan")
    if np.all(d == 0):
        return 1.0
    from scipy import stats

    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def bootstrap_p(resample_means: Any) -> float:
    """Two-sided bootstrap p-value of "mean = 0" from resampled means (CI inversion).

    ``p = min(1, 2 * min(1 + #{m* <= 0}, 1 + #{m* >= 0}) / (B + 1))`` over the B resample
    means ``m*``: the smallest ``alpha`` at which the percentile interval of confidence
    ``1 - alpha`` from the *same* resamples would exclude 0 (the ``+ 1`` keeps it above 0,
    Davison & Hinkley 1997, eq. 4.11). So ``p < alpha`` exactly when that interval excludes 0,
    up to the interpolation of one quantile. All resamples exactly 0 give 1; none finite, NaN.
    """
    m = np.asarray(resample_means, dtype=np.float64).reshape(-1)
    m = m[np.isfinite(m)]
    if m.size == 0:
        return float("nan")
    below = int((m <= 0).sum())
    above = int((m >= 0).sum())
    return float(min(1.0, 2.0 * (1 + min(below, above)) / (m.size + 1)))


def effect_verdict(
    diff: float,
    p_value: float,
    *,
    alpha: float = 0.05,
    min_effect: float = DEFAULT_MIN_EFFECT,
    higher_is_better: bool = True,
) -> str:
    """The verdict on a mean difference ``a - b``, in the metric's direction.

    - ``"negligible"``: ``|diff| < min_effect`` (in the metric's units), whatever ``p_value``;
    - ``"better"`` / ``"worse"``: ``p_value < alpha`` and ``a`` is better / worse than ``b``
      (``diff > 0`` is better when ``higher_is_better``, ``diff < 0`` otherwise);
    - ``"not significant"``: otherwise, including NaN (no shared images).

    Pass the Holm-adjusted p-value when the comparison belongs to a family.
    """
    a = _check_alpha(alpha, 0.95)
    e = _check_min_effect(min_effect)
    d, p = float(diff), float(p_value)
    if math.isnan(d) or math.isnan(p):
        return NOT_SIGNIFICANT
    if abs(d) < e:
        return NEGLIGIBLE
    if p < a:
        return BETTER if (d > 0) == bool(higher_is_better) else WORSE
    return NOT_SIGNIFICANT


def paired_comparison(
    a: Any,
    b: Any,
    *,
    confidence: float = 0.95,
    seed: int = 0,
    n_resamples: int = 10_000,
    alpha: float | None = None,
    min_effect: float = DEFAULT_MIN_EFFECT,
    higher_is_better: bool = True,
    wilcoxon: bool = True,
) -> dict[str, Any]:
    """Compare two per-image scores on the same images (``a[i]`` and ``b[i]`` paired).

    ``wilcoxon=False`` skips the descriptive Wilcoxon p (``p_wilcoxon`` is then NaN): with
    tied differences scipy runs an exact permutation test, about a second per pair.

    Estimand: the mean paired difference ``mean(a - b)``. Its percentile bootstrap CI and
    its test come from the *same* B resamples of the images (:func:`bootstrap_p`), so the
    test is significant at ``alpha = 1 - confidence`` exactly when the CI excludes 0, up to
    resampling. The verdict (:func:`effect_verdict`) calls a ``|diff| < min_effect`` (metric
    units) ``"negligible"`` whatever its p. Here it uses the uncorrected p; in a family use
    :func:`pairwise_comparisons` (Holm).

    Returns ``{"diff", "ci": (lo, hi), "p_value" (the bootstrap test of the mean),
    "p_wilcoxon" (descriptive only), "test", "n", "mean_a", "mean_b", "wins": #(a > b),
    "losses": #(a < b), "confidence", "alpha", "min_effect", "higher_is_better",
    "significant": p_value < alpha, "verdict"}``.
    """
    c = _check_confidence(confidence)
    al = _check_alpha(alpha, c)
    me = _check_min_effect(min_effect)
    va, vb = _values(a, "a"), _values(b, "b")
    if va.shape != vb.shape:
        raise ValueError(
            f"paired comparison needs the same images on both sides: got {va.size} and {vb.size} values"
        )
    d = va - vb
    if d.size == 0:
        diff, ci, p = float("nan"), (float("nan"), float("nan")), float("nan")
    elif np.all(d == d[0]):  # every resample mean is d[0]: a zero-width interval
        diff = float(d[0])
        ci = (diff, diff)
        p = 1.0 if diff == 0 else float(min(1.0, 2.0 / (_check_resamples(n_resamples) + 1)))
    else:
        means = bootstrap_means(d, n_resamples=n_resamples, seed=seed)
        diff, ci, p = float(d.mean()), percentile_interval(means, c), bootstrap_p(means)
    return {
        "diff": diff,
        "ci": ci,
        "p_value": p,
        "p_wilcoxon": wilcoxon_p(d) if wilcoxon else float("nan"),
        "test": MEAN_TEST,
        "n": int(d.size),
        "mean_a": float(va.mean()) if va.size else float("nan"),
        "mean_b": float(vb.mean()) if vb.size else float("nan"),
        "wins": int((d > 0).sum()),
        "losses": int((d < 0).sum()),
        "confidence": confidence,
        "alpha": al,
        "min_effect": me,
        "higher_is_better": bool(higher_is_better),
        "significant": bool(p < al),
        "verdict": effect_verdict(diff, p, alpha=al, min_effect=me, higher_is_better=higher_is_better),
    }


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input order (NaN stays NaN, ignored)."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(p[idx], kind="stable")]
    adjusted = (m - np.arange(m)) * p[order]
    adjusted = np.minimum(1.0, np.maximum.accumulate(adjusted))
    out[order] = adjusted
    return out


def pairwise_comparisons(
    scores: Mapping[str, Any],
    *,
    baseline: str | None = None,
    confidence: float = 0.95,
    seed: int = 0,
    n_resamples: int = 10_000,
    alpha: float | None = None,
    min_effect: float = DEFAULT_MIN_EFFECT,
    higher_is_better: bool = True,
) -> list[dict[str, Any]]:
    """Paired comparisons between per-image scores on the same images, Holm-corrected.

    ``scores`` maps a name (an explainer) to its per-image values, all in the
    same image order. With ``baseline`` every other entry is compared with it
    (``a = name, b = baseline``: the "gain over control" rows); otherwise every
    unordered pair in insertion order. Each row is :func:`paired_comparison`'s
    dict plus ``"a"``, ``"b"``, ``"p_holm"`` (its ``p_value`` adjusted over the rows
    returned), ``"significant_holm"`` (``p_holm < alpha``) and ``"verdict"`` recomputed
    from ``p_holm`` (``"significant"`` stays the uncorrected one).
    """
    names = list(scores)
    if baseline is not None:
        if baseline not in scores:
            raise KeyError(f"baseline {baseline!r} not among the compared scores: {', '.join(names)}")
        pairs = [(name, baseline) for name in names if name != baseline]
    else:
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    rows = []
    for a, b in pairs:
        row = paired_comparison(
            scores[a], scores[b], confidence=confidence, seed=seed, n_resamples=n_resamples,
            alpha=alpha, min_effect=min_effect, higher_is_better=higher_is_better,
        )
        rows.append({"a": a, "b": b, **row})
    adjusted = holm([r["p_value"] for r in rows])
    for row, p in zip(rows, adjusted, strict=True):
        row["p_holm"] = float(p)
        row["significant_holm"] = bool(p < row["alpha"])
        row["verdict"] = effect_verdict(
            row["diff"], p, alpha=row["alpha"], min_effect=row["min_effect"], higher_is_better=higher_is_better
        )
    return rows


# --------------------------------------------------------------------------- sanity gates

#: the checks :func:`sanity_flags` knows, in the order it reports them
SANITY_CHECKS = ("model-randomisation", "random-logit")


@dataclass(frozen=True, kw_only=True)
class SanityFlag:
    """One failed sanity gate: ``check`` (an id of :data:`SANITY_CHECKS`), the method's
    ``value``, the ``threshold`` it reached, and ``text`` for a table's flag."""

    check: str
    value: float
    threshold: float
    text: str


def _check_threshold(threshold: float, name: str) -> float:
    t = float(threshold)
    if not math.isfinite(t):
        raise ValueError(f"{name} must be a finite number, got {threshold!r}")
    return t


def sanity_flags(
    randomisation: float | None = None,
    random_logit: float | None = None,
    *,
    randomisation_threshold: float = 0.5,
    random_logit_threshold: float = 0.5,
) -> list[SanityFlag]:
    """The sanity gates a method fails, from its mean similarities (empty list = passes).

    - ``randomisation``: the mean Spearman rank correlation between its heatmaps on the
      trained model and after cascading randomisation of the whole network (Adebayo et al.
      2018). ``>= randomisation_threshold`` means the explanation ignores the model's
      weights: "survives model randomisation". A constant map is trivially invariant
      (similarity 1) and fails.
    - ``random_logit``: the mean similarity between its heatmaps for the explained class and
      for a random other class (Sixt et al. 2020). ``>= random_logit_threshold`` means it
      does not depend on the class: "fails the random-logit test".

    A value that is ``None`` or NaN was not measured and is not checked. The texts name the
    check, the value and the threshold, e.g. ``"survives model randomisation (Spearman 0.93
    >= 0.5)"``.
    """
    rt = _check_threshold(randomisation_threshold, "randomisation_threshold")
    lt = _check_threshold(random_logit_threshold, "random_logit_threshold")
    flags = []
    checks = (
        (SANITY_CHECKS[0], randomisation, rt, "survives model randomisation (Spearman {v:.2f} >= {t:g})"),
        (SANITY_CHECKS[1], random_logit, lt, "fails the random-logit test (similarity {v:.2f} >= {t:g})"),
    )
    for check, value, threshold, text in checks:
        if value is None or math.isnan(float(value)):
            continue
        v = float(value)
        if v >= threshold:
            flags.append(SanityFlag(check=check, value=v, threshold=threshold, text=text.format(v=v, t=threshold)))
    return flags
