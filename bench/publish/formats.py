"""The leaderboard as text: Markdown (GitHub style), CSV, JSON (schema-versioned), HTML, LaTeX.

:func:`render` turns a :func:`bench.publish.collect.collect` frame into one format; the
human formats draw :mod:`bench.publish.tables`' and :mod:`bench.publish.stat_tables`' tables,
the machine formats (CSV, JSON) the frame's public columns (:func:`bench.publish.collect.public`).
HTML is :func:`bench.publish.page.render_page`'s page. With an
:class:`bench.publish.analysis.Analysis` (ranks, power, sanity, agreement, ...), Markdown, HTML
and JSON show its tables: JSON one block per family (:func:`json_groups`).

JSON (:data:`SCHEMA` version 3)::

    {"schema", "baseline", "primary", "metrics": [column specs], "columns", "rows": [row objects],
     "failed", "statistics": {what was tested, thresholds, min effect, resamples},
     "groups": [{"key": {dataset, model, weights, perturbation, settings}, "title",
                 "power": {metric: verdict}, "flags": {explainer: [sanity flag texts]},
                 "tables": {"ranks", "comparisons", "metric_power",
                 "normalised", "sanity", "alpha", "aggregate", "per_class", "notes"}
                 (each {"columns": [...], "data": [[...], ...]}), "kendall": {"metrics", "tau"},
                 "aggregate_metrics": [...]}],
     "cross_model": [{"key": {dataset, perturbation}, "n_common", "table"}],
     "figures": {section: [file names]}, "provenance"}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.publish.analysis import Analysis, compact_table
from bench.publish.classification import classification_tables
from bench.publish.collect import FAILED_COLUMNS, empty_frame, metric_columns_of, public
from bench.publish.comparisons import primary_comparisons
from bench.publish.page import render_page
from bench.publish.provenance import provenance, provenance_lines
from bench.publish.stat_tables import family_keys, family_title, statistics_markdown
from bench.publish.tables import (
    comparisons_markdown,
    display_table,
    failed_markdown,
    primary_header,
)
from bench.publish.text import latex_escape, markdown_table, md_cell

#: Version 2: the metric columns come from the metrics the records hold
#: (:func:`bench.publish.collect.columns_of`). Version 3: the statistics (ranks with intervals,
#: metric power, sanity flags, agreement, aggregate, per class, cross-model) in one block per
#: family (``groups``); the paired comparisons moved into them; rank and flag columns in the rows.
SCHEMA = "bench.publish.leaderboard/3"
FORMATS: tuple[str, ...] = ("md", "csv", "json", "html", "tex")
#: Aliases accepted by :func:`render` and :func:`bench.publish.leaderboard.build_leaderboard`
#: (``bench leaderboard --format latex``).
FORMAT_ALIASES: dict[str, str] = {"markdown": "md", "latex": "tex", "htm": "html"}


def normalise_format(fmt: str) -> str:
    f = str(fmt).lower().lstrip(".")
    f = FORMAT_ALIASES.get(f, f)
    if f not in FORMATS:
        raise BenchError(f"unknown leaderboard format {fmt!r}; choose one of {', '.join(FORMATS)} (or 'latex')")
    return f


def json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, (np.floating,)):
        return json_safe(float(value))
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, pd.DataFrame):
        return [json_safe(r) for r in value.to_dict(orient="records")]
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def render(
    df: pd.DataFrame,
    fmt: str,
    *,
    provenance_info: Mapping[str, Any] | None = None,
    comparisons: pd.DataFrame | None = None,
    figures: Mapping[str, Sequence[Path]] | None = None,
    failed: pd.DataFrame | None = None,
    title: str = "bench leaderboard",
    analysis: Analysis | None = None,
) -> str:
    """The leaderboard ``df`` (from :func:`collect`) as text in ``fmt``.

    ``fmt``: md, csv, json, html or tex (``latex`` accepted). ``provenance_info``
    defaults to :func:`provenance` of ``df``; ``failed`` to ``df.attrs["failed"]``.
    ``comparisons`` (from :func:`bench.publish.comparisons.paired_comparisons`; default: the
    analysis's) are rendered in md (the primary metric's), json and html; ``figures``
    (``{section title: [png paths]}``) are embedded in html as base64 data URIs.
    ``analysis`` (:func:`bench.publish.analysis.analyse`): the statistics tables, in md, html, json.
    """
    fmt = normalise_format(fmt)
    prov = dict(provenance_info) if provenance_info is not None else provenance(df)
    if failed is None:
        failed = df.attrs.get("failed")
    if failed is None:
        failed = empty_frame(FAILED_COLUMNS)
    if comparisons is None and analysis is not None:
        comparisons = analysis.comparisons
    if fmt == "csv":
        return public(df).to_csv(index=False)
    if fmt == "json":
        doc = {
            "schema": SCHEMA,
            "baseline": df.attrs.get("baseline", prov.get("baseline", "")),
            "primary": df.attrs.get("primary", ""),
            "metrics": [c.to_dict() for c in metric_columns_of(df)],
            "columns": list(public(df).columns),
            "rows": json_safe(public(df)),
            "failed": json_safe(failed),
            "statistics": json_safe(analysis.statistics_block()) if analysis is not None else {},
            "groups": json_groups(df, analysis, comparisons),
            "cross_model": json_cross_model(analysis) if analysis is not None else [],
            "figures": {section: [Path(p).name for p in paths] for section, paths in (figures or {}).items()},
            "provenance": json_safe(prov),
        }
        return json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n"
    if fmt == "md":
        return render_markdown(df, prov, failed, comparisons, title, analysis)
    if fmt == "html":
        return render_html(df, prov, failed, comparisons, figures or {}, title, analysis)
    return render_latex(df, prov, failed)


#: Columns left out of the JSON's per-family tables (the family's key holds the group columns;
#: the rows hold the cells and runs).
_JSON_DROP: tuple[str, ...] = ("dataset", "model", "weights", "perturbation", "settings", "cell_id", "run_a", "run_b")


def json_groups(df: pd.DataFrame, analysis: Analysis | None,
                comparisons: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """One block per family: its key, the power verdict per metric and every statistics table
    (compact ``{"columns", "data"}`` tables, the family's columns left out)."""
    out = []
    comps = comparisons if comparisons is not None else (analysis.comparisons if analysis is not None else None)
    group_cols = analysis.group_columns if analysis is not None else []
    for key in family_keys(df):
        block: dict[str, Any] = {"key": dict(zip(group_cols or ["dataset", "model", "weights", "perturbation",
                                                                 "settings"], key, strict=False)),
                                 "title": family_title(df, key)}
        tables: dict[str, Any] = {}
        if comps is not None and not comps.empty:
            mask = pd.Series(True, index=comps.index)
            for col, value in zip(group_cols, key, strict=True):
                if col in comps.columns:
                    mask &= comps[col].astype(str) == str(value)
            tables["comparisons"] = compact_table(comps[mask], drop=_JSON_DROP)
        if analysis is not None:
            metrics = list(dict.fromkeys(analysis.part("ranks", key)["metric"]))
            block["power"] = {m: analysis.power_of(key, m) for m in metrics}
            for name, table in (("ranks", "ranks"), ("metric_power", "power"), ("normalised", "normalised"),
                                ("sanity", "sanity"), ("alpha", "alpha"), ("aggregate", "aggregate"),
                                ("per_class", "per_class"), ("notes", "notes")):
                tables[name] = compact_table(analysis.part(table, key), drop=_JSON_DROP)
            matrix = analysis.kendall_matrix(key)
            block["kendall"] = {"metrics": [str(m) for m in matrix.index],
                                "tau": json_safe([[float(v) for v in row] for row in matrix.to_numpy()])}
            block["aggregate_metrics"] = analysis.aggregate_metrics.get(tuple(key), [])
            sanity = analysis.part("sanity", key)
            flags: dict[str, list[str]] = {}
            for r in sanity[sanity["failed"].astype(bool)].to_dict("records") if len(sanity) else []:
                texts = flags.setdefault(str(r["label"]), [])
                if r["flag"] not in texts:
                    texts.append(str(r["flag"]))
            # every table of the block names explainers by label: their sanity flags, once
            block["flags"] = flags
        block["tables"] = tables
        out.append(block)
    return out


def json_cross_model(analysis: Analysis) -> list[dict[str, Any]]:
    """Per dataset and perturbation: the models side by side on their common test images."""
    cm = analysis.cross_model
    out = []
    if cm.empty:
        return out
    for (ds, pert), part in cm.groupby(["dataset", "perturbation"], sort=False):
        out.append({"key": {"dataset": str(ds), "perturbation": str(pert)}, "n_common": int(part["n_common"].iloc[0]),
                    "table": compact_table(part, drop=("dataset", "perturbation", "n_common"))})
    return out


def render_markdown(df: pd.DataFrame, prov: Mapping[str, Any], failed: pd.DataFrame,
                    comparisons: pd.DataFrame | None, title: str, analysis: Analysis | None = None) -> str:
    headers, rows, align = display_table(df)
    out = [f"# {md_cell(title)}", ""]
    if rows:
        out += [markdown_table(headers, rows, align), ""]
    else:
        out += ["_No finished cells yet._", ""]
    if analysis is not None and rows:
        out += statistics_markdown(df, analysis, full=False)
    else:
        comparisons = primary_comparisons(comparisons, df)
        if comparisons is not None and not comparisons.empty:
            out += [f"## Paired comparisons ({md_cell(primary_header(df))}, same images)", "",
                    comparisons_markdown(comparisons), ""]
    if not failed.empty:
        out += ["## Failed cells (not on the leaderboard)", "", failed_markdown(failed), ""]
    budgets = budget_notes(prov)
    if budgets:
        out += [f"_{md_cell(line)}_" for line in budgets] + [""]
    out += ["## Provenance", ""] + [f"- {md_cell(line)}" for line in provenance_lines(prov)]
    return "\n".join(out) + "\n"


def budget_notes(prov: Mapping[str, Any]) -> list[str]:
    """One sentence naming every parameter that differs from its component's default (the
    preset's budgets), or nothing."""
    budgets = list(prov.get("budgets") or [])
    if not budgets:
        return []
    return ["Run with parameters other than the components' defaults (cheaper budgets; bench list "
            "explainers and bench list metrics give the defaults): " + "; ".join(budgets) + "."]


def render_html(df: pd.DataFrame, prov: Mapping[str, Any], failed: pd.DataFrame,
                comparisons: pd.DataFrame | None, figures: Mapping[str, Sequence[Path]], title: str,
                analysis: Analysis | None = None) -> str:
    """The page (:func:`bench.publish.page.render_page`) with every table of ``analysis``."""
    extra: dict[str, Any] = {}
    notes: list[str] = []
    if analysis is not None:
        extra = page_tables(df, analysis)
        notes = analysis.notes_lines()
    notes += budget_notes(prov)
    classification = classification_tables(df) if "_path" in df.columns and not df.empty else None
    if comparisons is not None and not comparisons.empty and analysis is not None:
        comparisons = with_flags(comparisons, analysis)
    return render_page(df, prov, failed, comparisons, figures, classification=classification, notes=notes,
                       title=title, **extra)


def with_flags(comparisons: pd.DataFrame, analysis: Analysis) -> pd.DataFrame:
    """``comparisons`` with a ``flags`` column: the sanity flags of A and B (``"A: text; B: text"``)."""
    sanity = analysis.sanity
    texts: dict[tuple[str, ...], list[str]] = {}
    for r in sanity[sanity["failed"].astype(bool)].to_dict("records") if len(sanity) else []:
        k = (*(str(r[c]) for c in analysis.group_columns), str(r["explainer"]), str(r["explainer_params"]))
        texts.setdefault(k, []).append(str(r["flag"]))
    out = comparisons.copy()
    flags = []
    for c in out.to_dict("records"):
        fam = tuple(str(c.get(col, "")) for col in analysis.group_columns)
        parts = [f"{c[f'explainer_{s}']}: {'; '.join(t)}" for s in ("a", "b")
                 if (t := texts.get((*fam, str(c[f"explainer_{s}"]), str(c[f"params_{s}"]))))]
        flags.append("; ".join(parts))
    if any(flags):
        out["flags"] = flags
    return out


def page_tables(df: pd.DataFrame, analysis: Analysis) -> dict[str, Any]:
    """The frames :func:`bench.publish.page.render_page` shows in each group, shaped for reading:
    ranks as explainers x metrics (rank over its interval), sanity as explainers x gates, the
    rest as they are (the family's columns kept: they place each row in its group)."""
    labels = {c.id: c.header for c in metric_columns_of(df)}
    group = analysis.group_columns
    out: dict[str, Any] = {}
    ranks = analysis.ranks
    if not ranks.empty:
        wide = []
        for key, part in ranks.groupby([*group, "label", "role"], sort=False, dropna=False):
            rec = dict(zip([*group, "explainer", "role"], key, strict=True))
            for r in part.to_dict("records"):
                head = labels.get(r["metric"], r["metric"])
                power = analysis.power_of([r[c] for c in group], r["metric"])
                if power and power != "ranks the controls correctly":
                    head = f"{head} (no power here)"
                rec[head] = r["rank"]
                rec[f"{head}_low"], rec[f"{head}_high"] = r["rank_low"], r["rank_high"]
                if r["metric"] == analysis.primary:
                    rec["P(best)"] = r["p_best"]
                sanity = [f for f in str(r["flags"] or "").split("; ")
                          if f and f not in ("no power here", "reference row, not ranked")]
                rec["flags"] = "; ".join(sanity)
            wide.append(rec)
        frame = pd.DataFrame(wide)
        cols = [c for c in frame.columns if c != "flags"] + (["flags"] if "flags" in frame.columns else [])
        out["ranks"] = frame[cols]
    if not analysis.power.empty:
        power = analysis.power.copy()
        power["metric"] = [labels.get(m, m) for m in power["metric"]]
        out["metric_power"] = power.drop(columns=["n_dropped"])
    if not analysis.normalised.empty:
        norm = analysis.normalised.copy()
        norm["metric"] = [labels.get(m, m) for m in norm["metric"]]
        out["normalised"] = norm.drop(columns=["explainer", "explainer_params", "n_dropped"]).rename(
            columns={"label": "explainer"})
    if not analysis.sanity.empty:
        wide = []
        for key, part in analysis.sanity.groupby([*group, "label", "role"], sort=False, dropna=False):
            rec = dict(zip([*group, "explainer", "role"], key, strict=True))
            texts = []
            for r in part.to_dict("records"):
                col = "" if r["column"] == r["metric"] else f" [{r['column']}]"
                rec[f"{labels.get(r['metric'], r['metric'])}{col} (flag at >= {r['threshold']:g})"] = r["value"]
                if r["flag"]:
                    texts.append(str(r["flag"]))
            rec["flags"] = "; ".join(texts)
            wide.append(rec)
        out["sanity"] = pd.DataFrame(wide)
    if not analysis.kendall.empty:
        kendall = analysis.kendall.copy()
        out["agreement"] = kendall
    if not analysis.alpha.empty:
        alpha = analysis.alpha.copy()
        alpha["metric"] = [labels.get(m, m) for m in alpha["metric"]]
        out["alpha"] = alpha
    if not analysis.aggregate.empty:
        agg = analysis.aggregate.drop(columns=["explainer", "explainer_params", "cell_id"]).rename(
            columns={"label": "explainer"})
        out["aggregate"] = agg
    if not analysis.per_class.empty:
        pc = analysis.per_class.copy()
        flags = {(*(str(r[c]) for c in group), str(r["explainer"]), str(r["explainer_params"])): str(r["flag"])
                 for r in analysis.sanity.to_dict("records") if r["flag"]} if len(analysis.sanity) else {}
        pc["flags"] = [flags.get((*(str(r[c]) for c in group), str(r["explainer"]), str(r["explainer_params"])), "")
                       for r in pc.to_dict("records")]
        pc["explainer"] = [f"{lab} ({role})" if role != "method" else lab for lab, role in zip(pc["label"], pc["role"],
                                                                                               strict=True)]
        out["per_class"] = pc
    cm = analysis.cross_model
    if not cm.empty:
        prim = cm[cm["metric"] == analysis.primary]
        wide = []
        flags = {(*(str(r[c]) for c in group), str(r["explainer"]), str(r["explainer_params"])): str(r["flag"])
                 for r in analysis.sanity.to_dict("records") if r["flag"]} if len(analysis.sanity) else {}
        for (ds, pert, explainer, params, role), part in prim.groupby(
                ["dataset", "perturbation", "explainer", "explainer_params", "role"], sort=False):
            rec: dict[str, Any] = {"Dataset": ds, "Perturbation": pert, "explainer": explainer, "role": role}
            texts = []
            for r in part.to_dict("records"):
                head = f"{r['model']} ({labels.get(analysis.primary, analysis.primary)})"
                rec[head], rec[f"{head}_ci_low"], rec[f"{head}_ci_high"] = r["mean"], r["ci_low"], r["ci_high"]
                fam = {"dataset": ds, "model": r["model"], "weights": r["weights"], "perturbation": pert,
                       "settings": r["settings"]}
                text = flags.get((*(str(fam.get(c, "")) for c in group), str(explainer), str(params)))
                if text:
                    texts.append(f"{r['model']}: {text}")
            rec["common images"] = int(part["n_common"].iloc[0])
            rec["flags"] = "; ".join(texts)
            wide.append(rec)
        out["cross_model"] = pd.DataFrame(wide)
    return out

def render_latex(df: pd.DataFrame, prov: Mapping[str, Any], failed: pd.DataFrame) -> str:
    headers, rows, align = display_table(df)
    spec = "".join(align)
    out = [
        "% bench leaderboard (LaTeX, booktabs). Needs \\usepackage{booktabs}.",
        *("% " + line.replace("\n", " ").replace("\r", " ") for line in provenance_lines(prov)),
        "\\begin{table}[ht]",
        "\\centering",
        "\\small",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_escape(h) for h in headers) + " \\\\",
        "\\midrule",
    ]
    prev = None
    for row in rows:
        if prev is not None and row[0] != prev:
            out.append("\\midrule")
        prev = row[0]
        out.append(" & ".join(latex_escape(c) for c in row) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}"]
    grids = ", ".join(str(g) for g in prov.get("grids", [])) or "n/a"
    sigmas = ", ".join(f"{s:g}" for s in prov.get("sigmas", [])) or "n/a"
    seeds = ", ".join(str(s) for s in prov.get("seeds", [])) or "n/a"
    runs = ", ".join(prov.get("run_ids", [])) or "n/a"
    settings = ", ".join(prov.get("settings") or {}) or "n/a"
    caption = (
        f"Metric means with {prov.get('ci_label', '95%')} bootstrap CIs (arrow: the better direction), "
        f"ranked by {prov.get('primary_header') or 'the first metric'}; grid {grids}, sigma {sigmas}, seeds {seeds}; "
        f"settings fingerprints {settings} (rows compared only within one; legend in the comments above); "
        f"runs {runs}."
    )
    if not failed.empty:
        caption += f" {len(failed)} failed cell(s) not shown."
    out += [f"\\caption{{{latex_escape(caption)}}}", "\\label{tab:bench-leaderboard}", "\\end{table}"]
    return "\n".join(out) + "\n"
