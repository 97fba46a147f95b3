"""What a plan will cost before it runs: forward passes per cell, and time from a calibration.

:func:`estimate_plan` (``bench run --dry-run``) counts, per cell, the forward passes of

* the explainer's maps: its declared ``passes_per_map()`` (forward-pass equivalents per map,
  asked before the run, with ``image_shape=`` where it needs it) x the explained images;
* the curves: for every ``(order, perturbation)`` the metrics read (:func:`cell_curves`), the
  images they cover (``metrics.max_images`` budgets: :func:`curve_image_cap`) x the steps
  (regions + 1);
* the metrics: each one's ``planned_passes(n_images=, passes_per_map=)`` (the images within its
  ``metrics.max_images`` budget, the explainer's declared passes per map) or declared
  ``forward_passes()`` before it ran (a metric given neither the model nor the explainer costs 0;
  one that says nothing before it ran is *unknown*);

and, per model, its training (a frozen backbone: one forward pass per image of every split;
end to end: per epoch a forward and a backward pass per training image, counted as
:data:`BACKWARD_PASSES` forward passes each, and a forward pass per validation image; then the
test split). The split sizes come from the cached dataset, else from the dataset's optional
``split_sizes()`` (cheap, without loading: :class:`bench.plugin.protocols.Dataset`); without
either the training is *unknown*. Nothing is loaded or built: the explained images are the
correctly classified test images capped by ``aopc.max_images``, known exactly when the model's
evaluation is in the cache, else bounded by the cap (or the test split when its size is known).

The cache is probed only where its keys cost nothing to compute: a dataset that reads no
folder (its fingerprint is a hash of its parameters) and whose stored file says its classes
and splits. Then a trained model, heatmaps, curves and metrics already in the cache are
"cached" and cost 0. Elsewhere nothing is said about the cache (everything counted). The keys
and files probed are those the run uses: the key-only methods of the stages
(:class:`bench.pipeline.stages.Stages`: ``dataset_key``, ``model_key``, ``heatmaps_key``,
``curves_key``, ``metric_key``, ``is_cached``). The heatmaps of an explainer that reads masks
are not probed (their key holds the masks' contents); its curves and metrics are then counted.

An estimate never fails a dry run: whatever cannot be computed (a component that cannot be
constructed, a declared cost that raises, a cache entry that cannot be read, a key that cannot
be made) is left unknown or not cached, and said in :attr:`PlanEstimate.problems` (what failed,
naming the plugin, stage or file, and the exception), which ``bench run --dry-run`` prints as
warnings. (A dataset's ``split_sizes()`` that raises is the exception: it may, by its contract,
and the training is then just unknown.)

Time: ``passes / passes_per_second`` of a :class:`Calibration`, the model's measured
full-batch forward throughput at the run's image size and ``aopc.batch_size`` on this machine
(:func:`calibrate_model`, ``bench run --dry-run --calibrate``: a few batches, seconds per
model), stored as ``<results>/cache/calibration/<machine>/<model>-<key>.json``
(:func:`machine_fingerprint`: platform, CPU model, cores, TensorFlow and Keras versions; the
key: the model's name, code, parameters, image size and batch size). A finished cell records
the prediction beside what it measured (:class:`bench.pipeline.record.CostEstimate`) when a
calibration existed, with the estimate's problems among what it could not count (``unknown``).
"""

from __future__ import annotations

import functools
import math
import os
import platform
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import loading as config_mod
from bench.data import SPLIT_NAMES
from bench.pipeline.keys import component_identity, frozen_code_digests
from bench.pipeline.plan import CellTask, Plan, dataset_params, declared_image_shape, model_params
from bench.pipeline.record import CellRecord, CostEstimate
from bench.pipeline.stages import (
    Stages,
    cell_curves,
    create_component,
    curve_image_cap,
    declared_cost,
    error_text,
    evaluation_key,
    metric_needs_in,
)
from bench.pipeline.store import Cache, atomic_write_text, content_key, to_json
from bench.plugin.specs import curve_key

#: A backward pass counted in forward passes (training end to end: forward + backward = 1 + this).
BACKWARD_PASSES = 2.0
#: The calibration file's format.
CALIBRATION_VERSION = 1
#: Seconds of timed forward passes per model when calibrating (after the model is built and traced).
CALIBRATION_SECONDS = 2.0


# --------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def _version(*packages: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    for p in packages:
        try:
            return version(p)
        except PackageNotFoundError:
            continue
    return ""


def machine_fingerprint() -> dict[str, Any]:
    """What makes this machine's throughput this machine's (read without importing TensorFlow;
    once per process: every finished cell's estimate asks)."""
    return dict(_machine_fingerprint())


