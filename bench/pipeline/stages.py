"""The stage functions of a plan: pure, cached, each returning a typed artifact.

Each stage is a pure function of its inputs and is cached under a content hash of them
(stage and bench versions + plugin name, version and code digest + parameters and the
contents of files they name + upstream keys + seed; see :mod:`bench.pipeline.keys`) in
``results/cache/``, so a re-run recomputes nothing and a run killed at any point finishes
only the remaining work when started again; a damaged cache entry is set aside and
recomputed (:class:`bench.pipeline.store.Cache`). Which stage feeds which is declared once, in
:mod:`bench.pipeline.graph`; this module only computes one stage given its inputs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import loading as config_mod
from bench.errors import BenchError, ComponentOutputError
from bench.pipeline.artifacts import (
    CurvesArtifact,
    DatasetArtifact,
    HeatmapsArtifact,
    MetricOutput,
    MetricsArtifact,
    ModelArtifact,
)
from bench.pipeline.keys import component_identity, param_files, stage_key
from bench.pipeline.metrics import (
    MetricNeeds,
    MetricSkipped,
    compute_columns,
    masks_of,
    metric_data,
    metric_needs,
    metric_params_key,
    summarise,
)
from bench.pipeline.plan import (
    CellTask,
    Plan,
    dataset_params,
    log,
    missing_masks_text,
    model_params,
)
from bench.pipeline.record import MetricResult
from bench.pipeline.store import STAGE_FILES, Cache, content_key
from bench.pipeline.variants import registered_explainer
from bench.plugin.registry import check_params, registry
from bench.plugin.specs import CURVE_ORDERS, PerturbationSpec

#: Bumped when a stage's stored format or semantics change (invalidates caches).
#: Every stage key also holds bench's version and the code digest of its plugin.
STAGE_VERSION = {"dataset": 2, "model": 2, "evaluation": 2, "heatmaps": 3, "curves": 4, "metric": 1}

#: The cache folder of each stage (:data:`STAGE_FILES`, defined beside the cache in
#: :mod:`bench.pipeline.store` so that the trainer writes a model there too; re-exported here).
_FOLDER: dict[str, str] = {stage: folder for stage, (folder, _) in STAGE_FILES.items()}

#: In-process memo of loaded stage outputs (dataset, model), keyed by results cache and content key
#: (a run in another results folder writes its own cache entries, as a fresh process would).
_MEMO: dict[tuple[str, str], Any] = {}


def _remember(memo_key: tuple[str, str], artifact: Any) -> None:
    """Memoise ``artifact``, forgetting other results folders' (one folder's models in memory)."""
    for other in [k for k in _MEMO if k[0] != memo_key[0]]:
        del _MEMO[other]
    _MEMO[memo_key] = artifact


def clear_memo() -> None:
    """Forget the datasets and models loaded in this process (the cache on disk stays)."""
    _MEMO.clear()


def component_key(stage: str, kind: str, name: str, params: Mapping[str, Any], *upstream: Any) -> str:
    """A stage's content key: stage + version + bench's version, the component (name,
    version, code digest), its parameters and the contents of files they name, upstream."""
    return stage_key(
        stage, STAGE_VERSION[stage], component_identity(kind, name), dict(params),
        param_files(params), *upstream,
    )


def evaluation_key(model_key: str) -> str:
    """The cache key of a model's test-split evaluation."""
    return stage_key("evaluation", STAGE_VERSION["evaluation"], model_key)


def component_params(obj: Any) -> dict[str, Any]:
    """``obj.get_params()`` as a dict (``{}`` when it has none)."""
    get = getattr(obj, "get_params", None)
    return dict(get()) if callable(get) else {}


def create_component(kind: str, name: str, params: Mapping[str, Any]) -> Any:
    """The registered ``kind`` ``name`` constructed with ``params`` (checked against its factory)."""
    entry = registry().get(kind, name)
    factory = entry.load_factory()
    check_params(factory, params, where=f"{kind} {name!r}")
    return factory(**params)


def masks_digest(masks: Mapping[str, np.ndarray]) -> dict[str, str]:
    """A content hash per mask (bits packed): part of the key of a stage that reads them."""
    import hashlib

    out = {}
    for name, m in sorted(masks.items()):
        arr = np.ascontiguousarray(np.asarray(m, dtype=bool))
        h = hashlib.sha256(repr(arr.shape).encode())
        h.update(np.packbits(arr).tobytes())
        out[name] = h.hexdigest()[:20]
    return out


def declared_cost(component: Any, method_name: str, kind: str, **kwargs: Any) -> float | None:
    """``component.<method_name>(**kwargs)`` as a finite number >= 0, None when it has no such
    method or it returns None; anything else is a :class:`ComponentOutputError` naming the
    component. (``kwargs``: what the method is asked with, e.g. ``image_shape`` before a run.)"""
    method = getattr(component, method_name, None)
    if not callable(method):
        return None
    value = method(**kwargs)
    if value is None:
        return None
    where = f"{kind} {type(component).__name__}.{method_name}() returned {value!r}, expected"
    try:
        passes = float(value)
    except (TypeError, ValueError) as exc:
        raise ComponentOutputError(f"{where} a number") from exc
    if not np.isfinite(passes) or passes < 0:
        raise ComponentOutputError(f"{where} a finite number >= 0")
    return passes


def passes_per_map_of(explainer: Any) -> float | None:
    """The explainer's ``passes_per_map()`` (forward-pass equivalents per map), None if it has none.

    Called after the maps are computed, so an explainer whose cost depends on the model (the
    channels Score-CAM scores) may report what its last call cost (see :func:`declared_cost`).
    """
    return declared_cost(explainer, "passes_per_map", "explainer")


def metric_forward_passes(metric: Any) -> float | None:
    """The metric's ``forward_passes()`` after ``compute`` (the passes its own work cost on the
    cell, heatmaps counted at the explainer's passes per map), None if it has none."""
    return declared_cost(metric, "forward_passes", "metric")


