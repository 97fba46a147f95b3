"""The plan: a loaded config checked against the registry, every default resolved.

:func:`make_plan` validates every plugin name and parameter at once (``bench run
--dry-run`` included), constructs each selected component with its parameters and
calls its optional ``validate()``, resolves the gain reference (``leaderboard.control``)
and the executor (``run.executor``, with ``[executors.params.<name>]``), and checks the
region grid and the models against the dataset's declared image size. A :class:`Plan`
is plain data (the resolved config plus the selected names); :attr:`Plan.cells` are its
:class:`CellTask` s.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import loading as config_mod
from bench.errors import BenchError, ConfigError, did_you_mean
from bench.pipeline.controls import (
    CONTROL_KEY,
    DEPRECATED_CONTROL_KEY,
    control_setting,
    registered_role,
    resolve_control,
)
from bench.pipeline.metrics import metric_needs, required_orders
from bench.pipeline.variants import registered_explainer, resolve_variants, variant_key
from bench.plugin.registry import accepted_params, check_params, registry
from bench.plugin.specs import ExecutorSpec, ExplainerSpec, MetricSpec


def log(message: str, *, quiet: bool = False) -> None:
    """A progress line on stderr (nothing when ``quiet``)."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# plan
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellTask:
    """One cell of the grid: plain data."""

    dataset: str
    model: str
    explainer: str
    perturbation: str

    @property
    def cell_id(self) -> str:
        return f"{self.dataset}__{self.model}__{self.explainer}__{self.perturbation}"

    @property
    def model_id(self) -> str:
        return f"{self.dataset}__{self.model}"


@dataclass
class Plan:
    """The resolved config plus the component names it selects."""

    config: dict[str, Any]
    dataset: str
    models: list[str]
    explainers: list[str]
    perturbations: list[str]
    #: the selected metrics, in the config's order
    metrics: list[str] = field(default_factory=list)
    #: explainers left out of the grid (name -> why): selected through ``all`` but needing a
    #: dataset mask the dataset lacks (see :func:`drop_unavailable_explainers`)
    dropped: dict[str, str] = field(default_factory=dict)

    def metric_spec(self, name: str) -> MetricSpec:
        spec = registry().get("metric", name).spec
        assert isinstance(spec, MetricSpec)
        return spec

    def explainer_spec(self, name: str) -> ExplainerSpec:
        """The registered spec of explainer ``name`` (of the explainer a variant label stands for)."""
        spec = registry().get("explainer", self.registered_explainer(name)).spec
        assert isinstance(spec, ExplainerSpec)
        return spec

    def registered_explainer(self, name: str) -> str:
        """The registered explainer behind ``name`` (a variant label or a registered name)."""
        return registered_explainer(self.config, name)

    @property
    def executor(self) -> str:
        """The executor's name (``run.executor``)."""
        return str(self.config["run"]["executor"])

    @property
    def executor_params(self) -> dict[str, Any]:
        """The executor's parameters (``[executors.params.<name>]``)."""
        return dict(self.config["executors"]["params"].get(self.executor, {}))

    def named(self, section: str) -> list[str]:
        """The names ``section`` (``explainers``, ...) lists itself, not through ``all``."""
        return [n for n in self.config[section]["names"] if n != config_mod.ALL]

    @property
    def orders(self) -> tuple[str, ...]:
        """The curve orders every cell computes: the union of what the selected metrics need."""
        return required_orders(self.metric_spec(name) for name in self.metrics)

    def metric_image_cap(self, name: str) -> int:
        """The image budget of metric ``name`` (``metrics.max_images``; 0 = every explained image)."""
        return int(self.config["metrics"].get("max_images", {}).get(name, 0) or 0)

    @property
    def primary(self) -> str:
        """The metric the leaderboard ranks by (``leaderboard.primary``, else the first selected)."""
        chosen = self.config["leaderboard"].get("primary") or ""
        return chosen or (self.metrics[0] if self.metrics else "")

    @property
    def cells(self) -> list[CellTask]:
        return [
            CellTask(self.dataset, m, e, p)
            for m in self.models
            for e in self.explainers
            for p in self.perturbations
        ]

    @property
    def results_dir(self) -> Path:
        return Path(self.config["run"]["out"])


