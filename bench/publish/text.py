"""Text of the tables: one number format, CIs, costs, escaping, Markdown/plain-text tables.

One number format everywhere (terminal, Markdown, HTML, LaTeX, report):

- scores (metrics, their CIs, gains, differences, means, recall, F1, accuracy, precision):
  :data:`DIGITS` fixed decimals, never scientific notation, never ``-0.000``
  (:func:`format_number`; :func:`format_ci` for ``[lo, hi]``);
- p-values: the same decimals, ``<0.001`` below them (:func:`format_p`);
- costs and times (seconds, forward passes per map): 3 significant digits, positional
  (:func:`format_cost`).

Escaping: :func:`md_cell` keeps a Markdown cell on one line and in its column and stops a
plugin's string from becoming markup, without HTML entities (a reader of the ``.md`` file
or the terminal sees ``<0.001``, not ``&lt;0.001``); :func:`latex_escape` and
:func:`html_escape` for the other formats. Nothing here reads a frame.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Decimals of every score (metric values, CIs, gains, p-values, classification scores).
DIGITS = 3

__all__ = [
    "DIGITS",
    "as_float",
    "format_ci",
    "format_cost",
    "format_number",
    "format_p",
    "format_value_ci",
    "html_escape",
    "latex_escape",
    "markdown_table",
    "md_cell",
    "plain_table",
    "short_text",
]


def as_float(value: Any) -> float:
    """``float(value)``; NaN when it is not a number (None, "", a string)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def format_number(value: Any, digits: int = DIGITS, signed: bool = False) -> str:
    """``digits`` fixed decimals (``""`` for a missing value); a value that rounds to zero is
    ``0.000`` (``+0.000`` when ``signed``), never ``-0.000`` nor scientific notation."""
    v = as_float(value)
    if math.isnan(v):
        return ""
    if math.isinf(v):
        return ("+" if signed and v > 0 else "") + ("inf" if v > 0 else "-inf")
    if round(v, digits) == 0:
        v = 0.0
    return f"{v:{'+' if signed else ''}.{digits}f}"


def format_ci(lo: Any, hi: Any, digits: int = DIGITS) -> str:
    """``[lo, hi]`` in :func:`format_number`'s format; ``""`` when either end is missing."""
    a, b = as_float(lo), as_float(hi)
    if math.isnan(a) or math.isnan(b):
        return ""
    return f"[{format_number(a, digits)}, {format_number(b, digits)}]"


def format_value_ci(value: Any, lo: Any, hi: Any, digits: int = DIGITS, signed: bool = False) -> str:
    """``value [lo, hi]``; the value alone when the CI is missing; ``""`` without a value."""
    text = format_number(value, digits, signed=signed)
    interval = format_ci(lo, hi, digits)
    return f"{text} {interval}" if text and interval else text


def format_p(p: Any, digits: int = DIGITS) -> str:
    """A p-value with ``digits`` decimals, ``<0.001`` below the smallest one shown."""
    v = as_float(p)
    if math.isnan(v):
        return ""
    floor = 10.0 ** -digits
    return f"<{floor:.{digits}f}" if v < floor else f"{v:.{digits}f}"


def format_cost(value: Any) -> str:
    """A cost (seconds, forward passes per map) with 3 significant digits, positional
    (``0.00597``, ``2.5``, ``1230``); ``""`` when unknown."""
    v = as_float(value)
    if not math.isfinite(v):
        return ""
    if v == 0:
        return "0"
    return np.format_float_positional(v, precision=3, unique=False, fractional=False, trim="-")


def short_text(text: Any, n: int = 160) -> str:
    """``text`` on one line, cut to ``n`` characters (an ellipsis marks the cut)."""
    s = " ".join(str(text or "").split())
    return s if len(s) <= n else s[: n - 1] + "…"


# ---------------------------------------------------------------------------------------
# escaping
# ---------------------------------------------------------------------------------------
#: ``<`` that could open a tag (``<b>``, ``</x>``, ``<!--``, ``<?``), ``&`` that could open an
#: entity (``&amp;``, ``&#60;``): a backslash keeps them literal in CommonMark/GitHub Markdown.
_MD_MARKUP = re.compile(r"<(?=[A-Za-z/!?])|&(?=#?\w+;)|>")


def md_cell(text: Any) -> str:
    """A Markdown table cell: one line, no column break, no raw HTML, no HTML entity.

    Backslashes and ``|`` are escaped; ``<`` before a tag name, ``>`` and ``&`` before an
    entity get a backslash (CommonMark shows them literally), so ``<0.001`` stays readable.
    """
    s = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return _MD_MARKUP.sub(lambda m: "\\" + m.group(0), s)


_LATEX_SPECIAL = {
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "\n": " ",
    "\r": " ",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX_SPECIAL))


def latex_escape(text: Any) -> str:
    """Escape LaTeX's special characters (& % $ # _ { } ~ ^ \\, and < > newlines) in one pass."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group(0)], str(text))


def html_escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


# ---------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------
def _colalign(align: Sequence[str] | None) -> list[str] | None:
    return None if align is None else ["right" if a == "r" else "left" for a in align]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None,
                   *, pad: bool = True) -> str:
    """A GitHub-style Markdown table; every cell through :func:`md_cell`.

    ``pad``: columns padded to their widest cell (readable as plain text); ``False``: one space
    around each cell (the same table once rendered, a fraction of the bytes where a column
    holds a few long cells).
    """
    if not pad:
        aligns = list(align) if align is not None else ["l"] * len(headers)
        rule = ["---:" if a == "r" else "---" for a in aligns]
        lines = ["| " + " | ".join(md_cell(h) for h in headers) + " |", "| " + " | ".join(rule) + " |"]
        lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
        return "\n".join(lines)
    from tabulate import tabulate

    return tabulate(
        [[md_cell(c) for c in row] for row in rows],
        headers=[md_cell(h) for h in headers],
        tablefmt="github",
        colalign=_colalign(align),
        disable_numparse=True,
    )


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None,
                *, gap: int = 2) -> str:
    """A plain-text table for a terminal: columns padded to their widest cell, ``gap`` spaces
    apart, a dashed rule under the headers; no markup, no escaping (each cell on one line)."""
    def one_line(c: Any) -> str:
        return " ".join(str(c).split())

    head = [one_line(h) for h in headers]
    body = [[one_line(c) for c in row] for row in rows]
    align = list(align) if align is not None else ["l"] * len(head)
    widths = [max([len(head[j]), *(len(r[j]) for r in body)]) for j in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align, strict=True)]
        return (" " * gap).join(parts).rstrip()

    return "\n".join([line(head), (" " * gap).join("-" * w for w in widths), *(line(r) for r in body)])
