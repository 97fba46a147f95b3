"""Plugin discovery through real entry points, isolation of broken plugins, conflicts, blocking."""

from __future__ import annotations

import dataclasses
import json

import pytest
from _plugin_fixtures import EXPLAINER_PLUGIN, make_distribution

import bench
from bench.cli import main
from bench.errors import PluginConflictError, PluginError, UnknownComponentError
from bench.plugin import registry as plugins_mod

BUILTIN_KINDS = {"dataset", "model", "explainer", "perturbation", "metric", "executor"}


@pytest.fixture(autouse=True)
def _fresh_registry():
    plugins_mod._cached = None
    yield
    plugins_mod._cached = None  # rescanned lazily, after monkeypatch restored sys.path


def _add_dist(tmp_path, monkeypatch, dist="bench-center", version="1.2.3", ep="center", mod="center_mod",
              name="center-prior", source=None):
    root = make_distribution(
        tmp_path / dist, dist, version, {ep: mod},
        {mod: source if source is not None else EXPLAINER_PLUGIN.replace("{name}", name)},
    )
    monkeypatch.syspath_prepend(str(root))
    return root


def test_builtins_are_found_through_entry_points():
    reg = bench.registry(reload=True)
    for p in reg.plugins:
        assert p.status == "ok", p.to_dict()
        assert p.distribution == "saliency-bench"
    assert {"gradcam", "random"} <= set(reg.names("explainer"))
    assert {"vgg16", "densenet201", "simple-cnn"} <= set(reg.names("model"))
    assert "gaussian-noise" in reg.names("perturbation")
    assert "synthetic-cxr" in reg.names("dataset")


def test_listing_plugins_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, bench; bench.registry(); print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_third_party_plugin_is_discovered(tmp_path, monkeypatch, capsys):
    _add_dist(tmp_path, monkeypatch)
    reg = bench.registry(reload=True)
    entry = reg.get("explainer", "center-prior")
    assert entry.plugin.distribution == "bench-center"
    assert entry.plugin.version == "1.2.3"
    assert entry.plugin.file.endswith("center_mod.py")
    explainer = bench.create("explainer", "center-prior", power=2.0)
    assert explainer.get_params() == {"power": 2.0}

    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    mine = [p for p in data["plugins"] if p["name"] == "center"]
    assert mine and mine[0]["components"] == {"explainer": ["center-prior"]}
    assert mine[0]["distribution"] == "bench-center" and mine[0]["status"] == "ok"


def test_broken_plugin_is_reported_and_the_rest_work(tmp_path, monkeypatch, capsys):
    _add_dist(tmp_path, monkeypatch, dist="bench-broken", ep="broken", mod="broken_mod",
              source="raise ImportError('needs libfoo 3')\n")
    reg = bench.registry(reload=True)
    broken = [p for p in reg.plugins if p.name == "broken"][0]
    assert broken.status == "failed"
    assert "needs libfoo 3" in broken.error
    assert broken.distribution == "bench-broken" and broken.version == "1.2.3"
    assert "gradcam" in reg.names("explainer")  # the rest still works
    assert main(["plugins"]) == 0
    captured = capsys.readouterr()
    assert "needs libfoo 3" in captured.out and "failed" in captured.out


def test_plugin_whose_hook_raises_is_isolated(tmp_path, monkeypatch):
    source = (
        "from bench import hookimpl\n"
        "@hookimpl\n"
        "def bench_register_explainers():\n"
        "    raise RuntimeError('registry exploded')\n"
    )
    _add_dist(tmp_path, monkeypatch, dist="bench-raises", ep="raises", mod="raises_mod", source=source)
    reg = bench.registry(reload=True)
    info = [p for p in reg.plugins if p.name == "raises"][0]
    assert info.status == "failed" and "registry exploded" in info.error
    assert "gradcam" in reg.names("explainer")


def test_misspelt_hook_fails_loudly(tmp_path, monkeypatch):
    source = (
        "from bench import hookimpl\n"
        "@hookimpl\n"
        "def bench_register_explainer():\n"  # singular: not a hook
        "    return []\n"
    )
    _add_dist(tmp_path, monkeypatch, dist="bench-typo", ep="typo", mod="typo_mod", source=source)
    info = [p for p in bench.registry(reload=True).plugins if p.name == "typo"][0]
    assert info.status == "failed"
    assert "bench_register_explainer" in info.error


def test_wrong_spec_type_is_reported(tmp_path, monkeypatch):
    source = (
        "from bench import hookimpl, ModelSpec\n"
        "@hookimpl\n"
        "def bench_register_explainers():\n"
        "    return [ModelSpec(name='oops', factory='x:y')]\n"
    )
    _add_dist(tmp_path, monkeypatch, dist="bench-wrong", ep="wrong", mod="wrong_mod", source=source)
    reg = bench.registry(reload=True)
    info = [p for p in reg.plugins if p.name == "wrong"][0]
    assert info.status == "failed" and "ModelSpec" in info.error
    assert "oops" not in reg.names("model") and "oops" not in reg.names("explainer")