@functools.cache
def _machine_fingerprint() -> dict[str, Any]:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 0
    gpu_dir = Path("/proc/driver/nvidia/gpus")
    try:
        gpus = sorted(p.name for p in gpu_dir.iterdir()) if gpu_dir.is_dir() else []
    except OSError:
        gpus = []
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cores": cores,
        "gpus": gpus,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "tensorflow": _version("tensorflow", "tensorflow-cpu", "tf-nightly"),
        "keras": _version("keras"),
        "python": platform.python_version(),
    }


def machine_id(fingerprint: Mapping[str, Any] | None = None) -> str:
    return content_key("machine", dict(fingerprint or machine_fingerprint()))[:16]


@dataclass(frozen=True)
class Calibration:
    """A model's measured forward-pass throughput on one machine (see the module docs)."""

    model: str
    passes_per_second: float
    batch_size: int
    measured_batch: int
    image_shape: tuple[int, int]
    key: str
    path: Path
    created: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"version": CALIBRATION_VERSION, "model": self.model, "passes_per_second": self.passes_per_second,
                "batch_size": self.batch_size, "measured_batch": self.measured_batch,
                "image_shape": list(self.image_shape), "key": self.key, "created": self.created,
                "seconds": self.seconds, "machine": machine_fingerprint()}


class CalibrationError(ValueError):
    """A calibration file that cannot be read."""


def _calibration_params(plan: Plan, name: str, image_shape: tuple[int, int]) -> dict[str, Any]:
    return model_params(plan, name, image_shape, None)


def calibration_key(plan: Plan, name: str, image_shape: tuple[int, int]) -> str:
    """The model's calibration key: its name, code, parameters, the image size and batch size."""
    return content_key("calibration", CALIBRATION_VERSION, component_identity("model", name),
                       _calibration_params(plan, name, image_shape), list(image_shape),
                       int(plan.config["aopc"]["batch_size"]))


def calibration_dir(results: Path) -> Path:
    return Path(results) / "cache" / "calibration" / machine_id()


def calibration_path(plan: Plan, name: str, image_shape: tuple[int, int]) -> Path:
    return calibration_dir(plan.results_dir) / f"{name}-{calibration_key(plan, name, image_shape)[:20]}.json"


def read_calibration(path: Path) -> Calibration:
    """The calibration stored at ``path`` (a :class:`CalibrationError` saying why it cannot be read)."""
    import json

    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(d, Mapping) or d.get("version") != CALIBRATION_VERSION:
            raise CalibrationError(f"not a version-{CALIBRATION_VERSION} calibration")
        pps = float(d["passes_per_second"])
        if not math.isfinite(pps) or pps <= 0:
            raise CalibrationError(f"passes_per_second = {d['passes_per_second']!r}")
        shape = tuple(int(v) for v in d["image_shape"])
        return Calibration(model=str(d["model"]), passes_per_second=pps, batch_size=int(d["batch_size"]),
                           measured_batch=int(d.get("measured_batch") or d["batch_size"]),
                           image_shape=(shape[0], shape[1]), key=str(d["key"]), path=Path(path),
                           created=str(d.get("created") or ""), seconds=float(d.get("seconds") or 0.0))
    except CalibrationError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise CalibrationError(f"{type(exc).__name__}: {exc}") from exc


_WARNED: set[str] = set()


def find_calibration(plan: Plan, name: str, image_shape: tuple[int, int] | None, *,
                     problems: list[str] | None = None) -> Calibration | None:
    """The stored calibration of model ``name`` under ``plan`` on this machine, None when there is
    none; a corrupt file is named (in ``problems``, else once on stderr) and ignored."""
    if image_shape is None:
        return None
    path = calibration_path(plan, name, image_shape)
    if not path.exists():
        return None
    try:
        cal = read_calibration(path)
    except CalibrationError as exc:
        text = f"calibration file {str(path)!r} is corrupt ({exc}): ignored; `bench run --dry-run --calibrate` rewrites it"
        if problems is not None:
            problems.append(text)
        elif str(path) not in _WARNED:
            _WARNED.add(str(path))
            print(f"bench: warning: {text}", file=sys.stderr)
        return None
    if cal.key != calibration_key(plan, name, image_shape):
        return None
    return cal


