"""Run the benchmark grid on a Ray cluster, with the same results as the local executor.

``bench run ... --executor ray [--ray-address ADDRESS]``: with no address a local
Ray instance is started (and stopped at the end); with ``auto`` or
``ray://host:port`` the run joins that cluster. ``[executors.params.ray]`` holds the
constructor's parameters (:class:`RayExecutor`).

The executor walks bench's stage graph (:data:`bench.pipeline.STAGE_GRAPH`); it does not
know the stages by name. The jobs of the grid (:meth:`bench.pipeline.RunContext.grid_jobs`:
the dataset once, each model once, each model x explainer's heatmaps once, one curves job
per cell and order) become Ray tasks, each submitted as soon as the jobs it reads have
finished; a job of a ``shardable`` stage (the curves) becomes shards of the images (its
``images_from`` stage says how many) and a merge. Every task is plain data in, plain data
out (the resolved config, the job, a content key or the shard's arrays): a worker rebuilds
the plan (:func:`bench.pipeline.make_plan`) and runs the very same stage code as the local
executor (:meth:`bench.pipeline.StageGraph.compute`), writing into the same
content-addressed cache (``results/cache``), so a later local run reuses Ray's work and
the other way round. The noise is keyed by image id (never by worker, batch or position),
so a shard gives exactly those rows of the whole stage's curves; the merge concatenates
them in image order and stores them under the key the local executor reads.

The final stage (the metrics) is a job too, computed on a worker (a metric may run the
model or the explainer again); its artifact comes back to the driver. The driver (the
``bench run`` process) checks cheaply which cells are already in the cache (those are
not submitted), and writes every cell record itself with
:meth:`bench.pipeline.RunContext.finish_cell`: the cell's stages read back from the
cache, the metrics handed over, exactly as the local executor does, so the leaderboard
cannot tell the executors apart.

Failures: a worker that dies is retried by Ray (``max_retries``); a plugin that raises is
not retried: the task returns the stage and the message, and every cell that reads the
job is recorded as failed with them, like in the local executor; the other cells finish.
"""

from __future__ import annotations

import math
import os
import re
import socket
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import ray

from bench.errors import BenchError, ConfigError, UnknownComponentError
from bench.pipeline import (
    STAGE_GRAPH,
    CellFailure,
    CellRecord,
    CellTask,
    Job,
    RunContext,
    Stages,
    error_text,
    make_plan,
    shard_bounds,
    write_record,
)
from bench.pipeline.store import Cache, content_key
from bench.plugin.registry import in_process_plugin_names, registry

#: Environment variable: GPUs declared per model task (when the config has no ``[run] ray_gpus``).
GPUS_ENV = "BENCH_RAY_GPUS"

#: Why a job's result can be missing from the cache after its task finished.
MISSING_HINT = (
    "its Ray task finished, so the results folder (--out) must be on a filesystem shared by the "
    "driver and every Ray node, at the same path"
)


class RemoteStageError(BenchError):
    """A stage that failed on a Ray worker; its text is the worker's error text."""


# --------------------------------------------------------------------------------------
# worker side
# --------------------------------------------------------------------------------------
_WORKER_STAGES: dict[str, Stages] = {}
_WORKER_THREADS: int | None = None


def _host() -> str:
    return socket.gethostname()


def _configure_worker(ctx: Mapping[str, Any]) -> None:
    """Per worker process: the driver's working folder (relative paths), TF thread count."""
    global _WORKER_THREADS
    cwd = ctx.get("cwd")
    if cwd and os.path.isdir(cwd) and os.getcwd() != cwd:
        os.chdir(cwd)
    threads = ctx.get("threads")
    if threads and _WORKER_THREADS is None:
        _WORKER_THREADS = int(threads)
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(max(1, int(threads)))
        except RuntimeError:  # TensorFlow already initialised in this worker
            pass


def worker_stages(ctx: Mapping[str, Any]) -> Stages:
    """The :class:`bench.pipeline.Stages` of ``ctx["config"]`` in this worker (memoised)."""
    _configure_worker(ctx)
    key = ctx["key"]
    stages = _WORKER_STAGES.get(key)
    if stages is None:
        try:
            plan = make_plan(ctx["config"])
        except (UnknownComponentError, ConfigError) as exc:
            raise BenchError(
                f"on Ray worker {_host()}: {exc} (a Ray worker sees only the plugins installed in "
                "its Python environment: install the plugin package on every node; plugins "
                "registered in-process with bench.register_plugin are run on the driver)"
            ) from exc
        stages = Stages(plan, cache=Cache(ctx["cache_root"]), quiet=True)
        _WORKER_STAGES.clear()  # one plan per worker at a time: models of older runs are released
        _WORKER_STAGES[key] = stages
    return stages


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def ray_error_text(exc: BaseException) -> tuple[str, str]:
    """(error class, first line of its message) of a Ray error, without colour codes."""
    cause = getattr(exc, "cause", None) if isinstance(exc, ray.exceptions.RayTaskError) else None
    if isinstance(cause, BaseException):
        exc = cause
    lines = [ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("ray::")] or [type(exc).__name__]
    return type(exc).__name__, lines[0][:500]


