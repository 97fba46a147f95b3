"""The metric stage: what a metric gets, how its output is checked, its statistics.

A metric plugin declares what it needs (:class:`bench.MetricInputs` on its
:class:`bench.MetricSpec`) and returns named per-image columns from
``compute(data)`` (see :class:`bench.plugin.protocols.Metric`). This module holds the
three pieces around that call, none of which knows a metric by name:

- :class:`MetricData`: the typed view ``compute`` gets, holding only the declared
  inputs (reading another one raises :class:`MetricInputError`);
- :func:`check_columns`: the returned columns, checked (a mapping of (N,) or (N, K)
  numeric arrays with the headline column (N,)); a wrong output raises
  :class:`bench.errors.ComponentOutputError` naming the metric and the column;
- :func:`summarise`: value (mean of the finite headline values), bootstrap CI, n and
  the count of non-finite values left out.

:func:`required_orders` is the union of the curve orders a set of metrics needs:
the runner computes those curves and no others.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.errors import BenchError, ComponentOutputError
from bench.pipeline.store import content_key
from bench.plugin.names import name_problem
from bench.plugin.specs import CURVE_ORDERS, MetricInputs, MetricSpec
from bench.stats import bootstrap_ci


class MetricInputError(BenchError):
    """A metric read an input its spec did not declare."""


class MetricSkipped(BenchError):
    """A cell cannot give a metric what it declared (a dataset without the named mask)."""


def _read_only(value: Any) -> np.ndarray:
    view = np.asarray(value).view()
    view.flags.writeable = False
    return view


class MetricData:
    """What a metric's ``compute(data)`` gets: the declared inputs of N images, aligned by row.

    ``ids`` (N,) and ``grid`` (rows, cols) are always there; ``curves`` (order -> float
    (N, L+1)), ``heatmaps`` float32 (N, h, w), ``masks`` (name -> bool (N, H, W)),
    ``labels`` / ``targets`` int (N,), ``model``, ``explainer`` and ``images`` uint8
    (N, H, W) only where :class:`bench.MetricInputs` asked for them; any other raises
    :class:`MetricInputError`. Arrays are read-only views (copy before changing them).
    """

    __slots__ = ("name", "inputs", "ids", "grid", "_curves", "_heatmaps", "_masks", "_labels",
                 "_targets", "_model", "_explainer", "_images")

    def __init__(
        self,
        *,
        inputs: MetricInputs,
        ids: Any,
        name: str = "metric",
        grid: tuple[int, int] | None = None,
        curves: Mapping[str, Any] | None = None,
        heatmaps: Any = None,
        masks: Mapping[str, Any] | None = None,
        labels: Any = None,
        targets: Any = None,
        model: Any = None,
        explainer: Any = None,
        images: Any = None,
    ):
        self.name = name
        self.inputs = inputs
        self.ids = _read_only(np.asarray(ids).astype(str))
        self.grid = tuple(int(g) for g in grid) if grid is not None else None
        n = len(self.ids)
        given_curves = dict(curves or {})
        missing = [o for o in inputs.curves if o not in given_curves]
        if missing:
            raise BenchError(f"metric {name!r}: no {', '.join(missing)} curves were computed for it")
        self._curves = {o: _read_only(given_curves[o]) for o in inputs.curves}
        given_masks = dict(masks or {})
        absent = [m for m in inputs.masks if m not in given_masks]
        if absent:
            raise MetricSkipped(f"metric {name!r} needs the mask(s) {', '.join(map(repr, absent))}")
        self._masks = {m: _read_only(given_masks[m]) for m in inputs.masks}
        self._heatmaps = _read_only(heatmaps) if inputs.heatmaps else None
        self._labels = _read_only(labels) if inputs.labels else None
        self._targets = _read_only(targets) if inputs.targets else None
        self._images = _read_only(images) if inputs.images else None
        self._model = model if inputs.model else None
        self._explainer = explainer if inputs.explainer else None
        for what, arr in (("heatmaps", self._heatmaps), ("labels", self._labels),
                          ("targets", self._targets), ("images", self._images),
                          *((f"curves[{o!r}]", c) for o, c in self._curves.items()),
                          *((f"masks[{m!r}]", a) for m, a in self._masks.items())):
            if arr is not None and len(arr) != n:
                raise BenchError(f"metric {name!r}: {what} has {len(arr)} rows for {n} images")
        for what, flag, value in (("model", inputs.model, model), ("explainer", inputs.explainer, explainer),
                                  ("heatmaps", inputs.heatmaps, heatmaps), ("labels", inputs.labels, labels),
                                  ("targets", inputs.targets, targets), ("images", inputs.images, images)):
            if flag and value is None:
                raise BenchError(f"metric {name!r} declared {what} but none was given")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n(self) -> int:
        return len(self.ids)

    def _undeclared(self, what: str) -> MetricInputError:
        declared = ", ".join(self.inputs.names()) or "nothing"
        return MetricInputError(
            f"metric {self.name!r} read {what}, which its MetricSpec.inputs does not declare "
            f"(declared: {declared}); add it to the spec's MetricInputs"
        )

    @property
    def curves(self) -> Mapping[str, np.ndarray]:
        if not self._curves:
            raise self._undeclared("curves")
        return dict(self._curves)

    def curve(self, order: str) -> np.ndarray:
        """The curves of one order (N, L+1)."""
        if order not in self._curves:
            raise self._undeclared(f"curves of order {order!r}")
        return self._curves[order]

    @property
    def masks(self) -> Mapping[str, np.ndarray]:
        if not self._masks:
            raise self._undeclared("masks")
        return dict(self._masks)

    def mask(self, name: str) -> np.ndarray:
        if name not in self._masks:
            raise self._undeclared(f"mask {name!r}")
        return self._masks[name]

    def _get(self, what: str) -> Any:
        value = getattr(self, f"_{what}")
        if not getattr(self.inputs, what):
            raise self._undeclared(what)
        return value

    @property
    def heatmaps(self) -> np.ndarray:
        return self._get("heatmaps")

    @property
    def labels(self) -> np.ndarray:
        return self._get("labels")

    @property
    def targets(self) -> np.ndarray:
        return self._get("targets")

    @property
    def images(self) -> np.ndarray:
        return self._get("images")

    @property
    def model(self) -> Any:
        return self._get("model")

    @property
    def explainer(self) -> Any:
        return self._get("explainer")


def masks_of(split: Any) -> dict[str, np.ndarray]:
    """A split's masks as a mapping name -> bool (N, H, W) (``Split.masks``)."""
    masks = getattr(split, "masks", None)
    return dict(masks) if isinstance(masks, Mapping) else {}


