"""One stage graph, declared once, walked by every executor; executors are plugins.

A third-party executor installed through a real entry point (a fake *.dist-info on
sys.path) walks the graph its own way (breadth-first over the whole grid, through
``RunContext`` only) and writes the same records as the built-in local executor, with no
change in bench. The graph itself: which jobs a plan's cells have (only the curve orders
the metrics need), the shared ones once, their dependencies.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _plugin_fixtures import make_distribution

import bench
from bench import pipeline
from bench.cli import main
from bench.config import loading as config_mod
from bench.errors import BenchError, ConfigError
from bench.pipeline import STAGE_GRAPH, Job, make_plan
from bench.pipeline.store import read_json

GRID = {
    "preset": "demo",
    "dataset": {"name": "synthetic-cxr", "params": {"image_size": 32, "per_class": 16, "split": [0.5, 0.1, 0.4]}},
    "models": {"names": ["simple-cnn"]},
    "training": {"epochs": 1, "batch_size": 16},
    "explainers": {"names": ["gradcam", "random", "t-graph-raise"]},
    "perturbations": {"names": ["gaussian-noise"]},
    "aopc": {"grid": 3, "max_images": 4, "bootstrap": 200},
    "metrics": {"names": ["aopc", "abpc", "t-graph-mean"]},
    "leaderboard": {"formats": ["csv"], "figures": False},
}

EXECUTOR_PLUGIN = '''
import numpy as np

from bench import ExecutorSpec, ExplainerSpec, MetricInputs, MetricSpec, hookimpl


class BreadthFirst:
    """Walks the stage graph breadth-first over the whole grid, then writes every record.

    Only public names of bench: the RunContext it is given, the jobs and their deps.
    """

    def __init__(self, *, reverse=False):
        self.reverse = reverse

    def get_params(self):
        return {"reverse": self.reverse}

    def run_cells(self, context, tasks):
        tasks = list(tasks)[::-1] if self.reverse else list(tasks)
        failures, done = {}, []
        for job in context.grid_jobs(tasks):
            if any(d.id in failures for d in context.deps(job)):
                failures[job.id] = failures[next(d.id for d in context.deps(job) if d.id in failures)]
                continue
            try:
                context.compute(job)
                done.append(job.id)
            except Exception as failure:  # a CellFailure: record it at its job
                failures[job.id] = failure.exc
        LOG.append(done)
        for task in tasks:
            mine = {j.id: failures[j.id] for j in context.jobs(task) if j.id in failures}
            yield context.finish_cell(task, failures=mine)


class NoRunCells:
    def get_params(self):
        return {}


class Raising:
    def get_params(self):
        return {}

    def explain(self, model, images, targets):
        raise RuntimeError("explainer blew up on purpose")


class MeanHeat:
    def get_params(self):
        return {}

    def compute(self, data):
        return {"t-graph-mean": np.asarray(data.heatmaps, np.float64).mean(axis=(1, 2))}


LOG = []


@hookimpl
def bench_register_metrics():
    return [MetricSpec(name="t-graph-mean", factory=MeanHeat, family="complexity",
                       inputs=MetricInputs(heatmaps=True))]


@hookimpl
def bench_register_executors():
    return [ExecutorSpec(name="t-breadth-first", factory=BreadthFirst, description="breadth-first"),
            ExecutorSpec(name="t-no-run-cells", factory=NoRunCells)]


@hookimpl
def bench_register_explainers():
    return [ExplainerSpec(name="t-graph-raise", factory=Raising)]
'''


@pytest.fixture(scope="module")
def executor_plugin(tmp_path_factory):
    root = make_distribution(
        tmp_path_factory.mktemp("executor-plugin"), "bench-breadth-first", "0.3",
        {"breadth_first": "bench_breadth_first"}, {"bench_breadth_first": EXECUTOR_PLUGIN},
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        bench.registry(reload=True)
        yield root
    bench.registry(reload=True)


def grid(out, executor="local", **sections):
    cfg = json.loads(json.dumps(GRID))
    cfg["run"] = {"out": str(out), "executor": executor}
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


@pytest.fixture(scope="module")
def both(executor_plugin, tmp_path_factory):
    out = tmp_path_factory.mktemp("graph-runs")
    pipeline.clear_memo()
    local = bench.run(grid(out / "local"), quiet=True)
    pipeline.clear_memo()
    third = bench.run(grid(out / "third", "t-breadth-first",
                           executors={"params": {"t-breadth-first": {"reverse": True}}}), quiet=True)
    return local, third


def test_the_graph_is_declared_once():
    assert STAGE_GRAPH.names == ("dataset", "model", "heatmaps", "curves", "metrics")
    labels = {n.name: n.label for n in STAGE_GRAPH}
    assert labels == {"dataset": "dataset", "model": "train", "heatmaps": "explain", "curves": "evaluate",
                      "metrics": "metrics"}
    for node in STAGE_GRAPH:  # each stage reads only stages declared before it
        assert all(STAGE_GRAPH.names.index(n) < STAGE_GRAPH.names.index(node.name) for n in node.needs)
    assert [n.name for n in STAGE_GRAPH if n.shardable] == ["curves"]
    assert [n.name for n in STAGE_GRAPH if n.final] == ["metrics"]
    with pytest.raises(ValueError, match="not declared before"):
        pipeline.StageGraph([pipeline.StageNode(name="b", label="b", needs=("a",), scope=(), compute=print)])


def test_jobs_follow_the_metrics_and_shared_jobs_come_once(executor_plugin, tmp_path):
    plan = make_plan(config_mod.load_config(grid(tmp_path, metrics={"names": ["aopc"]})))
    task = plan.cells[0]
    jobs = STAGE_GRAPH.cell_jobs(plan, task)
    assert [j.stage for j in jobs] == ["dataset", "model", "heatmaps", "curves", "metrics"]
    assert [j.order for j in jobs if j.stage == "curves"] == ["morf"]  # only what the metric needs
    two = make_plan(config_mod.load_config(grid(tmp_path, metrics={"names": ["aopc", "abpc"]})))
    assert [j.order for j in STAGE_GRAPH.cell_jobs(two, task) if j.stage == "curves"] == ["morf", "lerf"]
    every = STAGE_GRAPH.grid_jobs(two, two.cells)  # 3 cells: one dataset, one model, 3 heatmaps, 6 curves
    assert [j.stage for j in every].count("dataset") == 1 and [j.stage for j in every].count("model") == 1
    assert [j.stage for j in every].count("heatmaps") == 3 and [j.stage for j in every].count("curves") == 6
    assert "metrics" not in {j.stage for j in every}  # the final stage runs where the record is written
    assert len({j.id for j in every}) == len(every)
    curves = next(j for j in every if j.stage == "curves")
    assert [d.stage for d in STAGE_GRAPH.deps(two, curves)] == ["dataset", "model", "heatmaps"]
    assert [j.stage for j in STAGE_GRAPH.closure(two, curves)] == ["dataset", "model", "heatmaps", "curves"]
    assert Job.from_dict(curves.to_dict()) == curves
    # two cells of one model share its dataset and model jobs: the same ids
    a, b = (STAGE_GRAPH.cell_jobs(two, t) for t in two.cells[:2])
    assert a[1].id == b[1].id and a[2].id != b[2].id
    # a grid whose metrics read no curves has no curves jobs
    none = make_plan(config_mod.load_config(grid(tmp_path, metrics={"names": ["t-graph-mean"]})))
    assert none.orders == ()
    assert [j.stage for j in STAGE_GRAPH.cell_jobs(none, task)] == ["dataset", "model", "heatmaps", "metrics"]


def test_a_third_party_executor_walks_the_graph_and_writes_the_local_records(both):
    local, third = both
    assert read_json(third.run_dir / "manifest.json")["executor"] == "t-breadth-first"
    prov = read_json(third.run_dir / "manifest.json")["executor_provenance"]
    assert prov["distribution"] == "bench-breadth-first" and prov["distribution_version"] == "0.3"
    assert read_json(third.run_dir / "manifest.json")["executor_params"] == {"reverse": True}
    import bench_breadth_first

    assert bench_breadth_first.LOG and bench_breadth_first.LOG[-1][0].startswith("dataset[")
    lcells, tcells = ({c.cell_id: c for c in r.cells} for r in (local, third))
    assert set(lcells) == set(tcells) and len(tcells) == 3
    for cell_id, lc in lcells.items():
        tc = tcells[cell_id]
        assert (tc.status, tc.stage, tc.error) == (lc.status, lc.stage, lc.error)
        assert tc.n_images == lc.n_images and tc.orders == lc.orders and tc.classification == lc.classification
        assert set(tc.to_dict()) == set(lc.to_dict())
        assert tc.settings_key == lc.settings_key and tc.keys == lc.keys
        for name, lm in lc.metrics.items():
            tm = tc.metrics[name]
            assert tm.status == lm.status == "ok"
            np.testing.assert_allclose(tm.value, lm.value, atol=1e-5)
            np.testing.assert_allclose(tm.ci, lm.ci, atol=1e-5)
        if lc.ok:
            larr = np.load(local.run_dir / lc.curves_file)
            tarr = np.load(third.run_dir / tc.curves_file)
            for key in larr.files:
                if larr[key].dtype.kind == "f":
                    np.testing.assert_allclose(tarr[key], larr[key], atol=1e-5)
                else:
                    np.testing.assert_array_equal(tarr[key], larr[key])
    failed = tcells["synthetic-cxr__simple-cnn__t-graph-raise__gaussian-noise"]
    assert failed.stage == "explain" and "explainer blew up on purpose" in failed.error
    assert [c.cell_id for c in third.failed] == [failed.cell_id]


def test_executors_are_listed_and_named_in_the_cli(executor_plugin, capsys, tmp_path):
    assert main(["list", "executors", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"local", "ray", "t-breadth-first"} <= set(rows)
    assert rows["local"]["distribution"] == "saliency-bench" and rows["ray"]["requires"] == ["ray"]
    assert rows["t-breadth-first"]["distribution"] == "bench-breadth-first"
    assert main(["plugins", "--json"]) == 0
    plugins = {p["name"]: p for p in json.loads(capsys.readouterr().out)["plugins"]}
    assert plugins["executors"]["components"]["executor"] == ["local", "ray"]
    args = ["run", "--preset", "demo", "--explainer", "gradcam", "--explainer", "random", "--metric", "aopc",
            "--dry-run", "--json"]
    assert main([*args, "--executor", "t-breadth-frist"]) == 2
    assert "did you mean 't-breadth-first'" in capsys.readouterr().err
    assert main([*args, "--executor", "t-breadth-first"]) == 0
    assert json.loads(capsys.readouterr().out)["plan"]["executor"] == "t-breadth-first"


@pytest.mark.parametrize(
    "run, executors, match",
    [
        ({"executor": "rey"}, {}, "run.executor: unknown executor 'rey'.*did you mean 'ray'"),
        ({"executor": "local"}, {"params": {"lokal": {}}}, "executors.params.lokal: unknown executor.*'local'"),
        ({"executor": "local"}, {"params": {"local": {"threads": 2}}}, "executors.params.local has no parameter 'threads'"),
        ({"executor": "t-breadth-first"}, {"params": {"t-breadth-first": {"reverse": 1, "x": 2}}},
         "has no parameter 'x'"),
    ],
)
def test_the_executor_is_checked_at_plan_time(executor_plugin, tmp_path, run, executors, match):
    cfg = grid(tmp_path)
    cfg["run"].update(run)
    cfg["executors"] = executors
    with pytest.raises(ConfigError, match=match):
        make_plan(config_mod.load_config(cfg))


def test_an_executor_without_run_cells_is_refused(executor_plugin, tmp_path):
    with pytest.raises(ConfigError, match="has no run_cells"):
        bench.run(grid(tmp_path, "t-no-run-cells"), quiet=True)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(BenchError, match="did you mean"):
        pipeline.get_executor("lokal")


def test_the_conformance_kit_checks_an_executor_against_local(executor_plugin):
    import bench_breadth_first

    from bench.testing import check_executor, checks_for

    names = [name for name, _ in checks_for(bench_breadth_first.BreadthFirst())]
    assert names == ["check_get_params", "check_clone", "check_executor_matches_local"]
    check_executor(bench_breadth_first.BreadthFirst(reverse=True))

    class Forgetful(bench_breadth_first.BreadthFirst):
        def run_cells(self, context, tasks):  # drops the last cell
            yield from list(super().run_cells(context, tasks))[:-1]

    with pytest.raises(AssertionError, match="one record per task"):
        check_executor(Forgetful())