def metric_needs_in(plan: Plan, name: str) -> MetricNeeds:
    """What metric ``name`` reads under ``plan`` (its parameters resolved by constructing it,
    only where its spec has parameters that choose a perturbation or masks)."""
    spec = plan.metric_spec(name)
    if not (spec.perturbation_param or spec.mask_params):
        return metric_needs(spec)
    params = dict(plan.config["metrics"]["params"].get(name, {}))
    metric = create_component("metric", name, params)
    return metric_needs(spec, component_params(metric) or params)


def cell_curves(plan: Plan, task: CellTask) -> list[tuple[str, str]]:
    """``(order, perturbation)`` of every curve the metrics of one cell read, each once.

    Those under the cell's perturbation first (in :data:`bench.plugin.specs.CURVE_ORDERS`
    order), then those under the other perturbations the metrics ask for (by name, then
    order). A metric whose needs cannot be resolved (a bad parameter) asks for nothing here;
    it fails itself at the metric stage, with the reason.
    """
    wanted: set[tuple[str, str]] = set()
    for name in plan.metrics:
        try:
            needs = metric_needs_in(plan, name)
        except Exception:  # noqa: BLE001 - reported by the metric stage
            continue
        wanted.update((c.order, c.perturbation_in(task.perturbation)) for c in needs.curves)
    rank = {o: i for i, o in enumerate(CURVE_ORDERS)}
    return sorted(wanted, key=lambda op: (op[1] != task.perturbation, op[1], rank[op[0]]))


