"""Run the benchmark grid on a Ray cluster, with the same results as the local executor.

``bench run ... --executor ray [--ray-address ADDRESS]``: with no address a local
Ray instance is started (and stopped at the end); with ``auto`` or
``ray://host:port`` the run joins that cluster.

The stages of :mod:`bench.runner` become Ray tasks with their dependencies::

    dataset split -> trained model (one per model) -> heatmaps (one per model x explainer)
        -> curve shards (slices of the explained images) -> merge (one per cell x order)
        -> metrics (in the driver, on the merged curves)

Every task is plain data in, plain data out: the resolved config, a few names and
content keys. A worker rebuilds the plan (:func:`bench.runner.make_plan`) and runs
the very same :class:`bench.runner.Stages` code as the local executor, writing
into the same content-addressed cache (``results/cache``), so a later local run
reuses Ray's work and the other way round. The AOPC stage is sharded by image:
the noise is keyed by image id (never by worker, batch or position), so a shard
gives exactly the per-image curves the whole cell gives; the merge concatenates
the shards in image order and stores them under the curves key the local executor
uses. Only the curve orders the selected metrics need are computed. The metrics
then run in the driver, on the merged curves, through the same
:func:`bench.runner.execute_cell` code as a local run (per-image values concatenate
across shards, so nothing metric-specific happens here).

The driver (the ``bench run`` process) checks cheaply which cells are already
in the cache (those are not submitted), and writes every cell record into the
run folder with :func:`bench.runner.execute_cell`, from the cache, exactly as the
local executor does: the leaderboard cannot tell the executors apart.

Failures: a worker that dies is retried by Ray (``max_retries``); a plugin that
raises is not retried: the task returns the stage and the message, and the cell
is recorded as failed with them, like in the local executor; the other cells
finish.
"""

from __future__ import annotations

import math
import os
import re
import socket
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import ray

from . import runner
from .errors import BenchError, ConfigError, UnknownComponentError
from .store import Cache, content_key

#: Environment variable: GPUs declared per model task (when the config has no ``[run] ray_gpus``).
GPUS_ENV = "BENCH_RAY_GPUS"

#: The stage names of :func:`bench.runner.execute_cell`, per task kind.
STAGE_OF = {"dataset": "dataset", "model": "train", "heatmaps": "explain", "shard": "evaluate", "merge": "evaluate"}


class RemoteStageError(BenchError):
    """A stage that failed on a Ray worker; its text is the worker's error text."""


# --------------------------------------------------------------------------------------
# worker side
# --------------------------------------------------------------------------------------
_WORKER_STAGES: dict[str, runner.Stages] = {}
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


def worker_stages(ctx: Mapping[str, Any]) -> runner.Stages:
    """The :class:`~bench.runner.Stages` of ``ctx["config"]`` in this worker (memoised)."""
    _configure_worker(ctx)
    key = ctx["key"]
    stages = _WORKER_STAGES.get(key)
    if stages is None:
        try:
            plan = runner.make_plan(ctx["config"])
        except (UnknownComponentError, ConfigError) as exc:
            raise BenchError(
                f"on Ray worker {_host()}: {exc} (a Ray worker sees only the plugins installed in "
                "its Python environment: install the plugin package on every node; plugins "
                "registered in-process with bench.register_plugin are run on the driver)"
            ) from exc
        stages = runner.Stages(plan, cache=Cache(ctx["cache_root"]), quiet=True)
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


def _failure(stage: str, exc: BaseException, **extra: Any) -> dict[str, Any]:
    return {
        "ok": False,
        "stage": stage,
        "error": runner._error_text(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:],
        "host": _host(),
        **extra,
    }


def _guarded(stage: str, fn: Any, **extra: Any) -> dict[str, Any]:
    """Run ``fn`` (which uses runner._stage for its inner stages); a failure becomes plain data."""
    try:
        return {"ok": True, **fn()}
    except (KeyboardInterrupt, SystemExit):
        raise
    except runner.CellFailure as failure:
        return _failure(failure.stage, failure.exc, **extra)
    except BaseException as exc:  # noqa: BLE001 - a failing plugin fails only its cell
        return _failure(stage, exc, **extra)


