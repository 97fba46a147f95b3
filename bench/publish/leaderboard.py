"""The leaderboard: every finished cell of every run, one row per configuration.

``collect(results_dir)`` reads ``results/runs/*/cells/*.json`` (cell records,
:class:`bench.pipeline.record.CellRecord`, any schema it can read) into a
:class:`pandas.DataFrame`, one row per (dataset, model, weights, explainer,
perturbation, settings fingerprint, explainer-params fingerprint): the latest *ok*
cell across all runs wins. The settings fingerprint stands for every shared input
that can change a number (grid, curve orders, selected metrics, perturbation,
dataset, model and training parameters, weights content, ``max_images``, seed,
bootstrap, confidence); rows are paired and compared only within one fingerprint,
and the notes carry a legend of what each fingerprint stands for. The metric
columns are the metrics the records hold (:func:`metric_columns`: one per metric and
parameter set, value, CI, n, n_excluded, direction), in the config's order; the
primary one ranks the rows and carries the gain.
``render(df, fmt)`` turns it into Markdown (tabulate, GitHub style), CSV, JSON
(schema-versioned), self-contained HTML or LaTeX (booktabs), and
``build_leaderboard()`` writes ``results/leaderboard.{md,csv,json,html,tex}``
atomically, plus ``results/report.md`` and ``results/figures/*.png``.

Nothing here knows a plugin by name: "gain over control" is measured against each
family's null-control explainer, found by the role its spec declares and its cell
records (:mod:`bench.pipeline.controls`), or the one ``control`` names; controls are marked
(``role`` column) and listed after the methods. Every string that comes from a
plugin or a config (names, errors, parameters) is escaped in HTML and LaTeX.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError, ConfigError, DataError
from bench.pipeline.controls import (
    CONTROL_KEY,
    METHOD_ROLE,
    NULL_CONTROL_ROLE,
    is_control,
    record_role,
    role_rank,
)
from bench.pipeline.metrics import metric_params_key
from bench.pipeline.record import CellRecord, MetricResult, RecordError
from bench.pipeline.runs import load_manifests, runs_dir
from bench.pipeline.settings import cell_settings, explainer_params_key, settings_key, weights_hash
from bench.pipeline.store import atomic_write_text, read_json

#: Version 2: the metric columns come from the metrics the records hold (:func:`columns_of`).
SCHEMA = "bench.publish.leaderboard/2"
FORMATS: tuple[str, ...] = ("md", "csv", "json", "html", "tex")
#: Aliases accepted by :func:`render` and :func:`build_leaderboard` (``bench leaderboard --format latex``).
FORMAT_ALIASES: dict[str, str] = {"markdown": "md", "latex": "tex", "htm": "html"}
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
COLUMNS: tuple[str, ...] = (*LEAD_COLUMNS, *GAIN_COLUMNS, *TAIL_COLUMNS)

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



def _iter_cells(results_dir: str | Path) -> Iterable[tuple[Path, CellRecord]]:
    root = runs_dir(results_dir)
    if not root.is_dir():
        raise DataError(
            f"no runs under {root}: nothing to put on a leaderboard (run `bench run` first, "
            f"or pass the results folder that holds runs/)"
        )
    for path in sorted(root.glob("*/cells/*.json")):
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


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _ci(block: Mapping[str, Any] | None, key: str = "ci") -> tuple[float, float]:
    ci = (block or {}).get(key)
    if isinstance(ci, Sequence) and not isinstance(ci, str) and len(ci) == 2:
        return _num(ci[0]), _num(ci[1])
    return math.nan, math.nan


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
        "recall_macro": _num(classification.get("recall_macro")),
        "f1_macro": _num(classification.get("f1_macro")),
        "precision_macro": _num(classification.get("precision_macro")),
        "accuracy": _num(classification.get("accuracy")),
        "primary": "",
        "gain_over_baseline": math.nan,
        "gain_ci_low": math.nan,
        "gain_ci_high": math.nan,
        "baseline": "",
        "metric_notes": "; ".join(_metric_notes(cell)),
        "n_images": cell.n_images,
        "constant_heatmaps": cell.constant_heatmaps,
        "seconds_per_map": _num(timings.seconds_per_map),
        "passes_per_map": _num(timings.passes_per_map),
        "evaluate_seconds": _num(timings.evaluate_seconds),
        "explain_seconds": _num(timings.explain_seconds),
        "forward_passes": int(timings.forward_passes or 0),
        "passes_per_second": _num(timings.passes_per_second),
        "grid": _grid_text(aopc_params.get("grid")),
        "sigma": _num(pert_params.get("sigma")),
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
        "_confidence": _num(aopc_params.get("confidence", 0.95)),
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
        out[c.id] = np.asarray([_num(m.value) if m is not None else math.nan for m in hits], dtype=float)
        out[f"{c.id}_ci_low"] = np.asarray([_num(lo) for lo, _ in cis], dtype=float)
        out[f"{c.id}_ci_high"] = np.asarray([_num(hi) for _, hi in cis], dtype=float)
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
    """Every public column of a :func:`collect` frame: lead, metric columns, gain, tail."""
    metric = [f"{c.id}{suffix}" for c in metric_columns_of(df) for suffix in METRIC_SUFFIXES]
    return [*LEAD_COLUMNS, *metric, *GAIN_COLUMNS, *TAIL_COLUMNS]


def short_keys(keys: Iterable[str], length: int = SHORT_KEY) -> dict[str, str]:
    """``{full key: shortest prefix (at least ``length``) that no other key shares}``."""
    unique = sorted({str(k) for k in keys})
    n = length
    while n < max((len(k) for k in unique), default=0) and len({k[:n] for k in unique}) < len(unique):
        n += 1
    return {k: k[:n] for k in unique}


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def collect(
    results_dir: str | Path = "results",
    *,
    control: str | None = None,
    baseline: str | None = None,
    primary: str | None = None,
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per :data:`KEY_COLUMNS` value; the latest ok cell wins.

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
    control = _control_argument(control, baseline)
    manifests = load_manifests(results_dir)
    rows = [_cell_row(path, cell, manifests) for path, cell in _iter_cells(results_dir)]
    all_rows = pd.DataFrame(rows) if rows else _empty([*COLUMNS, "_time", "_status"])
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
    df.attrs["manifests"] = manifests
    return df


def _failed(all_rows: pd.DataFrame, latest_ok: pd.DataFrame) -> pd.DataFrame:
    """Cells whose most recent attempt failed (newer than any ok cell of the same components).

    Matched on :data:`COMPONENT_COLUMNS` only: a cell that fails before its perturbation
    ran cannot know its full settings. ``shown_instead`` lists the runs of the ok rows
    of the same components (each under its own settings fingerprint).
    """
    if all_rows.empty:
        return _empty(FAILED_COLUMNS)
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


def _control_argument(control: str | None, baseline: str | None) -> str:
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
    ``_baseline_params`` column (used by :func:`bench.publish.report.attach_gain_ci` to pick the
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
    out = df[cols].copy() if len(df.columns) else _empty(wanted)
    out.attrs = {}
    return out


# ---------------------------------------------------------------------------------------
# provenance
# ---------------------------------------------------------------------------------------
def provenance(df: pd.DataFrame, manifests: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Where the numbers come from: runs, versions, seeds, grids, perturbation parameters."""
    manifests = manifests if manifests is not None else df.attrs.get("manifests", {})
    run_ids = sorted({str(r) for r in df["run_id"]}) if not df.empty else []
    runs = []
    for rid in run_ids:
        m = manifests.get(rid, {})
        env = m.get("environment") or {}
        runs.append(
            {
                "run_id": rid,
                "created": m.get("created"),
                "finished": m.get("finished"),
                "bench_version": m.get("bench_version"),
                "tensorflow": env.get("tensorflow"),
                "keras": env.get("keras"),
                "python": env.get("python"),
                "numpy": env.get("numpy"),
                "git_commit": env.get("git_commit"),
                "seeds": m.get("seeds") or {},
                "dataset_fingerprint": (m.get("dataset") or {}).get("fingerprint"),
                "plugins": [
                    {k: p.get(k) for k in ("name", "distribution", "version")}
                    for p in (m.get("plugins") or [])
                    if isinstance(p, Mapping)
                ],
            }
        )
    perturbations: dict[str, list[dict[str, Any]]] = {}
    if "_pert_params" in df.columns:
        for name, params in zip(df["perturbation"], df["_pert_params"], strict=True):
            lst = perturbations.setdefault(str(name), [])
            if params not in lst:
                lst.append(params)
    from bench import __version__

    def uniq(col: str) -> list[Any]:
        if col not in df.columns or df.empty:
            return []
        vals = {v for v in df[col].tolist() if v is not None and v == v and v != ""}
        return sorted(vals, key=lambda v: (str(type(v)), v))

    return {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "generator": f"bench {__version__}",
        "metrics": [c.to_dict() for c in shown_metric_columns(df)],
        "primary": df.attrs.get("primary", ""),
        "primary_label": (lambda c: c.label if c is not None else "")(primary_column(df)),
        "primary_header": (lambda c: c.header if c is not None else "")(primary_column(df)),
        "baseline": df.attrs.get("baseline", ""),
        # the explainers gains are measured against, and every control with its role
        "gain_references": sorted({str(n) for n in df["baseline"] if isinstance(n, str) and n})
        if "baseline" in df.columns else [],
        "controls": sorted({f"{e} ({r})" for e, r in zip(df["explainer"], df["role"], strict=True)
                            if is_control(r)}) if "role" in df.columns else [],
        "ci_label": ci_label(df),
        "run_ids": run_ids,
        "runs": runs,
        "grids": uniq("grid"),
        "seeds": uniq("seed"),
        "sigmas": uniq("sigma"),
        "perturbation_params": perturbations,
        "settings": settings_legend(df),
        "settings_blocks": settings_blocks(df),
        "explainer_params": explainer_params_legend(df),
        "explainer_params_shown": sorted(ambiguous_explainers(df)),
        "constant_heatmap_rows": int(sum(1 for v in _constant_counts(df) if v)),
    }


