"""Build the leaderboard files: collect the runs, compare, attach gain CIs, draw, write every format.

:func:`build` (``bench leaderboard``, and the end of ``bench run``) reads every finished
cell under ``<results>/runs/`` (:func:`bench.publish.collect.collect`), computes the paired
comparisons of every metric (:mod:`bench.publish.comparisons`), puts the paired gain over
the control and its CI into the rows, draws the figures (:func:`bench.publish.report.make_figures`)
and writes ``leaderboard.{md,csv,json,html,tex}`` (:func:`bench.publish.formats.render`) and
``report.md`` atomically. :func:`build_leaderboard` is the same, returning the paths.

Where the files go (:func:`output_dir`): the published leaderboard lives at the top of
:data:`PUBLISHED_DIR` (``results/``, tracked in git) and is rewritten only when asked
(``publish=True``, ``bench leaderboard --publish``); otherwise a build of that folder writes
under ``results/local/`` (ignored by git), so a run never dirties the checkout. Any other
results folder (``bench run --out DIR``, ``bench leaderboard --results DIR``) gets its files
at its top, as before.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.pipeline.store import atomic_write_text
from bench.publish.collect import collect, control_argument
from bench.publish.comparisons import (
    COMPARISON_COLUMNS,
    all_comparisons,
    attach_gain_ci,
    primary_comparisons,
)
from bench.publish.formats import FORMATS, normalise_format, render
from bench.publish.provenance import provenance
from bench.publish.report import make_figures, render_report
from bench.publish.summary import WIDTH, summary_text

__all__ = [
    "FORMATS",
    "LOCAL_DIR",
    "PUBLISHED_DIR",
    "Leaderboard",
    "build",
    "build_leaderboard",
    "is_published_folder",
    "output_dir",
]

#: The results folder whose top-level leaderboard files are tracked in git (relative to the
#: working directory: the checkout's ``results/``, the default ``run.out``).
PUBLISHED_DIR = Path("results")
#: The sub-folder of :data:`PUBLISHED_DIR` an unpublished build writes to (in ``.gitignore``).
LOCAL_DIR = "local"


def is_published_folder(results_dir: str | Path) -> bool:
    """True when ``results_dir`` is :data:`PUBLISHED_DIR` (the same folder, however spelt)."""
    return Path(results_dir).resolve() == PUBLISHED_DIR.resolve()


def output_dir(results_dir: str | Path, *, publish: bool = False) -> Path:
    """Where a build of ``results_dir`` writes its files.

    ``<results_dir>`` itself when publishing, or when it is not the published folder;
    ``<results_dir>/local/`` for an unpublished build of the published folder.
    """
    results = Path(results_dir)
    if publish or not is_published_folder(results):
        return results
    return results / LOCAL_DIR


@dataclass
class Leaderboard:
    """What :func:`build` made: the rows (gain CIs attached), the comparisons, the files."""

    frame: pd.DataFrame
    comparisons: pd.DataFrame
    paths: dict[str, Path] = field(default_factory=dict)
    out_dir: Path = Path(".")
    #: whether the files are the published ones (the top of :data:`PUBLISHED_DIR`)
    published: bool = False
    #: whether the files went to the local folder of the published one (not tracked)
    local: bool = False

    def publish_hint(self) -> str:
        if self.local:
            return (f"These files are not tracked by git; `bench leaderboard --publish` rewrites the published "
                    f"{PUBLISHED_DIR}/leaderboard.*, report.md and figures/ from the same runs.")
        if self.published:
            return ("Published: commit leaderboard.*, report.md and figures/ under "
                    f"{PUBLISHED_DIR}/ to update the tracked copy.")
        return ""

    def summary(self, width: int = WIDTH) -> str:
        """The compact plain-text table for a terminal, its legend and where the files are."""
        return summary_text(self.frame, self.paths, publish_hint=self.publish_hint(), width=width)


def build(
    results_dir: str | Path = "results",
    *,
    formats: Sequence[str] = FORMATS,
    out_dir: str | Path | None = None,
    publish: bool = False,
    control: str | None = None,
    figures: bool = True,
    report: bool = True,
    baseline: str | None = None,
    primary: str | None = None,
    metrics: Sequence[str] | None = None,
) -> Leaderboard:
    """Write ``<out>/leaderboard.<fmt>`` for every format (atomically) and return a :class:`Leaderboard`.

    ``<out>`` is ``out_dir``, else :func:`output_dir` of ``results_dir`` (``publish``: the
    published files themselves). With ``figures`` the PNGs go to ``<out>/figures/`` and are
    embedded in the HTML; with ``report`` ``<out>/report.md`` is written too (key
    ``"report"`` of ``paths``). Paired comparisons between explainers are computed for
    every metric column from the per-image values the records point to (the leaderboard
    pages show the primary metric's, ``report.md`` and the JSON all of them).
    ``control`` picks the gain reference (default: each family's null control, see
    :func:`bench.publish.collect.add_gain`); ``baseline=`` is its deprecated alias.
    ``primary`` names the metric rows are ranked by and gains use (default: the first);
    ``metrics`` orders the metric columns (the config's metrics; the rest follow by name).
    """
    fmts = [normalise_format(f) for f in formats]
    out = Path(out_dir) if out_dir is not None else output_dir(results_dir, publish=publish)
    control = control_argument(control, baseline)
    df = collect(results_dir, control=control, primary=primary, metrics=metrics)
    try:
        comparisons = all_comparisons(df)
    except Exception as exc:  # the statistics must never cost the leaderboard itself
        warnings.warn(f"paired comparisons skipped: {type(exc).__name__}: {exc}", stacklevel=2)
        comparisons = pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    df = attach_gain_ci(df, primary_comparisons(comparisons, df), control)
    prov = provenance(df)
    figs: dict[str, list[Path]] = {}
    if figures and ("html" in fmts or report) and not df.empty:
        figs = make_figures(df, out / "figures")
    written: dict[str, Path] = {}
    for fmt in fmts:
        path = out / f"leaderboard.{fmt}"
        atomic_write_text(path, render(df, fmt, provenance_info=prov, comparisons=comparisons, figures=figs))
        written[fmt] = path
    if report:
        path = out / "report.md"
        atomic_write_text(path, render_report(df, comparisons=comparisons, figures=figs,
                                              provenance_info=prov, relative_to=out))
        written["report"] = path
    return Leaderboard(
        frame=df, comparisons=comparisons, paths=written, out_dir=out,
        published=is_published_folder(out),
        local=is_published_folder(results_dir) and not is_published_folder(out),
    )


def build_leaderboard(
    results_dir: str | Path = "results",
    *,
    formats: Sequence[str] = FORMATS,
    out_dir: str | Path | None = None,
    publish: bool = False,
    control: str | None = None,
    figures: bool = True,
    report: bool = True,
    baseline: str | None = None,
    primary: str | None = None,
    metrics: Sequence[str] | None = None,
) -> dict[str, Path]:
    """:func:`build`, returning only ``{format (and "report"): path}`` of the files written."""
    return build(results_dir, formats=formats, out_dir=out_dir, publish=publish, control=control,
                 figures=figures, report=report, baseline=baseline, primary=primary, metrics=metrics).paths
