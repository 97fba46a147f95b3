"""A benchmark run: the plan's cells through the chosen executor, the manifest, the leaderboard.

:func:`run` (``bench.run``, ``bench run``) loads and checks the config (:func:`make_plan`),
builds the executor ``run.executor`` names (a plugin, :mod:`bench.pipeline.executors`),
loads the dataset once, leaves out the explainers selected through ``all`` that need a mask
the dataset lacks (with a warning), hands the cells to the executor with a
:class:`RunContext`, and writes ``runs/<run>/manifest.json`` and the leaderboard. Ctrl-C
or SIGTERM keep the finished cells and mark the run interrupted; a run started again
recomputes nothing it already finished.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.config import loading as config_mod
from bench.errors import BenchError
from bench.pipeline.cell import now
from bench.pipeline.executors import RunContext, create_executor
from bench.pipeline.keys import bench_version, frozen_code_digests
from bench.pipeline.plan import Plan, check_image_fit, drop_unavailable_explainers, log, make_plan
from bench.pipeline.record import CellRecord
from bench.pipeline.stages import Stages, error_text
from bench.pipeline.store import content_key, write_json
from bench.plugin.registry import registry


def new_run_id(cfg: Mapping[str, Any]) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{stamp}-{content_key(cfg, time.time_ns())[:6]}"


class Terminated(KeyboardInterrupt):
    """SIGTERM during :func:`run`: handled like Ctrl-C (finished cells kept, run marked interrupted)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signum}")


