"""The report: ``report.md`` and its figures, from a leaderboard's frame.

- :func:`make_figures`: curves and per-class PNGs, one heatmap overlay figure per model
  (WebP: :func:`overlay_figures`) into ``figures/``
  (drawn by :mod:`bench.publish.figures`), and with the statistics a rank plot (points and
  intervals, one panel per metric) and a Kendall-tau agreement matrix per family; figures
  an earlier build left and this one did not write are removed (:func:`remove_stale_figures`).
- :func:`render_report` / :func:`build_report`: ``report.md``: the leaderboard, per-model
  classification tables, the statistics of every family (ranks, power, sanity, agreement,
  aggregate, every metric per class, every paired comparison kept, across models), the
  figures, failed cells and provenance.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.data import DatasetSplits, Split
from bench.pipeline.store import atomic_write_text
from bench.publish.analysis import Analysis, options_from_manifests, safe_analyse
from bench.publish.classification import classification_tables
from bench.publish.collect import (
    collect,
    confidence_of,
    metric_columns_of,
    primary_column,
    run_dir_of,
)
from bench.publish.comparisons import (
    attach_gain_ci,
    class_names_of,
    leaderboard_comparisons,
    load_cell_arrays,
    paired_comparisons,
    per_class_values,
    primary_comparisons,
    row_labels,
)
from bench.publish.provenance import provenance, provenance_lines
from bench.publish.stat_tables import family_keys, family_title, statistics_markdown
from bench.publish.tables import (
    comparisons_markdown,
    display_table,
    failed_markdown,
    per_class_markdown,
)
from bench.publish.text import format_number, markdown_table, md_cell


def slug(*parts: Any) -> str:
    """A file-name-safe slug of plugin-supplied names, with a short hash so distinct names never collide."""
    raw = "__".join(str(p) for p in parts)
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.")[:80] or "x"
    return f"{text}-{hashlib.sha1(raw.encode()).hexdigest()[:6]}"


def model_with_weights(row: Mapping[str, Any]) -> str:
    w = str(row["weights"])
    return f"{row['model']} ({w})" if w else str(row["model"])


def find_dataset_file(dataset: str, df: pd.DataFrame, manifests: Mapping[str, Any]) -> Path | None:
    """The saved splits of ``dataset`` from the manifest of the most recent run shown for it."""
    results_dir = Path(df.attrs.get("results_dir", "."))
    rows = df[df["dataset"] == dataset].sort_values("_time", ascending=False)
    run_names = list(dict.fromkeys(run_dir_of(r).name for _, r in rows.iterrows()))
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


def first_per_class(ids: Sequence[str], id_labels: Mapping[str, int], per_class: int = 1) -> list[str]:
    """The first ``per_class`` ids (by id) of every class among ``ids``, in class order: the
    overlay figure's fixed rows (deterministic, every class that has an id)."""
    chosen: list[str] = []
    for lab in sorted({id_labels.get(i, -1) for i in ids}):
        chosen += sorted(i for i in ids if id_labels.get(i, -1) == lab)[: max(1, per_class)]
    return chosen


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


#: The sections :func:`make_figures` adds from the statistics.
RANKS_SECTION = "Ranks with intervals"
AGREEMENT_SECTION = "Agreement between metrics (Kendall's tau)"


#: The study's two alpha levels of the heatmap overlays.
OVERLAY_ALPHAS: tuple[float, float] = (0.4, 0.7)
#: The overlays' file format: photographic tiles, a tenth of a PNG's bytes as WebP.
OVERLAY_SUFFIX = ".webp"


def make_figures(
    df: pd.DataFrame,
    out_dir: str | Path,
    *,
    per_class: int = 1,
    alphas: Sequence[float] = OVERLAY_ALPHAS,
    analysis: Analysis | None = None,
) -> dict[str, list[Path]]:
    """Write the report's figures into ``out_dir`` and return ``{section title: [paths]}``.

    One curves figure and one per-class figure per (dataset, perturbation), one heatmap
    overlay figure per (dataset, model, weights): every explainer of the model on the first
    ``per_class`` test images of each class it classified correctly, at each of ``alphas``,
    the dataset's masks as contours (:func:`overlay_figures`); with ``analysis``, per family a
    rank plot (every metric's ranks with their intervals: :func:`bench.publish.figures.plot_ranks`)
    and the agreement matrix (:func:`bench.publish.figures.plot_agreement`), where the figures
    module has them. A figure that cannot be drawn (no curves, no dataset file) is skipped with
    a warning; the rest are still written. A figure drawn before from the same data is copied
    from ``<results>/cache/figures`` (:mod:`bench.publish.figure_cache`), not drawn again.
    """
    from bench.publish.figure_cache import figure_cache

    results = df.attrs.get("results_dir")
    with figure_cache(Path(results) / "cache" / "figures" if results else None):
        return _make_figures(df, Path(out_dir), per_class=per_class, alphas=alphas, analysis=analysis)


