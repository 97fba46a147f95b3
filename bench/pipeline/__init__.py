"""The run machinery: plan, stage graph, stages, cell record, executors, the run itself.

Layout (each module imports only those above it)::

    record.py     the typed, versioned cell record (CellRecord, MetricResult, Timings)
    plan.py       the plan: config checked against the registry (Plan, CellTask, make_plan)
    artifacts.py  the typed artifacts of the stages (DatasetArtifact ... MetricsArtifact)
    stages.py     the cached stage functions (Stages)
    graph.py      the stage graph, declared once (STAGE_GRAPH, Job, CellArtifacts)
    cell.py       one cell: walk the graph, write its record (execute_cell)
    executors.py  what an executor gets (RunContext) and how a run finds it (get_executor)
    driver.py     the run (run, RunResult)

(The package is ``bench.pipeline``, not ``bench.run``: ``bench.run`` is the function.)
The names below are the public API executors and other plugins use; they are imported
lazily, so importing :mod:`bench.pipeline.record` does not import the rest.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    # record
    "CellRecord": "record", "MetricResult": "record", "Timings": "record", "RecordError": "record",
    "SCHEMA_VERSION": "record",
    # plan
    "CellTask": "plan", "Plan": "plan", "make_plan": "plan", "log": "plan", "check_image_fit": "plan",
    "dataset_params": "plan", "model_params": "plan", "validated_component": "plan",
    "declared_image_shape": "plan", "drop_unavailable_explainers": "plan", "check_executor": "plan",
    # artifacts
    "DatasetArtifact": "artifacts", "ModelArtifact": "artifacts", "HeatmapsArtifact": "artifacts",
    "CurvesArtifact": "artifacts", "MetricOutput": "artifacts", "MetricsArtifact": "artifacts",
    # stages
    "Stages": "stages", "NotCached": "stages", "STAGE_VERSION": "stages", "clear_memo": "stages",
    "stratified_sample": "stages", "error_text": "stages", "create_component": "stages",
    "component_params": "stages", "passes_per_map_of": "stages", "LazyExplainer": "stages",
    # graph
    "STAGE_GRAPH": "graph", "StageGraph": "graph", "StageNode": "graph", "Job": "graph",
    "CellArtifacts": "graph", "CellFailure": "graph", "stage_guard": "graph", "shard_bounds": "graph",
    # cell
    "execute_cell": "cell", "write_record": "cell",
    # executors
    "Executor": "executors", "RunContext": "executors", "get_executor": "executors",
    "create_executor": "executors", "executor_names": "executors",
    # the run
    "run": "driver", "RunResult": "driver", "plan_summary": "driver", "new_run_id": "driver",
    "Terminated": "driver",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bench.pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = sorted(_LAZY)
