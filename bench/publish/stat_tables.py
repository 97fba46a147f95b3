"""The human tables of a leaderboard's statistics (:class:`bench.publish.analysis.Analysis`).

Each function returns ``(headers, rows of strings, alignment)`` for one family (one dataset,
model, weights, perturbation and settings fingerprint), numbers in :mod:`bench.publish.text`'s
one format; :func:`statistics_markdown` puts them together for ``leaderboard.md`` (compact:
ranks, power, sanity, agreement, aggregate, the primary metric's per-class values and
comparisons) and ``report.md`` (``full``: per class for every metric, every comparison kept).
A flagged explainer carries its flag text in every table it appears in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from bench.pipeline.controls import is_control
from bench.publish.analysis import NO_POWER, Analysis
from bench.publish.collect import MetricColumn, metric_columns_of, pair_columns, primary_column
from bench.publish.comparisons import without_attrs
from bench.publish.text import format_ci, format_number, format_p, markdown_table, md_cell
from bench.ranking import AGGREGATE_LABEL, CONTROLS_CORRECT

Table = tuple[list[str], list[list[str]], list[str]]

__all__ = [
    "aggregate_rows",
    "agreement_rows",
    "comparison_table",
    "cross_model_rows",
    "family_keys",
    "family_title",
    "per_class_rows",
    "power_rows",
    "primary_rank_rows",
    "rank_matrix_rows",
    "sanity_rows",
    "statistics_markdown",
]


def _rank_text(rank: Any, lo: Any, hi: Any) -> str:
    r = _num(rank)
    if math.isnan(r):
        return ""
    text = _compact(r)
    lo_, hi_ = _num(lo), _num(hi)
    if math.isfinite(lo_) and math.isfinite(hi_):
        text += f" [{_compact(lo_)}, {_compact(hi_)}]"
    return text


def _compact(v: float) -> str:
    """A rank: ``2``, ``1.5`` (average ranks of ties), at most 2 decimals for a mean rank."""
    return f"{v:.0f}" if v == round(v) else f"{v:.2f}".rstrip("0").rstrip(".")


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _int(v: Any) -> str:
    f = _num(v)
    return "" if not math.isfinite(f) else str(int(f))


def family_keys(df: pd.DataFrame) -> list[tuple[str, ...]]:
    """The families of ``df`` (its :func:`bench.publish.collect.pair_columns` values) in the frame's order."""
    cols = pair_columns(df)
    if df.empty or not cols:
        return []
    seen = dict.fromkeys(tuple(str(v) for v in row) for row in without_attrs(df)[cols].itertuples(index=False,
                                                                                                   name=None))
    return list(seen)


def family_title(df: pd.DataFrame, key: Sequence[str]) -> str:
    """``dataset / model / weights w / perturbation / settings s``."""
    parts = []
    for col, value in zip(pair_columns(df), key, strict=True):
        parts.append(f"weights {value}" if col == "weights" else f"settings {value}" if col == "settings" else value)
    return " / ".join(str(p) for p in parts)


def _labels(df: pd.DataFrame) -> dict[str, MetricColumn]:
    return {c.id: c for c in metric_columns_of(df)}


def _explainer(label: Any, role: Any) -> str:
    return f"{label} ({role})" if is_control(role) else str(label)


def _joined(*parts: Any) -> str:
    return "; ".join(str(p) for p in parts if isinstance(p, str) and p)


