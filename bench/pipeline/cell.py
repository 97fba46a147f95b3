"""One cell: walk the stage graph, then write its typed record and arrays.

:func:`execute_cell` is what every executor ends a cell with. It walks
:data:`bench.pipeline.STAGE_GRAPH` for the cell (a stage already computed elsewhere is
read from the cache), builds the :class:`~bench.pipeline.record.CellRecord` from the typed
artifacts and writes it under the run folder. A cell that raises, or whose component
returns a wrong shape, dtype or NaN, is recorded as failed with its stage and message;
it never raises for a plugin's error.
"""

from __future__ import annotations

import datetime as _dt
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import loading as config_mod
from bench.pipeline.estimate import record_estimate
from bench.pipeline.graph import STAGE_GRAPH, CellArtifacts, StageGraph
from bench.pipeline.plan import CellTask
from bench.pipeline.record import CellRecord, CostEstimate, Timings
from bench.pipeline.settings import (
    cell_settings,
    count_constant_heatmaps,
    explainer_params_key,
    settings_key,
    weights_hash,
)
from bench.pipeline.stages import (
    Stages,
    cell_curves,
    component_params,
    create_component,
    error_text,
)
from bench.pipeline.store import share_file, write_json, write_npz
from bench.plugin.names import safe_child
from bench.plugin.registry import registry
from bench.plugin.specs import curve_key


def now() -> str:
    """The current UTC time, ISO 8601 to the second (what records and manifests hold)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def write_record(run_dir: Path, record: CellRecord) -> Path:
    """Write ``cells/<cell>.json`` (the record's JSON form) under ``run_dir``."""
    path = safe_child(run_dir, "cells", f"{record.cell_id}.json")
    write_json(path, record.to_dict())
    return path


def new_record(stages: Stages, task: CellTask, run_id: str) -> CellRecord:
    """The record of ``task`` before any stage ran: names, curve settings, metric params."""
    plan = stages.plan
    cfg = plan.config
    acfg = cfg["aopc"]
    grid = config_mod.grid_shape(acfg["grid"])
    orders = list(plan.orders)
    curves = [curve_key(o, p, task.perturbation) for o, p in cell_curves(plan, task)]
    return CellRecord(
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
                "curves": curves,
                "seed": cfg["run"]["seed"],
                "batch_size": acfg["batch_size"],
                "max_images": acfg["max_images"],
                "confidence": acfg["confidence"],
            },
            "metrics": {name: dict(cfg["metrics"]["params"].get(name, {})) for name in plan.metrics},
        },
        orders=orders,
    )


def execute_cell(
    stages: Stages, task: CellTask, run_dir: Path, run_id: str, *,
    failures: Mapping[str, BaseException] | None = None, computed: Mapping[str, Any] | None = None,
    graph: StageGraph = STAGE_GRAPH,
) -> CellRecord:
    """Run one cell and write its record (and arrays) under ``run_dir``. Never raises for plugin errors.

    The stages are those of ``graph`` (:meth:`bench.pipeline.StageGraph.walk`): dataset ->
    model -> heatmaps -> curves (the orders the plan's metrics need) -> metrics (each gets
    only its declared inputs). ``failures`` (job id -> error) fail the cell at that job, as
    if its stage had raised here, and ``computed`` (job id -> artifact) are used as they
    are (an executor that ran a job elsewhere passes its error or its artifact). A
    metric that raises or returns a wrong shape fails only itself; a metric whose declared
    mask the dataset lacks is skipped with the reason; the cell stays ok. Writes
    ``cells/<cell>.json`` (:class:`bench.pipeline.record.CellRecord`), ``curves/``, ``heatmaps/`` and
    ``metrics/<cell>.npz`` (per-image columns as ``<metric>/<column>``, with ``ids``).
    """
    record = new_record(stages, task, run_id)
    arts = graph.walk(stages, task, failures=failures, computed=computed)
    facts = fill_record(record, stages, arts)
    if arts.failure is None:
        write_arrays(run_dir, record, arts, cache_file=stages.cache_file("heatmaps", arts.heatmaps.key, ".npz")
                     if arts.heatmaps is not None and arts.heatmaps.key else None)
    else:
        failure = arts.failure
        record.status = "failed"
        record.stage = failure.stage
        record.error = error_text(failure.exc)
        record.traceback = "".join(
            traceback.format_exception(type(failure.exc), failure.exc, failure.exc.__traceback__)
        )[-4000:]
    cfg = stages.plan.config
    record.settings = cell_settings(
        record.params,
        dataset_fingerprint=facts.get("dataset_fingerprint"),
        weights_hash=facts.get("weights_hash"),
        training=cfg["training"],
        bootstrap=cfg["aopc"]["bootstrap"],
    )
    record.settings_key = settings_key(record.settings)
    record.explainer_params_key = explainer_params_key(record.params.get("explainer"))
    record.estimate = predicted_cost(stages, task, record, arts)
    record.finished = now()
    write_record(run_dir, record)
    return record


