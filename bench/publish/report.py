"""The statistics report: paired comparisons, per-class tables and figures from run folders.

- :func:`paired_comparisons`: per metric column, for each (dataset, model, weights,
  perturbation, settings fingerprint), every pair of explainers compared on the SAME
  images (the per-image values the cell records point to, aligned by image id,
  intersection of ids): mean difference with a bootstrap CI, Wilcoxon signed-rank p, Holm
  correction across the family. Rows of different settings fingerprints are never
  paired, nor values of a metric under two parameter sets (two metric columns).
- :func:`per_class_values`: a metric per true class with a CI, per cell.
- :func:`classification_tables`: the study's per-class precision/recall/F1/support.
- :func:`make_figures`: curves, overlays and per-class PNGs into ``results/figures/``.
- :func:`render_report` / :func:`build_report`: ``results/report.md``.

The statistics themselves live in :mod:`bench.stats`.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import stats as st
from bench.pipeline.record import MetricResult
from bench.pipeline.store import atomic_write_text, read_json, read_npz
from bench.publish.leaderboard import (
    PAIR_COLUMNS,
    MetricColumn,
    metric_columns_of,
    pair_columns,
    primary_column,
    primary_comparisons,
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
def _run_dir(row: Mapping[str, Any]) -> Path:
    return Path(row["_path"]).parent.parent


def load_cell_arrays(row: Mapping[str, Any], kind: str = "curves") -> dict[str, np.ndarray] | None:
    """The curves (or heatmaps) NPZ of a leaderboard row; None (with a warning) if missing/unreadable."""
    rel = row.get(f"_{kind}_file")
    if not rel:
        return None
    path = _run_dir(row) / str(rel)
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
    path = _run_dir(row) / str(m.file)
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


def _labels(group: pd.DataFrame) -> list[str]:
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
    :func:`bench.publish.leaderboard.primary_column`); the ``metric`` column says which. Holm's
    correction runs within one family and one metric.

    ``df`` is :func:`bench.publish.leaderboard.collect`'s frame. A family is one (dataset, model,
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
    for label, (_, row) in zip(_labels(group), group.iterrows(), strict=True):
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
    family's null control, filled by :func:`bench.publish.leaderboard.add_gain`). Where a paired
    comparison with the reference exists in the row's own family (same settings
    fingerprint), ``gain_over_baseline`` becomes the mean per-image difference on the
    shared images (equal to the AOPC difference when both cells scored the same images)
    and ``gain_ci_low/high`` its bootstrap CI. Where the reference ran with more than one
    parameter set, the one :func:`~bench.publish.leaderboard.add_gain` chose (``_baseline_params``)
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


def _p_text(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def comparison_rows(comparisons: pd.DataFrame) -> tuple[list[str], list[list[str]], list[str]]:
    """(headers, rows, align) of the comparisons table; an explainer that ran with more than
    one parameter set is shown as ``name [params fingerprint]``."""
    from bench.publish.leaderboard import format_ci, format_number

    headers = ["Dataset", "Model", "Weights", "Perturbation", "Settings", "A", "B", "n", "mean A",
               "mean B", "A - B", "CI of A - B", "Wilcoxon p", "Holm p", "Significant (Holm, 0.05)"]
    align = ["l"] * 7 + ["r"] * 4 + ["l", "r", "r", "l"]
    has_params = {"params_a", "params_b"} <= set(comparisons.columns)
    seen: dict[str, set[str]] = {}
    if has_params:
        for _, c in comparisons.iterrows():
            seen.setdefault(str(c["explainer_a"]), set()).add(str(c["params_a"]))
            seen.setdefault(str(c["explainer_b"]), set()).add(str(c["params_b"]))

    def label(c: Any, side: str) -> str:
        name = str(c[f"explainer_{side}"])
        return f"{name} [{c[f'params_{side}']}]" if len(seen.get(name, ())) > 1 else name

    rows = []
    for _, c in comparisons.iterrows():
        ci = format_ci(c["ci_low"], c["ci_high"])
        rows.append([
            str(c["dataset"]), str(c["model"]), str(c["weights"]), str(c["perturbation"]),
            str(c.get("settings", "")), label(c, "a"), label(c, "b"), str(int(c["n"])),
            format_number(c["mean_a"], 4), format_number(c["mean_b"], 4),
            format_number(c["diff"], 4, signed=True), ci, _p_text(c["p_value"]), _p_text(c["p_holm"]),
            ("yes" if bool(c["significant"]) else "no") if c["n"] else "no shared images",
        ])
    return headers, rows, align


def comparisons_markdown(comparisons: pd.DataFrame) -> str:
    from bench.publish.leaderboard import markdown_table

    headers, rows, align = comparison_rows(comparisons)
    note = ("A - B: mean over the shared images of the per-image difference of the metric; 95% bootstrap CI; "
            "two-sided Wilcoxon signed-rank p; Holm-corrected within each "
            "dataset/model/weights/perturbation/settings family (rows of different settings are never paired).")
    return markdown_table(headers, rows, align) + "\n\n" + note


def comparisons_html(comparisons: pd.DataFrame) -> str:
    from bench.publish.leaderboard import html_table

    headers, rows, align = comparison_rows(comparisons)
    classes = [["sig" if j == len(r) - 1 and r[-1] == "yes" else "" for j in range(len(r))] for r in rows]
    note = ('<p class="note">A - B: mean over the shared images (aligned by image id) of the per-image '
            "difference of the metric, with its 95% bootstrap CI; two-sided Wilcoxon signed-rank p; Holm "
            "correction within each dataset/model/weights/perturbation/settings family (rows of different "
            "settings are never paired).</p>")
    return html_table(headers, rows, align, group_col=1, classes=classes) + "\n" + note


# ---------------------------------------------------------------------------------------
# per class
# ---------------------------------------------------------------------------------------
def _class_names(row: Mapping[str, Any], manifests: Mapping[str, Any]) -> list[str]:
    m = manifests.get(_run_dir(row).name) or {}
    ds = m.get("dataset") or {}
    if ds.get("name") in (None, row["dataset"]) and ds.get("class_names"):
        return [str(c) for c in ds["class_names"]]
    model_json = _run_dir(row) / "models" / f"{row['dataset']}__{row['model']}.json"
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


def per_class_markdown(df: pd.DataFrame, *, column: MetricColumn | None = None) -> str:
    """One table per :data:`FAMILY` (dataset, model, weights, perturbation, settings):
    explainers x classes, "mean [lo, hi] (n)" of one metric column (default: the primary)."""
    from bench.publish.leaderboard import (
        confidence_of,
        format_ci,
        format_number,
        markdown_table,
        md_cell,
    )

    column = column or primary_column(df)
    if df.empty or "_metrics" not in df.columns or column is None:
        return ""
    manifests = df.attrs.get("manifests", {})
    conf = confidence_of(df)
    blocks = []
    family = pair_columns(df)
    for key, group in df.groupby(family, sort=False):
        rows: list[list[str]] = []
        classes: list[str] = []
        for label, (_, row) in zip(_labels(group), group.iterrows(), strict=True):
            stats = per_class_values(row, column, _class_names(row, manifests), confidence=conf)
            if not stats:
                continue
            classes += [c for c in stats if c not in classes]
            rows.append([label, *[
                f"{format_number(stats[c][0], 4)} {format_ci(stats[c][1], stats[c][2])} ({stats[c][3]})"
                if c in stats else "" for c in classes]])
        if not rows:
            continue
        rows = [r + [""] * (1 + len(classes) - len(r)) for r in rows]
        parts = [f"settings {k}" if col == "settings" else str(k) for col, k in zip(family, key, strict=True)]
        title = " / ".join(md_cell(k) for k in parts)
        blocks.append(f"### {title}\n\n" + markdown_table(["Explainer", *classes], rows))
    return "\n\n".join(blocks)


# ---------------------------------------------------------------------------------------
# classification tables
# ---------------------------------------------------------------------------------------
def classification_tables(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Per trained model: the classification report of the run that produced its rows.

    A trained model is a (dataset, model, weights) and, where the cells recorded it, the
    model's cache key (its training inputs): rows of one model under two training recipes
    get two tables. Each item: ``{"dataset", "model", "weights", "run_id", "file",
    "headers", "rows", "accuracy", "best_epoch", "settings"}`` with per-class
    precision/recall/F1/support rows plus the macro and weighted averages; ``settings``
    lists the settings fingerprints of the rows the model produced.
    """
    out = []
    if df.empty:
        return out
    by = ["dataset", "model", "weights", *(["_model_key"] if "_model_key" in df.columns else [])]
    groups = list(df.groupby(by, sort=False))
    per_model: dict[tuple[Any, ...], int] = {}
    for key, _ in groups:
        per_model[tuple(key[:3])] = per_model.get(tuple(key[:3]), 0) + 1
    for key, group in groups:
        dataset, model, weights = key[:3]
        # the most recent run among the rows shown for this model
        row = group.sort_values("_time").iloc[-1]
        path = _run_dir(row) / "models" / f"{dataset}__{model}.json"
        if not path.exists():
            continue
        try:
            rec = read_json(path)
        except (OSError, ValueError) as exc:
            warnings.warn(f"cannot read model report {path}: {exc}", stacklevel=2)
            continue
        cls = rec.get("classification") or {}
        per_class = cls.get("per_class") or {}
        names = cls.get("class_names") or list(per_class)
        rows = []
        for name in names:
            d = per_class.get(name) or {}
            rows.append(_cls_row(str(name), d))
        for avg in ("macro avg", "weighted avg"):
            if isinstance(cls.get(avg), Mapping):
                rows.append(_cls_row(avg, cls[avg]))
        out.append({
            "dataset": dataset, "model": model, "weights": weights, "run_id": str(row["run_id"]),
            "file": str(path), "headers": ["Class", "Precision", "Recall", "F1", "Support"], "rows": rows,
            "accuracy": cls.get("accuracy"), "best_epoch": (rec.get("training") or {}).get("best_epoch"),
            "confusion_matrix": cls.get("confusion_matrix"), "class_names": [str(n) for n in names],
            "settings": (sorted({str(k) for k in group["settings"]})
                         if "settings" in group.columns and per_model[(dataset, model, weights)] > 1 else []),
        })
    return out