def make_plan(cfg: Mapping[str, Any]) -> Plan:
    """Check every plugin name and parameter of a loaded config, and every value a plugin decides.

    The plan-time validation protocol (cheap: components only store in ``__init__``):

    * every selected component is constructed with its parameters, then its optional
      ``validate()`` method is called (no arguments; it raises on a bad parameter);
    * a dataset may declare ``image_shape() -> (H, W) | None`` (cheap, without loading):
      the region grid and the models (constructed with that input shape) are then
      checked here; when it is unknown they are checked by :func:`check_image_fit`
      when the dataset loads, before any cell runs;
    * a ``ValueError``, ``TypeError`` or ``ConfigError`` from either becomes a
      :class:`ConfigError` naming the config key (``perturbations.params.gaussian-noise.sigma``:
      an exception attribute ``param``, else the first parameter the message names);
      other :class:`BenchError` exceptions (a missing weights file) pass unchanged.

    ``leaderboard.control`` is resolved here (:func:`bench.pipeline.controls.resolve_control`): empty,
    it becomes the grid's only null-control explainer (``""`` when there is none); a name
    must be a selected control; two null controls and no name are a ConfigError. The
    deprecated ``aopc.baseline`` is read as its alias and cleared.
    """
    reg = registry()
    cfg = dict(cfg)
    dataset = cfg["dataset"]["name"]
    known = reg.names("dataset")
    if dataset not in known:
        raise ConfigError(
            f"dataset.name: unknown dataset {dataset!r}{did_you_mean(dataset, known)}; "
            f"known datasets: {', '.join(known) or '(none registered)'}"
        )
    explainers = resolve_variants(cfg, config_mod.resolve_names(cfg, "explainers", reg), reg.names("explainer"))
    plan = Plan(
        config=cfg,
        dataset=dataset,
        models=config_mod.resolve_names(cfg, "models", reg),
        explainers=explainers,
        perturbations=config_mod.resolve_names(cfg, "perturbations", reg),
        metrics=config_mod.resolve_names(cfg, "metrics", reg),
    )
    for section in ("models", "explainers", "perturbations", "metrics"):
        kind = config_mod.SECTION_KIND[section]
        selected = getattr(plan, section)
        variants = cfg[section].get("variants", {})
        for name in cfg[section]["params"]:
            if name in variants:
                continue  # a variant's merged params: checked with the component below
            if name not in reg.names(kind):
                raise ConfigError(
                    f"{section}.params.{name}: unknown {kind} {name!r}"
                    f"{did_you_mean(name, reg.names(kind))}"
                )
            if name in selected:
                factory = reg.get(kind, name).load_factory()
                check_params(factory, cfg[section]["params"][name], where=f"{section}.params.{name}")
    _resolve_control(plan)
    # each selected component, constructed with its params and validated (no heavy work)
    dparams = dataset_params(plan)  # validates dataset params and --data
    component = validated_component(
        "dataset", dataset, dparams, key="dataset.params", names=cfg["dataset"]["params"]
    )
    built: dict[str, Any] = {}
    for section in ("explainers", "perturbations", "metrics"):
        kind = config_mod.SECTION_KIND[section]
        for name in getattr(plan, section):
            registered = registered_explainer(cfg, name) if section == "explainers" else name
            made = validated_component(
                kind, registered, cfg[section]["params"].get(name, {}), key=variant_key(cfg, name)
                if registered != name else f"{section}.params.{name}",
            )
            if section == "metrics":
                built[name] = made
    _check_metric_perturbations(plan, built)
    _check_primary(plan)
    _check_metric_budgets(plan)
    check_executor(plan)
    image_shape = declared_image_shape(component, dataset)
    if image_shape is not None:
        check_image_fit(plan, image_shape)
    return plan


