"""Run configuration: TOML + presets + CLI overrides -> a validated, fully resolved config.

Layers, later wins: built-in defaults <- preset (``demo`` unless a config file is
given) <- config file <- CLI flags. Every key is checked: an unknown key or a
wrong type is an error naming its TOML path and suggesting the closest valid key.
The resolved config (every default filled in) is written into each run's manifest.
"""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from bench.errors import ConfigError, did_you_mean

ALL = "all"
#: The largest ``run.seed``: the trainer seeds NumPy's legacy generator (32 bits).
MAX_SEED = 2**32 - 1

#: section -> key -> (accepted types, default). ``dict`` keys hold free-form plugin params.
SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], Any]]] = {
    "run": {
        "seed": ((int,), 0),
        "out": ((str,), "results"),
        "executor": ((str,), "local"),
        "ray_address": ((str,), ""),
        "ray_gpus": ((float, int), 0),
        "fail_fast": ((bool,), False),
    },
    "dataset": {
        "name": ((str,), ""),
        "data": ((str,), ""),
        "params": ((dict,), {}),
    },
    "models": {
        "names": ((list,), [ALL]),
        "weights": ((str,), "default"),
        "params": ((dict,), {}),
    },
    "training": {
        "epochs": ((int,), 20),
        "batch_size": ((int,), 32),
        "learning_rate": ((float, int), 1e-3),
        "selection": ((str,), "disease_recall"),
    },
    "explainers": {
        "names": ((list,), [ALL]),
        "batch_size": ((int,), 32),
        "params": ((dict,), {}),
        #: parameter sweeps: ``[explainers.sweep.<explainer>] <param> = [v1, v2, ...]`` replaces
        #: the explainer in the grid by one variant per combination (see bench.pipeline.variants)
        "sweep": ((dict,), {}),
        #: named variants: ``[explainers.variants.<label>] explainer = "<name>"``, ``params = {...}``
        "variants": ((dict,), {}),
    },
    "perturbations": {
        "names": ((list,), [ALL]),
        "params": ((dict,), {}),
    },
    "metrics": {
        "names": ((list,), [ALL]),
        "params": ((dict,), {}),
        #: an image budget per metric (``{ name = n }``): the metric, and the curves only
        #: budgeted metrics read, run on a class-stratified ``n`` of the cell's explained
        #: images (the same ones for every explainer); 0 or absent = all of them
        "max_images": ((dict,), {}),
    },
    #: the parameters of each executor (``run.executor`` picks the one a run uses)
    "executors": {
        "params": ((dict,), {}),
    },
    "aopc": {
        "grid": ((int, list), 9),
        "batch_size": ((int,), 64),
        "max_images": ((int,), 0),
        "strategy": ((str,), "auto"),
        "confidence": ((float,), 0.95),
        "bootstrap": ((int,), 10000),
        #: deprecated alias of leaderboard.control (see bench.pipeline.controls)
        "baseline": ((str,), ""),
    },
    "leaderboard": {
        "formats": ((list,), ["md", "csv", "json", "html", "tex"]),
        #: the metric rows are ranked by, and gains and paired comparisons use; "" = the
        #: first selected metric
        "primary": ((str,), ""),
        #: the null-control explainer "gain over control" is measured against; "" = the grid's
        #: only null control (an error when it has several)
        "control": ((str,), ""),
        "figures": ((bool,), True),
        #: the smallest mean difference a paired comparison reports as better/worse, in the
        #: metric's units (below it: "negligible", whatever its p): a number, or a table
        #: ``{<metric> = number, default = number}``; 0.01 = bench.stats.DEFAULT_MIN_EFFECT
        "min_effect": ((float, int, dict), 0.01),
        #: sanity gates: an explainer whose mean Spearman after the whole network is randomised
        #: reaches this is flagged "survives model randomisation"
        "sanity_randomisation": ((float, int), 0.5),
        #: ... whose mean similarity between the explanations of two classes reaches this is
        #: flagged "fails the random-logit test"
        "sanity_random_logit": ((float, int), 0.5),
        #: the metrics the aggregate mean rank averages: metric names or families ([] = the
        #: faithfulness family)
        "aggregate": ((list,), ["faithfulness"]),
        #: the paired comparisons kept: "primary" (every pair for the primary metric, each
        #: explainer against the null control for the others) or "all" (every pair of every metric)
        "comparisons": ((str,), "primary"),
    },
}