# ---------------------------------------------------------------------------------------
# one family's tables
# ---------------------------------------------------------------------------------------
def primary_rank_rows(df: pd.DataFrame, analysis: Analysis, key: Sequence[str]) -> Table:
    """The primary metric: each method's mean, rank with its interval, P(best), normalised score
    (where the controls exist) and flags; the controls below as reference rows."""
    ranks = analysis.part("ranks", key)
    ranks = ranks[ranks["metric"] == analysis.primary]
    norm = analysis.part("normalised", key)
    norm = {(r["explainer"], r["explainer_params"]): r for r in norm.to_dict("records")}
    ci = f"{100 * analysis.confidence:g}%"
    has_norm = bool(norm)
    headers = ["Explainer", "Mean", f"Rank [{ci} interval]", "P(best)"]
    align = ["l", "r", "r", "r"]
    if has_norm:
        pos = next(iter(norm.values()))
        headers.append(f"Normalised (0 = {pos['null_control']}, 1 = {pos['positive_control']}) [{ci} CI]")
        align.append("r")
    headers.append("Flags")
    align.append("l")
    rows = []
    for r in ranks.to_dict("records"):
        row = [_explainer(r["label"], r["role"]), format_number(r["mean"]),
               _rank_text(r["rank"], r["rank_low"], r["rank_high"]) or "ref", format_number(r["p_best"], 2)]
        if has_norm:
            n = norm.get((r["explainer"], r["explainer_params"]))
            row.append("" if n is None else (format_number(n["normalised"]) + (
                f" {format_ci(n['normalised_ci_low'], n['normalised_ci_high'])}"
                if format_ci(n["normalised_ci_low"], n["normalised_ci_high"]) else "")))
        row.append(str(r["flags"] or ""))
        rows.append(row)
    return headers, rows, align


def rank_matrix_rows(df: pd.DataFrame, analysis: Analysis, key: Sequence[str]) -> Table:
    """Explainers x metrics: ``rank [interval]`` of each method under each metric (controls:
    ``ref``); a metric without power here says so in its header; flags last."""
    ranks = analysis.part("ranks", key)
    labels = _labels(df)
    metrics = [m for m in dict.fromkeys(ranks["metric"])]
    headers = ["Explainer"]
    for m in metrics:
        head = labels[m].header if m in labels else m
        if analysis.power_of(key, m) not in ("", CONTROLS_CORRECT):
            head += f" ({NO_POWER})"
        headers.append(head)
    headers.append("Flags")
    members = list(dict.fromkeys(zip(ranks["label"], ranks["role"], strict=True)))
    cells = {(r["label"], r["metric"]): r for r in ranks.to_dict("records")}
    flags = {}
    for r in ranks.to_dict("records"):
        flags[r["label"]] = _joined(*[f for f in str(r["flags"] or "").split("; ")
                                      if f not in (NO_POWER, "reference row, not ranked")])
    rows = []
    for label, role in members:
        row = [_explainer(label, role)]
        for m in metrics:
            r = cells.get((label, m))
            row.append("" if r is None else ("ref" if is_control(role) else _rank_text(r["rank"], r["rank_low"],
                                                                                       r["rank_high"])))
        row.append(flags.get(label, ""))
        rows.append(row)
    return headers, rows, ["l"] + ["r"] * len(metrics) + ["l"]


def power_rows(df: pd.DataFrame, analysis: Analysis, key: Sequence[str]) -> Table:
    """Per metric and set of controls: positive - null and null - negative with CIs, the verdict, where."""
    power = analysis.part("power", key)
    labels = _labels(df)
    ci = f"{100 * analysis.confidence:g}%"
    headers = ["Metric", "Controls (positive / null / negative)", f"positive - null [{ci} CI]",
               f"null - negative [{ci} CI]", "Verdict", "n", "Measured on"]
    rows = []
    for r in power.to_dict("records"):
        controls = " / ".join(x or "-" for x in (r["positive_control"], r["null_control"], r["negative_control"]))
        verdict = str(r["verdict"])
        if verdict != CONTROLS_CORRECT:
            verdict += f" ({NO_POWER})"
        rows.append([labels[r["metric"]].header if r["metric"] in labels else str(r["metric"]), controls,
                     _value_ci(r, "positive_minus_null"), _value_ci(r, "null_minus_negative"), verdict,
                     _int(r["n"]), str(r["measured_on"])])
    return headers, rows, ["l", "l", "r", "r", "l", "r", "l"]


def _value_ci(r: Mapping[str, Any], prefix: str, signed: bool = True) -> str:
    v = format_number(r.get(prefix), signed=signed)
    c = format_ci(r.get(f"{prefix}_ci_low"), r.get(f"{prefix}_ci_high"))
    return f"{v} {c}".strip() if v else ""