def _make_figures(df: pd.DataFrame, out: Path, *, per_class: int, alphas: Sequence[float],
                  analysis: Analysis | None) -> dict[str, list[Path]]:
    from bench.publish import figures as fg

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
        per_class_stats: dict[str, dict[str, dict[str, tuple[float, float, float, int]]]] = {}
        # one panel per model and settings fingerprint: curves of different settings never share one
        models = [model_with_weights(r) for _, r in group.iterrows()]
        mixed = {m for m in models if "settings" in group.columns
                 and group["settings"][[x == m for x in models]].nunique() > 1}
        roles: dict[str, str] = {}
        for label, model_label, (_, row) in zip(row_labels(group), models, group.iterrows(), strict=True):
            panel = f"{model_label}, settings {row['settings']}" if model_label in mixed else model_label
            if isinstance(row.get("role"), str) and row["role"]:
                roles[label] = str(row["role"])  # controls: dashed reference lines, hollow points
            if head is not None:
                stats = per_class_values(row, head, class_names_of(row, manifests),
                                         confidence=confidence_of(df), include_empty=True)
                if stats:
                    per_class_stats.setdefault(panel, {})[label] = stats
            arrays = load_cell_arrays(row, "curves")
            if arrays is None or "morf_curves" not in arrays:
                continue
            curves.setdefault(panel, {})[label] = arrays["morf_curves"]
        title = f"{dataset} / {pert}"
        try:
            if curves:
                sections["Mean MoRF curves (AOPC graphs)"].append(fg.plot_curves(
                    curves, out / f"curves__{slug(dataset, pert)}.png", title=title, roles=roles))
            if per_class_stats:
                sections[per_class_title].append(fg.plot_per_class(
                    per_class_stats, out / f"per_class__{slug(dataset, pert)}.png", title=title, roles=roles,
                    ylabel=head.label if head is not None else "AOPC (MoRF)",
                    higher_is_better=head.higher_is_better if head is not None else True))
        except Exception as exc:  # a figure must never lose the leaderboard
            warnings.warn(f"figure for {title!r} failed: {type(exc).__name__}: {exc}", stacklevel=2)
    for dataset, group in df.groupby("dataset", sort=False):
        sections["Heatmap overlays"] += overlay_figures(str(dataset), group, df, out, per_class=per_class,
                                                        alphas=alphas)
    if analysis is not None:
        sections.update(statistics_figures(df, analysis, out))
    remove_stale_figures(out, [p for paths in sections.values() for p in paths])
    return sections


def statistics_figures(df: pd.DataFrame, analysis: Analysis, out: Path) -> dict[str, list[Path]]:
    """Per family: the rank plot and the agreement matrix (skipped, silently, where the figures
    module does not draw them; with a warning where drawing fails)."""
    from bench.publish import figures as fg

    plot_ranks = getattr(fg, "plot_ranks", None)
    plot_agreement = getattr(fg, "plot_agreement", None)
    sections: dict[str, list[Path]] = {RANKS_SECTION: [], AGREEMENT_SECTION: []}
    labels = {c.id: c.header for c in metric_columns_of(df)}
    for key in family_keys(df):
        title = family_title(df, key)
        name = slug(*key)
        ranks = analysis.part("ranks", key)
        ranks = ranks[ranks["rank"].notna()] if len(ranks) else ranks
        if callable(plot_ranks) and not ranks.empty:
            frame = pd.DataFrame({"method": ranks["label"], "rank": ranks["rank"], "rank_low": ranks["rank_low"],
                                  "rank_high": ranks["rank_high"], "p_best": ranks["p_best"],
                                  "metric": [labels.get(m, m) for m in ranks["metric"]]})
            try:
                sections[RANKS_SECTION].append(Path(plot_ranks(frame, out / f"ranks__{name}.png", title=title)))
            except Exception as exc:  # a figure must never lose the leaderboard
                warnings.warn(f"rank figure for {title!r} failed: {type(exc).__name__}: {exc}", stacklevel=3)
        matrix = analysis.kendall_matrix(key)
        if callable(plot_agreement) and not matrix.empty:
            for m in matrix.index:
                matrix.loc[m, m] = 1.0
            try:
                sections[AGREEMENT_SECTION].append(Path(plot_agreement(matrix, out / f"agreement__{name}.png",
                                                                       title=title)))
            except Exception as exc:
                warnings.warn(f"agreement figure for {title!r} failed: {type(exc).__name__}: {exc}", stacklevel=3)
    return sections


