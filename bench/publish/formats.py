"""The leaderboard as text: Markdown (GitHub style), CSV, JSON (schema-versioned), HTML, LaTeX.

:func:`render` turns a :func:`bench.publish.collect.collect` frame into one format; the
human formats draw :mod:`bench.publish.tables`' tables, the machine formats (CSV, JSON) the
frame's public columns (:func:`bench.publish.collect.public`). HTML is
:func:`bench.publish.html_render.render_html`'s page.
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
from bench.publish.collect import FAILED_COLUMNS, empty_frame, metric_columns_of, public
from bench.publish.comparisons import primary_comparisons
from bench.publish.html_render import render_html
from bench.publish.provenance import provenance, provenance_lines
from bench.publish.tables import (
    comparisons_markdown,
    display_table,
    failed_markdown,
    primary_header,
)
from bench.publish.text import latex_escape, markdown_table, md_cell

#: Version 2: the metric columns come from the metrics the records hold
#: (:func:`bench.publish.collect.columns_of`).
SCHEMA = "bench.publish.leaderboard/2"
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
) -> str:
    """The leaderboard ``df`` (from :func:`collect`) as text in ``fmt``.

    ``fmt``: md, csv, json, html or tex (``latex`` accepted). ``provenance_info``
    defaults to :func:`provenance` of ``df``; ``failed`` to ``df.attrs["failed"]``.
    ``comparisons`` (from :func:`bench.publish.comparisons.paired_comparisons`) are rendered in md,
    json and html; ``figures`` (``{section title: [png paths]}``) are embedded in html
    as base64 data URIs.
    """
    fmt = normalise_format(fmt)
    prov = dict(provenance_info) if provenance_info is not None else provenance(df)
    if failed is None:
        failed = df.attrs.get("failed")
    if failed is None:
        failed = empty_frame(FAILED_COLUMNS)
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
            "comparisons": json_safe(comparisons) if comparisons is not None else [],
            "figures": {section: [Path(p).name for p in paths] for section, paths in (figures or {}).items()},
            "provenance": json_safe(prov),
        }
        return json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n"
    if fmt == "md":
        return render_markdown(df, prov, failed, comparisons, title)
    if fmt == "html":
        return render_html(df, prov, failed, comparisons, figures or {}, title)
    return render_latex(df, prov, failed)



def render_markdown(df: pd.DataFrame, prov: Mapping[str, Any], failed: pd.DataFrame,
               comparisons: pd.DataFrame | None, title: str) -> str:
    headers, rows, align = display_table(df)
    out = [f"# {md_cell(title)}", ""]
    if rows:
        out += [markdown_table(headers, rows, align), ""]
    else:
        out += ["_No finished cells yet._", ""]
    comparisons = primary_comparisons(comparisons, df)
    if comparisons is not None and not comparisons.empty:
        out += [f"## Paired comparisons ({md_cell(primary_header(df))}, same images)", "",
                comparisons_markdown(comparisons), ""]
    if not failed.empty:
        out += ["## Failed cells (not on the leaderboard)", "", failed_markdown(failed), ""]
    out += ["## Provenance", ""] + [f"- {md_cell(line)}" for line in provenance_lines(prov)]
    return "\n".join(out) + "\n"



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