def sanity_rows(df: pd.DataFrame, analysis: Analysis, key: Sequence[str]) -> Table:
    """Explainers x sanity gates: each gate's mean value (and threshold), the flags."""
    sanity = analysis.part("sanity", key)
    labels = _labels(df)
    gates = list(dict.fromkeys(zip(sanity["metric"], sanity["column"], sanity["threshold"], strict=True)))
    headers = ["Explainer"]
    for metric, column, threshold in gates:
        name = labels[metric].label if metric in labels else metric
        col = "" if column == (labels[metric].name if metric in labels else metric) else f" [{column}]"
        headers.append(f"{name}{col} (flag at >= {threshold:g})")
    headers.append("Flags")
    cells = {(r["label"], r["metric"]): r for r in sanity.to_dict("records")}
    members = list(dict.fromkeys(zip(sanity["label"], sanity["role"], strict=True)))
    rows = []
    for label, role in members:
        row = [_explainer(label, role)]
        texts = []
        for metric, *_ in gates:
            r = cells.get((label, metric))
            row.append("" if r is None else format_number(r["value"]))
            if r is not None and r["flag"]:
                texts.append(str(r["flag"]))
        row.append("; ".join(texts))
        rows.append(row)
    return headers, rows, ["l"] + ["r"] * len(gates) + ["l"]


def agreement_rows(df: pd.DataFrame, analysis: Analysis, key: Sequence[str]) -> Table:
    """Kendall's tau between the metrics' method rankings (2 decimals), Krippendorff's alpha last."""
    matrix = analysis.kendall_matrix(key)
    alpha = analysis.part("alpha", key)
    alphas = dict(zip(alpha["metric"], alpha["alpha"], strict=True))
    metrics = list(matrix.index) if not matrix.empty else list(alphas)
    headers = ["Metric", *metrics, "Krippendorff α"]
    rows = []
    for a in metrics:
        row = [a]
        for b in metrics:
            row.append("1.00" if a == b else format_number(matrix.loc[a, b] if not matrix.empty else math.nan, 2))
        row.append(format_number(alphas.get(a), 2))
        rows.append(row)
    return headers, rows, ["l"] + ["r"] * (len(metrics) + 1)


def aggregate_rows(df: pd.DataFrame, analysis: Analysis, key: Sequence[str]) -> Table:
    agg = analysis.part("aggregate", key)
    ci = f"{100 * analysis.confidence:g}%"
    headers = ["Explainer", f"Mean rank [{ci} interval]", "Flags"]
    rows = [[str(r["label"]), _rank_text(r["mean_rank"], r["mean_rank_low"], r["mean_rank_high"]), str(r["flags"] or "")]
            for r in agg.to_dict("records")]
    return headers, rows, ["l", "r", "l"]


def per_class_rows(df: pd.DataFrame, analysis: Analysis, key: Sequence[str], metric: str) -> Table:
    """Explainers x classes: ``mean [lo, hi] (n)`` of one metric; a class nobody scored: ``-``."""
    part = analysis.part("per_class", key)
    part = part[part["metric"] == metric]
    flags = _flag_lookup(analysis)
    classes = list(dict.fromkeys(part["class"]))
    rows = []
    any_flag = False
    for (label, role, explainer, params), sub in part.groupby(["label", "role", "explainer", "explainer_params"],
                                                              sort=False):
        cells = {r["class"]: r for r in sub.to_dict("records")}
        text = flags.get((*(str(k) for k in key), str(explainer), str(params)), "")
        any_flag = any_flag or bool(text)
        row = [_explainer(label, role), text]
        for c in classes:
            r = cells.get(c)
            if r is None or not r["n"]:
                row.append("-")
            else:
                ci = format_ci(r["ci_low"], r["ci_high"])
                row.append(f"{format_number(r['mean'])}{' ' + ci if ci else ''} ({int(r['n'])})")
        rows.append([row[0], *row[2:], row[1]])
    if any_flag:
        return ["Explainer", *classes, "Flags"], rows, ["l"] + ["r"] * len(classes) + ["l"]
    return ["Explainer", *classes], [r[:-1] for r in rows], ["l"] + ["r"] * len(classes)


