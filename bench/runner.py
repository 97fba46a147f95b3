"""The benchmark run: a grid of cells (dataset x model x explainer x perturbation).

Each stage is a pure function of its inputs and is cached under a content hash
of them (stage and bench versions + plugin name, version and code digest +
parameters and the contents of files they name + upstream keys + seed; see
:mod:`bench.keys`) in ``results/cache/``, so a re-run recomputes nothing and a
run killed at any point finishes only the remaining work when started again; a
damaged cache entry is set aside and recomputed (:class:`bench.store.Cache`):

    dataset split  -> trained model (+ test evaluation) -> heatmaps
        -> curves (only the orders the selected metrics need) -> metrics -> cell

Cells are plain data in (:class:`CellTask` + the resolved config) and a typed,
versioned record out (:class:`bench.record.CellRecord`, JSON on disk), so another
executor can run them. A cell that raises, or whose component returns a wrong shape,
dtype or NaN, is recorded as failed with its message; the other cells finish and are
saved. A metric that raises fails only itself; the cell's other results are kept.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import config as config_mod
from .controls import (
    CONTROL_KEY,
    DEPRECATED_CONTROL_KEY,
    control_setting,
    registered_role,
    resolve_control,
)
from .errors import BenchError, ComponentOutputError, ConfigError, did_you_mean
from .keys import component_identity, param_files, stage_key
from .metrics import (
    MetricSkipped,
    compute_columns,
    masks_of,
    metric_data,
    metric_params_key,
    required_orders,
    summarise,
)
from .paths import safe_child
from .plugins import accepted_params, check_params, registry
from .record import CellRecord, MetricResult, Timings
from .settings import (
    cell_settings,
    count_constant_heatmaps,
    explainer_params_key,
    settings_key,
    weights_hash,
)
from .specs import MetricSpec
from .store import Cache, content_key, write_json, write_npz

#: Bumped when a stage's stored format or semantics change (invalidates caches).
#: Every stage key also holds bench's version and the code digest of its plugin.
STAGE_VERSION = {"dataset": 2, "model": 2, "evaluation": 2, "heatmaps": 2, "curves": 3, "metric": 1}


def log(message: str, *, quiet: bool = False) -> None:
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

    def metric_spec(self, name: str) -> MetricSpec:
        spec = registry().get("metric", name).spec
        assert isinstance(spec, MetricSpec)
        return spec

    @property
    def orders(self) -> tuple[str, ...]:
        """The curve orders every cell computes: the union of what the selected metrics need."""
        return required_orders(self.metric_spec(name) for name in self.metrics)

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

    ``leaderboard.control`` is resolved here (:func:`bench.controls.resolve_control`): empty,
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
    plan = Plan(
        config=cfg,
        dataset=dataset,
        models=config_mod.resolve_names(cfg, "models", reg),
        explainers=config_mod.resolve_names(cfg, "explainers", reg),
        perturbations=config_mod.resolve_names(cfg, "perturbations", reg),
        metrics=config_mod.resolve_names(cfg, "metrics", reg),
    )
    for section in ("models", "explainers", "perturbations", "metrics"):
        kind = config_mod.SECTION_KIND[section]
        selected = getattr(plan, section)
        for name in cfg[section]["params"]:
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
    for section in ("explainers", "perturbations", "metrics"):
        kind = config_mod.SECTION_KIND[section]
        for name in getattr(plan, section):
            validated_component(
                kind, name, cfg[section]["params"].get(name, {}), key=f"{section}.params.{name}"
            )
    _check_primary(plan)
    image_shape = declared_image_shape(component, dataset)
    if image_shape is not None:
        check_image_fit(plan, image_shape)
    return plan


def _check_primary(plan: Plan) -> None:
    primary = plan.config["leaderboard"].get("primary") or ""
    if primary and primary not in plan.metrics:
        raise ConfigError(
            f"leaderboard.primary = {primary!r} is not a selected metric"
            f"{did_you_mean(primary, plan.metrics)}; selected metrics: {', '.join(plan.metrics)} "
            "(or \"\" for the first of them)"
        )


def _resolve_control(plan: Plan) -> None:
    """Write the resolved gain reference into ``plan.config["leaderboard"]["control"]``."""
    cfg = plan.config
    key = CONTROL_KEY if cfg["leaderboard"].get("control") or not cfg["aopc"].get("baseline") else (
        DEPRECATED_CONTROL_KEY)
    control = control_setting(cfg)
    roles = {name: registered_role(name) for name in plan.explainers}
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


# --------------------------------------------------------------------------------------
# stages (pure, cached)
# --------------------------------------------------------------------------------------
#: In-process memo of loaded stage outputs, keyed by content key.
_MEMO: dict[str, Any] = {}


def clear_memo() -> None:
    _MEMO.clear()


def _key(stage: str, kind: str, name: str, params: Mapping[str, Any], *upstream: Any) -> str:
    """A stage's content key: stage + version + bench's version, the component (name,
    version, code digest), its parameters and the contents of files they name, upstream."""
    return stage_key(
        stage, STAGE_VERSION[stage], component_identity(kind, name), dict(params),
        param_files(params), *upstream,
    )


def _evaluation_key(model_key: str) -> str:
    return stage_key("evaluation", STAGE_VERSION["evaluation"], model_key)


def _component_params(obj: Any) -> dict[str, Any]:
    get = getattr(obj, "get_params", None)
    return dict(get()) if callable(get) else {}


@dataclass
class DatasetArtifact:
    splits: Any
    key: str
    file: Path
    params: dict[str, Any]


@dataclass
class ModelArtifact:
    model: Any
    key: str
    params: dict[str, Any]
    record: dict[str, Any]
    predictions: np.ndarray
    labels: np.ndarray
    ids: np.ndarray


class NotCached(Exception):
    """Raised by ``Stages(..., cached_only=True)`` where a stage would have to compute."""

    def __init__(self, stage: str, key: str):
        super().__init__(f"{stage} {key} is not in the cache")
        self.stage = stage
        self.key = key


class Stages:
    """The cached stage functions of one plan.

    With ``cached_only=True`` a stage whose result is not in the cache raises
    :class:`NotCached` instead of computing it (a cheap "is this cell done?" probe).
    """

    def __init__(
        self, plan: Plan, *, cache: Cache | None = None, quiet: bool = False, cached_only: bool = False
    ):
        self.plan = plan
        self.cache = cache or Cache(plan.results_dir / "cache")
        self.quiet = quiet
        self.progress = not quiet
        self.cached_only = cached_only

    # ---- dataset ---------------------------------------------------------------------
    def dataset(self) -> DatasetArtifact:
        params = dataset_params(self.plan)
        name = self.plan.dataset
        component = _create("dataset", name, params)
        fingerprint = component.fingerprint()
        key = _key("dataset", "dataset", name, params, fingerprint)
        if key in _MEMO:
            return _MEMO[key]
        from .data import DatasetSplits

        path = self.cache.path("datasets", key, ".npz")
        splits = self.cache.read_checked(path, DatasetSplits.load_file)
        if splits is None:
            if self.cached_only:
                raise NotCached("dataset", key)
            log(f"[dataset] loading {name} ...", quiet=self.quiet)
            splits = component.load()
            if not isinstance(splits, DatasetSplits):
                raise ComponentOutputError(
                    f"dataset {name!r}: load() returned {type(splits).__name__}, expected DatasetSplits"
                )
            splits.save(path)
        artifact = DatasetArtifact(splits=splits, key=key, file=path, params=_component_params(component) or params)
        _MEMO[key] = artifact
        return artifact

    # ---- model: train (cached) + evaluate on test (cached) -----------------------------
    def model(self, name: str, data: DatasetArtifact) -> ModelArtifact:
        from .evaluation import evaluate_classification
        from .training import TrainingConfig, train

        splits = data.splits
        params = model_params(self.plan, name, splits.image_shape, splits.num_classes)
        tcfg = self.plan.config["training"]
        seed = self.plan.config["run"]["seed"]
        key = _key("model", "model", name, params, data.key, tcfg, seed)
        if key in _MEMO:
            return _MEMO[key]
        if self.cached_only and (
            self.cache.get_json("models", key) is None
            or not self.cache.exists("models", key, ".keras")
            or not self.cache.exists("evaluation", _evaluation_key(key), ".npz")
        ):
            raise NotCached("model", key)
        model = _create("model", name, params)
        training_config = TrainingConfig(
            epochs=tcfg["epochs"],
            batch_size=tcfg["batch_size"],
            learning_rate=float(tcfg["learning_rate"]),
            seed=seed,
            selection=tcfg["selection"],
        )
        log(f"[train] {name} on {splits.name} ...", quiet=self.quiet)
        t0 = time.perf_counter()
        report = train(model, splits, training_config, cache=self.cache, key=key, progress=self.progress)
        train_seconds = time.perf_counter() - t0

        ekey = _evaluation_key(key)
        stored = self.cache.get_json("evaluation", ekey)
        arrays = self.cache.get_npz("evaluation", ekey, required=("ids", "labels", "predictions"))
        if stored is None or arrays is None:
            ev = evaluate_classification(
                model,
                splits.test,
                splits.class_names,
                batch_size=self.plan.config["aopc"]["batch_size"],
                # frozen backbones: the trainer already has the test probabilities from cached features
                probabilities=getattr(report, "test_probabilities", None),
            )
            probabilities = np.asarray(ev.probabilities, dtype=np.float32)
            if not np.all(np.isfinite(probabilities)):
                raise ComponentOutputError(f"model {name!r} returned non-finite probabilities on the test split")
            arrays = {
                "ids": splits.test.ids.astype(str),
                "labels": np.asarray(ev.labels, dtype=np.int64),
                "predictions": np.asarray(ev.predictions, dtype=np.int64),
                "probabilities": probabilities,
            }
            stored = ev.to_dict()
            self.cache.put_npz("evaluation", ekey, **arrays)
            self.cache.put_json("evaluation", ekey, stored)
        weights_info = model.weights_info() if hasattr(model, "weights_info") else {}
        record = {
            "dataset": splits.name,
            "model": name,
            "weights": weights_info.get("weights", params.get("weights", "n/a")),
            "weights_md5": weights_info.get("md5"),
            "weights_info": weights_info,
            "params": _component_params(model) or params,
            "provenance": registry().get("model", name).provenance(),
            "key": key,
            "classification": stored,
            "training": report.to_dict() if hasattr(report, "to_dict") else dict(report),
            "train_seconds": train_seconds,
        }
        artifact = ModelArtifact(
            model=model,
            key=key,
            params=params,
            record=record,
            predictions=arrays["predictions"],
            labels=arrays["labels"],
            ids=arrays["ids"],
        )
        _MEMO[key] = artifact
        return artifact

    def explained_subset(self, data: DatasetArtifact, model: ModelArtifact) -> np.ndarray:
        """Indices (into the test split) of the correctly classified images to explain.

        All of them (the study), or with ``aopc.max_images`` a class-stratified,
        seeded sample: classes take turns, so a cap never explains only the first
        class of a test split sorted by class. Returned in test-split order.
        """
        correct = np.flatnonzero(model.predictions == model.labels)
        cap = self.plan.config["aopc"]["max_images"]
        return stratified_sample(correct, model.labels[correct], cap, seed=self.plan.config["run"]["seed"])

    # ---- heatmaps -----------------------------------------------------------------------
    def heatmaps(
        self, name: str, data: DatasetArtifact, model: ModelArtifact, index: np.ndarray
    ) -> tuple[np.ndarray, str, dict[str, Any], float]:
        from .explain import compute_heatmaps

        params = dict(self.plan.config["explainers"]["params"].get(name, {}))
        explainer = _create("explainer", name, params)
        resolved = _component_params(explainer) or params
        test = data.splits.test
        ids = test.ids[index].astype(str)
        key = _key("heatmaps", "explainer", name, resolved, model.key, content_key(list(ids)))
        cached = self.cache.get_npz("heatmaps", key, required=("heatmaps",))
        meta = self.cache.get_json("heatmaps", key) if cached is not None else None
        if cached is not None and meta is not None:
            return cached["heatmaps"], key, resolved, float(meta.get("seconds", 0.0))
        if self.cached_only:
            raise NotCached("heatmaps", key)
        log(f"[explain] {name} on {model.record['model']} ({len(index)} images) ...", quiet=self.quiet)
        t0 = time.perf_counter()
        heatmaps = compute_heatmaps(
            explainer,
            model.model,
            test.images[index],
            model.predictions[index],
            ids=ids,
            batch_size=self.plan.config["explainers"]["batch_size"],
            progress=self.progress,
            name=name,
        )
        seconds = time.perf_counter() - t0
        self.cache.put_npz("heatmaps", key, heatmaps=heatmaps, ids=ids)
        self.cache.put_json("heatmaps", key, {"seconds": seconds, "explainer": name, "params": resolved})
        return heatmaps, key, resolved, seconds

    # ---- curves ---------------------------------------------------------------------------
    def curves(
        self,
        name: str,
        order: str,
        data: DatasetArtifact,
        model: ModelArtifact,
        index: np.ndarray,
        heatmaps: np.ndarray,
        heatmaps_key: str,
        *,
        evaluator: Callable[..., Any] | None = None,
        store: bool = True,
    ) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
        """Perturbation curves of one (heatmaps, perturbation, order), cached under a content key.

        Returns (summary, arrays, resolved perturbation params): ``arrays`` holds
        ``curves`` (N, L+1), the engine's per-image AOPC ``per_image`` (an engine detail;
        metrics read the curves), the region ``order`` and ``ids``; ``summary`` the stage's
        ``key``, forward passes, seconds and strategy. ``evaluator`` replaces
        :func:`bench.aopc.evaluate_aopc` (same signature), e.g. to merge shards computed
        elsewhere; ``store=False`` neither reads nor writes the cache (a shard of the images
        is not the stage's result).
        """
        from .aopc import evaluate_aopc

        if evaluator is not None:
            evaluate_aopc = evaluator  # noqa: F811 - same signature

        params = dict(self.plan.config["perturbations"]["params"].get(name, {}))
        perturbation = _create("perturbation", name, params)
        resolved = _component_params(perturbation) or params
        acfg = self.plan.config["aopc"]
        grid = config_mod.grid_shape(acfg["grid"])
        seed = self.plan.config["run"]["seed"]
        key = _key("curves", "perturbation", name, resolved, heatmaps_key, list(grid), order, seed)
        summary = self.cache.get_json("curves", key) if store else None
        arrays = self.cache.get_npz(
            "curves", key, required=("curves", "per_image", "order", "ids")
        ) if store else None
        if summary is not None and arrays is not None:
            return {**summary, "key": key}, arrays, resolved
        if self.cached_only:
            raise NotCached("curves", key)
        test = data.splits.test
        ids = test.ids[index].astype(str)
        log(
            f"[aopc] {model.record['model']} / {order} / {name} "
            f"({len(index)} images x {grid[0] * grid[1] + 1} passes) ...",
            quiet=self.quiet,
        )
        result = evaluate_aopc(
            model.model,
            test.images[index],
            model.predictions[index],
            heatmaps,
            perturbation=perturbation,
            grid=grid,
            order=order,
            seed=seed,
            ids=ids,
            batch_size=acfg["batch_size"],
            progress=self.progress,
            strategy=acfg["strategy"],
        )
        summary = {
            "aopc": float(result.aopc) if len(result.per_image) else float("nan"),
            "n": int(len(result.per_image)),
            "forward_passes": int(getattr(result, "forward_passes", len(ids) * (grid[0] * grid[1] + 1))),
            "seconds": float(getattr(result, "seconds", 0.0)),
            "strategy": str(getattr(result, "strategy", acfg["strategy"])),
            "strategy_info": dict(getattr(result, "strategy_info", {}) or {}),
            "images_with_ties": int((np.asarray(getattr(result, "ties", [])) > 0).sum()),
        }
        arrays = {
            "curves": np.asarray(result.curves, dtype=np.float32),
            "per_image": np.asarray(result.per_image, dtype=np.float64),
            "order": np.asarray(result.order, dtype=np.int32),
            "ids": ids,
        }
        if store:
            self.cache.put_npz("curves", key, **arrays)
            self.cache.put_json("curves", key, summary)
        return {**summary, "key": key}, arrays, resolved

    # ---- metrics --------------------------------------------------------------------------
    def metric(
        self,
        name: str,
        inputs: Mapping[str, Any],
        *,
        heatmaps_key: str,
        curve_keys: Mapping[str, str],
        cached_only: bool | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, Any], float]:
        """The per-image columns of metric ``name`` on one cell, cached under a content key.

        ``inputs`` are the cell's candidate inputs (``ids``, ``grid``, ``curves`` by order,
        ``heatmaps``, ``masks`` by name, ``labels``, ``targets``, ``model``, ``explainer``,
        ``images``, ``dataset``): :func:`bench.metrics.metric_data` hands the metric only
        what its spec declares. The key holds the metric (name, version, code, parameters),
        the heatmaps' key (which holds the model, dataset, explainer and images) and the
        keys of the curves it reads. Returns (columns, resolved params, seconds). A metric
        that raises, or returns a wrong shape, raises here; a declared mask the dataset
        lacks raises :class:`bench.metrics.MetricSkipped`. ``cached_only`` overrides the
        stages' own setting (the Ray driver computes metrics itself).
        """
        spec = self.plan.metric_spec(name)
        params = dict(self.plan.config["metrics"]["params"].get(name, {}))
        metric = _create("metric", name, params)
        resolved = _component_params(metric) or params
        data = metric_data(spec, **inputs)
        used = {o: curve_keys[o] for o in spec.inputs.curves}
        key = _key("metric", "metric", name, resolved, heatmaps_key, used, spec.inputs.to_dict())
        meta = self.cache.get_json("metrics", key)
        if meta is not None:
            arrays = self.cache.get_npz("metrics", key, required=tuple(meta.get("columns", ())))
            if arrays is not None:
                return arrays, resolved, float(meta.get("seconds", 0.0))
        if self.cached_only if cached_only is None else cached_only:
            raise NotCached("metric", key)
        t0 = time.perf_counter()
        columns = compute_columns(metric, spec, data)
        seconds = time.perf_counter() - t0
        self.cache.put_npz("metrics", key, **columns)
        self.cache.put_json("metrics", key, {"metric": name, "columns": list(columns), "seconds": seconds,
                                             "params": resolved})
        return columns, resolved, seconds


def stratified_sample(index: np.ndarray, labels: np.ndarray, cap: int, *, seed: int) -> np.ndarray:
    """Up to ``cap`` entries of ``index``, classes taking turns, seeded; sorted. cap 0 = all."""
    index = np.asarray(index)
    if not cap or cap >= len(index):
        return index
    rng = np.random.default_rng([seed, 0x5EED])
    pools = [list(rng.permutation(index[labels == c])) for c in np.unique(labels)]
    picked: list[int] = []
    while len(picked) < cap:
        for pool in pools:
            if pool and len(picked) < cap:
                picked.append(pool.pop())
    return np.sort(np.asarray(picked, dtype=index.dtype))


def _create(kind: str, name: str, params: Mapping[str, Any]) -> Any:
    entry = registry().get(kind, name)
    factory = entry.load_factory()
    check_params(factory, params, where=f"{kind} {name!r}")
    return factory(**params)


# --------------------------------------------------------------------------------------
# cells
# --------------------------------------------------------------------------------------
class CellFailure(Exception):
    def __init__(self, stage: str, exc: BaseException):
        super().__init__(f"{stage}: {exc}")
        self.stage = stage
        self.exc = exc


def _stage(stage: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except (KeyboardInterrupt, SystemExit):
        raise
    except CellFailure:
        raise
    except BaseException as exc:  # noqa: BLE001 - a failing plugin fails only its cell
        raise CellFailure(stage, exc) from exc


def _error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, BenchError):
        return text
    return f"{type(exc).__name__}: {text}"


def execute_cell(stages: Stages, task: CellTask, run_dir: Path, run_id: str) -> CellRecord:
    """Run one cell and write its record (and arrays) under ``run_dir``. Never raises for plugin errors.

    The stages: dataset -> model -> heatmaps -> curves (the orders the plan's metrics need,
    :attr:`Plan.orders`) -> metrics (each gets only its declared inputs). A metric that
    raises or returns a wrong shape fails only itself (its result says why); a metric whose
    declared mask the dataset lacks is skipped with the reason; the cell stays ok. Writes
    ``cells/<cell>.json`` (:class:`bench.record.CellRecord`), ``curves/``, ``heatmaps/`` and
    ``metrics/<cell>.npz`` (per-image columns as ``<metric>/<column>``, with ``ids``).
    """
    plan = stages.plan
    cfg = plan.config
    acfg = cfg["aopc"]
    grid = config_mod.grid_shape(acfg["grid"])
    orders = list(plan.orders)
    record = CellRecord(
        cell_id=task.cell_id,
        run_id=run_id,
        dataset=task.dataset,
        model=task.model,
        explainer=task.explainer,
        perturbation=task.perturbation,
        params={
            "aopc": {
                "grid": list(grid),
                "orders": orders,
                "seed": cfg["run"]["seed"],
                "batch_size": acfg["batch_size"],
                "max_images": acfg["max_images"],
                "confidence": acfg["confidence"],
            },
            "metrics": {name: dict(cfg["metrics"]["params"].get(name, {})) for name in plan.metrics},
        },
        orders=orders,
    )
    reg = registry()
    facts: dict[str, Any] = {}  # settings inputs that are not in record.params
    try:
        data = _stage("dataset", stages.dataset)
        record.params["dataset"] = data.params
        facts["dataset_fingerprint"] = getattr(data.splits, "fingerprint", None)
        record.provenance["dataset"] = reg.get("dataset", task.dataset).provenance()
        model = _stage("train", lambda: stages.model(task.model, data))
        record.weights = model.record["weights"]
        record.params["model"] = model.record["params"]
        record.provenance["model"] = model.record["provenance"]
        record.keys["model"] = model.key
        facts["weights_hash"] = weights_hash(model.record)
        report = model.record["classification"]
        record.classification = {
            "recall_macro": report["macro avg"]["recall"],
            "f1_macro": report["macro avg"]["f1-score"],
            "precision_macro": report["macro avg"]["precision"],
            "accuracy": report["accuracy"],
        }
        index = stages.explained_subset(data, model)
        record.n_images = int(len(index))
        if len(index) == 0:
            raise CellFailure("explain", BenchError(
                f"model {task.model!r} classified no test image correctly: nothing to explain"
            ))
        heatmaps, hkey, eparams, explain_seconds = _stage(
            "explain", lambda: stages.heatmaps(task.explainer, data, model, index)
        )
        record.params["explainer"] = eparams
        record.provenance["explainer"] = reg.get("explainer", task.explainer).provenance()
        record.provenance["perturbation"] = reg.get("perturbation", task.perturbation).provenance()
        record.keys["heatmaps"] = hkey
        record.constant_heatmaps = count_constant_heatmaps(heatmaps)
        test = data.splits.test
        ids = test.ids[index].astype(str)
        targets = model.predictions[index].astype(np.int64)
        labels = model.labels[index].astype(np.int64)
        arrays: dict[str, np.ndarray] = {"ids": ids, "targets": targets, "labels": labels}
        timings = Timings(explain_seconds=explain_seconds)
        curves: dict[str, np.ndarray] = {}
        curve_keys: dict[str, str] = {}
        for order in orders:
            summary, carrays, pparams = _stage(
                "evaluate",
                lambda order=order: stages.curves(
                    task.perturbation, order, data, model, index, heatmaps, hkey
                ),
            )
            record.params["perturbation"] = pparams
            record.strategy = summary["strategy"]
            record.strategy_info[order] = summary.get("strategy_info", {})
            timings.evaluate_seconds += summary["seconds"]
            timings.forward_passes += summary["forward_passes"]
            curves[order] = carrays["curves"]
            curve_keys[order] = summary["key"]
            record.keys[f"curves:{order}"] = summary["key"]
            arrays[f"{order}_curves"] = carrays["curves"]
            arrays[f"{order}_per_image"] = carrays["per_image"]
            arrays[f"{order}_order"] = carrays["order"]
        if not orders:  # no metric reads curves: the perturbation's parameters, for the settings
            pparams = dict(cfg["perturbations"]["params"].get(task.perturbation, {}))
            record.params["perturbation"] = _stage("evaluate", lambda: _component_params(
                _create("perturbation", task.perturbation, pparams)) or pparams)
        record.curves_file = f"curves/{task.cell_id}.npz" if orders else None
        record.heatmaps_file = f"heatmaps/{task.cell_id}.npz"
        record.metrics_file = f"metrics/{task.cell_id}.npz"
        inputs = {
            "ids": ids, "grid": grid, "curves": curves, "heatmaps": heatmaps,
            "masks": {name: m[index] for name, m in masks_of(test).items()},
            "labels": labels, "targets": targets, "model": model.model,
            "explainer": _LazyExplainer(task.explainer, cfg), "images": test.images[index],
            "dataset": f"dataset {task.dataset!r}",
        }
        columns: dict[str, np.ndarray] = {}
        for name in plan.metrics:
            result, mcols = _metric_result(stages, name, inputs, hkey, curve_keys, record.metrics_file)
            record.metrics[name] = result
            record.params["metrics"][name] = result.params
            record.provenance.setdefault("metrics", {})[name] = reg.get("metric", name).provenance()
            timings.metrics_seconds += result.seconds
            columns.update({f"{name}/{c}": v for c, v in mcols.items()})
        record.timings = timings
        if orders:
            write_npz(safe_child(run_dir, "curves", f"{task.cell_id}.npz"), **arrays)
        write_npz(safe_child(run_dir, "metrics", f"{task.cell_id}.npz"), ids=ids, labels=labels,
                  targets=targets, **columns)
        write_npz(safe_child(run_dir, "heatmaps", f"{task.cell_id}.npz"), ids=ids, heatmaps=heatmaps.astype(np.float32))
        write_json(safe_child(run_dir, "models", f"{task.model_id}.json"), {
            **{k: v for k, v in model.record.items()},
            "predictions_file": f"models/{task.model_id}.npz",
        })
        write_npz(
            safe_child(run_dir, "models", f"{task.model_id}.npz"),
            ids=model.ids.astype(str), labels=model.labels, predictions=model.predictions,
        )
    except CellFailure as failure:
        record.status = "failed"
        record.stage = failure.stage
        record.error = _error_text(failure.exc)
        record.traceback = "".join(
            traceback.format_exception(type(failure.exc), failure.exc, failure.exc.__traceback__)
        )[-4000:]
    record.settings = cell_settings(
        record.params,
        dataset_fingerprint=facts.get("dataset_fingerprint"),
        weights_hash=facts.get("weights_hash"),
        training=cfg["training"],
        bootstrap=acfg["bootstrap"],
    )
    record.settings_key = settings_key(record.settings)
    record.explainer_params_key = explainer_params_key(record.params.get("explainer"))
    record.finished = _now()
    write_record(run_dir, record)
    return record


def write_record(run_dir: Path, record: CellRecord) -> Path:
    """Write ``cells/<cell>.json`` (the record's JSON form) under ``run_dir``."""
    path = safe_child(run_dir, "cells", f"{record.cell_id}.json")
    write_json(path, record.to_dict())
    return path


class _LazyExplainer:
    """The cell's explainer, constructed with its parameters when a metric first uses it."""

    def __init__(self, name: str, cfg: Mapping[str, Any]):
        self.name = name
        self.params = dict(cfg["explainers"]["params"].get(name, {}))
        self._component: Any = None

    def get(self) -> Any:
        if self._component is None:
            self._component = _create("explainer", self.name, self.params)
        return self._component


def _metric_result(
    stages: Stages, name: str, inputs: Mapping[str, Any], heatmaps_key: str,
    curve_keys: Mapping[str, str], metrics_file: str,
) -> tuple[MetricResult, dict[str, np.ndarray]]:
    """One metric of one cell: its columns and its result (ok, failed with the message, or skipped)."""
    cfg = stages.plan.config
    acfg = cfg["aopc"]
    spec = stages.plan.metric_spec(name)
    entry = registry().get("metric", name)
    given = dict(cfg["metrics"]["params"].get(name, {}))
    about = {
        "name": name, "higher_is_better": spec.higher_is_better, "family": spec.family,
        "label": spec.display_label, "description": spec.description, "headline": spec.headline_column,
        "heatmap_transform": spec.heatmap_transform, "confidence": acfg["confidence"],
        "version": entry.version,
    }
    lazy = inputs.get("explainer")
    wanted = dict(inputs)
    try:
        if spec.inputs.explainer and isinstance(lazy, _LazyExplainer):
            wanted["explainer"] = lazy.get()
        elif isinstance(lazy, _LazyExplainer):
            wanted["explainer"] = None
        columns, params, seconds = stages.metric(name, wanted, heatmaps_key=heatmaps_key, curve_keys=curve_keys)
    except (KeyboardInterrupt, SystemExit):
        raise
    except MetricSkipped as exc:
        return MetricResult(status="skipped", error=str(exc), params=given,
                            params_key=metric_params_key(given), **about), {}
    except BaseException as exc:  # noqa: BLE001 - a failing metric fails only itself
        return MetricResult(status="failed", error=_error_text(exc), params=given,
                            params_key=metric_params_key(given), **about), {}
    stats = summarise(columns[spec.headline_column], confidence=acfg["confidence"],
                      n_resamples=acfg["bootstrap"], seed=cfg["run"]["seed"])
    result = MetricResult(
        status="ok", value=stats.value, ci=stats.ci, n=stats.n, n_excluded=stats.n_excluded,
        columns={c: list(v.shape) for c, v in columns.items()}, file=metrics_file,
        key=f"{name}/{spec.headline_column}", ids_key="ids", params=params,
        params_key=metric_params_key(params), seconds=seconds, **about,
    )
    return result, columns


# --------------------------------------------------------------------------------------
# executors
# --------------------------------------------------------------------------------------
class LocalExecutor:
    """Runs cells one after another in this process."""

    name = "local"

    def run_cells(
        self, stages: Stages, tasks: list[CellTask], run_dir: Path, run_id: str
    ) -> Iterator[CellRecord]:
        for task in tasks:
            yield execute_cell(stages, task, run_dir, run_id)


def get_executor(name: str, *, address: str = "") -> Any:
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        try:
            from .ray_executor import RayExecutor
        except ImportError as exc:
            raise BenchError(
                "--executor ray needs Ray: pip install 'saliency-bench[ray]' "
                f"(or pip install 'ray[default]'); import failed: {exc}"
            ) from exc
        return RayExecutor(address=address)
    raise ConfigError(f"unknown executor {name!r}{did_you_mean(name, ('local', 'ray'))}")


# --------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def new_run_id(cfg: Mapping[str, Any]) -> str:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{content_key(cfg, time.time_ns())[:6]}"


class Terminated(KeyboardInterrupt):
    """SIGTERM during :func:`run`: handled like Ctrl-C (finished cells kept, run marked interrupted)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signum}")


def _catch_sigterm() -> Any:
    """Install the SIGTERM handler (main thread only); returns the previous one, or None."""
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):  # not the main thread, or no SIGTERM here
        return None
    return signal.SIG_DFL if previous is None else previous  # None: installed outside Python


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class RunResult:
    """What ``bench.run`` returns: the cell records, where they are, what failed."""

    run_id: str
    run_dir: Path
    cells: list[CellRecord] = field(default_factory=list)
    leaderboard: dict[str, Path] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def failed(self) -> list[CellRecord]:
        return [c for c in self.cells if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per cell: the table of the run.

        Per metric (in the config's order): ``<metric>``, ``<metric>_ci_low``,
        ``<metric>_ci_high``, ``<metric>_n`` and ``<metric>_status``.
        """
        rows = []
        for cell in self.cells:
            c = cell if isinstance(cell, CellRecord) else CellRecord.from_dict(cell)
            classification = c.classification or {}
            base: dict[str, Any] = {
                "dataset": c.dataset,
                "model": c.model,
                "weights": c.weights,
                "explainer": c.explainer,
                "perturbation": c.perturbation,
                "status": c.status,
                "error": c.error,
                "recall_macro": classification.get("recall_macro"),
                "f1_macro": classification.get("f1_macro"),
                "accuracy": classification.get("accuracy"),
                "n_images": c.n_images,
            }
            for name, m in c.metrics.items():
                lo, hi = m.ci if m.ci is not None else (None, None)
                base.update({name: m.value if m.ok else None, f"{name}_ci_low": lo, f"{name}_ci_high": hi,
                             f"{name}_n": m.n, f"{name}_status": m.status})
            rows.append(base)
        return rows

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.rows())