#: The plugin kind behind each ``names`` section.
SECTION_KIND = {
    "models": "model", "explainers": "explainer", "perturbations": "perturbation", "metrics": "metric",
}

#: Keys that were removed, and what replaces them (a config that still has one gets this message).
REMOVED_KEYS: dict[str, str] = {
    "aopc.orders": (
        "the curve orders a run computes are the ones its metrics need: choose the metrics with "
        '[metrics] names = [...] ("all" by default; `bench list metrics` shows each metric with '
        "the curves it needs), and remove aopc.orders"
    ),
}


def defaults() -> dict[str, Any]:
    return {sec: {k: copy.deepcopy(v[1]) for k, v in keys.items()} for sec, keys in SCHEMA.items()}


def preset_names() -> list[str]:
    folder = resources.files("bench.config") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def read_preset(name: str) -> dict[str, Any]:
    names = preset_names()
    if name not in names:
        raise ConfigError(
            f"unknown preset {name!r}{did_you_mean(name, names)}; presets: {', '.join(names)}"
        )
    text = (resources.files("bench.config") / "presets" / f"{name}.toml").read_text(encoding="utf-8")
    return _parse_toml(text, f"preset {name!r}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    return _parse_toml(p.read_text(encoding="utf-8"), f"config file {str(p)!r}")


def _parse_toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from exc


def merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overlay`` into a copy of ``base`` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _type_name(types: tuple[type, ...]) -> str:
    names = {int: "integer", float: "float", str: "string", bool: "boolean", list: "array", dict: "table"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def validate_structure(cfg: Mapping[str, Any], where: str = "config") -> None:
    """Unknown sections/keys and wrong types -> ConfigError naming the TOML path."""
    for section, table in cfg.items():
        if section == "preset":
            if table is not None and not isinstance(table, str):
                raise ConfigError(f"{where}: preset must be a string, got {table!r}")
            continue
        if section not in SCHEMA:
            raise ConfigError(
                f"{where}: unknown section [{section}]{did_you_mean(section, SCHEMA)}; "
                f"sections: {', '.join(SCHEMA)}"
            )
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: [{section}] must be a table, got {type(table).__name__}")
        keys = SCHEMA[section]
        for key, value in table.items():
            path = f"{section}.{key}"
            if path in REMOVED_KEYS:
                raise ConfigError(f"{where}: {path} was removed: {REMOVED_KEYS[path]}")
            if key not in keys:
                elsewhere = [f"{s}.{key}" for s, ks in SCHEMA.items() if key in ks]
                candidates = [f"{section}.{k}" for k in keys]
                hint = (
                    f" (did you mean {elsewhere[0]!r}?)" if elsewhere else did_you_mean(path, candidates)
                )
                raise ConfigError(
                    f"{where}: unknown key {path!r}{hint}; "
                    f"keys of [{section}]: {', '.join(keys)}"
                )
            types, _ = keys[key]
            ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
            if float in types and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise ConfigError(
                    f"{where}: {path} must be {_type_name(types)}, got {type(value).__name__} {value!r}"
                )
            if key in ("names", "formats"):
                for i, item in enumerate(value):
                    if not isinstance(item, str):
                        raise ConfigError(f"{where}: {path}[{i}] must be a string, got {item!r}")
            if key == "params" and section != "dataset":
                for name, params in value.items():
                    if not isinstance(params, Mapping):
                        raise ConfigError(
                            f"{where}: {path}.{name} must be a table of parameters, got {params!r}"
                        )


def validate_values(cfg: Mapping[str, Any]) -> None:
    """Value checks that need no plugin: ranges, enums."""
    if not cfg["dataset"]["name"]:
        raise ConfigError(
            "dataset.name is not set: name a dataset (--dataset NAME, or [dataset] name = ... in the "
            "config), or start from a preset (preset = \"demo\")"
        )
    grid = cfg["aopc"]["grid"]
    cells = [grid, grid] if isinstance(grid, int) else grid
    if len(cells) != 2 or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in cells):
        raise ConfigError(f"aopc.grid must be a positive integer or [rows, cols], got {grid!r}")
    if cfg["aopc"]["strategy"] not in ("auto", "full", "incremental"):
        raise ConfigError(
            f"aopc.strategy must be 'auto', 'full' or 'incremental', got {cfg['aopc']['strategy']!r}"
        )
    if not 0 < cfg["aopc"]["confidence"] < 1:
        raise ConfigError(f"aopc.confidence must be in (0, 1), got {cfg['aopc']['confidence']!r}")
    for path, value in (
        ("training.epochs", cfg["training"]["epochs"]),
        ("training.batch_size", cfg["training"]["batch_size"]),
        ("explainers.batch_size", cfg["explainers"]["batch_size"]),
        ("aopc.batch_size", cfg["aopc"]["batch_size"]),
        ("aopc.bootstrap", cfg["aopc"]["bootstrap"]),
    ):
        if value < 1:
            raise ConfigError(f"{path} must be >= 1, got {value!r}")
    seed = cfg["run"]["seed"]
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"run.seed must be an integer in [0, {MAX_SEED}] (--seed), got {seed!r}")
    if cfg["run"]["ray_gpus"] < 0:
        raise ConfigError(f"run.ray_gpus must be >= 0, got {cfg['run']['ray_gpus']!r}")
    if not math.isfinite(cfg["aopc"]["confidence"]):
        raise ConfigError(f"aopc.confidence must be in (0, 1), got {cfg['aopc']['confidence']!r}")
    _validate_training(cfg["training"])
    if cfg["aopc"]["max_images"] < 0:
        raise ConfigError(f"aopc.max_images must be >= 0 (0 = all), got {cfg['aopc']['max_images']!r}")
    if not cfg["run"]["executor"]:
        raise ConfigError("run.executor is empty: name an executor (`bench list executors`), e.g. \"local\"")
    formats = ("md", "csv", "json", "html", "tex")
    for i, fmt in enumerate(cfg["leaderboard"]["formats"]):
        if fmt not in formats:
            raise ConfigError(
                f"leaderboard.formats[{i}] = {fmt!r} is unknown{did_you_mean(fmt, formats)}; "
                f"formats: {', '.join(formats)}"
            )
    _validate_leaderboard(cfg["leaderboard"])