def _cls_row(name: str, d: Mapping[str, Any]) -> list[str]:
    def f(key: str) -> str:
        v = d.get(key)
        return "" if v is None else f"{float(v):.2f}"

    sup = d.get("support")
    return [name, f("precision"), f("recall"), f("f1-score"), "" if sup is None else str(int(sup))]


# ---------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------
def slug(*parts: Any) -> str:
    """A file-name-safe slug of plugin-supplied names, with a short hash so distinct names never collide."""
    raw = "__".join(str(p) for p in parts)
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.")[:80] or "x"
    return f"{text}-{hashlib.sha1(raw.encode()).hexdigest()[:6]}"


def _model_label(row: Mapping[str, Any]) -> str:
    w = str(row["weights"])
    return f"{row['model']} ({w})" if w else str(row["model"])


def _find_dataset_file(dataset: str, df: pd.DataFrame, manifests: Mapping[str, Any]) -> Path | None:
    """The saved splits of ``dataset`` from the manifest of the most recent run shown for it."""
    results_dir = Path(df.attrs.get("results_dir", "."))
    rows = df[df["dataset"] == dataset].sort_values("_time", ascending=False)
    run_names = list(dict.fromkeys(_run_dir(r).name for _, r in rows.iterrows()))
    for rid in run_names + sorted(set(manifests) - set(run_names), reverse=True):
        m = manifests.get(rid) or {}
        ds = m.get("dataset") or {}
        if ds.get("name") != dataset or not ds.get("file"):
            continue
        f = Path(ds["file"])
        for cand in (f, results_dir / f, results_dir.parent / f, Path(m.get("_dir", ".")) / f):
            if cand.exists():
                return cand
    return None


