"""Ranks with intervals, metric power from controls, agreement between metrics, aggregate rank.

Conventions shared by every function here:

- **Per-image scores** of M methods on the same N images are an (N, M) matrix: a numpy
  array (with ``methods`` naming its columns), a :class:`pandas.DataFrame` (its columns are
  the methods) or a mapping ``method -> (N,) values`` (all in the same image order).
- **Valid images**: rows with a NaN or inf in any column are dropped (the intersection of
  the images valid for every method); results report ``n`` (kept) and ``n_dropped``.
- **Orientation**: ``higher_is_better`` is the metric's direction; rank 1 is the best.
- **Ties** get average ranks (``scipy.stats.rankdata(method="average")``); tied best
  methods share a win (k tied best each get 1/k).
- **Resampling**: the paired bootstrap of :func:`bench.stats.bootstrap_row_means`: each
  resample draws N images with replacement and *every* method (and every metric) is
  averaged over those same images, so common random numbers keep their power. Intervals
  are percentile intervals; deterministic given ``seed``.
- Controls (oracle, random, anti-oracle) are reference lines: leave them out of the scores
  passed to :func:`rank_methods`, :func:`kendall_matrix`, :func:`rank_alpha` and
  :func:`aggregate_ranks`; :func:`control_power` and :func:`normalised_scores` take them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from bench.stats import (
    bootstrap_row_means,
    finite_rows,
    paired_comparison,
    percentile_interval,
)

#: verdicts of :func:`control_power`
CONTROLS_CORRECT = "ranks the controls correctly"
CONTROLS_BACKWARDS = "ranks them backwards"
CONTROLS_UNSEPARATED = "cannot separate them"

#: the label an aggregate rank must carry wherever it is shown
AGGREGATE_LABEL = "mean rank across the selected metrics: an aggregate, never a single truth"


def score_matrix(scores: Any, methods: Sequence[str] | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """``(float64 (N, M) matrix, method names)`` from any accepted per-image score layout.

    With a mapping or a DataFrame, ``methods`` selects and orders the columns (default: all,
    in order); with an array it names them (default ``"0"``, ``"1"``, ...). Non-finite
    values are kept (see :func:`bench.stats.finite_rows`).
    """
    if isinstance(scores, pd.DataFrame):
        names = tuple(str(c) for c in scores.columns) if methods is None else tuple(methods)
        missing = [m for m in names if m not in scores.columns]
        if missing:
            raise KeyError(f"no scores for method(s) {', '.join(map(repr, missing))}")
        x = scores.loc[:, list(names)].to_numpy(dtype=np.float64)
    elif isinstance(scores, Mapping):
        names = tuple(scores) if methods is None else tuple(methods)
        missing = [m for m in names if m not in scores]
        if missing:
            raise KeyError(f"no scores for method(s) {', '.join(map(repr, missing))}")
        cols = [np.asarray(scores[m], dtype=np.float64).reshape(-1) for m in names]
        sizes = {c.size for c in cols}
        if len(sizes) > 1:
            detail = ", ".join(f"{m}: {c.size}" for m, c in zip(names, cols, strict=True))
            raise ValueError(f"scores must cover the same images for every method: {detail}")
        x = np.column_stack(cols) if cols else np.empty((0, 0))
    else:
        x = np.asarray(scores, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"scores must be an (images, methods) matrix, got shape {x.shape}")
        names = tuple(str(j) for j in range(x.shape[1])) if methods is None else tuple(methods)
        if len(names) != x.shape[1]:
            raise ValueError(f"{len(names)} method names for {x.shape[1]} columns of scores")
    if len(names) == 0:
        raise ValueError("no methods to rank")
    if len(set(names)) != len(names):
        raise ValueError(f"method names repeat: {', '.join(names)}")
    return x, names


def _valid(x: np.ndarray, names: Sequence[str], what: str = "method") -> tuple[np.ndarray, int]:
    kept, mask = finite_rows(x)
    if kept.shape[0] == 0:
        dead = [n for n, ok in zip(names, np.isfinite(x).any(axis=0), strict=True) if not ok]
        hint = f" ({what}s with no finite value: {', '.join(dead)})" if dead else ""
        raise ValueError(f"no image has a finite score for every {what}{hint}")
    return kept, int(mask.size - mask.sum())


def _rank(means: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Ranks along the last axis, 1 = best, ties averaged."""
    return sps.rankdata(-means if higher_is_better else means, axis=-1, method="average")