def _flag_lookup(analysis: Analysis) -> dict[tuple[str, ...], str]:
    """(family..., explainer, params) -> the row's flag text (made once per analysis)."""
    memo = analysis.__dict__.get("_flag_lookup_memo")
    if memo is not None and memo[0] is analysis.sanity:
        return memo[1]
    lookup = _make_flag_lookup(analysis)
    analysis.__dict__["_flag_lookup_memo"] = (analysis.sanity, lookup)
    return lookup


def _make_flag_lookup(analysis: Analysis) -> dict[tuple[str, ...], str]:
    out: dict[tuple[str, ...], list[str]] = {}
    for r in analysis.sanity.to_dict("records"):
        if r["flag"]:
            k = (*(str(r[c]) for c in analysis.group_columns), str(r["explainer"]), str(r["explainer_params"]))
            texts = out.setdefault(k, [])
            if r["flag"] not in texts:
                texts.append(str(r["flag"]))
    return {k: "; ".join(v) for k, v in out.items()}


def cross_model_rows(analysis: Analysis, dataset: str, perturbation: str, metric: str) -> tuple[Table, int]:
    """Explainers x models on the common image set: ``mean [lo, hi] (n)``; (table, n common images)."""
    cm = analysis.cross_model
    part = cm[(cm["dataset"].astype(str) == dataset) & (cm["perturbation"].astype(str) == perturbation)
              & (cm["metric"] == metric)]
    if part.empty:
        return ([], [], []), 0
    models = list(dict.fromkeys(zip(part["model"], part["weights"], part["settings"], strict=True)))
    several = {m for m, _, _ in models if sum(1 for x, _, _ in models if x == m) > 1}
    heads = [f"{m} ({w}, settings {s})" if m in several else str(m) for m, w, s in models]
    flags = _flag_lookup(analysis)
    rows = []
    for (explainer, params, role), sub in part.groupby(["explainer", "explainer_params", "role"], sort=False):
        cells = {(r["model"], r["weights"], r["settings"]): r for r in sub.to_dict("records")}
        row = [_explainer(explainer, role)]
        texts = []
        for m in models:
            r = cells.get(m)
            if r is None or not r["n"]:
                row.append("-")
                continue
            ci = format_ci(r["ci_low"], r["ci_high"])
            row.append(f"{format_number(r['mean'])}{' ' + ci if ci else ''} ({int(r['n'])})")
            fk = {"dataset": dataset, "model": m[0], "weights": m[1], "perturbation": perturbation, "settings": m[2]}
            text = flags.get((*(fk.get(c, "") for c in analysis.group_columns), str(explainer), str(params)), "")
            if text:
                texts.append(f"{m[0]}: {text}")
        rows.append([*row, "; ".join(texts)])
    n_common = int(part["n_common"].iloc[0])
    return (["Explainer", *heads, "Flags"], rows, ["l"] + ["r"] * len(heads) + ["l"]), n_common


#: The mark after a flagged explainer's name in a comparisons table (the lines under it say which gate).
FLAG_MARK = " (!)"


