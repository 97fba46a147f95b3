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

from .paths import check_name

KINDS: tuple[str, ...] = ("dataset", "model", "explainer", "perturbation", "metric")


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


@dataclass(frozen=True, kw_only=True)
class ExplainerSpec(ComponentSpec):
    kind: ClassVar[str] = "explainer"


@dataclass(frozen=True, kw_only=True)
class PerturbationSpec(ComponentSpec):
    kind: ClassVar[str] = "perturbation"
    #: True when ``perturb`` changes only pixels inside ``masks`` (Gaussian noise,
    #: gray/zero fill). A perturbation that touches pixels outside the mask must
    #: say ``False``; incremental inference then falls back to full passes.
    mask_local: bool = True


@dataclass(frozen=True, kw_only=True)
class MetricSpec(ComponentSpec):
    kind: ClassVar[str] = "metric"


SPEC_CLASSES: dict[str, type[ComponentSpec]] = {
    cls.kind: cls for cls in (DatasetSpec, ModelSpec, ExplainerSpec, PerturbationSpec, MetricSpec)
}