def _load(stages: runner.Stages, model_name: str) -> tuple[Any, Any, np.ndarray]:
    data = runner._stage("dataset", stages.dataset)
    model = runner._stage("train", lambda: stages.model(model_name, data))
    return data, model, stages.explained_subset(data, model)


def _model_stub(info: Mapping[str, Any], name: str) -> runner.ModelArtifact:
    """A ModelArtifact without the Keras model: enough for cache look-ups and merges."""
    return runner.ModelArtifact(
        model=None,
        key=info["key"],
        params={},
        record={"model": name},
        predictions=np.asarray(info["predictions"]),
        labels=np.asarray(info["labels"]),
        ids=np.asarray(info["ids"]),
    )


def dataset_stage(ctx: Mapping[str, Any]) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        stages = worker_stages(ctx)
        data = stages.dataset()
        return {"key": data.key}

    return _guarded("dataset", work)


def model_stage(ctx: Mapping[str, Any], name: str, upstream: Mapping[str, Any]) -> dict[str, Any]:
    """Train (or load) one model; returns its key and test predictions (plain data)."""
    if not upstream.get("ok"):
        return dict(upstream)

    def work() -> dict[str, Any]:
        stages = runner._stage("train", lambda: worker_stages(ctx))
        data, model, index = _load(stages, name)
        return {
            "key": model.key,
            "n": int(len(index)),
            "predictions": np.asarray(model.predictions),
            "labels": np.asarray(model.labels),
            "ids": np.asarray(model.ids).astype(str),
        }

    return _guarded("train", work)


def heatmaps_stage(
    ctx: Mapping[str, Any], model_name: str, explainer: str, model_info: Mapping[str, Any]
) -> dict[str, Any]:
    """Heatmaps of one explainer for the explained images of one model (cached)."""
    if not model_info.get("ok"):
        return dict(model_info)

    def work() -> dict[str, Any]:
        stages = runner._stage("explain", lambda: worker_stages(ctx))
        data, model, index = _load(stages, model_name)
        _, hkey, _, seconds = runner._stage(
            "explain", lambda: stages.heatmaps(explainer, data, model, index)
        )
        return {"key": hkey, "n": int(len(index)), "seconds": seconds}

    return _guarded("explain", work)


def shard_stage(
    ctx: Mapping[str, Any], task: Mapping[str, str], order: str, heat_info: Mapping[str, Any],
    start: int, stop: int,
) -> dict[str, Any]:
    """AOPC curves of the explained images ``start:stop`` of one cell (not cached on its own)."""
    if not heat_info.get("ok"):
        return dict(heat_info)

    def work() -> dict[str, Any]:
        stages = runner._stage("evaluate", lambda: worker_stages(ctx))
        data, model, index = _load(stages, task["model"])
        heatmaps, hkey, _, _ = runner._stage(
            "explain", lambda: stages.heatmaps(task["explainer"], data, model, index)
        )
        summary, arrays, _ = runner._stage(
            "evaluate",
            lambda: stages.curves(
                task["perturbation"], order, data, model, index[start:stop], heatmaps[start:stop], hkey,
                store=False,
            ),
        )
        return {
            "start": start,
            "stop": stop,
            "curves": arrays["curves"],
            "per_image": arrays["per_image"],
            "order": arrays["order"],
            "ids": np.asarray(arrays["ids"]).astype(str),
            "forward_passes": int(summary["forward_passes"]),
            "seconds": float(summary["seconds"]),
            "strategy": summary["strategy"],
        }

    return _guarded("evaluate", work, order=order)