def metric_perturbations(plan: Plan, metrics: Mapping[str, Any]) -> dict[str, list[str]]:
    """perturbation -> the metrics of ``plan`` that ask for curves under it by name (``morf@road``,
    or their perturbation parameter), beyond the grid's own perturbations. ``metrics``: name ->
    the constructed metric (its ``get_params()`` are the resolved parameters)."""
    reg = registry()
    wanted: dict[str, list[str]] = {}
    for name, metric in metrics.items():
        spec = reg.get("metric", name).spec
        get = getattr(metric, "get_params", None)
        params = dict(get()) if callable(get) else dict(plan.config["metrics"]["params"].get(name, {}))
        try:
            needs = metric_needs(spec, params)
        except BenchError as exc:
            raise ConfigError(f"metrics.params.{name}: {exc}") from exc
        for curve in needs.curves:
            if curve.perturbation and curve.perturbation not in plan.perturbations:
                wanted.setdefault(curve.perturbation, []).append(name)
    return wanted


def _check_metric_perturbations(plan: Plan, metrics: Mapping[str, Any]) -> None:
    """A perturbation only metrics use is checked like a selected one: registered, its
    ``[perturbations.params.<name>]`` fit its factory, constructed and validated; the error
    names the key and the metrics that use it."""
    known = registry().names("perturbation")
    for name, users in metric_perturbations(plan, metrics).items():
        who = ", ".join(map(repr, dict.fromkeys(users)))
        if name not in known:
            raise ConfigError(
                f"metric(s) {who} read curves under the perturbation {name!r}, which is not registered"
                f"{did_you_mean(name, known)}; known perturbations: {', '.join(known) or '(none registered)'}"
            )
        try:
            validated_component("perturbation", name, plan.config["perturbations"]["params"].get(name, {}),
                                key=f"perturbations.params.{name}")
        except ConfigError as exc:
            raise ConfigError(f"{exc} (used by the metric(s) {who})") from exc


def check_executor(plan: Plan) -> None:
    """The plan's executor (``run.executor`` with ``[executors.params.<name>]``): see
    :func:`check_executor_choice`."""
    check_executor_choice(plan.executor, plan.executor_params, configured=plan.config["executors"]["params"])


def check_executor_choice(name: str, params: Mapping[str, Any], *, configured: Any = ()) -> None:
    """``name`` is a registered executor whose modules import and whose ``params`` fit.

    A ConfigError names ``run.executor`` (with a did-you-mean) or the parameter key (also
    for a name in ``configured``, the executors ``[executors.params]`` is given for, that is
    not registered); a missing module of the spec's ``requires`` is a :class:`BenchError`
    with its ``install`` hint, so ``--executor ray`` without Ray stops before anything runs.
    """
    reg = registry()
    known = reg.names("executor")
    for other in configured:
        if other not in known:
            raise ConfigError(
                f"executors.params.{other}: unknown executor {other!r}{did_you_mean(other, known)}; "
                f"known executors: {', '.join(known) or '(none registered)'}"
            )
    if name not in known:
        raise ConfigError(
            f"run.executor: unknown executor {name!r}{did_you_mean(name, known)}; "
            f"known executors: {', '.join(known) or '(none registered)'}"
        )
    spec = reg.get("executor", name).spec
    assert isinstance(spec, ExecutorSpec)
    for module in spec.requires:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            hint = f": {spec.install}" if spec.install else ""
            raise BenchError(
                f"--executor {name} (run.executor = {name!r}) needs the module {module!r}{hint}; "
                f"import failed: {exc}"
            ) from exc
    validated_component("executor", name, dict(params), key=f"executors.params.{name}")