def run(
    config: str | Path | Mapping[str, Any] | None = None,
    *,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    quiet: bool = False,
    leaderboard: bool = True,
) -> RunResult:
    """Run the benchmark grid described by ``config`` (same as ``bench run``).

    ``config`` may be a TOML path, a mapping, or an already-loaded config from
    :func:`bench.config.load_config`. Returns a :class:`RunResult`;
    ``result.to_frame()`` is the table as a pandas DataFrame.
    """
    cfg = config_mod.load_config(config, preset=preset, overrides=overrides)
    plan = make_plan(cfg)
    cfg = plan.config  # as the plan resolved it (leaderboard.control: the grid's null control)
    executor = get_executor(cfg["run"]["executor"], address=cfg["run"]["ray_address"])
    results_dir = plan.results_dir
    from .runs import load_manifests, process_identity

    load_manifests(results_dir)  # marks runs whose process is gone (SIGKILL, power cut) interrupted
    run_id = new_run_id(cfg)
    run_dir = results_dir / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    stages = Stages(plan, quiet=quiet)
    reg = registry()
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "status": "running",
        "created": _now(),
        "finished": None,
        "bench_version": __import__("bench").__version__,
        "config": cfg,
        "executor": executor.name,
        "executor_params": executor.get_params() if hasattr(executor, "get_params") else {},
        "environment": __import__("bench.environment", fromlist=["environment"]).environment(),
        "plugins": [p.to_dict() for p in reg.plugins],
        "components": {
            "dataset": reg.get("dataset", plan.dataset).provenance(),
            "models": [reg.get("model", n).provenance() for n in plan.models],
            "explainers": [reg.get("explainer", n).provenance() for n in plan.explainers],
            "perturbations": [reg.get("perturbation", n).provenance() for n in plan.perturbations],
            "metrics": [reg.get("metric", n).provenance() for n in plan.metrics],
        },
        "metrics": {"names": list(plan.metrics), "orders": list(plan.orders), "primary": plan.primary},
        "seeds": {"run": cfg["run"]["seed"]},
        "process": process_identity(),
        "cells": [t.cell_id for t in plan.cells],
        "failed": [],
        "timings": {},
        "dataset": None,
    }
    write_json(run_dir / "manifest.json", manifest)
    result = RunResult(run_id=run_id, run_dir=run_dir)
    t0 = time.perf_counter()
    log(
        f"bench run {run_id}: {len(plan.cells)} cells = {len(plan.models)} models x "
        f"{len(plan.explainers)} explainers x {len(plan.perturbations)} perturbations on {plan.dataset}; "
        f"metrics {', '.join(plan.metrics)} (curves: {', '.join(plan.orders) or 'none'})",
        quiet=quiet,
    )
    previous_sigterm = _catch_sigterm()
    try:
        try:
            data = stages.dataset()
            # the grid and the models against the real images (a dataset may not declare its size)
            check_image_fit(plan, data.splits.image_shape, data.splits.num_classes)
            manifest["dataset"] = {
                "name": data.splits.name,
                "fingerprint": data.splits.fingerprint,
                "params": data.params,
                "file": str(data.file.resolve()),
                "class_names": list(data.splits.class_names),
                "counts": data.splits.counts(),
                "metadata_keys": sorted(data.splits.metadata),
            }
            write_json(run_dir / "dataset.json", {**manifest["dataset"], "metadata": data.splits.metadata})
        except (KeyboardInterrupt, SystemExit, BenchError):
            # bad input (missing folder, corrupt image, bad parameter): stop before any cell runs
            raise
        except BaseException as exc:  # a crashing dataset plugin fails every cell, with its message
            log(f"[dataset] failed: {_error_text(exc)}", quiet=quiet)
        for i, record in enumerate(executor.run_cells(stages, plan.cells, run_dir, run_id), 1):
            result.cells.append(record)
            status = "ok" if record.ok else f"FAILED in {record.stage}: {record.error}"
            head = record.metric(plan.primary)
            shown = f" {head.display_label}={head.value:.4f}" if head is not None and head.ok else ""
            problems = [f"{m.name} {m.status}: {m.error}" for m in record.metrics.values() if not m.ok]
            shown += "".join(f"; {text}" for text in problems)
            log(f"[{i}/{len(plan.cells)}] {record.cell_id}: {status}{shown}", quiet=quiet)
            if cfg["run"]["fail_fast"] and not record.ok:
                break
    except KeyboardInterrupt as exc:
        result.interrupted = True
        if isinstance(exc, Terminated):
            manifest["signal"] = "SIGTERM"
        log("interrupted: finished cells are saved; run again to finish the rest (cached work is reused)")
    except BaseException as exc:
        manifest["error"] = _error_text(exc)
        raise
    finally:
        _restore_sigterm(previous_sigterm)
        manifest["failed"] = [c.cell_id for c in result.failed]
        manifest["finished"] = _now()
        if "error" in manifest:
            manifest["status"] = "error"
        else:
            manifest["status"] = "interrupted" if result.interrupted else ("failed" if result.failed else "ok")
        manifest["timings"]["total_seconds"] = time.perf_counter() - t0
        manifest["cell_timings"] = {c.cell_id: c.timings.to_dict() for c in result.cells}
        write_json(run_dir / "manifest.json", manifest)
    if leaderboard and not result.interrupted and any(c.ok for c in result.cells):
        from .leaderboard import build_leaderboard

        result.leaderboard = build_leaderboard(
            results_dir,
            formats=tuple(cfg["leaderboard"]["formats"]),
            control=cfg["leaderboard"]["control"],
            primary=plan.primary,
            metrics=plan.metrics,
        )
    return result


def plan_summary(plan: Plan) -> dict[str, Any]:
    return {
        "dataset": plan.dataset,
        "models": plan.models,
        "explainers": plan.explainers,
        "perturbations": plan.perturbations,
        "metrics": plan.metrics,
        "orders": list(plan.orders),
        "primary": plan.primary,
        "cells": [asdict(t) | {"cell_id": t.cell_id} for t in plan.cells],
    }
