"""The human tables of a leaderboard: (headers, rows of strings, alignment) from its frames.

Every renderer (Markdown, HTML, LaTeX, the report) draws the same tables from here, with
the numbers in :mod:`bench.publish.text`'s one format:

- :func:`display_table`: the full leaderboard (every metric column, the gain, cost, flags);
- :func:`failed_rows`: the cells whose latest attempt failed;
- :func:`comparison_rows`: the paired comparisons (:mod:`bench.publish.comparisons`);
- :func:`per_class_markdown`: the primary metric per true class.

The compact terminal table is :mod:`bench.publish.summary`'s.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench import stats as st
from bench.pipeline.controls import METHOD_ROLE, is_control
from bench.publish.collect import (
    MetricColumn,
    ambiguous_explainers,
    ci_label,
    confidence_of,
    constant_counts,
    pair_columns,
    primary_column,
    reference_name,
    shown_metric_columns,
)
from bench.publish.comparisons import class_names_of, per_class_values, row_labels
from bench.publish.text import (
    format_ci,
    format_cost,
    format_number,
    format_p,
    format_value_ci,
    markdown_table,
    md_cell,
    short_text,
)

Table = tuple[list[str], list[list[str]], list[str]]

#: The columns of the failed-cells table.
FAILED_HEADERS: tuple[str, ...] = ("Dataset", "Model", "Weights", "Explainer", "Perturbation", "Run", "Stage",
                                   "Error", "Shown instead")


def primary_header(df: pd.DataFrame) -> str:
    """``"AOPC ↑"``: the header of the frame's primary metric (``"no metric"`` without one)."""
    head = primary_column(df)
    return head.header if head is not None else "no metric"


def constant_flag(constant: Any, n: Any) -> str:
    """The flag text of a row with constant heatmaps (empty when none or unknown)."""
    if constant is None or pd.isna(constant) or int(constant) <= 0:
        return ""
    total = "" if n is None or pd.isna(n) else f"/{int(n)}"
    return f"{int(constant)}{total} constant heatmaps: order is arbitrary"


def explainer_label(explainer: Any, role: Any) -> str:
    """A row's explainer as the tables show it: a control carries its role (``<name> (null-control)``)."""
    return f"{explainer} ({role})" if is_control(role) else str(explainer)


def display_table(df: pd.DataFrame, *, baseline: str | None = None) -> Table:
    """(headers, rows of strings, alignment 'l'/'r' per column) for the human formats.

    The ``Settings`` column (the settings fingerprint; the notes' legend says what each
    stands for) is always there. One column per metric the rows hold (``AOPC ↑ [95% CI]``:
    value and CI; the arrow says which way is better), in the frame's metric order;
    ``Explainer params`` only when an explainer ran with more than one parameter set;
    ``Flags`` only when some row fails a sanity gate (``sanity_flags``, the check and its value),
    has constant heatmaps or a metric that failed, was left out or left non-finite values out. A control's explainer cell carries its role
    (``<name> (null-control)``). The gain column is the primary metric's. ``s/map`` and
    ``passes/map`` are the explainer's cost per heatmap: seconds (when the maps were
    computed) and forward-pass equivalents (its ``passes_per_map()``; empty when it does
    not say).
    """
    baseline = baseline if baseline is not None else (df.attrs.get("baseline") or reference_name(df))
    ci = f"{ci_label(df)} CI"
    head = primary_column(df)
    gain_name = f"Gain over {baseline}" if baseline else "Gain over control"
    if head is not None:
        gain_name += f" ({head.header}) [{ci}]"
    shown = shown_metric_columns(df)
    ambiguous = ambiguous_explainers(df)
    has_eparams = bool(ambiguous)
    notes = (list(df["metric_notes"]) if "metric_notes" in df.columns else [""] * len(df))
    sanity = (list(df["sanity_flags"]) if "sanity_flags" in df.columns else [""] * len(df))
    has_flags = (any(constant_counts(df)) or any(isinstance(n, str) and n for n in notes)
                 or any(isinstance(n, str) and n for n in sanity))
    headers = ["Dataset", "Model", "Weights", "Explainer"]
    align = ["l"] * 4
    if has_eparams:
        headers += ["Explainer params"]
        align += ["l"]
    headers += ["Perturbation", "Settings", "Test recall (macro)", "F1 (macro)", "Accuracy"]
    align += ["l", "l"] + ["r"] * 3
    headers += [f"{c.header} [{ci}]" for c in shown]
    align += ["r"] * len(shown)
    headers += [gain_name, "s/map", "passes/map", "n images", "Eval time (s)"]
    align += ["r", "r", "r", "r", "r"]
    if has_flags:
        headers += ["Flags"]
        align += ["l"]
    rows: list[list[str]] = []
    for _, r in df.iterrows():
        row = [str(r["dataset"]), str(r["model"]), str(r["weights"]),
               explainer_label(r["explainer"], r.get("role", METHOD_ROLE))]
        if has_eparams:
            row += [str(r.get("explainer_params", "")) if str(r["explainer"]) in ambiguous else ""]
        row += [str(r["perturbation"]), str(r.get("settings", "")), format_number(r["recall_macro"]),
                format_number(r["f1_macro"]), format_number(r["accuracy"])]
        row += [format_value_ci(r[c.id], r[f"{c.id}_ci_low"], r[f"{c.id}_ci_high"]) for c in shown]
        n = r["n_images"]
        row += [format_value_ci(r["gain_over_baseline"], r.get("gain_ci_low"), r.get("gain_ci_high"), signed=True),
                format_cost(r.get("seconds_per_map")), format_cost(r.get("passes_per_map")),
                "" if n is None or pd.isna(n) else str(int(n)), format_cost(r["evaluate_seconds"])]
        if has_flags:
            flags = [str(r.get("sanity_flags") or ""), constant_flag(r.get("constant_heatmaps"), n),
                     str(r.get("metric_notes") or "")]
            row += ["; ".join(f for f in flags if f)]
        rows.append(row)
    return headers, rows, align


