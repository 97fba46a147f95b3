"""Spec objects: what a plugin's ``bench_register_*`` hook returns.

A spec only *describes* a component. The work happens later, outside the hooks,
when the harness calls the factory. ``factory`` may be a callable or a lazy
``"module:attr"`` string, so that listing plugins never imports TensorFlow.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bench.plugin.names import check_name

#: The kinds of component a plugin registers (one ``bench_register_<kind>s`` hook each).
KINDS: tuple[str, ...] = ("dataset", "model", "explainer", "perturbation", "metric", "executor")


def load_object(reference: str) -> Any:
    """Import ``"package.module:attr.sub"`` and return the attribute."""
    module_name, sep, attr_path = reference.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"lazy factory {reference!r} must look like 'module:attribute'")
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True, kw_only=True)
class ComponentSpec:
    """Base of every spec: a registered, named component factory."""

    kind: ClassVar[str] = ""

    name: str
    factory: Callable[..., Any] | str
    description: str = ""
    #: Version of the component itself; defaults to its distribution's version.
    version: str | None = None
    #: Documented parameters and their defaults (informational; the factory's
    #: signature is the source of truth for validation).
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # a name becomes part of file names and pages: refused here, with the rule
        check_name(self.name, what=f"{type(self).__name__}")
        if not (callable(self.factory) or isinstance(self.factory, str)):
            raise TypeError(
                f"{type(self).__name__}({self.name!r}).factory must be a callable or a "
                f"'module:attr' string, got {type(self.factory).__name__}"
            )

    def load_factory(self) -> Callable[..., Any]:
        """The factory itself, importing it first when it is a lazy string."""
        if isinstance(self.factory, str):
            return load_object(self.factory)
        return self.factory

    @property
    def factory_reference(self) -> str:
        """A printable ``module:attr`` for the factory."""
        if isinstance(self.factory, str):
            return self.factory
        module = getattr(self.factory, "__module__", "?")
        qualname = getattr(self.factory, "__qualname__", repr(self.factory))
        return f"{module}:{qualname}"


@dataclass(frozen=True, kw_only=True)
class DatasetSpec(ComponentSpec):
    kind: ClassVar[str] = "dataset"


@dataclass(frozen=True, kw_only=True)
class ModelSpec(ComponentSpec):
    kind: ClassVar[str] = "model"


#: What an explainer is in a benchmark. ``method``: a competitor, ranked. The others are
#: controls, reference lines beside the ranking: ``positive-control`` (an oracle, e.g. the
#: ground-truth mask), ``null-control`` (carries no information: random or constant maps;
#: "gain over control" and the paired comparisons with it are measured against it),
#: ``negative-control`` (an anti-oracle), ``other-control`` (a prior such as edges or the
#: image centre).
EXPLAINER_ROLES: tuple[str, ...] = (
    "method", "positive-control", "null-control", "negative-control", "other-control",
)
METHOD_ROLE = "method"
NULL_CONTROL_ROLE = "null-control"


def role_problem(role: object) -> str | None:
    """Why ``role`` is not an explainer role, or None when it is one."""
    if isinstance(role, str) and role in EXPLAINER_ROLES:
        return None
    return f"role {role!r} is not one of {', '.join(repr(r) for r in EXPLAINER_ROLES)}"


def _names_tuple(value: object, what: str) -> tuple[str, ...]:
    """``value`` as a tuple of unique valid names (a bare string is refused: it is not a tuple)."""
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise TypeError(f"{what} must be a tuple of names, got {value!r}")
    names = tuple(dict.fromkeys(value))
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{what} must be a tuple of names, got {value!r}")
        check_name(name, what=f"{what} entry")
    return names


@dataclass(frozen=True, kw_only=True)
class ExplainerSpec(ComponentSpec):
    """An explainer: its factory, its role, and the dataset annotations it reads.

    ``masks`` names the dataset masks the explainer needs (an oracle control reads the
    ground-truth mask it returns as its heatmap). When it declares any, the harness
    passes ``masks={name: bool (N, H, W)}``, aligned row by row with ``images``, as a
    keyword of ``explain(model, images, targets, *, masks=...)``. A cell whose dataset
    lacks one of them cannot run that explainer: named in the config, the cell is
    recorded as failed with the reason; selected through ``all``, it is left out of the
    grid with a warning when the dataset is loaded (before any cell runs).
    """

    kind: ClassVar[str] = "explainer"
    #: One of :data:`EXPLAINER_ROLES`; every explainer that is not a ``method`` is a control.
    role: str = METHOD_ROLE
    #: The dataset masks (``Split.masks`` names) the explainer receives as ``masks=``.
    masks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        problem = role_problem(self.role)
        if problem is not None:
            raise ValueError(f"ExplainerSpec({self.name!r}): {problem}")
        object.__setattr__(self, "masks", _names_tuple(self.masks, f"ExplainerSpec({self.name!r}).masks"))

    @property
    def is_control(self) -> bool:
        return self.role != METHOD_ROLE


@dataclass(frozen=True, kw_only=True)
class PerturbationSpec(ComponentSpec):
    """A perturbation: ``perturb(images, masks, seeds) -> images``, and what it changes.

    ``mask_local``: ``perturb`` changes only pixels inside ``masks``. ``step_local``: going
    from step k-1 to step k (the mask grows by region r_k) changes only the pixels of r_k,
    i.e. a pixel once perturbed keeps its value (additive noise from a fixed field, a fill
    computed from the original image). A perturbation whose perturbed pixels depend on the
    whole mask (an imputation from the unmasked neighbours, a blur of the perturbed image)
    is mask-local but not step-local: each step changes every perturbed pixel. ``None``
    (the default) means "as ``mask_local``"; ``step_local=True`` with ``mask_local=False``
    is refused (a perturbation that writes outside the mask changes more than r_k).

    The curve engine honours both flags: the changed box it hands the forward strategy is
    region r_k only for a step-local perturbation (else the bounding box of everything
    perturbed at step k-1 or k), and ``auto`` incremental inference is used only where a
    step changes one region (``mask_local and step_local``); else full passes, with the
    reason recorded.
    """

    kind: ClassVar[str] = "perturbation"
    #: True when ``perturb`` changes only pixels inside ``masks`` (Gaussian noise,
    #: gray/zero fill). A perturbation that touches pixels outside the mask must
    #: say ``False``; incremental inference then falls back to full passes.
    mask_local: bool = True
    #: True when step k changes only region r_k (see the class docs); None = as ``mask_local``.
    step_local: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.mask_local, bool):
            raise TypeError(f"PerturbationSpec({self.name!r}).mask_local must be True or False")
        if self.step_local is None:
            object.__setattr__(self, "step_local", self.mask_local)
        elif not isinstance(self.step_local, bool):
            raise TypeError(f"PerturbationSpec({self.name!r}).step_local must be True, False or None")
        elif self.step_local and not self.mask_local:
            raise ValueError(
                f"PerturbationSpec({self.name!r}): step_local=True with mask_local=False is contradictory "
                "(a perturbation that changes pixels outside the mask changes more than the step's region); "
                "leave step_local unset"
            )

    @property
    def local_steps(self) -> bool:
        """Step k changes only region r_k (``mask_local and step_local``): what incremental inference needs."""
        return bool(self.mask_local and self.step_local)


#: The curve orders a metric may ask for: the region orders of :data:`bench.engine.regions.ORDERS`
#: (``morf``, ``lerf``, ``random``: deletion, the perturbed set grows), then ``insertion``
#: (Petsiuk et al. 2018: the image starts fully perturbed and its regions are restored in
#: MoRF order; the engine's complement mask, ``f(x^(0))`` = the fully perturbed image,
#: ``f(x^(L))`` = the original).
CURVE_ORDERS: tuple[str, ...] = ("morf", "lerf", "random", "insertion")

#: Separates an order from a perturbation in a :attr:`MetricInputs.curves` entry (``"morf@<perturbation>"``).
CURVE_SEPARATOR = "@"


def split_curve(entry: str) -> tuple[str, str]:
    """``(order, perturbation)`` of a :attr:`MetricInputs.curves` entry; perturbation ``""`` = the cell's.

    ``"morf"`` -> ``("morf", "")``; ``"morf@name"`` -> ``("morf", "name")``.
    """
    order, _, perturbation = str(entry).partition(CURVE_SEPARATOR)
    return order, perturbation


def curve_key(order: str, perturbation: str, cell_perturbation: str) -> str:
    """The name of one cell's curves of ``order`` under ``perturbation``: the bare order for the
    cell's own perturbation (or ``""``), else ``order@perturbation`` (record keys, array names)."""
    if not perturbation or perturbation == cell_perturbation:
        return order
    return f"{order}{CURVE_SEPARATOR}{perturbation}"

