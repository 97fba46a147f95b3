"""Plugin manager: entry-point loading with isolation, provenance, the registry.

Plugins are modules (or objects) with ``@hookimpl``-marked ``bench_register_*``
functions, advertised in the ``bench`` entry-point group. The built-in plugins
are found exactly like a third party's: through their entry points. This
module knows no plugin by name.

Loading uses our own loop rather than pluggy's ``load_setuptools_entrypoints``
(which stops at the first import error and silently skips duplicate names): a
plugin that fails to import or to register is recorded as failed with its
error, and everything else keeps working.

Two registrations of one name are a conflict: both are recorded and listed
(:attr:`Registry.conflicts`), neither wins, and the name is unavailable
(``registry().get`` raises :class:`PluginConflictError` naming both and the
entry point to block for each) while everything else keeps working. Component
names are checked at registration (:func:`bench.plugin.names.check_name`).
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

from bench.errors import (
    InvalidNameError,
    PluginConflictError,
    PluginError,
    UnknownComponentError,
    did_you_mean,
)
from bench.plugin import hookspecs
from bench.plugin.names import check_name
from bench.plugin.specs import KINDS, SPEC_CLASSES, ComponentSpec

ENTRY_POINT_GROUP = "bench"
#: Comma-separated plugin (entry-point) names that must not be loaded; where two
#: distributions use one entry-point name, ``<distribution>:<entry-point>`` picks one.
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
    #: ``BENCH_DISABLE_PLUGINS=...`` that blocks exactly this plugin.
    disable: str = ""

    def __post_init__(self) -> None:
        if not self.disable:
            self.disable = f"{BLOCK_ENV}={self.name}"

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
            "disable": self.disable,
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

    @property
    def role(self) -> str | None:
        """The explainer's role (see :data:`bench.plugin.specs.EXPLAINER_ROLES`); None for other kinds."""
        role = getattr(self.spec, "role", None)
        return role if isinstance(role, str) else None

    def provenance(self) -> dict[str, Any]:
        out = {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "plugin": self.plugin.name,
            "distribution": self.plugin.distribution,
            "distribution_version": self.plugin.version,
            "factory": self.spec.factory_reference,
        }
        if self.role is not None:  # recorded in every cell: the leaderboard reads it back
            out["role"] = self.role
        return out


@dataclass(frozen=True)
class Conflict:
    """One component name registered more than once: unavailable until all but one go."""

    kind: str
    name: str
    registrations: tuple[Registered, ...]

    def message(self) -> str:
        n = len(self.registrations)
        times = "twice" if n == 2 else f"{n} times"
        who = " and by ".join(r.plugin.label for r in self.registrations)
        blocks = " or ".join(
            dict.fromkeys(f"{r.plugin.disable} (blocks {r.plugin.label})" for r in self.registrations)
        )
        return (
            f"{self.kind} {self.name!r} is registered {times}: by {who}; none is used, so "
            f"{self.kind} {self.name!r} is unavailable (`all` skips it). Uninstall one, or block "
            f"one: {blocks}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "registrations": [
                {
                    "plugin": r.plugin.name,
                    "distribution": r.plugin.distribution,
                    "version": r.plugin.version,
                    "component_version": r.version,
                    "factory": r.spec.factory_reference,
                    "disable": r.plugin.disable,
                }
                for r in self.registrations
            ],
            "message": self.message(),
        }


class Registry(Mapping[str, dict[str, Registered]]):
    """Discovered components by kind: ``registry["model"]["vgg16"]``.

    A name registered twice is in neither table nor :meth:`names`; it is in
    :attr:`conflicts`, and :meth:`get` on it raises :class:`PluginConflictError`.
    """

    def __init__(
        self,
        components: dict[str, dict[str, Registered]],
        plugins: list[PluginInfo],
        conflicts: Iterable[Conflict] = (),
    ):
        self._components = components
        self.plugins = plugins
        self.conflicts: list[Conflict] = list(conflicts)

    def __getitem__(self, kind: str) -> dict[str, Registered]:
        kind = normalise_kind(kind)
        return self._components[kind]

    def __iter__(self):
        return iter(KINDS)

    def __len__(self) -> int:
        return len(KINDS)

    def names(self, kind: str) -> list[str]:
        return sorted(self[kind])

    def conflict(self, kind: str, name: str) -> Conflict | None:
        """The conflict that makes ``kind`` ``name`` unavailable, if any."""
        kind = normalise_kind(kind)
        for c in self.conflicts:
            if c.kind == kind and c.name == name:
                return c
        return None

    def get(self, kind: str, name: str) -> Registered:  # type: ignore[override]
        kind = normalise_kind(kind)
        table = self._components[kind]
        conflict = self.conflict(kind, name)
        if conflict is not None:
            raise PluginConflictError(conflict.message())
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


