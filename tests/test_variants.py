"""Explainer variants: sweeps and named variants are their own cells and rows (issue 11 item 5)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from bench.config.loading import load_config
from bench.errors import ConfigError
from bench.pipeline.plan import make_plan
from bench.pipeline.variants import expand_sweep, registered_explainer, resolve_variants

KNOWN = ["centre", "random", "gradcam"]


def _cfg(**explainers):
    return {"explainers": {"names": ["centre", "random"], "params": {}, "sweep": {}, "variants": {},
                           **explainers}}


def test_a_sweep_makes_one_labelled_variant_per_combination_in_the_order_given():
    got = expand_sweep("smoothgrad", {"sigma": [0.05, 0.3], "n": [8, 32]}, where="explainers.sweep.smoothgrad")
    assert list(got) == [
        "smoothgrad.sigma-0.05.n-8", "smoothgrad.sigma-0.05.n-32",
        "smoothgrad.sigma-0.3.n-8", "smoothgrad.sigma-0.3.n-32",
    ]
    assert got["smoothgrad.sigma-0.3.n-8"] == {"sigma": 0.3, "n": 8}
    assert list(expand_sweep("x", {"flag": [True, False], "fill": ["black"]}, where="k")) == [
        "x.flag-true.fill-black", "x.flag-false.fill-black"]
    assert list(expand_sweep("x", {"eps": 1e-20}, where="k")) == ["x.eps-1e-20"]  # a scalar is one value


def test_a_swept_explainer_is_replaced_by_its_variants_with_merged_params():
    cfg = _cfg(params={"centre": {"sigma": 0.25}}, sweep={"centre": {"sigma": [0.1, 0.5]}})
    explainers = resolve_variants(cfg, ["centre", "random"], KNOWN)
    assert explainers == ["centre.sigma-0.1", "centre.sigma-0.5", "random"]
    assert cfg["explainers"]["params"]["centre.sigma-0.5"] == {"sigma": 0.5}
    assert registered_explainer(cfg, "centre.sigma-0.5") == "centre"
    assert registered_explainer(cfg, "random") == "random"


def test_a_named_variant_is_added_and_inherits_the_explainers_own_params():
    cfg = _cfg(params={"random": {"seed": 3, "size": 4}},
               variants={"random-coarse": {"explainer": "random", "params": {"size": 2}}})
    explainers = resolve_variants(cfg, ["centre", "random"], KNOWN)
    assert explainers == ["centre", "random", "random-coarse"]
    assert cfg["explainers"]["params"]["random-coarse"] == {"seed": 3, "size": 2}


def test_resolving_a_resolved_config_changes_nothing():
    cfg = _cfg(sweep={"centre": {"sigma": [0.1, 0.5]}},
               variants={"random-coarse": {"explainer": "random", "params": {"size": 2}}})
    first = resolve_variants(cfg, ["centre", "random"], KNOWN)
    again = copy.deepcopy(cfg)
    assert resolve_variants(again, ["centre", "random"], KNOWN) == first
    assert again == cfg


@pytest.mark.parametrize(("explainers", "message"), [
    ({"sweep": {"centr": {"sigma": [0.1]}}}, "explainers.sweep.centr: unknown explainer 'centr' (did you mean 'centre'?)"),
    ({"sweep": {"gradcam": {"x": [1]}}}, "explainer 'gradcam' is not selected by explainers.names"),
    ({"sweep": {"centre": {"sigma": []}}}, "explainers.sweep.centre.sigma: an empty list sweeps nothing"),
    ({"sweep": {"centre": {"sigma": [0.1, 0.1]}}}, "repeat one"),
    ({"sweep": {"centre": {"path": ["/etc/x"]}}}, "cannot be part of a variant name"),
    ({"sweep": {"centre": {}}}, "must be a non-empty table"),
    ({"variants": {"random": {"explainer": "centre"}}}, "is the name of a registered explainer"),
    ({"variants": {"Bad Name": {"explainer": "centre"}}}, "variant name 'Bad Name'"),
    ({"variants": {"v": {"explainer": "nope"}}}, "explainers.variants.v.explainer: unknown explainer 'nope'"),
    ({"variants": {"v": {"explainer": "centre", "parms": {}}}}, "unknown key(s) 'parms'"),
    ({"variants": {"centre.sigma-0.1": {"explainer": "centre", "params": {"sigma": 9.0}}},
      "sweep": {"centre": {"sigma": [0.1]}}}, "already makes a variant named"),
])
def test_bad_variants_are_config_errors_naming_the_key(explainers, message):
    with pytest.raises(ConfigError) as info:
        resolve_variants(_cfg(**explainers), ["centre", "random"], KNOWN)
    assert message in str(info.value)


def _plan_cfg(tmp_path, **explainers):
    return load_config(preset="tiny", overrides={
        "run": {"out": str(tmp_path)}, "explainers": {"names": ["centre", "random"], **explainers},
        "metrics": {"names": ["aopc"]},
    })


def test_the_plan_runs_each_variant_as_its_own_cell_and_checks_its_params(tmp_path):
    plan = make_plan(_plan_cfg(tmp_path, sweep={"centre": {"sigma": [0.1, 0.5]}}))
    assert [c.explainer for c in plan.cells if c.model == plan.models[0]] == [
        "centre.sigma-0.1", "centre.sigma-0.5", "random"]
    assert plan.explainer_spec("centre.sigma-0.1").name == "centre"
    with pytest.raises(ConfigError) as info:
        make_plan(_plan_cfg(tmp_path, sweep={"centre": {"sigma": [0.1, -1.0]}}))
    assert "explainers.sweep.centre.sigma: sigma must be a positive number, got -1.0" in str(info.value)
    with pytest.raises(ConfigError) as info:
        make_plan(_plan_cfg(tmp_path, sweep={"centre": {"sigmaa": [0.1]}}))
    assert "sigmaa" in str(info.value)


@pytest.mark.slow
def test_variants_are_rows_of_their_own_with_their_own_heatmaps(tmp_path):
    pytest.importorskip("keras")
    from _tiny_config import tiny

    import bench

    cfg = tiny(tmp_path, explainers={"names": ["centre"], "sweep": {"centre": {"sigma": [0.05, 1.0]}}})
    result = bench.run(cfg, quiet=True, leaderboard=False)
    assert result.ok
    rows = {r["explainer"]: r for r in result.rows()}
    assert set(rows) == {"centre.sigma-0.05", "centre.sigma-1.0"}
    cells = {c.explainer: c for c in result.cells}
    assert cells["centre.sigma-0.05"].params["explainer"] == {"sigma": 0.05}
    assert cells["centre.sigma-1.0"].params["explainer"] == {"sigma": 1.0}
    assert cells["centre.sigma-0.05"].keys["heatmaps"] != cells["centre.sigma-1.0"].keys["heatmaps"]
    assert cells["centre.sigma-1.0"].provenance["explainer"]["name"] == "centre"
    # a narrower prior ranks the regions differently from a wide one only in its tails: the
    # two cells' curves are computed separately, so their metric values come from their own maps
    values = [cells[k].metrics["aopc"].value for k in sorted(cells)]
    assert all(np.isfinite(values))