def metric_data(
    spec: MetricSpec,
    *,
    ids: Any,
    grid: tuple[int, int] | None = None,
    curves: Mapping[str, Any] | None = None,
    heatmaps: Any = None,
    masks: Mapping[str, Any] | None = None,
    labels: Any = None,
    targets: Any = None,
    model: Any = None,
    explainer: Any = None,
    images: Any = None,
    dataset: str = "the dataset",
) -> MetricData:
    """The :class:`MetricData` of ``spec``: only what it declared is taken from the arguments.

    A declared mask the cell does not have raises :class:`MetricSkipped` (naming the
    masks there are), so the metric is left out of that cell with the reason.
    """
    inputs = spec.inputs
    available = dict(masks or {})
    absent = [m for m in inputs.masks if m not in available]
    if absent:
        have = ", ".join(sorted(available)) or "none"
        raise MetricSkipped(
            f"{dataset} has no mask {', '.join(map(repr, absent))} (its masks: {have}): "
            f"metric {spec.name!r} left out"
        )
    return MetricData(
        inputs=inputs,
        name=spec.name,
        ids=ids,
        grid=grid,
        curves={o: (curves or {})[o] for o in inputs.curves if o in (curves or {})},
        heatmaps=heatmaps if inputs.heatmaps else None,
        masks={m: available[m] for m in inputs.masks},
        labels=labels if inputs.labels else None,
        targets=targets if inputs.targets else None,
        model=model if inputs.model else None,
        explainer=explainer if inputs.explainer else None,
        images=images if inputs.images else None,
    )


