"""Statistics between the rows of a leaderboard: per-image values, paired comparisons, per class.

- :func:`per_image_values`: a row's per-image values of one metric column (the arrays its
  cell record points to), indexed by image id.
- :func:`paired_comparisons`: per metric column, for each (dataset, model, weights,
  perturbation, settings fingerprint), every pair of explainers (or each against the
  family's reference control) compared on the SAME images (aligned by image id,
  intersection of ids): mean difference with a bootstrap CI, the test of that same mean
  (:func:`bench.stats.paired_comparison`, :data:`bench.stats.MEAN_TEST`), Holm correction
  across the family and a verdict (:func:`bench.stats.effect_verdict`: better / worse /
  negligible / not significant, with a minimum effect in the metric's units). Rows of
  different settings fingerprints are never paired, nor values of a metric under two
  parameter sets (two metric columns).
- :func:`leaderboard_comparisons`: what a leaderboard keeps: every pair for the primary
  metric, each explainer against the reference control for the others (``scope="all"``:
  every pair of every metric, :func:`all_comparisons`).
- :func:`attach_gain_ci`: the paired difference to the reference control and its CI in the
  gain columns.
- :func:`per_class_values` / :func:`group_by_class`: a metric per true class with a CI.

The statistics themselves live in :mod:`bench.stats`; the tables of these frames in
:mod:`bench.publish.tables`.
"""

from __future__ import annotations

import functools
import math
import types
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import stats as st
from bench.pipeline.record import MetricResult
from bench.pipeline.store import read_json, read_npz
from bench.publish.collect import (
    PAIR_COLUMNS,
    MetricColumn,
    bootstrap_resamples,
    confidence_of,
    metric_columns_of,
    pair_columns,
    primary_column,
    run_dir_of,
)

COMPARISON_COLUMNS: tuple[str, ...] = (
    "dataset", "model", "weights", "perturbation", "settings", "metric", "explainer_a", "explainer_b",
    "params_a", "params_b", "n", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "p_value", "p_holm",
    "significant", "verdict", "family_size", "run_a", "run_b",
)
#: A family of comparisons: rows that share these (the leaderboard's pairing key).
FAMILY: tuple[str, ...] = PAIR_COLUMNS
ALPHA = 0.05
#: Which comparisons :func:`leaderboard_comparisons` keeps (``leaderboard.comparisons``):
#: ``"primary"``: every pair for the primary metric, each explainer against the family's
#: reference control for the other metrics; ``"all"``: every pair of every metric.
COMPARISON_SCOPES: tuple[str, ...] = ("primary", "all")


def min_effect_for(column: MetricColumn | str, min_effect: float | Mapping[str, float] = st.DEFAULT_MIN_EFFECT) -> float:
    """The smallest difference worth reporting for one metric column, in its own units.

    ``min_effect``: one number for every metric, or a mapping ``metric id or name -> number``
    with an optional ``"default"`` (else :data:`bench.stats.DEFAULT_MIN_EFFECT`), as
    ``leaderboard.min_effect`` is written.
    """
    if not isinstance(min_effect, Mapping):
        return float(min_effect)
    cid = column.id if isinstance(column, MetricColumn) else str(column)
    name = column.name if isinstance(column, MetricColumn) else str(column)
    for key in (cid, name, "default"):
        if key in min_effect:
            return float(min_effect[key])
    return float(st.DEFAULT_MIN_EFFECT)


# ---------------------------------------------------------------------------------------
# per-cell arrays
# ---------------------------------------------------------------------------------------
def load_cell_arrays(row: Mapping[str, Any], kind: str = "curves") -> dict[str, np.ndarray] | None:
    """The curves (or heatmaps) NPZ of a leaderboard row; None (with a warning) if missing/unreadable."""
    rel = row.get(f"_{kind}_file")
    if not rel:
        return None
    path = run_dir_of(row) / str(rel)
    try:
        return read_npz(path)
    except (OSError, ValueError, KeyError) as exc:
        warnings.warn(f"cannot read {kind} file {path} of cell {row.get('cell_id')!r}: {exc}", stacklevel=2)
        return None


@functools.lru_cache(maxsize=512)
def _read_npz_once(path: str, mtime_ns: int, size: int) -> Mapping[str, np.ndarray]:
    return types.MappingProxyType(read_npz(Path(path)))