def drop_unavailable_explainers(plan: Plan, mask_names: Any) -> dict[str, str]:
    """Leave out of ``plan`` the explainers selected through ``all`` that need a missing mask.

    ``mask_names``: the masks the loaded dataset carries. An explainer whose spec declares a
    mask the dataset lacks cannot run on it: selected through ``all`` it is removed from
    :attr:`Plan.explainers` (and listed in :attr:`Plan.dropped` with the reason); named in
    ``explainers.names`` it stays, and its cells fail with the reason. Returns the dropped
    explainers (name -> reason).
    """
    have = set(mask_names)
    named = set(plan.named("explainers"))
    dropped: dict[str, str] = {}
    for name in plan.explainers:
        missing = [m for m in plan.explainer_spec(name).masks if m not in have]
        if missing and name not in named:
            dropped[name] = missing_masks_text("explainer", name, missing, plan.dataset, have)
    if dropped:
        plan.explainers = [e for e in plan.explainers if e not in dropped]
        plan.dropped.update(dropped)
    return dropped


def missing_masks_text(kind: str, name: str, missing: Any, dataset: str, have: Any) -> str:
    """Why ``kind`` ``name`` cannot run on ``dataset``: the masks it needs and those there are."""
    masks = ", ".join(repr(m) for m in missing)
    there = ", ".join(sorted(have)) or "none"
    return (f"{kind} {name!r} needs the dataset mask(s) {masks}, which dataset {dataset!r} does not "
            f"have (its masks: {there})")


def _check_primary(plan: Plan) -> None:
    primary = plan.config["leaderboard"].get("primary") or ""
    if primary and primary not in plan.metrics:
        raise ConfigError(
            f"leaderboard.primary = {primary!r} is not a selected metric"
            f"{did_you_mean(primary, plan.metrics)}; selected metrics: {', '.join(plan.metrics)} "
            "(or \"\" for the first of them)"
        )


def _check_metric_budgets(plan: Plan) -> None:
    """``metrics.max_images``: registered metric names (a budget of a metric the grid does not
    select is left unused, as a preset's are when a run selects fewer metrics), integers >= 0."""
    known = registry().names("metric")
    for name, cap in plan.config["metrics"].get("max_images", {}).items():
        if name not in known:
            raise ConfigError(
                f"metrics.max_images.{name}: unknown metric {name!r}{did_you_mean(name, known)}"
            )
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            raise ConfigError(f"metrics.max_images.{name} must be an integer >= 0 (0 = all), got {cap!r}")


def _resolve_control(plan: Plan) -> None:
    """Write the resolved gain reference into ``plan.config["leaderboard"]["control"]``."""
    cfg = plan.config
    key = CONTROL_KEY if cfg["leaderboard"].get("control") or not cfg["aopc"].get("baseline") else (
        DEPRECATED_CONTROL_KEY)
    control = control_setting(cfg)
    roles = {name: registered_role(plan.registered_explainer(name)) for name in plan.explainers}
    if control and control not in roles and control in registry().names("explainer"):
        roles[control] = registered_role(control)  # registered, not selected: a preference
    resolved = resolve_control(plan.explainers, roles, control, key=key)
    cfg["leaderboard"] = {**cfg["leaderboard"], "control": resolved}
    cfg["aopc"] = {**cfg["aopc"], "baseline": ""}


def _required_params(factory: Any) -> list[str]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    return [
        p.name for p in sig.parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
        and p.default is inspect.Parameter.empty
    ]


def _culprit(exc: BaseException, names: Any) -> str | None:
    param = getattr(exc, "param", None)
    if isinstance(param, str) and param:
        return param
    text = str(exc)
    hits = []
    for name in names:
        found = re.search(rf"(?<![\w.-]){re.escape(str(name))}(?![\w-])", text)
        if found:
            hits.append((found.start(), str(name)))
    return min(hits)[1] if hits else None


