"""Controls by role: an explainer spec's role, the gain reference found by role, ambiguity at plan time."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _fake_runs import FakeCell, write_run
from _plugin_fixtures import make_distribution

import bench
from bench.cli import main
from bench.config.loading import load_config
from bench.errors import ConfigError
from bench.pipeline import make_plan
from bench.pipeline.controls import record_role, resolve_control
from bench.plugin import registry as plugins_mod
from bench.publish.collect import collect
from bench.publish.formats import render
from bench.publish.leaderboard import build_leaderboard
from bench.testing import check_component, checks_for

GRADCAM = [0.50, 0.40, 0.60, 0.45, 0.55, 0.35, 0.52, 0.48]
FLAT = [0.30, 0.31, 0.29, 0.30, 0.28, 0.33, 0.30, 0.29]
RANDOM = [0.20, 0.25, 0.10, 0.30, 0.15, 0.22, 0.18, 0.20]

#: A third party's null control: a constant map (no information about the image or model).
FLAT_PLUGIN = """
import numpy as np
from bench import ExplainerSpec, hookimpl


class Flat:
    def __init__(self, *, value: float = 1.0):
        self.value = value

    def get_params(self):
        return {"value": self.value}

    def explain(self, model, images, targets):
        return np.full(images.shape[:3], self.value, np.float32)


@hookimpl
def bench_register_explainers():
    return [ExplainerSpec(name="flat-map", factory=Flat, description="constant map", role="null-control")]
"""


@pytest.fixture(autouse=True)
def _fresh_registry():
    plugins_mod._cached = None
    yield
    plugins_mod._cached = None


@pytest.fixture()
def flat_plugin(tmp_path, monkeypatch):
    """``flat-map``, installed through a real entry point (distribution ``bench-flat``)."""
    root = make_distribution(tmp_path / "dist", "bench-flat", "0.3.0", {"flat": "flat_mod"},
                             {"flat_mod": FLAT_PLUGIN})
    monkeypatch.syspath_prepend(str(root))
    bench.registry(reload=True)
    return root


# ---------------------------------------------------------------------------------------
# the role on the spec
# ---------------------------------------------------------------------------------------
def test_role_defaults_to_method_and_is_validated():
    assert bench.ExplainerSpec(name="x", factory="json:dumps").role == "method"
    assert bench.EXPLAINER_ROLES == ("method", "positive-control", "null-control", "negative-control",
                                     "other-control")
    for role in bench.EXPLAINER_ROLES:
        spec = bench.ExplainerSpec(name="x", factory="json:dumps", role=role)
        assert spec.is_control is (role != "method")
    for bad in ("baseline", "Null-Control", "", None, 3):
        with pytest.raises(ValueError, match=r"ExplainerSpec\('x'\): role .* is not one of 'method', 'positive-control'"):
            bench.ExplainerSpec(name="x", factory="json:dumps", role=bad)


def test_the_builtin_random_explainer_is_the_null_control():
    reg = bench.registry()
    assert reg.get("explainer", "random").role == "null-control"
    assert reg.get("explainer", "gradcam").role == "method"
    assert reg.get("explainer", "random").provenance()["role"] == "null-control"
    assert "role" not in reg.get("perturbation", "gaussian-noise").provenance()


def test_list_and_plugins_show_the_role(capsys):
    assert main(["list", "explainers", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["random"]["role"] == "null-control" and rows["gradcam"]["role"] == "method"
    assert main(["list", "explainers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["explainer", "role"]
    body = [line.split() for line in lines[2:]]
    roles = [row[1] for row in body]
    n_methods = roles.count("method")
    assert n_methods and all(r == "method" for r in roles[:n_methods])  # controls after the methods
    assert ["random", "null-control"] in [row[:2] for row in body[n_methods:]]
    assert main(["plugins"]) == 0
    assert "random (null-control)" in capsys.readouterr().out
    assert main(["plugins", "--json"]) == 0
    plugins = {p["name"]: p for p in json.loads(capsys.readouterr().out)["plugins"]}
    assert plugins["baselines"]["roles"] == {"random": "null-control"}


# ---------------------------------------------------------------------------------------
# bench.testing: what follows from the role
# ---------------------------------------------------------------------------------------
class _PeekingNull:
    """Says it is a null control but looks at the pixels."""

    def __init__(self):
        pass

    def get_params(self):
        return {}

    def explain(self, model, images, targets):
        return images[..., 0].astype(np.float32)


class _ModelDependent:
    """A 'control' whose map is the model's probability of the target (it uses the model)."""

    def __init__(self):
        pass

    def get_params(self):
        return {}

    def explain(self, model, images, targets):
        p = np.asarray(model.keras(images, training=False))[np.arange(len(images)), targets]
        return np.repeat(p[:, None, None], 4, axis=1).repeat(4, axis=2).astype(np.float32)