def cached_npz(path: str | Path) -> Mapping[str, np.ndarray]:
    """:func:`bench.pipeline.store.read_npz`, read once per file version (path, mtime, size): every
    metric column of a cell lives in one NPZ, read by every table. Read-only: do not modify."""
    st_ = Path(path).stat()
    return _read_npz_once(str(Path(path).resolve()), st_.st_mtime_ns, st_.st_size)


def metric_result(row: Mapping[str, Any], column: MetricColumn) -> MetricResult | None:
    """The row's ok result of ``column`` (its metric under that parameter set), else None."""
    metrics = row.get("_metrics")
    m = metrics.get(column.name) if isinstance(metrics, Mapping) else None
    if m is None or not m.ok or (m.params_key and m.params_key != column.params_key):
        return None
    return m


def metric_arrays(row: Mapping[str, Any], column: MetricColumn) -> tuple[np.ndarray, Mapping[str, np.ndarray]] | None:
    """(headline values (N,), the NPZ holding them) of a row's metric; None (warned) when unreadable."""
    m = metric_result(row, column)
    if m is None or not m.file or not m.key:
        return None
    path = run_dir_of(row) / str(m.file)
    try:
        arrays = cached_npz(path)
    except (OSError, ValueError, KeyError) as exc:
        warnings.warn(f"cannot read the per-image values of {column.id!r} of cell {row.get('cell_id')!r} "
                      f"({path}): {exc}", stacklevel=2)
        return None
    if m.key not in arrays or m.ids_key not in arrays:
        warnings.warn(f"cell {row.get('cell_id')!r}: {path} lacks {m.key!r} or {m.ids_key!r}: the "
                      f"per-image values of {column.id!r} are not available", stacklevel=2)
        return None
    return np.asarray(arrays[m.key], np.float64), arrays


def per_image_values(row: Mapping[str, Any], column: MetricColumn) -> pd.Series | None:
    """A row's per-image values of one metric column, indexed by image id (duplicates: first kept).

    Non-finite values (an image the metric does not define, e.g. one with an empty mask) are
    left out silently: that is expected, and their count is the record's ``n_excluded`` (the
    ``<metric>_n_excluded`` column of the rows), which the tables show.
    """
    got = metric_arrays(row, column)
    if got is None:
        return None
    values, arrays = got
    m = metric_result(row, column)
    assert m is not None
    s = pd.Series(values, index=np.asarray(arrays[m.ids_key]).astype(str))
    s = s[~s.index.duplicated(keep="first")]
    return s[np.isfinite(s.to_numpy())]


def per_image_frame(row: Mapping[str, Any], column: MetricColumn, extra: Sequence[str] = ()) -> pd.DataFrame | None:
    """A row's per-image ``value`` of one metric column, its true ``label`` (when stored) and the
    metric's other per-image columns named in ``extra`` (those it recorded as (N,)), indexed by
    image id; rows whose ``value`` is not finite are kept (the caller decides). None when unreadable."""
    got = metric_arrays(row, column)
    if got is None:
        return None
    values, arrays = got
    m = metric_result(row, column)
    assert m is not None
    ids = np.asarray(arrays[m.ids_key]).astype(str)
    data: dict[str, Any] = {"value": values}
    if "labels" in arrays and len(arrays["labels"]) == len(values):
        data["label"] = np.asarray(arrays["labels"]).astype(np.int64)
    prefix = m.key.rpartition("/")[0] if m.key else m.name
    for name in extra:
        key = f"{prefix}/{name}"
        if key in arrays and np.asarray(arrays[key]).shape == values.shape:
            data[name] = np.asarray(arrays[key], np.float64)
    frame = pd.DataFrame(data, index=ids)
    return frame[~frame.index.duplicated(keep="first")]