def calibrate_model(plan: Plan, name: str, image_shape: tuple[int, int], *,
                    seconds: float = CALIBRATION_SECONDS) -> Calibration:
    """Measure model ``name``'s forward throughput (images/s) and store it (see the module docs).

    The model is built with the plan's parameters (ImageNet or file weights replaced by
    ``none``: the values of the weights do not change the time, and nothing is downloaded),
    traced, then timed on random [0, 1] images in batches growing up to ``aopc.batch_size``
    while a batch takes well under ``seconds``; the throughput is the median of a few batches.
    """
    import datetime as _dt

    from bench.engine.forward import FullForward

    params = _calibration_params(plan, name, image_shape)
    if "weights" in params and str(params["weights"]).lower() not in ("none", "scratch"):
        params["weights"] = "none"
    started = time.perf_counter()
    model = create_component("model", name, params)
    batch_size = int(plan.config["aopc"]["batch_size"])
    h, w = image_shape
    fwd = FullForward()
    fwd.prepare(model, batch_size=batch_size, image_shape=(h, w, 3))
    rng = np.random.default_rng(0)
    fwd.predict(rng.random((1, h, w, 3), dtype=np.float32))  # build and trace
    n, dt = 1, 0.0
    while True:
        x = rng.random((n, h, w, 3), dtype=np.float32)
        t0 = time.perf_counter()
        fwd.predict(x)
        dt = time.perf_counter() - t0
        if n >= batch_size or dt * 4 > seconds:
            break
        n = min(batch_size, n * 4)
    repeats = max(1, min(3, int(seconds / max(dt, 1e-6))))
    times = [dt]
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        fwd.predict(x)
        times.append(time.perf_counter() - t0)
    pps = n / max(float(np.median(times)), 1e-9)
    cal = Calibration(model=name, passes_per_second=pps, batch_size=batch_size, measured_batch=n,
                      image_shape=(int(h), int(w)), key=calibration_key(plan, name, image_shape),
                      path=calibration_path(plan, name, image_shape),
                      created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                      seconds=time.perf_counter() - started)
    cal.path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cal.path, to_json(cal.to_dict()))
    return cal


# --------------------------------------------------------------------------------------
# what the cache already holds (only where it is free to ask)
# --------------------------------------------------------------------------------------
@dataclass
class _DatasetFacts:
    """The split sizes; with ``key`` (and the classes) when they come from the cache, which can
    then be probed downstream; without (None) when the dataset's ``split_sizes()`` said them."""

    key: str | None
    num_classes: int | None
    sizes: dict[str, int]

    @property
    def cached(self) -> bool:
        return self.key is not None


def _note(problems: list[str] | None, text: str) -> None:
    """Add ``text`` to ``problems`` once (``None``: the caller keeps no list)."""
    if problems is not None and text not in problems:
        problems.append(text)


def _dataset_component(plan: Plan, problems: list[str] | None = None) -> tuple[dict[str, Any], Any] | None:
    """The plan's dataset parameters and the dataset constructed with them (a constructor does no
    work); None when it cannot be constructed, said in ``problems`` (once: :func:`estimate_plan`
    constructs it once for both its image size and its split sizes)."""
    try:
        params = dataset_params(plan)
        return params, create_component("dataset", plan.dataset, params)
    except Exception as exc:  # noqa: BLE001 - an estimate never fails a dry run
        _note(problems, f"dataset {plan.dataset!r} could not be constructed ({error_text(exc)}): its image "
                        "size and split sizes are unknown and the cache is not probed")
        return None


def _dataset_facts(plan: Plan, stages: Stages, built: tuple[dict[str, Any], Any] | None,
                   problems: list[str] | None = None) -> _DatasetFacts | None:
    """The cached dataset's classes and split sizes, when its key is free (no folder to hash);
    else the dataset's declared ``split_sizes()`` (no key: nothing downstream is probed); else None
    (``built``: :func:`_dataset_component`, None when the dataset could not be constructed)."""
    if built is None:
        return None
    params, component = built
    if "root" not in params:  # else its fingerprint hashes files: not free
        facts = _cached_dataset_facts(plan, stages, problems)
        if facts is not None:
            return facts
    sizes = declared_split_sizes(component, plan.dataset, problems=problems)
    return None if sizes is None else _DatasetFacts(key=None, num_classes=None, sizes=sizes)


