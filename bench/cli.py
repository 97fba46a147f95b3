"""The ``bench`` command line.

    bench plugins [--json]
    bench list {datasets,models,explainers,perturbations,metrics,executors}
    bench run [--all] [--dataset D] [--model M ...] [--explainer E ...] [--perturbation P ...]
              [--config FILE] [--preset NAME] [--data PATH] [--weights imagenet|none|PATH]
              [--executor NAME] [--out|--results DIR] [--set section.key=value ...] [--dry-run [--calibrate] [--json]] [--quiet]
    bench leaderboard [--publish] [--format md|csv|json|html|latex] [--out FILE] [--results DIR]
    bench new-plugin NAME --kind explainer|perturbation|model|dataset|metric|executor [--dir DIR]
    bench data describe [--dataset NAME] [--data PATH] [--json]
    bench data show NAME [--data PATH] --out FILE.png
    bench config [--preset NAME] [--config FILE] [--set section.key=value ...]  (print the resolved config)

Where the files go: ``results/`` (the default results folder) holds the published
leaderboard, tracked in git (``results/leaderboard.{md,csv,json,html,tex}``, ``report.md``,
``figures/``). ``bench run`` never rewrites it: its runs and cache go to ``results/runs/`` and
``results/cache/``, its own leaderboard to ``results/local/`` (all ignored by git);
``bench leaderboard --publish`` rebuilds the published files from ``results/runs/``. A run with
``--out DIR`` (or ``bench leaderboard --results DIR``) writes everything under ``DIR``, the
leaderboard files at its top.

Exit status: 0 all good, 1 some cells failed, 2 bad input (config, plugin, data), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError
from bench.plugin.specs import KINDS

if TYPE_CHECKING:
    from bench.plugin.registry import Registry

EXIT_OK, EXIT_FAILED_CELLS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# ---------------------------------------------------------------------------------------
# plugins / list
# ---------------------------------------------------------------------------------------
def cmd_plugins(args: argparse.Namespace) -> int:
    from bench.plugin.registry import registry

    reg = registry()
    infos = [p.to_dict() for p in reg.plugins]
    conflicts = [c.to_dict() for c in reg.conflicts]
    roles = {name: r.role for name, r in reg["explainer"].items() if r.role is not None}
    for p in infos:
        mine = {n: roles[n] for n in p["components"].get("explainer", []) if n in roles}
        if mine:
            p["roles"] = mine  # explainer name -> role
    if args.json:
        print(json.dumps({"plugins": infos, "conflicts": conflicts}, indent=2))
        return EXIT_OK
    from tabulate import tabulate

    clashing = {(c["kind"], c["name"]) for c in conflicts}
    rows = []
    for p in infos:
        comps = "; ".join(
            f"{k}: " + ", ".join(
                f"{n} (CONFLICT)" if (k, n) in clashing
                else f"{n} ({p['roles'][n]})" if k == "explainer" and p.get("roles", {}).get(n, "method") != "method"
                else n
                for n in v
            )
            for k, v in p["components"].items()
        ) or "-"
        status = p["status"] if p["status"] == "ok" else f"{p['status']}: {p['error']}"
        rows.append([p["name"], p["distribution"] or "-", p["version"] or "-", comps, status, p["file"] or "-"])
    print(tabulate(rows, headers=["plugin", "distribution", "version", "components", "status", "file"]))
    if conflicts:
        print("\nconflicts: each name below is registered more than once and is unavailable "
              "(neither is used; `all` skips it) until one registration is uninstalled or blocked:")
        crows = [
            [c["kind"], c["name"], r["plugin"], r["distribution"] or "-", r["version"] or "-", r["disable"]]
            for c in conflicts
            for r in c["registrations"]
        ]
        print(tabulate(crows, headers=["kind", "name", "plugin", "distribution", "version", "to block it"]))
    failed = reg.failed_plugins
    if failed:
        print(f"\n{len(failed)} plugin(s) failed to load; the others work.", file=sys.stderr)
    if conflicts:
        print(f"{len(conflicts)} name conflict(s); the other components work.", file=sys.stderr)
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from bench.plugin.registry import normalise_kind, registry

    kind = normalise_kind(args.kind)
    table = registry()[kind]
    if args.json:
        extra = {"explainer": "masks", "executor": "requires"}.get(kind)
        print(json.dumps([r.provenance() | {"description": r.spec.description}
                          | ({extra: list(getattr(r.spec, extra, ()))} if extra else {})
                          for r in table.values()], indent=2))
        return EXIT_OK
    from tabulate import tabulate

    entries = sorted(table.values(), key=lambda r: r.name)
    if kind == "explainer":  # methods first, then the controls (reference lines, not competitors)
        entries.sort(key=lambda r: r.role not in (None, "method"))
        rows = [[r.name, r.role or "", ", ".join(getattr(r.spec, "masks", ())), r.version, r.plugin.name,
                 r.spec.description] for r in entries]
        print(tabulate(rows, headers=[kind, "role", "masks", "version", "plugin", "description"]))
        return EXIT_OK
    if kind == "executor":  # what each needs installed
        rows = [[r.name, ", ".join(getattr(r.spec, "requires", ())), r.version, r.plugin.name, r.spec.description]
                for r in entries]
        print(tabulate(rows, headers=[kind, "requires", "version", "plugin", "description"]))
        return EXIT_OK
    if kind == "metric":  # what each needs, and which way is better
        rows = [[r.name, getattr(r.spec, "family", ""),
                 "higher" if getattr(r.spec, "higher_is_better", True) else "lower",
                 ", ".join(r.spec.inputs.names()) if hasattr(r.spec, "inputs") else "",
                 r.version, r.plugin.name, r.spec.description] for r in entries]
        print(tabulate(rows, headers=[kind, "family", "better", "inputs", "version", "plugin", "description"]))
        return EXIT_OK
    rows = [[r.name, r.version, r.plugin.name, r.spec.description] for r in entries]
    print(tabulate(rows, headers=[kind, "version", "plugin", "description"]))
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------
def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``--set aopc.grid=3`` -> {"aopc": {"grid": 3}} (values parsed as TOML, else string)."""
    from bench.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from bench.config.loading import ALL, merge

    o: dict[str, Any] = {}

    def put(section: str, key: str, value: Any) -> None:
        o.setdefault(section, {})[key] = value

    if args.all:
        # every competitor: models x explainers. A perturbation is a setting of the
        # perturbation metrics (the study's Gaussian noise), not a competitor: the
        # config's perturbations and metrics stay (--perturbation all for every one)
        for section in ("models", "explainers"):
            put(section, "names", [ALL])
    if args.dataset:
        put("dataset", "name", args.dataset)
    if args.model:
        put("models", "names", args.model)
    if args.explainer:
        put("explainers", "names", args.explainer)
    if args.perturbation:
        put("perturbations", "names", args.perturbation)
    if args.metric:  # the metrics named on the command line; the first one ranks the rows
        put("metrics", "names", args.metric)
        put("leaderboard", "primary", args.metric[0])
    if args.data:
        put("dataset", "data", str(Path(args.data).expanduser()))
    if args.weights:
        put("models", "weights", args.weights)
    if args.executor:
        put("run", "executor", args.executor)
    if args.ray_address:
        put("run", "ray_address", args.ray_address)
    if args.ray_gpus is not None:
        put("run", "ray_gpus", args.ray_gpus)
    if args.out:
        put("run", "out", args.out)
    if args.seed is not None:
        put("run", "seed", args.seed)
    return merge(o, _parse_set(args.set or []))


