"""Explainer variants: the same registered explainer several times in one grid, with other parameters.

Two ways to ask for them in a config (both under ``[explainers]``)::

    [explainers.sweep.smoothgrad]        # one variant per combination of the listed values
    sigma = [0.05, 0.15, 0.3]            # -> smoothgrad.sigma-0.05, smoothgrad.sigma-0.15, ...
    n = [8, 32]                          #    (3 x 2 = 6 variants, keys in the order given)

    [explainers.variants.gradcam-block4] # one named variant
    explainer = "gradcam"
    params = { layer = "block4_conv3" }

A swept explainer is *replaced* in the grid by its variants (list the default value among the
swept ones to keep it); a named variant is always added. Each variant is its own cell and its
own leaderboard row, named by its label; its parameters are the explainer's own
``[explainers.params.<name>]`` overlaid with the variant's. Labels follow the component-name
rule (:mod:`bench.plugin.names`), so a value that cannot be spelt in a name (a path, a long
string) needs a named variant.

:func:`resolve_variants` writes the resolved form back into the plan's config: every variant
in ``explainers.variants`` (``{"explainer": name, "params": {...}}``) and its merged parameters
in ``explainers.params.<label>``. Resolving a resolved config again gives the same config (a
worker process re-plans from it). :func:`registered_explainer` maps a label to the registered
explainer every registry lookup (factory, spec, role, plugin code) must use.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from bench.errors import ConfigError, did_you_mean
from bench.plugin.names import name_problem

SWEEP_KEY = "explainers.sweep"
VARIANTS_KEY = "explainers.variants"


def registered_explainer(cfg: Mapping[str, Any], name: str) -> str:
    """The registered explainer behind ``name`` (a variant label, or a registered name itself)."""
    variant = cfg.get("explainers", {}).get("variants", {}).get(name)
    if isinstance(variant, Mapping) and isinstance(variant.get("explainer"), str):
        return variant["explainer"]
    return name


def variant_key(cfg: Mapping[str, Any], label: str) -> str:
    """The config key a variant came from: ``explainers.sweep.<explainer>`` or ``explainers.variants.<label>``."""
    explainer = registered_explainer(cfg, label)
    swept = cfg.get("explainers", {}).get("sweep", {})
    if explainer in swept and label.startswith(f"{explainer}."):
        return f"{SWEEP_KEY}.{explainer}"
    return f"{VARIANTS_KEY}.{label}"


def value_text(value: Any, *, where: str) -> str:
    """How a swept value is spelt in a variant label (``0.05``, ``8``, ``true``, ``black``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {value!r} is not a finite number")
        return repr(value).replace("+", "")
    if isinstance(value, str) and value and name_problem(value.lower()) is None and value == value.lower():
        return value
    raise ConfigError(
        f"{where}: the value {value!r} cannot be part of a variant name (lower-case letters, digits, "
        f"'.', '_', '-'); give it a named variant instead: [{VARIANTS_KEY}.<label>] "
        "explainer = \"...\", params = {...}"
    )


def sweep_label(explainer: str, params: Mapping[str, Any], *, where: str) -> str:
    """``smoothgrad.sigma-0.05.n-8``: the explainer's name, then ``.<param>-<value>`` per parameter."""
    parts = [explainer, *(f"{k}-{value_text(v, where=f'{where}.{k}')}" for k, v in params.items())]
    return ".".join(parts)


def expand_sweep(explainer: str, table: Any, *, where: str) -> dict[str, dict[str, Any]]:
    """Label -> parameters of every combination of one ``[explainers.sweep.<explainer>]`` table."""
    if not isinstance(table, Mapping) or not table:
        raise ConfigError(f"{where} must be a non-empty table of parameter = [values], got {table!r}")
    keys: list[str] = []
    choices: list[list[Any]] = []
    for key, values in table.items():
        values = list(values) if isinstance(values, list) else [values]
        if not values:
            raise ConfigError(f"{where}.{key}: an empty list sweeps nothing; give at least one value")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{where}.{key}: the values {values!r} repeat one")
        keys.append(str(key))
        choices.append(values)
    out: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*choices):
        params = dict(zip(keys, combo, strict=True))
        out[sweep_label(explainer, params, where=where)] = params
    return out


def _check_label(label: str, *, where: str, known: Sequence[str]) -> None:
    problem = name_problem(label)
    if problem is not None:
        raise ConfigError(f"{where}: variant name {label!r}: {problem}")
    if label in known:
        raise ConfigError(
            f"{where}: variant name {label!r} is the name of a registered explainer; choose another"
        )


def resolve_variants(cfg: dict[str, Any], selected: list[str], known: Sequence[str]) -> list[str]:
    """The grid's explainers with sweeps and named variants resolved (see the module docstring).

    ``cfg``: the plan's config (its ``explainers`` table is replaced, never mutated in place);
    ``selected``: the explainers ``explainers.names`` selects; ``known``: the registered ones.
    Unknown explainers, unselected swept explainers, bad labels and label clashes are
    ConfigErrors naming the key.
    """
    section = dict(cfg["explainers"])
    base_params: dict[str, Any] = dict(section.get("params", {}))
    given: dict[str, Any] = dict(section.get("variants", {}))
    resolved: dict[str, dict[str, Any]] = {}
    replaced: dict[str, list[str]] = {}
    for explainer, table in section.get("sweep", {}).items():
        where = f"{SWEEP_KEY}.{explainer}"
        if explainer not in known:
            raise ConfigError(f"{where}: unknown explainer {explainer!r}{did_you_mean(explainer, known)}")
        if explainer not in selected:
            raise ConfigError(
                f"{where}: explainer {explainer!r} is not selected by explainers.names "
                f"({', '.join(selected)}); select it to sweep it"
            )
        labels = []
        for label, params in expand_sweep(explainer, table, where=where).items():
            _check_label(label, where=where, known=known)
            resolved[label] = {"explainer": explainer, "params": params}
            labels.append(label)
        replaced[explainer] = labels
    named: list[str] = []
    for label, entry in given.items():
        where = f"{VARIANTS_KEY}.{label}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a table (explainer = \"...\", params = {{...}}), got {entry!r}")
        extra = sorted(set(entry) - {"explainer", "params"})
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, extra))}; keys: explainer, params")
        explainer = entry.get("explainer")
        if not isinstance(explainer, str) or explainer not in known:
            raise ConfigError(
                f"{where}.explainer: unknown explainer {explainer!r}"
                f"{did_you_mean(str(explainer), known)}"
            )
        params = entry.get("params", {})
        if not isinstance(params, Mapping):
            raise ConfigError(f"{where}.params must be a table of parameters, got {params!r}")
        _check_label(label, where=where, known=known)
        if label in resolved and resolved[label] != {"explainer": explainer, "params": dict(params)}:
            raise ConfigError(f"{where}: the sweep of {explainer!r} already makes a variant named {label!r}")
        if label not in resolved:
            named.append(label)
        resolved[label] = {"explainer": explainer, "params": dict(params)}
    explainers: list[str] = []
    for name in selected:
        explainers.extend(replaced.get(name, [name]))
    explainers.extend(label for label in named if label not in explainers)
    for label, entry in resolved.items():
        own = base_params.get(entry["explainer"], {})
        base_params[label] = {**own, **entry["params"]}
    section["variants"] = resolved
    section["params"] = base_params
    cfg["explainers"] = section
    return explainers
