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

:func:`metric_needs` resolves what one metric reads given its parameters (the perturbation
of its curves, the masks its parameters name: :attr:`bench.MetricSpec.perturbation_param`,
:attr:`bench.MetricSpec.mask_params`); :func:`required_orders` is the union of the curve
orders a set of metrics needs: the runner computes those curves and no others.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bench.errors import BenchError, ComponentOutputError
from bench.pipeline.store import content_key
from bench.plugin.names import name_problem
from bench.plugin.specs import CURVE_ORDERS, MetricInputs, MetricSpec, curve_key
from bench.stats import bootstrap_ci


class MetricInputError(BenchError):
    """A metric read an input its spec did not declare."""


class MetricSkipped(BenchError):
    """A cell cannot give a metric what it declared (a dataset without the named mask)."""


@dataclass(frozen=True)
class CurveNeed:
    """One curve a metric reads: its ``entry`` (as declared: ``data.curve(entry)``), the order,
    and the perturbation (``""``: the cell's)."""

    entry: str
    order: str
    perturbation: str = ""

    def key(self, cell_perturbation: str) -> str:
        """The name of these curves in a cell whose perturbation is ``cell_perturbation``
        (:func:`bench.plugin.specs.curve_key`: ``morf``, or ``morf@<perturbation>``)."""
        return curve_key(self.order, self.perturbation, cell_perturbation)

    def perturbation_in(self, cell_perturbation: str) -> str:
        """The perturbation these curves are computed under in that cell."""
        return self.perturbation or cell_perturbation


@dataclass(frozen=True)
class MetricNeeds:
    """What one metric reads given its parameters: ``inputs`` (its spec's, the masks its
    :attr:`bench.MetricSpec.mask_params` name in place of the declared ones) and its curves."""

    inputs: MetricInputs
    curves: tuple[CurveNeed, ...] = ()

    def curve_keys(self, cell_perturbation: str) -> dict[str, str]:
        """entry -> the name of its curves in a cell whose perturbation is ``cell_perturbation``."""
        return {c.entry: c.key(cell_perturbation) for c in self.curves}

    def other_perturbations(self, cell_perturbation: str) -> tuple[str, ...]:
        """The perturbations of its curves other than the cell's, in first-use order."""
        return tuple(dict.fromkeys(c.perturbation for c in self.curves
                                   if c.perturbation and c.perturbation != cell_perturbation))