def failed_rows(failed: pd.DataFrame, *, error_chars: int = 160) -> Table:
    """The failed-cells table (errors on one line, cut to ``error_chars``)."""
    rows = [
        [str(r["dataset"]), str(r["model"]), str(r["weights"]), str(r["explainer"]), str(r["perturbation"]),
         str(r["run_id"]), str(r["stage"]), short_text(r["error"], error_chars), str(r["shown_instead"] or "-")]
        for _, r in failed.iterrows()
    ]
    return list(FAILED_HEADERS), rows, ["l"] * len(FAILED_HEADERS)


def failed_markdown(failed: pd.DataFrame) -> str:
    headers, rows, align = failed_rows(failed)
    return markdown_table(headers, rows, align)


# ---------------------------------------------------------------------------------------
# paired comparisons
# ---------------------------------------------------------------------------------------
#: The note under a comparisons table (plain text: each renderer escapes it); the test is the one
#: :func:`bench.stats.paired_comparison` runs (its ``MEAN_TEST``).
COMPARISONS_NOTE = (
    "A - B: mean over the shared images (aligned by image id) of the per-image difference of the "
    f"metric, with its 95% bootstrap CI; p: {st.MEAN_TEST}; Holm correction within "
    "each dataset/model/weights/perturbation/settings family and metric (rows of different settings are "
    "never paired); verdict: better / worse (Holm p < 0.05, in the metric's direction), negligible "
    f"(|A - B| below the minimum effect, leaderboard.min_effect, default {st.DEFAULT_MIN_EFFECT:g} in the "
    "metric's units, whatever its p) or not significant."
)


def comparison_rows(comparisons: pd.DataFrame) -> Table:
    """(headers, rows, align) of the comparisons table; an explainer that ran with more than
    one parameter set is shown as ``name [params fingerprint]``."""
    headers = ["Dataset", "Model", "Weights", "Perturbation", "Settings", "A", "B", "n", "mean A",
               "mean B", "A - B", "CI of A - B", "p", "Holm p", "Significant (Holm, 0.05)", "Verdict"]
    align = ["l"] * 7 + ["r"] * 4 + ["l", "r", "r", "l", "l"]
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
        rows.append([
            str(c["dataset"]), str(c["model"]), str(c["weights"]), str(c["perturbation"]),
            str(c.get("settings", "")), label(c, "a"), label(c, "b"), str(int(c["n"])),
            format_number(c["mean_a"]), format_number(c["mean_b"]),
            format_number(c["diff"], signed=True), format_ci(c["ci_low"], c["ci_high"]),
            format_p(c["p_value"]), format_p(c["p_holm"]),
            ("yes" if bool(c["significant"]) else "no") if c["n"] else "no shared images",
            str(c.get("verdict") or "") if c["n"] else "",
        ])
    return headers, rows, align


def comparisons_markdown(comparisons: pd.DataFrame) -> str:
    headers, rows, align = comparison_rows(comparisons)
    return markdown_table(headers, rows, align) + "\n\n" + md_cell(COMPARISONS_NOTE)


# ---------------------------------------------------------------------------------------
# per class
# ---------------------------------------------------------------------------------------
def per_class_markdown(df: pd.DataFrame, *, column: MetricColumn | None = None) -> str:
    """One table per pairing family (dataset, model, weights, perturbation, settings):
    explainers x classes, "mean [lo, hi] (n)" of one metric column (default: the primary)."""
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
        for label, (_, row) in zip(row_labels(group), group.iterrows(), strict=True):
            stats = per_class_values(row, column, class_names_of(row, manifests), confidence=conf)
            if not stats:
                continue
            classes += [c for c in stats if c not in classes]
            rows.append([label, *[
                f"{format_value_ci(*stats[c][:3])} ({stats[c][3]})" if c in stats else "" for c in classes]])
        if not rows:
            continue
        rows = [r + [""] * (1 + len(classes) - len(r)) for r in rows]
        parts = [f"settings {k}" if col == "settings" else str(k) for col, k in zip(family, key, strict=True)]
        title = " / ".join(md_cell(k) for k in parts)
        blocks.append(f"### {title}\n\n" + markdown_table(["Explainer", *classes], rows))
    return "\n\n".join(blocks)

