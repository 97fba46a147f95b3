"""Confidence intervals and paired comparisons for per-image scores.

- :func:`bootstrap_ci`: percentile bootstrap interval of the mean, vectorised
  (resamples drawn in chunks, so memory stays bounded for large n).
- :func:`paired_comparison`: two explainers on the same images: the mean
  difference with its bootstrap CI and the Wilcoxon signed-rank p-value.
- :func:`holm`: Holm-Bonferroni adjusted p-values (step-down, monotone).
- :func:`pairwise_comparisons`: every pair of explainers of one model (or each
  against a control), Holm-corrected over the family.
- :func:`summarize`: mean, CI and n of one score, as every table needs.

Only numpy and scipy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_CHUNK = 2_000_000  # elements of the resample-index matrix drawn at once


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


def bootstrap_means(values: Any, n_resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """float64 (n_resamples,): means of bootstrap resamples of ``values``."""
    v = _values(values)
    n = v.size
    if n == 0:
        return np.full(int(n_resamples), np.nan)
    rng = np.random.default_rng(seed)
    out = np.empty(int(n_resamples), dtype=np.float64)
    per_chunk = max(1, _CHUNK // n)
    for start in range(0, int(n_resamples), per_chunk):
        stop = min(start + per_chunk, int(n_resamples))
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = v[idx].mean(axis=1)
    return out


def bootstrap_ci(
    values: Any, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(lo, hi)`` of the mean of ``values``.

    Deterministic for a given ``seed``. ``(nan, nan)`` for no values; a single
    value (or constant values) gives a zero-width interval.
    """
    c = _check_confidence(confidence)
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples!r}")
    v = _values(values)
    if v.size == 0:
        return (float("nan"), float("nan"))
    if np.all(v == v[0]):
        return (float(v[0]), float(v[0]))
    means = bootstrap_means(v, n_resamples=n_resamples, seed=seed)
    alpha = (1.0 - c) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


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

    1.0 when every difference is zero; NaN when there are no differences.
    """
    d = _values(diff, "differences")
    if d.size == 0:
        return float("nan")
    if np.all(d == 0):
        return 1.0
    from scipy import stats

    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_comparison(
    a: Any,
    b: Any,
    *,
    confidence: float = 0.95,
    seed: int = 0,
    n_resamples: int = 10_000,
) -> dict[str, Any]:
    """Compare two per-image scores on the same images (``a[i]`` and ``b[i]`` paired).

    Returns ``{"diff": mean(a - b), "ci": (lo, hi) bootstrap CI of that mean,
    "p_value": two-sided Wilcoxon signed-rank, "n", "mean_a", "mean_b",
    "wins": #(a > b), "losses": #(a < b)}``.
    """
    va, vb = _values(a, "a"), _values(b, "b")
    if va.shape != vb.shape:
        raise ValueError(
            f"paired comparison needs the same images on both sides: got {va.size} and {vb.size} values"
        )
    d = va - vb
    lo, hi = bootstrap_ci(d, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return {
        "diff": float(d.mean()) if d.size else float("nan"),
        "ci": (lo, hi),
        "p_value": wilcoxon_p(d),
        "n": int(d.size),
        "mean_a": float(va.mean()) if va.size else float("nan"),
        "mean_b": float(vb.mean()) if vb.size else float("nan"),
        "wins": int((d > 0).sum()),
        "losses": int((d < 0).sum()),
        "confidence": confidence,
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
) -> list[dict[str, Any]]:
    """Paired comparisons between per-image scores on the same images, Holm-corrected.

    ``scores`` maps a name (an explainer) to its per-image values, all in the
    same image order. With ``baseline`` every other entry is compared with it
    (``a = name, b = baseline``: the "gain over control" rows); otherwise every
    unordered pair in insertion order. Each row is :func:`paired_comparison`'s
    dict plus ``"a"``, ``"b"`` and ``"p_holm"`` (adjusted over the rows returned).
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
            scores[a], scores[b], confidence=confidence, seed=seed, n_resamples=n_resamples
        )
        rows.append({"a": a, "b": b, **row})
    adjusted = holm([r["p_value"] for r in rows])
    for row, p in zip(rows, adjusted, strict=True):
        row["p_holm"] = float(p)
    return rows