def test_duplicate_component_name_is_recorded_and_the_name_unavailable(tmp_path, monkeypatch):
    _add_dist(tmp_path, monkeypatch, dist="bench-one", ep="one", mod="one_mod", name="same")
    _add_dist(tmp_path, monkeypatch, dist="bench-two", ep="two", mod="two_mod", name="same")
    reg = bench.registry(reload=True)  # the registry stays usable
    assert "same" not in reg.names("explainer") and "same" not in reg["explainer"]
    assert {"gradcam", "random"} <= set(reg.names("explainer"))
    [conflict] = reg.conflicts
    assert (conflict.kind, conflict.name) == ("explainer", "same")
    assert sorted((r.plugin.name, r.plugin.distribution, r.plugin.version) for r in conflict.registrations) == [
        ("one", "bench-one", "1.2.3"), ("two", "bench-two", "1.2.3"),
    ]
    with pytest.raises(PluginConflictError) as info:
        reg.get("explainer", "same")
    msg = str(info.value)
    assert "bench-one" in msg and "bench-two" in msg and "'same'" in msg
    assert "BENCH_DISABLE_PLUGINS=one" in msg and "BENCH_DISABLE_PLUGINS=two" in msg
    with pytest.raises(PluginConflictError):
        bench.create("explainer", "same")
    assert bench.create("explainer", "random") is not None  # the rest keeps working


def test_duplicate_name_leaves_bench_plugins_and_list_working(tmp_path, monkeypatch, capsys):
    _add_dist(tmp_path, monkeypatch, dist="bench-one", ep="one", mod="one_mod", name="same")
    _add_dist(tmp_path, monkeypatch, dist="bench-two", ep="two", mod="two_mod", name="same")
    assert main(["plugins"]) == 0
    captured = capsys.readouterr()
    assert "bench-one" in captured.out and "bench-two" in captured.out and "CONFLICT" in captured.out
    assert "BENCH_DISABLE_PLUGINS=one" in captured.out and "BENCH_DISABLE_PLUGINS=two" in captured.out
    assert "conflict" in captured.err

    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    [conflict] = data["conflicts"]
    assert (conflict["kind"], conflict["name"]) == ("explainer", "same")
    assert sorted((r["plugin"], r["distribution"], r["version"], r["disable"]) for r in conflict["registrations"]) == [
        ("one", "bench-one", "1.2.3", "BENCH_DISABLE_PLUGINS=one"),
        ("two", "bench-two", "1.2.3", "BENCH_DISABLE_PLUGINS=two"),
    ]
    assert {p["name"]: p["status"] for p in data["plugins"]}["one"] == "ok"

    assert main(["list", "explainer", "--json"]) == 0
    listed = [r["name"] for r in json.loads(capsys.readouterr().out)]
    assert "gradcam" in listed and "same" not in listed
    assert main(["list", "explainer"]) == 0


def test_impostor_of_a_builtin_is_blocked_by_its_own_hint(tmp_path, monkeypatch):
    # the impostor even reuses the builtin's entry-point name: blocking 'gradcam' would block both
    _add_dist(tmp_path, monkeypatch, dist="bench-impostor", ep="gradcam", mod="impostor_gradcam_mod",
              name="gradcam")
    reg = bench.registry(reload=True)
    [conflict] = reg.conflicts
    hints = {r.plugin.distribution: r.plugin.disable for r in conflict.registrations}
    assert hints == {
        "saliency-bench": "BENCH_DISABLE_PLUGINS=saliency-bench:gradcam",
        "bench-impostor": "BENCH_DISABLE_PLUGINS=bench-impostor:gradcam",
    }
    with pytest.raises(PluginConflictError, match="bench-impostor:gradcam"):
        reg.get("explainer", "gradcam")
    monkeypatch.setenv(plugins_mod.BLOCK_ENV, "bench-impostor:gradcam")
    reg = bench.registry(reload=True)
    assert reg.get("explainer", "gradcam").plugin.distribution == "saliency-bench"
    assert not reg.conflicts
    assert [p.status for p in reg.plugins if p.distribution == "bench-impostor"] == ["blocked"]


def test_run_warns_about_broken_and_conflicting_plugins_and_refuses_the_name(tmp_path, monkeypatch, capsys):
    _add_dist(tmp_path, monkeypatch, dist="bench-one", ep="one", mod="one_mod", name="same")
    _add_dist(tmp_path, monkeypatch, dist="bench-two", ep="two", mod="two_mod", name="same")
    _add_dist(tmp_path, monkeypatch, dist="bench-broken", ep="broken", mod="broken_run_mod",
              source="raise ImportError('needs libfoo 3')\n")
    assert main(["run", "--explainer", "random", "--explainer", "same", "--dry-run"]) == 2
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("bench: warning:")]
    assert len(warnings) == 2
    broken = [w for w in warnings if "'broken'" in w][0]
    assert "bench-broken" in broken and "needs libfoo 3" in broken and "BENCH_DISABLE_PLUGINS=broken" in broken
    assert "explainers.names[1]" in err and "BENCH_DISABLE_PLUGINS=one" in err and "bench-two" in err

    assert main(["run", "--all", "--dry-run", "--json"]) == 0  # `all` skips the unavailable name, with the warning
    captured = capsys.readouterr()
    plan = json.loads(captured.out)["plan"]
    assert "same" not in plan["explainers"] and "random" in plan["explainers"]
    assert "'same'" in captured.err


