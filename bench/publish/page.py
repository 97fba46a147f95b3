"""The leaderboard as one self-contained HTML page: :func:`render_page`.

The page takes plain inputs (the rows frame :func:`bench.publish.collect.collect`
returns, the provenance dict, the failed cells, the paired comparisons, figure PNG paths,
and optional tables: ranks with intervals, metric power, metric agreement, per-class values,
classification reports) and returns one HTML string that makes no request of its own: no
external resource (a Content-Security-Policy says so to the browser), figures inlined as
``data:`` URIs.

What a reader gets:

- one section per comparable group (dataset, then model, weights, perturbation and
  settings fingerprint: rows are only ever compared within one), listed in an overview
  table at the top with each group's best method;
- in each section the methods ranked by the primary metric, and the controls below them as
  reference rows (shaded, marked ``ref``, never ranked, never moved by sorting);
- every column sortable by a click on its header (numbers sort on their values, carried in
  ``data-sort``; missing values last either way; ``aria-sort`` says the direction);
- at 1400 px nothing is clipped: a wide table scrolls inside its own box
  (``overflow-x: auto``) with the explainer column kept in view, and a number never wraps
  (``white-space: nowrap``): a value sits over its interval, each on one line;
- per-class values where a class had no correctly classified image say so in words;
- table captions and header scopes, alt text on every image.

Numbers are in the one format of :mod:`bench.publish.text`. Every string is escaped with :func:`html.escape` (plugin names are validated safe at
registration; they are escaped anyway). Nothing here reads run folders or knows a plugin.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.pipeline.controls import is_control
from bench.publish.text import DIGITS, format_ci, format_cost, format_number, format_p
from bench.stats import MEAN_TEST

__all__ = ["GROUP_COLUMNS", "render_page"]

#: A section of the page is one value of these (the columns the rows frame has of them).
GROUP_COLUMNS: tuple[str, ...] = ("dataset", "model", "weights", "perturbation", "settings")
_MODEL_COLUMNS: tuple[str, ...] = ("dataset", "model", "weights")
_INTERVAL_SUFFIXES: tuple[tuple[str, str], ...] = (("_ci_low", "_ci_high"), ("_low", "_high"),
                                                    ("_lo", "_hi"))
#: The width the page's content has at 1400 px (a wider figure is scaled down to it).
_FIT_WIDTH = 1350
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
         ".gif": "image/gif", ".webp": "image/webp"}


# ---------------------------------------------------------------------------------------
# numbers and text
# ---------------------------------------------------------------------------------------
def _esc(text: Any) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _num(value: Any) -> float:
    """A float, NaN for anything missing or not a number (None, pd.NA, "", text)."""
    if value is None or value is pd.NA:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _fmt(value: Any, digits: int = DIGITS, signed: bool = False) -> str:
    return format_number(value, digits, signed=signed)


def _int_text(value: Any) -> str:
    v = _num(value)
    return "" if not math.isfinite(v) else str(int(v))


#: Significant digits of a numeric cell's ``data-sort`` value: far more than any cell shows (so
#: the order is the numbers' order), far fewer than ``repr``'s 17 (the page is a tenth smaller).
SORT_DIGITS = 7


def _sort_key(value: Any) -> str:
    """The ``data-sort`` value of a numeric cell: the number to :data:`SORT_DIGITS` significant
    digits (``10``, ``0.4655673``, ``1.5e-05``), "" when missing."""
    v = _num(value)
    return "" if math.isnan(v) else format(v, f".{SORT_DIGITS}g")


def _text(value: Any) -> str:
    return "" if _missing(value) else str(value)


# ---------------------------------------------------------------------------------------
# a small table model: columns, cells, one or more bodies
# ---------------------------------------------------------------------------------------
@dataclass
class _Col:
    key: str
    header: str
    numeric: bool = False
    sub: str = ""  # a small second header line ("95% CI")
    title: str = ""  # the header's tooltip (a metric's definition)
    first: str = "ascending"  # the direction of the first click
    family: str | None = None  # a spanning header above (metric family)
    row_header: bool = False  # this column's cells are <th scope="row">
    cls: str = ""


@dataclass
class _Cell:
    inner: str = ""  # escaped HTML
    sort: str | None = None  # data-sort
    cls: str = ""


@dataclass
class _Body:
    rows: list[list[_Cell]]
    cls: str = ""
    label: str = ""  # a full-width row heading the body (controls)
    pinned: bool = False  # sorting leaves it alone
    row_cls: list[str] = field(default_factory=list)


def _num_cell(value: Any, text: str | None = None, interval: str = "", sort: Any = None) -> _Cell:
    shown = text if text is not None else _fmt(value)
    # the value is a span of its own only where an interval follows it (a block line below)
    inner = (f'<span class="v">{_esc(shown)}</span><span class="ci">{_esc(interval)}</span>' if interval
             else _esc(shown))
    return _Cell(inner, _sort_key(value if sort is None else sort), "num")


def _text_cell(text: Any, cls: str = "", sort: str | None = None) -> _Cell:
    return _Cell(f'<span class="t">{_esc(text)}</span>' if _text(text) else "", sort, cls)


def _table(cols: Sequence[_Col], bodies: Sequence[_Body], *, caption: str = "", cls: str = "",
           sortable: bool = True) -> str:
    """An accessible table in its own horizontal scroll box; sortable headers are buttons."""
    families = [c.family for c in cols]
    two_rows = any(f for f in families)
    classes = " ".join(x for x in ("sortable" if sortable else "", cls) if x)
    out = ['<div class="tablebox">', f'<table class="{classes}">' if classes else "<table>"]
    if caption:
        out.append(f"<caption>{caption}</caption>")

    def head(i: int, c: _Col, extra: str = "") -> str:
        # text columns and the first click ascending are the script's defaults: said only otherwise
        attrs = ['scope="col"', f'data-key="{_esc(c.key)}"', f'data-col="{i}"']
        if c.numeric:
            attrs.append('data-type="num"')
        if c.first != "ascending":
            attrs.append(f'data-first="{c.first}"')
        if c.title:
            attrs.append(f'title="{_esc(c.title)}"')
        if c.cls:
            attrs.append(f'class="{_esc(c.cls)}"')
        label = _esc(c.header) + (f'<span class="sub">{_esc(c.sub)}</span>' if c.sub else "")
        if sortable:
            label = f'<button type="button" class="sort" aria-label="Sort by {_esc(c.header)}">{label}</button>'
        return f"<th {' '.join(attrs)}{extra}>{label}</th>"

    if two_rows:
        top, bottom, i = [], [], 0
        while i < len(cols):
            fam = families[i]
            if not fam:
                top.append(head(i, cols[i], ' rowspan="2"'))
                i += 1
                continue
            j = i
            while j < len(cols) and families[j] == fam:
                bottom.append(head(j, cols[j]))
                j += 1
            top.append(f'<th scope="colgroup" colspan="{j - i}" class="family">{_esc(fam)}</th>')
            i = j
        out.append("<thead><tr>" + "".join(top) + "</tr><tr>" + "".join(bottom) + "</tr></thead>")
    else:
        out.append("<thead><tr>" + "".join(head(i, c) for i, c in enumerate(cols)) + "</tr></thead>")
    for body in bodies:
        bcls = " ".join(x for x in (body.cls, "pinned" if body.pinned else "") if x)
        out.append(f'<tbody class="{bcls}">' if bcls else "<tbody>")
        if body.label:
            out.append(f'<tr class="label"><th scope="rowgroup" colspan="{len(cols)}">'
                       f'<span class="stick">{body.label}</span></th></tr>')
        for r, row in enumerate(body.rows):
            rcls = body.row_cls[r] if r < len(body.row_cls) else ""
            tds = []
            for c, cell in zip(cols, row, strict=True):
                tag = "th" if c.row_header else "td"
                attrs = ' scope="row"' if c.row_header else ""
                ccls = " ".join(x for x in (cell.cls, c.cls) if x)
                if ccls:
                    attrs += f' class="{_esc(ccls)}"'
                # a text cell that is its text alone sorts by it without a data-sort copy
                if cell.sort is not None and not (not c.numeric and cell.inner in (
                        _esc(cell.sort), f'<span class="name">{_esc(cell.sort)}</span>',
                        f'<span class="t">{_esc(cell.sort)}</span>')):
                    attrs += f' data-sort="{_esc(cell.sort)}"'
                tds.append(f"<{tag}{attrs}>{cell.inner}</{tag}>")
            out.append((f'<tr class="{_esc(rcls)}">' if rcls else "<tr>") + "".join(tds) + "</tr>")
        out.append("</tbody>")
    out += ["</table>", "</div>"]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------
# what the rows frame says
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Metric:
    id: str
    label: str
    higher_is_better: bool | None
    family: str = ""
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def header(self) -> str:
        if self.higher_is_better is None:
            return self.label
        return f"{self.label}\u00a0{'↑' if self.higher_is_better else '↓'}"


def _metrics_of(rows: pd.DataFrame, provenance: Mapping[str, Any]) -> list[_Metric]:
    """The metric columns: ``rows.attrs["metrics"]`` (collect's), else the provenance's, else
    every column ``X`` that has ``X_ci_low`` and ``X_ci_high`` beside it."""
    specs = rows.attrs.get("metrics") or provenance.get("metrics") or []
    out = []
    for s in specs:
        if isinstance(s, Mapping) and s.get("id") in rows.columns:
            out.append(_Metric(id=str(s["id"]), label=str(s.get("label") or s["id"]),
                               higher_is_better=s.get("higher_is_better"), family=str(s.get("family") or ""),
                               description=str(s.get("description") or ""),
                               params=dict(s.get("params") or {})))
    if out or specs:
        return out
    return [_Metric(id=str(c), label=str(c), higher_is_better=None) for c in rows.columns
            if f"{c}_ci_low" in rows.columns and f"{c}_ci_high" in rows.columns]


def _primary_of(rows: pd.DataFrame, metrics: Sequence[_Metric], provenance: Mapping[str, Any]) -> _Metric | None:
    chosen = rows.attrs.get("primary") or provenance.get("primary")
    if not chosen and "primary" in rows.columns and len(rows):
        chosen = next((str(v) for v in rows["primary"] if isinstance(v, str) and v), "")
    for m in metrics:
        if m.id == chosen:
            return m
    return metrics[0] if metrics else None


def _ordered_metrics(metrics: Sequence[_Metric], primary: _Metric | None) -> list[_Metric]:
    """Grouped by family (the primary's family first), the primary first in its family."""
    families: list[str] = []
    if primary is not None:
        families.append(primary.family)
    for m in metrics:
        if m.family not in families:
            families.append(m.family)
    out = []
    for fam in families:
        members = [m for m in metrics if m.family == fam]
        members.sort(key=lambda m: 0 if primary is not None and m.id == primary.id else 1)
        out += members
    return out


def _role(row: Mapping[str, Any]) -> str:
    role = row.get("role")
    return role if isinstance(role, str) and role else "method"


def _group_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in GROUP_COLUMNS if c in frame.columns]


@dataclass
class _Group:
    index: int
    key: dict[str, str]
    rows: pd.DataFrame

    @property
    def anchor(self) -> str:
        return f"group-{self.index}"

    def title(self) -> str:
        return str(self.key.get("model", "")) or "all rows"

    def meta(self) -> str:
        parts = []
        if "weights" in self.key:
            parts.append(f"weights {self.key['weights']}")
        if "perturbation" in self.key:
            parts.append(f"perturbation {self.key['perturbation']}")
        if "settings" in self.key:
            parts.append(f"settings {self.key['settings']}")
        return " · ".join(parts)

    def matches(self, frame: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.Series:
        """Which rows of another frame belong to this group (on the group columns it has)."""
        cols = [c for c in (columns or self.key) if c in frame.columns and c in self.key]
        mask = pd.Series(True, index=frame.index)
        for c in cols:
            mask &= frame[c].astype(str) == self.key[c]
        return mask


def _groups(rows: pd.DataFrame) -> list[_Group]:
    cols = _group_columns(rows)
    if rows.empty:
        return []
    if not cols:
        return [_Group(1, {}, rows)]
    out = []
    keys = rows[cols].astype(str)
    seen: dict[tuple[str, ...], list[int]] = {}
    for pos, key in enumerate(keys.itertuples(index=False, name=None)):
        seen.setdefault(tuple(key), []).append(pos)
    # datasets in the frame's order, each dataset's groups in the frame's order
    datasets: list[str] = []
    for key in seen:
        ds = key[cols.index("dataset")] if "dataset" in cols else ""
        if ds not in datasets:
            datasets.append(ds)
    ordered = sorted(seen, key=lambda k: datasets.index(k[cols.index("dataset")] if "dataset" in cols else ""))
    for i, key in enumerate(ordered, start=1):
        out.append(_Group(i, dict(zip(cols, key, strict=True)), rows.iloc[seen[key]]))
    return out


def _split_roles(group: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    controls = [is_control(_role(r)) for r in group.to_dict("records")]
    mask = pd.Series(controls, index=group.index, dtype=bool)
    return group[~mask], group[mask]


def _ranks(values: Sequence[float], higher_is_better: bool | None) -> list[int | None]:
    """Competition ranks (1, 2, 2, 4) of the methods by the primary metric; None where missing."""
    higher = True if higher_is_better is None else bool(higher_is_better)
    out: list[int | None] = []
    for v in values:
        if math.isnan(v):
            out.append(None)
            continue
        better = sum(1 for w in values if not math.isnan(w) and (w > v if higher else w < v))
        out.append(1 + better)
    return out


def _ambiguous(frame: pd.DataFrame) -> set[str]:
    if "explainer_params" not in frame.columns or frame.empty:
        return set()
    counts = frame.groupby("explainer")["explainer_params"].nunique()
    return {str(e) for e, n in counts.items() if n > 1}


def _flags(row: Mapping[str, Any]) -> list[str]:
    out = []
    sanity = row.get("sanity_flags")
    if isinstance(sanity, str) and sanity.strip():
        out += [s.strip() for s in sanity.split(";") if s.strip()]
    constant, n = _num(row.get("constant_heatmaps")), _num(row.get("n_images"))
    if math.isfinite(constant) and constant > 0:
        total = f"/{int(n)}" if math.isfinite(n) else ""
        out.append(f"{int(constant)}{total} constant heatmaps: order is arbitrary")
    notes = row.get("metric_notes")
    if isinstance(notes, str) and notes.strip():
        out += [s.strip() for s in notes.split(";") if s.strip()]
    return out


# ---------------------------------------------------------------------------------------
# the sections
# ---------------------------------------------------------------------------------------
def _model_line(group: pd.DataFrame) -> str:
    parts = []
    for col, label in (("recall_macro", "test recall (macro)"), ("f1_macro", "F1 (macro)"),
                       ("accuracy", "accuracy")):
        if col not in group.columns:
            continue
        values = sorted({_fmt(v) for v in group[col] if _fmt(v)})
        if values:
            parts.append(f"{label} {' / '.join(values)}")
    if "n_images" in group.columns:
        ns = sorted({int(v) for v in (_num(x) for x in group["n_images"]) if math.isfinite(v)})
        if ns:
            what = "-".join(str(n) for n in (ns[0], ns[-1])) if len(ns) > 1 else str(ns[0])
            parts.append(f"{what} correctly classified test images explained")
    return " · ".join(parts)


def _main_table(group: _Group, metrics: Sequence[_Metric], primary: _Metric | None, ci: str) -> str:
    methods, controls = _split_roles(group.rows)
    shown = [m for m in metrics if m.id in group.rows.columns and group.rows[m.id].notna().any()]
    ambiguous = _ambiguous(group.rows)
    records = group.rows.to_dict("records")
    has_flags = any(_flags(r) for r in records)
    has_gain = "gain_over_baseline" in group.rows.columns and group.rows["gain_over_baseline"].notna().any()
    refs = sorted({str(b) for b in group.rows.get("baseline", pd.Series(dtype=object)) if isinstance(b, str) and b})
    cols = [
        _Col("rank", "Rank", numeric=True, title=f"Rank among the methods by {primary.header if primary else '-'} "
             "(controls are reference rows, not ranked)"),
        _Col("explainer", "Explainer", row_header=True, cls="sticky"),
    ]
    if ambiguous:
        cols.append(_Col("explainer_params", "Explainer params", title="fingerprint of the explainer's parameters "
                         "(legend under Provenance)"))
    for m in shown:
        cols.append(_Col(m.id, m.header, numeric=True, sub=f"{ci} CI", title=m.description or m.id,
                         first="ascending" if m.higher_is_better is False else "descending",
                         family=m.family or "metric", cls="primary" if primary and m.id == primary.id else ""))
    if has_gain:
        ref = f"Gain over {refs[0]}" if len(refs) == 1 else "Gain over control"
        cols.append(_Col("gain_over_baseline", ref, numeric=True,
                         sub=f"{primary.header if primary else ''} {ci} CI".strip(), first="descending",
                         title="the primary metric minus that of the reference control, same images"
                         + ("" if primary is None or primary.higher_is_better is not False else " (lower is better)")))
    cols += [
        _Col("seconds_per_map", "s/map", numeric=True, title="seconds per heatmap"),
        _Col("passes_per_map", "passes/map", numeric=True, title="forward-pass equivalents per heatmap"),
        _Col("n_images", "n images", numeric=True, title="explained (correctly classified) test images"),
        _Col("evaluate_seconds", "Eval time (s)", numeric=True, title="seconds the metrics' curves took"),
    ]
    if has_flags:
        cols.append(_Col("flags", "Flags", cls="flags"))

    ranks = _ranks([_num(v) for v in methods[primary.id]] if primary is not None and primary.id in methods.columns
                   else [math.nan] * len(methods), primary.higher_is_better if primary else None)
    boot = "rank" in methods.columns and any(math.isfinite(_num(v)) for v in methods["rank"])
    has_best = boot and "p_best" in methods.columns
    if boot:
        cols[0] = _Col("rank", "Rank", numeric=True, sub=f"{ci} interval",
                       title=f"Rank among the methods by {primary.header if primary else '-'} (ties averaged), "
                       "with its paired-bootstrap interval (controls are reference rows, not ranked)")
    if has_best:
        cols.insert(1, _Col("p_best", "P(best)", numeric=True, first="descending",
                            title="share of bootstrap resamples of the images where the method is the best"))

    def cells(r: Mapping[str, Any], rank: int | None, control: bool) -> list[_Cell]:
        name = _esc(r.get("explainer", ""))
        explainer = f'<span class="name">{name}</span>'
        if control:
            explainer += f' <span class="role">{_esc(_role(r))}</span>'
        if control:
            first = _Cell('<span class="ref">ref</span>', "", "num")
        elif boot:
            rk = _num(r.get("rank"))
            lo, hi = _num(r.get("rank_low")), _num(r.get("rank_high"))
            first = _num_cell(rk, text=_rank_text(rk) or "–",
                              interval=f"[{_rank_text(lo)}, {_rank_text(hi)}]" if math.isfinite(lo) and
                              math.isfinite(hi) else "")
        else:
            first = _num_cell(rank, text=str(rank) if rank is not None else "–")
        row = [first]
        if has_best:
            row.append(_Cell("", "", "num") if control else _num_cell(r.get("p_best"), text=_fmt(r.get("p_best"), 2)))
        row.append(_Cell(explainer, str(r.get("explainer", "")).lower()))
        if ambiguous:
            row.append(_text_cell(r.get("explainer_params", "") if str(r.get("explainer")) in ambiguous else ""))
        for m in shown:
            row.append(_num_cell(r.get(m.id), interval=format_ci(r.get(f"{m.id}_ci_low"), r.get(f"{m.id}_ci_high"))))
        if has_gain:
            gain = r.get("gain_over_baseline")
            row.append(_num_cell(gain, text=_fmt(gain, signed=True),
                                 interval=format_ci(r.get("gain_ci_low"), r.get("gain_ci_high"))))
        row += [_num_cell(r.get("seconds_per_map"), text=format_cost(r.get("seconds_per_map"))),
                _num_cell(r.get("passes_per_map"), text=format_cost(r.get("passes_per_map"))),
                _num_cell(r.get("n_images"), text=_int_text(r.get("n_images"))),
                _num_cell(r.get("evaluate_seconds"), text=format_cost(r.get("evaluate_seconds")))]
        if has_flags:
            flags = _flags(r)
            if flags:
                items = "".join(f"<li>{_esc(f)}</li>" for f in flags)
                summary = f"{len(flags)} note{'s' if len(flags) > 1 else ''}"
                row.append(_Cell(f"<details><summary>{summary}</summary><ul>{items}</ul></details>", str(len(flags))))
            else:
                row.append(_Cell("", "0"))
        return row

    bodies = [_Body([cells(r, k, False) for r, k in zip(methods.to_dict("records"), ranks, strict=True)],
                    cls="methods")]
    if len(controls):
        bodies.append(_Body([cells(r, None, True) for r in controls.to_dict("records")], cls="controls",
                            label="Controls: reference rows, not ranked (sorting leaves them here)", pinned=True))
    what = f"ranked by {_esc(primary.header)}" if primary is not None else "no metric"
    powers = {str(v) for v in group.rows.get("power", pd.Series(dtype=object)) if isinstance(v, str) and v}
    if powers and powers != {"ranks the controls correctly"}:
        what += f" (no power here: the controls' verdict on this metric is {_esc(', '.join(sorted(powers)))})"
    caption = (f"{_esc(group.key.get('dataset', ''))} / {_esc(group.title())}: {len(methods)} method"
               f"{'s' if len(methods) != 1 else ''} {what}"
               + (f", {len(controls)} control{'s' if len(controls) != 1 else ''}" if len(controls) else ""))
    return _table(cols, bodies, caption=caption, cls="leaderboard")


def _rank_text(v: float) -> str:
    if not math.isfinite(v):
        return ""
    return f"{v:.0f}" if v == round(v) else f"{v:.2f}".rstrip("0").rstrip(".")


def _interval_pairs(frame: pd.DataFrame) -> dict[str, tuple[str, str]]:
    out = {}
    for c in frame.columns:
        for lo, hi in _INTERVAL_SUFFIXES:
            if f"{c}{lo}" in frame.columns and f"{c}{hi}" in frame.columns:
                out[str(c)] = (f"{c}{lo}", f"{c}{hi}")
                break
    return out


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _generic_table(frame: pd.DataFrame, *, drop: Sequence[str] = (), caption: str = "",
                   row_header: str | None = None) -> str:
    """Any frame as a sortable table: ``X`` with ``X_ci_low``/``X_ci_high`` (or ``_low``/``_high``)
    beside it shows as a value over its interval; integers as integers, other numbers in the fewest
    decimals (at most the scores') that show the whole column exactly."""
    pairs = _interval_pairs(frame)
    hidden = set(drop) | {c for lo_hi in pairs.values() for c in lo_hi}
    columns = [c for c in frame.columns if c not in hidden and not str(c).startswith("_")]
    if row_header is None:
        row_header = next((c for c in ("explainer", "method", "metric", "name") if c in columns), None)
    cols, kinds = [], []
    for c in columns:
        s = frame[c]
        numeric = _is_numeric(s)
        kinds.append("int" if numeric and pd.api.types.is_integer_dtype(s) else "num" if numeric
                     else "bool" if pd.api.types.is_bool_dtype(s) else "text")
        cols.append(_Col(str(c), str(c).replace("_", " "), numeric=numeric, row_header=c == row_header,
                         sub="interval" if c in pairs else ""))
    digits = {c: _digits(frame, [c, *pairs.get(str(c), ())]) for c, k in zip(columns, kinds, strict=True)
              if k == "num"}
    rows = []
    for r in frame.to_dict("records"):
        row = []
        for c, kind in zip(columns, kinds, strict=True):
            v = r.get(c)
            if kind == "int":
                row.append(_num_cell(v, text=_int_text(v)))
            elif kind == "num":
                lo_hi, d = pairs.get(str(c)), digits[c]
                row.append(_num_cell(v, text=_fixed(v, d),
                                     interval=f"[{_fixed(r.get(lo_hi[0]), d)}, {_fixed(r.get(lo_hi[1]), d)}]"
                                     if lo_hi and _fixed(r.get(lo_hi[0]), d) and _fixed(r.get(lo_hi[1]), d) else ""))
            elif kind == "bool":
                row.append(_text_cell("" if _missing(v) else ("yes" if v else "no")))
            elif isinstance(v, float | int) and not isinstance(v, bool):
                row.append(_num_cell(v))
            else:
                row.append(_text_cell(_text(v) if not isinstance(v, Mapping | list | tuple)
                                      else json.dumps(v, sort_keys=True, default=str)))
        rows.append(row)
    return _table(cols, [_Body(rows)], caption=caption)


def _digits(frame: pd.DataFrame, columns: Sequence[str], most: int = DIGITS) -> int:
    """The fewest decimals (at most ``most``) that show every finite value of the columns exactly
    (ranks 1.5 -> 1, probabilities 0.25 -> 2, anything else -> ``most``): one format per column."""
    values = [v for c in columns for v in (_num(x) for x in frame[c]) if math.isfinite(v)]
    for d in range(most):
        if all(abs(v - round(v, d)) < 1e-9 * max(1.0, abs(v)) for v in values):
            return d
    return most


def _fixed(value: Any, digits: int) -> str:
    return format_number(value, digits)


def _matrix_table(matrix: pd.DataFrame, caption: str) -> str:
    """A square frame (metric x metric): row headers, cells tinted by value in [-1, 1]."""
    cols = [_Col("row", "", row_header=True)] + [_Col(str(c), str(c), numeric=True) for c in matrix.columns]
    rows = []
    for idx, r in matrix.iterrows():
        row = [_Cell(f'<span class="name">{_esc(idx)}</span>', str(idx))]
        for c in matrix.columns:
            v = _num(r[c])
            cell = _num_cell(v, text=_fmt(v, 2))
            if math.isfinite(v):
                a = min(1.0, abs(v)) * 0.55
                tint = f"rgba(9,105,218,{a:.2f})" if v >= 0 else f"rgba(207,34,46,{a:.2f})"
                cell.inner = f'<span class="v" style="background:{tint}">{_esc(_fmt(v, 2))}</span>'
            row.append(cell)
        rows.append(row)
    return _table(cols, [_Body(rows)], caption=caption, cls="matrix")


def _square(frame: pd.DataFrame) -> pd.DataFrame:
    """A long frame of pairs (``metric_a``, ``metric_b``, ``tau``) as its symmetric square matrix."""
    metrics = list(dict.fromkeys([*map(str, frame["metric_a"]), *map(str, frame["metric_b"])]))
    out = pd.DataFrame(math.nan, index=metrics, columns=metrics)
    for m in metrics:
        out.loc[m, m] = 1.0
    for a, b, tau in zip(frame["metric_a"], frame["metric_b"], frame["tau"], strict=True):
        out.loc[str(a), str(b)] = out.loc[str(b), str(a)] = _num(tau)
    return out


def _is_square(frame: pd.DataFrame) -> bool:
    return len(frame) > 0 and [str(i) for i in frame.index] == [str(c) for c in frame.columns]


def _per_class_block(frame: pd.DataFrame, primary: _Metric | None, labels: Mapping[str, str] | None = None) -> str:
    """Explainers x classes, ``mean [CI]`` and n; a class nobody scored is named, not drawn as n=0.

    With a ``metric`` column, one table per metric: the primary metric's open, the others folded."""
    if frame.empty:
        return ""
    labels = labels or {}
    blocks = []
    by_metric = list(frame.groupby("metric", sort=False)) if "metric" in frame.columns else [("", frame)]
    if primary is not None:
        by_metric.sort(key=lambda item: 0 if str(item[0]) in (primary.id, primary.header) else 1)
    for metric, part in by_metric:
        ns = part["n"].map(_num) if "n" in part.columns else pd.Series(1.0, index=part.index)
        classes = list(dict.fromkeys(str(c) for c in part["class"]))
        scored = [c for c in classes if (ns[part["class"].astype(str) == c] > 0).any()]
        empty = [c for c in classes if c not in scored]
        shown = labels.get(str(metric), str(metric))
        title = f"{shown} per class" if metric else (f"{primary.header} per class" if primary else "Per class")
        fold = bool(metric) and primary is not None and str(metric) not in (primary.id, primary.header)
        if not scored:
            blocks.append(f'<p class="note">{_esc(title)}: no correctly classified image of any class, '
                          "so nothing was scored per class.</p>")
            continue
        cols = [_Col("explainer", "Explainer", row_header=True, cls="sticky")]
        cols += [_Col(f"class:{c}", c, numeric=True, sub="mean [CI] (n)") for c in scored]
        rows = []
        for name, sub in part.groupby("explainer", sort=False):
            flag = next((str(f) for f in sub.get("flags", pd.Series(dtype=object)) if isinstance(f, str) and f), "")
            row = [_Cell(f'<span class="name">{_esc(name)}</span>'
                         + (f'<span class="flag">{_esc(flag)}</span>' if flag else ""), str(name).lower())]
            by_class: dict[str, Mapping[str, Any]] = {}
            for rec in sub.to_dict("records"):  # one dict lookup per cell, not a frame filter
                by_class.setdefault(str(rec["class"]), rec)
            for c in scored:
                h = by_class.get(c)
                n = _num(h["n"]) if h is not None and "n" in h else math.nan
                if h is None or n == 0:
                    row.append(_Cell('<span class="none">no correctly classified image</span>', "", "num"))
                    continue
                interval = format_ci(h.get("ci_low"), h.get("ci_high"))
                if math.isfinite(n):
                    interval = f"{interval} (n={int(n)})".strip()
                row.append(_num_cell(h.get("mean"), interval=interval))
            rows.append(row)
        block = _table(cols, [_Body(rows)], caption=_esc(title))
        if empty:
            block += ('<p class="note">Not shown: no correctly classified test image of class '
                      + ", ".join(_esc(c) for c in empty) + ", so nothing to score there.</p>")
        blocks.append(f"<details><summary>{_esc(title)}</summary>{block}</details>" if fold else block)
    return "\n".join(blocks)


def _classification_block(items: Sequence[Mapping[str, Any]]) -> str:
    out = []
    for t in items:
        extra = []
        if t.get("accuracy") is not None:
            extra.append(f"accuracy {_fmt(t['accuracy'])}")
        if t.get("best_epoch") is not None:
            extra.append(f"best epoch {t['best_epoch']}")
        if t.get("run_id"):
            extra.append(f"run {t['run_id']}")
        headers = [str(h) for h in t.get("headers") or ["Class", "Precision", "Recall", "F1", "Support"]]
        cols = [_Col(f"c{i}", h, numeric=i > 0, row_header=i == 0) for i, h in enumerate(headers)]
        rows = [[_Cell(f'<span class="name">{_esc(r[0])}</span>', str(r[0]).lower())]
                + [_num_cell(v, text=_text(v)) for v in r[1:]] for r in t.get("rows") or []]
        out.append(f"<details><summary>Classification report (test split): {_esc(', '.join(extra))}</summary>"
                   + _table(cols, [_Body(rows)]) + "</details>")
    return "\n".join(out)


def _comparisons_block(comparisons: pd.DataFrame, metrics: Sequence[str], label: Mapping[str, str], ci: str) -> str:
    if comparisons.empty:
        return ""
    known = {"dataset", "model", "weights", "perturbation", "settings", "metric", "explainer_a", "explainer_b",
             "params_a", "params_b", "n", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "p_value", "p_holm",
             "significant", "verdict", "family_size", "run_a", "run_b", "p_wilcoxon"}
    extra = [c for c in comparisons.columns if c not in known and not str(c).startswith("_")]
    parts = []
    for metric in metrics:
        part = comparisons[comparisons["metric"].astype(str) == metric] if "metric" in comparisons.columns \
            else comparisons
        if part.empty:
            continue
        seen: dict[str, set[str]] = {}
        if {"params_a", "params_b"} <= set(part.columns):
            for a, pa, b, pb in zip(part["explainer_a"], part["params_a"], part["explainer_b"], part["params_b"],
                                    strict=True):
                seen.setdefault(str(a), set()).add(str(pa))
                seen.setdefault(str(b), set()).add(str(pb))

        def name(r: Mapping[str, Any], side: str, seen: Mapping[str, set[str]] = seen) -> str:
            n = str(r.get(f"explainer_{side}", ""))
            return f"{n} [{r.get(f'params_{side}')}]" if len(seen.get(n, ())) > 1 else n

        cols = [_Col("a", "A", row_header=True, cls="sticky"), _Col("b", "B"), _Col("n", "n", numeric=True),
                _Col("mean_a", "mean A", numeric=True), _Col("mean_b", "mean B", numeric=True),
                _Col("diff", "A - B", numeric=True, sub=f"{ci} CI", first="descending"),
                _Col("p_value", "p (mean)", numeric=True, title=MEAN_TEST), _Col("p_holm", "Holm p", numeric=True),
                _Col("significant", "Significant (Holm)"), _Col("verdict", "Verdict")]
        cols += [_Col(str(c), str(c).replace("_", " "), numeric=_is_numeric(part[c])) for c in extra]
        rows = []
        n_sig = 0
        for r in part.to_dict("records"):
            n = _num(r.get("n"))
            sig = bool(r.get("significant")) if not _missing(r.get("significant")) else False
            n_sig += sig
            verdict = ("yes" if sig else "no") if n else "no shared images"
            row = [_Cell(f'<span class="name">{_esc(name(r, "a"))}</span>', name(r, "a").lower()),
                   _text_cell(name(r, "b")), _num_cell(n, text=_int_text(n)), _num_cell(r.get("mean_a")),
                   _num_cell(r.get("mean_b")),
                   _num_cell(r.get("diff"), text=_fmt(r.get("diff"), signed=True),
                             interval=format_ci(r.get("ci_low"), r.get("ci_high"))),
                   _num_cell(r.get("p_value"), text=format_p(r.get("p_value"))),
                   _num_cell(r.get("p_holm"), text=format_p(r.get("p_holm"))),
                   _text_cell(verdict, "sig" if sig else ""),
                   _text_cell(_text(r.get("verdict")) if n else "", "sig" if r.get("verdict") in ("better", "worse")
                              else "")]
            for c in extra:
                v = r.get(c)
                row.append(_num_cell(v) if _is_numeric(part[c]) else _text_cell(_text(v)))
            rows.append(row)
        title = label.get(metric, metric)
        parts.append(
            f"<details><summary>Paired comparisons, {_esc(title)}: {len(part)} pair{'s' if len(part) != 1 else ''} "
            f"on the same images, {n_sig} significant after Holm</summary>"
            '<p class="note">A - B: mean over the shared images of the per-image difference, with its '
            f"{_esc(ci)} bootstrap CI; p: {_esc(MEAN_TEST)}; Holm-corrected within this group and metric. "
            "Verdict: better / worse (Holm p below 0.05, in the metric's direction), negligible (|A - B| below "
            "the minimum effect, in the metric's units, whatever its p), or not significant.</p>"
            + _table(cols, [_Body(rows)]) + "</details>")
    return "\n".join(parts)


def _list_html(text: str) -> str:
    """A comma-separated list that breaks only after its commas, never inside an item."""
    items = text.split(",")
    if len(items) == 1:
        return _esc(text)
    return ",<wbr>".join(f'<span class="t">{_esc(i)}</span>' for i in items)


def _image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG (from its header) or of another raster Pillow reads (WebP, JPEG, GIF)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception:  # not a raster Pillow knows (an SVG): no size attributes
        return None


def _figure_html(name: str, path: Path) -> str:
    data = path.read_bytes()
    mime = _MIME.get(path.suffix.lower(), "image/png")
    size, hint = "", ""
    dims = _image_size(data)
    if dims is not None:
        w, h = dims
        size = f' width="{w}" height="{h}"'
        hint = " (shown smaller: click the image for full size)" if w > _FIT_WIDTH else ""
    uri = f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
    return (f'<figure><div class="figbox"><img alt="{_esc(name)}" src="{uri}"{size}></div>'
            f'<figcaption><span class="file">{_esc(path.name)}</span>{hint}</figcaption></figure>')


def _figure_paths(value: Any) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, str | Path):
        return [Path(value)]
    if isinstance(value, Iterable):
        return [Path(v) for v in value]
    return []


# ---------------------------------------------------------------------------------------
# provenance
# ---------------------------------------------------------------------------------------
def _provenance_block(prov: Mapping[str, Any], metrics: Sequence[_Metric], primary: _Metric | None) -> str:
    out = ['<footer id="provenance"><h2>Provenance</h2>']
    notes = []
    head = prov.get("primary_label") or (primary.label if primary else "the primary metric")
    refs = prov.get("gain_references") or ([prov["baseline"]] if prov.get("baseline") else [])
    if refs:
        notes.append(f"Gain over control = {head} minus the {head} of the group's reference control ("
                     + ", ".join(str(r) for r in refs) + "), on the same dataset, model, weights, perturbation and "
                     "settings; with an interval it is the paired mean difference on the images both scored.")
    if prov.get("controls"):
        notes.append("Controls (" + ", ".join(str(c) for c in prov["controls"]) + ") are reference rows: shown "
                     "below the methods of each group, never ranked among them.")
    if prov.get("constant_heatmap_rows"):
        notes.append(f"{prov['constant_heatmap_rows']} row(s) got an all-equal heatmap (a constant map) for some images: "
                     "their region order is the seeded tie-break, so their curve metrics measure that order, not "
                     "the explainer (the Flags column says how many).")
    grids = ", ".join(str(g) for g in prov.get("grids") or []) or "n/a"
    seeds = ", ".join(str(s) for s in prov.get("seeds") or []) or "n/a"
    sigmas = ", ".join(_text(s) for s in prov.get("sigmas") or []) or "n/a"
    notes.append(f"Grid: {grids}; seeds: {seeds}; sigma: {sigmas}.")
    out.append("<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>")
    if metrics:
        cols = [_Col("metric", "Metric", row_header=True), _Col("id", "id"), _Col("family", "Family"),
                _Col("params", "Parameters", cls="wrap params"), _Col("definition", "Definition", cls="wrap def")]
        rows = [[_Cell(f'<span class="name">{_esc(m.header)}</span>', m.label.lower()), _text_cell(m.id),
                 _text_cell(m.family),
                 _Cell(_esc(json.dumps(dict(m.params), sort_keys=True, default=str)) if m.params else ""),
                 _Cell(_esc(m.description))] for m in metrics]
        out.append("<h3>Metrics</h3>" + _table(cols, [_Body(rows)], caption="Each value is the mean over the "
                   "explained (correctly classified) test images of the metric's per-image value, with its "
                   f"{_esc(prov.get('ci_label', '95%'))} bootstrap CI; ↑ higher is better, ↓ lower is better."))
    legend: Mapping[str, Mapping[str, str]] = prov.get("settings") or {}
    if legend:
        keys = list(legend)
        fields: list[str] = []
        for f in legend.values():
            fields += [k for k in f if k not in fields]
        cols = [_Col("field", "Setting", row_header=True)] + [_Col(f"s:{k}", k) for k in keys]
        rows, rcls = [], []
        for name in fields:
            vals = [str(legend[k].get(name, "-")) for k in keys]
            rows.append([_Cell(f'<span class="name">{_esc(name)}</span>', name)]
                        + [_Cell(_list_html(v), v, cls="wrap") for v in vals])
            rcls.append("differs" if len(set(vals)) > 1 else "")
        out.append("<h3>Settings fingerprints</h3>" + _table(
            cols, [_Body(rows, row_cls=rcls)], caption="What each settings fingerprint stands for (rows are "
            "compared only within one); settings that differ between fingerprints are highlighted."))
    shown = set(prov.get("explainer_params_shown") or [])
    eparams = [(k, e) for k, e in (prov.get("explainer_params") or {}).items()
               if any(n in shown for n in e.get("explainers", []))]
    if eparams:
        out.append("<h3>Explainer parameters</h3><ul>" + "".join(
            f"<li><code>{_esc(k)}</code> ({_esc(', '.join(n for n in e.get('explainers', []) if n in shown))}): "
            f"<code>{_esc(json.dumps(e.get('params') or {}, sort_keys=True, default=str) if e.get('params') else 'defaults')}"
            "</code></li>" for k, e in eparams) + "</ul>")
    perts = prov.get("perturbation_params") or {}
    if perts:
        out.append("<h3>Perturbations</h3><ul>" + "".join(
            f"<li>{_esc(name)}: <code>{_esc(json.dumps(p, sort_keys=True, default=str) if p else 'defaults')}</code></li>"
            for name, plist in perts.items() for p in plist) + "</ul>")
    runs = prov.get("runs") or []
    if runs:
        cols = [_Col("run", "Run", row_header=True), _Col("bench", "bench"), _Col("tf", "TensorFlow"),
                _Col("keras", "Keras"), _Col("python", "Python"), _Col("git", "git"), _Col("seeds", "Seeds"),
                _Col("finished", "Finished")]
        rows = [[_Cell(f'<span class="name">{_esc(r.get("run_id"))}</span>', str(r.get("run_id"))),
                 _text_cell(r.get("bench_version") or "?"), _text_cell(r.get("tensorflow") or "?"),
                 _text_cell(r.get("keras") or "?"), _text_cell(r.get("python") or "?"),
                 _text_cell(r.get("git_commit") or "?"),
                 _text_cell(json.dumps(r.get("seeds") or {}, sort_keys=True)), _text_cell(r.get("finished") or "?")]
                for r in runs]
        out.append("<h3>Runs</h3>" + _table(cols, [_Body(rows)]))
    if prov.get("generated") or prov.get("generator"):
        out.append(f'<p class="note">Generated {_esc(prov.get("generated") or "?")} by '
                   f'{_esc(prov.get("generator") or "bench")}.</p>')
    out.append("</footer>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------
_CSS = """
*,*::before,*::after{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;margin:0 auto;max-width:1400px;
padding:1.25rem 1.5rem 2rem;color:#1f2328;background:#fff;line-height:1.45}
h1{font-size:1.6rem;margin:.2rem 0 .6rem}
h2{font-size:1.3rem;margin:2.2rem 0 .6rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
h3{font-size:1.08rem;margin:1.6rem 0 .3rem}h3 .meta{font-weight:400;color:#57606a;font-size:.9rem;margin-left:.4rem}
h4{font-size:.95rem;margin:1rem 0 .3rem}
p,li{max-width:110ch}
.note{color:#57606a;font-size:.86rem}
.modelline{color:#57606a;font-size:.86rem;margin:.1rem 0 .4rem}
a{color:#0969da}
.tablebox{overflow-x:auto;width:fit-content;max-width:100%;margin:.4rem 0 1rem;border:1px solid #d0d7de;
border-radius:6px}
table{border-collapse:separate;border-spacing:0;font-size:.84rem}
caption{caption-side:top;text-align:left;padding:.45rem .6rem;color:#57606a;font-size:.84rem;
background:#f6f8fa;border-bottom:1px solid #d0d7de}
th,td{padding:.3rem .55rem;border-bottom:1px solid #e4e8ec;vertical-align:top;text-align:left;background:#fff}
thead th{background:#f6f8fa;border-bottom:1px solid #d0d7de;font-weight:600;vertical-align:bottom}
thead th.family{text-align:center;font-weight:500;color:#57606a;font-size:.78rem;text-transform:uppercase;
letter-spacing:.03em;border-left:1px solid #d0d7de;vertical-align:middle}
thead th[data-type=num]{text-align:right}
thead th.primary,td.primary{background:#f1f7ff}
th .sub,td .ci{display:block;font-weight:400;color:#6e7781;font-size:.76rem;white-space:nowrap}
button.sort{all:unset;cursor:pointer;display:block}
button.sort:focus-visible{outline:2px solid #0969da;outline-offset:2px}
th[aria-sort=ascending] button.sort::after{content:" ▲";font-size:.7em;color:#0969da}
th[aria-sort=descending] button.sort::after{content:" ▼";font-size:.7em;color:#0969da}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
td.num .v{white-space:nowrap}
.name,.t{white-space:nowrap}
th[scope=row]{font-weight:500}
.sticky{position:sticky;left:0;z-index:1;box-shadow:1px 0 0 #d0d7de}
thead th.sticky{z-index:2}
tbody.controls td,tbody.controls th{background:#f7f7f9;color:#424a53;font-style:italic}
tbody.controls tr.label th{font-style:normal;font-weight:600;color:#57606a;background:#eef1f4;
border-top:2px solid #8c959f;font-size:.8rem;position:static}
tr.label .stick{position:sticky;left:.55rem}
tbody.controls .role{font-style:normal;font-size:.72rem;color:#57606a;border:1px solid #afb8c1;border-radius:1em;
padding:0 .45em;margin-left:.3em;white-space:nowrap}
.ref{color:#6e7781;font-size:.78rem;letter-spacing:.04em}
.none{color:#6e7781;font-style:italic;white-space:nowrap;font-size:.8rem}
td.sig{font-weight:600}
.flag{display:block;font-weight:400;font-style:normal;color:#9a6700;font-size:.74rem;white-space:normal;
max-width:22rem}
td.flags,td.wrap{white-space:normal;min-width:14rem;max-width:36rem;overflow-wrap:anywhere}
td.params{min-width:10rem;max-width:18rem;font-size:.78rem}td.def{min-width:30rem;max-width:none}
table.leaderboard th[scope=row]{white-space:nowrap}
td.flags ul{margin:.2rem 0 0;padding-left:1.1rem}td.flags summary{cursor:pointer;white-space:nowrap}
tr.differs td,tr.differs th{background:#fff8c5}
table.matrix td.num .v{display:inline-block;min-width:3.2em;padding:0 .25em;border-radius:3px}
details{margin:.4rem 0}details>summary{cursor:pointer;color:#24292f}
nav ul{padding-left:1.2rem}
figure{margin:1rem 0}.figbox{overflow-x:auto;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #d0d7de;cursor:zoom-in}
figure img.full{max-width:none;cursor:zoom-out}
figcaption{color:#57606a;font-size:.85rem}figcaption .file{color:#8c959f}
footer{margin-top:2.5rem;color:#424a53;font-size:.86rem;overflow-wrap:anywhere}
footer li{margin:.15rem 0}code{font-size:.85em;background:#f6f8fa;padding:0 .2em;border-radius:3px}
"""

# Click a header to sort its table's bodies (a pinned body, the controls, stays as it is): numbers
# by their data-sort value, text case-insensitively; missing values last in both directions.
_JS = """
(function () {
  function key(cell, numeric) {
    if (!cell) { return null; }
    var s = cell.getAttribute("data-sort");
    if (numeric) {
      if (s === null || s === "") { return null; }
      var v = parseFloat(s);
      return isNaN(v) ? null : v;
    }
    s = (s === null ? cell.textContent : s).trim().toLowerCase();
    return s === "" ? null : s;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.querySelectorAll("thead th[data-col]");
    heads.forEach(function (th) {
      var btn = th.querySelector("button.sort");
      if (!btn) { return; }
      btn.addEventListener("click", function () {
        var col = parseInt(th.getAttribute("data-col"), 10);
        var numeric = th.getAttribute("data-type") === "num";
        var now = th.getAttribute("aria-sort");
        var dir = now === "ascending" ? "descending" : now === "descending" ? "ascending"
          : (th.getAttribute("data-first") || "ascending");
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", dir);
        var sign = dir === "ascending" ? 1 : -1;
        Array.prototype.forEach.call(table.tBodies, function (body) {
          if (body.classList.contains("pinned")) { return; }
          var rows = Array.prototype.slice.call(body.rows);
          rows.sort(function (a, b) {
            var x = key(a.cells[col], numeric), y = key(b.cells[col], numeric);
            if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
            if (numeric) { return (x - y) * sign; }
            return x.localeCompare(y) * sign;
          });
          rows.forEach(function (r) { body.appendChild(r); });
        });
      });
    });
  });
  document.querySelectorAll("figure img").forEach(function (img) {
    img.addEventListener("click", function () { img.classList.toggle("full"); });
  });
})();
"""

_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "base-uri 'none'; form-action 'none'")


def render_page(
    rows: pd.DataFrame,
    provenance: Mapping[str, Any] | None = None,
    failed: pd.DataFrame | None = None,
    comparisons: pd.DataFrame | None = None,
    figures: Mapping[str, str | Path | Sequence[str | Path]] | None = None,
    *,
    ranks: pd.DataFrame | None = None,
    metric_power: pd.DataFrame | None = None,
    agreement: pd.DataFrame | Mapping[str, pd.DataFrame] | None = None,
    per_class: pd.DataFrame | None = None,
    sanity: pd.DataFrame | None = None,
    normalised: pd.DataFrame | None = None,
    aggregate: pd.DataFrame | None = None,
    alpha: pd.DataFrame | None = None,
    cross_model: pd.DataFrame | None = None,
    classification: Sequence[Mapping[str, Any]] | None = None,
    comparison_metrics: Sequence[str] | None = None,
    notes: Sequence[str] = (),
    title: str = "bench leaderboard",
) -> str:
    """The leaderboard as one self-contained HTML page (a string; nothing is written or fetched).

    ``rows``: the frame :func:`bench.publish.collect.collect` returns (its ``attrs``
    ``metrics`` and ``primary`` name the metric columns and the ranking one; without them
    every ``X`` with ``X_ci_low``/``X_ci_high`` is a metric). Columns used when present:
    the :data:`GROUP_COLUMNS`, ``explainer``, ``explainer_params``, ``role``, the classification
    columns, each metric's value/CI, the gain and its CI, ``baseline``, costs, ``n_images``,
    ``constant_heatmaps``, ``metric_notes``. The rows keep the frame's order within a group.
    ``provenance``: the dict of :func:`bench.publish.provenance.provenance` (footer).
    ``failed``: the failed cells (``rows.attrs["failed"]`` when None).
    ``comparisons``: the paired comparisons frame; each group shows those of
    ``comparison_metrics`` (default: the primary metric), collapsed.
    ``figures``: ``{name: PNG path or [paths]}`` (name = caption and alt text), inlined; a
    missing file is named in a note, an empty list leaves the figure out.
    ``ranks``, ``metric_power``: optional frames; rows with the group columns go into their
    group's section, the rest into a section of their own; ``X`` beside ``X_ci_low``/``X_ci_high``
    (or ``_low``/``_high``) shows as a value over its interval.
    ``sanity``, ``normalised``, ``aggregate`` (the mean rank, labelled an aggregate), ``alpha``
    (Krippendorff's alpha per metric): more such frames, in their groups. ``cross_model``: a
    frame shown in a section of its own (the models side by side on their common images).
    ``agreement``: a square frame (metric x metric), a ``{title: square frame}`` mapping, or a
    long frame with group columns (``metric_a``, ``metric_b``, ``tau``: drawn as each group's
    square matrix; anything else: a table). ``per_class``: long frame (group columns, ``explainer``,
    ``class``, ``mean``, ``ci_low``, ``ci_high``, ``n``, optional ``metric``); a class without
    a scored image is said in words, never drawn. ``classification``: the items of
    :func:`bench.publish.classification.classification_tables`. ``notes``: extra lines at the top
    (e.g. which cheaper parameters a preset used).
    """
    prov: Mapping[str, Any] = provenance or {}
    if failed is None:
        failed = rows.attrs.get("failed")
    # pandas deep-copies a frame's attrs into every slice and row it makes: keep only the small ones
    light = rows.copy(deep=False)
    light.attrs = {k: rows.attrs[k] for k in ("metrics", "primary") if k in rows.attrs}
    rows = light
    metrics = _metrics_of(rows, prov)
    primary = _primary_of(rows, metrics, prov)
    ordered = _ordered_metrics(metrics, primary)
    ci = str(prov.get("ci_label") or "95%")
    groups = _groups(rows)
    labels = {m.id: m.header for m in metrics}
    wanted = list(comparison_metrics) if comparison_metrics is not None else ([primary.id] if primary else [])

    body = [f"<header><h1>{_esc(title)}</h1>"]
    intro = ("One section per dataset, model, weights, perturbation and settings fingerprint: rows are compared "
             "only within one. In each, the methods are ranked by "
             f"{_esc(primary.header) if primary else 'their first metric'}; the controls follow as reference rows "
             f"(shaded, not ranked). Each metric shows its mean over the explained images with its {_esc(ci)} "
             "bootstrap CI below; ↑ higher is better, ↓ lower is better. Click a column header to sort; "
             "hover a metric's header for its definition (all under Provenance).")
    body.append(f'<p class="note">{intro}</p>')
    body += [f'<p class="note">{_esc(n)}</p>' for n in notes]
    body.append("</header><main>")
    if not groups:
        body.append("<p><em>No finished cells yet.</em></p>")
    else:
        body.append(_overview(groups, primary))

    long_agreement = isinstance(agreement, pd.DataFrame) and not _is_square(agreement)
    pairs = long_agreement and {"metric_a", "metric_b", "tau"} <= set(agreement.columns)  # type: ignore[union-attr]
    extras = {"ranks": ranks, "metric_power": metric_power, "normalised": normalised, "sanity": sanity,
              "agreement": agreement if long_agreement else None, "alpha": alpha, "aggregate": aggregate,
              "cross_model": cross_model}
    extra_titles = {"ranks": f"Ranks with {ci} intervals", "metric_power": "Metric power from the controls",
                    "normalised": "Normalised score (0 = the null control, 1 = the positive control)",
                    "sanity": "Sanity gates", "agreement": "Agreement between metrics",
                    "alpha": "Krippendorff's alpha of each metric's per-image rankings",
                    "aggregate": "Aggregate: mean rank across the selected metrics (an aggregate, never a "
                                 "single truth)",
                    "cross_model": "Across models, on the common image set"}
    used: dict[str, pd.Series] = {k: pd.Series(False, index=v.index) for k, v in extras.items()
                                  if isinstance(v, pd.DataFrame)}
    dataset = None
    for g in groups:
        ds = g.key.get("dataset", "")
        if ds != dataset:
            body.append(f'<h2 id="dataset-{g.index}">{_esc(ds) if ds else "Leaderboard"}</h2>')
            dataset = ds
        body.append(f'<section id="{g.anchor}" aria-labelledby="{g.anchor}-h">')
        body.append(f'<h3 id="{g.anchor}-h">{_esc(g.title())} <span class="meta">{_esc(g.meta())}</span></h3>')
        line = _model_line(g.rows)
        if line:
            body.append(f'<p class="modelline">{_esc(line)}</p>')
        body.append(_main_table(g, ordered, primary, ci))
        for name, frame in extras.items():
            if not isinstance(frame, pd.DataFrame) or frame.empty or not _group_columns(frame):
                continue
            mask = g.matches(frame)
            used[name] |= mask
            if mask.any():
                body.append(f"<h4>{_esc(extra_titles[name])}</h4>")
                if name == "agreement" and pairs:
                    body.append(_matrix_table(_square(frame[mask]), _esc("Kendall's tau between the metrics' "
                                                                         "method rankings (methods only)")))
                else:
                    body.append(_generic_table(frame[mask], drop=_group_columns(frame)))
        if isinstance(per_class, pd.DataFrame) and not per_class.empty:
            part = per_class[g.matches(per_class)]
            if not part.empty:
                body.append(f"<h4>Per class</h4>{_per_class_block(part, primary, labels)}")
        if classification:
            items = [t for t in classification if all(str(t.get(c, "")) == g.key.get(c, str(t.get(c, "")))
                                                      for c in _MODEL_COLUMNS)
                     and (not t.get("settings") or g.key.get("settings") in t.get("settings"))]
            body.append(_classification_block(items))
        if isinstance(comparisons, pd.DataFrame) and not comparisons.empty and wanted:
            body.append(_comparisons_block(comparisons[g.matches(comparisons)], wanted, labels, ci))
        body.append("</section>")

    for name, frame in extras.items():
        if not isinstance(frame, pd.DataFrame) or frame.empty:
            continue
        rest = frame[~used[name]] if name in used else frame
        if not rest.empty:
            body.append(f"<h2>{_esc(extra_titles[name])}</h2>")
            body.append(_generic_table(rest))
    matrices: list[tuple[str, pd.DataFrame]] = []
    if isinstance(agreement, pd.DataFrame) and _is_square(agreement):
        matrices = [("Kendall's tau between the metrics' method rankings", agreement)]
    elif isinstance(agreement, Mapping):
        matrices = [(str(k), v) for k, v in agreement.items() if isinstance(v, pd.DataFrame) and not v.empty]
    if matrices:
        body.append("<h2>Agreement between metrics</h2>")
        body += [_matrix_table(m, _esc(t)) for t, m in matrices]

    figs = [(str(name), _figure_paths(value)) for name, value in (figures or {}).items()]
    figs = [(n, ps) for n, ps in figs if ps]
    if figs:
        body.append('<h2 id="figures">Figures</h2>')
        for name, paths in figs:
            body.append(f"<h3>{_esc(name)}</h3>")
            for p in paths:
                alt = name if len(paths) == 1 else f"{name}: {p.stem}"
                if p.is_file():
                    body.append(_figure_html(f"{alt} (figure {p.name})", p))
                else:
                    body.append(f'<p class="note">Not available: no figure file {_esc(p.name)} was written.</p>')

    if isinstance(failed, pd.DataFrame) and not failed.empty:
        body.append('<h2 id="failed">Failed cells (not on the leaderboard)</h2>')
        body.append(_failed_table(failed))
    body.append("</main>")
    body.append(_provenance_block(prov, ordered, primary))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(b for b in body if b)
        + f"\n<script>{_JS}</script>\n</body>\n</html>\n"
    )


def _overview(groups: Sequence[_Group], primary: _Metric | None) -> str:
    """One row per group: what it is, how many methods and controls, its best method."""
    keys = [c for c in GROUP_COLUMNS if any(c in g.key for g in groups)]
    cols = [_Col(c, c.capitalize(), row_header=c == "model") for c in keys] or [_Col("model", "Group", row_header=True)]
    cols += [_Col("recall_macro", "Test recall (macro)", numeric=True, first="descending"),
             _Col("methods", "Methods", numeric=True), _Col("controls", "Controls", numeric=True),
             _Col("best", f"Best by {primary.header}" if primary else "Best"),
             _Col("best_value", primary.header if primary else "Value", numeric=True,
                  first="ascending" if primary is not None and primary.higher_is_better is False else "descending")]
    rows = []
    for g in groups:
        methods, controls = _split_roles(g.rows)
        best_name, best_value = "", math.nan
        if primary is not None and primary.id in methods.columns and len(methods):
            values = [_num(v) for v in methods[primary.id]]
            ranks = _ranks(values, primary.higher_is_better)
            top = [i for i, r in enumerate(ranks) if r == 1]
            if top:
                best_name = ", ".join(str(methods["explainer"].iloc[i]) for i in top)
                best_value = values[top[0]]
        recall = sorted({_num(v) for v in g.rows.get("recall_macro", pd.Series(dtype=float)) if math.isfinite(_num(v))})
        link = _Cell(f'<a class="name" href="#{g.anchor}">{_esc(g.title())}</a>', g.title().lower())
        row = [link if c == "model" else _text_cell(g.key.get(c, "")) for c in keys] or [link]
        row += [_num_cell(recall[0] if recall else math.nan, text=" / ".join(_fmt(r) for r in recall)),
                _num_cell(len(methods), text=str(len(methods))), _num_cell(len(controls), text=str(len(controls))),
                _text_cell(best_name), _num_cell(best_value)]
        rows.append(row)
    return '<nav aria-label="Groups">' + _table(cols, [_Body(rows)], caption=(
        f"{len(groups)} group{'s' if len(groups) != 1 else ''}: the rows of different groups are never compared; "
        "follow a link to the group's table")) + "</nav>"


def _failed_table(failed: pd.DataFrame) -> str:
    spec = [("dataset", "Dataset"), ("model", "Model"), ("weights", "Weights"), ("explainer", "Explainer"),
            ("perturbation", "Perturbation"), ("run_id", "Run"), ("stage", "Stage"), ("error", "Error"),
            ("shown_instead", "Shown instead")]
    spec = [(k, h) for k, h in spec if k in failed.columns]
    cols = [_Col(k, h, cls="wrap" if k == "error" else "") for k, h in spec]
    rows = []
    for r in failed.to_dict("records"):
        row = []
        for k, _ in spec:
            v = _text(r.get(k))
            if k == "error":
                v = " ".join(v.split())
                row.append(_Cell(_esc(v if len(v) <= 600 else v[:599] + "…"), v.lower()))
            elif k == "shown_instead":
                row.append(_text_cell(v or "-"))
            else:
                row.append(_text_cell(v))
        rows.append(row)
    return _table(cols, [_Body(rows)], caption=f"{len(failed)} cell(s) whose latest attempt failed")