# ---------------------------------------------------------------------------------------
# paired comparisons
# ---------------------------------------------------------------------------------------
def mean_difference(a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95, seed: int = 0,
                    n_resamples: int = 10_000) -> dict[str, Any]:
    """``diff``, ``ci``, ``p_value``, ``n``, ``mean_a``, ``mean_b`` of :func:`bench.stats.paired_comparison`
    (the same resamples, the same numbers), without its descriptive Wilcoxon p.

    SciPy's Wilcoxon test of tied differences on a few images runs an exact permutation test
    (seconds per pair); a leaderboard compares hundreds of pairs and shows the test of the
    mean only, so it is left out here.
    """
    va, vb = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    d = va - vb
    if d.size == 0:
        diff, ci, p = math.nan, (math.nan, math.nan), math.nan
    elif np.all(d == d[0]):  # every resample mean is d[0]: as paired_comparison
        diff = float(d[0])
        ci = (diff, diff)
        p = 1.0 if diff == 0 else float(min(1.0, 2.0 / (int(n_resamples) + 1)))
    else:
        means = st.bootstrap_means(d, n_resamples=n_resamples, seed=seed)
        diff, ci, p = float(d.mean()), st.percentile_interval(means, confidence), st.bootstrap_p(means)
    return {"diff": diff, "ci": ci, "p_value": p, "n": int(d.size),
            "mean_a": float(va.mean()) if va.size else math.nan, "mean_b": float(vb.mean()) if vb.size else math.nan}


