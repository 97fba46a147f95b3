"""The tables say where a run used cheaper parameters than a component's defaults."""

from __future__ import annotations

from _fake_runs import FakeCell, write_run

from bench.publish.collect import collect
from bench.publish.leaderboard import build
from bench.publish.provenance import budget_lines

VALUES = [0.3, 0.4, 0.2, 0.5, 0.35, 0.3, 0.45, 0.25]


def test_non_default_parameters_are_named_with_their_defaults(tmp_path):
    write_run(tmp_path, "run-1", [
        FakeCell("covid", "vgg16", "rise", per_image=VALUES, explainer_params={"n_masks": 50, "cell": 7}),
        FakeCell("covid", "vgg16", "gradcam", per_image=VALUES, explainer_params={"relu": True}),
        FakeCell("covid", "vgg16", "not-registered-here", per_image=VALUES, explainer_params={"x": 1}),
    ])
    lines = budget_lines(collect(tmp_path))
    assert lines == ["explainer rise: n_masks 50 (default 1000)"]  # cell 7 and relu True are the defaults
    paths = build(tmp_path, formats=("md", "html"), figures=False, report=False).paths
    for fmt in ("md", "html"):
        text = paths[fmt].read_text()
        assert "other than the components" in text and "n_masks 50 (default 1000)" in text


def test_defaults_only_say_nothing(tmp_path):
    write_run(tmp_path, "run-1", [FakeCell("covid", "vgg16", "gradcam", per_image=VALUES)])
    assert budget_lines(collect(tmp_path)) == []
    paths = build(tmp_path, formats=("md",), figures=False, report=False).paths
    assert "defaults" not in paths["md"].read_text().split("## Provenance")[0]
