"""Plugin manager: entry-point loading with isolation, provenance, the registry.

Plugins are modules (or objects) with ``@hookimpl``-marked ``bench_register_*``
functions, advertised in the ``bench`` entry-point group. The built-in plugins
are found exactly like a third party's: through their entry points. This
module knows no plugin by name.

Loading uses our own loop rather than pluggy's ``load_setuptools_entrypoints``
(which stops at the first import error and silently skips duplicate names): a
plugin that fails to import or to register is recorded as failed with its
error, and everything else keeps working.
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import inspect
import os
import threading
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginConflictError, PluginError, UnknownComponentError, did_you_mean
from .specs import KINDS, SPEC_CLASSES, ComponentSpec

ENTRY_POINT_GROUP = "bench"
#: Comma-separated plugin (entry-point) names that must not be loaded.
BLOCK_ENV = "BENCH_DISABLE_PLUGINS"


@dataclass
class PluginInfo:
    """Where a plugin came from and how its loading went."""

    name: str
    distribution: str | None = None
    version: str | None = None
    module: str | None = None
    file: str | None = None
    status: str = "ok"  # ok | failed | blocked
    error: str | None = None
    components: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "file": self.file,
            "status": self.status,
            "error": self.error,
            "components": {k: list(v) for k, v in self.components.items()},
        }

    @property
    def label(self) -> str:
        dist = f"{self.distribution} {self.version}" if self.distribution else "no distribution"
        return f"plugin {self.name!r} ({dist})"


@dataclass(frozen=True)
class Registered:
    """A spec together with the plugin that registered it."""

    spec: ComponentSpec
    plugin: PluginInfo

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version or self.plugin.version or "0"

    def load_factory(self) -> Any:
        """The factory, imported if lazy; an import failure names the plugin."""
        try:
            return self.spec.load_factory()
        except Exception as exc:
            raise PluginError(
                f"{self.kind} {self.name!r} from {self.plugin.label}: cannot load its factory "
                f"{self.spec.factory_reference!r}: {_format_error(exc)}"
            ) from exc

    def provenance(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "plugin": self.plugin.name,
            "distribution": self.plugin.distribution,
            "distribution_version": self.plugin.version,
            "factory": self.spec.factory_reference,
        }


class Registry(Mapping[str, dict[str, Registered]]):
    """Discovered components by kind: ``registry["model"]["vgg16"]``."""

    def __init__(self, components: dict[str, dict[str, Registered]], plugins: list[PluginInfo]):
        self._components = components
        self.plugins = plugins

    def __getitem__(self, kind: str) -> dict[str, Registered]:
        kind = normalise_kind(kind)
        return self._components[kind]

    def __iter__(self):
        return iter(KINDS)

    def __len__(self) -> int:
        return len(KINDS)

    def names(self, kind: str) -> list[str]:
        return sorted(self[kind])

    def get(self, kind: str, name: str) -> Registered:  # type: ignore[override]
        kind = normalise_kind(kind)
        table = self._components[kind]
        if name not in table:
            known = ", ".join(sorted(table)) or "(none registered)"
            raise UnknownComponentError(
                f"unknown {kind} {name!r}{did_you_mean(name, table)}; known {kind}s: {known}"
            )
        return table[name]

    @property
    def failed_plugins(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.status == "failed"]


def normalise_kind(kind: str) -> str:
    k = kind.lower().rstrip("s") if kind.lower() not in KINDS else kind.lower()
    if k not in KINDS:
        raise UnknownComponentError(
            f"unknown component kind {kind!r}{did_you_mean(kind, KINDS)}; kinds: {', '.join(KINDS)}"
        )
    return k


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def _blocked_names() -> set[str]:
    raw = os.environ.get(BLOCK_ENV, "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def _format_error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _module_file(obj: Any) -> str | None:
    try:
        return inspect.getfile(obj) if inspect.ismodule(obj) else inspect.getfile(type(obj))
    except TypeError:
        return None


def _iter_entry_points() -> Iterable[importlib_metadata.EntryPoint]:
    return importlib_metadata.entry_points(group=ENTRY_POINT_GROUP)


class _Loader:
    """Builds a Registry from entry points plus explicitly added plugins."""

    def __init__(self, extra: list[tuple[str, Any]]):
        self.pm = new_plugin_manager()
        self.infos: list[PluginInfo] = []
        self.extra = extra

    def load(self) -> Registry:
        blocked = _blocked_names()
        seen: set[str] = set()
        for ep in _iter_entry_points():
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                distribution=dist.metadata["Name"] if dist is not None else None,
                version=dist.version if dist is not None else None,
                module=ep.value,
            )
            if ep.name in seen:
                # same entry point visible twice (e.g. two installs on sys.path)
                continue
            seen.add(ep.name)
            if ep.name in blocked:
                info.status = "blocked"
                info.error = f"blocked by {BLOCK_ENV}"
                self.infos.append(info)
                continue
            try:
                obj = ep.load()
            except BaseException as exc:  # noqa: BLE001 - isolation is the point
                if isinstance(exc, KeyboardInterrupt):
                    raise
                info.status = "failed"
                info.error = f"import failed: {_format_error(exc)}"
                self.infos.append(info)
                continue
            info.file = _module_file(obj)
            self._register(obj, info)
        for name, obj in self.extra:
            info = PluginInfo(name=name, module=getattr(obj, "__name__", type(obj).__name__))
            info.file = _module_file(obj)
            if name in blocked:
                info.status, info.error = "blocked", f"blocked by {BLOCK_ENV}"
                self.infos.append(info)
                continue
            self._register(obj, info)
        return self._collect()

    def _register(self, obj: Any, info: PluginInfo) -> None:
        self.infos.append(info)
        try:
            self.pm.register(obj, name=info.name)
            # a misspelt hook (bench_register_modles) fails loudly, for this plugin
            self.pm.check_pending()
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            if self.pm.is_registered(obj):
                self.pm.unregister(obj)
            info.status = "failed"
            info.error = f"registration failed: {_format_error(exc)}"

    def _collect(self) -> Registry:
        components: dict[str, dict[str, Registered]] = {k: {} for k in KINDS}
        by_name = {info.name: info for info in self.infos}
        for hook_name, kind in hookspecs.REGISTRATION_HOOKS.items():
            caller = getattr(self.pm.hook, hook_name)
            for impl in caller.get_hookimpls():
                info = by_name[impl.plugin_name]
                if info.status != "ok":
                    continue
                try:
                    specs = list(impl.function() or ())
                    for spec in specs:
                        expected = SPEC_CLASSES[kind]
                        if not isinstance(spec, expected):
                            raise PluginError(
                                f"{hook_name} returned {type(spec).__name__}, "
                                f"expected {expected.__name__}"
                            )
                except BaseException as exc:  # noqa: BLE001
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    info.status = "failed"
                    info.error = f"{hook_name} failed: {_format_error(exc)}"
                    continue
                for spec in specs:
                    table = components[kind]
                    if spec.name in table:
                        other = table[spec.name].plugin
                        raise PluginConflictError(
                            f"{kind} {spec.name!r} is registered twice: by {other.label} "
                            f"and by {info.label}. Uninstall one, or block one with "
                            f"{BLOCK_ENV}={info.name}"
                        )
                    table[spec.name] = Registered(spec=spec, plugin=info)
                    info.components.setdefault(kind, []).append(spec.name)
        # a plugin that failed in a later hook must not keep earlier components
        for table in components.values():
            for name in [n for n, r in table.items() if r.plugin.status != "ok"]:
                del table[name]
        return Registry(components, self.infos)


_lock = threading.Lock()
_cached: Registry | None = None
_extra_plugins: list[tuple[str, Any]] = []


def registry(*, reload: bool = False) -> Registry:
    """The discovered components by kind, name -> :class:`Registered`.

    Cached after the first call; ``reload=True`` rescans the entry points.
    """
    global _cached
    with _lock:
        if _cached is None or reload:
            _cached = _Loader(list(_extra_plugins)).load()
        return _cached


def register_plugin(obj: Any, name: str | None = None) -> None:
    """Register a plugin object in-process (no entry point), e.g. in a notebook or test."""
    label = name or getattr(obj, "__name__", None) or type(obj).__name__
    _extra_plugins.append((label, obj))
    registry(reload=True)


def unregister_plugin(name: str) -> None:
    _extra_plugins[:] = [(n, o) for n, o in _extra_plugins if n != name]
    registry(reload=True)


def create(kind: str, name: str, **params: Any) -> Any:
    """An instance of a registered component: ``create("model", "vgg16", weights="none")``."""
    entry = registry().get(kind, name)
    factory = entry.load_factory()
    check_params(factory, params, where=f"{entry.kind} {name!r}")
    return factory(**params)


def accepted_params(factory: Any) -> tuple[set[str], bool]:
    """(keyword names the factory accepts, whether it takes ``**kwargs``)."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return set(), True
    names: set[str] = set()
    var_kw = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self":
            names.add(p.name)
    return names, var_kw


def check_params(factory: Any, params: Mapping[str, Any], *, where: str) -> None:
    """Raise a clear error for a parameter the factory does not accept."""
    names, var_kw = accepted_params(factory)
    if var_kw:
        return
    for key in params:
        if key not in names:
            from .errors import ConfigError

            known = ", ".join(sorted(names)) or "(none)"
            raise ConfigError(
                f"{where} has no parameter {key!r}{did_you_mean(key, names)}; "
                f"its parameters: {known}"
            )


def provenance_of(kind: str, name: str) -> dict[str, Any]:
    return registry().get(kind, name).provenance()
