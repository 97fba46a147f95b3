"""The stage graph of a cell, declared once: what each stage needs, and how to compute it.

::

    dataset -> model (train + test evaluation) -> heatmaps -> curves (order, perturbation) -> metrics

:data:`STAGE_GRAPH` is the only place that says which stage feeds which. Every executor
walks it, none spells out the order itself:

* :meth:`StageGraph.cell_jobs` expands the graph for one :class:`~bench.pipeline.CellTask`
  into :class:`Job` s (one per stage instance: one ``curves`` job per (order, perturbation)
  the plan's metrics read in that cell, none when they read none; a curves job's
  ``perturbation`` is the curves', which is the cell's unless a metric asks for curves under
  another one, and then the job is shared with the cell whose perturbation that is), in
  dependency order;
  :meth:`StageGraph.grid_jobs` gives the jobs of many cells with the shared ones (the
  dataset, a model, a model's heatmaps) once;
* :meth:`StageGraph.walk` computes the jobs of a cell in order into a typed
  :class:`CellArtifacts` (the local executor, and the cached-only probe "is this cell
  done?");
* :meth:`StageGraph.compute` computes one job, its upstream read from the cache (what a
  worker of a distributed executor runs once the job's dependencies have finished);
* a ``shardable`` stage (the curves) may be computed in image shards
  (:meth:`StageGraph.compute_shard`) and merged (:meth:`StageGraph.merge_shards`) into
  exactly the stage's result.

A job's ``id`` is unique within a grid, and the same whichever cell asks for it. A job
that raises becomes a :class:`CellFailure` carrying the stage's ``label`` (the
``stage`` a failed :class:`~bench.pipeline.record.CellRecord` names: ``dataset``, ``train``,
``explain``, ``evaluate``) and the job's id. The ``final`` stage (the metrics) is part of
the record: an executor may compute it elsewhere and hand its artifact over, or leave it to
where the record is written (:meth:`bench.pipeline.RunContext.finish_cell`).

Curves under a perturbation other than the cell's exist only for the metrics that asked for
them: when such a job fails, the walk goes on, and only those metrics fail (with the reason).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

from bench.pipeline.artifacts import (
    CurvesArtifact,
    DatasetArtifact,
    HeatmapsArtifact,
    MetricsArtifact,
    ModelArtifact,
)
from bench.pipeline.plan import CellTask, Plan
from bench.pipeline.stages import Stages, cell_curves, error_text
from bench.plugin.specs import curve_key

#: The fields of a :class:`~bench.pipeline.CellTask` a stage's scope may name, and ``order``.
SCOPE_FIELDS: tuple[str, ...] = ("dataset", "model", "explainer", "perturbation", "order")


class CellFailure(Exception):
    """A stage of a cell failed: ``stage`` is its label, ``exc`` the error, ``job`` the job id."""

    def __init__(self, stage: str, exc: BaseException, job: str = ""):
        super().__init__(f"{stage}: {exc}")
        self.stage = stage
        self.exc = exc
        self.job = job


@contextmanager
def stage_guard(label: str, job: str = "") -> Iterator[None]:
    """Turn any error (a plugin's) inside the block into a :class:`CellFailure` at ``label``.

    Ctrl-C and SystemExit pass; a CellFailure raised deeper keeps its own stage.
    """
    try:
        yield
    except (KeyboardInterrupt, SystemExit, CellFailure):
        raise
    except BaseException as exc:  # noqa: BLE001 - a failing plugin fails only its cell
        raise CellFailure(label, exc, job) from exc


@dataclass(frozen=True)
class Job:
    """One instance of a stage: the stage's name and the scope fields that identify it.

    Fields outside the stage's scope are ``""``, so the jobs two cells share are equal.
    """

    stage: str
    dataset: str = ""
    model: str = ""
    explainer: str = ""
    perturbation: str = ""
    order: str = ""

    @property
    def id(self) -> str:
        """``stage[field=value,...]`` over the scope fields (unique within a grid)."""
        parts = [f"{f}={getattr(self, f)}" for f in SCOPE_FIELDS if getattr(self, f)]
        return f"{self.stage}[{','.join(parts)}]"

    @property
    def task(self) -> CellTask:
        """The cell this job belongs to (fields outside its scope empty)."""
        return CellTask(self.dataset, self.model, self.explainer, self.perturbation)

    def to_dict(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Job:
        return cls(**{f.name: str(d.get(f.name, "")) for f in fields(cls)})


@dataclass
class CellArtifacts:
    """What the stages of one cell produced so far (typed: one attribute per stage).

    ``curves`` by name: the bare order (``morf``) under the cell's perturbation,
    ``<order>@<perturbation>`` under another one a metric asked for
    (:func:`bench.plugin.specs.curve_key`). ``failure`` is the :class:`CellFailure` that
    stopped a :meth:`StageGraph.walk`, if any; ``curve_failures`` the curves under another
    perturbation that failed (name -> failure), which stop only the metrics reading them.
    """

    task: CellTask
    dataset: DatasetArtifact | None = None
    model: ModelArtifact | None = None
    heatmaps: HeatmapsArtifact | None = None
    curves: dict[str, CurvesArtifact] = field(default_factory=dict)
    metrics: MetricsArtifact | None = None
    failure: CellFailure | None = None
    curve_failures: dict[str, CellFailure] = field(default_factory=dict)

    def slot(self, job: Job) -> str:
        """The name a per-curve job's artifact has in this cell (``morf``, ``morf@<perturbation>``)."""
        return curve_key(job.order, job.perturbation, self.task.perturbation)

    def put(self, node: StageNode, job: Job, artifact: Any) -> None:
        if node.per_order:
            getattr(self, node.name)[self.slot(job)] = artifact
        else:
            setattr(self, node.name, artifact)

    def get(self, node: StageNode, job: Job) -> Any:
        value = getattr(self, node.name)
        return value.get(self.slot(job)) if node.per_order else value


Compute = Callable[[Stages, Job, CellArtifacts], Any]


@dataclass(frozen=True)
class StageNode:
    """One stage of the graph.

    ``needs``: the stages whose artifacts ``compute`` reads (declared before it);
    ``scope``: the cell fields (and ``order``) one instance is per; ``label``: the stage a
    failure is recorded at; ``per_order``: one instance per curve (order, perturbation) the
    cell's metrics read (:func:`bench.pipeline.stages.cell_curves`);
    ``uses_model``: it runs the model (an executor may give it an accelerator);
    ``final``: computed where the cell's record is written; ``shardable``: ``shard`` /
    ``merge`` compute it in image shards (the images of the ``images_from`` stage) and
    merge them into its result.
    """

    name: str
    label: str
    needs: tuple[str, ...]
    scope: tuple[str, ...]
    compute: Compute
    description: str = ""
    per_order: bool = False
    uses_model: bool = False
    final: bool = False
    shardable: bool = False
    images_from: str = ""
    shard: Callable[[Stages, Job, CellArtifacts, int, int], Any] | None = None
    merge: Callable[[Stages, Job, CellArtifacts, Sequence[Any]], Any] | None = None


class StageGraph:
    """The stages of a cell and their dependencies (see the module docs)."""

    def __init__(self, nodes: Iterable[StageNode]):
        self.nodes: tuple[StageNode, ...] = tuple(nodes)
        seen: set[str] = set()
        for node in self.nodes:
            if node.name in seen:
                raise ValueError(f"stage {node.name!r} is declared twice")
            unknown = [n for n in node.needs if n not in seen]
            if unknown:
                raise ValueError(f"stage {node.name!r} needs {unknown}, which are not declared before it")
            bad = [f for f in node.scope if f not in SCOPE_FIELDS]
            if bad:
                raise ValueError(f"stage {node.name!r}: scope fields {bad} are not in {SCOPE_FIELDS}")
            if node.shardable and (node.shard is None or node.merge is None or node.images_from not in node.needs):
                raise ValueError(f"stage {node.name!r} is shardable: give shard, merge and images_from (a need)")
            seen.add(node.name)
        self._by_name = {n.name: n for n in self.nodes}

    def __iter__(self) -> Iterator[StageNode]:
        return iter(self.nodes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    def node(self, name: str) -> StageNode:
        return self._by_name[name]

    # ---- expansion ------------------------------------------------------------------------
    def _job(self, node: StageNode, task: CellTask, order: str = "", perturbation: str = "") -> Job:
        values = {"dataset": task.dataset, "model": task.model, "explainer": task.explainer,
                  "perturbation": perturbation or task.perturbation, "order": order}
        return Job(stage=node.name, **{f: values[f] for f in node.scope})

    def _instances(self, node: StageNode, plan: Plan, task: CellTask) -> list[Job]:
        if node.per_order:
            return [self._job(node, task, order, perturbation) for order, perturbation in cell_curves(plan, task)]
        return [self._job(node, task)]

    def cell_jobs(self, plan: Plan, task: CellTask, *, final: bool = True) -> list[Job]:
        """The jobs of one cell in dependency order (without the final stage if not ``final``)."""
        return [job for node in self.nodes if final or not node.final
                for job in self._instances(node, plan, task)]

    def grid_jobs(self, plan: Plan, tasks: Iterable[CellTask], *, final: bool = False) -> list[Job]:
        """The jobs of many cells, each shared job once, in dependency order (stage by stage);
        the final stage's only with ``final``."""
        tasks = list(tasks)
        out: dict[str, Job] = {}
        for node in self.nodes:
            if node.final and not final:
                continue
            for task in tasks:
                for job in self._instances(node, plan, task):
                    out.setdefault(job.id, job)
        return list(out.values())

    def deps(self, plan: Plan, job: Job) -> list[Job]:
        """The jobs ``job`` reads directly (a per-order need: every order, or the job's own)."""
        node = self.node(job.stage)
        task = job.task
        out: list[Job] = []
        for need in node.needs:
            upstream = self.node(need)
            if upstream.per_order and node.per_order:
                out.append(self._job(upstream, task, job.order, job.perturbation))
            else:
                out.extend(self._instances(upstream, plan, task))
        return out

    def closure(self, plan: Plan, job: Job) -> list[Job]:
        """``job``'s upstream jobs (transitively) in dependency order, then ``job``."""
        found: dict[str, Job] = {}

        def visit(j: Job) -> None:
            for d in self.deps(plan, j):
                if d.id not in found:
                    visit(d)
            found.setdefault(j.id, j)

        visit(job)
        rank = {name: i for i, name in enumerate(self.names)}
        return sorted(found.values(), key=lambda j: rank[j.stage])

    # ---- computing --------------------------------------------------------------------------
    def walk(self, stages: Stages, task: CellTask, *, final: bool = True,
             failures: Mapping[str, BaseException] | None = None,
             computed: Mapping[str, Any] | None = None) -> CellArtifacts:
        """Compute the jobs of ``task`` in order; the first failure stops the walk.

        ``failures`` (job id -> error) are raised at their job, as if that stage had failed
        here, and ``computed`` (job id -> artifact) are used as they are: an executor that ran
        a job elsewhere reports its error or hands its artifact over this way. The returned
        artifacts hold what was computed and, if a stage failed, the :class:`CellFailure`
        (``.failure``). A per-curve job under another perturbation than the cell's that fails
        does not stop the walk: it is in ``.curve_failures`` and fails only the metrics that
        read it.
        """
        arts = CellArtifacts(task)
        try:
            for job in self.cell_jobs(stages.plan, task, final=final):
                node = self.node(job.stage)
                try:
                    with stage_guard(node.label, job.id):
                        if failures and job.id in failures:
                            raise failures[job.id]
                        if computed and job.id in computed:
                            arts.put(node, job, computed[job.id])
                            continue
                        arts.put(node, job, node.compute(stages, job, arts))
                except CellFailure as failure:
                    if node.per_order and job.perturbation != task.perturbation:
                        arts.curve_failures[arts.slot(job)] = failure
                        continue
                    raise
        except CellFailure as failure:
            arts.failure = failure
        return arts

    def _upstream(self, stages: Stages, job: Job) -> CellArtifacts:
        arts = CellArtifacts(job.task)
        for dep in self.closure(stages.plan, job)[:-1]:
            node = self.node(dep.stage)
            try:
                with stage_guard(node.label, dep.id):
                    arts.put(node, dep, node.compute(stages, dep, arts))
            except CellFailure as failure:  # curves under another perturbation: only its metrics fail
                if node.per_order and dep.perturbation != job.task.perturbation:
                    arts.curve_failures[arts.slot(dep)] = failure
                    continue
                raise
        return arts

    def compute(self, stages: Stages, job: Job) -> Any:
        """The artifact of ``job``, its upstream computed first (read from the cache when done).

        Raises :class:`CellFailure` (the failing stage's label and job id).
        """
        arts = self._upstream(stages, job)
        node = self.node(job.stage)
        with stage_guard(node.label, job.id):
            return node.compute(stages, job, arts)

    def images(self, stages: Stages, job: Job) -> int:
        """How many images a shardable ``job`` covers (those of its ``images_from`` stage)."""
        node = self.node(job.stage)
        source = self.node(node.images_from)
        arts = self._upstream(stages, job)
        return int(arts.get(source, job).n_images)

    def compute_shard(self, stages: Stages, job: Job, start: int, stop: int) -> Any:
        """The images ``start:stop`` of a shardable ``job`` (not stored: not the stage's result)."""
        node = self.node(job.stage)
        if not node.shardable or node.shard is None:
            raise ValueError(f"stage {job.stage!r} is not shardable")
        arts = self._upstream(stages, job)
        with stage_guard(node.label, job.id):
            return node.shard(stages, job, arts, int(start), int(stop))

    def merge_shards(self, stages: Stages, job: Job, shards: Sequence[Any]) -> Any:
        """``job``'s result from its shards (in any order; they must tile its images), stored."""
        node = self.node(job.stage)
        if not node.shardable or node.merge is None:
            raise ValueError(f"stage {job.stage!r} is not shardable")
        arts = self._upstream(stages, job)
        with stage_guard(node.label, job.id):
            return node.merge(stages, job, arts, list(shards))


def shard_bounds(n: int, shard_size: int) -> list[tuple[int, int]]:
    """Contiguous ``(start, stop)`` slices of ``n`` images, ``shard_size`` each (the last shorter)."""
    size = max(1, int(shard_size))
    return [(s, min(s + size, n)) for s in range(0, n, size)]


# ---- the stages -------------------------------------------------------------------------------
def _need(value: Any, what: str) -> Any:
    if value is None:  # a walk computes in order: only a broken graph gets here
        raise RuntimeError(f"the {what} artifact is missing")
    return value


def _dataset(stages: Stages, job: Job, arts: CellArtifacts) -> DatasetArtifact:
    return stages.dataset()


def _model(stages: Stages, job: Job, arts: CellArtifacts) -> ModelArtifact:
    return stages.model(job.model, _need(arts.dataset, "dataset"))


def _heatmaps(stages: Stages, job: Job, arts: CellArtifacts) -> HeatmapsArtifact:
    return stages.heatmaps(job.explainer, _need(arts.dataset, "dataset"), _need(arts.model, "model"))


def _curves(stages: Stages, job: Job, arts: CellArtifacts) -> CurvesArtifact:
    return stages.curves(job.perturbation, job.order, _need(arts.dataset, "dataset"),
                         _need(arts.model, "model"), _need(arts.heatmaps, "heatmaps"))


def _curves_shard(stages: Stages, job: Job, arts: CellArtifacts, start: int, stop: int) -> CurvesArtifact:
    return stages.curves(job.perturbation, job.order, _need(arts.dataset, "dataset"),
                         _need(arts.model, "model"), _need(arts.heatmaps, "heatmaps"), start=start, stop=stop)


def _curves_merge(stages: Stages, job: Job, arts: CellArtifacts, shards: Sequence[Any]) -> CurvesArtifact:
    return stages.merge_curves(job.perturbation, job.order, _need(arts.heatmaps, "heatmaps"), shards)


def _metrics(stages: Stages, job: Job, arts: CellArtifacts) -> MetricsArtifact:
    failed = {name: f"{f.stage}: {error_text(f.exc)}" for name, f in arts.curve_failures.items()}
    return stages.cell_metrics(arts.task, _need(arts.dataset, "dataset"), _need(arts.model, "model"),
                               _need(arts.heatmaps, "heatmaps"), arts.curves, curve_failures=failed)


#: The stage graph of a cell (see the module docs). Declared once; every executor walks it.
STAGE_GRAPH = StageGraph((
    StageNode(name="dataset", label="dataset", needs=(), scope=("dataset",), compute=_dataset,
              description="the dataset's splits (loaded once, cached)"),
    StageNode(name="model", label="train", needs=("dataset",), scope=("dataset", "model"), compute=_model,
              uses_model=True, description="the trained model and its test-split evaluation"),
    StageNode(name="heatmaps", label="explain", needs=("dataset", "model"),
              scope=("dataset", "model", "explainer"), compute=_heatmaps, uses_model=True,
              description="one explainer's maps of the correctly classified (sampled) test images"),
    StageNode(name="curves", label="evaluate", needs=("dataset", "model", "heatmaps"),
              scope=("dataset", "model", "explainer", "perturbation", "order"), compute=_curves,
              per_order=True, uses_model=True, shardable=True, images_from="heatmaps",
              shard=_curves_shard, merge=_curves_merge,
              description="f(x^(k)) along one region order under one perturbation (the (order, perturbation) "
                          "pairs the metrics read)"),
    StageNode(name="metrics", label="metrics", needs=("dataset", "model", "heatmaps", "curves"),
              scope=("dataset", "model", "explainer", "perturbation"), compute=_metrics, final=True,
              uses_model=True,
              description="every selected metric on the cell's declared inputs"),
))
