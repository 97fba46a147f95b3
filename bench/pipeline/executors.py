"""Executors are plugins: what they are given, and how a run finds the one it names.

An executor is registered through the ``bench_register_executors`` hook
(:class:`bench.ExecutorSpec`), built from ``[executors.params.<name>]`` and selected by
``run.executor`` (``--executor``). Its ``run_cells(context, tasks)`` yields one
:class:`~bench.pipeline.record.CellRecord` per task (:class:`bench.plugin.protocols.Executor`); the
:class:`RunContext` it gets is all it needs, through public names only:

* ``context.graph`` is the stage graph (:data:`bench.pipeline.STAGE_GRAPH`):
  ``context.jobs(task)`` / ``context.grid_jobs(tasks)`` are the jobs to compute,
  ``context.deps(job)`` what a job reads;
* ``context.compute(job)`` computes one job in this process (its upstream from the cache);
  ``context.compute_shard`` / ``context.merge_shards`` the image shards of a shardable one;
* ``context.run_cell(task)`` runs a whole cell here and writes its record (the local
  executor is a loop over it);
* ``context.finish_cell(task, failures=...)`` writes the record of a cell whose jobs were
  computed elsewhere (read from the shared cache; the final metrics stage runs here), a
  job that failed elsewhere passed as ``failures[job.id]``;
* ``context.is_cached(task)``: every job of the cell is in the cache already.

A job computed in another process on the same plan (``make_plan(context.plan.config)``)
and the same cache folder (``context.stages.cache.root``) gives exactly the records a
local run writes: every stage is cached under a content key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import ConfigError
from bench.pipeline.cell import execute_cell
from bench.pipeline.graph import STAGE_GRAPH, Job, StageGraph
from bench.pipeline.plan import CellTask, Plan, check_executor_choice, log
from bench.pipeline.record import CellRecord
from bench.pipeline.stages import Stages
from bench.plugin.protocols import Executor
from bench.plugin.registry import registry


@dataclass
class RunContext:
    """What an executor gets: the plan, the cached stages, where records go (see the module docs)."""

    plan: Plan
    stages: Stages
    run_dir: Path
    run_id: str
    quiet: bool = False
    graph: StageGraph = field(default=STAGE_GRAPH)

    def log(self, message: str) -> None:
        log(message, quiet=self.quiet)

    # ---- the graph -------------------------------------------------------------------------
    def jobs(self, task: CellTask, *, final: bool = False) -> list[Job]:
        """The jobs of one cell in dependency order (without the final metrics stage by default)."""
        return self.graph.cell_jobs(self.plan, task, final=final)

    def grid_jobs(self, tasks: Iterable[CellTask], *, final: bool = False) -> list[Job]:
        """The jobs of many cells, the shared ones once, in dependency order (the final
        metrics stage's only with ``final``: :meth:`finish_cell` computes it otherwise)."""
        return self.graph.grid_jobs(self.plan, tasks, final=final)

    def deps(self, job: Job) -> list[Job]:
        return self.graph.deps(self.plan, job)

    # ---- computing -------------------------------------------------------------------------
    def compute(self, job: Job) -> Any:
        """Compute ``job`` here (its upstream read from the cache); raises ``CellFailure``."""
        return self.graph.compute(self.stages, job)

    def compute_shard(self, job: Job, start: int, stop: int) -> Any:
        return self.graph.compute_shard(self.stages, job, start, stop)

    def merge_shards(self, job: Job, shards: Sequence[Any]) -> Any:
        return self.graph.merge_shards(self.stages, job, shards)

    def run_cell(self, task: CellTask) -> CellRecord:
        """Run the whole cell in this process and write its record."""
        return execute_cell(self.stages, task, self.run_dir, self.run_id, graph=self.graph)

    def finish_cell(self, task: CellTask, *, failures: Mapping[str, BaseException] | None = None,
                    computed: Mapping[str, Any] | None = None, missing_hint: str = "") -> CellRecord:
        """Write the record of a cell whose jobs ran elsewhere: read from the cache, nothing
        recomputed but the final metrics not in the cache; ``failures[job.id]`` fails the cell
        at that job, ``computed[job.id]`` is a job's artifact computed elsewhere (the final
        stage's, typically). A result missing from the cache fails the cell with
        ``missing_hint`` in its message."""
        stages = self.stages.cached_view(missing_hint, compute_final=True)
        return execute_cell(stages, task, self.run_dir, self.run_id, failures=failures, computed=computed,
                            graph=self.graph)

    def is_cached(self, task: CellTask) -> bool:
        """Whether every job of ``task`` is in the cache, its metrics too (computes nothing)."""
        arts = self.graph.walk(self.stages.cached_view(), task)
        return arts.failure is None


__all__ = ["Executor", "RunContext", "create_executor", "executor_names", "get_executor"]


def executor_names() -> list[str]:
    """The registered executors."""
    return registry().names("executor")


def get_executor(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """The registered executor ``name`` built with ``params`` (a ConfigError with a did-you-mean
    for an unknown name; a BenchError with the install hint when a module it needs is missing)."""
    check_executor_choice(name, params or {})
    return create_executor(name, params or {})


def create_executor(name: str, params: Mapping[str, Any]) -> Any:
    """Construct executor ``name`` with ``params``; it must have ``run_cells``."""
    entry = registry().get("executor", name)
    executor = entry.load_factory()(**dict(params))
    if not callable(getattr(executor, "run_cells", None)):
        raise ConfigError(
            f"executor {name!r} from {entry.plugin.label} has no run_cells(context, tasks) method"
        )
    return executor
