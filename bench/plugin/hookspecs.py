"""Every hook of bench, declared in one place. All hooks are named ``bench_*``.

Hooks only register: each returns an iterable of spec objects. No work runs in
a hook; the harness calls the specs' factories later.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from bench.plugin.specs import (
    DatasetSpec,
    ExecutorSpec,
    ExplainerSpec,
    MetricSpec,
    ModelSpec,
    PerturbationSpec,
)

PROJECT_NAME = "bench"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def bench_register_datasets() -> Iterable[DatasetSpec]:
    """Return the dataset specs this plugin contributes."""


@hookspec
def bench_register_models() -> Iterable[ModelSpec]:
    """Return the model specs this plugin contributes."""


@hookspec
def bench_register_explainers() -> Iterable[ExplainerSpec]:
    """Return the explainer specs this plugin contributes.

    Each :class:`bench.ExplainerSpec` declares its role (method or a control) and the dataset
    masks its ``explain`` receives as ``masks=`` (:attr:`bench.ExplainerSpec.masks`).
    """


@hookspec
def bench_register_perturbations() -> Iterable[PerturbationSpec]:
    """Return the perturbation specs this plugin contributes."""


@hookspec
def bench_register_metrics() -> Iterable[MetricSpec]:
    """Return the metric specs this plugin contributes.

    Each :class:`bench.MetricSpec` declares what its metric needs (:class:`bench.MetricInputs`),
    its family and which way is better; the component's ``compute(data)`` returns per-image
    columns (:class:`bench.plugin.protocols.Metric`). A run computes only the curves its metrics need.
    """


@hookspec
def bench_register_executors() -> Iterable[ExecutorSpec]:
    """Return the executor specs this plugin contributes.

    An executor runs the cells of a plan: its ``run_cells(context, tasks)`` walks the stage
    graph (:data:`bench.pipeline.STAGE_GRAPH`) through the :class:`bench.pipeline.RunContext`
    it is given and yields one :class:`bench.CellRecord` per task
    (:class:`bench.plugin.protocols.Executor`). ``run.executor`` (``--executor``) selects it by name;
    ``[executors.params.<name>]`` are its constructor's keyword parameters. The built-in
    ``local`` and ``ray`` executors are registered through this hook by the ``bench_executors``
    plugin, like a third party's.
    """


#: hook name -> component kind it registers
REGISTRATION_HOOKS: dict[str, str] = {
    "bench_register_datasets": "dataset",
    "bench_register_models": "model",
    "bench_register_explainers": "explainer",
    "bench_register_perturbations": "perturbation",
    "bench_register_metrics": "metric",
    "bench_register_executors": "executor",
}