def compare_explainers(
    values: Mapping[str, pd.Series],
    *,
    confidence: float = 0.95,
    seed: int = 0,
    n_resamples: int = 10_000,
    min_effect: float = st.DEFAULT_MIN_EFFECT,
    higher_is_better: bool = True,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """Pairs of explainers of one family, each on the intersection of its two image ids.

    ``values``: ``{explainer: per-image values indexed by id}``, in the order pairs are
    formed (pair (a, b) for a before b; pass them best-first so differences are mostly
    positive); ``pairs`` picks the (a, b) pairs instead (e.g. each against a control).
    The test is that of the mean difference (:data:`bench.stats.MEAN_TEST`); Holm's correction
    runs over the pairs compared here (one family), and ``verdict`` (better / worse /
    negligible / not significant, :func:`bench.stats.effect_verdict`) reads the Holm p,
    ``min_effect`` (the metric's units) and the metric's direction.
    """
    names = list(values)
    if pairs is None:
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    rows = []
    for a, b in pairs:
        common = values[a].index.intersection(values[b].index)
        common = common.sort_values()
        va = values[a].loc[common].to_numpy(np.float64)
        vb = values[b].loc[common].to_numpy(np.float64)
        if len(common) == 0:
            res: dict[str, Any] = {"diff": math.nan, "ci": (math.nan, math.nan), "p_value": math.nan,
                                   "n": 0, "mean_a": math.nan, "mean_b": math.nan}
        else:
            res = mean_difference(va, vb, confidence=confidence, seed=seed, n_resamples=n_resamples)
        rows.append({
            "explainer_a": a, "explainer_b": b, "n": int(res["n"]),
            "mean_a": float(res["mean_a"]), "mean_b": float(res["mean_b"]),
            "diff": float(res["diff"]), "ci_low": float(res["ci"][0]), "ci_high": float(res["ci"][1]),
            "p_value": float(res["p_value"]),
        })
    out = pd.DataFrame(rows, columns=["explainer_a", "explainer_b", "n", "mean_a", "mean_b", "diff",
                                      "ci_low", "ci_high", "p_value"])
    out["p_holm"] = st.holm(out["p_value"].to_numpy(np.float64)) if len(out) else []
    alpha = 1.0 - float(confidence)
    out["significant"] = out["p_holm"] < alpha
    out["verdict"] = [st.effect_verdict(d, p, alpha=alpha, min_effect=min_effect, higher_is_better=higher_is_better)
                      for d, p in zip(out["diff"], out["p_holm"], strict=True)]
    out["family_size"] = int(out["p_value"].notna().sum())
    return out


def row_labels(group: pd.DataFrame) -> list[str]:
    """One label per row of a family: the explainer, plus ``[params fingerprint]`` where the
    same explainer ran with more than one parameter set."""
    names = [str(e) for e in group["explainer"]]
    params = ([str(p) for p in group["explainer_params"]] if "explainer_params" in group.columns
              else [""] * len(group))
    dup = {n for n in names if len({p for m, p in zip(names, params, strict=True) if m == n}) > 1}
    return [f"{n} [{p}]" if n in dup else n for n, p in zip(names, params, strict=True)]


def paired_comparisons(
    df: pd.DataFrame,
    *,
    metrics: Sequence[str] | None = None,
    confidence: float = 0.95,
    seed: int = 0,
    n_resamples: int = 10_000,
    min_effect: float | Mapping[str, float] = st.DEFAULT_MIN_EFFECT,
    against_reference: Sequence[str] = (),
) -> pd.DataFrame:
    """Paired comparisons of explainers within each :data:`FAMILY` of ``df``, per metric column.

    ``metrics``: the metric column ids to compare (default: the primary one,
    :func:`bench.publish.collect.primary_column`); the ``metric`` column says which. Holm's
    correction runs within one family and one metric. For the metric ids in
    ``against_reference`` only each explainer against the family's reference control (its
    rows' ``baseline``, the gain reference) is compared, not every pair (no rows where a
    family has no reference). ``min_effect``: see :func:`min_effect_for` (the ``verdict``).

    ``df`` is :func:`bench.publish.collect.collect`'s frame. A family is one (dataset, model,
    weights, perturbation, settings fingerprint): rows computed under different settings
    are never paired. An explainer's own parameters are not part of the family, so
    a method and a control pair whatever their parameters; the same explainer with
    two parameter sets appears twice (``params_a``/``params_b`` tell them apart).
    Explainers are taken in the frame's order (methods, then controls, each AOPC descending),
    so ``explainer_a`` is mostly the method and ``explainer_b`` the control it is measured against. Columns: :data:`COMPARISON_COLUMNS`. Families with fewer
    than two explainers (or without curves files) give no rows.
    """
    frames = []
    if df.empty or "_metrics" not in df.columns:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    by_id = {c.id: c for c in metric_columns_of(df)}
    head = primary_column(df)
    wanted = list(metrics) if metrics is not None else ([head.id] if head is not None else [])
    unknown = [m for m in wanted if m not in by_id]
    if unknown:
        raise ValueError(f"no metric column {', '.join(map(repr, unknown))}; columns: {', '.join(by_id)}")
    family = pair_columns(df)
    reference_only = set(against_reference)
    plain = without_attrs(df)
    for column in (by_id[m] for m in wanted):
        for key, group in plain.groupby(family, sort=False, dropna=False):
            comp = _family_comparisons(group, column, confidence=confidence, seed=seed, n_resamples=n_resamples,
                                       min_effect=min_effect_for(column, min_effect),
                                       reference_only=column.id in reference_only)
            if comp is None:
                continue
            for col, val in zip(family, key if isinstance(key, tuple) else (key,), strict=True):
                comp[col] = val
            frames.append(comp)
    if not frames:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    out = pd.concat(frames, ignore_index=True)
    for col in COMPARISON_COLUMNS:
        if col not in out.columns:
            out[col] = ""
    return out[list(COMPARISON_COLUMNS)]


def without_attrs(df: pd.DataFrame) -> pd.DataFrame:
    """A shallow copy of ``df`` without its ``attrs``: pandas deep-copies a frame's attrs (the
    runs' manifests) into every row Series and sub-frame it makes, which costs more than the
    statistics themselves."""
    out = df.copy(deep=False)
    out.attrs = {}
    return out


def reference_label(group: pd.DataFrame) -> str | None:
    """The :func:`row_labels` label of a family's reference control (the row its ``baseline`` and
    ``_baseline_params`` name, filled by :func:`bench.publish.collect.add_gain`), else None."""
    if "baseline" not in group.columns or group.empty:
        return None
    names = {str(b) for b in group["baseline"] if isinstance(b, str) and b}
    if len(names) != 1:
        return None
    name = names.pop()
    params = {str(p) for p in group.get("_baseline_params", pd.Series(dtype=object)) if isinstance(p, str) and p}
    for label, (_, row) in zip(row_labels(group), group.iterrows(), strict=True):
        if str(row["explainer"]) == name and (not params or str(row.get("explainer_params", "")) in params):
            return label
    return None


def _family_comparisons(group: pd.DataFrame, column: MetricColumn, *, confidence: float, seed: int,
                        n_resamples: int, min_effect: float = st.DEFAULT_MIN_EFFECT,
                        reference_only: bool = False) -> pd.DataFrame | None:
    """Pairs of one family's explainers on one metric column (None: fewer than two have values)."""
    if len(group) < 2:
        return None
    values: dict[str, pd.Series] = {}
    meta: dict[str, tuple[str, str, str]] = {}  # label -> (explainer, params, run)
    for label, (_, row) in zip(row_labels(group), group.iterrows(), strict=True):
        s = per_image_values(row, column)
        if s is not None and len(s):
            values[label] = s
            meta[label] = (str(row["explainer"]), str(row.get("explainer_params", "")), str(row["run_id"]))
    if len(values) < 2:
        return None
    pairs = None
    if reference_only:
        ref = reference_label(group)
        if ref is None or ref not in values:
            return None
        pairs = [(label, ref) for label in values if label != ref]
    comp = compare_explainers(values, confidence=confidence, seed=seed, n_resamples=n_resamples,
                              min_effect=min_effect, higher_is_better=column.higher_is_better, pairs=pairs)
    comp["metric"] = column.id
    labels_a, labels_b = list(comp["explainer_a"]), list(comp["explainer_b"])
    comp["explainer_a"] = [meta[a][0] for a in labels_a]
    comp["explainer_b"] = [meta[b][0] for b in labels_b]
    comp["params_a"] = [meta[a][1] for a in labels_a]
    comp["params_b"] = [meta[b][1] for b in labels_b]
    comp["run_a"] = [meta[a][2] for a in labels_a]
    comp["run_b"] = [meta[b][2] for b in labels_b]
    return comp


def attach_gain_ci(df: pd.DataFrame, comparisons: pd.DataFrame, control: str | None = None) -> pd.DataFrame:
    """Put the paired (same-images) difference to the reference control and its CI into the gain columns.

    A row's reference is ``control`` when given, else its own ``baseline`` column (the
    family's null control, filled by :func:`bench.publish.collect.add_gain`). Where a paired
    comparison with the reference exists in the row's own family (same settings
    fingerprint), ``gain_over_baseline`` becomes the mean per-image difference on the
    shared images (equal to the AOPC difference when both cells scored the same images)
    and ``gain_ci_low/high`` its bootstrap CI. Where the reference ran with more than one
    parameter set, the one :func:`~bench.publish.collect.add_gain` chose (``_baseline_params``)
    is used.
    """
    df = df.copy()
    if df.empty or comparisons.empty or not (control or "baseline" in df.columns):
        return df
    family = [k for k in pair_columns(df) if k in comparisons.columns]
    by_params = {"params_a", "params_b"} <= set(comparisons.columns) and "explainer_params" in df.columns

    def params(c: Any, side: str) -> str | None:
        return str(c[f"params_{side}"]) if by_params else None

    # (*family, explainer, its params, reference, reference params) -> (diff, ci_low, ci_high)
    lookup: dict[tuple[Any, ...], tuple[float, float, float]] = {}
    for _, c in comparisons.iterrows():
        fam = tuple(c[k] for k in family)
        a, b = c["explainer_a"], c["explainer_b"]
        lookup[(*fam, a, params(c, "a"), b, params(c, "b"))] = (c["diff"], c["ci_low"], c["ci_high"])
        lookup[(*fam, b, params(c, "b"), a, params(c, "a"))] = (-c["diff"], -c["ci_high"], -c["ci_low"])
    has_base = by_params and "_baseline_params" in df.columns
    for i, r in df.iterrows():
        ref = control or r.get("baseline")
        if not isinstance(ref, str) or not ref:
            continue
        mine = str(r["explainer_params"]) if by_params else None
        head = (*(r[k] for k in family), r["explainer"], mine, ref)
        if by_params and not has_base:
            hits = [v for k, v in lookup.items() if k[:len(head)] == head]
            hit = hits[0] if len(hits) == 1 else None
        else:
            hit = lookup.get((*head, str(r["_baseline_params"]) if has_base else None))
        if hit is not None and not math.isnan(hit[0]):
            df.loc[i, ["gain_over_baseline", "gain_ci_low", "gain_ci_high"]] = list(hit)
    return df


# ---------------------------------------------------------------------------------------
# per class
# ---------------------------------------------------------------------------------------
def class_names_of(row: Mapping[str, Any], manifests: Mapping[str, Any]) -> list[str]:
    """The class names of a row's dataset: its run's manifest, else its model report; [] if neither says."""
    m = manifests.get(run_dir_of(row).name) or {}
    ds = m.get("dataset") or {}
    if ds.get("name") in (None, row["dataset"]) and ds.get("class_names"):
        return [str(c) for c in ds["class_names"]]
    model_json = run_dir_of(row) / "models" / f"{row['dataset']}__{row['model']}.json"
    if model_json.exists():
        try:
            names = (read_json(model_json).get("classification") or {}).get("class_names")
            if names:
                return [str(c) for c in names]
        except (OSError, ValueError):
            pass
    return []


def per_class_values(
    row: Mapping[str, Any],
    column: MetricColumn,
    class_names: Sequence[str] = (),
    *,
    confidence: float = 0.95,
    include_empty: bool = False,
) -> dict[str, tuple[float, float, float, int]]:
    """``{class: (mean, ci_low, ci_high, n)}`` of a cell's per-image values of one metric column,
    grouped by true label (the ``labels`` stored beside them); non-finite values left out."""
    got = metric_arrays(row, column)
    if got is None or "labels" not in got[1]:
        return {}
    values, arrays = got
    labels = np.asarray(arrays["labels"])
    keep = np.isfinite(values)
    return group_by_class(values[keep], labels[keep], class_names, confidence=confidence,
                          include_empty=include_empty)


def group_by_class(
    values: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str] = (),
    *,
    confidence: float = 0.95,
    include_empty: bool = False,
) -> dict[str, tuple[float, float, float, int]]:
    """``{class: (mean, lo, hi, n)}``: per-image values grouped by integer labels, bootstrap CI.

    With ``include_empty`` every class of ``class_names`` appears, (nan, nan, nan, 0) when
    none of its images was scored.
    """
    v = np.asarray(values, np.float64)
    lab = np.asarray(labels).astype(int)
    out: dict[str, tuple[float, float, float, int]] = {}
    present = set(lab.tolist())
    classes = sorted(present | (set(range(len(class_names))) if include_empty else set()))
    for c in classes:
        if c not in present:
            out[class_names[c]] = (math.nan, math.nan, math.nan, 0)
            continue
        name = class_names[c] if 0 <= c < len(class_names) else str(c)
        sel = v[lab == c]
        lo, hi = st.bootstrap_ci(sel, confidence=confidence)
        out[name] = (float(sel.mean()), lo, hi, int(sel.size))
    return out