def _best_share(ranks: np.ndarray) -> np.ndarray:
    """Per row, 1/k for each of the k methods tied at the best rank, 0 for the others."""
    best = ranks == ranks.min(axis=-1, keepdims=True)
    return best / best.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------- ranks


@dataclass(frozen=True, kw_only=True)
class MethodRanks:
    """Ranks of M methods under one metric, with paired-bootstrap intervals.

    ``rank``: the rank of each method's mean (1 = best, ties averaged); ``rank_low`` /
    ``rank_high``: the percentile interval of its rank over the resamples (ranks that
    occurred); ``p_best``: the share of resamples where it is the best (tied best share
    the win), summing to 1 over the methods.
    """

    methods: tuple[str, ...]
    mean: tuple[float, ...]
    rank: tuple[float, ...]
    rank_low: tuple[float, ...]
    rank_high: tuple[float, ...]
    p_best: tuple[float, ...]
    n: int
    n_dropped: int
    higher_is_better: bool
    confidence: float
    n_resamples: int
    seed: int

    def to_frame(self) -> pd.DataFrame:
        """One row per method: ``method, mean, rank, rank_low, rank_high, p_best, n, n_dropped``."""
        return pd.DataFrame({
            "method": list(self.methods), "mean": list(self.mean), "rank": list(self.rank),
            "rank_low": list(self.rank_low), "rank_high": list(self.rank_high),
            "p_best": list(self.p_best), "n": self.n, "n_dropped": self.n_dropped,
        })