#: The values ``leaderboard.comparisons`` takes (bench.publish.comparisons.COMPARISON_SCOPES).
COMPARISON_SCOPES = ("primary", "all")


def _validate_leaderboard(board: Mapping[str, Any]) -> None:
    """The statistics keys of ``[leaderboard]``: ranges, the aggregate's names, the scope."""
    me = board["min_effect"]
    entries = me.items() if isinstance(me, Mapping) else [("", me)]
    for name, value in entries:
        path = f"leaderboard.min_effect.{name}" if name else "leaderboard.min_effect"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{path} must be a finite number >= 0 (in the metric's units), got {value!r}")
    for key in ("sanity_randomisation", "sanity_random_logit"):
        value = board[key]
        if not math.isfinite(value):
            raise ConfigError(f"leaderboard.{key} must be a finite number (a mean similarity, e.g. 0.5), got {value!r}")
    for i, name in enumerate(board["aggregate"]):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"leaderboard.aggregate[{i}] must be a metric name or a metric family, got {name!r}")
    if board["comparisons"] not in COMPARISON_SCOPES:
        raise ConfigError(
            f"leaderboard.comparisons = {board['comparisons']!r} is unknown"
            f"{did_you_mean(board['comparisons'], COMPARISON_SCOPES)}; choose one of {', '.join(COMPARISON_SCOPES)}"
        )


def _validate_training(tcfg: Mapping[str, Any]) -> None:
    """The training recipe is checked by the class that owns it (:class:`bench.training.TrainingConfig`)."""
    from bench.training import TrainingConfig

    lr = tcfg["learning_rate"]
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"training.learning_rate must be a finite number > 0, got {lr!r}")
    TrainingConfig(
        epochs=tcfg["epochs"],
        batch_size=tcfg["batch_size"],
        learning_rate=float(lr),
        selection=tcfg["selection"],
    )


