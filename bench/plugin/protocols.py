"""The component contracts, as ``typing.Protocol``s.

Every component follows scikit-learn's constructor discipline: keyword
parameters only, stored as given, no heavy work in ``__init__``, and
``get_params()`` returning them (they are recorded in every result).

Checked at plan time (``bench run --dry-run`` included), before any work: the plan
constructs every selected component with its parameters and calls its optional
``validate()`` (no arguments, cheap, raises ``ValueError``/``TypeError``/
``ConfigError`` on a bad parameter; an exception attribute ``param`` names the
culprit, else the first parameter the message mentions). The error becomes a
``ConfigError`` naming the config key (``perturbations.params.gaussian-noise.sigma``).
A dataset may also declare ``image_shape() -> (H, W) | None`` without loading, so
the region grid and the models are checked against its images at plan time, and
``split_sizes() -> {"train": n, "val": n, "test": n}`` (cheap, without loading), so
``bench run --dry-run`` counts the training passes before the dataset is cached.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import keras
    import tensorflow as tf

    from bench.data import DatasetSplits
    from bench.pipeline.executors import RunContext
    from bench.pipeline.metrics import MetricData
    from bench.pipeline.plan import CellTask
    from bench.pipeline.record import CellRecord


@runtime_checkable
class Component(Protocol):
    def get_params(self) -> dict[str, Any]: ...


class Validating(Protocol):
    """Optional: ``validate()`` checks the stored parameters cheaply (called at plan time)."""

    def validate(self) -> None: ...


@runtime_checkable
class Dataset(Component, Protocol):
    """Loads the splits. ``load()`` may be slow; the harness caches its result.

    Each :class:`~bench.data.Split` carries ``masks``: a dict name -> bool (N, H, W), names
    of the dataset's choosing (component-style: lower-case letters, digits, '.', '_', '-'),
    the same names in every split. ``DatasetSplits.metadata["positive_classes"]`` lists
    the classes the ``disease_recall`` model-selection rule averages recall over.
    """

    def load(self) -> DatasetSplits: ...

    def fingerprint(self) -> str:
        """A hash of what ``load()`` will return: file contents (never sizes or times), or
        generator params. It is part of every cache key downstream of the dataset."""
        ...

    # optional: def image_shape(self) -> tuple[int, int] | None  (cheap, without loading)

    # optional: def split_sizes(self) -> dict[str, int]
    #   {"train": n, "val": n, "test": n}: how many images each split of ``load()`` will hold,
    #   exactly (the same split rule as ``load()``), said without loading. It must be cheap:
    #   no image decoded, nothing downloaded, no file content hashed; listing files is fine.
    #   ``bench run --dry-run`` asks it for the training passes when the dataset is not in the
    #   cache (or its cache key would mean hashing its files). It may raise (a missing folder,
    #   say: ``load()`` reports it) or return None: then the training cost is unknown; anything
    #   but the three keys with non-negative integers is ignored with a warning.


@runtime_checkable
class Model(Component, Protocol):
    """A classifier taking float32 [0, 1] images (N, H, W, 3).

    ``keras`` returns class probabilities; ``logits_keras`` the pre-softmax
    logits; ``feature_layer`` names the layer Grad-CAM uses and
    ``features_and_logits`` returns (that layer's output, logits) from one graph,
    differentiable (no "graph disconnected" on nested backbones).
    """

    @property
    def keras(self) -> keras.Model: ...

    @property
    def logits_keras(self) -> keras.Model: ...

    @property
    def feature_layer(self) -> str: ...

    @property
    def input_shape(self) -> tuple[int, int, int]: ...

    @property
    def num_classes(self) -> int: ...

    def features_and_logits(self, images: Any) -> tuple[tf.Tensor, tf.Tensor]: ...


@runtime_checkable
class Explainer(Component, Protocol):
    """``explain(model, images, targets) -> heatmaps`` (float32 (N, h, w), larger = more relevant).

    images: float32 (N, H, W, 3) in [0, 1]; targets: int (N,). An explainer that
    needs per-image identities (to seed, say) may accept an ``ids`` keyword; the
    harness passes it when the signature has it. Its spec declares its role
    (:data:`bench.plugin.specs.EXPLAINER_ROLES`): a ``method``, or a control (whose maps must not
    depend on the model; a ``null-control``'s not on the image either).

    Dataset annotations: a spec that declares ``masks=("<name>", ...)``
    (:attr:`bench.ExplainerSpec.masks`) gets ``masks={name: bool (N, H, W)}`` as a keyword,
    aligned row by row with ``images`` (the same images, in the same order, at the images'
    size): ``explain(model, images, targets, *, ids=None, masks=None)``. A dataset without
    a declared mask cannot run the explainer: named in the config, its cells fail with the
    reason (the mask and the dataset); selected through ``all``, it is left out of the grid
    with a warning when the dataset is loaded.

    Cost (optional): ``passes_per_map() -> float | None``, the forward-pass equivalents one
    map costs (a forward + backward pass through the model counts as one; 0 for a map that
    never calls the model; None: unknown). It is called after the maps are computed (so it
    may report what the last call measured) and recorded with the seconds per map in every
    cell (:class:`bench.pipeline.record.Timings`); the leaderboard shows both next to the scores.
    """

    def explain(self, model: Model, images: np.ndarray, targets: np.ndarray) -> np.ndarray: ...

    # optional: def passes_per_map(self) -> float | None


@runtime_checkable
class Perturbation(Component, Protocol):
    """``perturb(images, masks, seeds) -> images``.

    images: float32 (B, H, W, 3), the originals x^(0); masks: bool (B, H, W),
    the union of the regions perturbed so far; seeds: int (B,), one per image.
    Returns x^(k). Deterministic given the seeds.
    """

    def perturb(self, images: np.ndarray, masks: np.ndarray, seeds: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Metric(Component, Protocol):
    """``compute(data) -> {column: per-image values}``.

    The spec (:class:`bench.MetricSpec`) declares what the metric needs
    (:class:`bench.MetricInputs`); ``data`` (:class:`bench.pipeline.metrics.MetricData`) holds
    exactly that, for the N explained images of one cell, aligned by row:
    ``data.ids`` (N,) always; ``data.curves[order]`` float (N, L+1), ``f(x^(k))`` for
    k = 0..L under the cell's perturbation; ``data.heatmaps`` float32 (N, h, w);
    ``data.masks[name]`` bool (N, H, W); ``data.labels`` / ``data.targets`` int (N,)
    (true / explained classes); ``data.model`` (a :class:`Model`); ``data.explainer``
    (the cell's :class:`Explainer`, constructed with its parameters); ``data.images``
    uint8 (N, H, W); ``data.grid`` the region grid (rows, cols). Reading an input the
    spec did not declare raises. The arrays are read-only.

    Returns named columns, each (N,) or (N, K) (one value per randomised layer, say);
    the spec's headline column is (N,). Non-finite values are allowed: they are left
    out of the statistics and counted (``n_excluded``). A metric that raises or
    returns a wrong shape fails only itself in that cell, with its message.

    Optional cost methods: ``forward_passes() -> float | None``, the forward-pass equivalents
    its own work cost in the last ``compute`` (recorded per cell); ``planned_passes(*,
    n_images, passes_per_map) -> float | None``, what it will cost on ``n_images`` images of
    a cell whose explainer declares ``passes_per_map`` (``bench run --dry-run`` asks it before
    anything runs; a metric without it is counted by ``forward_passes()`` or listed as unknown).
    """

    def compute(self, data: MetricData) -> Mapping[str, np.ndarray]: ...


@runtime_checkable
class Executor(Component, Protocol):
    """Runs the cells of a plan: ``run_cells(context, tasks) -> Iterator[CellRecord]``.

    Registered with ``bench_register_executors`` (:class:`bench.ExecutorSpec`), selected by
    ``run.executor`` (``--executor NAME``), constructed with ``[executors.params.<name>]``.
    ``context`` (:class:`bench.pipeline.RunContext`) gives the stage graph and everything an
    executor needs through public names: ``context.jobs(task)`` / ``context.grid_jobs(tasks)``
    (the jobs in dependency order, shared ones once), ``context.deps(job)``,
    ``context.compute(job)`` (here; its upstream from the cache), ``context.compute_shard`` /
    ``context.merge_shards`` (a shardable stage in image shards), ``context.run_cell(task)``
    (a whole cell here), ``context.finish_cell(task, failures={job.id: error})`` (the record
    of a cell whose jobs ran elsewhere, from the shared cache) and ``context.is_cached(task)``.
    Yield one record per task as each cell finishes; a cell whose plugin fails is a failed
    record, never an exception. The executor never spells out the stage order: it walks
    the graph.
    """

    def run_cells(self, context: RunContext, tasks: Sequence[CellTask]) -> Iterator[CellRecord]: ...