# ---------------------------------------------------------------------------------------
# the comparisons a leaderboard shows
# ---------------------------------------------------------------------------------------
def primary_comparisons(comparisons: pd.DataFrame | None, df: pd.DataFrame) -> pd.DataFrame | None:
    """The paired comparisons of the frame's primary metric (all of them when unlabelled)."""
    if comparisons is None or comparisons.empty or "metric" not in comparisons.columns:
        return comparisons
    head = primary_column(df)
    return comparisons[comparisons["metric"] == (head.id if head is not None else "")]


def all_comparisons(df: pd.DataFrame, *, seed: int = 0,
                    min_effect: float | Mapping[str, float] = st.DEFAULT_MIN_EFFECT) -> pd.DataFrame:
    """Every pair of explainers for every metric column of ``df``, at the rows' confidence level
    and the runs' bootstrap size (:func:`bench.publish.collect.bootstrap_resamples`)."""
    return leaderboard_comparisons(df, scope="all", seed=seed, min_effect=min_effect)


def leaderboard_comparisons(
    df: pd.DataFrame,
    *,
    scope: str = "primary",
    seed: int = 0,
    min_effect: float | Mapping[str, float] = st.DEFAULT_MIN_EFFECT,
    n_resamples: int | None = None,
    confidence: float | None = None,
) -> pd.DataFrame:
    """The paired comparisons a leaderboard keeps (``scope``, :data:`COMPARISON_SCOPES`).

    ``"primary"``: every pair of explainers for the primary metric, and for every other
    metric each explainer against the family's reference control (its gain, with a test);
    ``"all"``: every pair for every metric (a 22-explainer family has 231 pairs per metric:
    kept out of the default, where a rank interval says the same more compactly). At the
    rows' confidence level and the runs' bootstrap size unless given. (A paired bootstrap
    p-value is at least 2 / (B + 1): with B resamples, Holm over m pairs can call a difference
    significant only when 2m / (B + 1) < alpha.)
    """
    if scope not in COMPARISON_SCOPES:
        raise ValueError(f"comparison scope {scope!r}; choose one of {', '.join(COMPARISON_SCOPES)}")
    columns = [c.id for c in metric_columns_of(df)]
    head = primary_column(df)
    others = [] if scope == "all" else [c for c in columns if head is None or c != head.id]
    return paired_comparisons(df, confidence=confidence if confidence is not None else confidence_of(df), seed=seed,
                              n_resamples=n_resamples if n_resamples is not None
                              else bootstrap_resamples(df.attrs.get("manifests", {})),
                              metrics=columns, min_effect=min_effect, against_reference=others)