def merge_shards(shards: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Concatenate shard results in image order (by their ``start``)."""
    if not shards:
        raise ValueError("no shards to merge")
    ordered = sorted(shards, key=lambda s: int(s["start"]))
    for a, b in zip(ordered, ordered[1:], strict=False):
        if int(a["stop"]) != int(b["start"]):
            raise ValueError(f"shards do not tile the images: {a['start']}:{a['stop']} then {b['start']}:{b['stop']}")
    return {
        "curves": np.concatenate([np.asarray(s["curves"], dtype=np.float32) for s in ordered]),
        "order": np.concatenate([np.asarray(s["order"]) for s in ordered]),
        "ids": np.concatenate([np.asarray(s["ids"]).astype(str) for s in ordered]),
        "forward_passes": sum(int(s["forward_passes"]) for s in ordered),
        "seconds": sum(float(s["seconds"]) for s in ordered),
        "strategy": str(ordered[0]["strategy"]),
        "start": int(ordered[0]["start"]),
        "stop": int(ordered[-1]["stop"]),
    }


def merged_evaluator(merged: Mapping[str, Any]) -> Any:
    """An ``evaluate_aopc`` stand-in returning the merged shards (ids checked)."""
    from .aopc import AOPCResult, aopc_from_curves
    from .config import grid_shape

    def evaluate(model: Any, images: Any, targets: Any, heatmaps: Any, *, ids: Any = None,
                 grid: Any = 9, order: str = "morf", seed: int = 0, **_: Any) -> AOPCResult:
        expected = np.asarray(ids).astype(str)
        got = np.asarray(merged["ids"]).astype(str)
        if expected.shape != got.shape or not np.array_equal(expected, got):
            raise BenchError(
                f"merged AOPC shards cover images {got[:5].tolist()}... but the cell explains "
                f"{expected[:5].tolist()}... ({len(got)} vs {len(expected)} images)"
            )
        curves = np.asarray(merged["curves"], dtype=np.float32)
        per_image = aopc_from_curves(curves)
        return AOPCResult(
            curves=curves,
            per_image=per_image,
            aopc=float(per_image.mean()) if len(per_image) else float("nan"),
            ci=(float("nan"), float("nan")),  # the stage computes the CI on the merged values
            order=np.asarray(merged["order"]),
            n=len(per_image),
            grid=grid_shape(grid),
            order_name=str(order),
            seed=int(seed),
            strategy=str(merged["strategy"]),
            forward_passes=int(merged["forward_passes"]),
            seconds=float(merged["seconds"]),
            ids=got,
        )

    return evaluate


def merge_stage(
    ctx: Mapping[str, Any], task: Mapping[str, str], order: str, model_info: Mapping[str, Any],
    heat_info: Mapping[str, Any], *shards: Mapping[str, Any],
) -> dict[str, Any]:
    """Merge a cell's shards in image order and store the curves stage result (cache)."""
    for upstream in (model_info, heat_info, *shards):
        if not upstream.get("ok"):
            return dict(upstream)

    def work() -> dict[str, Any]:
        stages = runner._stage("evaluate", lambda: worker_stages(ctx))
        data = runner._stage("dataset", stages.dataset)
        model = _model_stub(model_info, task["model"])
        index = stages.explained_subset(data, model)
        heatmaps, hkey, _, _ = runner._stage(
            "explain", lambda: stages.heatmaps(task["explainer"], data, model, index)
        )
        merged = merge_shards(list(shards))
        summary, _, _ = runner._stage(
            "evaluate",
            lambda: stages.curves(
                task["perturbation"], order, data, model, index, heatmaps, hkey,
                evaluator=merged_evaluator(merged),
            ),
        )
        return {"aopc": summary["aopc"], "n": summary["n"], "shards": len(shards)}

    return _guarded("evaluate", work, order=order)


_dataset_task = ray.remote(dataset_stage)
_model_task = ray.remote(model_stage)
_heatmaps_task = ray.remote(heatmaps_stage)
_shard_task = ray.remote(shard_stage)
_merge_task = ray.remote(merge_stage)


# --------------------------------------------------------------------------------------
# driver side
# --------------------------------------------------------------------------------------
class _DriverStages(runner.Stages):
    """Cache-only stages for writing cell records; a remote failure is re-raised at its stage."""

    def __init__(self, base: runner.Stages):
        super().__init__(base.plan, cache=base.cache, quiet=True, cached_only=True)
        self.failures: dict[str, RemoteStageError] = {}

    def _check(self, stage: str) -> None:
        if stage in self.failures:
            raise self.failures[stage]

    def _cached(self, stage: str, fn: Any) -> Any:
        try:
            return fn()
        except runner.NotCached as exc:
            raise RemoteStageError(
                f"the {exc.stage} result {exc.key} is not in {self.cache.root} after its Ray task "
                "finished: the results folder (--out) must be on a filesystem shared by the driver "
                "and every Ray node, at the same path"
            ) from exc

    def dataset(self) -> runner.DatasetArtifact:
        self._check("dataset")
        return self._cached("dataset", super().dataset)

    def model(self, name: str, data: runner.DatasetArtifact) -> runner.ModelArtifact:
        self._check("train")
        return self._cached("model", lambda: super(_DriverStages, self).model(name, data))

    def heatmaps(self, name: str, data: Any, model: Any, index: np.ndarray) -> Any:
        self._check("explain")
        return self._cached("heatmaps", lambda: super(_DriverStages, self).heatmaps(name, data, model, index))

    def curves(self, name: str, order: str, *args: Any, **kwargs: Any) -> Any:
        self._check(f"evaluate:{order}")
        self._check("evaluate")
        return self._cached("curves", lambda: super(_DriverStages, self).curves(name, order, *args, **kwargs))

    def metric(self, name: str, inputs: Mapping[str, Any], **kwargs: Any) -> Any:
        """Metrics run here, in the driver, on the merged curves: the same code as a local run."""
        kwargs["cached_only"] = False
        return super().metric(name, inputs, **kwargs)


def is_cached(probe: runner.Stages, task: runner.CellTask) -> bool:
    """Whether every stage of ``task`` is in the cache (``probe`` has ``cached_only=True``)."""
    try:
        data = probe.dataset()
        model = probe.model(task.model, data)
        index = probe.explained_subset(data, model)
        if len(index) == 0:
            return True  # nothing to compute: the record says so
        heatmaps, hkey, _, _ = probe.heatmaps(task.explainer, data, model, index)
        for order in probe.plan.orders:
            probe.curves(task.perturbation, order, data, model, index, heatmaps, hkey)
        return True
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # noqa: BLE001 - NotCached, or an error a worker will report
        return False


def _in_process_components(task: runner.CellTask) -> list[str]:
    """Components of ``task`` registered with bench.register_plugin (invisible to workers)."""
    from . import plugins as plugins_mod

    extra = plugins_mod.in_process_plugin_names()
    if not extra:
        return []
    reg = plugins_mod.registry()
    found = []
    for kind, name in (("dataset", task.dataset), ("model", task.model), ("explainer", task.explainer),
                       ("perturbation", task.perturbation)):
        try:
            if reg.get(kind, name).plugin.name in extra:
                found.append(f"{kind} {name!r}")
        except Exception:  # noqa: BLE001
            continue
    return found


def shard_bounds(n: int, shard_size: int) -> list[tuple[int, int]]:
    """Contiguous ``(start, stop)`` slices of ``n`` images, ``shard_size`` each (the last shorter)."""
    size = max(1, int(shard_size))
    return [(s, min(s + size, n)) for s in range(0, n, size)]


class RayExecutor:
    """Runs the cells of a plan as Ray tasks (see the module docstring).

    Parameters
    ----------
    address:
        ``""`` starts a local Ray instance for the run; ``"auto"`` or
        ``"ray://host:port"`` joins a running cluster. If Ray is already
        initialised in this process, that connection is used as it is.
    num_cpus:
        CPUs declared by each model task (training, heatmaps, AOPC shards).
    num_gpus:
        GPUs declared by each model task; ``None`` takes ``[run] ray_gpus`` from the
        config when it has that key, else the ``BENCH_RAY_GPUS`` environment variable, else 0.
    shard_images:
        Images per AOPC shard; ``None`` splits each cell over the cluster's task
        slots, with at least ``min_shard_images`` images per shard.
    min_shard_images:
        Lower bound of the automatic shard size (a shard loads the model once).
    max_retries:
        Ray retries of a task whose worker died (plugin exceptions are never retried).
    local_cpus:
        CPUs of the local Ray instance started when ``address`` is empty (``None``: all).
    threads:
        TensorFlow intra-op threads per worker (``None``: TensorFlow's default).
    """

    name = "ray"

    def __init__(
        self,
        address: str = "",
        *,
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

    # ---- connection ---------------------------------------------------------------------
    def _connect(self, quiet: bool) -> bool:
        """Connect to (or start) Ray; True if this executor started it (and must shut it down)."""
        if ray.is_initialized():
            return False
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": not quiet}
        if self.address:
            kwargs["address"] = self.address
        else:
            kwargs["include_dashboard"] = False
            if self.local_cpus:
                kwargs["num_cpus"] = int(self.local_cpus)
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
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
    def run_cells(
        self, stages: runner.Stages, tasks: list[runner.CellTask], run_dir: Path, run_id: str
    ) -> Iterator[runner.CellRecord]:
        plan = stages.plan
        cfg = plan.config
        quiet = stages.quiet
        driver = _DriverStages(stages)

        def finish(task: runner.CellTask, failure: Mapping[str, Any] | None = None) -> runner.CellRecord:
            driver.failures = {}
            if failure is not None:
                where = failure["stage"]
                if where == "evaluate" and failure.get("order"):
                    where = f"evaluate:{failure['order']}"
                driver.failures[where] = RemoteStageError(failure["error"])
            record = runner.execute_cell(driver, task, run_dir, run_id)
            if failure is not None and record.status == "failed" and failure.get("traceback"):
                record.traceback = f"[on Ray worker {failure.get('host', '?')}]\n{failure['traceback']}"
                runner.write_record(run_dir, record)
            return record

        started = False
        pending: dict[Any, tuple[str, Any]] = {}  # refs the driver waits for
        submitted: list[Any] = []  # every task ref, cancelled if the run stops early
        try:
            # joining a cluster fails at once; a local instance is started only if there is work for it
            if self.address:
                started = self._connect(quiet)
            # cells already in the cache, and cells that must stay in this process
            probe = runner.Stages(plan, cache=stages.cache, quiet=True, cached_only=True)
            todo: list[runner.CellTask] = []
            for task in tasks:
                local = _in_process_components(task)
                if local:
                    runner.log(
                        f"[ray] {task.cell_id}: runs on the driver ({', '.join(local)} registered "
                        "in-process, not visible to Ray workers)",
                        quiet=quiet,
                    )
                    yield runner.execute_cell(stages, task, run_dir, run_id)
                elif is_cached(probe, task):
                    runner.log(f"[ray] {task.cell_id}: in the cache, not submitted", quiet=quiet)
                    yield finish(task)
                else:
                    todo.append(task)
            if not todo:
                return

            started = self._connect(quiet) or started
            gpus = self._gpus(cfg)
            heavy = {"num_cpus": self.num_cpus, "num_gpus": gpus, "max_retries": self.max_retries,
                     "retry_exceptions": False}
            light = {"num_cpus": min(1.0, self.num_cpus), "max_retries": self.max_retries,
                     "retry_exceptions": False}
            ctx = {
                "config": cfg,
                "key": content_key(cfg, str(stages.cache.root.resolve())),
                "cache_root": str(stages.cache.root.resolve()),
                "cwd": os.getcwd(),
                "threads": self.threads,
            }
            ctx_ref = ray.put(ctx)
            runner.log(
                f"[ray] {len(todo)} cells submitted to {self._describe()} "
                f"({len(tasks) - len(todo)} from the cache)",
                quiet=quiet,
            )
            dataset_ref = _dataset_task.options(**light).remote(ctx_ref)
            by_model: dict[str, list[runner.CellTask]] = {}
            for task in todo:
                by_model.setdefault(task.model, []).append(task)
            for name in by_model:
                ref = _model_task.options(**heavy).remote(ctx_ref, name, dataset_ref)
                pending[ref] = ("model", name)
                submitted.append(ref)
            waiting: dict[str, set[str]] = {}  # cell_id -> orders not merged yet
            cells = {t.cell_id: t for t in todo}
            done: set[str] = set()
            orders = list(plan.orders)  # the curves the selected metrics need

            def failure_of(kind: str, exc: BaseException, order: str | None = None) -> dict[str, Any]:
                name, text = ray_error_text(exc)
                error = f"Ray task ({kind}) failed after {self.max_retries} retries: {name}: {text}"
                return {"ok": False, "stage": STAGE_OF[kind], "error": error, "order": order,
                        "traceback": _ANSI.sub("", str(exc))[-4000:]}

            def culprit(refs: Mapping[str, Any], exc: BaseException) -> tuple[str, BaseException]:
                """The upstream task (model, heatmaps) whose Ray-level failure a merge inherited."""
                for kind in ("model", "heatmaps"):
                    try:
                        ray.get(refs[kind], timeout=0)
                    except ray.exceptions.GetTimeoutError:
                        continue
                    except ray.exceptions.RayError as upstream:
                        return kind, upstream
                return "merge", exc

            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                ref = ready[0]
                kind, what = pending.pop(ref)
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    if kind == "merge":
                        out = failure_of(*culprit(what[2], exc), what[1])
                    else:
                        out = failure_of(kind, exc)
                if kind == "model":
                    model_cells = [t for t in by_model[what] if t.cell_id not in done]
                    if not out["ok"] or out["n"] == 0:
                        for task in model_cells:
                            done.add(task.cell_id)
                            yield finish(task, None if out["ok"] else out)
                        continue
                    size = self._shard_size(out["n"], gpus)
                    bounds = shard_bounds(out["n"], size)
                    model_ref = ray.put(out)
                    heat_refs: dict[str, Any] = {}
                    for task in model_cells:
                        if task.explainer not in heat_refs:
                            heat_refs[task.explainer] = _heatmaps_task.options(**heavy).remote(
                                ctx_ref, what, task.explainer, model_ref
                            )
                            submitted.append(heat_refs[task.explainer])
                            if not orders:  # no metric reads curves: the cell is done with its heatmaps
                                pending[heat_refs[task.explainer]] = ("heatmaps", [])
                        heat_ref = heat_refs[task.explainer]
                        if not orders:
                            pending[heat_ref][1].append(task.cell_id)
                            continue
                        tdict = {"model": task.model, "explainer": task.explainer,
                                 "perturbation": task.perturbation}
                        waiting[task.cell_id] = set(orders)
                        for order in orders:
                            shard_refs = [
                                _shard_task.options(**heavy).remote(ctx_ref, tdict, order, heat_ref, s, e)
                                for s, e in bounds
                            ]
                            merge_ref = _merge_task.options(**light).remote(
                                ctx_ref, tdict, order, model_ref, heat_ref, *shard_refs
                            )
                            pending[merge_ref] = (
                                "merge", (task.cell_id, order, {"model": model_ref, "heatmaps": heat_ref})
                            )
                            submitted.extend([*shard_refs, merge_ref])
                    runner.log(
                        f"[ray] model {what}: {out['n']} images to explain, "
                        f"{len(bounds)} AOPC shard(s) of <= {size} per cell and order",
                        quiet=quiet,
                    )
                elif kind == "heatmaps":
                    for cell_id in what:
                        if cell_id not in done:
                            done.add(cell_id)
                            yield finish(cells[cell_id], None if out["ok"] else out)
                elif kind == "merge":
                    cell_id, order, _ = what
                    if cell_id in done:
                        continue
                    if not out["ok"]:
                        done.add(cell_id)
                        yield finish(cells[cell_id], out)
                        continue
                    waiting[cell_id].discard(order)
                    if not waiting[cell_id]:
                        done.add(cell_id)
                        yield finish(cells[cell_id])
        finally:
            if pending:  # stopped early (Ctrl-C, fail_fast, an error): nothing keeps running
                for ref in reversed(submitted):
                    try:
                        ray.cancel(ref)
                    except Exception:  # noqa: BLE001 - best effort
                        pass
            if started:
                ray.shutdown()

    def _describe(self) -> str:
        try:
            res = ray.cluster_resources()
            return (f"Ray ({self.address or 'local'}: {int(res.get('CPU', 0))} CPUs, "
                    f"{int(res.get('GPU', 0))} GPUs, {len(ray.nodes())} node(s))")
        except Exception:  # noqa: BLE001
            return f"Ray ({self.address or 'local'})"

