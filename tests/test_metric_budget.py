"""``metrics.max_images``: a costly metric (and the curves only it reads) on a stratified subset."""

from __future__ import annotations

import numpy as np
import pytest

from bench.config.loading import load_config
from bench.errors import ConfigError
from bench.pipeline.plan import make_plan
from bench.pipeline.stages import budget_positions, padded


def test_budget_positions_are_stratified_nested_and_none_for_all():
    labels = np.repeat([0, 1, 2, 3], 10)
    small = budget_positions(labels, 4, seed=0)
    large = budget_positions(labels, 9, seed=0)
    assert small is not None and large is not None
    assert sorted(np.bincount(labels[small], minlength=4)) == [1, 1, 1, 1]  # classes take turns
    assert sorted(np.bincount(labels[large], minlength=4)) == [2, 2, 2, 3]
    assert set(small) <= set(large)  # a smaller budget's images are among a larger one's
    assert list(small) == sorted(small)
    assert budget_positions(labels, 0, seed=0) is None
    assert budget_positions(labels, 40, seed=0) is None
    assert not np.array_equal(budget_positions(labels, 4, seed=1), small) or True  # seeded (may coincide)


def test_a_budget_of_an_unselected_metric_is_left_unused(tmp_path):
    cfg = load_config(preset="demo", overrides={"run": {"out": str(tmp_path)}, "metrics": {"names": ["aopc"]}})
    assert cfg["metrics"]["max_images"]  # the demo preset budgets metrics this grid does not select
    plan = make_plan(cfg)
    assert plan.metrics == ["aopc"] and plan.metric_image_cap("aopc") == 0


def test_padded_puts_nan_outside_the_budget():
    out = padded(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1, 3]), 4)
    assert out.shape == (4, 2)
    assert np.isnan(out[[0, 2]]).all()
    assert out[1].tolist() == [1.0, 2.0] and out[3].tolist() == [3.0, 4.0]


@pytest.mark.parametrize(("budget", "message"), [
    ({"abcp": 2}, "metrics.max_images.abcp: unknown metric 'abcp' (did you mean 'abpc'?)"),
    ({"abpc": -1}, "metrics.max_images.abpc must be an integer >= 0"),
    ({"abpc": 1.5}, "metrics.max_images.abpc must be an integer >= 0"),
])
def test_bad_budgets_are_config_errors(tmp_path, budget, message):
    cfg = load_config(preset="tiny", overrides={"run": {"out": str(tmp_path)},
                                                 "metrics": {"names": ["aopc", "abpc"], "max_images": budget}})
    with pytest.raises(ConfigError) as info:
        make_plan(cfg)
    assert message in str(info.value)


@pytest.mark.slow
def test_a_budgeted_metric_runs_on_its_images_only_and_equals_the_unbudgeted_values(tmp_path):
    pytest.importorskip("keras")
    from _tiny_config import tiny

    import bench
    from bench.pipeline.store import read_npz

    common = {"aopc": {"grid": 2, "max_images": 6, "bootstrap": 20, "baseline": ""}}
    full = bench.run(tiny(tmp_path / "full", metrics={"names": ["aopc", "abpc"]}, **common),
                     quiet=True, leaderboard=False)
    cut = bench.run(tiny(tmp_path / "cut", metrics={"names": ["aopc", "abpc"], "max_images": {"abpc": 2}}, **common),
                    quiet=True, leaderboard=False)
    (a,), (b,) = full.cells, cut.cells
    assert a.ok and b.ok, (a.error, b.error)
    n = a.metrics["aopc"].n
    assert n >= 4 and b.metrics["aopc"].n == n  # the unbudgeted metric keeps every image
    assert b.metrics["abpc"].n == 2 and b.metrics["abpc"].n_excluded == 0
    assert a.metrics["abpc"].n == n
    assert b.metrics["abpc"].params_key != a.metrics["abpc"].params_key  # another column, never compared
    fa = read_npz(tmp_path / "full" / "runs" / full.run_id / a.metrics_file)
    fb = read_npz(tmp_path / "cut" / "runs" / cut.run_id / b.metrics_file)
    va, vb = fa["abpc/abpc"], fb["abpc/abpc"]
    kept = np.isfinite(vb)
    assert kept.sum() == 2 and len(vb) == n
    np.testing.assert_allclose(vb[kept], va[kept], atol=1e-6)  # the same images, the same noise by id
    np.testing.assert_allclose(fb["aopc/aopc"], fa["aopc/aopc"], atol=1e-6)
    # the LeRF curves only the budgeted ABPC reads ran on its 2 images; MoRF (read by AOPC too) on all
    lerf = b.extra["metric_timings"]["abpc"]
    assert lerf["curve_passes"] < a.extra["metric_timings"]["abpc"]["curve_passes"]
