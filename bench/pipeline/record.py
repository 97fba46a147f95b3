"""The cell record: the one shape a cell's result has, in memory and on disk.

:class:`CellRecord` (with :class:`MetricResult` per metric and :class:`Timings`) is
what :func:`bench.pipeline.execute_cell` builds and writes to
``runs/<run>/cells/<cell>.json`` (every executor), and what
:meth:`bench.pipeline.RunResult.rows` and the leaderboard read back with
:meth:`CellRecord.from_dict`. The JSON carries ``"schema": SCHEMA_VERSION``.

Schema 1 (records written before metrics were plugins: ``results: {morf: {aopc, ci,
n}, lerf: ...}``, ``abpc: {value, ci, n}``, no ``schema`` key) is read by converting
its numbers into the metric results they were (:data:`SCHEMA_1_METRICS`); a record
that is neither raises :class:`RecordError` saying it must be recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from bench.errors import BenchError

SCHEMA_VERSION = 2

#: Metric status in a cell: computed, raised (``error`` says why), or left out
#: because the cell lacks an input it declared (``error`` says which).
METRIC_STATUSES: tuple[str, ...] = ("ok", "failed", "skipped")


class RecordError(BenchError):
    """A cell record that this version cannot read (it must be recomputed)."""


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _json_float(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _ci(value: Any) -> tuple[float, float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (_float(value[0]), _float(value[1]))
    return None


def _int(value: Any, default: int | None = 0) -> int | None:
    if isinstance(value, bool):
        return default
    if isinstance(value, (int, float)) and math.isfinite(value):
        return int(value)
    return default


@dataclass(frozen=True, kw_only=True)
class MetricResult:
    """One metric of one cell: its statistics, where its per-image values are, what it is.

    ``value``: the mean of the finite headline values (NaN when none); ``ci``: their
    bootstrap interval at ``confidence``; ``n``: how many were finite; ``n_excluded``:
    how many were not (left out). ``file`` (relative to the run folder) is the NPZ
    holding the per-image values: member ``key`` is the headline column, member
    ``ids_key`` the image ids, ``columns`` maps every column to its shape.
    ``params`` / ``params_key``: the metric's own parameters and their fingerprint
    (part of its column's identity on the leaderboard, not of the row's settings).
    """

    name: str
    status: str = "ok"
    value: float = math.nan
    ci: tuple[float, float] | None = None
    n: int = 0
    n_excluded: int = 0
    confidence: float | None = None
    higher_is_better: bool = True
    family: str = "faithfulness"
    label: str = ""
    description: str = ""
    headline: str = ""
    heatmap_transform: str = "none"
    columns: dict[str, list[int]] = field(default_factory=dict)
    file: str | None = None
    key: str | None = None
    ids_key: str = "ids"
    params: dict[str, Any] = field(default_factory=dict)
    params_key: str = ""
    version: str | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def display_label(self) -> str:
        return self.label or self.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "value": _json_float(self.value),
            "ci": None if self.ci is None else [_json_float(self.ci[0]), _json_float(self.ci[1])],
            "n": self.n,
            "n_excluded": self.n_excluded,
            "confidence": self.confidence,
            "higher_is_better": self.higher_is_better,
            "family": self.family,
            "label": self.label,
            "description": self.description,
            "headline": self.headline,
            "heatmap_transform": self.heatmap_transform,
            "columns": {k: list(v) for k, v in self.columns.items()},
            "file": self.file,
            "key": self.key,
            "ids_key": self.ids_key,
            "params": dict(self.params),
            "params_key": self.params_key,
            "version": self.version,
            "error": self.error,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], name: str | None = None) -> MetricResult:
        status = str(d.get("status", "ok"))
        if status not in METRIC_STATUSES:
            raise RecordError(f"metric {name or d.get('name')!r}: unknown status {status!r}")
        columns = d.get("columns") or {}
        return cls(
            name=str(d.get("name") or name or ""),
            status=status,
            value=_float(d.get("value")),
            ci=_ci(d.get("ci")),
            n=_int(d.get("n")) or 0,
            n_excluded=_int(d.get("n_excluded")) or 0,
            confidence=None if d.get("confidence") is None else _float(d.get("confidence")),
            higher_is_better=bool(d.get("higher_is_better", True)),
            family=str(d.get("family") or "faithfulness"),
            label=str(d.get("label") or ""),
            description=str(d.get("description") or ""),
            headline=str(d.get("headline") or ""),
            heatmap_transform=str(d.get("heatmap_transform") or "none"),
            columns={str(k): [int(x) for x in v] for k, v in dict(columns).items()},
            file=d.get("file"),
            key=d.get("key"),
            ids_key=str(d.get("ids_key") or "ids"),
            params=dict(d.get("params") or {}),
            params_key=str(d.get("params_key") or ""),
            version=d.get("version"),
            error=d.get("error"),
            seconds=_float(d.get("seconds", 0.0)),
        )


@dataclass(kw_only=True)
class Timings:
    """What a cell cost: seconds per stage, forward passes of its curves, cost per heatmap.

    ``explain_seconds`` is how long its heatmaps took when they were computed (a cell that
    reads them from the cache keeps the original time), ``explain_maps`` how many maps
    that was, ``passes_per_map`` the explainer's forward-pass equivalents per map (its
    ``passes_per_map()``; None when it does not say). ``seconds_per_map`` follows.
    """

    explain_seconds: float = 0.0
    evaluate_seconds: float = 0.0
    metrics_seconds: float = 0.0
    forward_passes: int = 0
    explain_maps: int = 0
    passes_per_map: float | None = None

    @property
    def passes_per_second(self) -> float | None:
        return self.forward_passes / self.evaluate_seconds if self.evaluate_seconds > 0 else None

    @property
    def seconds_per_map(self) -> float | None:
        """Seconds per heatmap (None when no map was computed)."""
        return self.explain_seconds / self.explain_maps if self.explain_maps > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "explain_seconds": self.explain_seconds,
            "evaluate_seconds": self.evaluate_seconds,
            "metrics_seconds": self.metrics_seconds,
            "forward_passes": self.forward_passes,
            "passes_per_second": self.passes_per_second,
            "explain_maps": self.explain_maps,
            "seconds_per_map": self.seconds_per_map,
            "passes_per_map": _json_float(self.passes_per_map),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Timings:
        d = d or {}
        passes = d.get("passes_per_map")
        return cls(
            explain_seconds=_float(d.get("explain_seconds", 0.0)),
            evaluate_seconds=_float(d.get("evaluate_seconds", 0.0)),
            metrics_seconds=_float(d.get("metrics_seconds", 0.0)),
            forward_passes=_int(d.get("forward_passes")) or 0,
            explain_maps=_int(d.get("explain_maps")) or 0,
            passes_per_map=None if passes is None else _float(passes),
        )


@dataclass(kw_only=True)
class CostEstimate:
    """A finished cell's predicted cost beside what it measured (version :data:`ESTIMATE_VERSION`).

    Written only when the model had a calibration on the machine that ran the cell
    (:mod:`bench.pipeline.estimate`): ``predicted_passes`` (the cell's forward passes counted
    from the plan with its real number of explained images, cached stages included) and
    ``predicted_seconds`` (those at the calibration's ``passes_per_second``); ``measured_seconds``
    (its stages' seconds: explain + curves + metrics, as recorded) and ``measured_passes``
    (the passes they report); ``calibration`` names the calibration file, ``unknown`` what the
    prediction could not count (a metric that declares its cost only after it ran).
    """

    version: int = 1
    predicted_passes: float = 0.0
    predicted_seconds: float = 0.0
    measured_passes: float | None = None
    measured_seconds: float = 0.0
    passes_per_second: float = 0.0
    calibration: str = ""
    unknown: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        """measured / predicted seconds (None when nothing was predicted)."""
        return self.measured_seconds / self.predicted_seconds if self.predicted_seconds > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "predicted_passes": _json_float(self.predicted_passes),
            "predicted_seconds": _json_float(self.predicted_seconds),
            "measured_passes": _json_float(self.measured_passes),
            "measured_seconds": _json_float(self.measured_seconds),
            "passes_per_second": _json_float(self.passes_per_second),
            "calibration": self.calibration,
            "unknown": list(self.unknown),
        }

    @classmethod
    def from_dict(cls, d: Any) -> CostEstimate | None:
        """The estimate of a record's JSON; None when absent (records written before it) or unreadable."""
        if not isinstance(d, Mapping) or _int(d.get("version"), None) != ESTIMATE_VERSION:
            return None
        measured = d.get("measured_passes")
        return cls(
            predicted_passes=_float(d.get("predicted_passes")),
            predicted_seconds=_float(d.get("predicted_seconds")),
            measured_passes=None if measured is None else _float(measured),
            measured_seconds=_float(d.get("measured_seconds")),
            passes_per_second=_float(d.get("passes_per_second")),
            calibration=str(d.get("calibration") or ""),
            unknown=[str(u) for u in d.get("unknown") or []],
        )


#: The format of :class:`CostEstimate` in a record.
ESTIMATE_VERSION = 1


@dataclass(kw_only=True)
class CellRecord:
    """One cell of the grid (dataset x model x explainer x perturbation): inputs, results, status.

    ``params`` holds the resolved parameters per component (``dataset``, ``model``,
    ``explainer``, ``perturbation``, ``metrics``: name -> params) and the curve
    settings (``aopc``: grid, the computed ``orders``, seed, batch size, max_images,
    confidence); ``settings`` / ``settings_key`` is the fingerprint of every shared
    input that can change a number (:mod:`bench.pipeline.settings`); ``metrics`` the results
    in the order the config selected them.
    """

    schema: int = SCHEMA_VERSION
    cell_id: str
    run_id: str = ""
    status: str = "ok"
    error: str | None = None
    stage: str | None = None
    traceback: str | None = None
    dataset: str
    model: str
    weights: str | None = None
    explainer: str
    perturbation: str
    params: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    classification: dict[str, Any] | None = None
    n_images: int | None = 0
    orders: list[str] = field(default_factory=list)
    metrics: dict[str, MetricResult] = field(default_factory=dict)
    timings: Timings = field(default_factory=Timings)
    strategy: str | None = None
    strategy_info: dict[str, Any] = field(default_factory=dict)
    curves_file: str | None = None
    heatmaps_file: str | None = None
    metrics_file: str | None = None
    keys: dict[str, Any] = field(default_factory=dict)
    constant_heatmaps: int | None = None
    settings: dict[str, Any] | None = None
    settings_key: str | None = None
    explainer_params_key: str | None = None
    #: predicted vs measured cost (None: no calibration when it ran, or an older record)
    estimate: CostEstimate | None = None
    finished: str | None = None
    #: keys of the JSON this version does not know, kept as they were
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def metric(self, name: str) -> MetricResult | None:
        return self.metrics.get(name)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name == "metrics":
                value = {name: m.to_dict() for name, m in value.items()}
            elif f.name == "timings":
                value = value.to_dict()
            elif f.name == "estimate":
                value = None if value is None else value.to_dict()
            out[f.name] = value
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "") -> CellRecord:
        """A record from its JSON form: schema 2, or schema 1 converted (see the module docs)."""
        where = f" {source}" if source else ""
        if not isinstance(d, Mapping):
            raise RecordError(f"cell record{where} is not a JSON object: recompute it (bench run)")
        schema = d.get("schema", 1)
        try:
            if schema == 1:
                return _from_schema_1(d)
            if schema == SCHEMA_VERSION:
                return _from_schema_2(d)
        except RecordError as exc:
            raise RecordError(f"cell record{where}: {exc}") from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RecordError(
                f"cell record{where} (schema {schema}) cannot be read ({type(exc).__name__}: {exc}): "
                "it must be recomputed (bench run)"
            ) from exc
        if isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA_VERSION:
            raise RecordError(
                f"cell record{where} has schema {schema}, newer than this bench reads ({SCHEMA_VERSION}): "
                "upgrade bench, or recompute the cell with this version (bench run)"
            )
        raise RecordError(f"cell record{where} has an unknown schema {schema!r}: it must be recomputed (bench run)")


#: The JSON keys a record's fields have (anything else goes to ``extra``).
FIELD_NAMES: frozenset[str] = frozenset(f.name for f in fields(CellRecord))


def _require(d: Mapping[str, Any], *names: str) -> None:
    missing = [n for n in names if not isinstance(d.get(n), str) or not d.get(n)]
    if missing:
        raise RecordError(f"missing {', '.join(missing)}: it must be recomputed (bench run)")


def _common(d: Mapping[str, Any]) -> dict[str, Any]:
    _require(d, "dataset", "model", "explainer", "perturbation")
    cell_id = d.get("cell_id") or f"{d['dataset']}__{d['model']}__{d['explainer']}__{d['perturbation']}"
    constant = d.get("constant_heatmaps")
    return {
        "cell_id": str(cell_id),
        "run_id": str(d.get("run_id") or ""),
        "status": str(d.get("status") or "failed"),
        "error": d.get("error"),
        "stage": d.get("stage"),
        "traceback": d.get("traceback"),
        "dataset": str(d["dataset"]),
        "model": str(d["model"]),
        "weights": None if d.get("weights") is None else str(d.get("weights")),
        "explainer": str(d["explainer"]),
        "perturbation": str(d["perturbation"]),
        "params": dict(d.get("params") or {}),
        "provenance": dict(d.get("provenance") or {}),
        "classification": dict(d["classification"]) if isinstance(d.get("classification"), Mapping) else None,
        "n_images": _int(d.get("n_images"), None),
        "timings": Timings.from_dict(d.get("timings") if isinstance(d.get("timings"), Mapping) else None),
        "strategy": d.get("strategy"),
        "strategy_info": dict(d.get("strategy_info") or {}),
        "curves_file": d.get("curves_file"),
        "heatmaps_file": d.get("heatmaps_file"),
        "keys": dict(d.get("keys") or {}),
        "constant_heatmaps": _int(constant, None),
        "settings": dict(d["settings"]) if isinstance(d.get("settings"), Mapping) else None,
        "settings_key": d.get("settings_key") if isinstance(d.get("settings_key"), str) else None,
        "explainer_params_key": (d.get("explainer_params_key")
                                 if isinstance(d.get("explainer_params_key"), str) else None),
        "estimate": CostEstimate.from_dict(d.get("estimate")),
        "finished": d.get("finished"),
    }


def _from_schema_2(d: Mapping[str, Any]) -> CellRecord:
    metrics = d.get("metrics") or {}
    if not isinstance(metrics, Mapping):
        raise RecordError("its 'metrics' is not a mapping: it must be recomputed (bench run)")
    known = FIELD_NAMES
    return CellRecord(
        **_common(d),
        orders=[str(o) for o in d.get("orders") or []],
        metrics={str(name): MetricResult.from_dict(m, str(name)) for name, m in metrics.items()},
        metrics_file=d.get("metrics_file"),
        extra={k: v for k, v in d.items() if k not in known},
    )


#: What the numbers of a schema-1 record were, as metric results: (its ``results``
#: order, metric name, label, higher is better, per-image member of its curves file).
#: These were the run's built-in curve metrics; this table only reads old files.
SCHEMA_1_METRICS: tuple[tuple[str, str, str, bool, str], ...] = (
    ("morf", "aopc", "AOPC", True, "morf_per_image"),
    ("lerf", "lerf-aopc", "LeRF AOPC", False, "lerf_per_image"),
)
#: The ABPC block of a schema-1 record: (metric name, label, higher is better, per-image member).
SCHEMA_1_ABPC: tuple[str, str, bool, str] = ("abpc", "ABPC", True, "abpc_per_image")


def _from_schema_1(d: Mapping[str, Any]) -> CellRecord:
    common = _common(d)
    results = d.get("results") or {}
    if not isinstance(results, Mapping):
        raise RecordError("its 'results' is not a mapping: it must be recomputed (bench run)")
    aopc_params = dict(common["params"].get("aopc") or {})
    confidence = aopc_params.get("confidence")
    curves_file = common["curves_file"]
    metrics: dict[str, MetricResult] = {}

    def legacy(name: str, label: str, higher: bool, member: str, block: Mapping[str, Any], value: Any) -> None:
        metrics[name] = MetricResult(
            name=name, value=_float(value), ci=_ci(block.get("ci")), n=_int(block.get("n"), 0) or 0,
            confidence=None if confidence is None else _float(confidence), higher_is_better=higher,
            label=label, headline=name, heatmap_transform="rank", file=curves_file, key=member,
            description="read from a schema-1 record",
        )

    for order, name, label, higher, member in SCHEMA_1_METRICS:
        block = results.get(order)
        if isinstance(block, Mapping):
            legacy(name, label, higher, member, block, block.get("aopc"))
    abpc = d.get("abpc")
    if isinstance(abpc, Mapping):
        name, label, higher, member = SCHEMA_1_ABPC
        legacy(name, label, higher, member, abpc, abpc.get("value"))
    params = dict(common["params"])
    params.setdefault("metrics", {name: {} for name in metrics})
    common["params"] = params
    orders = [str(o) for o in aopc_params.get("orders") or [o for o in results]]
    known = FIELD_NAMES | {"results", "abpc"}
    return CellRecord(
        **common,
        orders=orders,
        metrics=metrics,
        extra={k: v for k, v in d.items() if k not in known},
    )