def _failure(job: str, stage: str, exc: BaseException) -> dict[str, Any]:
    return {
        "ok": False,
        "job": job,
        "stage": stage,
        "error": error_text(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:],
        "host": _host(),
    }


def _guarded(ctx: Mapping[str, Any], job_data: Mapping[str, Any],
             fn: Callable[[Stages, Job], dict[str, Any]]) -> dict[str, Any]:
    """Run ``fn(stages, job)`` on this worker; a failure becomes plain data naming its job and stage."""
    job = Job.from_dict(job_data)
    try:
        stages = worker_stages(ctx)
        return {"ok": True, "job": job.id, **fn(stages, job)}
    except (KeyboardInterrupt, SystemExit):
        raise
    except CellFailure as failure:
        return _failure(failure.job or job.id, failure.stage, failure.exc)
    except BaseException as exc:  # noqa: BLE001 - a failing plugin fails only its cells
        label = STAGE_GRAPH.node(job.stage).label
        return _failure(job.id, label, exc)


def job_stage(ctx: Mapping[str, Any], job: Mapping[str, Any]) -> dict[str, Any]:
    """Compute one job of the stage graph (its upstream read from the cache): its summary, and
    for the final stage (the metrics, part of the record) the artifact itself."""

    def compute(stages: Stages, j: Job) -> dict[str, Any]:
        artifact = STAGE_GRAPH.compute(stages, j)
        if STAGE_GRAPH.node(j.stage).final:
            return {**artifact.summary(), "artifact": artifact}
        return artifact.summary()

    return _guarded(ctx, job, compute)


def shard_stage(ctx: Mapping[str, Any], job: Mapping[str, Any], start: int, stop: int) -> dict[str, Any]:
    """The images ``start:stop`` of a shardable job (not stored on its own): the shard itself."""
    return _guarded(ctx, job, lambda stages, j: {
        "start": int(start), "stop": int(stop), "shard": STAGE_GRAPH.compute_shard(stages, j, start, stop)})


