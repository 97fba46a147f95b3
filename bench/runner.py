"""Compatibility: the run machinery lives in :mod:`bench.pipeline`.

``bench.runner`` keeps the names it had (the plan, the stages, the cell, the run);
new code imports them from :mod:`bench.pipeline`, whose docs describe the layout.
"""

from __future__ import annotations

from .pipeline.artifacts import (
    CurvesArtifact,
    DatasetArtifact,
    HeatmapsArtifact,
    MetricOutput,
    MetricsArtifact,
    ModelArtifact,
)
from .pipeline.cell import execute_cell, write_record
from .pipeline.driver import RunResult, Terminated, new_run_id, plan_summary, run
from .pipeline.executors import RunContext, get_executor
from .pipeline.graph import STAGE_GRAPH, CellFailure
from .pipeline.plan import (
    CellTask,
    Plan,
    check_image_fit,
    dataset_params,
    declared_image_shape,
    log,
    make_plan,
    model_params,
    validated_component,
)
from .pipeline.stages import (
    STAGE_VERSION,
    NotCached,
    Stages,
    clear_memo,
    error_text,
    stratified_sample,
)

__all__ = [
    "STAGE_GRAPH",
    "STAGE_VERSION",
    "CellFailure",
    "CellTask",
    "CurvesArtifact",
    "DatasetArtifact",
    "HeatmapsArtifact",
    "MetricOutput",
    "MetricsArtifact",
    "ModelArtifact",
    "NotCached",
    "Plan",
    "RunContext",
    "RunResult",
    "Stages",
    "Terminated",
    "check_image_fit",
    "clear_memo",
    "dataset_params",
    "declared_image_shape",
    "error_text",
    "execute_cell",
    "get_executor",
    "log",
    "make_plan",
    "model_params",
    "new_run_id",
    "plan_summary",
    "run",
    "stratified_sample",
    "validated_component",
    "write_record",
]