def test_role_checks_are_picked_from_the_registered_spec():
    names = [n for n, _ in checks_for(bench.create("explainer", "random"))]
    assert {"check_control_ignores_the_model", "check_null_control_ignores_the_image"} <= set(names)
    gradcam = [n for n, _ in checks_for(bench.create("explainer", "gradcam"))]
    assert "check_control_ignores_the_model" not in gradcam
    check_component(bench.create("explainer", "random"))


def test_role_checks_catch_a_control_that_is_not_one():
    check_component(_PeekingNull())  # unregistered: a method, nothing to say
    with pytest.raises(AssertionError, match="registered as a null-control, but its maps depend on the image"):
        check_component(_PeekingNull(), role="null-control")
    with pytest.raises(AssertionError, match="registered as a control, but its maps change with the model"):
        check_component(_ModelDependent(), role="other-control")
    with pytest.raises(ValueError, match="role 'oracle' is not one of"):
        list(checks_for(_PeekingNull(), role="oracle"))


def test_a_third_party_null_control_passes_its_role_checks(flat_plugin):
    component = bench.create("explainer", "flat-map")
    assert "check_null_control_ignores_the_image" in [n for n, _ in checks_for(component)]
    check_component(component)


# ---------------------------------------------------------------------------------------
# plan time: the gain reference is the grid's null control; two are ambiguous
# ---------------------------------------------------------------------------------------
def test_resolve_control_rules():
    roles = {"gradcam": "method", "random": "null-control", "flat-map": "null-control", "edges": "other-control"}
    assert resolve_control(["gradcam", "random"], roles) == "random"
    assert resolve_control(["gradcam"], roles) == ""
    assert resolve_control(["gradcam", "random", "flat-map"], roles, "flat-map") == "flat-map"
    assert resolve_control(["gradcam", "edges"], roles, "edges") == "edges"  # any control may be named
    with pytest.raises(ConfigError, match=r"2 null controls are selected \(random, flat-map\): set leaderboard\.control"):
        resolve_control(["gradcam", "random", "flat-map"], roles)
    with pytest.raises(ConfigError, match="leaderboard.control = 'gradcam' names an explainer whose role is 'method'"):
        resolve_control(["gradcam", "random"], roles, "gradcam")
    with pytest.raises(ConfigError, match="did you mean 'random'"):
        resolve_control(["gradcam", "random"], roles, "randon")


def _config(explainers: list[str], **leaderboard: str) -> dict:
    layer = {
        "dataset": {"name": "synthetic-cxr", "params": {"image_size": 32, "per_class": 4}},
        "models": {"names": ["simple-cnn"]},
        "explainers": {"names": explainers},
        "perturbations": {"names": ["gaussian-noise"]},
        "aopc": {"grid": 2},
    }
    if leaderboard:
        layer["leaderboard"] = dict(leaderboard)
    return layer


def test_a_third_party_null_control_becomes_the_reference_without_config(flat_plugin):
    plan = make_plan(load_config(_config(["gradcam", "flat-map"])))
    assert plan.config["leaderboard"]["control"] == "flat-map"
    assert plan.config["aopc"]["baseline"] == ""
    # the built-in null control works the same way; no null control -> no gain reference
    assert make_plan(load_config(_config(["gradcam", "random"]))).config["leaderboard"]["control"] == "random"
    assert make_plan(load_config(_config(["gradcam"]))).config["leaderboard"]["control"] == ""