def predicted_cost(stages: Stages, task: CellTask, record: CellRecord, arts: CellArtifacts) -> CostEstimate | None:
    """The cell's predicted cost beside its measured one, when its model has a calibration on this
    machine (:func:`bench.pipeline.estimate.record_estimate`); never fails the cell."""
    if not record.ok or arts.dataset is None:
        return None
    try:
        shape = tuple(int(v) for v in arts.dataset.splits.image_shape)[:2]
        return record_estimate(stages.plan, task, record, (shape[0], shape[1]))
    except Exception as exc:  # noqa: BLE001 - an estimate is a note beside the result, never its failure
        import warnings

        warnings.warn(f"cell {task.cell_id}: its predicted cost could not be computed ({error_text(exc)}); "
                      "the record has measured times only", stacklevel=2)
        return None


def fill_record(record: CellRecord, stages: Stages, arts: CellArtifacts) -> dict[str, Any]:
    """Copy what the artifacts hold into ``record``; returns the settings inputs not in its params."""
    task = arts.task
    cfg = stages.plan.config
    reg = registry()
    facts: dict[str, Any] = {}
    data, model, heat = arts.dataset, arts.model, arts.heatmaps
    if data is not None:
        record.params["dataset"] = data.params
        facts["dataset_fingerprint"] = getattr(data.splits, "fingerprint", None)
        record.provenance["dataset"] = reg.get("dataset", task.dataset).provenance()
    if model is not None:
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
        if heat is None and data is not None:
            record.n_images = int(len(stages.explained_subset(data, model)))
    if heat is None:
        return facts
    record.n_images = heat.n_images
    record.params["explainer"] = heat.params
    record.provenance["explainer"] = reg.get("explainer", stages.plan.registered_explainer(task.explainer)).provenance()
    record.provenance["perturbation"] = reg.get("perturbation", task.perturbation).provenance()
    record.keys["heatmaps"] = heat.key
    record.constant_heatmaps = count_constant_heatmaps(heat.heatmaps)
    timings = Timings(explain_seconds=heat.seconds, explain_maps=heat.n_images, passes_per_map=heat.passes_per_map)
    for name, curves in arts.curves.items():  # name: the order, or order@perturbation (another one's)
        if curves.perturbation == task.perturbation:
            record.params["perturbation"] = curves.params
            record.strategy = curves.strategy
        else:  # curves a metric asked for under another perturbation: which, with what parameters
            record.params.setdefault("curves", {})[name] = {"perturbation": curves.perturbation,
                                                            "order": curves.order, "params": dict(curves.params)}
            record.provenance.setdefault("curve_perturbations", {})[curves.perturbation] = reg.get(
                "perturbation", curves.perturbation).provenance()
            record.strategy = record.strategy or curves.strategy
        record.strategy_info[name] = curves.strategy_info
        timings.evaluate_seconds += curves.seconds
        timings.forward_passes += curves.forward_passes
        record.keys[f"curves:{name}"] = curves.key
    if "perturbation" not in record.params:  # no metric reads curves: the perturbation's params, for the settings
        pparams = dict(cfg["perturbations"]["params"].get(task.perturbation, {}))
        try:
            record.params["perturbation"] = component_params(
                create_component("perturbation", task.perturbation, pparams)) or pparams
        except Exception:  # noqa: BLE001 - the settings then hold the given params
            record.params["perturbation"] = pparams
    if arts.metrics is not None:
        for name, result in arts.metrics.results.items():
            record.metrics[name] = result
            record.params["metrics"][name] = result.params
            record.provenance.setdefault("metrics", {})[name] = reg.get("metric", name).provenance()
        timings.metrics_seconds = arts.metrics.seconds
        # what each metric cost: its own seconds and forward passes (as it reports them), and
        # those of the curves it reads; kept beside the timings (``metric_timings`` in the JSON)
        record.extra[METRIC_TIMINGS] = {name: dict(cost) for name, cost in arts.metrics.costs.items()}
    record.timings = timings
    return facts