#: The families a metric belongs to (:attr:`MetricSpec.family`).
METRIC_FAMILIES: tuple[str, ...] = (
    "faithfulness", "localisation", "randomisation", "robustness", "complexity",
)

#: What a metric does to a heatmap before it reads it (:attr:`MetricSpec.heatmap_transform`;
#: informational: it is shown with the metric, the metric itself applies it).
HEATMAP_TRANSFORMS: dict[str, str] = {
    "none": "the heatmap as the explainer returned it (signed)",
    "abs": "absolute values",
    "positive": "positive part, max(h, 0)",
    "negative": "negative part, max(-h, 0)",
    "rank": "only the order of the region scores matters (perturbation curves)",
    "normalised": "divided by its total first (scale-free), signed",
    "abs-normalised": "absolute values divided by their total",
    "positive-normalised": "positive part divided by its total",
}


@dataclass(frozen=True, kw_only=True)
class MetricInputs:
    """What a metric needs; its ``compute(data)`` gets these and nothing else.

    ``curves``: the curves ``f(x^(k))`` (N, L+1) it reads, one entry per curve: an order
    of :data:`CURVE_ORDERS` (``"morf"``: under the cell's perturbation, or under the one
    its spec's :attr:`MetricSpec.perturbation_param` names) or ``"<order>@<perturbation>"``
    (``"morf@<name>"``: under that registered perturbation whatever the cell's, with its
    ``[perturbations.params.<name>]``); the run computes only the curves its metrics ask
    for, each (order, perturbation) once per cell, shared with the cell whose perturbation
    it is. ``masks``: the names of the dataset masks it reads (bool (N, H, W)); a dataset
    without one of them leaves the metric out of that cell, with the reason. The flags ask
    for the heatmaps (float32 (N, h, w)), the true labels, the explained (predicted)
    classes, the model, the explainer (constructed with its parameters; with it come the
    dataset masks the explainer declares, ``data.explainer_masks``, to re-explain with), the
    images (uint8 (N, H, W)) and the cell's perturbation (``data.perturbation``, its name,
    and ``data.perturbation_params``; part of the metric's cache key only when declared).
    """

    curves: tuple[str, ...] = ()
    heatmaps: bool = False
    masks: tuple[str, ...] = ()
    labels: bool = False
    targets: bool = False
    model: bool = False
    explainer: bool = False
    images: bool = False
    perturbation: bool = False

    def __post_init__(self) -> None:
        for attr in ("curves", "masks"):
            value = getattr(self, attr)
            if isinstance(value, str) or not isinstance(value, (tuple, list)):
                raise TypeError(f"MetricInputs.{attr} must be a tuple of names, got {value!r}")
            object.__setattr__(self, attr, tuple(dict.fromkeys(value)))
        for entry in self.curves:
            if not isinstance(entry, str):
                raise TypeError(f"MetricInputs.curves must be a tuple of names, got {self.curves!r}")
            order, perturbation = split_curve(entry)
            if order not in CURVE_ORDERS:
                raise ValueError(
                    f"MetricInputs.curves: {order!r} is not an order; orders: {', '.join(CURVE_ORDERS)} "
                    f"(optionally '<order>{CURVE_SEPARATOR}<perturbation>')"
                )
            if CURVE_SEPARATOR in entry:
                check_name(perturbation, what=f"MetricInputs.curves entry {entry!r}: the perturbation")
        for mask in self.masks:
            check_name(mask, what="MetricInputs.masks entry")
        for attr in ("heatmaps", "labels", "targets", "model", "explainer", "images", "perturbation"):
            if not isinstance(getattr(self, attr), bool):
                raise TypeError(f"MetricInputs.{attr} must be True or False, got {getattr(self, attr)!r}")

    def curve_requests(self) -> tuple[tuple[str, str, str], ...]:
        """``(entry, order, perturbation)`` per curves entry (perturbation ``""``: not named in the entry)."""
        return tuple((entry, *split_curve(entry)) for entry in self.curves)

    def names(self) -> list[str]:
        """The declared inputs, as ``curves:morf``, ``masks:<name>``, ``heatmaps``, ... (for messages)."""
        out = [f"curves:{o}" for o in self.curves] + [f"masks:{m}" for m in self.masks]
        out += [a for a in ("heatmaps", "labels", "targets", "model", "explainer", "images", "perturbation")
                if getattr(self, a)]
        return out

    def to_dict(self) -> dict[str, Any]:
        out = {
            "curves": list(self.curves), "heatmaps": self.heatmaps, "masks": list(self.masks),
            "labels": self.labels, "targets": self.targets, "model": self.model,
            "explainer": self.explainer, "images": self.images,
        }
        if self.perturbation:  # only when declared: the keys of metrics that do not read it stay as they were
            out["perturbation"] = True
        return out