def _constant_counts(df: pd.DataFrame) -> list[int]:
    if "constant_heatmaps" not in df.columns or df.empty:
        return []
    return [0 if v is None or pd.isna(v) else int(v) for v in df["constant_heatmaps"]]


_HASH_FIELDS = ("fingerprint", "md5", "sha256")


def _setting_text(label: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ("x" if label == "grid" else ",").join(_setting_text("", v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    text = str(value)
    if label.rsplit(".", 1)[-1] in _HASH_FIELDS and len(text) > 10:
        return text[:10]
    return text


def settings_summary(settings: Mapping[str, Any]) -> dict[str, str]:
    """A settings block as ``{label: text}`` for the legend: the AOPC settings and the seed
    first, then the perturbation, dataset, model and training parameters (dotted labels),
    hashes shortened to 10 characters, unset values left out."""
    out: dict[str, str] = {}

    def walk(label: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for k in sorted(value, key=str):
                walk(f"{label}.{k}" if label else str(k), value[k])
        elif value is not None and not (isinstance(value, Mapping) and not value):
            out[label] = _setting_text(label, value)

    aopc = settings.get("aopc") if isinstance(settings.get("aopc"), Mapping) else {}
    for k in ("grid", "orders", "max_images", "seed", "bootstrap", "confidence"):
        value = settings.get("seed") if k == "seed" else aopc.get(k)
        if value is not None:
            out[k] = _setting_text(k, value)
    for k, v in aopc.items():
        if k not in out and v is not None:
            out[str(k)] = _setting_text(str(k), v)
    for section in ("perturbation", "dataset", "model", "training"):
        block = settings.get(section)
        if isinstance(block, Mapping):
            # {"params": {...}} nests one level deeper than the reader needs
            flat = {**{k: v for k, v in block.items() if k != "params"}, **dict(block.get("params") or {})}
            walk(section, flat)
    for k, v in settings.items():
        if k not in ("version", "aopc", "seed", "perturbation", "dataset", "model", "training"):
            walk(str(k), v)
    return out


def settings_blocks(df: pd.DataFrame) -> dict[str, Any]:
    """``{settings fingerprint (as shown): settings block}`` of the rows of ``df``."""
    if "_settings" not in df.columns or df.empty:
        return {}
    out: dict[str, Any] = {}
    for key, block in zip(df["settings"], df["_settings"], strict=True):
        out.setdefault(str(key), block)
    return dict(sorted(out.items()))


def settings_legend(df: pd.DataFrame) -> dict[str, dict[str, str]]:
    """``{settings fingerprint: settings_summary(block)}`` of the rows of ``df``."""
    return {k: settings_summary(v) for k, v in settings_blocks(df).items() if isinstance(v, Mapping)}


def ambiguous_explainers(df: pd.DataFrame) -> set[str]:
    """Explainers that appear with more than one parameter set: their rows show the params fingerprint."""
    if "explainer_params" not in df.columns or df.empty:
        return set()
    counts = df.groupby("explainer")["explainer_params"].nunique()
    return {str(e) for e, n in counts.items() if n > 1}


def explainer_params_legend(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """``{explainer params fingerprint: {"explainers": [...], "params": {...}}}`` of the rows of ``df``."""
    if "explainer_params" not in df.columns or df.empty:
        return {}
    params_col = df["_explainer_params"] if "_explainer_params" in df.columns else [{}] * len(df)
    out: dict[str, dict[str, Any]] = {}
    for key, name, params in zip(df["explainer_params"], df["explainer"], params_col, strict=True):
        entry = out.setdefault(str(key), {"explainers": [], "params": dict(params or {})})
        if str(name) not in entry["explainers"]:
            entry["explainers"].append(str(name))
    return dict(sorted(out.items()))


def settings_legend_lines(prov: Mapping[str, Any]) -> list[str]:
    """The legend of the settings fingerprints: what every row shares, then what each stands for."""
    legend: Mapping[str, Mapping[str, str]] = prov.get("settings") or {}
    if not legend:
        return []

    def text(fields: Mapping[str, str]) -> str:
        return "; ".join(f"{k}={v}" for k, v in fields.items()) or "(no settings recorded)"

    lines = ["Settings: a row's settings fingerprint stands for every shared input that can change "
             "its numbers; rows are paired, and gains computed, only within one fingerprint."]
    if len(legend) == 1:
        (key, fields), = legend.items()
        return [*lines, f"Settings {key} (every row): {text(fields)}"]
    labels: list[str] = []
    for fields in legend.values():
        labels += [k for k in fields if k not in labels]
    first = next(iter(legend.values()))
    common = {k: first[k] for k in labels
              if k in first and all(f.get(k) == first[k] for f in legend.values())}
    if common:
        lines.append(f"Settings shared by every fingerprint: {text(common)}")
    for key, fields in legend.items():
        diff = {k: fields.get(k, "-") for k in labels if k not in common}
        lines.append(f"Settings {key}: {text(diff)}")
    return lines


def provenance_lines(prov: Mapping[str, Any]) -> list[str]:
    """Plain-text footer lines (unescaped: each renderer escapes them)."""
    lines = []
    head = prov.get("primary_label") or "the primary metric"
    base = prov.get("baseline")
    if base:
        lines.append(f"Gain over {base} = {head} - {head} of the '{base}' explainer (the control), same dataset, "
                     "model, weights, perturbation and settings fingerprint; with a CI it is the paired "
                     "mean difference on the images both cells scored (bootstrap CI).")
    elif prov.get("gain_references"):
        lines.append(f"Gain over control = {head} - {head} of the family's null-control explainer ("
                     + ", ".join(prov["gain_references"]) + "), same dataset, model, weights, perturbation and "
                     "settings fingerprint; with a CI it is the paired mean difference on the images both "
                     "cells scored (bootstrap CI).")
    if prov.get("controls"):
        lines.append("Controls (" + ", ".join(prov["controls"]) + ") are reference lines, listed "
                     "after the methods, not ranked among them.")
    lines += settings_legend_lines(prov)
    shown = set(prov.get("explainer_params_shown") or [])
    for key, entry in (prov.get("explainer_params") or {}).items():
        names = [n for n in entry.get("explainers", []) if n in shown]
        if names:
            lines.append(f"Explainer params {key} ({', '.join(names)}): "
                         + (json.dumps(entry["params"], sort_keys=True, default=str) if entry.get("params")
                            else "defaults"))
    if prov.get("constant_heatmap_rows"):
        lines.append(f"Flag 'n/N constant heatmaps' ({prov['constant_heatmap_rows']} row(s)): n of the row's "
                     "N explained images got an all-equal heatmap, so their region order is arbitrary (the "
                     "seeded tie-break permutation) and their curve metrics measure that order, not the "
                     "explainer.")
    lines += metric_lines(prov)
    lines.append(
        "Grid: " + (", ".join(str(g) for g in prov.get("grids", [])) or "n/a")
        + "; seeds: " + (", ".join(str(s) for s in prov.get("seeds", [])) or "n/a")
        + "; sigma: " + (", ".join(f"{s:g}" for s in prov.get("sigmas", [])) or "n/a")
    )
    for name, plist in (prov.get("perturbation_params") or {}).items():
        for p in plist:
            lines.append(f"Perturbation {name}: " + (json.dumps(p, sort_keys=True, default=str) if p else "defaults"))
    for run in prov.get("runs", []):
        lines.append(
            f"Run {run['run_id']}: bench {run.get('bench_version') or '?'}, "
            f"TensorFlow {run.get('tensorflow') or '?'}, Keras {run.get('keras') or '?'}, "
            f"Python {run.get('python') or '?'}, git {run.get('git_commit') or '?'}, "
            f"seeds {json.dumps(run.get('seeds') or {}, sort_keys=True)}, "
            f"finished {run.get('finished') or '?'}"
        )
    lines.append(f"Generated {prov.get('generated')} by {prov.get('generator')}.")
    return lines


def metric_lines(prov: Mapping[str, Any]) -> list[str]:
    """One line per metric column: its header (direction), family, parameters and definition."""
    columns = [MetricColumn(**c) for c in prov.get("metrics") or []]
    if not columns:
        return []
    ci = prov.get("ci_label", "95%")
    lines = [f"Metrics: each value is the mean over the explained (correctly classified) test images of "
             f"the metric's per-image value, with its {ci} bootstrap CI; non-finite per-image values are "
             "left out (counted in metric_notes); ↑ higher is better, ↓ lower is better; rows are ranked by "
             f"{prov.get('primary_header') or 'the first metric'}."]
    for c in columns:
        params = f"; params {json.dumps(dict(c.params), sort_keys=True, default=str)}" if c.params else ""
        lines.append(f"{c.header} ({c.id}, {c.family}{params}): {c.description or 'no description'}")
    return lines


# ---------------------------------------------------------------------------------------
# display table
# ---------------------------------------------------------------------------------------
def _f(value: Any, digits: int = 3, signed: bool = False) -> str:
    """Fixed ``digits`` decimals; a non-zero value that would print as zero gets 2 significant digits."""
    v = _num(value)
    if math.isnan(v):
        return ""
    sign = "+" if signed else ""
    if v != 0 and abs(v) < 0.5 * 10.0**-digits:
        return f"{v:{sign}.1e}"
    if v == 0 or round(v, digits) == 0:
        v = 0.0  # no "-0.000"
    return f"{v:{sign}.{digits}f}"


def _ci_text(lo: Any, hi: Any, digits: int = 4) -> str:
    a, b = _num(lo), _num(hi)
    if math.isnan(a) or math.isnan(b):
        return ""
    return f"[{_f(a, digits)}, {_f(b, digits)}]"


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


def constant_flag(constant: Any, n: Any) -> str:
    """The flag text of a row with constant heatmaps (empty when none or unknown)."""
    if constant is None or pd.isna(constant) or int(constant) <= 0:
        return ""
    total = "" if n is None or pd.isna(n) else f"/{int(n)}"
    return f"{int(constant)}{total} constant heatmaps: order is arbitrary"


def display_table(df: pd.DataFrame, *, baseline: str | None = None) -> tuple[list[str], list[list[str]], list[str]]:
    """(headers, rows of strings, alignment 'l'/'r' per column) for the human formats.

    The ``Settings`` column (the settings fingerprint; the notes' legend says what each
    stands for) is always there. One column per metric the rows hold (``AOPC ↑ [95% CI]``:
    value and CI; the arrow says which way is better), in the frame's metric order;
    ``Explainer params`` only when an explainer ran with more than one parameter set;
    ``Flags`` only when some row has constant heatmaps or a metric that failed, was left
    out or left non-finite values out. A control's explainer cell carries its role
    (``<name> (null-control)``). The gain column is the primary metric's. ``s/map`` and
    ``passes/map`` are the explainer's cost per heatmap: seconds (when the maps were
    computed) and forward-pass equivalents (its ``passes_per_map()``; empty when it does
    not say).
    """
    baseline = baseline if baseline is not None else (df.attrs.get("baseline") or reference_name(df))
    ci = f"{ci_label(df)} CI"
    head = primary_column(df)
    gain_name = f"Gain over {baseline}" if baseline else "Gain over control"
    if head is not None:
        gain_name += f" ({head.header}) [{ci}]"
    shown = shown_metric_columns(df)
    ambiguous = ambiguous_explainers(df)
    has_eparams = bool(ambiguous)
    notes = (list(df["metric_notes"]) if "metric_notes" in df.columns else [""] * len(df))
    has_flags = any(_constant_counts(df)) or any(isinstance(n, str) and n for n in notes)
    headers = ["Dataset", "Model", "Weights", "Explainer"]
    align = ["l"] * 4
    if has_eparams:
        headers += ["Explainer params"]
        align += ["l"]
    headers += ["Perturbation", "Settings", "Test recall (macro)", "F1 (macro)", "Accuracy"]
    align += ["l", "l"] + ["r"] * 3
    headers += [f"{c.header} [{ci}]" for c in shown]
    align += ["r"] * len(shown)
    headers += [gain_name, "s/map", "passes/map", "n images", "Eval time (s)"]
    align += ["r", "r", "r", "r", "r"]
    if has_flags:
        headers += ["Flags"]
        align += ["l"]
    rows: list[list[str]] = []
    for _, r in df.iterrows():
        role = r.get("role", METHOD_ROLE)
        explainer = f"{r['explainer']} ({role})" if is_control(role) else str(r["explainer"])
        row = [str(r["dataset"]), str(r["model"]), str(r["weights"]), explainer]
        if has_eparams:
            row += [str(r.get("explainer_params", "")) if str(r["explainer"]) in ambiguous else ""]
        row += [str(r["perturbation"]), str(r.get("settings", "")), _f(r["recall_macro"]), _f(r["f1_macro"]),
                _f(r["accuracy"])]
        for c in shown:
            value, interval = _f(r[c.id], 4), _ci_text(r[f"{c.id}_ci_low"], r[f"{c.id}_ci_high"])
            row.append(f"{value} {interval}" if value and interval else value)
        n = r["n_images"]
        gain = _f(r["gain_over_baseline"], 4, signed=True)
        gain_ci = _ci_text(r.get("gain_ci_low"), r.get("gain_ci_high"))
        row += [f"{gain} {gain_ci}" if gain and gain_ci else gain, cost_text(r.get("seconds_per_map")),
                cost_text(r.get("passes_per_map")), "" if n is None or pd.isna(n) else str(int(n)),
                _f(r["evaluate_seconds"], 1)]
        if has_flags:
            flags = [constant_flag(r.get("constant_heatmaps"), n), str(r.get("metric_notes") or "")]
            row += ["; ".join(f for f in flags if f)]
        rows.append(row)
    return headers, rows, align


def cost_text(value: Any) -> str:
    """A cost per map (seconds or forward passes) with 3 significant digits; "" when unknown."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return ""
    if not math.isfinite(v):
        return ""
    return f"{v:.3g}" if v else "0"


def _md_cell(text: Any) -> str:
    """A Markdown table cell: no raw HTML, no column breaks, one line."""
    s = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


#: Public names of the cell formatters (:mod:`bench.publish.report` uses them).
format_number = _f
format_ci = _ci_text
md_cell = _md_cell


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None) -> str:
    from tabulate import tabulate

    colalign = None
    if align is not None:
        colalign = ["right" if a == "r" else "left" for a in align]
    return tabulate(
        [[_md_cell(c) for c in row] for row in rows],
        headers=[_md_cell(h) for h in headers],
        tablefmt="github",
        colalign=colalign,
        disable_numparse=True,
    )


# ---------------------------------------------------------------------------------------
# escaping
# ---------------------------------------------------------------------------------------
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
# renderers
# ---------------------------------------------------------------------------------------
def _normalise_format(fmt: str) -> str:
    f = str(fmt).lower().lstrip(".")
    f = FORMAT_ALIASES.get(f, f)
    if f not in FORMATS:
        raise BenchError(f"unknown leaderboard format {fmt!r}; choose one of {', '.join(FORMATS)} (or 'latex')")
    return f


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, (np.floating,)):
        return _json_safe(float(value))
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, pd.DataFrame):
        return [_json_safe(r) for r in value.to_dict(orient="records")]
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
    ``comparisons`` (from :func:`bench.publish.report.paired_comparisons`) are rendered in md,
    json and html; ``figures`` (``{section title: [png paths]}``) are embedded in html
    as base64 data URIs.
    """
    fmt = _normalise_format(fmt)
    prov = dict(provenance_info) if provenance_info is not None else provenance(df)
    if failed is None:
        failed = df.attrs.get("failed")
    if failed is None:
        failed = _empty(FAILED_COLUMNS)
    if fmt == "csv":
        return public(df).to_csv(index=False)
    if fmt == "json":
        doc = {
            "schema": SCHEMA,
            "baseline": df.attrs.get("baseline", prov.get("baseline", "")),
            "primary": df.attrs.get("primary", ""),
            "metrics": [c.to_dict() for c in metric_columns_of(df)],
            "columns": list(public(df).columns),
            "rows": _json_safe(public(df)),
            "failed": _json_safe(failed),
            "comparisons": _json_safe(comparisons) if comparisons is not None else [],
            "figures": {section: [Path(p).name for p in paths] for section, paths in (figures or {}).items()},
            "provenance": _json_safe(prov),
        }
        return json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n"
    if fmt == "md":
        return _render_md(df, prov, failed, comparisons, title)
    if fmt == "html":
        return _render_html(df, prov, failed, comparisons, figures or {}, title)
    return _render_tex(df, prov, failed)


def _primary_header(df: pd.DataFrame) -> str:
    head = primary_column(df)
    return head.header if head is not None else "no metric"


def primary_comparisons(comparisons: pd.DataFrame | None, df: pd.DataFrame) -> pd.DataFrame | None:
    """The paired comparisons of the frame's primary metric (all of them when unlabelled)."""
    if comparisons is None or comparisons.empty or "metric" not in comparisons.columns:
        return comparisons
    head = primary_column(df)
    return comparisons[comparisons["metric"] == (head.id if head is not None else "")]


def _render_md(df: pd.DataFrame, prov: Mapping[str, Any], failed: pd.DataFrame,
               comparisons: pd.DataFrame | None, title: str) -> str:
    headers, rows, align = display_table(df)
    out = [f"# {_md_cell(title)}", ""]
    if rows:
        out += [markdown_table(headers, rows, align), ""]
    else:
        out += ["_No finished cells yet._", ""]
    comparisons = primary_comparisons(comparisons, df)
    if comparisons is not None and not comparisons.empty:
        from bench.publish.report import comparisons_markdown

        out += [f"## Paired comparisons ({_primary_header(df)}, same images)", "",
                comparisons_markdown(comparisons), ""]
    if not failed.empty:
        out += ["## Failed cells (not on the leaderboard)", "", failed_markdown(failed), ""]
    out += ["## Provenance", ""] + [f"- {_md_cell(line)}" for line in provenance_lines(prov)]
    return "\n".join(out) + "\n"


def failed_markdown(failed: pd.DataFrame) -> str:
    headers = ["Dataset", "Model", "Weights", "Explainer", "Perturbation", "Run", "Stage", "Error",
               "Shown instead"]
    rows = [
        [r["dataset"], r["model"], r["weights"], r["explainer"], r["perturbation"], r["run_id"],
         r["stage"], _short(r["error"]), r["shown_instead"] or "-"]
        for _, r in failed.iterrows()
    ]
    return markdown_table(headers, rows)


def _short(text: Any, n: int = 160) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= n else s[: n - 1] + "…"


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


def _render_html(df: pd.DataFrame, prov: Mapping[str, Any], failed: pd.DataFrame,
                 comparisons: pd.DataFrame | None, figures: Mapping[str, Sequence[Path]], title: str) -> str:
    headers, rows, align = display_table(df)
    body = [f"<h1>{html_escape(title)}</h1>"]
    body.append(
        '<p class="note">One row per dataset, model, weights, explainer, perturbation and settings '
        f"fingerprint (the latest finished cell wins), sorted by {html_escape(_primary_header(df))} "
        "within each dataset; rows are paired and compared only within one settings fingerprint "
        "(legend under Provenance). Each metric column shows its value and bootstrap CI; the arrow "
        "says which way is better (the metrics are described under Provenance).</p>"
    )
    body.append(html_table(headers, rows, align, group_col=0) if rows else "<p><em>No finished cells yet.</em></p>")
    comparisons = primary_comparisons(comparisons, df)
    if comparisons is not None and not comparisons.empty:
        from bench.publish.report import comparisons_html

        body.append(f"<h2>Paired comparisons ({html_escape(_primary_header(df))}, same images)</h2>")
        body.append(comparisons_html(comparisons))
    if "_path" in df.columns and not df.empty:
        from bench.publish.report import classification_tables

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
        f_headers = ["Dataset", "Model", "Weights", "Explainer", "Perturbation", "Run", "Stage", "Error",
                     "Shown instead"]
        f_rows = [[r["dataset"], r["model"], r["weights"], r["explainer"], r["perturbation"], r["run_id"],
                   r["stage"], _short(r["error"], 400), r["shown_instead"] or "-"] for _, r in failed.iterrows()]
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


def _render_tex(df: pd.DataFrame, prov: Mapping[str, Any], failed: pd.DataFrame) -> str:
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


# ---------------------------------------------------------------------------------------
# the files
# ---------------------------------------------------------------------------------------
def bootstrap_resamples(manifests: Mapping[str, Mapping[str, Any]], default: int = 10_000) -> int:
    """The largest ``aopc.bootstrap`` of the runs' resolved configs (default 10000)."""
    values = []
    for m in manifests.values():
        b = ((m.get("config") or {}).get("aopc") or {}).get("bootstrap")
        if isinstance(b, int) and not isinstance(b, bool) and b > 0:
            values.append(b)
    return max(values) if values else default


def build_leaderboard(
    results_dir: str | Path = "results",
    *,
    formats: Sequence[str] = FORMATS,
    out_dir: str | Path | None = None,
    control: str | None = None,
    figures: bool = True,
    report: bool = True,
    baseline: str | None = None,
    primary: str | None = None,
    metrics: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write ``<out_dir>/leaderboard.<fmt>`` for every format (atomically) and return their paths.

    ``out_dir`` defaults to ``results_dir``. With ``figures`` the PNGs go to
    ``<out_dir>/figures/`` and are embedded in the HTML; with ``report``
    ``<out_dir>/report.md`` is written too (key ``"report"`` in the returned dict).
    Paired comparisons between explainers are computed for every metric column from the
    per-image values the records point to (the leaderboard pages show the primary
    metric's, ``report.md`` and the JSON all of them).
    ``control`` picks the gain reference (default: each family's null control, see
    :func:`add_gain`); ``baseline=`` is its deprecated alias. ``primary`` names the metric
    rows are ranked by and gains use (default: the first); ``metrics`` orders the metric
    columns (the config's metrics; the rest follow by name).
    """
    from bench.publish import report as report_mod

    fmts = [_normalise_format(f) for f in formats]
    out = Path(out_dir) if out_dir is not None else Path(results_dir)
    control = _control_argument(control, baseline)
    df = collect(results_dir, control=control, primary=primary, metrics=metrics)
    try:
        comparisons = report_mod.paired_comparisons(
            df, confidence=confidence_of(df), n_resamples=bootstrap_resamples(df.attrs.get("manifests", {})),
            metrics=[c.id for c in metric_columns_of(df)])
    except Exception as exc:  # the statistics must never cost the leaderboard itself
        warnings.warn(f"paired comparisons skipped: {type(exc).__name__}: {exc}", stacklevel=2)
        comparisons = pd.DataFrame(columns=list(report_mod.COMPARISON_COLUMNS))
    df = report_mod.attach_gain_ci(df, primary_comparisons(comparisons, df), control)
    prov = provenance(df)
    figs: dict[str, list[Path]] = {}
    if figures and ("html" in fmts or report) and not df.empty:
        figs = report_mod.make_figures(df, out / "figures")
    written: dict[str, Path] = {}
    for fmt in fmts:
        text = render(df, fmt, provenance_info=prov, comparisons=comparisons, figures=figs)
        path = out / f"leaderboard.{fmt}"
        atomic_write_text(path, text)
        written[fmt] = path
    if report:
        path = out / "report.md"
        atomic_write_text(path, report_mod.render_report(df, comparisons=comparisons, figures=figs,
                                                         provenance_info=prov, relative_to=out))
        written["report"] = path
    return written
