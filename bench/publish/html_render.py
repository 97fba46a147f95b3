"""The HTML format: one self-contained page (inline CSS and sort script, figures as data URIs).

:func:`render_html` draws the leaderboard page from the same tables as the other formats
(:mod:`bench.publish.tables`); every string from a plugin or a config is escaped.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.publish.classification import classification_tables
from bench.publish.comparisons import primary_comparisons
from bench.publish.provenance import provenance_lines
from bench.publish.tables import (
    COMPARISONS_NOTE,
    comparison_rows,
    display_table,
    failed_rows,
    primary_header,
)
from bench.publish.text import html_escape

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1400px;
color:#1f2328;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
h3{font-size:1.05rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.88rem}
th,td{border:1px solid #d0d7de;padding:.3rem .55rem;vertical-align:top}
th{background:#f6f8fa;text-align:left}td.r{text-align:right;font-variant-numeric:tabular-nums}
tr.ds td{border-top:2px solid #57606a}
tr:nth-child(even) td{background:#fbfcfd}
td.sig{font-weight:600}
.note{color:#57606a;font-size:.85rem}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #d0d7de}
figcaption{color:#57606a;font-size:.85rem}
footer{margin-top:2rem;color:#57606a;font-size:.8rem}footer li{margin:.15rem 0}
"""


# Click a column header to sort (numbers by value, the rest as text). No external resources.
_JS = """
document.querySelectorAll("table").forEach(function (t) {
  t.querySelectorAll("th").forEach(function (th, i) {
    th.style.cursor = "pointer"; th.title = "sort";
    th.addEventListener("click", function () {
      var body = t.tBodies[0], rows = Array.from(body.rows), asc = th.dataset.asc !== "1";
      t.querySelectorAll("th").forEach(function (h) { delete h.dataset.asc; });
      th.dataset.asc = asc ? "1" : "0";
      function key(r) { var s = r.cells[i].textContent.trim(), v = parseFloat(s.replace(/^[\\[<+]/, ""));
        return isNaN(v) ? s.toLowerCase() : v; }
      rows.sort(function (a, b) { var x = key(a), y = key(b);
        if (typeof x !== typeof y) { return typeof x === "number" ? -1 : 1; }
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); });
      rows.forEach(function (r) { r.classList.remove("ds"); body.appendChild(r); });
    });
  });
});
"""


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None,
               *, group_col: int | None = None, classes: Sequence[Sequence[str]] | None = None) -> str:
    """An escaped HTML table; a thicker rule where column ``group_col`` changes value."""
    align = align or ["l"] * len(headers)
    parts = ["<table>", "<thead><tr>" + "".join(f"<th>{html_escape(h)}</th>" for h in headers) + "</tr></thead>",
             "<tbody>"]
    prev = None
    for i, row in enumerate(rows):
        tr_cls = ""
        if group_col is not None:
            if prev is not None and row[group_col] != prev:
                tr_cls = ' class="ds"'
            prev = row[group_col]
        tds = []
        for j, cell in enumerate(row):
            cls = ["r"] if align[j] == "r" else []
            if classes is not None:
                cls += [c for c in classes[i][j].split() if c]
            attr = f' class="{" ".join(cls)}"' if cls else ""
            tds.append(f"<td{attr}>{html_escape(cell)}</td>")
        parts.append(f"<tr{tr_cls}>" + "".join(tds) + "</tr>")
    parts += ["</tbody>", "</table>"]
    return "\n".join(parts)


def png_data_uri(path: str | Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html(df: pd.DataFrame, prov: Mapping[str, Any], failed: pd.DataFrame,
                 comparisons: pd.DataFrame | None, figures: Mapping[str, Sequence[Path]], title: str) -> str:
    headers, rows, align = display_table(df)
    body = [f"<h1>{html_escape(title)}</h1>"]
    body.append(
        '<p class="note">One row per dataset, model, weights, explainer, perturbation and settings '
        f"fingerprint (the latest finished cell wins), sorted by {html_escape(primary_header(df))} "
        "within each dataset; rows are paired and compared only within one settings fingerprint "
        "(legend under Provenance). Each metric column shows its value and bootstrap CI; the arrow "
        "says which way is better (the metrics are described under Provenance).</p>"
    )
    body.append(html_table(headers, rows, align, group_col=0) if rows else "<p><em>No finished cells yet.</em></p>")
    comparisons = primary_comparisons(comparisons, df)
    if comparisons is not None and not comparisons.empty:
        body.append(f"<h2>Paired comparisons ({html_escape(primary_header(df))}, same images)</h2>")
        body.append(comparisons_html(comparisons))
    if "_path" in df.columns and not df.empty:
        tables = classification_tables(df)
        if tables:
            body.append("<h2>Classification (test split)</h2>")
        for t in tables:
            extra = [f"run {t['run_id']}"]
            if t["accuracy"] is not None:
                extra.insert(0, f"accuracy {float(t['accuracy']):.3f}")
            if t["best_epoch"] is not None:
                extra.insert(1, f"best epoch {t['best_epoch']}")
            which = f"weights {t['weights']}" + (f", settings {', '.join(t['settings'])}" if t.get("settings") else "")
            body.append(f"<h3>{html_escape(t['dataset'])} / {html_escape(t['model'])} "
                        f"({html_escape(which)})</h3>")
            body.append(f'<p class="note">{html_escape(", ".join(extra))}</p>')
            body.append(html_table(t["headers"], t["rows"], ["l", "r", "r", "r", "r"]))
    for section, paths in figures.items():
        existing = [Path(p) for p in paths if Path(p).exists()]
        if not existing:
            continue
        body.append(f"<h2>{html_escape(section)}</h2>")
        for p in existing:
            body.append(
                f'<figure><img alt="{html_escape(p.stem)}" src="{png_data_uri(p)}">'
                f"<figcaption>{html_escape(p.name)}</figcaption></figure>"
            )
    if not failed.empty:
        body.append("<h2>Failed cells (not on the leaderboard)</h2>")
        f_headers, f_rows, _ = failed_rows(failed, error_chars=400)
        body.append(html_table(f_headers, f_rows))
    body.append("<footer><h2>Provenance</h2><ul>"
                + "".join(f"<li>{html_escape(line)}</li>" for line in provenance_lines(prov))
                + "</ul></footer>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{html_escape(title)}</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + f"\n<script>{_JS}</script>\n"
        "</body>\n</html>\n"
    )


def comparisons_html(comparisons: pd.DataFrame) -> str:
    headers, rows, align = comparison_rows(comparisons)
    classes = [["sig" if j == len(r) - 1 and r[-1] == "yes" else "" for j in range(len(r))] for r in rows]
    note = f'<p class="note">{html_escape(COMPARISONS_NOTE)}</p>'
    return html_table(headers, rows, align, group_col=1, classes=classes) + "\n" + note
