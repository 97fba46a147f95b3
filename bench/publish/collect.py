"""Finished cell records -> the leaderboard's rows (a :class:`pandas.DataFrame`).

``collect(results_dir)`` reads ``results/runs/*/cells/*.json`` (cell records,
:class:`bench.pipeline.record.CellRecord`, any schema it can read), one row per (dataset,
model, weights, explainer, perturbation, settings fingerprint, explainer-params
fingerprint): the latest *ok* cell across all runs wins. The settings fingerprint stands
for every shared input that can change a number (grid, curve orders, selected metrics,
perturbation, dataset, model and training parameters, weights content, ``max_images``,
seed, bootstrap, confidence); rows are paired and compared only within one fingerprint.
The metric columns are the metrics the records hold (:func:`metric_columns`: one per
metric and parameter set, value, CI, n, n_excluded, direction), in the config's order; the
primary one ranks the rows and carries the gain (:func:`add_gain`).

Nothing here knows a plugin by name: "gain over control" is measured against each
family's null-control explainer, found by the role its spec declares and its cell records
(:mod:`bench.pipeline.controls`), or the one ``control`` names; controls are marked
(``role`` column) and listed after the methods. Rendering is elsewhere
(:mod:`bench.publish.formats`); this module only reads and shapes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import ConfigError, DataError
from bench.pipeline.controls import (
    CONTROL_KEY,
    METHOD_ROLE,
    NULL_CONTROL_ROLE,
    record_role,
    role_rank,
)
from bench.pipeline.metrics import metric_params_key
from bench.pipeline.record import CellRecord, MetricResult, RecordError
from bench.pipeline.runs import load_manifests, runs_dir
from bench.pipeline.settings import cell_settings, explainer_params_key, settings_key, weights_hash
from bench.pipeline.store import read_json
from bench.publish.text import as_float

#: The components of a row (what a failed attempt is matched on).
COMPONENT_COLUMNS: tuple[str, ...] = ("dataset", "model", "weights", "explainer", "perturbation")
#: One row per value of these: the components, the settings fingerprint and the explainer's own
#: parameters' fingerprint (both short hex prefixes, unique within a leaderboard).
KEY_COLUMNS: tuple[str, ...] = (*COMPONENT_COLUMNS, "settings", "explainer_params")
#: Rows are paired (gains, paired comparisons, per-class tables) only within one value of these.
PAIR_COLUMNS: tuple[str, ...] = ("dataset", "model", "weights", "perturbation", "settings")
#: Shortest shown length of a fingerprint (longer where two would share a prefix).
SHORT_KEY = 6

#: The columns before the metric columns.
LEAD_COLUMNS: tuple[str, ...] = (
    *KEY_COLUMNS,
    "role",
    "recall_macro",
    "f1_macro",
    "precision_macro",
    "accuracy",
)
#: The columns of each metric column ``M`` (its id, :class:`MetricColumn`): value, CI, n and the
#: count of non-finite per-image values left out of them.
METRIC_SUFFIXES: tuple[str, ...] = ("", "_ci_low", "_ci_high", "_n", "_n_excluded")
#: The gain of the primary metric over the reference control (``primary`` names the metric column).
GAIN_COLUMNS: tuple[str, ...] = ("primary", "gain_over_baseline", "gain_ci_low", "gain_ci_high", "baseline")
#: The primary metric's rank among the methods of the row's family (paired bootstrap interval,
#: P(best); NaN for a control: a reference row, not ranked), that metric's power on the family's
#: controls (:data:`bench.ranking.CONTROLS_CORRECT` ...; ``""``: not measured) and the sanity
#: gates the row's explainer fails (their texts, ``"; "``-joined). Filled by
#: :func:`bench.publish.leaderboard.build` (:mod:`bench.publish.analysis`); blank from :func:`collect`.
RANK_COLUMNS: tuple[str, ...] = ("rank", "rank_low", "rank_high", "p_best", "power", "sanity_flags")
#: The columns after the metrics.
TAIL_COLUMNS: tuple[str, ...] = (
    "metric_notes",
    "n_images",
    "constant_heatmaps",
    "seconds_per_map",
    "passes_per_map",
    "evaluate_seconds",
    "explain_seconds",
    "forward_passes",
    "passes_per_second",
    "grid",
    "sigma",
    "seed",
    "strategy",
    "run_id",
    "cell_id",
    "finished",
)
#: The fixed machine-readable columns of :func:`collect` (CSV and JSON use these names); the
#: metric columns sit between the lead and the gain columns: :func:`columns_of` gives them all.
COLUMNS: tuple[str, ...] = (*LEAD_COLUMNS, *GAIN_COLUMNS, *RANK_COLUMNS, *TAIL_COLUMNS)

FAILED_COLUMNS: tuple[str, ...] = (
    *COMPONENT_COLUMNS, "run_id", "cell_id", "stage", "error", "finished", "shown_instead",
)


@dataclass(frozen=True)
class MetricColumn:
    """One metric column of a leaderboard: a metric under one parameter set.

    ``id`` is the column's name in the tables: the metric's name, plus ``.<params
    fingerprint>`` where the records hold the metric under more than one parameter set
    (values under different parameters are never compared), or prefixed ``metric.``
    where the name is one of the fixed columns.
    """

    id: str
    name: str
    params_key: str
    label: str
    higher_is_better: bool
    family: str
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    @property
    def header(self) -> str:
        """``"AOPC ↑"``: the label and its direction."""
        return f"{self.label} {self.arrow}"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "params_key": self.params_key, "label": self.label,
                "higher_is_better": self.higher_is_better, "family": self.family,
                "description": self.description, "params": dict(self.params)}


class SharedAttr(dict):
    """A mapping kept in ``DataFrame.attrs`` that pandas shares instead of deep-copying.

    pandas deep-copies ``attrs`` on every operation that makes a new frame (``__finalize__``),
    so the run manifests (every run's resolved config) held there were copied thousands of
    times per leaderboard (12 s of a 63 s build, measured). The frame's consumers only read
    it; treat it as read-only.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedAttr:
        return self


def _metric_key(m: MetricResult) -> str:
    return m.params_key or metric_params_key(m.params)


# ---------------------------------------------------------------------------------------
# reading run folders
# ---------------------------------------------------------------------------------------
def _parse_time(value: Any) -> datetime:
    """An ISO timestamp as an aware UTC datetime; unparsable or missing -> the epoch."""
    if isinstance(value, str) and value:
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return datetime.fromtimestamp(0, UTC)
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    return datetime.fromtimestamp(0, UTC)


def _iter_cells(results_dir: str | Path, runs: Sequence[str] | None = None) -> Iterable[tuple[Path, CellRecord]]:
    root = runs_dir(results_dir)
    if not root.is_dir():
        raise DataError(
            f"no runs under {root}: nothing to put on a leaderboard (run `bench run` first, "
            f"or pass the results folder that holds runs/)"
        )
    wanted = None if runs is None else {str(r) for r in runs}
    for path in sorted(root.glob("*/cells/*.json")):
        if wanted is not None and path.parent.parent.name not in wanted:
            continue
        try:
            cell = read_json(path)
        except (OSError, ValueError) as exc:
            warnings.warn(f"skipping unreadable cell file {path}: {exc}", stacklevel=3)
            continue
        if not isinstance(cell, dict):
            warnings.warn(f"skipping cell file {path}: not a JSON object", stacklevel=3)
            continue
        try:
            record = CellRecord.from_dict(cell, source=str(path))
        except RecordError as exc:
            warnings.warn(f"skipping {exc}", stacklevel=3)
            continue
        yield path, record


def _grid_text(grid: Any) -> str:
    if isinstance(grid, Sequence) and not isinstance(grid, str):
        return "x".join(str(g) for g in grid)
    if grid is None:
        return ""
    return f"{grid}x{grid}"


def _legacy_weights_hash(path: Path, cell: CellRecord) -> dict[str, Any]:
    """The weights hash of an old cell record, from its run's model report (``models/<id>.json``)."""
    model_json = path.parent.parent / "models" / f"{cell.dataset}__{cell.model}.json"
    try:
        rec = read_json(model_json) if model_json.exists() else {}
    except (OSError, ValueError):
        return {}
    return weights_hash(rec) if isinstance(rec, Mapping) else {}


def cell_settings_of(
    path: Path, cell: CellRecord, manifest: Mapping[str, Any]
) -> tuple[dict[str, Any], str]:
    """(settings block, full settings fingerprint) of a cell record.

    Records written before the ``settings`` block existed get one rebuilt from their
    ``params`` and their run's manifest (training recipe, bootstrap, dataset
    fingerprint) and model report (weights hash), with the same function the runner uses.
    """
    block = cell.settings
    if isinstance(block, Mapping):
        key = cell.settings_key
        return dict(block), str(key) if isinstance(key, str) and key else settings_key(block)
    params = cell.params
    cfg = manifest.get("config") if isinstance(manifest.get("config"), Mapping) else {}
    ds = manifest.get("dataset") if isinstance(manifest.get("dataset"), Mapping) else {}
    aopc_cfg = cfg.get("aopc") if isinstance(cfg.get("aopc"), Mapping) else {}
    block = cell_settings(
        params,
        dataset_fingerprint=ds.get("fingerprint") if ds.get("name") == cell.dataset else None,
        weights_hash=_legacy_weights_hash(path, cell),
        training=cfg.get("training") if isinstance(cfg.get("training"), Mapping) else None,
        bootstrap=aopc_cfg.get("bootstrap"),
    )
    return block, settings_key(block)


def _metric_notes(cell: CellRecord) -> list[str]:
    """What a row's metrics did not give: failed or skipped metrics, non-finite values left out."""
    notes = []
    for m in cell.metrics.values():
        if not m.ok:
            notes.append(f"{m.name} {m.status}: {m.error or '?'}")
        elif m.n_excluded:
            notes.append(f"{m.name}: {m.n_excluded} non-finite value(s) left out")
    return notes


def _cell_row(path: Path, cell: CellRecord, manifests: Mapping[str, Any]) -> dict[str, Any]:
    run_id = str(cell.run_id or path.parent.parent.name)
    manifest = manifests.get(path.parent.parent.name, {})
    params = cell.params
    aopc_params = params.get("aopc") or {}
    pert_params = params.get("perturbation") or {}
    classification = cell.classification or {}
    timings = cell.timings
    finished = cell.finished or manifest.get("finished") or manifest.get("created") or ""
    settings, skey = cell_settings_of(path, cell, manifest)
    explainer_params = dict(params.get("explainer") or {})
    ekey = cell.explainer_params_key or explainer_params_key(explainer_params)
    return {
        "dataset": cell.dataset,
        "model": cell.model,
        "weights": "" if cell.weights is None else str(cell.weights),
        "explainer": cell.explainer,
        "perturbation": cell.perturbation,
        "settings": skey,  # shortened to a unique prefix by collect()
        "explainer_params": ekey,
        "role": record_role({"provenance": cell.provenance, "explainer": cell.explainer}),
        "recall_macro": as_float(classification.get("recall_macro")),
        "f1_macro": as_float(classification.get("f1_macro")),
        "precision_macro": as_float(classification.get("precision_macro")),
        "accuracy": as_float(classification.get("accuracy")),
        "primary": "",
        "gain_over_baseline": math.nan,
        "gain_ci_low": math.nan,
        "gain_ci_high": math.nan,
        "baseline": "",
        "rank": math.nan,
        "rank_low": math.nan,
        "rank_high": math.nan,
        "p_best": math.nan,
        "power": "",
        "sanity_flags": "",
        "metric_notes": "; ".join(_metric_notes(cell)),
        "n_images": cell.n_images,
        "constant_heatmaps": cell.constant_heatmaps,
        "seconds_per_map": as_float(timings.seconds_per_map),
        "passes_per_map": as_float(timings.passes_per_map),
        "evaluate_seconds": as_float(timings.evaluate_seconds),
        "explain_seconds": as_float(timings.explain_seconds),
        "forward_passes": int(timings.forward_passes or 0),
        "passes_per_second": as_float(timings.passes_per_second),
        "grid": _grid_text(aopc_params.get("grid")),
        "sigma": as_float(pert_params.get("sigma")),
        "seed": aopc_params.get("seed", (manifest.get("seeds") or {}).get("run")),
        "strategy": str(cell.strategy or ""),
        "run_id": run_id,
        "cell_id": cell.cell_id or path.stem,
        "finished": str(finished),
        "_time": _parse_time(finished),
        "_path": str(path),
        "_status": cell.status,
        "_error": cell.error,
        "_stage": cell.stage,
        "_orders": list(cell.orders or aopc_params.get("orders") or []),
        "_confidence": as_float(aopc_params.get("confidence", 0.95)),
        "_pert_params": dict(pert_params),
        "_curves_file": cell.curves_file,
        "_heatmaps_file": cell.heatmaps_file,
        "_settings": settings,
        "_explainer_params": explainer_params,
        "_model_key": str(cell.keys.get("model") or ""),
        "_metrics": dict(cell.metrics),
    }


def metric_columns(rows: Sequence[Mapping[str, Any]], order: Sequence[str] | None = None) -> list[MetricColumn]:
    """The metric columns of a leaderboard: every (metric, parameter set) an ok result holds.

    Ordered by ``order`` (the config's metrics), then the metric order of the most recent
    record, then name. ``rows`` are :func:`collect`'s rows (their ``_metrics``).
    """
    found: dict[str, dict[str, MetricResult]] = {}  # name -> params key -> a result
    latest: list[str] = []
    latest_time = None
    for row in rows:
        metrics: Mapping[str, MetricResult] = row.get("_metrics") or {}
        for name, m in metrics.items():
            if m.ok:
                found.setdefault(name, {}).setdefault(_metric_key(m), m)
        t = row.get("_time")
        if metrics and (latest_time is None or (t is not None and t >= latest_time)):
            latest, latest_time = list(metrics), t
    given = list(order or [])

    def rank(name: str) -> tuple[int, int, str]:
        if name in given:
            return (0, given.index(name), name)
        if name in latest:
            return (1, latest.index(name), name)
        return (2, 0, name)

    columns = []
    fixed = set(COLUMNS) | {f"{c}{suffix}" for c in COLUMNS for suffix in METRIC_SUFFIXES}
    for name in sorted(found, key=rank):
        variants = found[name]
        short = short_keys(variants)
        for pkey in sorted(variants):
            m = variants[pkey]
            cid = name if len(variants) == 1 else f"{name}.{short[pkey]}"
            if cid in fixed:
                cid = f"metric.{cid}"
            columns.append(MetricColumn(
                id=cid, name=name, params_key=pkey,
                label=m.display_label if len(variants) == 1 else f"{m.display_label} [{short[pkey]}]",
                higher_is_better=m.higher_is_better, family=m.family, description=m.description,
                params=dict(m.params),
            ))
    return columns


def _fill_metrics(df: pd.DataFrame, columns: Sequence[MetricColumn]) -> pd.DataFrame:
    """One value, CI, n and n_excluded column per metric column, from each row's ``_metrics``."""
    out = df.copy()
    cells = list(df["_metrics"]) if "_metrics" in df.columns else [{}] * len(df)
    for c in columns:
        hits = []
        for metrics in cells:
            m = (metrics or {}).get(c.name) if isinstance(metrics, Mapping) else None
            hits.append(m if m is not None and m.ok and _metric_key(m) == c.params_key else None)
        cis = [m.ci if m is not None and m.ci is not None else (math.nan, math.nan) for m in hits]
        out[c.id] = np.asarray([as_float(m.value) if m is not None else math.nan for m in hits], dtype=float)
        out[f"{c.id}_ci_low"] = np.asarray([as_float(lo) for lo, _ in cis], dtype=float)
        out[f"{c.id}_ci_high"] = np.asarray([as_float(hi) for _, hi in cis], dtype=float)
        out[f"{c.id}_n"] = pd.array([m.n if m is not None else None for m in hits], dtype="Int64")
        out[f"{c.id}_n_excluded"] = pd.array([m.n_excluded if m is not None else None for m in hits],
                                             dtype="Int64")
    return out


def metric_columns_of(df: pd.DataFrame) -> list[MetricColumn]:
    """The :class:`MetricColumn` s of a :func:`collect` frame (``df.attrs["metrics"]``)."""
    return [MetricColumn(**c) for c in df.attrs.get("metrics", [])]


def shown_metric_columns(df: pd.DataFrame) -> list[MetricColumn]:
    """The metric columns some row of ``df`` has a value in (the ones the tables show)."""
    return [c for c in metric_columns_of(df) if c.id in df.columns and df[c.id].notna().any()]


def primary_column(df: pd.DataFrame) -> MetricColumn | None:
    """The metric column the frame is ranked by (``df.attrs["primary"]``), else its first one."""
    columns = metric_columns_of(df)
    chosen = df.attrs.get("primary")
    for c in columns:
        if c.id == chosen:
            return c
    return columns[0] if columns else None


def _choose_primary(columns: Sequence[MetricColumn], primary: str | None) -> str:
    if not columns:
        return ""
    if primary:
        for c in columns:
            if primary in (c.id, c.name):
                return c.id
        warnings.warn(
            f"leaderboard.primary = {primary!r}: no record holds that metric "
            f"(metrics: {', '.join(c.id for c in columns)}); ranking by {columns[0].id!r}",
            stacklevel=3,
        )
    return columns[0].id


def columns_of(df: pd.DataFrame) -> list[str]:
    """Every public column of a :func:`collect` frame: lead, metric columns, gain, rank and flags, tail."""
    metric = [f"{c.id}{suffix}" for c in metric_columns_of(df) for suffix in METRIC_SUFFIXES]
    return [*LEAD_COLUMNS, *metric, *GAIN_COLUMNS, *RANK_COLUMNS, *TAIL_COLUMNS]


def short_keys(keys: Iterable[str], length: int = SHORT_KEY) -> dict[str, str]:
    """``{full key: shortest prefix (at least ``length``) that no other key shares}``."""
    unique = sorted({str(k) for k in keys})
    n = length
    while n < max((len(k) for k in unique), default=0) and len({k[:n] for k in unique}) < len(unique):
        n += 1
    return {k: k[:n] for k in unique}


def empty_frame(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def collect(
    results_dir: str | Path = "results",
    *,
    control: str | None = None,
    baseline: str | None = None,
    primary: str | None = None,
    metrics: Sequence[str] | None = None,
    runs: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per :data:`KEY_COLUMNS` value; the latest ok cell wins.

    ``runs``: read only the cells of these run ids (folders under ``runs/``; default: every run),
    e.g. one run's own table (:meth:`bench.pipeline.driver.RunResult.tables`).

    The key is (dataset, model, weights, explainer, perturbation, settings,
    explainer_params): ``settings`` is the fingerprint of every shared input that can
    change a number (the cell record's ``settings`` block, rebuilt from ``params`` for
    older records), ``explainer_params`` that of the explainer's own parameters; both
    are shown as the shortest unique hex prefix (at least :data:`SHORT_KEY` characters).
    "Latest" is the cell's ``finished`` time (then its run's), ties broken by run id.
    Columns are :func:`columns_of` (:data:`COLUMNS` with the metric columns the records
    hold, :func:`metric_columns`, in the order of ``metrics`` then name), plus hidden
    ``_``-prefixed bookkeeping columns (the cell file, the curves/heatmaps files, the
    settings block, the metric results) that the renderers drop. ``primary`` names the
    metric rows are ranked by and the gain is computed on (default: the first column).
    Rows are sorted by dataset, methods before controls (``role``), then the primary metric,
    best first. ``gain_over_baseline`` is the primary metric minus that of the family's reference control
    (:func:`add_gain`: the null control, or the explainer ``control`` names; its name is in
    ``baseline``) with the same :data:`PAIR_COLUMNS` (same settings fingerprint; NaN when
    there is none). ``baseline=`` is a deprecated alias of ``control``. ``df.attrs`` holds
    ``results_dir``, ``control``, ``baseline`` (the reference's name when every family
    shares one, else ``""``), ``failed`` (a DataFrame of :data:`FAILED_COLUMNS`: cells
    whose latest attempt failed), ``manifests``, ``metrics`` (the :class:`MetricColumn` s as
    dicts) and ``primary`` (the primary metric column's id).
    """
    control = control_argument(control, baseline)
    manifests = load_manifests(results_dir)
    rows = [_cell_row(path, cell, manifests) for path, cell in _iter_cells(results_dir, runs)]
    all_rows = pd.DataFrame(rows) if rows else empty_frame([*COLUMNS, "_time", "_status"])
    key = list(KEY_COLUMNS)
    if rows:
        for col in ("settings", "explainer_params"):
            all_rows[col] = all_rows[col].map(short_keys(all_rows[col]))
        all_rows = all_rows.sort_values(["_time", "run_id", "cell_id"], kind="stable")
        ok = all_rows[all_rows["_status"] == "ok"]
        latest_ok = ok.drop_duplicates(key, keep="last")
    else:
        ok = latest_ok = all_rows
    df = latest_ok.copy()
    for col in ("n_images", "constant_heatmaps"):
        if col in df.columns:
            df[col] = pd.array([None if v is None or pd.isna(v) else int(v) for v in df[col].tolist()],
                               dtype="Int64")
    columns = metric_columns(df.to_dict("records"), order=metrics) if len(df) else []
    df = _fill_metrics(df, columns)
    primary_id = _choose_primary(columns, primary)
    df["primary"] = primary_id
    df.attrs["metrics"] = [c.to_dict() for c in columns]
    df.attrs["primary"] = primary_id
    df = add_gain(df, control)
    df = sort_rows(df)
    df.attrs["metrics"] = [c.to_dict() for c in columns]
    df.attrs["primary"] = primary_id
    df.attrs["results_dir"] = str(results_dir)
    df.attrs["control"] = control or ""
    df.attrs["baseline"] = reference_name(df)
    df.attrs["failed"] = _failed(all_rows, latest_ok)
    df.attrs["manifests"] = SharedAttr(manifests)
    return df


def _failed(all_rows: pd.DataFrame, latest_ok: pd.DataFrame) -> pd.DataFrame:
    """Cells whose most recent attempt failed (newer than any ok cell of the same components).

    Matched on :data:`COMPONENT_COLUMNS` only: a cell that fails before its perturbation
    ran cannot know its full settings. ``shown_instead`` lists the runs of the ok rows
    of the same components (each under its own settings fingerprint).
    """
    if all_rows.empty:
        return empty_frame(FAILED_COLUMNS)
    key = list(COMPONENT_COLUMNS)
    latest = all_rows.drop_duplicates(key, keep="last")
    failed = latest[latest["_status"] != "ok"].copy()
    ok_runs: dict[tuple[Any, ...], list[str]] = {}
    for _, r in latest_ok.iterrows():
        runs = ok_runs.setdefault(tuple(r[k] for k in key), [])
        if r["run_id"] not in runs:
            runs.append(str(r["run_id"]))
    failed["shown_instead"] = [", ".join(ok_runs.get(tuple(r[k] for k in key), []))
                               for _, r in failed.iterrows()]
    failed["stage"] = [("" if s is None else str(s)) for s in failed["_stage"]]
    failed["error"] = [("" if e is None else str(e)) for e in failed["_error"]]
    return failed[list(FAILED_COLUMNS)].reset_index(drop=True)


def pair_columns(df: pd.DataFrame) -> list[str]:
    """The :data:`PAIR_COLUMNS` that ``df`` has (a hand-built frame may lack ``settings``)."""
    return [c for c in PAIR_COLUMNS if c in df.columns]


def control_argument(control: str | None, baseline: str | None) -> str:
    """``control``, or the deprecated ``baseline=`` keyword (a FutureWarning)."""
    if baseline is None:
        return control or ""
    warnings.warn("baseline= is deprecated: pass control= (the reference is found by role when "
                  "control is empty)", FutureWarning, stacklevel=3)
    if control and control != baseline:
        raise ValueError(f"control={control!r} and the deprecated baseline={baseline!r} disagree")
    return baseline


def _check_one_null_control(nulls: pd.DataFrame, group: list[str]) -> None:
    """Two null controls in one family and no ``control``: a ConfigError naming the key."""
    if nulls.empty or not group:
        return
    for key, fam in nulls.groupby(group, sort=False, dropna=False):
        names = sorted({str(e) for e in fam["explainer"]})
        if len(names) > 1:
            where = ", ".join(f"{c} {v!r}" for c, v in zip(group, key if isinstance(key, tuple) else (key,),
                                                            strict=True))
            raise ConfigError(
                f"{len(names)} null controls ran under one {where}: {', '.join(names)}; choose the one "
                f"\"gain over control\" is measured against with {CONTROL_KEY} "
                f"(bench leaderboard --control {names[0]})"
            )


def add_gain(df: pd.DataFrame, control: str | None = None, *, column: str | None = None) -> pd.DataFrame:
    """Fill ``gain_over_baseline`` = metric - the metric of the family's reference control.

    The metric is ``column`` (default: the frame's primary metric, :func:`primary_column`).

    A family is one :data:`PAIR_COLUMNS` value (same settings fingerprint). Its reference is
    the explainer named ``control`` when given, else its null control: the row whose ``role``
    is ``null-control`` (:mod:`bench.pipeline.controls`); two null controls in one family without a
    ``control`` are a :class:`~bench.errors.ConfigError` naming ``leaderboard.control``. The
    reference's name goes into ``baseline`` (``""`` where a family has none: gain NaN).
    Where the reference ran with several parameter sets under one fingerprint, the most
    recent row is the reference; its ``explainer_params`` goes into the hidden
    ``_baseline_params`` column (used by :func:`bench.publish.comparisons.attach_gain_ci` to pick the
    matching paired comparison).
    """
    df = df.copy()
    if df.empty:
        return df
    df["baseline"] = ""
    df["gain_over_baseline"] = math.nan
    df["_baseline_params"] = ""
    head = primary_column(df)
    column = column or (head.id if head is not None else "")
    if not column or column not in df.columns:
        return df
    group = pair_columns(df)
    if control:
        base_rows = df[df["explainer"] == control]
    elif "role" in df.columns:
        base_rows = df[df["role"] == NULL_CONTROL_ROLE]
        _check_one_null_control(base_rows, group)
    else:
        return df
    if base_rows.empty or not group:
        return df
    if "_time" in base_rows.columns:
        base_rows = base_rows.sort_values("_time", kind="stable")
    base_rows = base_rows.drop_duplicates(group, keep="last").set_index(group)
    keys = pd.MultiIndex.from_frame(df[group])
    ref = base_rows[column].reindex(keys).to_numpy(dtype=float)
    df["gain_over_baseline"] = df[column].to_numpy(dtype=float) - ref
    df["baseline"] = ["" if n is None or n != n else str(n) for n in base_rows["explainer"].reindex(keys)]
    if "explainer_params" in base_rows.columns:
        params = base_rows["explainer_params"].reindex(keys)
        df["_baseline_params"] = ["" if p is None or p != p else str(p) for p in params]
    return df


def reference_name(df: pd.DataFrame) -> str:
    """The reference control's name when every row with one shares it, else ``""``."""
    if df.empty or "baseline" not in df.columns:
        return ""
    names = {str(n) for n in df["baseline"] if isinstance(n, str) and n}
    return names.pop() if len(names) == 1 else ""


def sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Datasets in name order; within a dataset the methods, then the controls (reference lines),
    each by the primary metric (:func:`primary_column`), best first (missing last), then names."""
    if df.empty:
        return df.reset_index(drop=True)
    tie = [c for c in ("settings", "explainer_params") if c in df.columns]
    roles = df["role"] if "role" in df.columns else pd.Series(METHOD_ROLE, index=df.index)
    head = primary_column(df)
    if head is not None and head.id in df.columns:
        values = df[head.id].astype(float)
        key = -values if head.higher_is_better else values
    else:
        key = pd.Series(0.0, index=df.index)
    order = df.assign(_neg=key, _control=[role_rank(r) for r in roles]).sort_values(
        ["dataset", "_control", "_neg", "model", "weights", "explainer", "perturbation", *tie],
        kind="stable",
        na_position="last",
    )
    out = order.drop(columns=["_neg", "_control"]).reset_index(drop=True)
    out.attrs = dict(df.attrs)
    return out


def public(df: pd.DataFrame) -> pd.DataFrame:
    """The public columns of ``df`` (:func:`columns_of`; drops the ``_`` bookkeeping columns)."""
    wanted = columns_of(df)
    cols = [c for c in wanted if c in df.columns]
    out = df[cols].copy() if len(df.columns) else empty_frame(wanted)
    out.attrs = {}
    return out


# ---------------------------------------------------------------------------------------
# what the rows share
# ---------------------------------------------------------------------------------------
def run_dir_of(row: Mapping[str, Any]) -> Path:
    """The run folder of a :func:`collect` row (the folder above its cell file)."""
    return Path(row["_path"]).parent.parent


def confidence_of(df: pd.DataFrame) -> float:
    """The confidence level of the rows' intervals (the cells' ``params.aopc.confidence``; default 0.95)."""
    if "_confidence" not in df.columns or df.empty:
        return 0.95
    levels = {float(c) for c in df["_confidence"] if c == c}
    return levels.pop() if len(levels) == 1 else 0.95


def ci_label(df: pd.DataFrame) -> str:
    """``"95%"``, or ``"95%/90%"`` style when runs used different levels."""
    if "_confidence" not in df.columns or df.empty:
        return "95%"
    levels = sorted({float(c) for c in df["_confidence"] if c == c}, reverse=True) or [0.95]
    return "/".join(f"{100 * c:g}%" for c in levels)


def bootstrap_resamples(manifests: Mapping[str, Mapping[str, Any]], default: int = 10_000) -> int:
    """The largest ``aopc.bootstrap`` of the runs' resolved configs (default 10000)."""
    values = []
    for m in manifests.values():
        b = ((m.get("config") or {}).get("aopc") or {}).get("bootstrap")
        if isinstance(b, int) and not isinstance(b, bool) and b > 0:
            values.append(b)
    return max(values) if values else default


def constant_counts(df: pd.DataFrame) -> list[int]:
    """Per row, how many of its heatmaps were constant (0 when unknown)."""
    if "constant_heatmaps" not in df.columns or df.empty:
        return []
    return [0 if v is None or pd.isna(v) else int(v) for v in df["constant_heatmaps"]]


def ambiguous_explainers(df: pd.DataFrame) -> set[str]:
    """Explainers that appear with more than one parameter set: their rows show the params fingerprint."""
    if "explainer_params" not in df.columns or df.empty:
        return set()
    counts = df.groupby("explainer")["explainer_params"].nunique()
    return {str(e) for e, n in counts.items() if n > 1}