def comparison_table(comparisons: pd.DataFrame, analysis: Analysis) -> tuple[Table, list[str]]:
    """One family's comparisons of one metric: A, B, n, means, A - B [CI], p, Holm p, verdict.

    A flagged explainer's name carries :data:`FLAG_MARK`; the second item lists each flagged
    explainer with its flag texts once (the lines printed under the table).
    """
    ci = f"{100 * analysis.confidence:g}%"
    headers = ["A", "B", "n", "mean A", "mean B", "A - B", f"{ci} CI of A - B", "p (mean)", "Holm p", "Verdict"]
    align = ["l", "l", "r", "r", "r", "r", "l", "r", "r", "l"]
    flags = _flag_lookup(analysis)
    seen: dict[str, set[str]] = {}
    for a, pa, b, pb in zip(comparisons["explainer_a"], comparisons["params_a"], comparisons["explainer_b"],
                            comparisons["params_b"], strict=True):
        seen.setdefault(str(a), set()).add(str(pa))
        seen.setdefault(str(b), set()).add(str(pb))
    flagged: dict[str, str] = {}

    def name(c: Mapping[str, Any], side: str) -> str:
        n = str(c[f"explainer_{side}"])
        label = f"{n} [{c[f'params_{side}']}]" if len(seen.get(n, ())) > 1 else n
        fam = tuple(str(c.get(col, "")) for col in analysis.group_columns)
        text = flags.get((*fam, n, str(c[f"params_{side}"])), "")
        if text:
            flagged[label] = text
            return label + FLAG_MARK
        return label

    rows = []
    for c in comparisons.to_dict("records"):
        verdict = str(c.get("verdict") or "") if c["n"] else "no shared images"
        rows.append([name(c, "a"), name(c, "b"), _int(c["n"]), format_number(c["mean_a"]), format_number(c["mean_b"]),
                     format_number(c["diff"], signed=True), format_ci(c["ci_low"], c["ci_high"]),
                     format_p(c["p_value"]), format_p(c["p_holm"]), verdict])
    lines = [f"{label}{FLAG_MARK}: {text}" for label, text in flagged.items()]
    return (headers, rows, align), lines


def _family_comparisons(analysis: Analysis, key: Sequence[str]) -> pd.DataFrame:
    comps = analysis.comparisons
    if comps.empty:
        return comps
    mask = pd.Series(True, index=comps.index)
    for col, value in zip(analysis.group_columns, key, strict=True):
        if col in comps.columns:
            mask &= comps[col].astype(str) == str(value)
    return comps[mask]


def compact_comparisons(part: pd.DataFrame, analysis: Analysis, key: Sequence[str]) -> pd.DataFrame:
    """The pairs a compact file shows: both explainers methods, or one of them the family's
    null control (the gain reference); a pair of two other controls is the power table's job."""
    ranks = analysis.part("ranks", key)
    roles = {(str(e), str(p)): str(r) for e, p, r in zip(ranks["explainer"], ranks["explainer_params"],
                                                          ranks["role"], strict=True)}
    nulls = {k for k, r in roles.items() if r == "null-control"}
    keep = []
    for c in part.to_dict("records"):
        a, b = (str(c["explainer_a"]), str(c["params_a"])), (str(c["explainer_b"]), str(c["params_b"]))
        methods = not is_control(roles.get(a, "method")) and not is_control(roles.get(b, "method"))
        keep.append(methods or a in nulls or b in nulls)
    return part[keep] if len(part) else part


# ---------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------
def _md(table: Table) -> list[str]:
    headers, rows, align = table
    return [markdown_table(headers, rows, align, pad=False), ""] if rows else []