def check_columns(name: str, headline: str, out: Any, n: int) -> dict[str, np.ndarray]:
    """``compute``'s result as ``{column: float64 (N,) or (N, K)}``, or a ComponentOutputError."""
    where = f"metric {name!r}"
    if not isinstance(out, Mapping):
        raise ComponentOutputError(
            f"{where}: compute() must return a mapping of column name -> per-image values, "
            f"got {type(out).__name__}"
        )
    if headline not in out:
        raise ComponentOutputError(
            f"{where}: compute() returned no headline column {headline!r} (columns: "
            f"{', '.join(map(str, out)) or 'none'})"
        )
    columns: dict[str, np.ndarray] = {}
    for column, values in out.items():
        problem = name_problem(column) if isinstance(column, str) else "not a string"
        if problem is not None:
            raise ComponentOutputError(f"{where}: column name {column!r} is invalid: {problem}")
        try:
            arr = np.asarray(values)
        except Exception as exc:  # noqa: BLE001 - a ragged list, an object
            raise ComponentOutputError(f"{where}: column {column!r} is not an array: {exc}") from exc
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise ComponentOutputError(f"{where}: column {column!r} must be numeric, got dtype {arr.dtype}")
        if arr.ndim not in (1, 2) or arr.shape[0] != n:
            raise ComponentOutputError(
                f"{where}: column {column!r} must be (N,) or (N, K) with N = {n} images, got shape {arr.shape}"
            )
        if column == headline and arr.ndim != 1:
            raise ComponentOutputError(f"{where}: the headline column {column!r} must be (N,), got shape {arr.shape}")
        columns[column] = arr.astype(np.float64)
    return columns


def compute_columns(metric: Any, spec: MetricSpec, data: MetricData) -> dict[str, np.ndarray]:
    """``metric.compute(data)``, checked (see :func:`check_columns`)."""
    compute = getattr(metric, "compute", None)
    if not callable(compute):
        raise ComponentOutputError(
            f"metric {spec.name!r}: {type(metric).__name__} has no compute(data) method "
            "(the metric contract: compute(data) -> {column: per-image values})"
        )
    return check_columns(spec.name, spec.headline_column, compute(data), len(data))


@dataclass(frozen=True)
class Summary:
    """The statistics of a headline column: mean of the finite values, bootstrap CI, counts."""

    value: float
    ci: tuple[float, float]
    n: int
    n_excluded: int


def summarise(values: Any, *, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0) -> Summary:
    """Mean and percentile-bootstrap CI of the finite values; non-finite ones counted, left out."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = v[np.isfinite(v)]
    excluded = int(v.size - finite.size)
    if finite.size == 0:
        return Summary(value=math.nan, ci=(math.nan, math.nan), n=0, n_excluded=excluded)
    lo, hi = bootstrap_ci(finite, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return Summary(value=float(finite.mean()), ci=(float(lo), float(hi)), n=int(finite.size), n_excluded=excluded)


def required_orders(specs: Iterable[MetricSpec]) -> tuple[str, ...]:
    """The union of the curve orders the metrics need, in :data:`bench.plugin.specs.CURVE_ORDERS` order."""
    wanted = {o for spec in specs for o in spec.inputs.curves}
    return tuple(o for o in CURVE_ORDERS if o in wanted)


def metric_params_key(params: Mapping[str, Any] | None) -> str:
    """The fingerprint of a metric's own (resolved) parameters: part of its column's identity."""
    return content_key("metric-params", dict(params or {}))
