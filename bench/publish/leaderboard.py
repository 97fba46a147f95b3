"""Build the leaderboard files: collect the runs, compare, rank, draw, write every format.

:func:`build` (``bench leaderboard``, and the end of ``bench run``) reads every finished
cell under ``<results>/runs/`` (:func:`bench.publish.collect.collect`), computes the
statistics (:func:`bench.publish.analysis.analyse`: the paired comparisons the leaderboard
keeps, ranks with intervals, metric power from the controls, sanity gates, agreement, the
aggregate rank, per class and across models), puts the paired gain over the control and
its CI, the primary metric's rank and the sanity flags into the rows, draws the figures
(:func:`bench.publish.report.make_figures`) and writes ``leaderboard.{md,csv,json,html,tex}``
(:func:`bench.publish.formats.render`) and ``report.md`` atomically. :func:`build_leaderboard`
is the same, returning the paths. The statistics' options are the ``[leaderboard]`` keys of
the most recent run's config (:func:`bench.publish.analysis.options_from_manifests`) unless
given. :func:`analyse_run` is the same analysis for one run's own cells, writing nothing
(:meth:`bench.pipeline.driver.RunResult.tables`).

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

from bench.pipeline.store import atomic_write_text, read_json
from bench.publish.analysis import Analysis, StatisticsOptions, options_from_manifests, safe_analyse
from bench.publish.collect import collect, control_argument
from bench.publish.comparisons import (
    COMPARISON_COLUMNS,
    attach_gain_ci,
    leaderboard_comparisons,
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
    "analyse_run",
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
    """What :func:`build` made: the rows (gain CIs, ranks and flags attached), the comparisons,
    the statistics (:class:`bench.publish.analysis.Analysis`), the files."""

    frame: pd.DataFrame
    comparisons: pd.DataFrame
    paths: dict[str, Path] = field(default_factory=dict)
    out_dir: Path = Path(".")
    #: whether the files are the published ones (the top of :data:`PUBLISHED_DIR`)
    published: bool = False
    #: whether the files went to the local folder of the published one (not tracked)
    local: bool = False
    #: the statistics tables (ranks, power, sanity, agreement, aggregate, per class, cross-model)
    analysis: Analysis | None = None

    def tables(self) -> dict[str, pd.DataFrame]:
        """``{"rows": the rows frame (public columns), "ranks", "comparisons", "power", "normalised",
        "sanity", "kendall", "alpha", "aggregate", "per_class", "cross_model", "notes"}``
        (:data:`bench.publish.analysis.ANALYSIS_TABLES`)."""
        from bench.publish.collect import public

        out = {"rows": public(self.frame)}
        if self.analysis is not None:
            out.update(self.analysis.tables())
        else:
            out["comparisons"] = self.comparisons
        return out

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


def _board(
    results_dir: str | Path,
    *,
    control: str | None,
    primary: str | None,
    metrics: Sequence[str] | None,
    options: StatisticsOptions | None,
    runs: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, Analysis]:
    """collect -> statistics -> the rows with gain CIs, ranks and flags attached."""
    df = collect(results_dir, control=control, primary=primary, metrics=metrics, runs=runs)
    opts = options if options is not None else options_from_manifests(df.attrs.get("manifests", {}))
    try:
        comparisons = leaderboard_comparisons(df, scope=opts.comparisons, seed=opts.seed, min_effect=opts.min_effect,
                                          n_resamples=opts.n_resamples, confidence=opts.confidence)
    except Exception as exc:  # the statistics must never cost the leaderboard itself
        warnings.warn(f"paired comparisons skipped: {type(exc).__name__}: {exc}", stacklevel=3)
        comparisons = pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    analysis = safe_analyse(df, opts, comparisons=comparisons)
    df = attach_gain_ci(df, primary_comparisons(comparisons, df), control)
    df = analysis.attach(df)
    return df, analysis


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
    options: StatisticsOptions | None = None,
) -> Leaderboard:
    """Write ``<out>/leaderboard.<fmt>`` for every format (atomically) and return a :class:`Leaderboard`.

    ``<out>`` is ``out_dir``, else :func:`output_dir` of ``results_dir`` (``publish``: the
    published files themselves). With ``figures`` the PNGs go to ``<out>/figures/`` and are
    embedded in the HTML; with ``report`` ``<out>/report.md`` is written too (key
    ``"report"`` of ``paths``). The statistics (:func:`bench.publish.analysis.analyse`) use
    ``options`` (default: the ``[leaderboard]`` keys of the most recent run's config): the
    paired comparisons kept are every pair for the primary metric and each explainer against
    the reference control for the others (``leaderboard.comparisons = "all"``: every pair).
    ``control`` picks the gain reference (default: each family's null control, see
    :func:`bench.publish.collect.add_gain`); ``baseline=`` is its deprecated alias.
    ``primary`` names the metric rows are ranked by and gains use (default: the first);
    ``metrics`` orders the metric columns (the config's metrics; the rest follow by name).
    """
    fmts = [normalise_format(f) for f in formats]
    out = Path(out_dir) if out_dir is not None else output_dir(results_dir, publish=publish)
    control = control_argument(control, baseline)
    df, analysis = _board(results_dir, control=control, primary=primary, metrics=metrics, options=options)
    comparisons = analysis.comparisons
    prov = provenance(df)
    figs: dict[str, list[Path]] = {}
    if figures and ("html" in fmts or report) and not df.empty:
        figs = make_figures(df, out / "figures", analysis=analysis)
    written: dict[str, Path] = {}
    for fmt in fmts:
        path = out / f"leaderboard.{fmt}"
        atomic_write_text(path, render(df, fmt, provenance_info=prov, comparisons=comparisons, figures=figs,
                                       analysis=analysis))
        written[fmt] = path
    if report:
        path = out / "report.md"
        atomic_write_text(path, render_report(df, comparisons=comparisons, figures=figs,
                                              provenance_info=prov, relative_to=out, analysis=analysis))
        written["report"] = path
    return Leaderboard(
        frame=df, comparisons=comparisons, paths=written, out_dir=out,
        published=is_published_folder(out),
        local=is_published_folder(results_dir) and not is_published_folder(out),
        analysis=analysis,
    )


def analyse_run(run_dir: str | Path, *, options: StatisticsOptions | None = None) -> Leaderboard:
    """The leaderboard of one run's own cells (``<results>/runs/<run>``), computed, not written.

    The gain reference, primary metric, metric order and statistics options are the ones the
    run's manifest recorded (its resolved config). ``paths`` is empty.
    """
    run = Path(run_dir)
    manifest_path = run / "manifest.json"
    manifest = read_json(manifest_path) if manifest_path.exists() else {}
    cfg = manifest.get("config") or {}
    board_cfg = cfg.get("leaderboard") or {}
    names = (manifest.get("metrics") or {}).get("names") or None
    primary = (manifest.get("metrics") or {}).get("primary") or board_cfg.get("primary") or None
    opts = options if options is not None else options_from_manifests({run.name: manifest})
    df, analysis = _board(run.parent.parent, control=str(board_cfg.get("control") or ""), primary=primary,
                          metrics=names, options=opts, runs=[run.name])
    return Leaderboard(frame=df, comparisons=analysis.comparisons, out_dir=run, analysis=analysis)


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
    options: StatisticsOptions | None = None,
) -> dict[str, Path]:
    """:func:`build`, returning only ``{format (and "report"): path}`` of the files written."""
    return build(results_dir, formats=formats, out_dir=out_dir, publish=publish, control=control,
                 figures=figures, report=report, baseline=baseline, primary=primary, metrics=metrics,
                 options=options).paths