def statistics_markdown(df: pd.DataFrame, analysis: Analysis, *, full: bool = False, level: int = 2) -> list[str]:
    """The statistics sections of a Markdown file, one per family, then the cross-model tables.

    Compact (``full=False``, ``leaderboard.md``): the primary metric's ranks, the rank matrix,
    metric power, sanity gates, agreement, the aggregate, the primary metric per class and its
    paired comparisons. ``full`` (``report.md``): per class for every metric and every paired
    comparison kept (each metric's own table).
    """
    h = "#" * level
    out: list[str] = []
    keys = family_keys(df)
    if not keys or all(getattr(analysis, t).empty for t in ("ranks", "comparisons", "sanity", "cross_model")):
        return out
    labels = _labels(df)
    head = primary_column(df)
    primary = head.header if head is not None else "the primary metric"
    out += [f"{h} Statistics (what is tested)", ""]
    out += [f"- {md_cell(line)}" for line in analysis.notes_lines()] + [""]
    for key in keys:
        title = family_title(df, key)
        out += [f"{h} {md_cell(title)}", ""]
        sub = f"{h}#"
        notes = analysis.part("notes", key)
        if head is not None:
            table = primary_rank_rows(df, analysis, key)
            if table[1]:
                power = analysis.power_of(key, analysis.primary)
                extra = f" ({NO_POWER}: {power})" if power and power != CONTROLS_CORRECT else ""
                out += [f"{sub} Ranks by {md_cell(primary)}{md_cell(extra)}", ""] + _md(table)
        out_m = _md(rank_matrix_rows(df, analysis, key))
        if out_m:
            out += [f"{sub} Ranks under every metric (rank [interval]; controls: ref)", ""] + out_m
        out_p = _md(power_rows(df, analysis, key))
        if out_p:
            out += [f"{sub} Metric power from the controls", ""] + out_p
        out_s = _md(sanity_rows(df, analysis, key))
        if out_s:
            out += [f"{sub} Sanity gates", ""] + out_s
        out_a = _md(agreement_rows(df, analysis, key))
        if out_a:
            out += [f"{sub} Agreement between metrics (Kendall's tau of the method rankings; Krippendorff's "
                    "alpha of the per-image rankings)", ""] + out_a
        out_g = _md(aggregate_rows(df, analysis, key))
        if out_g:
            used = ", ".join(analysis.aggregate_metrics.get(tuple(key), []))
            out += [f"{sub} Aggregate: mean rank across {md_cell(used)}", "",
                    md_cell(f"The {AGGREGATE_LABEL}."), ""] + out_g
        metrics = [c.id for c in labels.values()] if full else [analysis.primary]
        for metric in metrics:
            table = per_class_rows(df, analysis, key, metric)
            if table[1]:
                name = labels[metric].header if metric in labels else metric
                out += [f"{sub} {md_cell(name)} per class (mean [CI] (n); -: no image of that class scored)", ""]
                out += _md(table)
        fam = _family_comparisons(analysis, key)
        if not fam.empty:
            for metric in (list(dict.fromkeys(fam["metric"])) if full else [analysis.primary]):
                part = fam[fam["metric"] == metric]
                if part.empty:
                    continue
                name = labels[metric].header if metric in labels else metric
                every = part["explainer_b"].nunique() > 1
                if every and not full:
                    n_all = len(part)
                    part = compact_comparisons(part, analysis, key)
                    what = (f"the {len(part)} pairs of methods and of each explainer with the null control; all "
                            f"{n_all} pairs in leaderboard.json and report.md") if len(part) < n_all else "every pair"
                else:
                    what = "every pair" if every else f"each against {part['explainer_b'].iloc[0]}"
                table, flagged = comparison_table(part, analysis)
                out += [f"{sub} Paired comparisons, {md_cell(name)} ({md_cell(what)}, same images)", ""]
                out += _md(table)
                if flagged:
                    out += [md_cell(f"{FLAG_MARK.strip()} fails a sanity gate:")]
                    out += [f"- {md_cell(line)}" for line in flagged] + [""]
        if not notes.empty:
            out += [f"- {md_cell(str(r['metric']) + ': ' + str(r['note']))}" for r in notes.to_dict("records")] + [""]
    cm = analysis.cross_model
    if not cm.empty:
        out += [f"{h} Across models, on the common image set", ""]
        for (ds, pert), _ in cm.groupby(["dataset", "perturbation"], sort=False):
            for metric in ([c.id for c in labels.values()] if full else [analysis.primary]):
                table, n_common = cross_model_rows(analysis, str(ds), str(pert), metric)
                if not table[1]:
                    continue
                name = labels[metric].header if metric in labels else metric
                out += [f"{h}# {md_cell(ds)} / {md_cell(pert)}: {md_cell(name)} on the {n_common} test image(s) "
                        "every model classified correctly (mean [CI] (n))", ""]
                if n_common == 0:
                    out += [md_cell("No test image was classified correctly by every model: nothing to compare "
                                    "across models."), ""]
                    break
                out += _md(table)
    return out