#: The key of a record's JSON holding each metric's cost (:meth:`bench.pipeline.MetricOutput.cost`).
METRIC_TIMINGS = "metric_timings"


def metric_timings(record: CellRecord) -> dict[str, dict[str, Any]]:
    """Each metric's cost on a cell (seconds, forward passes, those of the curves it reads)."""
    value = record.extra.get(METRIC_TIMINGS)
    return {str(k): dict(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def write_arrays(run_dir: Path, record: CellRecord, arts: CellArtifacts, *, cache_file: Path | None = None) -> None:
    """The cell's arrays under ``run_dir``: curves, metrics, heatmaps, the model's predictions.

    The heatmaps, the largest of them (a pixel-resolution method at 299 px: 470 maps, 168 MB),
    are stored once: the run's file is a hard link to the cache entry ``cache_file`` (the same
    arrays, ``ids`` and ``heatmaps`` at the explainer's own resolution, float32) where the
    filesystem allows it, a copy otherwise."""
    task, model, heat = arts.task, arts.model, arts.heatmaps
    if model is None or heat is None:
        return
    index = heat.index
    ids = heat.ids
    targets = model.predictions[index].astype(np.int64)
    labels = model.labels[index].astype(np.int64)
    record.heatmaps_file = f"heatmaps/{task.cell_id}.npz"
    record.metrics_file = f"metrics/{task.cell_id}.npz"
    record.curves_file = f"curves/{task.cell_id}.npz" if arts.curves else None
    if arts.curves:
        arrays: dict[str, np.ndarray] = {"ids": ids, "targets": targets, "labels": labels}
        for name, c in arts.curves.items():  # name: the order, or order@perturbation
            arrays[f"{name}_curves"] = c.curves
            arrays[f"{name}_per_image"] = c.per_image
            arrays[f"{name}_order"] = c.region_order
        write_npz(safe_child(run_dir, "curves", f"{task.cell_id}.npz"), **arrays)
    columns = arts.metrics.columns if arts.metrics is not None else {}
    write_npz(safe_child(run_dir, "metrics", f"{task.cell_id}.npz"), ids=ids, labels=labels,
              targets=targets, **columns)
    heat_file = safe_child(run_dir, "heatmaps", f"{task.cell_id}.npz")
    if not (cache_file is not None and cache_file.is_file() and _is_heatmaps_file(cache_file)
            and share_file(cache_file, heat_file)):
        write_npz(heat_file, ids=ids, heatmaps=np.asarray(heat.heatmaps, np.float32))
    write_json(safe_child(run_dir, "models", f"{task.model_id}.json"), {
        **dict(model.record),
        "predictions_file": f"models/{task.model_id}.npz",
    })
    write_npz(
        safe_child(run_dir, "models", f"{task.model_id}.npz"),
        ids=model.ids.astype(str), labels=model.labels, predictions=model.predictions,
    )


def _is_heatmaps_file(path: Path) -> bool:
    """Whether the cache entry at ``path`` holds exactly a heatmaps artifact (``ids``, ``heatmaps``).

    The entry is the one this cell's heatmaps key names, so it holds the maps the cell read from
    it or just wrote to it (atomically); only its members are checked, from the zip directory,
    without decompressing a pixel map (168 MB at 299 px)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            return sorted(zf.namelist()) == ["heatmaps.npy", "ids.npy"]
    except (OSError, zipfile.BadZipFile):
        return False