def merge_stage(ctx: Mapping[str, Any], job: Mapping[str, Any], *shards: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a job's shards in image order and store the result under the stage's key."""
    for shard in shards:
        if not shard.get("ok"):
            return dict(shard)

    def merge(stages: Stages, j: Job) -> dict[str, Any]:
        merged = STAGE_GRAPH.merge_shards(stages, j, [s["shard"] for s in shards])
        return {**merged.summary(), "shards": len(shards)}

    return _guarded(ctx, job, merge)


_job_task = ray.remote(job_stage)
_shard_task = ray.remote(shard_stage)
_merge_task = ray.remote(merge_stage)


# --------------------------------------------------------------------------------------
# driver side
# --------------------------------------------------------------------------------------
def _in_process_components(task: CellTask) -> list[str]:
    """Components of ``task`` registered with bench.register_plugin (invisible to workers)."""
    extra = in_process_plugin_names()
    if not extra:
        return []
    reg = registry()
    found = []
    for kind, name in (("dataset", task.dataset), ("model", task.model), ("explainer", task.explainer),
                       ("perturbation", task.perturbation)):
        try:
            if reg.get(kind, name).plugin.name in extra:
                found.append(f"{kind} {name!r}")
        except Exception:  # noqa: BLE001
            continue
    return found


class RayExecutor:
    """Runs the jobs of a plan's stage graph as Ray tasks (see the module docstring).

    Parameters
    ----------
    address:
        ``""`` starts a local Ray instance for the run; ``"auto"`` or
        ``"ray://host:port"`` joins a running cluster; ``None`` (default) takes
        ``[run] ray_address`` (``--ray-address``). If Ray is already initialised in this
        process, that connection is used as it is.
    num_cpus:
        CPUs declared by each task of a stage that runs the model (training, heatmaps,
        curve shards).
    num_gpus:
        GPUs declared by each of those tasks; ``None`` takes ``[run] ray_gpus`` from the
        config when it has that key, else the ``BENCH_RAY_GPUS`` environment variable, else 0.
    shard_images:
        Images per shard of a shardable stage (the curves); ``None`` splits each job over
        the cluster's task slots, with at least ``min_shard_images`` images per shard.
    min_shard_images:
        Lower bound of the automatic shard size (a shard loads the model once).
    max_retries:
        Ray retries of a task whose worker died (plugin exceptions are never retried).
    local_cpus:
        CPUs of the local Ray instance started when the address is empty (``None``: all).
    threads:
        TensorFlow intra-op threads per worker (``None``: TensorFlow's default).
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: float = 1.0,
        num_gpus: float | None = None,
        shard_images: int | None = None,
        min_shard_images: int = 8,
        max_retries: int = 3,
        local_cpus: int | None = None,
        threads: int | None = None,
    ):
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.shard_images = shard_images
        self.min_shard_images = min_shard_images
        self.max_retries = max_retries
        self.local_cpus = local_cpus
        self.threads = threads

    def get_params(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "shard_images": self.shard_images,
            "min_shard_images": self.min_shard_images,
            "max_retries": self.max_retries,
            "local_cpus": self.local_cpus,
            "threads": self.threads,
        }

    def validate(self) -> None:
        if self.shard_images is not None and (isinstance(self.shard_images, bool) or int(self.shard_images) < 1):
            raise ValueError(f"shard_images must be a positive integer or None, got {self.shard_images!r}")
        if float(self.num_cpus) <= 0:
            raise ValueError(f"num_cpus must be > 0, got {self.num_cpus!r}")
        if self.num_gpus is not None and float(self.num_gpus) < 0:
            raise ValueError(f"num_gpus must be >= 0, got {self.num_gpus!r}")
        if int(self.max_retries) < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries!r}")

    def target(self, cfg: Mapping[str, Any]) -> str:
        """The cluster address of a run: ``address``, else ``[run] ray_address`` ("" = a local instance)."""
        if self.address is not None:
            return str(self.address)
        return str((cfg.get("run") or {}).get("ray_address") or "")

    # ---- connection ---------------------------------------------------------------------
    def _connect(self, quiet: bool, address: str = "") -> bool:
        """Connect to (or start) Ray; True if this executor started it (and must shut it down)."""
        if ray.is_initialized():
            return False
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": not quiet}
        if address:
            kwargs["address"] = address
        else:
            kwargs["include_dashboard"] = False
            if self.local_cpus:
                kwargs["num_cpus"] = int(self.local_cpus)
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
            raise BenchError(
                f"cannot connect to {where}: {str(exc).rstrip('. ')}. Start one with `ray start --head` and pass "
                "--ray-address auto (on a cluster node) or --ray-address ray://HEAD:10001"
            ) from exc
        return True

    def _gpus(self, cfg: Mapping[str, Any]) -> float:
        """GPUs per model task: the executor's ``num_gpus``, else ``[run] ray_gpus``, else
        the ``BENCH_RAY_GPUS`` environment variable, else 0."""
        if self.num_gpus is not None:
            return float(self.num_gpus)
        value = cfg.get("run", {}).get("ray_gpus")
        if value is None:
            value = os.environ.get(GPUS_ENV, "0")
        try:
            gpus = float(value or 0)
        except ValueError as exc:
            raise ConfigError(f"{GPUS_ENV}={value!r}: expected a number of GPUs per task (e.g. 1 or 0.5)") from exc
        if gpus < 0:
            raise ConfigError(f"GPUs per Ray task must be >= 0, got {gpus}")
        return gpus

    def _shard_size(self, n: int, gpus: float) -> int:
        if self.shard_images:
            return int(self.shard_images)
        resources = ray.cluster_resources()
        if gpus > 0:
            slots = int(resources.get("GPU", 0) // gpus) or 1
        else:
            slots = int(resources.get("CPU", 1) // max(self.num_cpus, 1e-9)) or 1
        return max(int(self.min_shard_images), math.ceil(n / slots))

    # ---- the grid ----------------------------------------------------------------------
    def run_cells(self, context: RunContext, tasks: Sequence[CellTask]) -> Iterator[CellRecord]:
        cfg = context.plan.config
        graph = context.graph
        quiet = context.quiet
        address = self.target(cfg)

        def finish(task: CellTask, failure: Mapping[str, Any] | None = None) -> CellRecord:
            failures = None
            if failure is not None:
                job = failure["job"] if failure["job"] in cell_jobs.get(task.cell_id, ()) else failure["at"]
                failures = {job: RemoteStageError(failure["error"])}
            computed = {jid: results[jid]["artifact"] for jid in cell_jobs.get(task.cell_id, ())
                        if "artifact" in results.get(jid, {})}
            record = context.finish_cell(task, failures=failures, computed=computed, missing_hint=MISSING_HINT)
            if failure is not None and record.status == "failed" and failure.get("traceback"):
                record.traceback = f"[on Ray worker {failure.get('host', '?')}]\n{failure['traceback']}"
                write_record(context.run_dir, record)
            return record

        started = False
        pending: dict[Any, Job] = {}  # refs the driver waits for -> their job
        submitted: list[Any] = []  # every task ref, cancelled if the run stops early
        cell_jobs: dict[str, list[str]] = {}
        results: dict[str, dict[str, Any]] = {}
        try:
            # joining a cluster fails at once; a local instance is started only if there is work for it
            if address:
                started = self._connect(quiet, address)
            todo: list[CellTask] = []
            for task in tasks:
                local = _in_process_components(task)
                if local:
                    context.log(
                        f"[ray] {task.cell_id}: runs on the driver ({', '.join(local)} registered "
                        "in-process, not visible to Ray workers)"
                    )
                    yield context.run_cell(task)
                elif context.is_cached(task):
                    context.log(f"[ray] {task.cell_id}: in the cache, not submitted")
                    yield finish(task)
                else:
                    todo.append(task)
            if not todo:
                return

            started = self._connect(quiet, address) or started
            gpus = self._gpus(cfg)
            heavy = {"num_cpus": self.num_cpus, "num_gpus": gpus, "max_retries": self.max_retries,
                     "retry_exceptions": False}
            light = {"num_cpus": min(1.0, self.num_cpus), "max_retries": self.max_retries,
                     "retry_exceptions": False}
            root = str(context.stages.cache.root.resolve())
            ctx_ref = ray.put({"config": cfg, "key": content_key(cfg, root), "cache_root": root,
                               "cwd": os.getcwd(), "threads": self.threads})
            jobs = {j.id: j for j in context.grid_jobs(todo, final=True)}
            deps = {jid: [d.id for d in context.deps(j)] for jid, j in jobs.items()}
            for task in todo:
                cell_jobs[task.cell_id] = [j.id for j in context.jobs(task, final=True)]
            cells_of: dict[str, list[CellTask]] = {}
            for task in todo:
                for jid in cell_jobs[task.cell_id]:
                    cells_of.setdefault(jid, []).append(task)
            dependents: dict[str, list[str]] = {}
            for jid, upstream in deps.items():
                for d in upstream:
                    dependents.setdefault(d, []).append(jid)
            context.log(
                f"[ray] {len(todo)} cells ({len(jobs)} jobs) submitted to {self._describe(address)} "
                f"({len(tasks) - len(todo)} from the cache or the driver)"
            )
            failed: dict[str, dict[str, Any]] = {}
            done: set[str] = set()

            def submit(job: Job) -> None:
                node = graph.node(job.stage)
                options = heavy if node.uses_model else light
                data = job.to_dict()
                if node.shardable:
                    source = next(d for d in deps[job.id] if jobs[d].stage == node.images_from)
                    n = int(results[source]["n"])
                    size = self._shard_size(n, gpus)
                    bounds = shard_bounds(n, size)
                    shard_refs = [_shard_task.options(**heavy).remote(ctx_ref, data, s, e) for s, e in bounds]
                    ref = _merge_task.options(**light).remote(ctx_ref, data, *shard_refs)
                    submitted.extend(shard_refs)
                    context.log(f"[ray] {job.id}: {n} images in {len(bounds)} shard(s) of <= {size}")
                else:
                    ref = _job_task.options(**options).remote(ctx_ref, data)
                pending[ref] = job
                submitted.append(ref)

            for jid, job in jobs.items():
                if not deps[jid]:
                    submit(job)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                ref = ready[0]
                job = pending.pop(ref)
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    name, text = ray_error_text(exc)
                    out = {"ok": False, "job": job.id, "stage": graph.node(job.stage).label,
                           "error": f"Ray task ({job.stage}) failed after {self.max_retries} retries: {name}: {text}",
                           "traceback": _ANSI.sub("", str(exc))[-4000:], "host": "?"}
                if out.get("ok"):
                    results[job.id] = out
                    for d in dependents.get(job.id, ()):
                        if all(u in results for u in deps[d]):
                            submit(jobs[d])
                else:
                    failed[job.id] = {**out, "at": job.id}
                for task in cells_of.get(job.id, ()):
                    if task.cell_id in done:
                        continue
                    mine = cell_jobs[task.cell_id]
                    bad = next((jid for jid in mine if jid in failed), None)
                    if bad is not None:
                        done.add(task.cell_id)
                        yield finish(task, failed[bad])
                    elif all(jid in results for jid in mine):
                        done.add(task.cell_id)
                        yield finish(task)
        finally:
            if pending:  # stopped early (Ctrl-C, fail_fast, an error): nothing keeps running
                for ref in reversed(submitted):
                    try:
                        ray.cancel(ref)
                    except Exception:  # noqa: BLE001 - best effort
                        pass
            if started:
                ray.shutdown()

    def _describe(self, address: str) -> str:
        try:
            res = ray.cluster_resources()
            return (f"Ray ({address or 'local'}: {int(res.get('CPU', 0))} CPUs, "
                    f"{int(res.get('GPU', 0))} GPUs, {len(ray.nodes())} node(s))")
        except Exception:  # noqa: BLE001
            return f"Ray ({address or 'local'})"
