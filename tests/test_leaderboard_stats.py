"""The leaderboard's statistics (issue 14) from fake run folders with known answers.

Constructed cases only (no trained model, no machine-dependent number): a method better than
another on every image, identical methods, a constant explainer that survives randomisation,
controls whose curves are identical, differences below the minimum effect.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _fake_runs import FakeCell, default_ids, write_run

from bench import stats as st
from bench.config.loading import load_config
from bench.errors import ConfigError
from bench.pipeline.driver import RunResult
from bench.pipeline.record import CellRecord
from bench.pipeline.store import read_json, read_npz, write_json, write_npz
from bench.publish.analysis import (
    FULL_RANDOMISATION_COLUMN,
    NO_POWER,
    StatisticsOptions,
    analyse,
    batched_cis,
    options_from_config,
    pair_controls,
)
from bench.publish.collect import RANK_COLUMNS
from bench.publish.leaderboard import analyse_run, build
from bench.ranking import AGGREGATE_LABEL, CONTROLS_CORRECT, CONTROLS_UNSEPARATED

N = 12
BASE = np.linspace(0.2, 0.6, N)
#: bootstrap resamples in these tests: a constant paired difference has p = 2 / (B + 1) (every
#: resample on one side), which must survive Holm over a family of 28 pairs
B = 2000


def role(r: str) -> dict:
    return {"provenance": {"explainer": {"role": r}}}


def _table(block: dict, name: str) -> pd.DataFrame:
    t = block["tables"][name]
    return pd.DataFrame(t["data"], columns=t["columns"])


def _patch_randomisation(run: Path, metric: str, *, last: dict[str, float] | None = None) -> None:
    """Make ``metric`` of every cell of ``run`` a randomisation-family metric; with ``last``
    (explainer -> value), a cascading one with the per-image column ``last``."""
    for path in sorted((run / "cells").glob("*.json")):
        cell = read_json(path)
        m = cell["metrics"].get(metric)
        if m is None:
            continue
        m["family"] = "randomisation"
        m["higher_is_better"] = False
        if last is not None:
            arrays = dict(read_npz(run / m["file"]))
            n = len(arrays["ids"])
            arrays[f"{metric}/{FULL_RANDOMISATION_COLUMN}"] = np.full(n, last[cell["explainer"]], np.float32)
            write_npz(run / m["file"], **arrays)
            m["columns"][FULL_RANDOMISATION_COLUMN] = [n]
        write_json(path, cell)


def _set_leaderboard_config(run: Path, **keys) -> None:
    manifest = read_json(run / "manifest.json")
    manifest["config"]["leaderboard"] = dict(keys)
    write_json(run / "manifest.json", manifest)


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """One family: best > worse on every image, twin-a == twin-b, three controls with distinct
    AOPC (oracle > random > anti-oracle) and identical values under ``flat``; a constant
    explainer trivially invariant under the randomisation metrics."""
    folder = tmp_path_factory.mktemp("known")
    per = {
        "best": BASE + 0.3, "twin-a": BASE + 0.1, "twin-b": BASE + 0.1, "worse": BASE,
        "constant": BASE + 0.05, "oracle": BASE + 0.4, "random": BASE + 0.02, "anti-oracle": BASE - 0.2,
    }
    roles = {"constant": "null-control", "oracle": "positive-control", "random": "null-control",
             "anti-oracle": "negative-control"}
    cells = []
    for name, values in per.items():
        cascade = np.full(N, 1.0 if name == "constant" else 0.1)
        logit = np.full(N, 0.9 if name == "constant" else 0.2)
        metrics = {
            "flat": (BASE.tolist() if name in ("oracle", "random", "anti-oracle") else (values - 0.1).tolist(),
                     True, "Flat"),
            "cascade": (cascade.tolist(), False, "Cascade"),
            "logit": (logit.tolist(), False, "Logit"),
        }
        cells.append(FakeCell("ds", "net", name, per_image=values.tolist(), metrics=metrics,
                              extra=role(roles.get(name, "method"))))
    run = write_run(folder, "run-1", cells, n_test=N)
    _patch_randomisation(run, "cascade", last={n: (1.0 if n == "constant" else 0.1) for n in per})
    _patch_randomisation(run, "logit")
    _set_leaderboard_config(run, control="random", min_effect=0.01, sanity_randomisation=0.5,
                            sanity_random_logit=0.5, aggregate=["faithfulness"], comparisons="primary")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all on this clean case
        board = build(folder, control="random", figures=False,
                      options=options_from_config(read_json(run / "manifest.json")["config"]["leaderboard"],
                                                  n_resamples=B))
    doc = json.loads(board.paths["json"].read_text())
    return {"folder": folder, "board": board, "doc": doc, "run": run,
            "md": board.paths["md"].read_text(), "html": board.paths["html"].read_text(),
            "report": board.paths["report"].read_text()}


def test_better_on_every_image_has_p_best_1_and_rank_interval_1_1_in_the_json(known):
    (group,) = known["doc"]["groups"]
    ranks = _table(group, "ranks")
    aopc = ranks[ranks.metric == "aopc"].set_index("explainer")
    assert aopc.loc["best", "rank"] == 1.0
    assert (aopc.loc["best", "rank_low"], aopc.loc["best", "rank_high"]) == (1.0, 1.0)
    assert aopc.loc["best", "p_best"] == 1.0
    assert aopc.loc["worse", ["rank", "rank_low", "rank_high", "p_best"]].tolist() == [4.0, 4.0, 4.0, 0.0]


def test_identical_explainers_share_the_average_rank_and_p_best(known):
    (group,) = known["doc"]["groups"]
    ranks = _table(group, "ranks")
    flat = ranks[ranks.metric == "flat"].set_index("explainer")  # best > twins > worse here too
    assert flat.loc["twin-a", "rank"] == flat.loc["twin-b", "rank"] == 2.5
    assert flat.loc["twin-a", "p_best"] == flat.loc["twin-b", "p_best"] == 0.0
    # where the twins are the best, they share the win
    board = known["board"]
    twins = analyse(board.frame[board.frame.explainer.isin(["twin-a", "twin-b", "worse"])].copy(),
                    StatisticsOptions(n_resamples=B))
    t = twins.ranks[twins.ranks.metric == "aopc"].set_index("explainer")
    assert t.loc["twin-a", "rank"] == t.loc["twin-b", "rank"] == 1.5
    assert t.loc["twin-a", "p_best"] == t.loc["twin-b", "p_best"] == 0.5


def test_controls_are_reference_rows_not_ranked(known):
    (group,) = known["doc"]["groups"]
    ranks = _table(group, "ranks")
    aopc = ranks[ranks.metric == "aopc"]
    controls = aopc[aopc.role != "method"]
    assert set(controls.explainer) == {"constant", "oracle", "random", "anti-oracle"}
    assert controls["rank"].isna().all() and controls["p_best"].isna().all()
    assert sorted(aopc[aopc.role == "method"]["rank"]) == [1.0, 2.5, 2.5, 4.0]  # ranks among the methods only
    oracle = controls.set_index("explainer").loc["oracle"]
    assert oracle["mean"] == pytest.approx(float(np.mean(np.float32(BASE + 0.4))), abs=1e-6)


def test_a_constant_explainer_is_flagged_by_the_randomisation_gates_in_every_format(known):
    board, doc = known["board"], known["doc"]
    row = board.frame.set_index("explainer").loc["constant"]
    assert "survives model randomisation (Spearman 1.00 >= 0.5)" in row["sanity_flags"]
    assert "fails the random-logit test (similarity 0.90 >= 0.5)" in row["sanity_flags"]
    assert board.frame.set_index("explainer").loc["best", "sanity_flags"] == ""
    (group,) = doc["groups"]
    sanity = _table(group, "sanity")
    cascade = sanity[(sanity.metric == "cascade")].set_index("explainer")
    assert cascade.loc["constant", "column"] == FULL_RANDOMISATION_COLUMN
    assert cascade.loc["constant", "check"] == st.SANITY_CHECKS[0] and bool(cascade.loc["constant", "failed"])
    assert not cascade.loc["best", "failed"]
    logit = sanity[(sanity.metric == "logit")].set_index("explainer")
    assert logit.loc["constant", "check"] == st.SANITY_CHECKS[1]
    rows = {r["explainer"]: r for r in doc["rows"]}
    assert "survives model randomisation" in rows["constant"]["sanity_flags"]
    for text in (known["md"], known["html"], known["report"], board.summary()):
        assert "survives model randomisation" in text and "fails the random-logit test" in text
    # the flag follows the explainer into the rank, per-class and comparison tables of the markdown
    md = known["md"]
    for section in ("### Ranks under every metric", "per class", "### Paired comparisons"):
        part = md[md.index(section):]
        part = part[:part.index("\n###") if "\n###" in part else len(part)]
        assert "constant" in part and "survives model randomisation" in part, section


def test_identical_control_curves_cannot_separate_and_the_ranking_says_no_power(known):
    (group,) = known["doc"]["groups"]
    power = _table(group, "metric_power").set_index("metric")
    assert power.loc["flat", "verdict"] == CONTROLS_UNSEPARATED
    assert power.loc["flat", "positive_minus_null"] == 0.0 == power.loc["flat", "null_minus_negative"]
    assert power.loc["aopc", "verdict"] == CONTROLS_CORRECT
    assert group["power"]["flat"] == CONTROLS_UNSEPARATED and group["power"]["aopc"] == CONTROLS_CORRECT
    # the null control is the gain reference (random), not the other null control
    assert set(power["null_control"]) == {"random"}
    assert "oracle (positive-control" in power.loc["aopc", "measured_on"]
    ranks = _table(group, "ranks")
    flat = ranks[(ranks.metric == "flat") & (ranks.role == "method")]
    assert (flat.power == CONTROLS_UNSEPARATED).all() and flat["flags"].str.contains(NO_POWER).all()
    aopc = ranks[(ranks.metric == "aopc") & (ranks.role == "method")]
    assert not aopc["flags"].str.contains(NO_POWER).any()
    assert f"Flat ↑ ({NO_POWER})" in known["md"]
    # power only for the families whose controls' order is defined: not for the sanity metrics
    assert "cascade" not in set(power.index)


def test_normalised_score_of_the_primary_metric(known):
    (group,) = known["doc"]["groups"]
    norm = _table(group, "normalised").set_index("explainer")
    # (best - random) / (oracle - random) = (0.3 - 0.02) / (0.4 - 0.02) on every image
    assert norm.loc["best", "normalised"] == pytest.approx(0.28 / 0.38, abs=1e-5)
    assert norm.loc["best", "positive_control"] == "oracle" and norm.loc["best", "null_control"] == "random"
    assert norm.loc["best", "normalised_ci_low"] <= norm.loc["best", "normalised"] <= norm.loc["best",
                                                                                               "normalised_ci_high"]


def test_comparisons_test_the_mean_with_verdicts_and_holm_within_the_family(known):
    (group,) = known["doc"]["groups"]
    comp = _table(group, "comparisons")
    aopc = comp[comp.metric == "aopc"]
    n = len(known["board"].frame)
    assert len(aopc) == n * (n - 1) // 2  # every pair for the primary metric
    np.testing.assert_allclose(aopc.p_holm, st.holm(aopc.p_value.to_numpy()))
    pair = aopc[(aopc.explainer_a == "best") & (aopc.explainer_b == "worse")].iloc[0]
    assert pair["diff"] == pytest.approx(0.3, abs=1e-6) and pair["verdict"] == st.BETTER
    twins = aopc[(aopc.explainer_a == "twin-a") & (aopc.explainer_b == "twin-b")].iloc[0]
    assert twins["verdict"] == st.NEGLIGIBLE
    # the other metrics: each explainer against the reference control only
    flat = comp[comp.metric == "flat"]
    assert set(flat.explainer_b) == {"random"} and len(flat) == n - 1
    # the test and the verdicts are said in the notes
    for text in (known["md"], known["html"]):
        assert "paired bootstrap test of the mean difference" in text and "negligible" in text
        assert "Wilcoxon" not in text


def test_min_effect_from_the_config_makes_a_small_consistent_difference_negligible(tmp_path):
    a = BASE + 0.005  # better on every image by 0.005: significant, but below a 0.01 minimum effect
    cells = [FakeCell("ds", "net", "a", per_image=a.tolist()), FakeCell("ds", "net", "b", per_image=BASE.tolist())]
    run = write_run(tmp_path, "r", cells, n_test=N)
    for min_effect, verdict in ((0.01, st.NEGLIGIBLE), (0.001, st.BETTER), ({"aopc": 0.001}, st.BETTER),
                                ({"default": 0.1}, st.NEGLIGIBLE)):
        _set_leaderboard_config(run, min_effect=min_effect)
        board = build(tmp_path, formats=("json",), figures=False, report=False)
        comp = board.analysis.comparisons
        assert comp["verdict"].tolist() == [verdict], min_effect
        assert bool(comp["significant"].iloc[0])


def test_aggregate_is_labelled_and_averages_the_faithfulness_family(known):
    (group,) = known["doc"]["groups"]
    assert group["aggregate_metrics"] == ["aopc", "flat"]
    agg = _table(group, "aggregate").set_index("explainer")
    assert agg.loc["best", "mean_rank"] == 1.0 and agg.loc["worse", "mean_rank"] == 4.0
    assert known["doc"]["statistics"]["aggregate"]["label"] == AGGREGATE_LABEL
    assert AGGREGATE_LABEL in known["md"] and "never a single truth" in known["html"]


def test_agreement_between_metrics(known):
    (group,) = known["doc"]["groups"]
    kendall = group["kendall"]
    i, j = kendall["metrics"].index("aopc"), kendall["metrics"].index("flat")
    assert kendall["tau"][i][j] == pytest.approx(1.0)  # the same order of merit
    alpha = _table(group, "alpha").set_index("metric")
    assert alpha.loc["aopc", "alpha"] == pytest.approx(1.0)  # every image ranks the methods alike


def test_per_class_for_every_metric(known):
    pc = known["board"].analysis.per_class
    assert set(pc.metric) == {c["id"] for c in known["board"].frame.attrs["metrics"]}
    best = pc[(pc.metric == "flat") & (pc.explainer == "best")]
    assert best.n.sum() == N and set(best["class"]) == {"COVID", "Lung Opacity", "Normal", "Viral Pneumonia"}


def test_cross_model_table_on_the_common_image_set(tmp_path):
    ids = default_ids(8)
    cells = [
        FakeCell("ds", "m1", "gradcam", per_image=[0.5] * 6, ids=ids[:6]),
        FakeCell("ds", "m1", "random", per_image=[0.1] * 6, ids=ids[:6]),
        FakeCell("ds", "m2", "gradcam", per_image=[0.3] * 5, ids=ids[3:]),
    ]
    write_run(tmp_path, "r", cells)
    board = build(tmp_path, formats=("md", "json"), figures=False, report=False)
    cm = board.analysis.cross_model
    aopc = cm[cm.metric == "aopc"]
    assert set(aopc.n_common) == {3}  # test-003..test-005: explained by both models
    assert aopc.set_index(["model", "explainer"]).loc[("m1", "gradcam"), "n"] == 3
    doc = json.loads(board.paths["json"].read_text())
    assert doc["cross_model"][0]["n_common"] == 3
    assert "on the 3 test image(s) every model classified correctly" in board.paths["md"].read_text()


def test_rank_columns_in_the_rows_and_the_csv(known):
    frame = known["board"].frame
    assert set(RANK_COLUMNS) <= set(frame.columns)
    best = frame.set_index("explainer").loc["best"]
    assert (best["rank"], best["rank_low"], best["rank_high"], best["p_best"]) == (1.0, 1.0, 1.0, 1.0)
    assert best["power"] == CONTROLS_CORRECT
    csv = pd.read_csv(known["board"].paths["csv"])
    assert {"rank", "rank_low", "rank_high", "p_best", "power", "sanity_flags"} <= set(csv.columns)


def test_run_result_to_frame_and_tables(known):
    run = known["run"]
    cells = [CellRecord.from_dict(read_json(p)) for p in sorted((run / "cells").glob("*.json"))]
    result = RunResult(run_id=run.name, run_dir=run, cells=cells)
    frame = result.to_frame()
    best = frame.set_index("explainer").loc["best"]
    assert best["aopc_rank"] == 1.0 and best["aopc_p_best"] == 1.0 and best["aopc_power"] == CONTROLS_CORRECT
    assert best["flat_power"] == CONTROLS_UNSEPARATED and best["aggregate_rank"] == 1.0
    assert "survives model randomisation" in frame.set_index("explainer").loc["constant", "sanity_flags"]
    assert math.isnan(frame.set_index("explainer").loc["oracle", "aopc_rank"])  # a control is not ranked
    tables = result.tables()
    assert {"rows", "ranks", "comparisons", "power", "normalised", "sanity", "kendall", "alpha", "aggregate",
            "per_class", "cross_model", "notes"} <= set(tables)
    assert all(isinstance(t, pd.DataFrame) for t in tables.values())
    assert analyse_run(run).paths == {}


def test_empty_mask_exclusions_are_counts_not_warnings(tmp_path):
    nan = float("nan")
    masked = [0.4, nan, 0.5, nan, 0.6, 0.5, nan, 0.4]  # NaN: an image without a mask
    cells = [FakeCell("ds", "net", e, per_image=[0.3 + 0.01 * k] * 8, metrics={"mass": ([v + 0.01 * k for v in masked],
                                                                                      True, "Mass")},
                      extra=role(r))
             for k, (e, r) in enumerate((("gradcam", "method"), ("saliency", "method"), ("random", "null-control"),
                                         ("oracle", "positive-control")))]
    write_run(tmp_path, "r", cells)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        board = build(tmp_path, figures=False)
    ranks = board.analysis.ranks
    mass = ranks[(ranks.metric == "mass") & (ranks.role == "method")]
    assert set(mass.n) == {5} and set(mass.n_dropped) == {0}
    assert board.frame["mass_n_excluded"].tolist() == [3] * 4


# ---------------------------------------------------------------------------------------
# pieces
# ---------------------------------------------------------------------------------------
def test_pair_controls_by_params_then_names():
    pos = [("oracle-x", {"mask": "x"}), ("oracle-y", {"mask": "y"})]
    neg = [("anti-oracle-y", {"mask": "y"}), ("anti-oracle-x", {"mask": "x"})]
    assert pair_controls(pos, neg) == [("oracle-x", "anti-oracle-x"), ("oracle-y", "anti-oracle-y")]
    # no parameters: the names show it
    pos = [("oracle-tumour", {}), ("oracle-lungs", {})]
    neg = [("anti-oracle-lungs", {}), ("anti-oracle-tumour", {})]
    assert pair_controls(pos, neg) == [("oracle-tumour", "anti-oracle-tumour"), ("oracle-lungs", "anti-oracle-lungs")]
    # nothing shows it: each on its own; one of each: a pair
    assert pair_controls([("p1", {}), ("p2", {})], [("n", {})]) == [("p1", None), ("p2", None), (None, "n")]
    assert pair_controls([("p", {"mask": "a"})], [("n", {"mask": "b"})]) == [("p", "n")]
    assert pair_controls([], [("n", {})]) == [(None, "n")]


def test_batched_cis_equal_bootstrap_ci_one_by_one():
    rng = np.random.default_rng(3)
    values = [rng.random(5), rng.random(7), rng.random(5), np.full(4, 0.25), np.array([]), rng.random(1)]
    got = batched_cis(values, confidence=0.9, n_resamples=200, seed=4)
    for v, (lo, hi) in zip(values, got, strict=True):
        if v.size == 0:
            assert math.isnan(lo) and math.isnan(hi)
            continue
        elo, ehi = st.bootstrap_ci(v, confidence=0.9, n_resamples=200, seed=4)
        assert lo == pytest.approx(elo, abs=1e-12) and hi == pytest.approx(ehi, abs=1e-12)


def test_leaderboard_config_keys_and_their_checks():
    cfg = load_config(None)
    board = cfg["leaderboard"]
    assert board["min_effect"] == st.DEFAULT_MIN_EFFECT
    assert board["sanity_randomisation"] == 0.5 == board["sanity_random_logit"]
    assert board["aggregate"] == ["faithfulness"] and board["comparisons"] == "primary"
    ok = load_config(None, overrides={"leaderboard": {"min_effect": {"aopc": 0.02, "default": 0}, "aggregate": [],
                                                      "comparisons": "all", "sanity_randomisation": 0.7}})
    opts = options_from_config(ok["leaderboard"])
    assert opts.min_effect == {"aopc": 0.02, "default": 0} and opts.aggregate == ("faithfulness",)
    assert opts.comparisons == "all" and opts.sanity_randomisation == 0.7
    for bad, match in (({"min_effect": -0.1}, "leaderboard.min_effect must be"),
                       ({"min_effect": {"aopc": "big"}}, "leaderboard.min_effect.aopc"),
                       ({"comparisons": "primry"}, "did you mean 'primary'"),
                       ({"aggregate": [""]}, r"leaderboard.aggregate\[0\]"),
                       ({"sanity_random_logit": float("inf")}, "leaderboard.sanity_random_logit")):
        with pytest.raises(ConfigError, match=match):
            load_config(None, overrides={"leaderboard": bad})
    with pytest.raises(ConfigError, match="leaderboard.min_effect must be float or integer or table"):
        load_config(None, overrides={"leaderboard": {"min_effect": "0.1"}})


def test_statistics_never_cost_the_leaderboard(tmp_path, monkeypatch):
    write_run(tmp_path, "r", [FakeCell("d", "m", "a", per_image=BASE.tolist()),
                              FakeCell("d", "m", "b", per_image=BASE.tolist())], n_test=N)
    import bench.publish.analysis as an

    def boom(*args, **kwargs):
        raise RuntimeError("kaput")

    monkeypatch.setattr(an.rk, "rank_methods", boom)
    with pytest.warns(UserWarning, match="statistics skipped: RuntimeError: kaput"):
        board = build(tmp_path, formats=("md", "json", "html"), figures=False, report=False)
    assert board.paths["md"].exists() and board.analysis.ranks.empty


def test_mean_difference_is_paired_comparison_without_the_wilcoxon_extra():
    from bench.publish.comparisons import mean_difference

    rng = np.random.default_rng(5)
    cases = [(rng.random(15), rng.random(15)), (BASE + 0.3, BASE), (BASE, BASE.copy()), (np.array([]), np.array([]))]
    for a, b in cases:
        got = mean_difference(a, b, confidence=0.9, seed=2, n_resamples=300)
        if a.size == 0:
            assert got["n"] == 0 and math.isnan(got["diff"]) and math.isnan(got["p_value"])
            continue
        ref = st.paired_comparison(a, b, confidence=0.9, seed=2, n_resamples=300)
        for key in ("diff", "p_value", "n", "mean_a", "mean_b"):
            assert got[key] == pytest.approx(ref[key], abs=1e-12), key
        assert got["ci"] == pytest.approx(ref["ci"], abs=1e-12)


def test_make_figures_draws_ranks_and_agreement_when_the_figures_module_can(known, tmp_path, monkeypatch):
    import bench.publish.figures as fg
    from bench.publish.report import AGREEMENT_SECTION, RANKS_SECTION, make_figures

    board = known["board"]
    seen: dict[str, list] = {"ranks": [], "agreement": []}

    def fake_ranks(ranks, path, *, title):
        seen["ranks"].append((ranks.copy(), title))
        Path(path).write_bytes(b"\x89PNG\r\n\x1a\n")
        return Path(path)

    def fake_agreement(matrix, path, *, title):
        seen["agreement"].append((matrix.copy(), title))
        Path(path).write_bytes(b"\x89PNG\r\n\x1a\n")
        return Path(path)

    monkeypatch.setattr(fg, "plot_ranks", fake_ranks, raising=False)
    monkeypatch.setattr(fg, "plot_agreement", fake_agreement, raising=False)
    figs = make_figures(board.frame, tmp_path / "figures", analysis=board.analysis)
    assert [p.name.startswith("ranks__") for p in figs[RANKS_SECTION]] == [True]
    assert [p.name.startswith("agreement__") for p in figs[AGREEMENT_SECTION]] == [True]
    (ranks, title), = seen["ranks"]
    assert list(ranks.columns) == ["method", "rank", "rank_low", "rank_high", "p_best", "metric"]
    assert set(ranks.method) == {"best", "twin-a", "twin-b", "worse"}  # methods only: controls are not ranked
    assert title.startswith("ds / net")
    (matrix, _), = seen["agreement"]
    assert list(matrix.index) == list(matrix.columns) and (np.diag(matrix.to_numpy()) == 1.0).all()
    # before the figures module has them: no figure, no error
    monkeypatch.delattr(fg, "plot_ranks", raising=False)
    monkeypatch.delattr(fg, "plot_agreement", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", message="overlay figure")
        figs = make_figures(board.frame, tmp_path / "figures2", analysis=board.analysis)
    assert figs[RANKS_SECTION] == [] and figs[AGREEMENT_SECTION] == []


def test_json_block_lists_each_flagged_explainer_once(known):
    (group,) = known["doc"]["groups"]
    assert set(group["flags"]) == {"constant"}
    assert group["flags"]["constant"] == ["survives model randomisation (Spearman 1.00 >= 0.5)",
                                          "fails the random-logit test (similarity 0.90 >= 0.5)"]
    ranks = _table(group, "ranks")
    assert ranks[ranks.explainer == "constant"]["flags"].str.contains("survives model randomisation").all()