def _catch_sigterm() -> Any:
    """Install the SIGTERM handler (main thread only); returns the previous one, or None."""
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):  # not the main thread, or no SIGTERM here
        return None
    return signal.SIG_DFL if previous is None else previous  # None: installed outside Python


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class RunResult:
    """What ``bench.run`` returns: the cell records, where they are, what failed."""

    run_id: str
    run_dir: Path
    cells: list[CellRecord] = field(default_factory=list)
    leaderboard: dict[str, Path] = field(default_factory=dict)
    interrupted: bool = False
    #: the compact plain-text table of the leaderboard and where its files are (``bench run`` prints it)
    summary: str = ""

    @property
    def failed(self) -> list[CellRecord]:
        return [c for c in self.cells if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per cell: the table of the run.

        ``cell_id``, the components, status, classification scores, ``n_images``; per metric
        (in the config's order): ``<metric>``, ``<metric>_ci_low``, ``<metric>_ci_high``,
        ``<metric>_n`` and ``<metric>_status``. The statistics across the cells (ranks, flags)
        are :meth:`to_frame`'s and :meth:`tables`'.
        """
        rows = []
        for cell in self.cells:
            c = cell if isinstance(cell, CellRecord) else CellRecord.from_dict(cell)
            classification = c.classification or {}
            base: dict[str, Any] = {
                "cell_id": c.cell_id,
                "dataset": c.dataset,
                "model": c.model,
                "weights": c.weights,
                "explainer": c.explainer,
                "perturbation": c.perturbation,
                "status": c.status,
                "error": c.error,
                "recall_macro": classification.get("recall_macro"),
                "f1_macro": classification.get("f1_macro"),
                "accuracy": classification.get("accuracy"),
                "n_images": c.n_images,
            }
            for name, m in c.metrics.items():
                lo, hi = m.ci if m.ci is not None else (None, None)
                base.update({name: m.value if m.ok else None, f"{name}_ci_low": lo, f"{name}_ci_high": hi,
                             f"{name}_n": m.n, f"{name}_status": m.status})
            rows.append(base)
        return rows

    def _board(self) -> Any:
        """The run's own leaderboard (:func:`bench.publish.leaderboard.analyse_run`), computed once;
        None when no cell finished (or the statistics cannot be read)."""
        if "_board_cache" not in self.__dict__:
            board = None
            if any(c.ok for c in self.cells if isinstance(c, CellRecord)) and self.run_dir.is_dir():
                from bench.publish.leaderboard import analyse_run

                try:
                    board = analyse_run(self.run_dir)
                except BenchError as exc:
                    import warnings

                    warnings.warn(f"the statistics of run {self.run_id} are not available: {exc}", stacklevel=3)
            self.__dict__["_board_cache"] = board
        return self.__dict__["_board_cache"]

    def tables(self) -> dict[str, Any]:
        """The run's statistics tables, each a :class:`pandas.DataFrame`, by name.

        ``"rows"``: the leaderboard rows of the run's cells (public columns, the primary
        metric's ``rank``/``rank_low``/``rank_high``/``p_best``, ``power``, ``sanity_flags``);
        ``"ranks"``: every metric's ranks with intervals and P(best) per family (controls as
        reference rows); ``"comparisons"``: the paired tests of the mean with verdicts;
        ``"power"``: metric power from the controls; ``"normalised"``; ``"sanity"``: the
        sanity gates per explainer; ``"kendall"`` / ``"alpha"``: agreement between metrics;
        ``"aggregate"``: the mean rank (an aggregate, never a single truth); ``"per_class"``;
        ``"cross_model"``; ``"notes"``. Computed from the run's cell records as ``bench
        leaderboard`` does (:func:`bench.publish.leaderboard.analyse_run`), once; empty when no
        cell finished.
        """
        board = self._board()
        return board.tables() if board is not None else {}

    def to_frame(self) -> Any:
        """:meth:`rows` as a DataFrame, with the statistics as columns.

        Per metric ``M`` of the run: ``M_rank``, ``M_rank_low``, ``M_rank_high`` (the rank among
        the methods of the row's family, with its paired-bootstrap interval; NaN for a control),
        ``M_p_best`` and ``M_power`` (the metric's verdict on the family's controls, "" when not
        measured); ``sanity_flags`` (the sanity gates the explainer fails) and ``aggregate_rank``.
        The other tables: :meth:`tables`.
        """
        import pandas as pd

        frame = pd.DataFrame(self.rows())
        board = self._board()
        if board is None or board.analysis is None or frame.empty:
            return frame
        a = board.analysis
        rows = board.frame
        by_cell = {str(cid): i for i, cid in enumerate(rows["cell_id"])} if "cell_id" in rows.columns else {}
        group = a.group_columns
        keys = [tuple(str(rows[c].iloc[i]) for c in group) + (str(rows["explainer"].iloc[i]),
                str(rows["explainer_params"].iloc[i])) for i in range(len(rows))]
        extra: dict[str, list[Any]] = {}
        index = {}
        for r in a.ranks.to_dict("records"):
            index[(*(str(r[c]) for c in group), str(r["explainer"]), str(r["explainer_params"]), r["metric"])] = r
        agg = {(*(str(r[c]) for c in group), str(r["explainer"]), str(r["explainer_params"])): r["mean_rank"]
               for r in a.aggregate.to_dict("records")}
        metrics = list(dict.fromkeys(a.ranks["metric"])) if len(a.ranks) else []
        for cid in frame["cell_id"]:
            i = by_cell.get(str(cid))
            key = keys[i] if i is not None else None
            for metric in metrics:
                hit = index.get((*key, metric)) if key is not None else None
                for suffix in ("rank", "rank_low", "rank_high", "p_best"):
                    extra.setdefault(f"{metric}_{suffix}", []).append(hit[suffix] if hit is not None else float("nan"))
                extra.setdefault(f"{metric}_power", []).append(
                    a.power_of(key[:len(group)], metric) if key is not None else "")
            extra.setdefault("sanity_flags", []).append(rows["sanity_flags"].iloc[i] if i is not None else "")
            extra.setdefault("aggregate_rank", []).append(agg.get(key, float("nan")) if key is not None
                                                          else float("nan"))
        return pd.concat([frame, pd.DataFrame(extra, index=frame.index)], axis=1)


def _release_engine_buffers() -> None:
    """Give back the memory the incremental engine keeps between calls (where it ran at all)."""
    engine = sys.modules.get("bench.engine.incremental")
    if engine is not None:
        engine.release_buffers()


@frozen_code_digests()
def run(
    config: str | Path | Mapping[str, Any] | None = None,
    *,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    quiet: bool = False,
    leaderboard: bool = True,
) -> RunResult:
    """Run the benchmark grid described by ``config`` (same as ``bench run``).

    ``config`` may be a TOML path, a mapping, or an already-loaded config from
    :func:`bench.config.loading.load_config`. Returns a :class:`RunResult`;
    ``result.to_frame()`` is the table as a pandas DataFrame.
    """
    cfg = config_mod.load_config(config, preset=preset, overrides=overrides)
    plan = make_plan(cfg)
    cfg = plan.config  # as the plan resolved it (leaderboard.control: the grid's null control)
    executor = create_executor(plan.executor, plan.executor_params)
    results_dir = plan.results_dir
    from bench.pipeline.environment import environment
    from bench.pipeline.runs import load_manifests, process_identity

    load_manifests(results_dir)  # marks runs whose process is gone (SIGKILL, power cut) interrupted
    run_id = new_run_id(cfg)
    run_dir = results_dir / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    stages = Stages(plan, quiet=quiet)
    reg = registry()
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "status": "running",
        "created": now(),
        "finished": None,
        "bench_version": bench_version(),
        "config": cfg,
        "executor": plan.executor,
        "executor_params": executor.get_params() if hasattr(executor, "get_params") else {},
        "executor_provenance": reg.get("executor", plan.executor).provenance(),
        "environment": environment(),
        "plugins": [p.to_dict() for p in reg.plugins],
        "components": {
            "dataset": reg.get("dataset", plan.dataset).provenance(),
            "models": [reg.get("model", n).provenance() for n in plan.models],
            "explainers": [reg.get("explainer", n).provenance()
                           for n in dict.fromkeys(plan.registered_explainer(e) for e in plan.explainers)],
            "perturbations": [reg.get("perturbation", n).provenance() for n in plan.perturbations],
            "metrics": [reg.get("metric", n).provenance() for n in plan.metrics],
        },
        "metrics": {"names": list(plan.metrics), "orders": list(plan.orders), "primary": plan.primary},
        "seeds": {"run": cfg["run"]["seed"]},
        "process": process_identity(),
        "cells": [t.cell_id for t in plan.cells],
        "failed": [],
        "timings": {},
        "dataset": None,
    }
    write_json(run_dir / "manifest.json", manifest)
    result = RunResult(run_id=run_id, run_dir=run_dir)
    t0 = time.perf_counter()
    log(
        f"bench run {run_id}: {len(plan.cells)} cells = {len(plan.models)} models x "
        f"{len(plan.explainers)} explainers x {len(plan.perturbations)} perturbations on {plan.dataset}; "
        f"metrics {', '.join(plan.metrics)} (curves: {', '.join(plan.orders) or 'none'})",
        quiet=quiet,
    )
    previous_sigterm = _catch_sigterm()
    try:
        try:
            data = stages.dataset()
            # the grid and the models against the real images (a dataset may not declare its size)
            check_image_fit(plan, data.splits.image_shape, data.splits.num_classes)
            manifest["dataset"] = {
                "name": data.splits.name,
                "fingerprint": data.splits.fingerprint,
                "params": data.params,
                "file": str(data.file.resolve()),
                "class_names": list(data.splits.class_names),
                "counts": data.splits.counts(),
                "metadata_keys": sorted(data.splits.metadata),
            }
            write_json(run_dir / "dataset.json", {**manifest["dataset"], "metadata": data.splits.metadata})
            skipped = drop_unavailable_explainers(plan, data.splits.mask_names)
            for name, why in skipped.items():
                log(f"warning: {why}: explainer {name!r} (selected through 'all') is left out of this grid",
                    quiet=quiet)
            if skipped:
                manifest["skipped"] = {
                    "explainers": dict(skipped),
                    "cells": [c for c in manifest["cells"] if c not in {t.cell_id for t in plan.cells}],
                }
                manifest["cells"] = [t.cell_id for t in plan.cells]
                write_json(run_dir / "manifest.json", manifest)
        except (KeyboardInterrupt, SystemExit, BenchError):
            # bad input (missing folder, corrupt image, bad parameter): stop before any cell runs
            raise
        except BaseException as exc:  # a crashing dataset plugin fails every cell, with its message
            log(f"[dataset] failed: {error_text(exc)}", quiet=quiet)
        context = RunContext(plan=plan, stages=stages, run_dir=run_dir, run_id=run_id, quiet=quiet)
        for i, record in enumerate(executor.run_cells(context, plan.cells), 1):
            result.cells.append(record)
            status = "ok" if record.ok else f"FAILED in {record.stage}: {record.error}"
            head = record.metric(plan.primary)
            shown = f" {head.display_label}={head.value:.4f}" if head is not None and head.ok else ""
            problems = [f"{m.name} {m.status}: {m.error}" for m in record.metrics.values() if not m.ok]
            shown += "".join(f"; {text}" for text in problems)
            log(f"[{i}/{len(plan.cells)}] {record.cell_id}: {status}{shown}", quiet=quiet)
            if cfg["run"]["fail_fast"] and not record.ok:
                break
    except KeyboardInterrupt as exc:
        result.interrupted = True
        if isinstance(exc, Terminated):
            manifest["signal"] = "SIGTERM"
        log("interrupted: finished cells are saved; run again to finish the rest (cached work is reused)")
    except BaseException as exc:
        manifest["error"] = error_text(exc)
        raise
    finally:
        _restore_sigterm(previous_sigterm)
        _release_engine_buffers()
        manifest["failed"] = [c.cell_id for c in result.failed]
        manifest["finished"] = now()
        if "error" in manifest:
            manifest["status"] = "error"
        else:
            manifest["status"] = "interrupted" if result.interrupted else ("failed" if result.failed else "ok")
        manifest["timings"]["total_seconds"] = time.perf_counter() - t0
        manifest["cell_timings"] = {c.cell_id: c.timings.to_dict() for c in result.cells}
        write_json(run_dir / "manifest.json", manifest)
    if leaderboard and not result.interrupted and any(c.ok for c in result.cells):
        from bench.publish.leaderboard import build

        # the published leaderboard (results/leaderboard.*) is never rewritten by a run: a run of
        # that folder writes its own under results/local/ (bench.publish.leaderboard.output_dir)
        board = build(
            results_dir,
            formats=tuple(cfg["leaderboard"]["formats"]),
            control=cfg["leaderboard"]["control"],
            figures=bool(cfg["leaderboard"]["figures"]),
            primary=plan.primary,
            metrics=plan.metrics,
        )
        result.leaderboard = board.paths
        result.summary = board.summary()
    return result


def plan_summary(plan: Plan) -> dict[str, Any]:
    """The plan as plain data (``bench run --dry-run``)."""
    return {
        "dataset": plan.dataset,
        "models": plan.models,
        "explainers": plan.explainers,
        "perturbations": plan.perturbations,
        "metrics": plan.metrics,
        "executor": plan.executor,
        "executor_params": plan.executor_params,
        "orders": list(plan.orders),
        "primary": plan.primary,
        "cells": [asdict(t) | {"cell_id": t.cell_id} for t in plan.cells],
    }