def warn_plugin_problems(reg: Registry) -> None:
    """One stderr line per failed plugin and per name conflict (``bench run`` starts with these)."""
    for p in reg.failed_plugins:
        print(f"bench: warning: {p.label} failed and is not used: {p.error} "
              f"(to silence this, uninstall it or set {p.disable})", file=sys.stderr)
    for c in reg.conflicts:
        print(f"bench: warning: {c.message()}", file=sys.stderr)


def refuse_conflicting_names(cfg: Mapping[str, Any], reg: Registry) -> None:
    """A config that names a conflicting component fails here (exit 2), naming its key."""
    from bench.config.loading import SECTION_KIND
    from bench.errors import PluginConflictError

    selected = [("dataset.name", "dataset", cfg["dataset"]["name"])]
    for section, kind in SECTION_KIND.items():
        selected += [(f"{section}.names[{i}]", kind, n) for i, n in enumerate(cfg[section]["names"])]
        selected += [(f"{section}.params.{n}", kind, n) for n in cfg[section].get("params", {})]
    for key, kind, name in selected:
        conflict = reg.conflict(kind, name) if isinstance(name, str) else None
        if conflict is not None:
            raise PluginConflictError(f"{key}: {conflict.message()}")


def cmd_run(args: argparse.Namespace) -> int:
    from bench.config.loading import load_config
    from bench.pipeline import make_plan, plan_summary, run
    from bench.plugin.registry import registry

    reg = registry()
    warn_plugin_problems(reg)
    cfg = load_config(args.config, preset=args.preset, overrides=run_overrides(args))
    refuse_conflicting_names(cfg, reg)
    if args.dry_run or args.calibrate:
        plan = make_plan(cfg)  # every config error surfaces here (exit 2), see make_plan
        return dry_run(plan, plan_summary(plan), calibrate=args.calibrate, as_json=args.json)
    result = run(cfg, quiet=args.quiet)
    print(f"\nrun {result.run_id}: {len(result.cells)} cells, {len(result.failed)} failed -> {result.run_dir}")
    if result.summary:  # the compact table; the last lines say where the full tables are
        print("\n" + result.summary, end="")
    if result.failed:
        print("\nfailed cells:", file=sys.stderr)
        for c in result.failed:
            print(f"  {c.cell_id} (stage {c.stage}): {c.error}", file=sys.stderr)
    if result.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if result.ok else EXIT_FAILED_CELLS