def load_test_images(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8 (N, H, W), labels, ids as str) of the test split of a saved DatasetSplits file."""
    with np.load(Path(path), allow_pickle=False) as z:
        if "test/images" in z.files:
            return z["test/images"], z["test/labels"], z["test/ids"].astype(str)
    from bench.data import DatasetSplits

    splits = DatasetSplits.load_file(path)
    return splits.test.images, splits.test.labels, splits.test.ids.astype(str)


def choose_images(common_ids: Sequence[str], id_labels: Mapping[str, int], n: int = 3) -> list[str]:
    """Up to ``n`` ids, one per class first (in class order), deterministic (sorted ids)."""
    ids = sorted(common_ids)
    chosen: list[str] = []
    seen: set[int] = set()
    for i in ids:
        lab = id_labels.get(i, -1)
        if lab not in seen:
            chosen.append(i)
            seen.add(lab)
        if len(chosen) == n:
            return sorted(chosen, key=lambda x: (id_labels.get(x, -1), x))
    for i in ids:
        if len(chosen) == n:
            break
        if i not in chosen:
            chosen.append(i)
    return sorted(chosen, key=lambda x: (id_labels.get(x, -1), x))


def make_figures(
    df: pd.DataFrame,
    out_dir: str | Path,
    *,
    n_images: int = 3,
    alphas: Sequence[float] = (0.3, 0.5, 0.7),
) -> dict[str, list[Path]]:
    """Write the report's PNGs into ``out_dir`` and return ``{section title: [paths]}``.

    One curves figure and one per-class figure per (dataset, perturbation), one
    overlay figure per dataset. A figure that cannot be drawn (no curves, no dataset
    file) is skipped with a warning; the rest are still written.
    """
    from bench.publish import figures as fg
    from bench.publish.leaderboard import confidence_of

    out = Path(out_dir)
    manifests = df.attrs.get("manifests", {})
    head = primary_column(df)
    per_class_title = f"{head.label} per class" if head is not None else "Per class"
    sections: dict[str, list[Path]] = {
        "Mean MoRF curves (AOPC graphs)": [],
        "Heatmap overlays": [],
        per_class_title: [],
    }
    if df.empty:
        return sections
    for (dataset, pert), group in df.groupby(["dataset", "perturbation"], sort=False):
        curves: dict[str, dict[str, np.ndarray]] = {}
        per_class: dict[str, dict[str, dict[str, tuple[float, float, float, int]]]] = {}
        # one panel per model and settings fingerprint: curves of different settings never share one
        models = [_model_label(r) for _, r in group.iterrows()]
        mixed = {m for m in models if "settings" in group.columns
                 and group["settings"][[x == m for x in models]].nunique() > 1}
        for label, model_label, (_, row) in zip(_labels(group), models, group.iterrows(), strict=True):
            panel = f"{model_label}, settings {row['settings']}" if model_label in mixed else model_label
            if head is not None:
                stats = per_class_values(row, head, _class_names(row, manifests),
                                         confidence=confidence_of(df), include_empty=True)
                if stats:
                    per_class.setdefault(panel, {})[label] = stats
            arrays = load_cell_arrays(row, "curves")
            if arrays is None or "morf_curves" not in arrays:
                continue
            curves.setdefault(panel, {})[label] = arrays["morf_curves"]
        title = f"{dataset} / {pert}"
        try:
            if curves:
                sections["Mean MoRF curves (AOPC graphs)"].append(fg.plot_curves(
                    curves, out / f"curves__{slug(dataset, pert)}.png", title=title))
            if per_class:
                sections[per_class_title].append(fg.plot_per_class(
                    per_class, out / f"per_class__{slug(dataset, pert)}.png", title=title))
        except Exception as exc:  # a figure must never lose the leaderboard
            warnings.warn(f"figure for {title!r} failed: {type(exc).__name__}: {exc}", stacklevel=2)
    for dataset, group in df.groupby("dataset", sort=False):
        try:
            path = _overlay_figure(str(dataset), group, df, manifests, out, n_images, alphas)
        except Exception as exc:
            warnings.warn(f"overlay figure for dataset {dataset!r} failed: {type(exc).__name__}: {exc}",
                          stacklevel=2)
            path = None
        if path is not None:
            sections["Heatmap overlays"].append(path)
    remove_stale_figures(out, [p for paths in sections.values() for p in paths])
    return sections


#: The names of the figures :func:`make_figures` writes (``<prefix>__<slug>.png``).
FIGURE_PREFIXES: tuple[str, ...] = ("curves__", "per_class__", "overlays__")


def remove_stale_figures(out_dir: str | Path, written: Sequence[str | Path]) -> list[Path]:
    """Delete this report's figures in ``out_dir`` that the latest build did not write.

    A figure left from an earlier build (an overlay skipped this time, a perturbation
    no longer on the board) would show numbers the tables no longer hold. Only files
    named like :func:`make_figures`' own PNGs are touched; returns what was removed.
    """
    folder = Path(out_dir)
    if not folder.is_dir():
        return []
    keep = {Path(p).resolve() for p in written}
    removed = []
    for path in sorted(folder.glob("*.png")):
        if path.name.startswith(FIGURE_PREFIXES) and path.resolve() not in keep:
            path.unlink()
            removed.append(path)
    return removed


def _overlay_figure(dataset: str, group: pd.DataFrame, df: pd.DataFrame, manifests: Mapping[str, Any],
                    out: Path, n_images: int, alphas: Sequence[float]) -> Path | None:
    from bench.publish import figures as fg

    data_file = _find_dataset_file(dataset, df, manifests)
    if data_file is None:
        warnings.warn(f"overlay figure for dataset {dataset!r} skipped: its dataset file (manifest "
                      "dataset.file) was not found", stacklevel=3)
        return None
    # heatmaps do not depend on the perturbation: one set per (model, weights, explainer)
    maps: dict[str, tuple[pd.Series, np.ndarray]] = {}
    for _, row in group.sort_values(["model", "weights", "explainer"]).iterrows():
        label = f"{_model_label(row)}\n{row['explainer']}"
        if label in maps:
            continue
        arrays = load_cell_arrays(row, "heatmaps")
        if arrays is None or "heatmaps" not in arrays or "ids" not in arrays:
            continue
        ids = np.asarray(arrays["ids"]).astype(str)
        pos = pd.Series(np.arange(len(ids)), index=ids)
        maps[label] = (pos[~pos.index.duplicated(keep="first")], np.asarray(arrays["heatmaps"]))
    if not maps:
        return None
    images, labels, ids = load_test_images(data_file)
    id_pos = {str(i): k for k, i in enumerate(ids)}
    common = set(id_pos)
    for pos, _ in maps.values():
        common &= set(pos.index)
    if not common:
        warnings.warn(f"overlay figure for dataset {dataset!r} skipped: no test image was explained "
                      "by every model x explainer (no image every model classified correctly)", stacklevel=3)
        return None
    id_labels = {i: int(labels[id_pos[i]]) for i in common}
    chosen = choose_images(sorted(common), id_labels, n_images)
    sel_images = images[[id_pos[i] for i in chosen]]
    heat = {
        label.replace("\n", " / "): hm[pos.loc[chosen].to_numpy()]
        for label, (pos, hm) in maps.items()
    }
    names = _class_names(group.iloc[0], manifests)
    titles = [f"{i}\n{names[id_labels[i]] if 0 <= id_labels[i] < len(names) else id_labels[i]}"
              for i in chosen]
    return fg.plot_overlays(sel_images, heat, out / f"overlays__{slug(dataset)}.png", alphas=alphas,
                            image_titles=titles, title=f"{dataset}: heatmap overlays "
                            "(test images every model classified correctly)")


# ---------------------------------------------------------------------------------------
# report.md
# ---------------------------------------------------------------------------------------
def render_report(
    df: pd.DataFrame,
    *,
    comparisons: pd.DataFrame | None = None,
    figures: Mapping[str, Sequence[Path]] | None = None,
    provenance_info: Mapping[str, Any] | None = None,
    relative_to: str | Path | None = None,
) -> str:
    """``report.md``: leaderboard, per-model classification tables, paired comparisons,
    figures (linked relative to ``relative_to``), failed cells and provenance."""
    from bench.publish.leaderboard import (
        display_table,
        failed_markdown,
        markdown_table,
        md_cell,
        provenance,
        provenance_lines,
    )

    prov = provenance_info if provenance_info is not None else provenance(df)
    if comparisons is None:
        from bench.publish.leaderboard import confidence_of

        comparisons = paired_comparisons(df, confidence=confidence_of(df))
    failed = df.attrs.get("failed")
    out = ["# bench report", ""]
    headers, rows, align = display_table(df)
    out += ["## Leaderboard", ""]
    out += [markdown_table(headers, rows, align) if rows else "_No finished cells yet._", ""]
    tables = classification_tables(df)
    if tables:
        out += ["## Classification (test split)", ""]
        for t in tables:
            extra = []
            if t["accuracy"] is not None:
                extra.append(f"accuracy {float(t['accuracy']):.3f}")
            if t["best_epoch"] is not None:
                extra.append(f"best epoch {t['best_epoch']}")
            extra.append(f"run {t['run_id']}")
            which = f"weights {t['weights']}" + (f", settings {', '.join(t['settings'])}" if t["settings"] else "")
            out += [f"### {md_cell(t['dataset'])} / {md_cell(t['model'])} ({md_cell(which)})",
                    "", md_cell(", ".join(extra)), "",
                    markdown_table(t["headers"], t["rows"], ["l", "r", "r", "r", "r"]), ""]
            cm = t.get("confusion_matrix")
            names = t.get("class_names") or []
            if cm and names and len(cm) == len(names):
                out += ["Confusion matrix (rows: true, columns: predicted):", "",
                        markdown_table(["true / predicted", *names],
                                       [[names[i], *[str(v) for v in r]] for i, r in enumerate(cm)],
                                       ["l"] + ["r"] * len(names)), ""]
    head = primary_column(df)
    per_class = per_class_markdown(df)
    if per_class and head is not None:
        out += [f"## {md_cell(head.header)} per class (mean [CI] (n) over the correctly classified test images)",
                "", per_class, ""]
    out += ["## Paired comparisons between explainers (same images)", ""]
    shown = False
    if comparisons is not None and not comparisons.empty:
        columns = metric_columns_of(df)
        labelled = "metric" in comparisons.columns
        for column in columns if labelled else [head]:
            part = comparisons[comparisons["metric"] == column.id] if labelled and column else comparisons
            if part.empty:
                continue
            title = column.header if column is not None else "metric"
            primary_note = " (the primary metric)" if head is not None and column is not None and column.id == head.id else ""
            out += [f"### {md_cell(title)}{primary_note}", "", comparisons_markdown(part), ""]
            shown = True
    if not shown:
        out += ["_Fewer than two explainers with values for every model: nothing to compare._", ""]
    if figures:
        base = Path(relative_to) if relative_to is not None else None
        for section, paths in figures.items():
            if not paths:
                continue
            out += [f"## {section}", ""]
            for p in paths:
                p = Path(p)
                rel = os.path.relpath(p, base) if base is not None else str(p)
                out += [f"![{md_cell(p.stem)}]({Path(rel).as_posix()})", ""]
    if failed is not None and not failed.empty:
        out += ["## Failed cells (not on the leaderboard)", "", failed_markdown(failed), ""]
    out += ["## Provenance", ""] + [f"- {md_cell(line)}" for line in provenance_lines(prov)]
    return "\n".join(out) + "\n"


def build_report(
    results_dir: str | Path = "results",
    *,
    out: str | Path | None = None,
    control: str | None = None,
    figures: bool = True,
    primary: str | None = None,
) -> Path:
    """Write ``report.md`` (default ``<results_dir>/report.md``) and its figures; return its path.

    ``control``: the gain reference (default: each family's null control); ``primary``: the
    metric rows are ranked by (default: the first). Paired comparisons cover every metric.
    """
    from bench.publish.leaderboard import collect, provenance

    df = collect(results_dir, control=control, primary=primary)
    from bench.publish.leaderboard import bootstrap_resamples, confidence_of

    comparisons = paired_comparisons(df, confidence=confidence_of(df),
                                     n_resamples=bootstrap_resamples(df.attrs.get("manifests", {})),
                                     metrics=[c.id for c in metric_columns_of(df)])
    df = attach_gain_ci(df, primary_comparisons(comparisons, df), control)
    path = Path(out) if out is not None else Path(results_dir) / "report.md"
    figs = make_figures(df, path.parent / "figures") if figures else {}
    atomic_write_text(path, render_report(df, comparisons=comparisons, figures=figs,
                                          provenance_info=provenance(df), relative_to=path.parent))
    return path
