"""The compact table a person reads in a terminal after ``bench run`` / ``bench leaderboard``.

Plain text (no markup, no HTML entities), the numbers in :mod:`bench.publish.text`'s one
format, at most ``width`` (120) columns: per settings family (dataset, perturbation,
settings fingerprint) one table of model, explainer, the headline metrics with their CIs,
the gain over the control and the cost per map, then a few lines of legend, then where the
full tables are. The headline metrics are the primary one, then the first metric of each
other family (faithfulness, localisation, randomisation, ...), as many as fit.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.pipeline.controls import METHOD_ROLE, NULL_CONTROL_ROLE, is_control
from bench.publish.collect import (
    MetricColumn,
    ci_label,
    primary_column,
    reference_name,
    shown_metric_columns,
)
from bench.publish.comparisons import row_labels
from bench.publish.text import format_cost, format_number, format_value_ci, plain_table, short_text

#: The widest line the summary prints (table, legend and the lines that say where the files are).
WIDTH = 120
#: At most this many metric columns (the primary one included) in the compact table.
MAX_METRICS = 4
#: Longest model and explainer labels (longer ones are cut, an ellipsis marks the cut; the files
#: hold them in full), so that the fixed columns always fit in :data:`WIDTH`.
MODEL_CHARS, EXPLAINER_CHARS = 24, 32
#: The columns that group the compact tables (one table per value).
GROUP_COLUMNS: tuple[str, ...] = ("dataset", "perturbation", "settings")


def headline_metrics(df: pd.DataFrame, limit: int = MAX_METRICS) -> list[MetricColumn]:
    """The primary metric, then the first metric column of every other family, then the rest
    (in the frame's metric order), at most ``limit``."""
    shown = shown_metric_columns(df)
    head = primary_column(df)
    first = [c for c in shown if head is not None and c.id == head.id] or shown[:1]
    families = {c.family for c in first}
    picked = list(first)
    for c in shown:
        if c not in picked and c.family not in families:
            picked.append(c)
            families.add(c.family)
    picked += [c for c in shown if c not in picked]
    return picked[:limit]


def role_marker(role: Any) -> str:
    """A control's mark after its name: ``" (null)"``, ``" (+ctrl)"`` (positive), ``" (-ctrl)"``
    (negative), ``" (ctrl)"`` (other); ``""`` for a method (the legend says what they mean)."""
    if not is_control(role):
        return ""
    if role == NULL_CONTROL_ROLE:
        return " (null)"
    kind = str(role).split("-", 1)[0]
    return {"positive": " (+ctrl)", "negative": " (-ctrl)"}.get(kind, " (ctrl)")


def _model_labels(df: pd.DataFrame) -> list[str]:
    """The model of each row, with its weights where one model ran with several."""
    several = {m for m, g in df.groupby("model") if g["weights"].nunique() > 1} if "weights" in df.columns else set()
    return [short_text(f"{r['model']} ({r['weights']})" if r["model"] in several else r["model"], MODEL_CHARS)
            for _, r in df.iterrows()]


def _explainer_labels(df: pd.DataFrame) -> list[str]:
    labels: list[str] = [""] * len(df)
    family = [c for c in ("dataset", "model", "weights", "perturbation", "settings") if c in df.columns]
    positions = {idx: i for i, idx in enumerate(df.index)}
    for _, group in df.groupby(family, sort=False, dropna=False) if family else [("", df)]:
        roles = group["role"] if "role" in group.columns else pd.Series(METHOD_ROLE, index=group.index)
        for idx, label, role in zip(group.index, row_labels(group), roles, strict=True):
            marker = role_marker(role)
            labels[positions[idx]] = short_text(label, EXPLAINER_CHARS - len(marker)) + marker
    return labels


#: The mark after an explainer that fails a sanity gate (the lines under the table say which).
FLAG_MARK = " !"


def _flagged(r: Any) -> str:
    text = r.get("sanity_flags") if hasattr(r, "get") else None
    return text if isinstance(text, str) and text else ""


def _rank_text(r: Any) -> str:
    def num(v: Any) -> float:
        try:
            return float(v)
        except (TypeError, ValueError):
            return float("nan")

    rank, lo, hi = num(r.get("rank")), num(r.get("rank_low")), num(r.get("rank_high"))
    if rank != rank:
        return ""

    def c(v: float) -> str:
        return f"{v:.0f}" if v == round(v) else f"{v:.1f}"

    return c(rank) + (f" [{c(lo)}, {c(hi)}]" if lo == lo and hi == hi else "")


def flag_lines(group: pd.DataFrame, *, width: int = WIDTH) -> list[str]:
    """Under a table: per failed sanity gate, the explainers that fail it with their values
    (``! survives model randomisation (>= 0.5): vgg16 gradcam 0.55, ...``); from the rows'
    ``_sanity`` (else their ``sanity_flags`` texts, one line each)."""
    by_gate: dict[tuple[str, float], list[str]] = {}
    plain: list[str] = []
    several = group["model"].nunique() > 1 if "model" in group.columns else False
    for model, label, r in zip(_model_labels(group), _explainer_labels(group), group.to_dict("records"), strict=True):
        who = f"{model} {label.strip()}" if several else label.strip()
        gates = r.get("_sanity")
        if isinstance(gates, list) and gates:
            for g in gates:
                text = str(g.get("text") or "")
                head = text.split(" (", 1)[0] if text else str(g.get("check"))
                by_gate.setdefault((head, float(g.get("threshold", 0.0))), []).append(
                    f"{who} {format_number(g.get('value'), 2)}")
        elif _flagged(r):
            plain.append(f"! {who}: {_flagged(r)}")
    lines = []
    for (head, threshold), who in by_gate.items():
        lines += _wrap(f"! {head} (mean >= {threshold:g}): " + ", ".join(who), width)
    for text in plain:
        lines += _wrap(text, width)
    return lines


def _has_ranks(df: pd.DataFrame) -> bool:
    return "rank" in df.columns and bool(pd.to_numeric(df["rank"], errors="coerce").notna().any())


def _table(df: pd.DataFrame, metrics: Sequence[MetricColumn], gain_header: str,
           ranked: bool = False) -> tuple[list[str], list[list[str]], list[str]]:
    head = primary_column(df)
    headers = ["Model", "Explainer"]
    align = ["l", "l"]
    ranked = ranked and _has_ranks(df)
    if ranked:
        headers.append("Rank")
        align.append("r")
    for c in metrics:
        headers.append(c.header)
        align.append("r")
        if head is not None and c.id == head.id:
            headers.append(gain_header)
            align.append("r")
    headers.append("passes/map")
    align.append("r")
    rows = []
    for model, explainer, (_, r) in zip(_model_labels(df), _explainer_labels(df), df.iterrows(), strict=True):
        row = [model, explainer + (FLAG_MARK if _flagged(r) else "")]
        if ranked:
            row.append(_rank_text(r))
        for c in metrics:
            row.append(format_value_ci(r[c.id], r[f"{c.id}_ci_low"], r[f"{c.id}_ci_high"]))
            if head is not None and c.id == head.id:
                gain = "" if is_control(r.get("role")) and r.get("explainer") == r.get("baseline") else (
                    format_value_ci(r.get("gain_over_baseline"), r.get("gain_ci_low"), r.get("gain_ci_high"),
                                    signed=True))
                row.append(gain)
        row.append(format_cost(r.get("passes_per_map")))
        rows.append(row)
    return headers, rows, align


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken at spaces only (never inside a name)."""
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)


def _width(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def _groups(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    by = [c for c in GROUP_COLUMNS if c in df.columns]
    if not by:
        return [("", df)]
    out = []
    for key, group in df.groupby(by, sort=False, dropna=False):
        values = key if isinstance(key, tuple) else (key,)
        parts = [f"settings {v}" if col == "settings" else str(v) for col, v in zip(by, values, strict=True)]
        out.append((", ".join(parts), group))
    return out


def _gain_header(df: pd.DataFrame) -> str:
    baseline = df.attrs.get("baseline") or reference_name(df)
    return f"Gain vs {baseline}" if baseline else "Gain vs control"


def fitted_metrics(df: pd.DataFrame, *, width: int = WIDTH, max_metrics: int = MAX_METRICS) -> list[MetricColumn]:
    """The headline metrics (:func:`headline_metrics`) the compact table shows: the primary one,
    then as many more as keep the table within ``width`` columns (the same for every group)."""
    candidates = headline_metrics(df, max_metrics)
    metrics = candidates[:1]
    for c in candidates[1:]:
        if _width(plain_table(*_table(df, [*metrics, c], _gain_header(df)))) > width:
            break
        metrics.append(c)
    return metrics


def show_ranks(df: pd.DataFrame, metrics: Sequence[MetricColumn], *, width: int = WIDTH) -> bool:
    """Whether the compact table has room for the ``Rank [interval]`` column beside ``metrics``
    (the headline metrics come first; the files always hold the ranks)."""
    return _has_ranks(df) and _width(plain_table(*_table(df, metrics, _gain_header(df), True))) <= width


def summary_table(df: pd.DataFrame, *, width: int = WIDTH, max_metrics: int = MAX_METRICS) -> str:
    """The compact plain-text tables of a :func:`bench.publish.collect.collect` frame (with the
    gain CIs attached), one per (dataset, perturbation, settings), with a title line and each
    model's test recall; the headline metrics that fit in ``width`` columns (:func:`fitted_metrics`)."""
    if df.empty:
        return "No finished cells yet."
    gain_header = _gain_header(df)
    metrics = fitted_metrics(df, width=width, max_metrics=max_metrics)
    ranked = show_ranks(df, metrics, width=width)
    blocks = []
    for title, group in _groups(df):
        models = list(dict.fromkeys(group["model"]))
        group = group.iloc[sorted(range(len(group)), key=lambda i: models.index(group["model"].iloc[i]))]
        recall: list[str] = []
        for model, value in zip(_model_labels(group), group["recall_macro"], strict=True):
            text = f"{model} {format_number(value)}"
            if text not in recall:
                recall.append(text)
        lines = [title] if title else []
        lines += _wrap("Test recall (macro): " + ", ".join(recall), width) if recall else []
        below = flag_lines(group, width=width)
        powers = {}
        for model, (_, r) in zip(_model_labels(group), group.iterrows(), strict=True):
            power = r.get("power")
            if isinstance(power, str) and power and power != "ranks the controls correctly":
                powers.setdefault(model, power)
        head = primary_column(group)
        for model, power in powers.items():
            below += _wrap(f"No power here: {head.header if head else 'the primary metric'} on {model} "
                           f"(its verdict on the controls: {power})", width)
        blocks.append("\n".join([*lines, "", plain_table(*_table(group, metrics, gain_header, ranked)), *below]))
    return "\n\n".join(blocks)


def legend_lines(df: pd.DataFrame, *, width: int = WIDTH, max_metrics: int = MAX_METRICS) -> list[str]:
    """What the compact table's columns mean and what it leaves out (wrapped at ``width``)."""
    failed = df.attrs.get("failed")
    failed_line = (f"{len(failed)} failed cell(s) are not on the board: see the full tables."
                   if failed is not None and len(failed) else "")
    if df.empty:
        return [failed_line] if failed_line else []
    head = primary_column(df)
    baseline = df.attrs.get("baseline") or reference_name(df)
    text = [f"[lo, hi]: {ci_label(df)} bootstrap CI of the mean over the explained test images; "
            "↑ higher is better, ↓ lower is better."]
    if head is not None:
        text.append(f"Rows: per model, the methods ranked by {head.header}, then the controls (reference lines, "
                    "not ranked: (null) null, (+ctrl) positive, (-ctrl) negative, (ctrl) other control). "
                    f"Gain: {head.header} minus that of the "
                    + (f"null control {baseline}" if baseline else "family's null control")
                    + " on the same images (paired).")
    text.append("passes/map: the explainer's cost per heatmap in forward-pass equivalents.")
    if _has_ranks(df):
        ranks = ("Rank: among the methods by " + (head.header if head else "the primary metric")
                 + f", with its {ci_label(df)} paired-bootstrap interval. "
                 if show_ranks(df, fitted_metrics(df, width=width, max_metrics=max_metrics), width=width)
                 else "Ranks with their intervals, metric power and agreement: in the full tables. ")
        text.append(ranks + "!: fails a sanity gate (the lines under the table say which); the full tables "
                    "carry every flag.")
    shown = {c.id for c in fitted_metrics(df, width=width, max_metrics=max_metrics)}
    rest = [c.id for c in shown_metric_columns(df) if c.id not in shown]
    if rest:
        text.append(f"{len(rest)} more metric(s) in the full tables: {', '.join(rest)}.")
    if failed_line:
        text.append(failed_line)
    return [line for t in text for line in _wrap(t, width)]


def where_lines(paths: Mapping[str, Path], *, publish_hint: str = "", width: int = WIDTH) -> list[str]:
    """The last lines: where the full tables and the report are (``publish_hint``: a last line)."""
    if not paths:
        return []
    lines = ["Full tables (every metric, settings, flags, paired comparisons, provenance):"]
    lines += [f"  {p}" for k, p in paths.items() if k != "report"]
    if "report" in paths:
        lines += ["Report (per class, classification, comparisons of every metric, figures):",
                  f"  {paths['report']}"]
    if publish_hint:
        lines += _wrap(publish_hint, width)
    return lines


def summary_text(df: pd.DataFrame, paths: Mapping[str, Path] | None = None, *, publish_hint: str = "",
                 width: int = WIDTH) -> str:
    """The compact table, its legend and (with ``paths``) where the full tables are."""
    light = df.copy(deep=False)  # pandas deep-copies attrs into every slice: keep the small ones
    light.attrs = {k: v for k, v in df.attrs.items() if k != "manifests"}
    df = light
    parts = [summary_table(df, width=width)]
    legend = legend_lines(df, width=width)
    if legend:
        parts.append("\n".join(legend))
    where = where_lines(paths or {}, publish_hint=publish_hint, width=width)
    if where:
        parts.append("\n".join(where))
    return "\n\n".join(parts) + "\n"