def _count(value: float | None) -> str:
    """A pass count, short: 950, 12.3k, 4.56M; ``?`` unknown."""
    if value is None:
        return "?"
    if value < 10_000:
        return f"{value:.0f}"
    if value < 1_000_000:
        return f"{value / 1e3:.1f}k"
    return f"{value / 1e6:.2f}M"


def _duration(seconds: float | None) -> str:
    """A duration, short: 0.4s, 12s, 3m05s, 2h10m; ``-`` unknown."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def dry_run(plan: Any, summary: Mapping[str, Any], *, calibrate: bool = False, as_json: bool = False) -> int:
    """``bench run --dry-run``: the plan and, per cell and model, the forward passes it will cost;
    with a calibration (``--calibrate`` measures one per model), the time."""
    from bench.pipeline.estimate import calibrate_model, estimate_plan, image_shape_of

    if calibrate:
        shape = image_shape_of(plan)
        if shape is None:
            raise BenchError(f"--calibrate: dataset {plan.dataset!r} does not say its image size before it "
                             "loads; a run records its cells' cost without one")
        for name in plan.models:
            cal = calibrate_model(plan, name, shape)
            print(f"calibrated {name}: {cal.passes_per_second:.1f} forward passes/s at {shape[0]}x{shape[1]} "
                  f"(batch {cal.measured_batch}, {cal.seconds:.1f} s) -> {cal.path}", file=sys.stderr)
    est = estimate_plan(plan)
    for problem in est.problems:
        print(f"bench: warning: {problem}", file=sys.stderr)
    if as_json:
        print(json.dumps({"config": plan.config, "plan": dict(summary), "estimate": est.to_dict()},
                         indent=2, default=str))
        return EXIT_OK
    import textwrap

    from tabulate import tabulate

    def say(text: str) -> None:  # free text wrapped for a 120-column terminal
        lead = text[: len(text) - len(text.lstrip("\n"))]
        print(lead + textwrap.fill(text.lstrip("\n"), width=120, subsequent_indent="  ", break_on_hyphens=False))

    size = "" if est.image_shape is None else f" ({est.image_shape[0]}x{est.image_shape[1]})"
    say(f"plan: dataset {plan.dataset}{size}, {len(plan.models)} model(s) x {len(plan.explainers)} explainer(s) "
          f"x {len(plan.perturbations)} perturbation(s) = {len(plan.cells)} cells; {len(plan.metrics)} metric(s) "
          f"(primary {plan.primary or '-'}); executor {plan.executor}; results {plan.results_dir}")
    for name, why in plan.dropped.items():
        say(f"  left out: {name}: {why}")
    if est.cells:
        first = est.cells[0]
        curves = ", ".join(
            f"{c.order}/{c.perturbation}" + (f" (<= {cap} img)" if (cap := _curve_cap(plan, c)) else "")
            for c in first.curves) or "none"
        say(f"curves per cell: {curves}; {est.steps} steps each (regions + 1)")
    rows = []
    for m in est.models.values():
        cal = m.calibration
        images = "?" if m.images is None else f"{m.images}" if m.images_exact else f"<= {m.images}"
        rows.append([m.name, "cached" if m.train_cached else _count(m.train_passes), images,
                     f"{cal.passes_per_second:.1f}/s" if cal else "none", _duration(m.seconds)])
    print()
    print(tabulate(rows, headers=["model", "training passes", "explained images", "calibration", "training time"]))
    rows = []
    for c in est.cells:
        unknown_metrics = any(p is None and not c.metrics_cached.get(n) for n, p in c.metrics.items())
        all_metrics_cached = bool(c.metrics) and all(c.metrics_cached.get(n) for n in c.metrics)
        metrics = "cached" if all_metrics_cached else _count(c.metric_passes) + ("+?" if unknown_metrics else "")
        curves = "cached" if c.curves and all(x.cached for x in c.curves) else _count(c.curve_passes)
        rows.append([c.task.model, c.task.explainer, c.task.perturbation,
                     "?" if c.images is None else c.images,
                     "cached" if c.explain_cached else _count(c.explain_passes), curves, metrics,
                     "cached" if c.cached else _count(c.passes) + ("+?" if c.unknown else ""),
                     _duration(c.seconds) if c.passes > 0 or c.seconds is None else "0s"])
    print()
    print(tabulate(rows, headers=["model", "explainer", "perturbation", "images", "explain", "curves", "metrics",
                                  "passes", "time"]))
    train = sum(m.train_passes or 0.0 for m in est.models.values() if not m.train_cached)
    total = f"\ntotal: {_count(est.passes)} forward passes to compute (training {_count(train)}, cells " \
            f"{_count(est.passes - train)})"
    seconds = est.seconds
    say(total + (f", about {_duration(seconds)} on this machine" if seconds is not None else ""))
    if est.unknown:
        say("not counted (their cost is known only once they ran): " + ", ".join(est.unknown))
    if any(m.images is not None and not m.images_exact for m in est.models.values()):
        say("images: '<=' is an upper bound (the correctly classified test images, capped by aopc.max_images, "
              "are known once the model is trained)")
    if not est.cache_probed:
        say("cache: not probed (the dataset is not cached, or its key means reading its files): "
              "stages already computed are counted too")
    if est.uncalibrated:
        say(f"no time estimate for {', '.join(est.uncalibrated)}: no calibration on this machine; "
              "`bench run --dry-run --calibrate` measures each model's throughput (a few seconds per model)")
    return EXIT_OK


def _curve_cap(plan: Any, curve: Any) -> int:
    from bench.pipeline.stages import curve_image_cap

    return curve_image_cap(plan, curve.order, curve.perturbation)


# ---------------------------------------------------------------------------------------
# leaderboard
# ---------------------------------------------------------------------------------------
def recorded_control(results: Path) -> str:
    """The gain reference the runs under ``results`` resolved (``leaderboard.control`` of their
    manifests' configs), when they all agree; ``""`` otherwise (then each family's only null control)."""
    from bench.pipeline.runs import load_manifests

    chosen = {
        str(((m.get("config") or {}).get("leaderboard") or {}).get("control") or "")
        for m in load_manifests(results).values()
    }
    chosen.discard("")
    return chosen.pop() if len(chosen) == 1 else ""


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench.publish.formats import normalise_format
    from bench.publish.leaderboard import build

    results = Path(args.results)
    if not (results / "runs").is_dir():
        raise BenchError(f"no runs under {str(results / 'runs')!r}: run `bench run` first")
    control = args.control or ""
    if args.baseline is not None:  # deprecated alias of --control
        print("bench: warning: --baseline is deprecated: the gain reference is each family's null-control "
              "explainer (by role); use --control NAME to choose one of several", file=sys.stderr)
        if control and control != args.baseline:
            raise BenchError(f"--control {control!r} and the deprecated --baseline {args.baseline!r} disagree")
        control = args.baseline
    if not control:
        control = recorded_control(results)
    primary = args.primary or None
    board = build(results, control=control, figures=not args.no_figures, primary=primary, publish=args.publish)
    if args.format:
        text = Path(board.paths[normalise_format(args.format)]).read_text(encoding="utf-8")
        if args.out:
            from bench.pipeline.store import atomic_write_text

            atomic_write_text(Path(args.out), text)
            print(f"wrote {args.out}")
        else:
            print(text)
    else:
        print(board.summary(), end="")
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# new-plugin
# ---------------------------------------------------------------------------------------
def cmd_new_plugin(args: argparse.Namespace) -> int:
    from bench.plugin.scaffold import render_plugin

    folder = render_plugin(args.name, kind=args.kind, directory=Path(args.dir))
    print(f"wrote {folder}\nnext: pip install -e {folder} && pytest {folder} && bench plugins")
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
def _dataset_component(name: str, data: str | None, params: Sequence[str]) -> Any:
    """The dataset, constructed and validated as the plan does (bad input: ConfigError, exit 2)."""
    from bench.pipeline import validated_component
    from bench.plugin.registry import accepted_params, registry

    kwargs: dict[str, Any] = {}
    for key, value in _parse_set([f"p.{item}" for item in params]).get("p", {}).items():
        kwargs[key] = value
    if data:
        names, var_kw = accepted_params(registry().get("dataset", name).load_factory())
        if "root" not in names and not var_kw:
            raise BenchError(f"dataset {name!r} reads no folder: --data is not accepted")
        kwargs["root"] = str(Path(data).expanduser())
    return validated_component("dataset", name, kwargs, key="dataset.params", names=list(kwargs))


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "describe":
        ds = _dataset_component(args.dataset, args.data, args.param or [])
        splits = ds.load()
        info = splits.describe()
        if args.json:
            print(json.dumps(info, indent=2))
            return EXIT_OK
        from tabulate import tabulate

        rows = [[c] + [info["splits"][s][c] for s in ("train", "val", "test")] for c in info["classes"]]
        rows.append(["total"] + [sum(info["splits"][s].values()) for s in ("train", "val", "test")])
        print(f"dataset {info['dataset']}  fingerprint {info['fingerprint']}  image size {info['image_size']}")
        masks = info["masks"]
        print("masks: " + (", ".join(f"{name} ({frac:.1%} of images)" for name, frac in masks.items()) or "none"))
        if info["positive_classes"]:
            print("positive classes: " + ", ".join(info["positive_classes"]))
        print(tabulate(rows, headers=["class", "train", "val", "test"]))
        return EXIT_OK
    if args.data_command == "show":
        from bench.publish.dataset_figure import write_dataset_grid

        ds = _dataset_component(args.name, args.data, args.param or [])
        path = write_dataset_grid(ds.load(), args.out, per_class=args.per_class, split=args.split)
        print(f"wrote {path}")
        return EXIT_OK
    raise BenchError("usage: bench data {describe,show}")


def cmd_config(args: argparse.Namespace) -> int:
    from bench.config.loading import load_config

    cfg = load_config(args.config, preset=args.preset, overrides=_parse_set(args.set or []))
    print(json.dumps(cfg, indent=2))
    return EXIT_OK


# ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from bench import __version__

    parser = argparse.ArgumentParser(
        prog="bench",
        description="Benchmark explanation methods (XAI) on image classifiers: which heatmaps are most faithful?",
    )
    parser.add_argument("--version", action="version", version=f"bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plugins", help="installed plugins, where they come from, what they register")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("list", help="registered components of one kind")
    p.add_argument("kind", choices=[k + "s" for k in KINDS] + list(KINDS))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="run the benchmark grid")
    p.add_argument("--all", action="store_true", help="every registered model x explainer, under the config's perturbations and metrics "
                   "(add --perturbation all for every perturbation)")
    p.add_argument("--dataset")
    p.add_argument("--model", action="append", metavar="M")
    p.add_argument("--explainer", action="append", metavar="E")
    p.add_argument("--perturbation", action="append", metavar="P")
    p.add_argument("--metric", action="append", metavar="M",
                   help="a metric to compute (repeatable; the first ranks the leaderboard)")
    p.add_argument("--config", metavar="FILE", help="TOML config (see bench/config/presets/*.toml)")
    p.add_argument("--preset", metavar="NAME", help="built-in preset: demo (default), covid-radiography")
    p.add_argument("--data", metavar="PATH", help="dataset folder (for datasets read from disk)")
    p.add_argument("--weights", metavar="imagenet|none|PATH")
    p.add_argument("--executor", metavar="NAME", help="who runs the cells: local (default), ray, or an "
                   "installed executor plugin (`bench list executors`)")
    p.add_argument("--ray-address", metavar="ADDRESS", help="'auto', ray://host:port; none = a local Ray")
    p.add_argument("--ray-gpus", type=float, metavar="N", help="GPUs per model task on Ray")
    p.add_argument("--out", "--results", dest="out", metavar="DIR",
                   help="results folder (default: results). Under results/ the run writes runs/, cache/ and its "
                        "leaderboard in local/, all ignored by git: the published results/leaderboard.* change "
                        "only with `bench leaderboard --publish`. Another DIR gets its leaderboard files at its top")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override any config key")
    p.add_argument("--dry-run", action="store_true",
                   help="check the config and print the cells and the forward passes each will cost (with a "
                        "calibration, the time), run nothing")
    p.add_argument("--calibrate", action="store_true",
                   help="with --dry-run: first measure each model's forward throughput on this machine (a few "
                        "seconds per model; cached under <results>/cache/calibration/) for the time estimate")
    p.add_argument("--json", action="store_true",
                   help="with --dry-run: print the resolved config, the plan and the estimate as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars or stage messages")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "leaderboard", help="rebuild the leaderboard from the runs (results/local/; --publish: results/)",
        description="Rebuild leaderboard.{md,csv,json,html,tex}, report.md and figures/ from <results>/runs/ "
                    "and print the compact table. For the default results/ they go to results/local/ (ignored "
                    "by git) unless --publish; for another --results DIR, to DIR.")
    p.add_argument("--publish", action="store_true",
                   help="rewrite the published, git-tracked files at the top of the results folder "
                        "(results/leaderboard.*, results/report.md, results/figures/)")
    p.add_argument("--format", choices=["md", "csv", "json", "html", "latex", "tex"],
                   help="print this format (or write it to --out) instead of the compact table")
    p.add_argument("--out", metavar="FILE", help="with --format: write the text to FILE")
    p.add_argument("--results", default="results", metavar="DIR", help="the folder that holds runs/ (default: results)")
    p.add_argument("--control", default="", metavar="EXPLAINER",
                   help="the control 'gain over control' is measured against (default: each family's "
                        "null-control explainer; needed when a family ran several)")
    p.add_argument("--baseline", default=None, help=argparse.SUPPRESS)  # deprecated alias of --control
    p.add_argument("--primary", default="", metavar="METRIC",
                   help="the metric rows are ranked by and gains use (default: the first metric column)")
    p.add_argument("--no-figures", action="store_true", help="tables only (faster)")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("new-plugin", help="write a ready-to-install plugin package")
    p.add_argument("name")
    p.add_argument("--kind", required=True,
                   choices=["explainer", "perturbation", "model", "dataset", "metric", "executor"])
    p.add_argument("--dir", default=".", metavar="DIR")
    p.set_defaults(func=cmd_new_plugin)

    p = sub.add_parser("data", help="describe or show a dataset")
    dsub = p.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser("describe")
    d.add_argument("--dataset", default="synthetic-cxr")
    d.add_argument("--data", metavar="PATH")
    d.add_argument("--param", action="append", metavar="KEY=VALUE")
    d.add_argument("--json", action="store_true")
    d = dsub.add_parser("show")
    d.add_argument("name")
    d.add_argument("--data", metavar="PATH")
    d.add_argument("--param", action="append", metavar="KEY=VALUE")
    d.add_argument("--out", required=True, metavar="FILE.png")
    d.add_argument("--per-class", type=int, default=4)
    d.add_argument("--split", default="train", choices=["train", "val", "test"])
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("config", help="print the resolved config")
    p.add_argument("--preset")
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override any config key (as bench run --set)")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_tensorflow()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