def _is_blocked(info: PluginInfo, blocked: set[str]) -> bool:
    return info.name in blocked or f"{info.distribution}:{info.name}" in blocked


def _format_error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _module_file(obj: Any) -> str | None:
    try:
        return inspect.getfile(obj) if inspect.ismodule(obj) else inspect.getfile(type(obj))
    except (TypeError, OSError):  # a builtin, or a class defined in `python -c` / a notebook
        return None


def _dist_name(dist: Any) -> str | None:
    return dist.metadata["Name"] if dist is not None else None


def _iter_entry_points() -> Iterable[importlib_metadata.EntryPoint]:
    return importlib_metadata.entry_points(group=ENTRY_POINT_GROUP)


class _Loader:
    """Builds a Registry from entry points plus explicitly added plugins."""

    def __init__(self, extra: list[tuple[str, Any]]):
        self.pm = new_plugin_manager()
        self.infos: list[PluginInfo] = []
        self.extra = extra
        #: pluggy's (unique) plugin name -> info; two distributions may share an entry-point name
        self.by_key: dict[str, PluginInfo] = {}

    def load(self) -> Registry:
        blocked = _blocked_names()
        seen: set[tuple[str | None, str]] = set()
        eps = [(ep, getattr(ep, "dist", None)) for ep in _iter_entry_points()]
        # one entry-point name used by two distributions: block by <distribution>:<name>
        owners: dict[str, set[str | None]] = {}
        for ep, dist in eps:
            owners.setdefault(ep.name, set()).add(_dist_name(dist))
        for name, _ in self.extra:
            owners.setdefault(name, set()).add(None)
        for ep, dist in eps:
            info = PluginInfo(
                name=ep.name,
                distribution=_dist_name(dist),
                version=dist.version if dist is not None else None,
                module=ep.value,
            )
            if len(owners[ep.name]) > 1 and info.distribution:
                info.disable = f"{BLOCK_ENV}={info.distribution}:{ep.name}"
            if (info.distribution, ep.name) in seen:
                # the same distribution's entry point visible twice (e.g. two installs on sys.path)
                continue
            seen.add((info.distribution, ep.name))
            if _is_blocked(info, blocked):
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
            if _is_blocked(info, blocked):
                info.status, info.error = "blocked", f"blocked by {BLOCK_ENV}"
                self.infos.append(info)
                continue
            self._register(obj, info)
        return self._collect()

    def _register(self, obj: Any, info: PluginInfo) -> None:
        self.infos.append(info)
        key = info.name
        if key in self.by_key:
            key = f"{info.distribution or 'in-process'}:{info.name}"
        while key in self.by_key:
            key += "'"
        self.by_key[key] = info
        try:
            self.pm.register(obj, name=key)
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
        candidates: dict[tuple[str, str], list[Registered]] = {}
        for hook_name, kind in hookspecs.REGISTRATION_HOOKS.items():
            caller = getattr(self.pm.hook, hook_name)
            for impl in caller.get_hookimpls():
                info = self.by_key[impl.plugin_name]
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
                        # again here: a spec's name may have been changed after it was made
                        check_name(spec.name, what=kind)
                except InvalidNameError as exc:
                    # a spec with a bad name fails its plugin, as any broken hook does
                    info.status = "failed"
                    info.error = f"{hook_name} failed: {exc}; refused at registration of {info.label}"
                    continue
                except BaseException as exc:  # noqa: BLE001
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    info.status = "failed"
                    info.error = f"{hook_name} failed: {_format_error(exc)}"
                    continue
                for spec in specs:
                    candidates.setdefault((kind, spec.name), []).append(Registered(spec=spec, plugin=info))
                    info.components.setdefault(kind, []).append(spec.name)
        components: dict[str, dict[str, Registered]] = {k: {} for k in KINDS}
        conflicts: list[Conflict] = []
        for (kind, name), found in candidates.items():
            # a plugin that failed in a later hook must not keep earlier components
            alive = tuple(r for r in found if r.plugin.status == "ok")
            if len(alive) == 1:
                components[kind][name] = alive[0]
            elif alive:
                conflicts.append(Conflict(kind=kind, name=name, registrations=alive))
        for info in self.infos:
            if info.status != "ok":
                info.components.clear()
        return Registry(components, self.infos, conflicts)


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


def in_process_plugin_names() -> set[str]:
    """Names of the plugins added with :func:`register_plugin` (no entry point)."""
    return {name for name, _ in _extra_plugins}


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
            from bench.errors import ConfigError

            known = ", ".join(sorted(names)) or "(none)"
            raise ConfigError(
                f"{where} has no parameter {key!r}{did_you_mean(key, names)}; "
                f"its parameters: {known}"
            )


def provenance_of(kind: str, name: str) -> dict[str, Any]:
    return registry().get(kind, name).provenance()
