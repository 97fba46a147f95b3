"""The local executor: every cell in this process, one after another, walking the stage graph."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from bench.pipeline import CellRecord, CellTask, RunContext


class LocalExecutor:
    """Runs the cells one after another in this process (:meth:`bench.pipeline.RunContext.run_cell`)."""

    def __init__(self) -> None:
        pass

    def get_params(self) -> dict[str, Any]:
        return {}

    def run_cells(self, context: RunContext, tasks: Sequence[CellTask]) -> Iterator[CellRecord]:
        for task in tasks:
            yield context.run_cell(task)