def rank_methods(
    scores: Any,
    methods: Sequence[str] | None = None,
    *,
    higher_is_better: bool = True,
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> MethodRanks:
    """Rank methods by their mean score, with a paired bootstrap interval and P(best).

    ``scores``: per-image scores (N, M) of the methods on the same images (see the module
    notes); images with a non-finite score for any method are dropped. Each resample draws
    the same image rows for every method, ranks the resampled means (ties averaged) and
    credits the best method(s) (k tied best get 1/k each). Deterministic given ``seed``.
    """
    x, names = score_matrix(scores, methods)
    kept, dropped = _valid(x, names)
    means = kept.mean(axis=0)
    rank = _rank(means, higher_is_better)
    boot = _rank(bootstrap_row_means(kept, n_resamples=n_resamples, seed=seed), higher_is_better)
    intervals = [percentile_interval(boot[:, j], confidence, discrete=True) for j in range(len(names))]
    p_best = _best_share(boot).mean(axis=0)
    return MethodRanks(
        methods=names, mean=tuple(map(float, means)), rank=tuple(map(float, rank)),
        rank_low=tuple(lo for lo, _ in intervals), rank_high=tuple(hi for _, hi in intervals),
        p_best=tuple(map(float, p_best)), n=int(kept.shape[0]), n_dropped=dropped,
        higher_is_better=bool(higher_is_better), confidence=float(confidence),
        n_resamples=int(n_resamples), seed=int(seed),
    )


# --------------------------------------------------------------------------- controls


@dataclass(frozen=True, kw_only=True)
class Difference:
    """A paired mean difference ``mean(a - b)`` with its percentile bootstrap CI."""

    diff: float
    ci_low: float
    ci_high: float
    p_value: float


@dataclass(frozen=True, kw_only=True)
class ControlPower:
    """How well a metric separates its controls on these images.

    ``oracle_minus_random`` / ``random_minus_anti``: raw paired differences (``None`` when
    that control was not run); ``verdict``: one of :data:`CONTROLS_CORRECT`,
    :data:`CONTROLS_BACKWARDS`, :data:`CONTROLS_UNSEPARATED`.
    """

    oracle_minus_random: Difference | None
    random_minus_anti: Difference | None
    verdict: str
    n: int
    n_dropped: int
    higher_is_better: bool
    confidence: float


def _side(d: Difference, higher_is_better: bool) -> int:
    """+1: the CI lies on the expected side of 0 (strictly), -1: on the wrong side, 0: covers 0."""
    sign = 1.0 if higher_is_better else -1.0
    lo, hi = sorted((sign * d.ci_low, sign * d.ci_high))
    return 1 if lo > 0 else (-1 if hi < 0 else 0)


def control_power(
    random: Any,
    *,
    oracle: Any = None,
    anti: Any = None,
    higher_is_better: bool = True,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> ControlPower:
    """Does the metric rank oracle > random > anti-oracle (in its direction) on these images?

    ``random`` (null control) and ``oracle`` (positive) / ``anti`` (negative control, either
    may be ``None``, not both) are per-image scores on the same images; images where any
    given control is non-finite are dropped. The differences oracle - random and random -
    anti are paired, with the percentile bootstrap CI of their mean (the same resampled
    images for both). Verdict, with "right side" meaning > 0 when ``higher_is_better`` and
    < 0 otherwise: a CI entirely on the wrong side of 0 -> "ranks them backwards"; every
    CI entirely on the right side -> "ranks the controls correctly"; else "cannot
    separate them" (a CI that touches 0, e.g. identical curves, separates nothing).
    """
    if oracle is None and anti is None:
        raise ValueError("control power needs an oracle or an anti-oracle beside random")
    cols = {"null": random}
    if oracle is not None:
        cols["positive"] = oracle
    if anti is not None:
        cols["negative"] = anti
    x, names = score_matrix(cols)
    kept, dropped = _valid(x, names, "control")
    col = dict(zip(names, kept.T, strict=True))

    def diff(a: np.ndarray, b: np.ndarray) -> Difference:
        res = paired_comparison(a, b, confidence=confidence, seed=seed, n_resamples=n_resamples, wilcoxon=False)
        return Difference(diff=res["diff"], ci_low=res["ci"][0], ci_high=res["ci"][1], p_value=res["p_value"])

    above = diff(col["positive"], col["null"]) if "positive" in col else None
    below = diff(col["null"], col["negative"]) if "negative" in col else None
    sides = [_side(d, higher_is_better) for d in (above, below) if d is not None]
    if -1 in sides:
        verdict = CONTROLS_BACKWARDS
    elif all(s == 1 for s in sides):
        verdict = CONTROLS_CORRECT
    else:
        verdict = CONTROLS_UNSEPARATED
    return ControlPower(
        oracle_minus_random=above, random_minus_anti=below, verdict=verdict, n=int(kept.shape[0]),
        n_dropped=dropped, higher_is_better=bool(higher_is_better), confidence=float(confidence),
    )


def _normalise(m: np.ndarray, r: np.ndarray, o: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (m - r) / (o - r)
    return np.where(o == r, np.nan, out)


def normalised_scores(
    scores: Any,
    *,
    random: Any,
    oracle: Any,
    methods: Sequence[str] | None = None,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """``(mean(score) - mean(random)) / (mean(oracle) - mean(random))`` per method, with a CI.

    0 = no better than random, 1 = as good as the oracle (direction-free: a ratio of two
    differences in the same units). Images where a method or a control is non-finite are
    dropped (jointly, for every method). The CI is the percentile interval over paired
    bootstrap resamples of the images (method, random and oracle resampled together);
    resamples where mean(oracle) == mean(random) give no ratio and are left out, and the
    score is NaN (with a NaN CI) when they are equal on the images themselves.

    Returns one row per method: ``method, normalised, ci_low, ci_high, n, n_dropped``.
    """
    x, names = score_matrix(scores, methods)
    ctrl = np.column_stack([np.asarray(random, np.float64).reshape(-1), np.asarray(oracle, np.float64).reshape(-1)])
    if ctrl.shape[0] != x.shape[0]:
        raise ValueError(f"controls cover {ctrl.shape[0]} images, the methods {x.shape[0]}")
    kept, dropped = _valid(np.column_stack([x, ctrl]), [*names, "null-control", "positive-control"])
    means = kept.mean(axis=0)
    point = _normalise(means[:-2], means[-2], means[-1])
    boot = bootstrap_row_means(kept, n_resamples=n_resamples, seed=seed)
    ratios = _normalise(boot[:, :-2], boot[:, -2:-1], boot[:, -1:])
    rows = []
    for j, name in enumerate(names):
        lo, hi = (math.nan, math.nan) if math.isnan(point[j]) else percentile_interval(ratios[:, j], confidence)
        rows.append({"method": name, "normalised": float(point[j]), "ci_low": lo, "ci_high": hi,
                     "n": int(kept.shape[0]), "n_dropped": dropped})
    return pd.DataFrame(rows, columns=["method", "normalised", "ci_low", "ci_high", "n", "n_dropped"])


# --------------------------------------------------------------------------- agreement


def _orientations(higher_is_better: Mapping[str, bool] | bool, metrics: Sequence[str]) -> dict[str, bool]:
    if isinstance(higher_is_better, Mapping):
        missing = [m for m in metrics if m not in higher_is_better]
        if missing:
            raise KeyError(f"higher_is_better not given for metric(s) {', '.join(map(repr, missing))}")
        return {m: bool(higher_is_better[m]) for m in metrics}
    return {m: bool(higher_is_better) for m in metrics}


def kendall_matrix(
    means: pd.DataFrame | Mapping[str, Mapping[str, float]],
    higher_is_better: Mapping[str, bool] | bool = True,
) -> pd.DataFrame:
    """Kendall's tau-b (``scipy.stats.kendalltau``) between the method rankings of every pair of metrics.

    ``means``: each method's mean score under each metric, a DataFrame (index = methods,
    columns = metrics) or a mapping ``metric -> {method: mean}``. Each metric's ranking is
    oriented by its ``higher_is_better`` (one bool for all, or per metric), so tau = 1 when
    two metrics put the methods in the same order of merit. A pair uses the methods finite
    under both; NaN with fewer than two such methods or when a metric ties them all.
    Returns a symmetric DataFrame (metrics x metrics) with 1 on the diagonal.
    """
    df = means if isinstance(means, pd.DataFrame) else pd.DataFrame({k: pd.Series(v) for k, v in means.items()})
    metrics = [str(c) for c in df.columns]
    orient = _orientations(higher_is_better, metrics)
    x = df.to_numpy(dtype=np.float64) * np.array([1.0 if orient[m] else -1.0 for m in metrics])
    k = len(metrics)
    out = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            ok = np.isfinite(x[:, i]) & np.isfinite(x[:, j])
            tau = math.nan
            if ok.sum() >= 2 and np.ptp(x[ok, i]) > 0 and np.ptp(x[ok, j]) > 0:
                tau = float(sps.kendalltau(x[ok, i], x[ok, j]).statistic)
            out[i, j] = out[j, i] = tau
    return pd.DataFrame(out, index=metrics, columns=metrics)


def per_image_ranks(
    scores: Any, methods: Sequence[str] | None = None, *, higher_is_better: bool = True
) -> tuple[np.ndarray, tuple[str, ...], int]:
    """``(ranks (n, M), methods, n_dropped)``: each valid image ranks the methods (1 = best, ties averaged)."""
    x, names = score_matrix(scores, methods)
    kept, dropped = _valid(x, names)
    return _rank(kept, higher_is_better), names, dropped


def krippendorff_alpha(ratings: Any, *, level: str = "ordinal") -> float:
    """Krippendorff's alpha of ``ratings`` (raters x units, NaN = missing), by the ``krippendorff`` package.

    The layout is the package's ``reliability_data``; :func:`rank_alpha` passes images as
    raters and methods as units. NaN when every rating is the same value (no variation to
    agree on).
    """
    import krippendorff

    r = np.asarray(ratings, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"ratings must be a (raters, units) matrix, got shape {r.shape}")
    if np.unique(r[np.isfinite(r)]).size < 2:
        return math.nan
    return float(krippendorff.alpha(reliability_data=r, level_of_measurement=level))


@dataclass(frozen=True, kw_only=True)
class RankAgreement:
    """Krippendorff's alpha (ordinal) of per-image rankings: ``alpha`` over ``n`` images."""

    alpha: float
    n: int
    n_dropped: int
    methods: tuple[str, ...]


def rank_alpha(
    scores: Any, methods: Sequence[str] | None = None, *, higher_is_better: bool = True
) -> RankAgreement:
    """How consistently the images of one metric rank the methods (Tomsett et al., AAAI 2020).

    Units = methods, raters = images: each valid image ranks the methods by its per-image
    scores (:func:`per_image_ranks`, orientation-aware, ties averaged) and Krippendorff's
    alpha at the ordinal level measures their agreement (1 = every image gives the same
    ranking, 0 = no more than chance).
    """
    ranks, names, dropped = per_image_ranks(scores, methods, higher_is_better=higher_is_better)
    return RankAgreement(alpha=krippendorff_alpha(ranks, level="ordinal"), n=int(ranks.shape[0]),
                         n_dropped=dropped, methods=names)


# --------------------------------------------------------------------------- aggregate


@dataclass(frozen=True, kw_only=True)
class AggregateRanks:
    """Mean rank of each method across ``metrics`` (:data:`AGGREGATE_LABEL`).

    ``metric_ranks[i][j]``: method j's rank under metrics[i] (of its mean); ``mean_rank``:
    their mean over the metrics; ``rank_low`` / ``rank_high``: its percentile interval over
    joint resamples of the images (values that occurred).
    """

    methods: tuple[str, ...]
    metrics: tuple[str, ...]
    metric_ranks: tuple[tuple[float, ...], ...]
    mean_rank: tuple[float, ...]
    rank_low: tuple[float, ...]
    rank_high: tuple[float, ...]
    n: int
    n_dropped: int
    confidence: float
    label: str = AGGREGATE_LABEL

    def to_frame(self) -> pd.DataFrame:
        """One row per method: ``method, mean_rank, rank_low, rank_high, rank[<metric>]..., n``."""
        df = pd.DataFrame({"method": list(self.methods), "mean_rank": list(self.mean_rank),
                           "rank_low": list(self.rank_low), "rank_high": list(self.rank_high)})
        for metric, ranks in zip(self.metrics, self.metric_ranks, strict=True):
            df[f"rank[{metric}]"] = list(ranks)
        df["n"] = self.n
        df["n_dropped"] = self.n_dropped
        return df


def aggregate_ranks(
    scores: Mapping[str, Any],
    *,
    higher_is_better: Mapping[str, bool] | bool = True,
    metrics: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> AggregateRanks:
    """Mean rank of each method across a selected set of metrics -- an aggregate, never a single truth.

    ``scores``: ``metric -> per-image scores (N, M)`` of the same methods on the same N
    images in the same order (align by image id first); ``metrics`` selects and orders the
    metrics (default: all). Each metric ranks the methods by their means (its own
    ``higher_is_better``, ties averaged) and the ranks are averaged over the metrics.
    Images with a non-finite score under any selected metric are dropped; the interval
    resamples the remaining images jointly (the same rows for every metric and method).
    """
    chosen = list(scores) if metrics is None else list(metrics)
    if not chosen:
        raise ValueError("no metrics to aggregate")
    missing = [m for m in chosen if m not in scores]
    if missing:
        raise KeyError(f"no scores for metric(s) {', '.join(map(repr, missing))}")
    orient = _orientations(higher_is_better, chosen)
    first, names = score_matrix(scores[chosen[0]], methods)
    blocks = [first]
    for metric in chosen[1:]:
        x, _ = score_matrix(scores[metric], names)
        if x.shape != first.shape:
            raise ValueError(f"metric {metric!r} does not score the same methods on the same images as {chosen[0]!r}")
        blocks.append(x)
    t, m = len(chosen), len(names)
    kept, dropped = _valid(np.column_stack(blocks), [f"{a}/{b}" for a in chosen for b in names], "metric/method")
    sign = np.repeat([1.0 if orient[c] else -1.0 for c in chosen], m)  # higher = better, every block

    def mean_ranks(col_means: np.ndarray) -> np.ndarray:  # (..., t*m) -> (..., t, m)
        oriented = (col_means * sign).reshape(*col_means.shape[:-1], t, m)
        return _rank(oriented, True)

    point = mean_ranks(kept.mean(axis=0))
    boot = mean_ranks(bootstrap_row_means(kept, n_resamples=n_resamples, seed=seed)).mean(axis=-2)
    intervals = [percentile_interval(boot[:, j], confidence, discrete=True) for j in range(m)]
    return AggregateRanks(
        methods=names, metrics=tuple(chosen), metric_ranks=tuple(tuple(map(float, r)) for r in point),
        mean_rank=tuple(map(float, point.mean(axis=0))), rank_low=tuple(lo for lo, _ in intervals),
        rank_high=tuple(hi for _, hi in intervals), n=int(kept.shape[0]), n_dropped=dropped,
        confidence=float(confidence),
    )
