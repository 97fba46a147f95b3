"""The cell record: one typed, versioned shape (to_dict/from_dict); schema-1 records still load."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from _fake_runs import FakeCell, write_run

from bench.pipeline.record import SCHEMA_VERSION, CellRecord, MetricResult, RecordError, Timings
from bench.pipeline.store import read_json, write_json
from bench.publish.collect import collect, metric_columns_of
from bench.publish.comparisons import paired_comparisons
from bench.publish.leaderboard import build_leaderboard

GRADCAM = [0.50, 0.40, 0.60, 0.45, 0.55, 0.35, 0.52, 0.48]
RANDOM = [0.20, 0.25, 0.10, 0.30, 0.15, 0.22, 0.18, 0.20]

#: A record as bench wrote it before metrics were plugins (schema 1, no "schema" key).
SCHEMA_1 = {
    "cell_id": "d__m__gradcam__gaussian-noise", "run_id": "old", "status": "ok", "error": None, "stage": None,
    "dataset": "d", "model": "m", "weights": "none", "explainer": "gradcam", "perturbation": "gaussian-noise",
    "params": {"aopc": {"grid": [3, 3], "orders": ["morf", "lerf"], "seed": 0, "confidence": 0.9},
               "perturbation": {"sigma": 0.1}},
    "provenance": {}, "classification": {"recall_macro": 0.8}, "n_images": 8,
    "results": {"morf": {"aopc": 0.45, "ci": [0.4, 0.5], "n": 8}, "lerf": {"aopc": 0.1, "ci": [0.05, 0.15], "n": 8}},
    "abpc": {"value": 0.35, "ci": [0.3, 0.4], "n": 8},
    "timings": {"explain_seconds": 1.0, "evaluate_seconds": 2.0, "forward_passes": 160, "passes_per_second": 80},
    "strategy": "full", "curves_file": "curves/d__m__gradcam__gaussian-noise.npz",
    "heatmaps_file": "heatmaps/d__m__gradcam__gaussian-noise.npz", "keys": {"model": "mk"},
    "constant_heatmaps": 0, "finished": "2026-01-01T00:00:00+00:00",
}


def test_schema_1_records_become_metric_results():
    rec = CellRecord.from_dict(SCHEMA_1)
    assert rec.schema == SCHEMA_VERSION == 2 and rec.ok and rec.orders == ["morf", "lerf"]
    assert list(rec.metrics) == ["aopc", "lerf-aopc", "abpc"]
    aopc, lerf, abpc = rec.metrics["aopc"], rec.metrics["lerf-aopc"], rec.metrics["abpc"]
    assert (aopc.value, aopc.ci, aopc.n, aopc.confidence) == (0.45, (0.4, 0.5), 8, 0.9)
    assert aopc.higher_is_better and not lerf.higher_is_better and abpc.higher_is_better
    assert (aopc.file, aopc.key) == (SCHEMA_1["curves_file"], "morf_per_image")  # the per-image values
    assert (lerf.key, abpc.key) == ("lerf_per_image", "abpc_per_image")
    assert lerf.value == 0.1 and abpc.value == 0.35 and abpc.ci == (0.3, 0.4)
    assert rec.params["metrics"] == {"aopc": {}, "lerf-aopc": {}, "abpc": {}}  # what the record computed
    assert rec.timings.forward_passes == 160 and rec.timings.passes_per_second == 80
    # written back, it is a schema-2 record with the same numbers
    again = CellRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert again.schema == 2 and again.metrics == rec.metrics


def test_round_trip_is_lossless():
    rec = CellRecord(
        cell_id="d__m__e__p", run_id="r", dataset="d", model="m", explainer="e", perturbation="p",
        params={"aopc": {"grid": [3, 3]}}, orders=["morf"],
        metrics={"aopc": MetricResult(name="aopc", value=0.3, ci=(0.2, 0.4), n=5, n_excluded=1, label="AOPC",
                                      columns={"aopc": [6], "extra": [6, 3]}, file="metrics/x.npz",
                                      key="aopc/aopc", params={"k": 1}, params_key="abc"),
                 "bad": MetricResult(name="bad", status="failed", error="RuntimeError: x")},
        timings=Timings(explain_seconds=1.0, evaluate_seconds=2.0, forward_passes=10),
        extra={"from_the_future": [1, 2]},
    )
    d = rec.to_dict()
    assert d["schema"] == 2 and d["metrics"]["bad"]["value"] is None  # NaN -> null on disk
    assert d["from_the_future"] == [1, 2] and d["timings"]["passes_per_second"] == 5.0
    back = CellRecord.from_dict(json.loads(json.dumps(d, allow_nan=False)))
    assert back.metrics["aopc"] == rec.metrics["aopc"]
    assert back.metrics["bad"].status == "failed" and math.isnan(back.metrics["bad"].value)
    assert back.to_dict() == d and back.extra == {"from_the_future": [1, 2]}


@pytest.mark.parametrize("record, match", [
    ({**SCHEMA_1, "schema": 3}, "schema 3, newer than this bench reads"),
    ({**SCHEMA_1, "schema": "two"}, "unknown schema 'two': it must be recomputed"),
    ({**SCHEMA_1, "results": [1, 2]}, "'results' is not a mapping: it must be recomputed"),
    ({k: v for k, v in SCHEMA_1.items() if k != "model"}, "missing model: it must be recomputed"),
    ({"schema": 2, "dataset": "d", "model": "m", "explainer": "e", "perturbation": "p", "metrics": [1]},
     "'metrics' is not a mapping"),
    ([1, 2], "not a JSON object"),
])
def test_unreadable_records_say_they_must_be_recomputed(record, match):
    with pytest.raises(RecordError, match=match):
        CellRecord.from_dict(record, source="cells/x.json")


def test_schema_1_and_schema_2_records_share_a_leaderboard(tmp_path):
    # an old run (schema 1, no settings block) and a new one (schema 2) with the same inputs
    write_run(tmp_path, "old", [FakeCell("d", "m", "random", per_image=RANDOM, legacy=True)])
    write_run(tmp_path, "new", [FakeCell("d", "m", "gradcam", per_image=GRADCAM)])
    assert "results" in read_json(tmp_path / "runs" / "old" / "cells" / "d__m__random__gaussian-noise.json")
    assert read_json(tmp_path / "runs" / "new" / "cells" / "d__m__gradcam__gaussian-noise.json")["schema"] == 2
    df = collect(tmp_path).set_index("explainer")
    assert [c.id for c in metric_columns_of(df)] == ["aopc"]  # one column, both rows in it
    assert df.loc["random", "aopc"] == pytest.approx(np.mean(RANDOM))
    assert df.loc["gradcam", "settings"] == df.loc["random", "settings"]  # the same inputs: they pair
    assert df.loc["gradcam", "gain_over_baseline"] == pytest.approx(np.mean(GRADCAM) - np.mean(RANDOM))
    comp = paired_comparisons(collect(tmp_path), n_resamples=200)  # schema 1 per-image values: the curves file
    assert len(comp) == 1 and comp.n.iloc[0] == len(GRADCAM)
    assert comp["diff"].iloc[0] == pytest.approx(np.mean(np.float32(GRADCAM)) - np.mean(np.float32(RANDOM)), abs=1e-6)
    paths = build_leaderboard(tmp_path, figures=False)
    assert "AOPC ↑" in paths["md"].read_text()


def test_a_record_that_cannot_be_read_is_skipped_with_the_reason(tmp_path):
    write_run(tmp_path, "r", [FakeCell("d", "m", "gradcam", per_image=GRADCAM),
                              FakeCell("d", "m", "random", per_image=RANDOM)])
    path = tmp_path / "runs" / "r" / "cells" / "d__m__random__gaussian-noise.json"
    write_json(path, {**read_json(path), "schema": 9})
    with pytest.warns(UserWarning, match="schema 9, newer than this bench reads.*recompute"):
        df = collect(tmp_path)
    assert list(df.explainer) == ["gradcam"]


def test_a_metric_under_two_parameter_sets_is_two_columns_never_compared(tmp_path):
    write_run(tmp_path, "r", [FakeCell("d", "m", "gradcam", per_image=GRADCAM),
                              FakeCell("d", "m", "random", per_image=RANDOM)])
    path = tmp_path / "runs" / "r" / "cells" / "d__m__random__gaussian-noise.json"
    cell = read_json(path)
    cell["metrics"]["aopc"].update(params={"normalise": True}, params_key="f" * 20)
    write_json(path, cell)
    df = collect(tmp_path)
    ids = [c.id for c in metric_columns_of(df)]
    assert len(ids) == 2 and all(i.startswith("aopc.") for i in ids)
    g = df[df.explainer == "gradcam"].iloc[0]
    assert math.isnan(g.gain_over_baseline)  # random holds aopc only under other parameters
    assert paired_comparisons(df, metrics=ids, n_resamples=100).empty
    assert df["settings"].nunique() == 1  # the rows' settings are the same