def _identifiers(value: object, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise TypeError(f"{what} must be a tuple of parameter names, got {value!r}")
    names = tuple(dict.fromkeys(value))
    for name in names:
        if not (isinstance(name, str) and name.isidentifier()):
            raise TypeError(f"{what} must be a tuple of parameter names, got {value!r}")
    return names


@dataclass(frozen=True, kw_only=True)
class MetricSpec(ComponentSpec):
    """A metric: what it needs (``inputs``), which way is better, and how to show it.

    The component's ``compute(data)`` returns named per-image columns, each (N,) or
    (N, K); the ``headline`` column (default: the metric's name) is (N,) and is the
    one the statistics and the leaderboard use. A minimal spec::

        MetricSpec(name="my-aopc", factory=MyAOPC, inputs=MetricInputs(curves=("morf",)))
    """

    kind: ClassVar[str] = "metric"
    #: faithfulness | localisation | randomisation | robustness | complexity
    family: str = "faithfulness"
    higher_is_better: bool = True
    inputs: MetricInputs = field(default_factory=MetricInputs)
    #: The headline column of ``compute``'s result; "" = the metric's name.
    headline: str = ""
    #: The column header on the leaderboard ("" = the name).
    label: str = ""
    #: A key of :data:`HEATMAP_TRANSFORMS`: what the metric does to a heatmap before reading it.
    heatmap_transform: str = "none"
    #: The metric's value on an all-zero heatmap (checked by bench.testing), or None
    #: where it has none (a curve metric orders tied regions by a seeded tie-break).
    zero_map_value: float | None = None
    #: The metric's parameter whose value names the perturbation of the curves it reads
    #: (the ``inputs.curves`` entries that name none); its value ``""`` = the cell's. ``""``:
    #: no such parameter, the cell's perturbation. E.g. ``perturbation_param="perturbation"``
    #: with a default ``"<name>"``: that perturbation's curves in every cell,
    #: ``[metrics.params.<metric>] perturbation = "..."`` to choose another.
    perturbation_param: str = ""
    #: The metric's parameters whose value names the dataset mask(s) it reads (a name or a
    #: list of names). With any, the run hands the metric the masks its (resolved)
    #: parameters name, and ``inputs.masks`` lists those its defaults name (shown in listings);
    #: a dataset without one of them leaves the metric out of that cell, with the reason.
    mask_params: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.family not in METRIC_FAMILIES:
            raise ValueError(
                f"MetricSpec({self.name!r}).family = {self.family!r}; families: {', '.join(METRIC_FAMILIES)}"
            )
        if not isinstance(self.higher_is_better, bool):
            raise TypeError(f"MetricSpec({self.name!r}).higher_is_better must be True or False")
        if not isinstance(self.inputs, MetricInputs):
            raise TypeError(
                f"MetricSpec({self.name!r}).inputs must be a bench.MetricInputs, got {type(self.inputs).__name__}"
            )
        if self.heatmap_transform not in HEATMAP_TRANSFORMS:
            raise ValueError(
                f"MetricSpec({self.name!r}).heatmap_transform = {self.heatmap_transform!r}; "
                f"transforms: {', '.join(HEATMAP_TRANSFORMS)}"
            )
        if self.headline:
            check_name(self.headline, what=f"MetricSpec({self.name!r}).headline")
        if self.zero_map_value is not None and not isinstance(self.zero_map_value, (int, float)):
            raise TypeError(f"MetricSpec({self.name!r}).zero_map_value must be a number or None")
        if not isinstance(self.perturbation_param, str) or (
                self.perturbation_param and not self.perturbation_param.isidentifier()):
            raise TypeError(f"MetricSpec({self.name!r}).perturbation_param must be a parameter name or ''")
        object.__setattr__(self, "mask_params", _identifiers(self.mask_params, f"MetricSpec({self.name!r}).mask_params"))

    @property
    def headline_column(self) -> str:
        return self.headline or self.name

    @property
    def display_label(self) -> str:
        return self.label or self.name


@dataclass(frozen=True, kw_only=True)
class ExecutorSpec(ComponentSpec):
    """An executor: what runs the cells of a plan (``run.executor`` names it).

    The factory builds the executor from its keyword parameters
    (``[executors.params.<name>]`` in the config); the executor's
    ``run_cells(context, tasks)`` walks the stage graph (:class:`bench.plugin.protocols.Executor`).
    ``requires`` lists modules it imports (checked when the plan is made, so a missing one
    stops the run at once), and ``install`` says how to get them.
    """

    kind: ClassVar[str] = "executor"
    #: Top-level modules the executor needs (e.g. a cluster client), imported at plan time.
    requires: tuple[str, ...] = ()
    #: How to install ``requires`` (shown when one is missing), e.g. ``pip install 'pkg[extra]'``.
    install: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.requires, str) or not isinstance(self.requires, (tuple, list)):
            raise TypeError(f"ExecutorSpec({self.name!r}).requires must be a tuple of module names")
        object.__setattr__(self, "requires", tuple(str(m) for m in self.requires))


SPEC_CLASSES: dict[str, type[ComponentSpec]] = {
    cls.kind: cls
    for cls in (DatasetSpec, ModelSpec, ExplainerSpec, PerturbationSpec, MetricSpec, ExecutorSpec)
}
