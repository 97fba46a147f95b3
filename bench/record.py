"""Compatibility: the cell record lives in :mod:`bench.pipeline.record`."""

from __future__ import annotations

from .pipeline.record import (
    FIELD_NAMES,
    METRIC_STATUSES,
    SCHEMA_1_ABPC,
    SCHEMA_1_METRICS,
    SCHEMA_VERSION,
    CellRecord,
    MetricResult,
    RecordError,
    Timings,
)

__all__ = [
    "FIELD_NAMES",
    "METRIC_STATUSES",
    "SCHEMA_1_ABPC",
    "SCHEMA_1_METRICS",
    "SCHEMA_VERSION",
    "CellRecord",
    "MetricResult",
    "RecordError",
    "Timings",
]