def declared_split_sizes(component: Any, name: str, *, problems: list[str] | None = None) -> dict[str, int] | None:
    """The dataset's ``split_sizes()`` (``{"train": n, "val": n, "test": n}``, non-negative ints),
    None when it has no such method, it raises or returns None (unknown), or it returns anything
    else (then named in ``problems``). Never raises."""
    method = getattr(component, "split_sizes", None)
    if not callable(method):
        return None
    try:
        value = method()
    except Exception:  # noqa: BLE001 - allowed by its contract (a missing folder, say: load() reports it)
        return None
    if value is None:
        return None
    try:
        if isinstance(value, Mapping) and set(value) == set(SPLIT_NAMES) and all(
                isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 0
                for v in value.values()):
            return {s: int(value[s]) for s in SPLIT_NAMES}
        shown = repr(value)
    except Exception as exc:  # noqa: BLE001 - a mapping that cannot be read is garbage too
        shown = f"a {type(value).__name__} that cannot be read ({error_text(exc)})"
    if problems is not None:
        problems.append(f"dataset {name!r}: split_sizes() returned {shown[:200]}, expected "
                        "{'train': n, 'val': n, 'test': n} (integers >= 0): its training passes are not counted")
    return None


def _cached_dataset_facts(plan: Plan, stages: Stages, problems: list[str] | None = None) -> _DatasetFacts | None:
    """The classes and split sizes stored in the dataset's cache entry; None when there is none
    (or it cannot be read: then said in ``problems``)."""
    step = "computing its cache key"
    try:
        key = stages.dataset_key()
        path = stages.cache_file("dataset", key)
        if not path.exists():
            return None
        import json

        step = f"reading its cache entry {str(path)!r}"
        with np.load(path, allow_pickle=False) as npz:  # only the small members are read
            meta = json.loads(bytes(npz["meta.json"]).decode())
            sizes = {s: int(len(npz[f"{s}/labels"])) for s in SPLIT_NAMES}
        return _DatasetFacts(key=key, num_classes=len(meta["class_names"]), sizes=sizes)
    except Exception as exc:  # noqa: BLE001 - an estimate never fails a dry run
        _note(problems, f"dataset {plan.dataset!r}: {step} failed ({error_text(exc)}): the cache is not probed")
        return None


@dataclass
class _ModelFacts:
    key: str
    trained: bool
    ids: np.ndarray | None = None  # the explained images' ids (its evaluation is cached)
    labels: np.ndarray | None = None


def _model_facts(plan: Plan, stages: Stages, name: str, data: _DatasetFacts, image_shape: tuple[int, int],
                 problems: list[str] | None = None) -> _ModelFacts | None:
    """Model ``name``'s key, whether it is trained and evaluated in the cache and, evaluated, the
    images a cell explains; None (said in ``problems``) when that cannot be found out."""
    step = "computing its cache key"
    try:
        assert data.key is not None
        key = stages.model_key(name, data.key, image_shape, data.num_classes)
        facts = _ModelFacts(key=key, trained=stages.is_cached("model", key))
        ekey = evaluation_key(key)
        evaluated = stages.is_cached("evaluation", ekey)
        if evaluated:
            epath = stages.cache_file("evaluation", ekey, ".npz")
            step = f"reading its evaluation {str(epath)!r}"
            with np.load(epath, allow_pickle=False) as npz:
                ids, labels, pred = (np.asarray(npz[k]) for k in ("ids", "labels", "predictions"))
            index = stages.explained_index(pred, labels)
            facts.ids, facts.labels = ids[index].astype(str), labels[index]
        facts.trained = facts.trained and evaluated
        return facts
    except Exception as exc:  # noqa: BLE001 - an estimate never fails a dry run
        _note(problems, f"model {name!r}: {step} failed ({error_text(exc)}): its stages are counted as not cached")
        return None