def test_blocking_a_plugin_by_name(tmp_path, monkeypatch):
    _add_dist(tmp_path, monkeypatch, dist="bench-one", ep="one", mod="one_mod", name="same")
    _add_dist(tmp_path, monkeypatch, dist="bench-two", ep="two", mod="two_mod", name="same")
    monkeypatch.setenv(plugins_mod.BLOCK_ENV, "two")
    reg = bench.registry(reload=True)  # the conflict is resolved by blocking one
    assert reg.get("explainer", "same").plugin.distribution == "bench-one"
    assert [p.status for p in reg.plugins if p.name == "two"] == ["blocked"]


def test_removing_a_builtin_entry_point_removes_it(monkeypatch):
    real = plugins_mod._iter_entry_points

    def without_gradcam():
        return [ep for ep in real() if ep.value != "bench_gradcam"]

    monkeypatch.setattr(plugins_mod, "_iter_entry_points", without_gradcam)
    reg = bench.registry(reload=True)
    assert "gradcam" not in reg.names("explainer")
    assert "random" in reg.names("explainer")
    with pytest.raises(UnknownComponentError):
        bench.create("explainer", "gradcam")


def test_create_unknown_name_suggests_closest():
    with pytest.raises(UnknownComponentError) as err:
        bench.create("explainer", "gradcma")
    msg = str(err.value)
    assert "did you mean 'gradcam'" in msg and "random" in msg


def test_create_unknown_kind_and_param():
    with pytest.raises(UnknownComponentError, match="did you mean 'explainer'"):
        bench.create("explainr", "gradcam")
    with pytest.raises(bench.ConfigError, match="sigmaa.*did you mean 'sigma'"):
        bench.create("perturbation", "gaussian-noise", sigmaa=0.2)


def test_in_process_plugin_registration():
    class Plugin:
        @bench.hookimpl
        def bench_register_perturbations(self):
            return [bench.PerturbationSpec(name="noop", factory=lambda: None, description="nothing")]

    bench.register_plugin(Plugin(), name="inproc")
    try:
        assert "noop" in bench.registry().names("perturbation")
        assert bench.registry().get("perturbation", "noop").plugin.distribution is None
    finally:
        bench.unregister_plugin("inproc")
    assert "noop" not in bench.registry().names("perturbation")


def test_lazy_factory_import_error_names_the_plugin():
    class Plugin:
        @bench.hookimpl
        def bench_register_explainers(self):
            return [bench.ExplainerSpec(name="ghost", factory="no_such_module_xyz:Thing")]

    bench.register_plugin(Plugin(), name="ghostly")
    try:
        with pytest.raises(PluginError) as err:
            bench.create("explainer", "ghost")
        assert "ghostly" in str(err.value) and "no_such_module_xyz" in str(err.value)
    finally:
        bench.unregister_plugin("ghostly")


def test_spec_validation():
    with pytest.raises(ValueError):
        bench.ExplainerSpec(name="", factory="a:b")
    with pytest.raises(TypeError):
        bench.ExplainerSpec(name="x", factory=42)
    spec = bench.ExplainerSpec(name="x", factory="json:dumps")
    assert spec.load_factory() is json.dumps
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "y"
    assert set(plugins_mod.KINDS) == BUILTIN_KINDS


def test_a_run_not_using_a_conflicting_name_succeeds(tmp_path, monkeypatch, capsys):
    _add_dist(tmp_path, monkeypatch, dist="bench-one", ep="one", mod="one_mod", name="same")
    _add_dist(tmp_path, monkeypatch, dist="bench-two", ep="two", mod="two_mod", name="same")
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        'preset = "demo"\n[dataset]\nname = "synthetic-cxr"\nparams = { image_size = 32, per_class = 8 }\n'
        '[models]\nnames = ["simple-cnn"]\n[training]\nepochs = 1\nbatch_size = 16\n'
        '[explainers]\nnames = ["random"]\n[perturbations]\nnames = ["gaussian-noise"]\n'
        '[aopc]\ngrid = 2\nmax_images = 2\nbootstrap = 50\n[metrics]\nnames = ["aopc"]\n'
        '[leaderboard]\nformats = ["json"]\nfigures = false\n'
    )
    code = main(["run", "--config", str(cfg), "--out", str(tmp_path / "out"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "explainer 'same' is registered twice" in captured.err  # said once, at the start
    cells = list((tmp_path / "out" / "runs").glob("*/cells/*.json"))
    assert [c.name for c in cells] == ["synthetic-cxr__simple-cnn__random__gaussian-noise.json"]
