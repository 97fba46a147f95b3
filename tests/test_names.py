"""Component names can never become paths or markup: checked at registration, and every
file name built from them stays inside its folder (bench.plugin.names.safe_child)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from _plugin_fixtures import EXPLAINER_PLUGIN, make_distribution

import bench
from bench.cli import main
from bench.errors import InvalidNameError, UnsafePathError
from bench.plugin import names as paths
from bench.plugin import registry as plugins
from bench.plugin import specs
from bench.publish.report import slug

BAD_NAMES = [
    "<script>alert(1)</script>",
    "../../../../../escaped",
    "a/b",
    "a\\b",
    "..",
    "a..b",
    ".hidden",
    "-dash",
    "GradCAM",
    "grad cam",
    "a__b",  # '__' joins the names of a cell id
    "a" * 65,
    "",
    "caf\u00e9",
    "nul\x00",
]
GOOD_NAMES = ["gradcam", "simple-cnn", "deletion-auc", "v1.2", "a_b", "0x", "a" * 64]


@pytest.fixture(autouse=True)
def _rescan_after():
    yield
    bench.registry(reload=True)  # after monkeypatch restored sys.path


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_by_spec_classes(name):
    assert paths.name_problem(name) is not None
    with pytest.raises(ValueError, match="ExplainerSpec name .* is invalid") as err:
        bench.ExplainerSpec(name=name, factory="json:dumps")
    assert isinstance(err.value, InvalidNameError)
    assert "lower-case letters" in str(err.value)


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names_pass(name):
    assert paths.name_problem(name) is None
    assert bench.ModelSpec(name=name, factory="json:dumps").name == name


def test_non_string_name_is_refused():
    with pytest.raises(ValueError, match="not a string"):
        bench.ExplainerSpec(name=42, factory="json:dumps")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", "../../../../../escaped"])
def test_bad_name_is_refused_at_registration_naming_plugin_and_distribution(tmp_path, monkeypatch, capsys, name):
    mod = "evil_script_mod" if "<" in name else "evil_escape_mod"
    root = make_distribution(tmp_path / "evil", "bench-evil", "6.6.6", {"evil": mod},
                             {mod: EXPLAINER_PLUGIN.replace("{name}", name)})
    monkeypatch.syspath_prepend(str(root))
    reg = bench.registry(reload=True)
    [info] = [p for p in reg.plugins if p.name == "evil"]
    assert info.status == "failed"
    assert name in info.error and "'evil'" in info.error and "bench-evil 6.6.6" in info.error
    assert info.components == {}
    assert name not in reg.names("explainer")
    assert {"gradcam", "random"} <= set(reg.names("explainer"))  # other plugins keep working

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "bench-evil" in out and "failed" in out


def test_name_changed_after_construction_is_refused_at_registration():
    class Sneaky:
        @bench.hookimpl
        def bench_register_explainers(self):
            spec = bench.ExplainerSpec(name="fine", factory="json:dumps")
            object.__setattr__(spec, "name", "../../escaped")
            return [spec]

    bench.register_plugin(Sneaky(), name="sneaky")
    try:
        reg = bench.registry()
        [info] = [p for p in reg.plugins if p.name == "sneaky"]
        assert info.status == "failed" and "../../escaped" in info.error and "'sneaky'" in info.error
        assert "../../escaped" not in reg.names("explainer") and "fine" not in reg.names("explainer")
    finally:
        bench.unregister_plugin("sneaky")


# ---- safe_child --------------------------------------------------------------------------
def test_safe_child_joins_plain_parts(tmp_path):
    assert paths.safe_child(tmp_path, "cells", "a__b__c.json") == tmp_path / "cells" / "a__b__c.json"
    assert paths.safe_child(str(tmp_path), "x..y.npz") == tmp_path / "x..y.npz"  # '..' inside a name is harmless


@pytest.mark.parametrize("parts", [
    ("..",), ("cells", ".."), ("cells", "../../escaped.json"), ("a/b",), ("a\\b",), ("",), (".",),
    ("/etc/passwd",), ("nul\x00",), (),
])
def test_safe_child_refuses_anything_that_nests_or_leaves(tmp_path, parts):
    with pytest.raises(UnsafePathError):
        paths.safe_child(tmp_path, *parts)


def test_safe_child_refuses_a_symlink_out_of_the_root(tmp_path):
    root, outside = tmp_path / "run", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "cells")
    with pytest.raises(UnsafePathError, match="outside"):
        paths.safe_child(root, "cells", "x.json")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_report_slug_is_one_plain_file_name(tmp_path, name):
    s = slug("synthetic-cxr", name)
    assert "/" not in s and "\\" not in s and "\x00" not in s and not s.startswith(".")
    assert (tmp_path / f"curves__{s}.png").parent == tmp_path
    assert slug("synthetic-cxr", name) != slug("synthetic-cxr", name + "x")


# ---- nothing is written outside the run folder, even for a name that got through --------
class _Crashing:
    """A dataset that crashes (so no cell trains anything) and an explainer with a bad name."""

    class Data:
        def __init__(self, **params):
            self.params = params

        def get_params(self):
            return {}

        def fingerprint(self):
            raise RuntimeError("dataset crashed on purpose")

        def load(self):
            raise RuntimeError("dataset crashed on purpose")

    @bench.hookimpl
    def bench_register_datasets(self):
        return [bench.DatasetSpec(name="t-crash", factory=self.Data)]

    @bench.hookimpl
    def bench_register_explainers(self):
        return [bench.ExplainerSpec(name="../../../../../escaped", factory=lambda: None)]


def test_a_bad_name_that_got_through_writes_nothing_outside_the_run_folder(tmp_path, monkeypatch):
    def no_check(name, *, what="component"):
        return name

    # simulate a name that got past both registration checks
    monkeypatch.setattr(specs, "check_name", no_check)
    monkeypatch.setattr(plugins, "check_name", no_check)
    bench.register_plugin(_Crashing(), name="crashing")
    out = tmp_path / "results"
    cfg = {
        "preset": "demo",
        "dataset": {"name": "t-crash"},
        "models": {"names": ["simple-cnn"]},
        "explainers": {"names": ["../../../../../escaped"]},
        "perturbations": {"names": ["gaussian-noise"]},
        "run": {"out": str(out)},
    }
    try:
        assert "../../../../../escaped" in bench.registry().names("explainer")
        with pytest.raises(UnsafePathError, match="escaped"):
            bench.run(cfg, quiet=True, leaderboard=False)
    finally:
        bench.unregister_plugin("crashing")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in written if "escaped" in p.name], written
    runs = out / "runs"
    assert all(runs in p.parents or (out / "cache") in p.parents for p in written), written


def test_cell_file_names_of_valid_names_are_plain(tmp_path):
    from bench.pipeline import CellTask

    task = CellTask("synthetic-cxr", "simple-cnn", "gradcam", "gaussian-noise")
    path = paths.safe_child(tmp_path, "cells", f"{task.cell_id}.json")
    assert path.parent == tmp_path / "cells"
    assert dataclasses.is_dataclass(task)
    assert Path(path).name == "synthetic-cxr__simple-cnn__gradcam__gaussian-noise.json"