def test_two_null_controls_are_a_plan_time_error_naming_the_key(flat_plugin, tmp_path, capsys):
    with pytest.raises(ConfigError, match="leaderboard.control"):
        make_plan(load_config(_config(["gradcam", "random", "flat-map"])))
    plan = make_plan(load_config(_config(["gradcam", "random", "flat-map"], control="flat-map")))
    assert plan.config["leaderboard"]["control"] == "flat-map"

    cfg = tmp_path / "two-nulls.toml"
    cfg.write_text(
        '[dataset]\nname = "synthetic-cxr"\nparams = { image_size = 32, per_class = 4 }\n'
        '[models]\nnames = ["simple-cnn"]\n[explainers]\nnames = ["gradcam", "random", "flat-map"]\n'
        '[aopc]\ngrid = 2\n'
    )
    out = tmp_path / "results"
    assert main(["run", "--dry-run", "--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "leaderboard.control" in err and "random, flat-map" in err and "Traceback" not in err
    assert not out.exists()
    assert main(["run", "--dry-run", "--config", str(cfg), "--out", str(out),
                 "--set", "leaderboard.control=random"]) == 0, capsys.readouterr().err


def test_the_deprecated_aopc_baseline_is_an_alias(flat_plugin):
    with pytest.warns(FutureWarning, match="aopc.baseline is deprecated"):
        plan = make_plan(load_config(_config(["gradcam", "random", "flat-map"]) | {"aopc": {"baseline": "random"}}))
    assert plan.config["leaderboard"]["control"] == "random" and plan.config["aopc"]["baseline"] == ""
    layer = _config(["gradcam", "random"], control="random") | {"aopc": {"baseline": "flat-map"}}
    with pytest.raises(ConfigError, match="aopc.baseline = 'flat-map' and leaderboard.control = 'random' disagree"):
        make_plan(load_config(layer))


# ---------------------------------------------------------------------------------------
# the leaderboard: the reference found by role, controls marked and listed last
# ---------------------------------------------------------------------------------------
class _InProcessFlat:
    @bench.hookimpl
    def bench_register_explainers(self):
        return [bench.ExplainerSpec(name="flat-map", factory="json:dumps", role="null-control")]


def test_leaderboard_gain_uses_a_registered_third_party_null_control(tmp_path):
    """Records written before roles existed: the role comes from the registered spec."""
    write_run(tmp_path, "run-1", [
        FakeCell("toy", "m", "gradcam", per_image=GRADCAM),
        FakeCell("toy", "m", "flat-map", per_image=FLAT),
    ])
    assert collect(tmp_path)["gain_over_baseline"].isna().all()  # flat-map unknown: a method
    bench.register_plugin(_InProcessFlat(), name="flat-inproc")
    try:
        df = collect(tmp_path).set_index("explainer")
        assert df.loc["flat-map", "role"] == "null-control" and df.loc["gradcam", "role"] == "method"
        assert df.loc["gradcam", "baseline"] == "flat-map"
        assert df.loc["gradcam", "gain_over_baseline"] == pytest.approx(np.mean(GRADCAM) - np.mean(FLAT))
        paths = build_leaderboard(tmp_path, formats=("md", "json"), figures=False, report=False)
        md = paths["md"].read_text()
        assert "Gain over flat-map" in md and "flat-map (null-control)" in md
        row = {r["explainer"]: r for r in json.loads(paths["json"].read_text())["rows"]}["gradcam"]
        assert row["gain_ci_low"] <= row["gain_over_baseline"] <= row["gain_ci_high"]  # the paired CI
    finally:
        bench.unregister_plugin("flat-inproc")


def test_leaderboard_reads_the_role_a_record_holds(tmp_path):
    """A record carries its explainer's role (provenance): no registration, no config needed."""
    null = {"provenance": {"explainer": {"name": "zeros", "role": "null-control"}}}
    write_run(tmp_path, "run-1", [
        FakeCell("toy", "m", "gradcam", per_image=GRADCAM),
        FakeCell("toy", "m", "zeros", per_image=FLAT, extra=null),
    ])
    df = collect(tmp_path)
    assert list(df.explainer) == ["gradcam", "zeros"] and list(df.role) == ["method", "null-control"]
    assert df.set_index("explainer").loc["gradcam", "gain_over_baseline"] == pytest.approx(
        np.mean(GRADCAM) - np.mean(FLAT))
    assert record_role({"explainer": "zeros", **null}) == "null-control"
    assert record_role({"explainer": "nobody-registered-this"}) == "method"


def test_two_null_controls_in_one_family_need_a_control(tmp_path, capsys):
    write_run(tmp_path, "run-1", [
        FakeCell("toy", "m", "gradcam", per_image=GRADCAM),
        FakeCell("toy", "m", "random", per_image=RANDOM),
        FakeCell("toy", "m", "zeros", per_image=FLAT,
                 extra={"provenance": {"explainer": {"role": "null-control"}}}),
    ])
    with pytest.raises(ConfigError, match=r"2 null controls ran under one .*: random, zeros; .*leaderboard\.control"):
        collect(tmp_path)
    assert main(["leaderboard", "--results", str(tmp_path), "--no-figures"]) == 2
    assert "--control random" in capsys.readouterr().err
    df = collect(tmp_path, control="zeros").set_index("explainer")
    assert df.loc["gradcam", "gain_over_baseline"] == pytest.approx(np.mean(GRADCAM) - np.mean(FLAT))
    assert main(["leaderboard", "--results", str(tmp_path), "--no-figures", "--control", "random"]) == 0
    assert "Gain over random" in (tmp_path / "leaderboard.md").read_text()
    # the deprecated flag still works, and says so
    assert main(["leaderboard", "--results", str(tmp_path), "--no-figures", "--baseline", "zeros"]) == 0
    assert "--baseline is deprecated" in capsys.readouterr().err
    assert "Gain over zeros" in render(collect(tmp_path, control="zeros"), "md")


def test_a_run_records_the_role_and_gains_over_a_third_party_null_control(flat_plugin, tmp_path):
    """End to end: an installed null control, no `random`, no control configured."""
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        '[dataset]\nname = "synthetic-cxr"\nparams = { image_size = 32, per_class = 8 }\n'
        '[models]\nnames = ["simple-cnn"]\n[training]\nepochs = 1\nbatch_size = 16\n'
        '[explainers]\nnames = ["flat-map", "gradcam"]\n[perturbations]\nnames = ["gaussian-noise"]\n'
        '[aopc]\ngrid = 2\nmax_images = 4\nbootstrap = 50\n'
        '[leaderboard]\nformats = ["json"]\nfigures = false\n'
    )
    out = tmp_path / "out"
    assert main(["run", "--config", str(cfg), "--out", str(out), "--quiet"]) == 0
    (run_dir,) = (out / "runs").iterdir()
    cell = json.loads((run_dir / "cells" / "synthetic-cxr__simple-cnn__flat-map__gaussian-noise.json").read_text())
    assert cell["provenance"]["explainer"]["role"] == "null-control"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config"]["leaderboard"]["control"] == "flat-map"  # resolved at plan time
    rows = json.loads((out / "leaderboard.json").read_text())["rows"]
    assert [(r["explainer"], r["role"]) for r in rows] == [("gradcam", "method"), ("flat-map", "null-control")]
    assert rows[0]["baseline"] == "flat-map" and rows[0]["gain_over_baseline"] is not None


def test_a_preferred_control_the_grid_did_not_select_is_a_preference():
    """A preset may name its control among several null controls; a grid without it still plans."""
    from bench.errors import ConfigError
    from bench.pipeline.controls import resolve_control

    roles = {"gradcam": "method", "random": "null-control", "constant": "null-control",
             "flat": "null-control"}
    assert resolve_control(["gradcam"], roles, "random") == ""  # no null control: no gain column
    assert resolve_control(["gradcam", "constant"], roles, "random") == "constant"  # the only one
    assert resolve_control(["gradcam", "random", "constant"], roles, "random") == "random"
    with pytest.raises(ConfigError, match="not a selected explainer"):
        resolve_control(["constant", "flat"], roles, "random")  # several and the preferred absent
    with pytest.raises(ConfigError, match="not a selected explainer"):
        resolve_control(["gradcam"], roles, "nosuch")  # unknown: an error, not a preference


def test_bench_leaderboard_uses_the_control_its_runs_resolved(tmp_path):
    """A preset's control (the demo: random among two null controls) is recorded in each run's
    config; `bench leaderboard` without --control uses it when the runs agree."""
    from bench.cli import recorded_control
    from bench.pipeline.store import write_json

    def manifest(run, control):
        write_json(tmp_path / "runs" / run / "manifest.json",
                   {"run_id": run, "status": "ok", "config": {"leaderboard": {"control": control}}})

    manifest("r1", "random")
    manifest("r2", "random")
    assert recorded_control(tmp_path) == "random"
    manifest("r3", "")  # a run with no null control says nothing
    assert recorded_control(tmp_path) == "random"
    manifest("r4", "constant")  # runs that disagree: each family's only null control, or an error
    assert recorded_control(tmp_path) == ""