# --------------------------------------------------------------------------------------
# the estimate
# --------------------------------------------------------------------------------------
@dataclass
class CurveCost:
    """One ``(order, perturbation)`` of a cell: images x steps."""

    order: str
    perturbation: str
    images: int | None
    steps: int
    cached: bool = False

    @property
    def passes(self) -> float | None:
        return None if self.images is None else float(self.images * self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {"order": self.order, "perturbation": self.perturbation, "images": self.images,
                "steps": self.steps, "passes": self.passes, "cached": self.cached}


@dataclass
class CellEstimate:
    """The forward passes one cell will cost (``None``: unknown), and what is already cached."""

    task: CellTask
    images: int | None
    images_exact: bool
    passes_per_map: float | None
    explain_cached: bool = False
    curves: list[CurveCost] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)  # name -> passes (None: unknown)
    metrics_cached: dict[str, bool] = field(default_factory=dict)
    calibration: Calibration | None = None

    @property
    def explain_passes(self) -> float | None:
        if self.passes_per_map is None or self.images is None:
            return None
        return self.passes_per_map * self.images

    def _stages(self) -> list[tuple[float | None, bool]]:
        out = [(self.explain_passes, self.explain_cached)]
        out += [(c.passes, c.cached) for c in self.curves]
        out += [(p, self.metrics_cached.get(m, False)) for m, p in self.metrics.items()]
        return out

    @property
    def curve_passes(self) -> float | None:
        return _sum([0.0 if c.cached else c.passes for c in self.curves])

    @property
    def metric_passes(self) -> float | None:
        return _sum([0.0 if self.metrics_cached.get(m) else p for m, p in self.metrics.items()])

    @property
    def passes(self) -> float:
        """The passes still to pay (cached stages free), unknown ones counted as 0 (see :attr:`unknown`)."""
        return float(sum(p or 0.0 for p, cached in self._stages() if not cached))

    @property
    def full_passes(self) -> float:
        """The passes of the whole cell, cached or not (what its record's prediction is)."""
        return float(sum(p or 0.0 for p, _ in self._stages()))

    @property
    def unknown(self) -> list[str]:
        """What costs an unknown number of passes (not cached)."""
        out = []
        if self.explain_passes is None and not self.explain_cached:
            out.append(f"explainer {self.task.explainer}")
        out += [f"metric {m}" for m, p in self.metrics.items() if p is None and not self.metrics_cached.get(m)]
        if self.images is None:
            out.append("images")
        return out

    @property
    def cached(self) -> bool:
        return all(cached for _, cached in self._stages())

    @property
    def seconds(self) -> float | None:
        return None if self.calibration is None else self.passes / self.calibration.passes_per_second

    def to_dict(self) -> dict[str, Any]:
        return {
            "cell_id": self.task.cell_id, "model": self.task.model, "explainer": self.task.explainer,
            "perturbation": self.task.perturbation, "images": self.images, "images_exact": self.images_exact,
            "explain": {"passes_per_map": self.passes_per_map, "passes": self.explain_passes,
                        "cached": self.explain_cached},
            "curves": [c.to_dict() for c in self.curves],
            "metrics": {m: {"passes": p, "cached": self.metrics_cached.get(m, False)} for m, p in self.metrics.items()},
            "passes": self.passes, "full_passes": self.full_passes, "unknown": self.unknown,
            "cached": self.cached, "seconds": self.seconds,
        }


