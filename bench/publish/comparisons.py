"""Statistics between the rows of a leaderboard: per-image values, paired comparisons, per class.

- :func:`per_image_values`: a row's per-image values of one metric column (the arrays its
  cell record points to), indexed by image id.
- :func:`paired_comparisons`: per metric column, for each (dataset, model, weights,
  perturbation, settings fingerprint), every pair of explainers compared on the SAME
  images (aligned by image id, intersection of ids): mean difference with a bootstrap CI,
  the significance test of :func:`bench.stats.paired_comparison`, Holm correction across
  the family. Rows of different settings fingerprints are never paired, nor values of a
  metric under two parameter sets (two metric columns).
- :func:`attach_gain_ci`: the paired difference to the reference control and its CI in the
  gain columns.
- :func:`per_class_values` / :func:`group_by_class`: a metric per true class with a CI.

The statistics themselves live in :mod:`bench.stats`; the tables of these frames in
:mod:`bench.publish.tables`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
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
    "significant", "family_size", "run_a", "run_b",
)
#: A family of comparisons: rows that share these (the leaderboard's pairing key).
FAMILY: tuple[str, ...] = PAIR_COLUMNS
ALPHA = 0.05


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


def metric_result(row: Mapping[str, Any], column: MetricColumn) -> MetricResult | None:
    """The row's ok result of ``column`` (its metric under that parameter set), else None."""
    metrics = row.get("_metrics")
    m = metrics.get(column.name) if isinstance(metrics, Mapping) else None
    if m is None or not m.ok or (m.params_key and m.params_key != column.params_key):
        return None
    return m


def metric_arrays(row: Mapping[str, Any], column: MetricColumn) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """(headline values (N,), the NPZ holding them) of a row's metric; None (warned) when unreadable."""
    m = metric_result(row, column)
    if m is None or not m.file or not m.key:
        return None
    path = run_dir_of(row) / str(m.file)
    try:
        arrays = read_npz(path)
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

    Non-finite values are left out (with a warning naming how many).
    """
    got = metric_arrays(row, column)
    if got is None:
        return None
    values, arrays = got
    m = metric_result(row, column)
    assert m is not None
    s = pd.Series(values, index=np.asarray(arrays[m.ids_key]).astype(str))
    s = s[~s.index.duplicated(keep="first")]
    bad = ~np.isfinite(s.to_numpy())
    if bad.any():
        warnings.warn(f"cell {row.get('cell_id')!r}: {int(bad.sum())} non-finite per-image {column.id} values "
                      "left out of the paired comparisons", stacklevel=2)
        s = s[~bad]
    return s


# ---------------------------------------------------------------------------------------
# paired comparisons
# ---------------------------------------------------------------------------------------
def compare_explainers(
    values: Mapping[str, pd.Series],
    *,
    confidence: float = 0.95,
    seed: int = 0,
    n_resamples: int = 10_000,
) -> pd.DataFrame:
    """Every pair of explainers of one family on the intersection of their image ids.

    ``values``: ``{explainer: per-image values indexed by id}``, in the order pairs are
    formed (pair (a, b) for a before b; pass them best-first so differences are mostly
    positive). Holm's correction runs over all pairs given here (one family).
    """
    names = list(values)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = values[a].index.intersection(values[b].index)
            common = common.sort_values()
            va = values[a].loc[common].to_numpy(np.float64)
            vb = values[b].loc[common].to_numpy(np.float64)
            if len(common) == 0:
                res: dict[str, Any] = {"diff": math.nan, "ci": (math.nan, math.nan), "p_value": math.nan,
                                       "n": 0, "mean_a": math.nan, "mean_b": math.nan}
            else:
                res = st.paired_comparison(va, vb, confidence=confidence, seed=seed, n_resamples=n_resamples)
            rows.append({
                "explainer_a": a, "explainer_b": b, "n": int(res["n"]),
                "mean_a": float(res["mean_a"]), "mean_b": float(res["mean_b"]),
                "diff": float(res["diff"]), "ci_low": float(res["ci"][0]), "ci_high": float(res["ci"][1]),
                "p_value": float(res["p_value"]),
            })
    out = pd.DataFrame(rows, columns=["explainer_a", "explainer_b", "n", "mean_a", "mean_b", "diff",
                                      "ci_low", "ci_high", "p_value"])
    out["p_holm"] = st.holm(out["p_value"].to_numpy(np.float64)) if len(out) else []
    out["significant"] = out["p_holm"] < ALPHA
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
) -> pd.DataFrame:
    """Paired comparisons of explainers within each :data:`FAMILY` of ``df``, per metric column.

    ``metrics``: the metric column ids to compare (default: the primary one,
    :func:`bench.publish.collect.primary_column`); the ``metric`` column says which. Holm's
    correction runs within one family and one metric.

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
    for column in (by_id[m] for m in wanted):
        for key, group in df.groupby(family, sort=False, dropna=False):
            comp = _family_comparisons(group, column, confidence=confidence, seed=seed, n_resamples=n_resamples)
            if comp is None:
                continue
            for col, val in zip(family, key, strict=True):
                comp[col] = val
            frames.append(comp)
    if not frames:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    out = pd.concat(frames, ignore_index=True)
    for col in COMPARISON_COLUMNS:
        if col not in out.columns:
            out[col] = ""
    return out[list(COMPARISON_COLUMNS)]


def _family_comparisons(group: pd.DataFrame, column: MetricColumn, *, confidence: float, seed: int,
                        n_resamples: int) -> pd.DataFrame | None:
    """Every pair of one family's explainers on one metric column (None: fewer than two have values)."""
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
    comp = compare_explainers(values, confidence=confidence, seed=seed, n_resamples=n_resamples)
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


def all_comparisons(df: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """The paired comparisons of every metric column of ``df``, at the rows' confidence level and
    the runs' bootstrap size (:func:`bench.publish.collect.bootstrap_resamples`)."""
    return paired_comparisons(df, confidence=confidence_of(df), seed=seed,
                              n_resamples=bootstrap_resamples(df.attrs.get("manifests", {})),
                              metrics=[c.id for c in metric_columns_of(df)])