def _param_names(value: Any, spec: MetricSpec, param: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise BenchError(f"metric {spec.name!r}: parameter {param!r} must name a mask (or a list of them), "
                         f"got {value!r}")
    for v in values:
        problem = name_problem(v)
        if problem is not None:
            raise BenchError(f"metric {spec.name!r}: parameter {param!r} = {v!r}: {problem}")
    return tuple(values)


def metric_needs(spec: MetricSpec, params: Mapping[str, Any] | None = None) -> MetricNeeds:
    """What the metric of ``spec`` reads with the (resolved) parameters ``params``.

    The curves entries that name no perturbation are under the one the parameter
    :attr:`~bench.MetricSpec.perturbation_param` names (``""``: the cell's); with
    :attr:`~bench.MetricSpec.mask_params`, the masks are those the parameters name (the
    spec's ``inputs.masks`` are what its defaults name, and what it reads when ``params``
    holds none of them, e.g. ``None``). A parameter that is not a name raises a
    :class:`BenchError` naming it.
    """
    given = params is not None
    params = dict(params or {})
    inputs = spec.inputs
    chosen = ""
    if spec.perturbation_param:
        value = params.get(spec.perturbation_param, "")
        if value is None:
            value = ""
        if not isinstance(value, str) or (value and name_problem(value) is not None):
            raise BenchError(
                f"metric {spec.name!r}: parameter {spec.perturbation_param!r} must name a registered "
                f"perturbation (or be \"\" for the cell's), got {value!r}"
            )
        chosen = value
    curves = tuple(CurveNeed(entry, order, perturbation or chosen)
                   for entry, order, perturbation in inputs.curve_requests())
    if spec.mask_params and given and any(p in params for p in spec.mask_params):
        masks = tuple(dict.fromkeys(m for p in spec.mask_params for m in _param_names(params.get(p), spec, p)))
        inputs = replace(inputs, masks=masks)
    return MetricNeeds(inputs=inputs, curves=curves)


def _read_only(value: Any) -> np.ndarray:
    view = np.asarray(value).view()
    view.flags.writeable = False
    return view


class MetricData:
    """What a metric's ``compute(data)`` gets: the declared inputs of N images, aligned by row.

    Always there: ``ids`` (N,), ``grid`` (rows, cols) and ``seed`` (the run's seed, the one
    the curves' noise derives from: ``bench.engine.regions.derive_seeds(data.seed, data.ids)``).
    Only where :class:`bench.MetricInputs` asked for them: ``curves`` (entry -> float
    (N, L+1); :meth:`curve`, and :meth:`curve_perturbation` the perturbation they were
    computed under), ``heatmaps`` float32 (N, h, w), ``masks`` (name -> bool (N, H, W)),
    ``labels`` / ``targets`` int (N,), ``model``, ``explainer`` (with ``explainer_masks``:
    name -> bool (N, H, W), the dataset masks the cell's explainer declares, to pass as
    ``masks=`` when re-explaining; ``{}`` when it declares none), ``images`` uint8
    (N, H, W), and ``perturbation`` / ``perturbation_params`` (the cell's perturbation, its
    name and resolved parameters). Any other raises :class:`MetricInputError`. Arrays are
    read-only views (copy before changing them).
    """

    __slots__ = ("name", "inputs", "ids", "grid", "seed", "_curves", "_curve_perturbations", "_heatmaps",
                 "_masks", "_labels", "_targets", "_model", "_explainer", "_explainer_masks", "_images",
                 "_perturbation", "_perturbation_params")

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
        seed: int = 0,
        perturbation: str | None = None,
        perturbation_params: Mapping[str, Any] | None = None,
        explainer_masks: Mapping[str, Any] | None = None,
        curve_perturbations: Mapping[str, str] | None = None,
    ):
        self.name = name
        self.inputs = inputs
        self.ids = _read_only(np.asarray(ids).astype(str))
        self.grid = tuple(int(g) for g in grid) if grid is not None else None
        self.seed = int(seed)
        n = len(self.ids)
        given_curves = dict(curves or {})
        missing = [o for o in inputs.curves if o not in given_curves]
        if missing:
            raise BenchError(f"metric {name!r}: no {', '.join(missing)} curves were computed for it")
        self._curves = {o: _read_only(given_curves[o]) for o in inputs.curves}
        self._curve_perturbations = {o: str((curve_perturbations or {}).get(o, "")) for o in inputs.curves}
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
        self._explainer_masks = ({m: _read_only(a) for m, a in dict(explainer_masks or {}).items()}
                                 if inputs.explainer else None)
        self._perturbation = (perturbation or "") if inputs.perturbation else None
        self._perturbation_params = dict(perturbation_params or {}) if inputs.perturbation else None
        for what, arr in (("heatmaps", self._heatmaps), ("labels", self._labels),
                          ("targets", self._targets), ("images", self._images),
                          *((f"curves[{o!r}]", c) for o, c in self._curves.items()),
                          *((f"masks[{m!r}]", a) for m, a in self._masks.items()),
                          *((f"explainer_masks[{m!r}]", a) for m, a in (self._explainer_masks or {}).items())):
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
        """The curves of one declared entry (``"morf"``, ``"morf@<perturbation>"``), (N, L+1)."""
        if order not in self._curves:
            raise self._undeclared(f"curves of order {order!r}")
        return self._curves[order]

    def curve_perturbation(self, order: str) -> str:
        """The perturbation the curves of a declared entry were computed under (``""``: not said)."""
        if order not in self._curves:
            raise self._undeclared(f"curves of order {order!r}")
        return self._curve_perturbations[order]

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

    @property
    def explainer_masks(self) -> Mapping[str, np.ndarray]:
        """The dataset masks the cell's explainer declares (name -> bool (N, H, W)), ``{}`` when none."""
        if not self.inputs.explainer:
            raise self._undeclared("explainer_masks (they come with the explainer)")
        return dict(self._explainer_masks or {})

    @property
    def perturbation(self) -> str:
        """The cell's perturbation (its registered name; ``""`` outside a run)."""
        return self._get("perturbation")

    @property
    def perturbation_params(self) -> Mapping[str, Any]:
        """The resolved parameters of the cell's perturbation."""
        if not self.inputs.perturbation:
            raise self._undeclared("perturbation_params")
        return dict(self._perturbation_params or {})


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
    params: Mapping[str, Any] | None = None,
    needs: MetricNeeds | None = None,
    seed: int = 0,
    perturbation: str = "",
    perturbation_params: Mapping[str, Any] | None = None,
    explainer_masks: Mapping[str, Any] | None = None,
) -> MetricData:
    """The :class:`MetricData` of ``spec``: only what it declared is taken from the arguments.

    ``needs`` (else :func:`metric_needs` of ``spec`` and the metric's resolved ``params``)
    says which curves and masks. ``curves`` maps curve names (:func:`bench.plugin.specs.curve_key`
    in the cell whose perturbation is ``perturbation``: ``morf``, ``morf@<name>``) to
    (N, L+1) arrays; outside a run (``perturbation=""``) a declared entry may also be given
    under its own name. A declared mask the cell does not have raises :class:`MetricSkipped`
    (naming the masks there are), so the metric is left out of that cell with the reason.
    """
    needs = needs if needs is not None else metric_needs(spec, params)
    inputs = needs.inputs
    available = dict(masks or {})
    absent = [m for m in inputs.masks if m not in available]
    if absent:
        have = ", ".join(sorted(available)) or "none"
        raise MetricSkipped(
            f"{dataset} has no mask {', '.join(map(repr, absent))} (its masks: {have}): "
            f"metric {spec.name!r} left out"
        )
    given = dict(curves or {})
    picked: dict[str, Any] = {}
    for need in needs.curves:
        key = need.key(perturbation)
        if key in given:
            picked[need.entry] = given[key]
        elif not perturbation and need.entry in given:  # a direct call (the testing kit): by entry
            picked[need.entry] = given[need.entry]
    return MetricData(
        inputs=inputs,
        name=spec.name,
        ids=ids,
        grid=grid,
        curves=picked,
        heatmaps=heatmaps if inputs.heatmaps else None,
        masks={m: available[m] for m in inputs.masks},
        labels=labels if inputs.labels else None,
        targets=targets if inputs.targets else None,
        model=model if inputs.model else None,
        explainer=explainer if inputs.explainer else None,
        images=images if inputs.images else None,
        seed=seed,
        perturbation=perturbation if inputs.perturbation else None,
        perturbation_params=perturbation_params if inputs.perturbation else None,
        explainer_masks=explainer_masks if inputs.explainer else None,
        curve_perturbations={c.entry: c.perturbation_in(perturbation) for c in needs.curves},
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
    """The union of the curve orders the metrics need (under any perturbation), in
    :data:`bench.plugin.specs.CURVE_ORDERS` order."""
    wanted = {order for spec in specs for _, order, _ in spec.inputs.curve_requests()}
    return tuple(o for o in CURVE_ORDERS if o in wanted)


def metric_params_key(params: Mapping[str, Any] | None, curves: Mapping[str, Any] | None = None) -> str:
    """The fingerprint of a metric's own (resolved) parameters: part of its column's identity.

    ``curves``: what identifies the curves it read under a perturbation other than the
    cell's (entry -> perturbation name and parameters): those parameters are not in the
    row's settings (only the cell's perturbation is), so they are part of the column's
    identity. Without any, the key is that of the parameters alone.
    """
    if not curves:
        return content_key("metric-params", dict(params or {}))
    return content_key("metric-params", {"params": dict(params or {}), "curves": dict(curves)})