def _sum(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(sum(known)) if known or not values else None


@dataclass
class ModelEstimate:
    """One model: its training passes, explained images, calibration."""

    name: str
    train_passes: float | None
    train_cached: bool
    images: int | None
    images_exact: bool
    calibration: Calibration | None
    frozen_backbone: bool | None = None

    @property
    def seconds(self) -> float | None:
        if self.calibration is None or self.train_passes is None:
            return None
        return 0.0 if self.train_cached else self.train_passes / self.calibration.passes_per_second

    def to_dict(self) -> dict[str, Any]:
        cal = self.calibration
        return {"model": self.name, "train_passes": self.train_passes, "train_cached": self.train_cached,
                "frozen_backbone": self.frozen_backbone, "images": self.images, "images_exact": self.images_exact,
                "train_seconds": self.seconds,
                "calibration": None if cal is None else {"passes_per_second": cal.passes_per_second,
                                                         "path": str(cal.path), "created": cal.created,
                                                         "measured_batch": cal.measured_batch}}


@dataclass
class PlanEstimate:
    """The whole plan's estimate: per model and per cell, with totals."""

    models: dict[str, ModelEstimate]
    cells: list[CellEstimate]
    image_shape: tuple[int, int] | None
    steps: int
    cache_probed: bool
    problems: list[str] = field(default_factory=list)

    @property
    def passes(self) -> float:
        train = sum(m.train_passes or 0.0 for m in self.models.values() if not m.train_cached)
        return float(train + sum(c.passes for c in self.cells))

    @property
    def uncalibrated(self) -> list[str]:
        return [m for m, e in self.models.items() if e.calibration is None]

    @property
    def seconds(self) -> float | None:
        """Seconds of the passes to pay, None when a model with work to do has no calibration."""
        total = 0.0
        for m in self.models.values():
            if not m.train_cached:
                if m.seconds is None and (m.train_passes or 0) > 0:
                    return None
                total += m.seconds or 0.0
        for c in self.cells:
            if c.passes > 0:
                if c.seconds is None:
                    return None
                total += c.seconds
        return total

    @property
    def unknown(self) -> list[str]:
        seen = dict.fromkeys(u for c in self.cells for u in c.unknown)
        seen.update(dict.fromkeys(f"training {m}" for m, e in self.models.items()
                                  if e.train_passes is None and not e.train_cached))
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        return {"image_shape": None if self.image_shape is None else list(self.image_shape), "steps": self.steps,
                "cache_probed": self.cache_probed, "models": [m.to_dict() for m in self.models.values()],
                "cells": [c.to_dict() for c in self.cells], "passes": self.passes, "seconds": self.seconds,
                "uncalibrated": self.uncalibrated, "unknown": self.unknown, "problems": list(self.problems),
                "machine": machine_id()}


def planned_passes_per_map(explainer: Any, image_shape: tuple[int, int] | None, *, name: str = "",
                           problems: list[str] | None = None) -> float | None:
    """The explainer's declared passes per map before it ran (asked with ``image_shape`` when it
    needs it: it raised a ValueError or TypeError without); None when it says nothing (or cannot
    before it ran). Never raises: a failure is said in ``problems``, naming the explainer
    (``name``, default its class)."""
    label = name or type(explainer).__name__
    try:
        return declared_cost(explainer, "passes_per_map", "explainer")
    except (ValueError, TypeError):
        if image_shape is None:
            return None
        shape = tuple(image_shape)
        try:
            return declared_cost(explainer, "passes_per_map", "explainer", image_shape=shape)
        except Exception as exc:  # noqa: BLE001 - an estimate never fails a dry run
            _note(problems, f"explainer {label!r}: passes_per_map(image_shape={shape}) failed "
                            f"({error_text(exc)}): its maps are not counted")
            return None
    except Exception as exc:  # noqa: BLE001 - an estimate never fails a dry run
        _note(problems, f"explainer {label!r}: passes_per_map() failed ({error_text(exc)}): its maps are not counted")
        return None


def planned_metric_passes(plan: Plan, name: str, *, n_images: int | None = None,
                          passes_per_map: float | None = None, problems: list[str] | None = None) -> float | None:
    """Metric ``name``'s cost in one cell before it ran: 0 when it is given neither the model nor
    the explainer (it cannot run one); its ``planned_passes(n_images=, passes_per_map=)`` where it
    has one (the images it will see: the cell's, within its ``metrics.max_images`` budget; the
    explainer's declared passes per map), else its declared ``forward_passes()``; None when unknown.
    Never raises: a failure, or a planned cost that is not a finite number >= 0, is said in
    ``problems``."""
    step = "resolving what it reads"
    try:
        needs = metric_needs_in(plan, name)
        if not (needs.inputs.model or needs.inputs.explainer):
            return 0.0
        step = "constructing it"
        metric = create_component("metric", name, dict(plan.config["metrics"]["params"].get(name, {})))
        planned = getattr(metric, "planned_passes", None)
        if callable(planned) and n_images is not None:
            budget = (plan.config["metrics"].get("max_images") or {}).get(name)
            images = min(int(n_images), int(budget)) if budget else int(n_images)
            step = f"planned_passes(n_images={images}, passes_per_map={passes_per_map})"
            value = planned(n_images=images, passes_per_map=passes_per_map)
            if value is not None:
                passes = float(value)
                if math.isfinite(passes) and passes >= 0:
                    return passes
                _note(problems, f"metric {name!r}: {step} returned {value!r}, expected a finite number >= 0: "
                                "its passes are not counted")
                return None
        step = "forward_passes()"
        return declared_cost(metric, "forward_passes", "metric")
    except Exception as exc:  # noqa: BLE001 - an estimate never fails a dry run
        _note(problems, f"metric {name!r}: {step} failed ({error_text(exc)}): its passes are not counted")
        return None


def _train_passes(plan: Plan, name: str, image_shape: tuple[int, int] | None,
                  sizes: Mapping[str, int] | None,
                  problems: list[str] | None = None) -> tuple[float | None, bool | None]:
    frozen: bool | None = None
    try:
        model = create_component("model", name, model_params(plan, name, image_shape, None))
        frozen = bool(getattr(model, "frozen_backbone", False))
    except Exception as exc:  # noqa: BLE001 - an estimate never fails a dry run
        _note(problems, f"model {name!r} could not be constructed ({error_text(exc)}): its training passes are "
                        "not counted")
    if sizes is None or frozen is None:
        return None, frozen
    n_train, n_val, n_test = sizes["train"], sizes["val"], sizes["test"]
    if frozen:  # the frozen part runs once per image; the head's passes are negligible
        return float(n_train + n_val + n_test), frozen
    epochs = int(plan.config["training"]["epochs"])
    return float(epochs * (n_train * (1.0 + BACKWARD_PASSES) + n_val) + n_test), frozen


def image_shape_of(plan: Plan, *, problems: list[str] | None = None) -> tuple[int, int] | None:
    """The dataset's declared image size (None when it says nothing before loading, or asking
    fails: then said in ``problems``)."""
    return _declared_shape(plan, _dataset_component(plan, problems), problems)


def _declared_shape(plan: Plan, built: tuple[dict[str, Any], Any] | None,
                    problems: list[str] | None) -> tuple[int, int] | None:
    if built is None:  # could not be constructed: said by _dataset_component
        return None
    try:
        return declared_image_shape(built[1], plan.dataset)
    except Exception as exc:  # noqa: BLE001 - an estimate never fails a dry run
        _note(problems, f"dataset {plan.dataset!r}: its image size could not be read ({error_text(exc)}): "
                        "the cache is not probed")
        return None


@frozen_code_digests()  # thousands of keys: each package's code read once
def estimate_plan(plan: Plan, *, probe_cache: bool = True, image_shape: tuple[int, int] | None = None,
                  n_images: Mapping[str, int] | None = None, only: CellTask | None = None) -> PlanEstimate:
    """The forward passes (and, calibrated, the time) of every cell and model of ``plan``.

    Nothing is loaded or built (see the module docs). ``n_images``: model -> the number of
    explained images when it is known (a finished cell's); ``image_shape``: the images' size
    when known (else the dataset's declared one); ``only``: that cell (and its model) alone.
    Never raises for a component or cache entry it cannot read: what failed is in ``problems``.
    """
    cfg = plan.config
    stages = Stages(plan, cache=Cache(plan.results_dir / "cache"), quiet=True)
    problems: list[str] = []
    built = _dataset_component(plan, problems) if probe_cache or image_shape is None else None
    shape = image_shape or _declared_shape(plan, built, problems)
    grid = config_mod.grid_shape(cfg["aopc"]["grid"])
    steps = grid[0] * grid[1] + 1
    cap = int(cfg["aopc"]["max_images"] or 0)
    data = _dataset_facts(plan, stages, built, problems) if probe_cache else None
    probed = data is not None and data.cached and shape is not None  # the model keys need the shape
    models: dict[str, ModelEstimate] = {}
    facts: dict[str, _ModelFacts | None] = {}
    for name in plan.models if only is None else [only.model]:
        mf = _model_facts(plan, stages, name, data, shape, problems) if probed and data is not None else None
        facts[name] = mf
        if n_images is not None and name in n_images:
            images, exact = int(n_images[name]), True
        elif mf is not None and mf.ids is not None:
            images, exact = int(len(mf.ids)), True
        else:
            bound = [v for v in (cap or None, data.sizes["test"] if data else None) if v]
            images, exact = (min(bound) if bound else None), False
        train, frozen = _train_passes(plan, name, shape, data.sizes if data else None, problems)
        models[name] = ModelEstimate(
            name=name, train_passes=train, train_cached=bool(mf and mf.trained), images=images, images_exact=exact,
            calibration=find_calibration(plan, name, shape, problems=problems), frozen_backbone=frozen)
    per_map: dict[str, float | None] = {}
    metric_passes = {m: planned_metric_passes(plan, m, problems=problems) for m in plan.metrics}
    caps: dict[tuple[str, str], int] = {}
    cells = []
    for task in plan.cells if only is None else [only]:
        m = models[task.model]
        n = m.images
        if task.explainer not in per_map:
            try:
                explainer = create_component("explainer", plan.registered_explainer(task.explainer),
                                             dict(cfg["explainers"]["params"].get(task.explainer, {})))
            except Exception as exc:  # noqa: BLE001 - an estimate never fails a dry run
                _note(problems, f"explainer {task.explainer!r} could not be constructed ({error_text(exc)}): "
                                "its maps are not counted")
                per_map[task.explainer] = None
            else:
                per_map[task.explainer] = planned_passes_per_map(explainer, shape, name=task.explainer,
                                                                 problems=problems)
        est = CellEstimate(task=task, images=n, images_exact=m.images_exact, passes_per_map=per_map[task.explainer],
                           calibration=m.calibration)
        for order, pert in cell_curves(plan, task):
            if (order, pert) not in caps:
                caps[order, pert] = curve_image_cap(plan, order, pert)
            ccap = caps[order, pert]
            ni = None if n is None else (min(ccap, n) if ccap else n)
            est.curves.append(CurveCost(order=order, perturbation=pert, images=ni, steps=steps))
        for name in plan.metrics:  # a declared or planned cost, or unknown (None) until the metric ran
            est.metrics[name] = metric_passes[name]
            if est.metrics[name] is None and n is not None:
                est.metrics[name] = planned_metric_passes(plan, name, n_images=n,
                                                          passes_per_map=per_map[task.explainer], problems=problems)
        mf = facts[task.model]
        if mf is not None and mf.ids is not None:
            _probe_cell(plan, stages, est, mf, problems)
        cells.append(est)
    return PlanEstimate(models=models, cells=cells, image_shape=shape, steps=steps,
                        cache_probed=probed, problems=problems)


def _probe_cell(plan: Plan, stages: Stages, est: CellEstimate, mf: _ModelFacts, problems: list[str]) -> None:
    """Mark the stages of ``est`` already in the cache, under the keys the run computes them under
    (the key-only methods of :class:`bench.pipeline.stages.Stages`). A key that cannot be made is
    said in ``problems`` (the stage and the plugin) and its stage counted as not cached; heatmaps
    of an explainer reading masks are not probed (their key holds the masks' contents)."""
    task = est.task
    assert mf.ids is not None

    def failed(stage: str, what: str, exc: Exception) -> None:
        _note(problems, f"cache probe: the {stage} key of {what} could not be computed ({error_text(exc)}): "
                        "counted as not cached")

    try:
        if plan.explainer_spec(task.explainer).masks:
            return  # reading the masks is loading data
        hkey = stages.heatmaps_key(task.explainer, mf.key, mf.ids)
    except Exception as exc:  # noqa: BLE001 - an estimate never fails a dry run
        failed("heatmaps", f"explainer {task.explainer!r}", exc)
        return
    est.explain_cached = stages.is_cached("heatmaps", hkey)
    ckeys: dict[str, str] = {}  # curve name (order or order@perturbation) -> key
    for c in est.curves:
        try:
            ckey = stages.curves_key(c.perturbation, c.order, hkey)
        except Exception as exc:  # noqa: BLE001 - an estimate never fails a dry run
            failed("curves", f"perturbation {c.perturbation!r} ({c.order})", exc)
            continue
        c.cached = stages.is_cached("curves", ckey)
        ckeys[curve_key(c.order, c.perturbation, task.perturbation)] = ckey
    for name in est.metrics:
        try:
            mkey = stages.metric_key(name, heatmaps_key=hkey, curve_keys=ckeys, n_images=len(mf.ids),
                                     cell_perturbation=task.perturbation)
        except Exception as exc:  # noqa: BLE001 - an estimate never fails a dry run
            failed("metric", f"metric {name!r}", exc)
            continue
        # no key: a curve it reads has none (said above): not cached
        est.metrics_cached[name] = mkey is not None and stages.is_cached("metric", mkey)


# --------------------------------------------------------------------------------------
# a finished cell: predicted vs measured
# --------------------------------------------------------------------------------------
def record_estimate(plan: Plan, task: CellTask, record: CellRecord,
                    image_shape: tuple[int, int] | None) -> CostEstimate | None:
    """The cell's predicted cost (its real number of explained images, the model's calibration)
    beside what it measured; None when the model has no calibration on this machine.

    Its ``unknown`` lists what the prediction could not count (``explainer <name>``,
    ``metric <name>``) and then the problems of the estimate (:attr:`PlanEstimate.problems`:
    a declared cost that raised, a component that could not be constructed, naming it and the
    exception), so that a prediction short of something says why in the cell's record."""
    if not record.ok or record.n_images is None:
        return None
    cal = find_calibration(plan, task.model, image_shape)
    if cal is None:
        return None
    est = estimate_plan(plan, probe_cache=False, image_shape=image_shape, n_images={task.model: record.n_images},
                        only=task)
    cell = est.cells[0]
    t = record.timings
    measured_seconds = float(t.explain_seconds + t.evaluate_seconds + t.metrics_seconds)
    metric_costs = record.extra.get("metric_timings") or {}
    own = [c.get("forward_passes") for c in metric_costs.values() if isinstance(c, Mapping)]
    explain = (t.passes_per_map or 0.0) * (t.explain_maps or 0)
    measured_passes = float(explain + t.forward_passes + sum(float(p) for p in own if p is not None))
    predicted = cell.full_passes
    return CostEstimate(
        predicted_passes=predicted, predicted_seconds=predicted / cal.passes_per_second,
        measured_passes=measured_passes, measured_seconds=measured_seconds,
        passes_per_second=cal.passes_per_second, calibration=str(cal.path.name),
        unknown=list(dict.fromkeys([*cell.unknown, *est.problems])),
    )


__all__ = [
    "BACKWARD_PASSES",
    "Calibration",
    "CalibrationError",
    "CellEstimate",
    "CurveCost",
    "ModelEstimate",
    "PlanEstimate",
    "calibrate_model",
    "calibration_path",
    "estimate_plan",
    "find_calibration",
    "image_shape_of",
    "machine_fingerprint",
    "planned_metric_passes",
    "planned_passes_per_map",
    "read_calibration",
    "record_estimate",
]