def padded(values: np.ndarray, positions: np.ndarray, n: int) -> np.ndarray:
    """``values`` (one row per budgeted image) as ``n`` rows, NaN outside ``positions``."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full((n, *values.shape[1:]), np.nan)
    out[positions] = values
    return out


def budget_inputs(inputs: Mapping[str, Any], curves: Mapping[str, CurvesArtifact], positions: np.ndarray | None,
                  *, needed: set[str], metric: str) -> dict[str, Any]:
    """A metric's candidate inputs on the images at ``positions`` of the cell (None: all of them).

    Per-image arrays, masks and the explainer's masks are sliced; each curve it reads is
    matched to those images by id (a budgeted curve covers a superset of them: nested budgets).
    """
    arrays = {n: c.curves for n, c in curves.items()}
    if positions is None:
        return {**inputs, "curves": arrays}
    out = dict(inputs)
    for what in ("ids", "heatmaps", "labels", "targets", "images"):
        if inputs.get(what) is not None:
            out[what] = np.asarray(inputs[what])[positions]
    out["masks"] = {k: np.asarray(v)[positions] for k, v in (inputs.get("masks") or {}).items()}
    if isinstance(inputs.get("explainer_masks"), Mapping):
        out["explainer_masks"] = {k: np.asarray(v)[positions] for k, v in inputs["explainer_masks"].items()}
    ids = np.asarray(out["ids"]).astype(str)
    for n in needed:
        at = {v: i for i, v in enumerate(np.asarray(curves[n].ids).astype(str))}
        missing = [v for v in ids if v not in at]
        if missing:
            raise BenchError(f"metric {metric!r}: its {n} curves do not cover the budgeted images {missing[:3]}")
        arrays[n] = np.asarray(curves[n].curves)[[at[v] for v in ids]]
    out["curves"] = arrays
    return out


def curve_image_cap(plan: Plan, order: str, perturbation: str) -> int:
    """The image budget of the ``(order, perturbation)`` curves: 0 (all images) when any metric
    reading them in some cell of the plan has no budget, else the largest budget among them."""
    caps: list[int] = []
    for name in plan.metrics:
        try:
            needs = metric_needs_in(plan, name)
        except Exception:  # noqa: BLE001 - reported by the metric stage
            continue
        if any(c.order == order and c.perturbation_in(p) == perturbation
               for c in needs.curves for p in plan.perturbations):
            caps.append(plan.metric_image_cap(name))
    return 0 if not caps or 0 in caps else max(caps)


def budget_positions(labels: np.ndarray, cap: int, *, seed: int) -> np.ndarray | None:
    """Positions (sorted) of a class-stratified ``cap`` of ``len(labels)`` explained images, None
    for all of them. Nested: the positions of a smaller budget are among those of a larger one
    (classes take turns in one seeded sequence, :func:`stratified_sample`), so a budgeted metric
    finds its images among those of the curves it reads."""
    n = len(labels)
    if not cap or cap >= n:
        return None
    return stratified_sample(np.arange(n), np.asarray(labels), cap, seed=seed)


class NotCached(BenchError):
    """Raised by ``Stages(..., cached_only=True)`` where a stage would have to compute."""

    def __init__(self, stage: str, key: str, hint: str = ""):
        super().__init__(f"the {stage} result {key} is not in the cache" + (f": {hint}" if hint else ""))
        self.stage = stage
        self.key = key


class Stages:
    """The cached stage functions of one plan; each returns a typed artifact.

    With ``cached_only=True`` a stage whose result is not in the cache raises
    :class:`NotCached` (its message ends with ``missing_hint``) instead of computing it:
    a cheap "is this cell done?" probe, and what an executor uses to write a cell's record
    from results computed elsewhere. ``compute_final=True`` exempts the final (metric)
    stage: metrics missing from the cache are then computed, from the cached inputs, where
    the record is written.

    Key-only methods (:meth:`dataset_key`, :meth:`model_key`, :meth:`heatmaps_key`,
    :meth:`curves_key`, :meth:`metric_key`, with :meth:`cache_file` and :meth:`is_cached`) give
    the key a stage caches its result under, and where, without computing or loading anything:
    they construct components (a constructor does no work) and hash what the key holds. The
    stage methods compute their keys through the same code, so a probe of the cache
    (``bench run --dry-run``) says "cached" exactly where a run would reuse a result.
    """

    def __init__(
        self, plan: Plan, *, cache: Cache | None = None, quiet: bool = False, cached_only: bool = False,
        missing_hint: str = "",
        compute_final: bool = False,
    ):
        self.plan = plan
        self.cache = cache or Cache(plan.results_dir / "cache")
        self.quiet = quiet
        self.progress = not quiet
        self.cached_only = cached_only
        self.missing_hint = missing_hint
        self.compute_final = compute_final

    def cached_view(self, missing_hint: str = "", *, compute_final: bool = False) -> Stages:
        """These stages reading only the cache (``cached_only=True``), quietly; with
        ``compute_final`` the metrics not in the cache are computed (see the class docs)."""
        return Stages(self.plan, cache=self.cache, quiet=True, cached_only=True, missing_hint=missing_hint,
                      compute_final=compute_final)

    def _not_cached(self, stage: str, key: str) -> NotCached:
        return NotCached(stage, key, self.missing_hint)

    # ---- where results lie ----------------------------------------------------------------
    def cache_file(self, stage: str, key: str, suffix: str | None = None) -> Path:
        """The file of ``stage``'s result under ``key`` (``suffix`` default: its first file,
        :data:`STAGE_FILES`; one it does not list raises a ValueError); no folder is created."""
        folder, suffixes = STAGE_FILES[stage]
        if suffix is not None and suffix not in suffixes:
            raise ValueError(f"the {stage} stage writes no {suffix!r} file (its files: {', '.join(suffixes)})")
        return self.cache.root / folder / f"{key}{suffix or suffixes[0]}"

    def _write_path(self, stage: str, key: str, suffix: str | None = None) -> Path:
        """:meth:`cache_file`, its folder created: where a stage writes that file."""
        path = self.cache_file(stage, key, suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def is_cached(self, stage: str, key: str) -> bool:
        """Whether every file of ``stage``'s result under ``key`` exists (:data:`STAGE_FILES`;
        a damaged file is found, set aside and recomputed by the stage that reads it)."""
        folder, suffixes = STAGE_FILES[stage]
        return all(self.cache.exists(folder, key, s) for s in suffixes)

    # ---- dataset ---------------------------------------------------------------------
    def _dataset_setup(self) -> tuple[dict[str, Any], Any, str]:
        params = dataset_params(self.plan)
        component = create_component("dataset", self.plan.dataset, params)
        key = component_key("dataset", "dataset", self.plan.dataset, params, component.fingerprint())
        return params, component, key

    def dataset_key(self) -> str:
        """The dataset stage's key; nothing is loaded, but the dataset's ``fingerprint()`` is
        asked (for a dataset reading a folder, that hashes its files)."""
        return self._dataset_setup()[2]

    def dataset(self) -> DatasetArtifact:
        name = self.plan.dataset
        params, component, key = self._dataset_setup()
        memo_key = (str(self.cache.root), key)  # per results folder: each gets its own cache files
        if memo_key in _MEMO:
            return _MEMO[memo_key]
        from bench.data import DatasetSplits

        path = self._write_path("dataset", key)
        splits = self.cache.read_checked(path, DatasetSplits.load_file)
        if splits is None:
            if self.cached_only:
                raise self._not_cached("dataset", key)
            log(f"[dataset] loading {name} ...", quiet=self.quiet)
            splits = component.load()
            if not isinstance(splits, DatasetSplits):
                raise ComponentOutputError(
                    f"dataset {name!r}: load() returned {type(splits).__name__}, expected DatasetSplits"
                )
            splits.save(path)
        artifact = DatasetArtifact(splits=splits, key=key, file=path, params=component_params(component) or params)
        _remember(memo_key, artifact)
        return artifact

    # ---- model: train (cached) + evaluate on test (cached) -----------------------------
    def _model_key(self, name: str, params: Mapping[str, Any], dataset_key: str) -> str:
        cfg = self.plan.config
        return component_key("model", "model", name, params, dataset_key, cfg["training"], cfg["run"]["seed"])

    def model_key(self, name: str, dataset_key: str, image_shape: tuple[int, ...] | None,
                  num_classes: int | None) -> str:
        """Model ``name``'s key (its training; its evaluation's is :func:`evaluation_key` of it) on
        the dataset of ``dataset_key`` whose images are ``image_shape`` (H, W) in ``num_classes``
        classes. Nothing is built."""
        return self._model_key(name, model_params(self.plan, name, image_shape, num_classes), dataset_key)

    def model(self, name: str, data: DatasetArtifact) -> ModelArtifact:
        from bench.evaluation import evaluate_classification
        from bench.training import TrainingConfig, train

        splits = data.splits
        params = model_params(self.plan, name, splits.image_shape, splits.num_classes)
        tcfg = self.plan.config["training"]
        seed = self.plan.config["run"]["seed"]
        key = self._model_key(name, params, data.key)
        memo_key = (str(self.cache.root), key)  # per results folder: each gets its own cache files
        if memo_key in _MEMO:
            return _MEMO[memo_key]
        if self.cached_only and (
            self.cache.get_json(_FOLDER["model"], key) is None
            or not self.is_cached("model", key)
            or not self.is_cached("evaluation", evaluation_key(key))
        ):
            raise self._not_cached("model", key)
        model = create_component("model", name, params)
        training_config = TrainingConfig(
            epochs=tcfg["epochs"],
            batch_size=tcfg["batch_size"],
            learning_rate=float(tcfg["learning_rate"]),
            seed=seed,
            selection=tcfg["selection"],
        )
        trained = self.cache.get_json(_FOLDER["model"], key) is not None and self.is_cached("model", key)
        log(f"[train] {name} on {splits.name} " + ("(cached)" if trained else "..."), quiet=self.quiet)
        t0 = time.perf_counter()
        report = train(model, splits, training_config, cache=self.cache, key=key, progress=self.progress)
        train_seconds = time.perf_counter() - t0

        ekey = evaluation_key(key)
        stored = self.cache.get_json(_FOLDER["evaluation"], ekey)
        arrays = self.cache.get_npz(_FOLDER["evaluation"], ekey, required=("ids", "labels", "predictions"))
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
            self.cache.put_npz(_FOLDER["evaluation"], ekey, **arrays)
            self.cache.put_json(_FOLDER["evaluation"], ekey, stored)
        weights_info = model.weights_info() if hasattr(model, "weights_info") else {}
        record = {
            "dataset": splits.name,
            "model": name,
            "weights": weights_info.get("weights", params.get("weights", "n/a")),
            "weights_md5": weights_info.get("md5"),
            "weights_info": weights_info,
            "params": component_params(model) or params,
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
        _remember(memo_key, artifact)
        return artifact

    def explained_subset(self, data: DatasetArtifact, model: ModelArtifact) -> np.ndarray:
        """Indices (into the test split) of the correctly classified images to explain.

        All of them (the study), or with ``aopc.max_images`` a class-stratified,
        seeded sample: classes take turns, so a cap never explains only the first
        class of a test split sorted by class. Returned in test-split order.
        """
        return self.explained_index(model.predictions, model.labels)

    def explained_index(self, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """:meth:`explained_subset` from the test split's predictions and labels (a model's
        evaluation) alone."""
        predictions, labels = np.asarray(predictions), np.asarray(labels)
        correct = np.flatnonzero(predictions == labels)
        cap = self.plan.config["aopc"]["max_images"]
        return stratified_sample(correct, labels[correct], cap, seed=self.plan.config["run"]["seed"])

    # ---- heatmaps -----------------------------------------------------------------------
    def explainer_masks(self, name: str, data: DatasetArtifact, index: np.ndarray) -> dict[str, np.ndarray] | None:
        """The masks explainer ``name`` declares, of the images ``index`` (None: it declares none).

        A declared mask the dataset lacks raises a :class:`BenchError` naming the mask and the
        dataset: the cell cannot run that explainer.
        """
        declared = self.plan.explainer_spec(name).masks
        if not declared:
            return None
        available = masks_of(data.splits.test)
        missing = [m for m in declared if m not in available]
        if missing:
            raise BenchError(missing_masks_text("explainer", name, missing, self.plan.dataset, available)
                             + ": this cell cannot run; choose a dataset that carries it")
        return {m: available[m][index] for m in declared}

    def _explainer(self, name: str) -> tuple[str, Any, dict[str, Any]]:
        """(registered explainer, the component, its resolved parameters) of explainer ``name``."""
        params = dict(self.plan.config["explainers"]["params"].get(name, {}))
        registered = self.plan.registered_explainer(name)  # a variant label -> its explainer
        explainer = create_component("explainer", registered, params)
        return registered, explainer, component_params(explainer) or params

    @staticmethod
    def _heatmaps_key(registered: str, resolved: Mapping[str, Any], model_key: str, ids: Any,
                      masks: Mapping[str, np.ndarray] | None) -> str:
        upstream: list[Any] = [model_key, content_key(list(np.asarray(ids).astype(str)))]
        if masks is not None:
            upstream.append(masks_digest(masks))
        return component_key("heatmaps", "explainer", registered, resolved, *upstream)

    def heatmaps_key(self, name: str, model_key: str, ids: Sequence[str] | np.ndarray,
                     masks: Mapping[str, np.ndarray] | None = None) -> str:
        """The key of explainer ``name``'s heatmaps of the test images ``ids`` (in order) under the
        model of ``model_key``. An explainer whose spec declares masks needs ``masks`` (name ->
        those images' masks: their contents are in the key); without them a :class:`BenchError`
        says so. Nothing is computed."""
        if masks is None and self.plan.explainer_spec(name).masks:
            raise BenchError(f"explainer {name!r} reads masks: its heatmaps key needs their contents")
        registered, _, resolved = self._explainer(name)
        return self._heatmaps_key(registered, resolved, model_key, ids, masks)

    def heatmaps(
        self, name: str, data: DatasetArtifact, model: ModelArtifact, index: np.ndarray | None = None
    ) -> HeatmapsArtifact:
        """Heatmaps of explainer ``name`` for the explained images (``index``, default
        :meth:`explained_subset`), cached; masks the spec declares are passed as ``masks=``
        and their content is part of the key. No image to explain raises a BenchError."""
        from bench.pipeline.explain import compute_heatmaps

        if index is None:
            index = self.explained_subset(data, model)
        if len(index) == 0:
            raise BenchError(
                f"model {model.record.get('model', '?')!r} classified no test image correctly: nothing to explain"
            )
        registered, explainer, resolved = self._explainer(name)
        test = data.splits.test
        ids = test.ids[index].astype(str)
        masks = self.explainer_masks(name, data, index)
        key = self._heatmaps_key(registered, resolved, model.key, ids, masks)

        def artifact(maps: np.ndarray, seconds: float, passes: float | None) -> HeatmapsArtifact:
            return HeatmapsArtifact(explainer=name, heatmaps=maps, key=key, params=resolved, index=index,
                                    ids=ids, seconds=seconds, passes_per_map=passes)

        cached = self.cache.get_npz(_FOLDER["heatmaps"], key, required=("heatmaps",))
        meta = self.cache.get_json(_FOLDER["heatmaps"], key) if cached is not None else None
        if cached is not None and meta is not None:
            passes = meta.get("passes_per_map")
            return artifact(cached["heatmaps"], float(meta.get("seconds", 0.0)),
                            None if passes is None else float(passes))
        if self.cached_only:
            raise self._not_cached("heatmaps", key)
        log(f"[explain] {name} on {model.record['model']} ({len(index)} images) ...", quiet=self.quiet)
        t0 = time.perf_counter()
        heatmaps = compute_heatmaps(
            explainer,
            model.model,
            test.images[index],
            model.predictions[index],
            ids=ids,
            masks=masks,
            batch_size=self.plan.config["explainers"]["batch_size"],
            progress=self.progress,
            name=name,
        )
        seconds = time.perf_counter() - t0
        passes = passes_per_map_of(explainer)
        self.cache.put_npz(_FOLDER["heatmaps"], key, heatmaps=heatmaps, ids=ids)
        self.cache.put_json(_FOLDER["heatmaps"], key, {"seconds": seconds, "passes_per_map": passes, "explainer": name,
                                              "params": resolved, "n": int(len(index))})
        return artifact(heatmaps, seconds, passes)

    # ---- curves ---------------------------------------------------------------------------
    def perturbation(self, name: str) -> tuple[Any, dict[str, Any]]:
        """Perturbation ``name`` constructed with its ``[perturbations.params.<name>]``, and its
        resolved parameters (also for a perturbation that only a metric's curves use)."""
        params = dict(self.plan.config["perturbations"]["params"].get(name, {}))
        perturbation = create_component("perturbation", name, params)
        return perturbation, component_params(perturbation) or params

    def _curves_key(self, name: str, resolved: Mapping[str, Any], order: str, heatmaps_key: str) -> str:
        grid = config_mod.grid_shape(self.plan.config["aopc"]["grid"])
        seed = self.plan.config["run"]["seed"]
        budget = [{"max_images": cap}] if (cap := curve_image_cap(self.plan, order, name)) else []
        return component_key("curves", "perturbation", name, resolved, heatmaps_key, list(grid), order, seed,
                             *budget)

    def curves_key(self, name: str, order: str, heatmaps_key: str) -> str:
        """The key of the ``order`` curves under perturbation ``name`` of the heatmaps of
        ``heatmaps_key`` (their image budget: :func:`curve_image_cap`). Nothing is computed."""
        return self._curves_key(name, self.perturbation(name)[1], order, heatmaps_key)

    def _curves_setup(self, name: str, order: str, heat: HeatmapsArtifact) -> tuple[Any, dict[str, Any], str]:
        perturbation, resolved = self.perturbation(name)
        return perturbation, resolved, self._curves_key(name, resolved, order, heat.key)

    def curve_positions(self, name: str, order: str, heat: HeatmapsArtifact, model: ModelArtifact | None
                        ) -> np.ndarray | None:
        """The positions (within ``heat``) of the images the ``(order, name)`` curves cover (None: all):
        a budget only when every metric reading them has one (:func:`curve_image_cap`)."""
        cap = curve_image_cap(self.plan, order, name)
        if not cap or cap >= heat.n_images or model is None:
            return None
        return budget_positions(model.labels[heat.index], cap, seed=self.plan.config["run"]["seed"])

    def curves(
        self,
        name: str,
        order: str,
        data: DatasetArtifact,
        model: ModelArtifact,
        heat: HeatmapsArtifact,
        *,
        start: int | None = None,
        stop: int | None = None,
    ) -> CurvesArtifact:
        """Perturbation curves of one (heatmaps, perturbation ``name``, ``order``), cached.

        The perturbation's declared ``mask_local`` / ``step_local`` (its
        :class:`bench.PerturbationSpec`) tell the engine whether its steps are local.

        With ``start``/``stop`` only the explained images ``start:stop`` are computed: a
        shard, neither read from nor written to the cache (it is not the stage's result);
        the noise is keyed by image id, so a shard's curves are exactly those rows of the
        whole stage's. :meth:`merge_curves` stores shards as the stage's result.
        """
        from bench.engine.curves import evaluate_aopc

        perturbation, resolved, key = self._curves_setup(name, order, heat)
        shard = start is not None or stop is not None
        if not shard:
            summary = self.cache.get_json(_FOLDER["curves"], key)
            arrays = self.cache.get_npz(_FOLDER["curves"], key, required=("curves", "per_image", "order", "ids"))
            if summary is not None and arrays is not None:
                return CurvesArtifact.from_stored(name, order, key, summary, arrays)
            if self.cached_only:
                raise self._not_cached("curves", key)
        positions = self.curve_positions(name, order, heat, model)
        full = heat.index if positions is None else heat.index[positions]
        maps = heat.heatmaps if positions is None else heat.heatmaps[positions]
        lo = min(0 if start is None else int(start), len(full))
        hi = min(len(full) if stop is None else int(stop), len(full))
        index = full[lo:hi]
        acfg = self.plan.config["aopc"]
        grid = config_mod.grid_shape(acfg["grid"])
        test = data.splits.test
        ids = test.ids[index].astype(str)
        if shard and hi <= lo:  # a shard past a budget's last image: nothing to compute
            n_steps = grid[0] * grid[1] + 1
            return CurvesArtifact(
                perturbation=name, order=order, key=key, params=resolved,
                curves=np.zeros((0, n_steps), np.float32), per_image=np.zeros(0),
                region_order=np.zeros((0, n_steps - 1), np.int32), ids=ids, forward_passes=0, seconds=0.0,
                strategy=str(acfg["strategy"]), strategy_info={}, images_with_ties=0, start=lo, stop=hi,
            )
        what = f" images {lo}:{hi}" if shard else ""
        log(
            f"[curves] {model.record['model']} / {heat.explainer} / {order} / {name}{what} "
            f"({len(index)} images x {grid[0] * grid[1] + 1} passes) ...",
            quiet=self.quiet,
        )
        pspec = registry().get("perturbation", name).spec
        flags = ({"mask_local": pspec.mask_local, "step_local": pspec.step_local}
                 if isinstance(pspec, PerturbationSpec) else {})
        result = evaluate_aopc(
            model.model,
            test.images[index],
            model.predictions[index],
            maps[lo:hi],
            perturbation=perturbation,
            **flags,
            grid=grid,
            order=order,
            seed=self.plan.config["run"]["seed"],
            ids=ids,
            batch_size=acfg["batch_size"],
            progress=self.progress and not shard,
            strategy=acfg["strategy"],
        )
        artifact = CurvesArtifact(
            perturbation=name, order=order, key=key, params=resolved,
            curves=np.asarray(result.curves, dtype=np.float32),
            per_image=np.asarray(result.per_image, dtype=np.float64),
            region_order=np.asarray(result.order, dtype=np.int32),
            ids=ids,
            forward_passes=int(getattr(result, "forward_passes", len(ids) * (grid[0] * grid[1] + 1))),
            seconds=float(getattr(result, "seconds", 0.0)),
            strategy=str(getattr(result, "strategy", acfg["strategy"])),
            strategy_info=dict(getattr(result, "strategy_info", {}) or {}),
            images_with_ties=int((np.asarray(getattr(result, "ties", [])) > 0).sum()),
            start=lo if shard else None,
            stop=hi if shard else None,
        )
        if not shard:
            self.cache.put_npz(_FOLDER["curves"], key, **artifact.arrays())
            self.cache.put_json(_FOLDER["curves"], key, artifact.meta())
        return artifact

    def merge_curves(
        self, name: str, order: str, heat: HeatmapsArtifact, shards: Sequence[CurvesArtifact]
    ) -> CurvesArtifact:
        """The curves stage's result from shards (:meth:`curves` with ``start``/``stop``), stored.

        The shards are concatenated in image order (whatever order they come in); they must
        tile the explained images of ``heat`` exactly (ids checked). The per-image values of
        the merged curves are the whole stage's: the noise is keyed by image id, never by
        shard, batch or worker.
        """
        from bench.engine.curves import aopc_from_curves

        _, resolved, key = self._curves_setup(name, order, heat)
        if not shards:
            raise BenchError(f"curves {order}/{name}: no shards to merge")
        every = np.asarray(heat.ids).astype(str)
        cap = curve_image_cap(self.plan, order, name)
        n_expected = min(cap, len(every)) if cap else len(every)
        ordered = sorted((s for s in shards if s.n_images or len(shards) == 1), key=lambda s: int(s.start or 0))
        bounds = [(int(s.start or 0), int(s.stop if s.stop is not None else s.n_images)) for s in ordered]
        if bounds[0][0] != 0 or bounds[-1][1] != n_expected or any(
                a[1] != b[0] for a, b in zip(bounds, bounds[1:], strict=False)):
            raise BenchError(
                f"curves {order}/{name}: shards {', '.join(f'{a}:{b}' for a, b in bounds)} do not tile "
                f"the {n_expected} explained images" + (f" (a budget of {cap})" if cap else "")
            )
        ids = np.concatenate([np.asarray(s.ids).astype(str) for s in ordered])
        # all of them in order, or (a budget) a subset of them in order
        at = {v: i for i, v in enumerate(every)}
        rows = [at.get(v, -1) for v in ids]
        if len(ids) != n_expected or -1 in rows or rows != sorted(rows) or (not cap and rows != list(range(len(every)))):
            raise BenchError(
                f"curves {order}/{name}: the merged shards cover images {ids[:5].tolist()}... but the "
                f"cell explains {np.asarray(heat.ids)[:5].tolist()}... ({len(ids)} vs {heat.n_images} images)"
            )
        curves = np.concatenate([np.asarray(s.curves, np.float32) for s in ordered])
        artifact = CurvesArtifact(
            perturbation=name, order=order, key=key, params=resolved, curves=curves,
            per_image=aopc_from_curves(curves) if len(curves) else np.zeros(0),
            region_order=np.concatenate([np.asarray(s.region_order) for s in ordered]),
            ids=ids,
            forward_passes=sum(int(s.forward_passes) for s in ordered),
            seconds=sum(float(s.seconds) for s in ordered),
            strategy=ordered[0].strategy,
            strategy_info=dict(ordered[0].strategy_info),
            images_with_ties=sum(int(s.images_with_ties) for s in ordered),
        )
        self.cache.put_npz(_FOLDER["curves"], key, **artifact.arrays())
        self.cache.put_json(_FOLDER["curves"], key, artifact.meta())
        return artifact

    # ---- metrics --------------------------------------------------------------------------
    @staticmethod
    def _metric_key(name: str, resolved: Mapping[str, Any], needs: MetricNeeds, heatmaps_key: str,
                    used: Mapping[str, str], budget: int, cell_perturbation: str,
                    perturbation_params: Mapping[str, Any] | None) -> str:
        upstream: list[Any] = [heatmaps_key, dict(used), needs.inputs.to_dict()]
        if budget:
            upstream.append({"max_images": budget})
        if needs.inputs.perturbation:  # only where declared: other metrics' keys stay as they were
            upstream.append({"perturbation": cell_perturbation, "params": dict(perturbation_params or {})})
        return component_key("metric", "metric", name, resolved, *upstream)

    def metric_key(self, name: str, *, heatmaps_key: str, curve_keys: Mapping[str, str], n_images: int,
                   cell_perturbation: str) -> str | None:
        """The key of metric ``name``'s columns on a cell whose perturbation is ``cell_perturbation``,
        of the ``n_images`` explained images of the heatmaps of ``heatmaps_key``; ``curve_keys``:
        curve name (``morf``, ``morf@<perturbation>``: :func:`bench.plugin.specs.curve_key`) -> that
        curves stage's key, for (at least) the curves the metric reads; None when one it reads is
        absent. Nothing is computed."""
        spec = self.plan.metric_spec(name)
        params = dict(self.plan.config["metrics"]["params"].get(name, {}))
        resolved = component_params(create_component("metric", name, params)) or params
        needs = metric_needs(spec, resolved)
        names = needs.curve_keys(cell_perturbation)
        if any(n not in curve_keys for n in names.values()):
            return None
        cap = self.plan.metric_image_cap(name)
        budget = cap if cap and cap < int(n_images) else 0  # as budget_positions: a budget below the images
        pparams = self.perturbation(cell_perturbation)[1] if needs.inputs.perturbation else None
        return self._metric_key(name, resolved, needs, heatmaps_key, {e: curve_keys[n] for e, n in names.items()},
                                budget, cell_perturbation, pparams)

    def metric(self, name: str, inputs: Mapping[str, Any], *, heatmaps_key: str,
               curves: Mapping[str, CurvesArtifact], cell_perturbation: str = "",
               curve_failures: Mapping[str, str] | None = None) -> MetricOutput:
        """The per-image columns of metric ``name`` on one cell, cached under a content key.

        ``inputs`` are the cell's candidate inputs (``ids``, ``grid``, ``curves`` (arrays),
        ``heatmaps``, ``masks`` by name, ``labels``, ``targets``, ``model``, ``explainer``,
        ``explainer_masks``, ``images``, ``seed``, ``perturbation_params``, ``dataset``) and
        ``curves`` the curves stage's artifacts by name
        (``morf``, ``morf@<perturbation>``: :func:`bench.plugin.specs.curve_key` in a cell whose
        perturbation is ``cell_perturbation``): :func:`bench.pipeline.metrics.metric_data` hands the
        metric only what its spec declares, resolved by its parameters
        (:func:`bench.pipeline.metrics.metric_needs`: the perturbation of its curves, the masks
        its parameters name). The key holds the metric (name, version, code, parameters), the
        heatmaps' key (which holds the model, dataset, explainer, images and the seed), the
        keys of the curves it reads (their perturbation and its parameters) and, where it
        declares it reads it, the cell's perturbation and its parameters. A metric that
        raises, or returns a wrong shape, raises here; a declared mask the dataset lacks
        raises :class:`bench.pipeline.metrics.MetricSkipped`; curves it needs that failed
        (``curve_failures``: name -> why) raise a :class:`BenchError` saying so.
        ``cached_only`` stages raise :class:`NotCached` for a metric not in the cache unless
        ``compute_final``.
        """
        spec = self.plan.metric_spec(name)
        params = dict(self.plan.config["metrics"]["params"].get(name, {}))
        metric = create_component("metric", name, params)
        resolved = component_params(metric) or params
        needs = metric_needs(spec, resolved)
        names = needs.curve_keys(cell_perturbation)
        failed = [n for n in dict.fromkeys(names.values()) if n in (curve_failures or {})]
        if failed:
            raise BenchError("; ".join(f"its {n} curves failed: {(curve_failures or {})[n]}" for n in failed))
        absent = [n for n in dict.fromkeys(names.values()) if n not in curves]
        if absent:
            raise BenchError(f"metric {name!r}: no {', '.join(absent)} curves were computed for it")
        cap = self.plan.metric_image_cap(name)
        positions = budget_positions(np.asarray(inputs["labels"]), cap, seed=int(self.plan.config["run"]["seed"]))
        given = budget_inputs(inputs, curves, positions, needed=set(names.values()), metric=name)
        data = metric_data(spec, needs=needs, perturbation=cell_perturbation, **given)
        used = {entry: curves[n].key for entry, n in names.items()}
        key = self._metric_key(name, resolved, needs, heatmaps_key, used, cap if positions is not None else 0,
                               cell_perturbation, inputs.get("perturbation_params"))
        read = {n: curves[n] for n in dict.fromkeys(names.values())}
        curve_cost = {"curve_passes": sum(int(c.forward_passes) for c in read.values()),
                      "curve_seconds": sum(float(c.seconds) for c in read.values()),
                      "curves": {n: c.perturbation for n, c in read.items()}}
        meta = self.cache.get_json(_FOLDER["metric"], key)
        if meta is not None:
            arrays = self.cache.get_npz(_FOLDER["metric"], key, required=tuple(meta.get("columns", ())))
            if arrays is not None:
                passes = meta.get("forward_passes")
                return MetricOutput(name=name, columns=dict(arrays), params=resolved, key=key,
                                    seconds=float(meta.get("seconds", 0.0)),
                                    forward_passes=None if passes is None else float(passes),
                                    positions=positions, budget=cap if positions is not None else 0, **curve_cost)
        if self.cached_only and not self.compute_final:
            raise self._not_cached("metric", key)
        t0 = time.perf_counter()
        columns = compute_columns(metric, spec, data)
        seconds = time.perf_counter() - t0
        if positions is not None:  # back to one row per explained image: NaN outside the budget
            columns = {c: padded(v, positions, len(inputs["ids"])) for c, v in columns.items()}
        passes = metric_forward_passes(metric)
        if passes is None and not (needs.inputs.model or needs.inputs.explainer):
            passes = 0.0  # it is given neither the model nor the explainer: it cannot run a forward pass
        self.cache.put_npz(_FOLDER["metric"], key, **columns)
        self.cache.put_json(_FOLDER["metric"], key, {"metric": name, "columns": list(columns), "seconds": seconds,
                                             "params": resolved, "forward_passes": passes})
        return MetricOutput(name=name, columns=columns, params=resolved, key=key, seconds=seconds,
                            forward_passes=passes, positions=positions,
                            budget=cap if positions is not None else 0, **curve_cost)

    def cell_metrics(
        self, task: CellTask, data: DatasetArtifact, model: ModelArtifact, heat: HeatmapsArtifact,
        curves: Mapping[str, CurvesArtifact], curve_failures: Mapping[str, str] | None = None,
    ) -> MetricsArtifact:
        """Every selected metric of one cell: each gets only what it declared.

        ``curves`` by name (``morf``: the cell's perturbation; ``morf@<perturbation>``: another
        one a metric asked for); ``curve_failures``: the names of curves under another
        perturbation that failed, and why (only the metrics reading them fail). A metric
        that raises or returns a wrong shape fails only itself (its result says why); one
        whose declared mask the dataset lacks is skipped with the reason.
        """
        cfg = self.plan.config
        grid = config_mod.grid_shape(cfg["aopc"]["grid"])
        test = data.splits.test
        index = heat.index
        inputs = {
            "ids": heat.ids, "grid": grid, "curves": {n: c.curves for n, c in curves.items()},
            "heatmaps": heat.heatmaps,
            "masks": {name: m[index] for name, m in masks_of(test).items()},
            "labels": model.labels[index].astype(np.int64), "targets": model.predictions[index].astype(np.int64),
            "model": model.model, "explainer": LazyExplainer(task.explainer, cfg),
            "explainer_masks": _LazyMasks(self, task.explainer, data, index),
            "images": test.images[index], "dataset": f"dataset {task.dataset!r}",
            "seed": int(cfg["run"]["seed"]),
            "perturbation_params": _LazyParams(self, task.perturbation),
        }
        out = MetricsArtifact()
        metrics_file = f"metrics/{task.cell_id}.npz"
        for name in self.plan.metrics:
            result, columns, cost = self._metric_result(name, inputs, heat.key, curves, metrics_file,
                                                        task.perturbation, curve_failures)
            out.results[name] = result
            out.columns.update({f"{name}/{c}": v for c, v in columns.items()})
            if cost is not None:
                out.costs[name] = cost
        return out

    def _metric_result(
        self, name: str, inputs: Mapping[str, Any], heatmaps_key: str, curves: Mapping[str, CurvesArtifact],
        metrics_file: str, cell_perturbation: str, curve_failures: Mapping[str, str] | None,
    ) -> tuple[MetricResult, dict[str, np.ndarray], dict[str, Any] | None]:
        cfg = self.plan.config
        acfg = cfg["aopc"]
        spec = self.plan.metric_spec(name)
        entry = registry().get("metric", name)
        given = dict(cfg["metrics"]["params"].get(name, {}))
        about = {
            "name": name, "higher_is_better": spec.higher_is_better, "family": spec.family,
            "label": spec.display_label, "description": spec.description, "headline": spec.headline_column,
            "heatmap_transform": spec.heatmap_transform, "confidence": acfg["confidence"],
            "version": entry.version,
        }
        wanted = dict(inputs)
        try:
            for what, lazy in inputs.items():  # only what the spec declares is constructed
                if isinstance(lazy, (LazyExplainer, _LazyMasks)):
                    wanted[what] = lazy.get() if spec.inputs.explainer else None
                elif isinstance(lazy, _LazyParams):
                    wanted[what] = lazy.get() if spec.inputs.perturbation else None
            output = self.metric(name, wanted, heatmaps_key=heatmaps_key, curves=curves,
                                 cell_perturbation=cell_perturbation, curve_failures=curve_failures)
        except (KeyboardInterrupt, SystemExit, NotCached):
            raise
        except MetricSkipped as exc:
            return MetricResult(status="skipped", error=str(exc), params=given,
                                params_key=metric_params_key(given), **about), {}, None
        except BaseException as exc:  # noqa: BLE001 - a failing metric fails only itself
            return MetricResult(status="failed", error=error_text(exc), params=given,
                                params_key=metric_params_key(given), **about), {}, None
        columns = output.columns
        headline = columns[spec.headline_column]
        stats = summarise(headline if output.positions is None else headline[output.positions],
                          confidence=acfg["confidence"], n_resamples=acfg["bootstrap"], seed=cfg["run"]["seed"])
        # curves under another perturbation than the cell's: their parameters are not in the
        # row's settings, so they are part of this column's identity
        foreign = {n: {"perturbation": curves[n].perturbation, "params": dict(curves[n].params)}
                   for n, pert in output.curves.items() if pert != cell_perturbation}
        if output.budget:  # a metric run on a budget of images is another column than on all of them
            foreign["max_images"] = output.budget
        result = MetricResult(
            status="ok", value=stats.value, ci=stats.ci, n=stats.n, n_excluded=stats.n_excluded,
            columns={c: list(v.shape) for c, v in columns.items()}, file=metrics_file,
            key=f"{name}/{spec.headline_column}", ids_key="ids", params=output.params,
            params_key=metric_params_key(output.params, foreign), seconds=output.seconds, **about,
        )
        return result, columns, output.cost()


class _LazyMasks:
    """The dataset masks a cell's explainer declares, of the explained images, read when a metric asks."""

    def __init__(self, stages: Stages, explainer: str, data: DatasetArtifact, index: np.ndarray):
        self.args = (explainer, data, index)
        self.stages = stages
        self._masks: dict[str, np.ndarray] | None = None

    def get(self) -> dict[str, np.ndarray]:
        if self._masks is None:
            self._masks = self.stages.explainer_masks(*self.args) or {}
        return self._masks


class _LazyParams:
    """A perturbation's resolved parameters, resolved when a metric asks."""

    def __init__(self, stages: Stages, perturbation: str):
        self.stages = stages
        self.name = perturbation
        self._params: dict[str, Any] | None = None

    def get(self) -> dict[str, Any]:
        if self._params is None:
            self._params = self.stages.perturbation(self.name)[1]
        return self._params


class LazyExplainer:
    """A cell's explainer, constructed with its parameters when a metric first asks for it."""

    def __init__(self, name: str, cfg: Mapping[str, Any]):
        self.name = name
        self.params = dict(cfg["explainers"]["params"].get(name, {}))
        self.registered = registered_explainer(cfg, name)  # a variant label -> its explainer
        self._component: Any = None

    def get(self) -> Any:
        if self._component is None:
            self._component = create_component("explainer", self.registered, self.params)
        return self._component


def error_text(exc: BaseException) -> str:
    """The one-line message a failed cell or metric records: a BenchError's own text, else
    ``<ExceptionClass>: <message>``."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, BenchError):
        return text
    return f"{type(exc).__name__}: {text}"


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


__all__ = [
    "STAGE_FILES",
    "STAGE_VERSION",
    "LazyExplainer",
    "NotCached",
    "Stages",
    "cell_curves",
    "clear_memo",
    "component_key",
    "component_params",
    "create_component",
    "error_text",
    "evaluation_key",
    "masks_digest",
    "metric_forward_passes",
    "metric_needs_in",
    "passes_per_map_of",
    "stratified_sample",
]