def _dataset_name(layer: Mapping[str, Any] | None) -> str | None:
    table = (layer or {}).get("dataset")
    name = table.get("name") if isinstance(table, Mapping) else None
    return name or None


def _is_resolved(config: Mapping[str, Any]) -> bool:
    """Whether ``config`` is already resolved: every section present, each with every key."""
    return all(isinstance(config.get(sec), Mapping) and all(k in config[sec] for k in keys)
               for sec, keys in SCHEMA.items())


def load_config(
    config: str | Path | Mapping[str, Any] | None = None,
    *,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The validated config with every default filled in (plugin names not yet checked).

    ``config``: a TOML file path, a mapping, or None. ``preset``: a built-in preset;
    when neither a file nor a mapping is given the ``demo`` preset is used.
    ``overrides``: ``{"section": {"key": value}}`` applied last (CLI flags).
    A config may name its base preset with a top-level ``preset = "name"``.
    ``dataset.params`` belong to the dataset named in their layer (or the layer below):
    when a later layer names another dataset (``--dataset covid-radiography`` over the
    demo preset), the params written for the other dataset are left out.
    An already resolved config (every section present) is re-validated and returned.
    """
    if isinstance(config, Mapping) and preset is None and _is_resolved(config):
        cfg = merge(dict(config), overrides or {})
        validate_structure(cfg, "config")
        validate_values(cfg)
        cfg.setdefault("preset", None)
        return cfg
    cfg = defaults()
    layer: dict[str, Any] | None = None
    where = "config"
    if config is not None:
        if isinstance(config, Mapping):
            layer = dict(config)
        else:
            layer, where = read_config_file(config), f"config file {str(config)!r}"
        validate_structure(layer, where)
        # a config file may build on a preset: preset = "covid-radiography"
        if preset is None:
            preset = layer.pop("preset", None)
        else:
            layer.pop("preset", None)
    elif preset is None:
        preset = "demo"
    if overrides:
        validate_structure(overrides, "command line")
    layers: list[Mapping[str, Any]] = []
    if preset is not None:
        base = read_preset(preset)
        validate_structure(base, f"preset {preset!r}")
        layers.append(base)
    if layer is not None:
        layers.append(layer)
    if overrides:
        layers.append(overrides)
    # dataset params belong to the dataset named in their layer (or the layer below)
    current = cfg["dataset"]["name"]
    params_of: dict[str, dict[str, Any]] = {current: cfg["dataset"]["params"]}
    for item in layers:
        current = _dataset_name(item) or current
        given = (item.get("dataset") or {}).get("params")
        if isinstance(given, Mapping):
            params_of[current] = merge(params_of.get(current, {}), given)
        cfg = merge(cfg, item)
    cfg["dataset"]["params"] = copy.deepcopy(params_of.get(current, {}))
    validate_values(cfg)
    cfg["preset"] = preset
    return cfg


def resolve_names(cfg: Mapping[str, Any], section: str, registry: Any) -> list[str]:
    """Expand ``"all"`` and check each name against the registry (error names the key)."""
    kind = SECTION_KIND[section]
    known = registry.names(kind)
    names: list[str] = []
    for i, name in enumerate(cfg[section]["names"]):
        if name == ALL:
            names.extend(n for n in known if n not in names)
            continue
        conflict = registry.conflict(kind, name) if hasattr(registry, "conflict") else None
        if conflict is not None:
            raise ConfigError(f"{section}.names[{i}]: {conflict.message()}")
        if name not in known:
            raise ConfigError(
                f"{section}.names[{i}]: unknown {kind} {name!r}{did_you_mean(name, known)}; "
                f"known {kind}s: {', '.join(known) or '(none registered)'}"
            )
        if name not in names:
            names.append(name)
    if not names:
        raise ConfigError(f"{section}.names selects no {kind}: none is registered")
    return names


def grid_shape(grid: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    if isinstance(grid, int):
        return (grid, grid)
    return (int(grid[0]), int(grid[1]))