#: The names of the figures :func:`make_figures` writes (``<prefix>__<slug>.png``).
FIGURE_PREFIXES: tuple[str, ...] = ("curves__", "per_class__", "overlays__", "ranks__", "agreement__")


def remove_stale_figures(out_dir: str | Path, written: Sequence[str | Path]) -> list[Path]:
    """Delete this report's figures in ``out_dir`` that the latest build did not write.

    A figure left from an earlier build (an overlay skipped this time, a perturbation
    no longer on the board) would show numbers the tables no longer hold. Only files
    named like :func:`make_figures`' own figures (a prefix of :data:`FIGURE_PREFIXES`, a suffix
    of :data:`bench.publish.figures.FIGURE_SUFFIXES`: an overlay PNG of an earlier version goes
    too) are touched; returns what was removed.
    """
    from bench.publish.figures import FIGURE_SUFFIXES

    folder = Path(out_dir)
    if not folder.is_dir():
        return []
    keep = {Path(p).resolve() for p in written}
    removed = []
    for path in sorted(folder.iterdir()):
        if (path.suffix.lower() in FIGURE_SUFFIXES and path.name.startswith(FIGURE_PREFIXES)
                and path.is_file() and path.resolve() not in keep):
            path.unlink()
            removed.append(path)
    return removed


def overlay_figures(dataset: str, group: pd.DataFrame, df: pd.DataFrame, out: str | Path, *,
                    per_class: int = 1, alphas: Sequence[float] = OVERLAY_ALPHAS) -> list[Path]:
    """One heatmap overlay figure per (model, weights) of ``dataset``'s rows ``group``: written
    to ``out/overlays__<slug>.webp``, their paths returned (a figure that cannot be drawn is
    skipped with a warning that starts "overlay figure").

    Rows: the first ``per_class`` test images (by id) of each class among those every explainer
    of the model explained (its correctly classified test images, or the run's stratified sample
    of them): the same images in every column. Columns: the image, then every explainer of the
    model (methods by name, then the controls by role, marked), each heatmap (from the cells'
    ``heatmaps/<cell>.npz``, upsampled bilinearly) drawn at each of ``alphas``; every mask the
    dataset carries is a contour.
    """
    from bench.pipeline.controls import is_control
    from bench.publish import figures as fg

    manifests = df.attrs.get("manifests", {})
    out = Path(out)
    data_file = find_dataset_file(dataset, df, manifests)
    if data_file is None:
        warnings.warn(f"overlay figure for dataset {dataset!r} skipped: its dataset file (manifest "
                      "dataset.file) was not found", stacklevel=3)
        return []
    split: Split | None = None  # the test split, read (alone) at the first figure that needs it
    paths: list[Path] = []
    for (model, weights), rows in group.groupby(["model", "weights"], sort=False):
        model_label = model_with_weights(rows.iloc[0])
        what = f"overlay figure for {dataset!r} / {model_label!r}"
        # heatmaps do not depend on the perturbation: one set per explainer (label)
        maps: dict[str, tuple[pd.Series, np.ndarray]] = {}
        roles: dict[str, str] = {}
        for label, (_, row) in zip(row_labels(rows), rows.iterrows(), strict=True):
            if label in maps:
                continue
            arrays = load_cell_arrays(row, "heatmaps")
            if arrays is None or "heatmaps" not in arrays or "ids" not in arrays:
                continue
            ids = np.asarray(arrays["ids"]).astype(str)
            pos = pd.Series(np.arange(len(ids)), index=ids)
            maps[label] = (pos[~pos.index.duplicated(keep="first")], np.asarray(arrays["heatmaps"]))
            role = row.get("role")
            if isinstance(role, str) and is_control(role):
                roles[label] = role
        if not maps:
            continue
        try:
            if split is None:
                split = DatasetSplits.load_split(data_file, "test")
            images, labels, masks = split.images, split.labels, split.masks
            ids = split.ids.astype(str)
            id_pos = {str(i): k for k, i in enumerate(ids)}
            common = set(id_pos)
            for pos, _ in maps.values():
                common &= set(pos.index)
            names = class_names_of(rows.iloc[0], manifests)

            def class_name(lab: int, names: Sequence[str] = names) -> str:
                return names[lab] if 0 <= lab < len(names) else str(lab)

            explained = {int(labels[id_pos[i]]) for pos, _ in maps.values() for i in pos.index if i in id_pos}
            if not common:
                warnings.warn(f"{what} skipped: no test image was explained by every explainer of the model",
                              stacklevel=3)
                continue
            id_labels = {i: int(labels[id_pos[i]]) for i in common}
            chosen = first_per_class(sorted(common), id_labels, per_class)
            missing = sorted(explained - set(id_labels.values()))
            sel = [id_pos[i] for i in chosen]
            order = _column_order(list(maps), roles)
            heat = {label: maps[label][1][maps[label][0].loc[chosen].to_numpy()] for label in order}
            titles = [f"{class_name(id_labels[i])}\n{i.rsplit('/', 1)[-1]}" for i in chosen]
            n = "the first test image" if per_class == 1 else f"the first {per_class} test images"
            caption = (f"Rows: {n} of each class (by id) that {model_label} classified correctly and every "
                       f"explainer of it explained; the same images in every column. Each heatmap is min-max "
                       f"normalised, upsampled bilinearly to the image and overlaid at alpha "
                       f"{' and '.join(f'{a:g}' for a in alphas)}")
            caption += (f"; contours: the dataset's {', '.join(masks)} mask{'s' if len(masks) > 1 else ''}."
                        if masks else "; the dataset has no masks.")
            if missing:
                caption += (" No row for " + ", ".join(class_name(c) for c in missing)
                            + ": no image every explainer explained.")
            path = out / f"overlays__{slug(dataset, model, weights)}{OVERLAY_SUFFIX}"
            paths.append(Path(fg.plot_overlays(
                images[sel], heat, path, alphas=alphas, image_titles=titles, roles=roles,
                masks={name: m[sel] for name, m in masks.items()}, caption=caption,
                title=f"{dataset} / {model_label}: heatmap overlays ({len(heat)} explainers)")))
        except Exception as exc:  # a figure must never lose the leaderboard
            warnings.warn(f"{what} failed: {type(exc).__name__}: {exc}", stacklevel=3)
    return paths


