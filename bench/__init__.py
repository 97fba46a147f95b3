"""bench: a plugin-based benchmark harness for explanation methods on image classifiers.

Importing ``bench`` is cheap: TensorFlow is imported only when a component or
the engine needs it.
"""

from __future__ import annotations

from typing import Any

from bench.errors import (
    BenchError,
    ComponentOutputError,
    ConfigError,
    DataError,
    InvalidNameError,
    PluginConflictError,
    PluginError,
    UnknownComponentError,
    UnsafePathError,
    WeightsError,
)
from bench.plugin.hookspecs import hookimpl, hookspec
from bench.plugin.registry import create, register_plugin, registry, unregister_plugin
from bench.plugin.specs import (
    EXPLAINER_ROLES,
    ComponentSpec,
    DatasetSpec,
    ExecutorSpec,
    ExplainerSpec,
    MetricInputs,
    MetricSpec,
    ModelSpec,
    PerturbationSpec,
)

__version__ = "0.1.0"

_LAZY = {
    "KerasModel": ("bench.models", "KerasModel"),
    "CorruptFileError": ("bench.pipeline.store", "CorruptFileError"),
    "evaluate_aopc": ("bench.engine.curves", "evaluate_aopc"),
    "AOPCResult": ("bench.engine.curves", "AOPCResult"),
    "run": ("bench.pipeline.driver", "run"),
    "load_config": ("bench.config.loading", "load_config"),
    "Split": ("bench.data", "Split"),
    "DatasetSplits": ("bench.data", "DatasetSplits"),
    "TrainingConfig": ("bench.training", "TrainingConfig"),
    "TrainingReport": ("bench.training", "TrainingReport"),
    "train": ("bench.training", "train"),
    "evaluate_classification": ("bench.evaluation", "evaluate_classification"),
    "ClassificationReport": ("bench.evaluation", "ClassificationReport"),
    "format_report": ("bench.evaluation", "format_report"),
    "compute_heatmaps": ("bench.pipeline.explain", "compute_heatmaps"),
    "IncrementalForward": ("bench.engine.incremental", "IncrementalForward"),
    "predicted_gain": ("bench.engine.incremental", "predicted_gain"),
    "MetricData": ("bench.pipeline.metrics", "MetricData"),
    "CellRecord": ("bench.pipeline.record", "CellRecord"),
    "RunContext": ("bench.pipeline.executors", "RunContext"),
    "RunResult": ("bench.pipeline.driver", "RunResult"),
    "Leaderboard": ("bench.publish.leaderboard", "Leaderboard"),
    "Analysis": ("bench.publish.analysis", "Analysis"),
    "StatisticsOptions": ("bench.publish.analysis", "StatisticsOptions"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bench' has no attribute {name!r}")


__all__ = [
    "__version__",
    "hookimpl",
    "hookspec",
    "registry",
    "create",
    "register_plugin",
    "unregister_plugin",
    "run",
    "evaluate_aopc",
    "AOPCResult",
    "KerasModel",
    "load_config",
    "Split",
    "DatasetSplits",
    "TrainingConfig",
    "TrainingReport",
    "train",
    "evaluate_classification",
    "ClassificationReport",
    "format_report",
    "compute_heatmaps",
    "IncrementalForward",
    "predicted_gain",
    "ComponentSpec",
    "EXPLAINER_ROLES",
    "DatasetSpec",
    "ExecutorSpec",
    "ModelSpec",
    "ExplainerSpec",
    "PerturbationSpec",
    "MetricSpec",
    "MetricInputs",
    "MetricData",
    "CellRecord",
    "RunContext",
    "RunResult",
    "Leaderboard",
    "Analysis",
    "StatisticsOptions",
    "BenchError",
    "ConfigError",
    "DataError",
    "PluginError",
    "PluginConflictError",
    "UnknownComponentError",
    "WeightsError",
    "ComponentOutputError",
    "InvalidNameError",
    "UnsafePathError",
    "CorruptFileError",
]