def validated_component(
    kind: str, name: str, params: Mapping[str, Any], *, key: str, names: Any = None
) -> Any:
    """``kind`` ``name`` constructed with ``params`` and its optional ``validate()`` called.

    Bad parameters raise a :class:`ConfigError` naming ``key`` (``key.param`` when the
    culprit is one of ``names``, default: the keys of ``params``). See :func:`make_plan`.
    """
    factory = registry().get(kind, name).load_factory()
    check_params(factory, params, where=key)
    missing = [p for p in _required_params(factory) if p not in params]
    if missing:
        hint = " (pass --data PATH, or set dataset.data)" if kind == "dataset" and "root" in missing else ""
        raise ConfigError(
            f"{kind} {name!r} needs the parameter(s) {', '.join(map(repr, missing))}{hint}"
        )
    try:
        component = factory(**params)
        validate = getattr(component, "validate", None)
        if callable(validate):
            validate()
    except (ValueError, TypeError, ConfigError) as exc:
        culprit = _culprit(exc, params if names is None else names)
        where = f"{key}.{culprit}" if culprit else key
        text = str(exc) or type(exc).__name__
        if isinstance(exc, TypeError) and not isinstance(exc, BenchError):
            text = f"TypeError: {text}"
        raise ConfigError(f"{where}: {text}") from exc
    return component


def declared_image_shape(component: Any, name: str) -> tuple[int, int] | None:
    """The dataset's ``image_shape()`` (H, W) when it declares one, else None."""
    method = getattr(component, "image_shape", None)
    if not callable(method):
        return None
    try:
        shape = method()
    except (ValueError, TypeError, ConfigError) as exc:
        raise ConfigError(f"dataset.params: dataset {name!r}: {exc}") from exc
    if shape is None:
        return None
    h, w = (int(d) for d in tuple(shape)[:2])
    return (h, w)


def check_image_fit(
    plan: Plan, image_shape: tuple[int, ...], num_classes: int | None = None
) -> None:
    """The region grid fits the images, and every model accepts them (ConfigError naming the key)."""
    h, w = int(image_shape[0]), int(image_shape[1])
    rows, cols = config_mod.grid_shape(plan.config["aopc"]["grid"])
    if rows > h or cols > w:
        raise ConfigError(
            f"aopc.grid = {plan.config['aopc']['grid']!r} ({rows}x{cols} regions) is larger than the "
            f"{h}x{w} images of dataset {plan.dataset!r}: at most {h} rows and {w} columns"
        )
    for name in plan.models:
        validated_component(
            "model", name, model_params(plan, name, (h, w), num_classes),
            key=f"models.params.{name}", names=plan.config["models"]["params"].get(name, {}),
        )


def dataset_params(plan: Plan) -> dict[str, Any]:
    cfg = plan.config["dataset"]
    entry = registry().get("dataset", plan.dataset)
    factory = entry.load_factory()
    params = dict(cfg["params"])
    if cfg["data"]:
        names, var_kw = accepted_params(factory)
        if "root" not in names and not var_kw:
            raise ConfigError(
                f"dataset {plan.dataset!r} reads no folder: --data / dataset.data is not accepted"
            )
        params["root"] = cfg["data"]
    check_params(factory, params, where=f"dataset.params ({plan.dataset!r})")
    return params


def model_params(
    plan: Plan, name: str, image_shape: tuple[int, ...] | None, num_classes: int | None
) -> dict[str, Any]:
    """Per-model params: config params, the dataset's input shape and classes, ``models.weights``.

    ``image_shape`` / ``num_classes`` None (not known yet): left to the factory's defaults.
    ``models.weights`` (CLI ``--weights``) applies to the models whose factory has a
    ``weights`` parameter defaulting to pretrained weights (anything but none);
    a model's own ``models.params.<name>.weights`` always wins.
    """
    entry = registry().get("model", name)
    factory = entry.load_factory()
    params = dict(plan.config["models"]["params"].get(name, {}))
    names, var_kw = accepted_params(factory)
    if image_shape is not None and ("input_shape" in names or var_kw):
        params.setdefault("input_shape", [int(image_shape[0]), int(image_shape[1]), 3])
    if num_classes is not None and ("num_classes" in names or var_kw):
        params.setdefault("num_classes", int(num_classes))
    weights = plan.config["models"]["weights"]
    if weights != "default" and "weights" in names and "weights" not in params:
        target = factory.__init__ if inspect.isclass(factory) else factory
        default = inspect.signature(target).parameters["weights"].default
        if default not in (None, "none", inspect.Parameter.empty):
            params["weights"] = weights
    return params