#: The order of the controls' columns in an overlay figure (after the methods).
_CONTROL_ORDER = ("positive-control", "null-control", "negative-control", "other-control")


def _column_order(labels: Sequence[str], roles: Mapping[str, str]) -> list[str]:
    """Methods by name, then the controls by role (positive, null, negative, other) and name."""
    methods = sorted(label for label in labels if label not in roles)
    controls = sorted((label for label in labels if label in roles), key=lambda label: (
        _CONTROL_ORDER.index(roles[label]) if roles[label] in _CONTROL_ORDER else len(_CONTROL_ORDER), label))
    return methods + controls


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
    analysis: Analysis | None = None,
) -> str:
    """``report.md``: leaderboard, per-model classification tables, the statistics of every
    family (with ``analysis``; else the primary metric per class and the paired comparisons),
    figures (linked relative to ``relative_to``), failed cells and provenance."""
    prov = provenance_info if provenance_info is not None else provenance(df)
    if comparisons is None and analysis is not None:
        comparisons = analysis.comparisons
    if comparisons is None:
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
                extra.append(f"accuracy {format_number(t['accuracy'])}")
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
    per_class = per_class_markdown(df) if analysis is None else ""
    if analysis is not None and rows:
        out += statistics_markdown(df, analysis, full=True)
    if per_class and head is not None:
        out += [f"## {md_cell(head.header)} per class (mean [CI] (n) over the correctly classified test images)",
                "", per_class, ""]
    shown = bool(analysis is not None and rows)
    if not shown:
        out += ["## Paired comparisons between explainers (same images)", ""]
    if not shown and comparisons is not None and not comparisons.empty:
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
            out += [f"## {md_cell(section)}", ""]
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
    metric rows are ranked by (default: the first). The statistics and the comparisons are
    those of :func:`bench.publish.leaderboard.build` (the runs' ``[leaderboard]`` options).
    """
    df = collect(results_dir, control=control, primary=primary)
    opts = options_from_manifests(df.attrs.get("manifests", {}))
    comparisons = leaderboard_comparisons(df, scope=opts.comparisons, seed=opts.seed, min_effect=opts.min_effect,
                                          n_resamples=opts.n_resamples, confidence=opts.confidence)
    analysis = safe_analyse(df, opts, comparisons=comparisons)
    df = analysis.attach(attach_gain_ci(df, primary_comparisons(comparisons, df), control))
    path = Path(out) if out is not None else Path(results_dir) / "report.md"
    figs = make_figures(df, path.parent / "figures", analysis=analysis) if figures else {}
    atomic_write_text(path, render_report(df, comparisons=comparisons, figures=figs,
                                          provenance_info=provenance(df), relative_to=path.parent,
                                          analysis=analysis))
    return path
