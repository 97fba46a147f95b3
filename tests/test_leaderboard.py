"""The leaderboard files from fake run folders with known numbers."""

from __future__ import annotations

import base64
import io
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _fake_runs import FakeCell, write_run

from bench.errors import BenchError, DataError
from bench.publish.collect import collect, columns_of
from bench.publish.formats import FORMATS, SCHEMA, render
from bench.publish.leaderboard import (
    PUBLISHED_DIR,
    build,
    build_leaderboard,
    is_published_folder,
    output_dir,
)
from bench.publish.summary import headline_metrics, summary_text
from bench.publish.tables import display_table
from bench.publish.text import (
    format_ci,
    format_cost,
    format_number,
    format_p,
    format_value_ci,
    latex_escape,
    md_cell,
)

GRADCAM = [0.50, 0.40, 0.60, 0.45, 0.55, 0.35, 0.52, 0.48]
RANDOM = [0.20, 0.25, 0.10, 0.30, 0.15, 0.22, 0.18, 0.20]
OCCL = [0.30, 0.35, 0.40, 0.20, 0.25, 0.33, 0.28, 0.31]
NASTY = "x&y_%$#{}~^\\<b>'\"z"


def _make_results(tmp_path):
    """run-1 (old): covid vgg16 gradcam/random/occlusion + a gradcam that run-2 replaces;
    run-2 (new): covid vgg16 gradcam with other numbers; a failed cell; dataset 'alpha' in run-3."""
    # run-1 and run-2 ran the same orders (morf + lerf): the same settings, so they pair and replace
    write_run(tmp_path, "run-1", [
        FakeCell("covid", "vgg16", "gradcam", per_image=[0.1] * 8, lerf_per_image=[0.05] * 8,
                 finished="2026-01-01T10:00:00+00:00"),
        FakeCell("covid", "vgg16", "random", per_image=RANDOM, lerf_per_image=[0.05] * 8,
                 finished="2026-01-01T10:00:01+00:00"),
        FakeCell("covid", "vgg16", "occlusion", per_image=OCCL, lerf_per_image=[0.05] * 8,
                 finished="2026-01-01T10:00:02+00:00", evaluate_seconds=3.25),
    ])
    write_run(tmp_path, "run-2", [
        FakeCell("covid", "vgg16", "gradcam", per_image=GRADCAM, lerf_per_image=[0.05] * 8,
                 finished="2026-01-02T10:00:00+00:00"),
        FakeCell("covid", "vgg16", "occlusion", status="failed", error="RuntimeError: boom",
                 finished="2026-01-02T10:00:01+00:00"),
        FakeCell("covid", "densenet201", "gradcam", status="failed", error="ValueError: NaN heatmap",
                 finished="2026-01-02T10:00:02+00:00"),
    ], created="2026-01-02T09:00:00+00:00")
    write_run(tmp_path, "run-3", [
        FakeCell("alpha", "simple-cnn", "random", per_image=[0.3] * 4, ids=[f"test-{i:03d}" for i in range(4)]),
        FakeCell("alpha", "simple-cnn", "gradcam", per_image=[0.2] * 4, ids=[f"test-{i:03d}" for i in range(4)]),
    ], n_test=4)
    return tmp_path


@pytest.fixture()
def results(tmp_path):
    return _make_results(tmp_path)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The results folder after one full build (figures included): (folder, returned paths)."""
    folder = _make_results(tmp_path_factory.mktemp("built"))
    return folder, build_leaderboard(folder)


def test_collect_one_row_per_key_latest_ok_wins(results):
    df = collect(results)
    assert len(df) == 5  # covid: gradcam, random, occlusion; alpha: random, gradcam
    g = df[(df.dataset == "covid") & (df.explainer == "gradcam")].iloc[0]
    assert g.run_id == "run-2"
    assert g.aopc == pytest.approx(np.mean(GRADCAM))
    # occlusion failed in run-2 (newer): the older ok cell of run-1 stays on the board
    occ = df[df.explainer == "occlusion"].iloc[0]
    assert occ.run_id == "run-1" and occ.aopc == pytest.approx(np.mean(OCCL))
    assert occ.evaluate_seconds == pytest.approx(3.25)
    assert "densenet201" not in set(df.model)


def test_failed_cells_listed_not_ranked(results):
    df = collect(results)
    failed = df.attrs["failed"]
    assert set(failed.cell_id) == {"covid__vgg16__occlusion__gaussian-noise", "covid__densenet201__gradcam__gaussian-noise"}
    shown = dict(zip(failed.model, failed.shown_instead, strict=True))
    assert shown == {"vgg16": "run-1", "densenet201": ""}
    assert "ValueError: NaN heatmap" in set(failed.error)


def test_sorted_by_aopc_within_dataset_controls_after_the_methods(results):
    df = collect(results)
    assert list(df.dataset) == ["alpha", "alpha", "covid", "covid", "covid"]
    for _, g in df.groupby("dataset"):
        methods = g[g.role == "method"]
        assert list(methods.aopc) == sorted(methods.aopc, reverse=True)
        assert list(g.role)[-1] == "null-control"  # a reference line, not ranked among the methods
    assert list(df[df.dataset == "covid"].explainer) == ["gradcam", "occlusion", "random"]
    # alpha: random (0.3) beats gradcam (0.2) and is still listed after it
    assert list(df[df.dataset == "alpha"].explainer) == ["gradcam", "random"]


def test_gain_over_random_by_hand(results):
    df = collect(results).set_index(["dataset", "explainer"])
    assert df.loc[("covid", "gradcam"), "gain_over_baseline"] == pytest.approx(np.mean(GRADCAM) - np.mean(RANDOM))
    assert df.loc[("covid", "occlusion"), "gain_over_baseline"] == pytest.approx(np.mean(OCCL) - np.mean(RANDOM))
    assert df.loc[("covid", "random"), "gain_over_baseline"] == pytest.approx(0.0)
    assert df.loc[("alpha", "gradcam"), "gain_over_baseline"] == pytest.approx(0.2 - 0.3)


def test_gain_control_is_a_parameter_and_blank_when_absent(results):
    df = collect(results, control="occlusion").set_index(["dataset", "explainer"])
    assert df.loc[("covid", "gradcam"), "gain_over_baseline"] == pytest.approx(np.mean(GRADCAM) - np.mean(OCCL))
    assert np.isnan(df.loc[("alpha", "gradcam"), "gain_over_baseline"])
    md = render(collect(results, control="occlusion"), "md")
    assert "Gain over occlusion" in md
    with pytest.warns(FutureWarning, match="baseline= is deprecated"):
        old = collect(results, baseline="occlusion").set_index(["dataset", "explainer"])
    assert old.loc[("covid", "gradcam"), "gain_over_baseline"] == df.loc[("covid", "gradcam"), "gain_over_baseline"]


def test_build_writes_five_files_and_report(built):
    results, paths = built
    assert set(paths) == {*FORMATS, "report"}
    for fmt in FORMATS:
        assert paths[fmt] == results / f"leaderboard.{fmt}"
        assert paths[fmt].stat().st_size > 100
    assert (results / "report.md").exists()
    figs = sorted(p.name for p in (results / "figures").iterdir())
    assert any(p.startswith("curves__") and p.endswith(".png") for p in figs)
    assert any(p.startswith("overlays__") and p.endswith(".webp") for p in figs)  # one per model, WebP
    assert any(p.startswith("per_class__") and p.endswith(".png") for p in figs)


def test_out_dir_and_format_subset(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("published")
    paths = build_leaderboard(results, formats=("csv", "latex"), out_dir=out, report=False, figures=False)
    assert set(paths) == {"csv", "tex"}
    assert (out / "leaderboard.tex").exists() and not (results / "leaderboard.csv").exists()


def test_markdown_columns_and_footer(results):
    paths = build_leaderboard(results, figures=False)
    md = paths["md"].read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Dataset"))
    for col in ["Model", "Weights", "Explainer", "Perturbation", "Test recall (macro)", "F1 (macro)",
                "Accuracy", "AOPC ↑ [95% CI]", "Gain over random (AOPC ↑) [95% CI]", "n images",
                "Eval time (s)", "LeRF AOPC ↓ [95% CI]", "ABPC ↑ [95% CI]"]:
        assert f" {col} " in header, col
    # the metric columns in the records' metric order, each with its direction
    assert header.index("AOPC ↑") < header.index("LeRF AOPC ↓") < header.index("ABPC ↑")
    assert re.search(r"^\|-+\|", md, re.M)  # github style separator
    for text in ("run-1", "run-2", "run-3", "TensorFlow 2.21.0", "Keras 3.99.0", "seeds", "Grid: 3x3",
                 "sigma: 0.1"):
        assert text in md, text
    assert "RuntimeError: boom" in md  # failed cells are listed


def test_lerf_and_abpc_columns_only_when_present(results):
    df = collect(results)
    assert "LeRF AOPC" in render(df, "md")
    only_alpha = df[df.dataset == "alpha"]
    only_alpha.attrs = df.attrs
    assert "LeRF AOPC" not in render(only_alpha, "md")
    g = df[(df.dataset == "covid") & (df.explainer == "gradcam")].iloc[0]
    assert g["lerf-aopc"] == pytest.approx(0.05, abs=1e-6)
    assert g.abpc == pytest.approx(np.mean(GRADCAM) - 0.05, abs=1e-6)


def test_csv_parses_back(results):
    df = collect(results)
    text = render(df, "csv")
    back = pd.read_csv(io.StringIO(text))
    assert list(back.columns) == columns_of(df)
    assert [c for c in back.columns if c in ("aopc", "lerf-aopc", "abpc")] == ["aopc", "lerf-aopc", "abpc"]
    assert len(back) == 5
    g = back[(back.dataset == "covid") & (back.explainer == "gradcam")].iloc[0]
    assert g.aopc == pytest.approx(np.mean(GRADCAM))
    assert g.n_images == 8 and g.run_id == "run-2"


def test_json_schema_and_rows(results):
    paths = build_leaderboard(results, figures=False, report=False)
    doc = json.loads(paths["json"].read_text())
    assert doc["schema"] == SCHEMA == "bench.publish.leaderboard/3"
    assert doc["primary"] == "aopc" and [m["id"] for m in doc["metrics"]] == ["aopc", "lerf-aopc", "abpc"]
    assert {m["id"]: m["higher_is_better"] for m in doc["metrics"]} == {
        "aopc": True, "lerf-aopc": False, "abpc": True}
    assert len(doc["rows"]) == 5 and set(doc["rows"][0]) >= {"dataset", "aopc", "aopc_ci_low", "run_id"}
    assert doc["provenance"]["run_ids"] == ["run-1", "run-2", "run-3"]
    assert doc["provenance"]["grids"] == ["3x3"] and doc["provenance"]["sigmas"] == [0.1]
    assert {f["cell_id"] for f in doc["failed"]} == {"covid__vgg16__occlusion__gaussian-noise",
                                                      "covid__densenet201__gradcam__gaussian-noise"}
    # one block per family (dataset, model, weights, perturbation, settings), each with its statistics
    assert [g["key"]["dataset"] for g in doc["groups"]] == ["alpha", "covid"]
    covid = doc["groups"][1]
    assert covid["tables"]["comparisons"]["data"], "paired comparisons are in the JSON"
    assert {"ranks", "metric_power", "sanity", "per_class", "aggregate", "alpha"} <= set(covid["tables"])
    assert doc["statistics"]["test"].startswith("paired bootstrap test of the mean difference")
    alpha_gradcam = next(r for r in doc["rows"] if r["dataset"] == "alpha" and r["explainer"] == "gradcam")
    assert alpha_gradcam["lerf-aopc"] is None  # NaN -> null, valid JSON


def test_latex_booktabs(results):
    tex = render(collect(results), "latex")
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}", r"\end{table}"):
        assert cmd in tex
    assert "95\\% CI" in tex
    assert f"{np.mean(GRADCAM):.3f}" in tex


def test_html_self_contained_with_figures(built):
    _, paths = built
    page = paths["html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    imgs = re.findall(r'<img [^>]*src="data:image/(?:png|webp);base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) >= 3
    assert base64.b64decode(imgs[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Paired comparisons" in page and "Holm" in page
    assert "RuntimeError: boom" in page
    assert not re.search(r'(src|href)="(?!data:|#)', page), "no external resources (links within the page only)"
    doc = json.loads(paths["json"].read_text())
    assert sum(len(v) for v in doc["figures"].values()) == len(imgs)


@pytest.fixture()
def nasty_results(tmp_path):
    write_run(tmp_path, "run-n", [
        FakeCell("ds", "m<i>", NASTY, per_image=GRADCAM),
        FakeCell("ds", "m<i>", "random", per_image=RANDOM),
        FakeCell("ds", "m<i>", "bad", status="failed", error="<script>alert('x')</script> & 100% $5 #1"),
    ])
    return tmp_path


def test_html_escapes_plugin_strings(nasty_results):
    page = build_leaderboard(nasty_results)["html"].read_text()
    assert page.count("<script>") == 1  # the page's own sort script, nothing injected
    assert "<script>alert" not in page and "<b>" not in page and "m<i>" not in page
    assert "x&amp;y_%$#{}~^\\&lt;b&gt;&#x27;&quot;z" in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page


def test_latex_escapes_plugin_strings(nasty_results):
    tex = render(collect(nasty_results), "tex")
    expected = r"x\&y\_\%\$\#\{\}\textasciitilde{}\textasciicircum{}\textbackslash{}\textless{}b\textgreater{}'" + '"z'
    assert expected in tex
    body = tex[tex.index(r"\midrule"):tex.index(r"\bottomrule")]
    # every special character in the table body is escaped
    stripped = re.sub(r"\\(textasciitilde|textasciicircum|textbackslash|textless|textgreater)\{\}", "", body)
    stripped = stripped.replace(" & ", " | ")  # the column separators
    stripped = re.sub(r"\\[&%$#_{}]", "", stripped).replace(r"\\", "").replace(r"\midrule", "")
    assert not re.search(r"[&%$#_{}~^\\]", stripped), stripped


def test_latex_escape_single_pass():
    assert latex_escape("\\&") == r"\textbackslash{}\&"
    assert latex_escape("a_b{c}") == r"a\_b\{c\}"
    assert latex_escape("~^") == r"\textasciitilde{}\textasciicircum{}"


def test_markdown_escapes_pipes_and_html(nasty_results):
    md = render(collect(nasty_results), "md")
    row = next(line for line in md.splitlines() if "random" in line and line.startswith("|"))
    assert row.count(" | ") == md.splitlines()[2].count(" | ")  # no extra columns from a '|'
    assert "<i>" not in md and "<script>" not in md


def test_unknown_format_names_choices(results):
    with pytest.raises(BenchError, match="unknown leaderboard format 'docx'.*md, csv"):
        render(collect(results), "docx")


def test_no_runs_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no runs under"):
        collect(tmp_path / "nowhere")


def test_unreadable_cell_file_is_skipped_with_a_warning(results):
    bad = results / "runs" / "run-1" / "cells" / "broken.json"
    bad.write_text("{not json")
    with pytest.warns(UserWarning, match="broken.json"):
        df = collect(results)
    assert len(df) == 5


def test_only_failed_cells_still_renders(tmp_path):
    write_run(tmp_path, "run-f", [FakeCell("ds", "m", "e", status="failed", error="boom")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = build_leaderboard(tmp_path)
    assert "No finished cells yet" in paths["md"].read_text()
    assert "boom" in paths["html"].read_text()
    assert json.loads(paths["json"].read_text())["rows"] == []


def test_missing_n_is_blank_not_a_sentinel(tmp_path):
    write_run(tmp_path, "r", [FakeCell("d", "m", "e", per_image=[0.5, 0.4], extra={"n_images": None})])
    df = collect(tmp_path)
    assert pd.isna(df.n_images.iloc[0])
    doc = json.loads(render(df, "json"))
    assert doc["rows"][0]["n_images"] is None
    back = pd.read_csv(io.StringIO(render(df, "csv")))
    assert back.n_images.isna().all()


# ---------------------------------------------------------------------------------------
# one number format, plain text, the compact terminal table
# ---------------------------------------------------------------------------------------
def test_one_number_format():
    assert format_number(0.12345) == "0.123" and format_number(0.12345, signed=True) == "+0.123"
    assert format_number(3.9e-05) == "0.000"  # never scientific notation
    assert format_number(-0.0001) == "0.000" and format_number(-0.0001, signed=True) == "+0.000"  # no -0.000
    assert format_number(None) == format_number(float("nan")) == ""
    assert format_ci(-0.0204, 0.0613) == "[-0.020, 0.061]" and format_ci(0.1, None) == ""
    assert format_value_ci(0.5, 0.4, 0.6) == "0.500 [0.400, 0.600]" and format_value_ci(0.5, None, 1) == "0.500"
    assert format_p(0.0312) == "0.031" and format_p(0.00001) == "<0.001" and format_p(None) == ""
    # costs: 3 significant digits, positional
    assert [format_cost(v) for v in (0.00597, 2.5, 8.0, 1234.5, 0, None, float("inf"))] == [
        "0.00597", "2.5", "8", "1230", "0", "", ""]


def test_markdown_cells_stop_markup_without_html_entities():
    assert md_cell("<0.001") == "<0.001"  # a number stays readable in the file and the terminal
    assert md_cell("<b>x</b> a|b & &amp;") == "\\<b\\>x\\</b\\> a\\|b & \\&amp;"
    assert "\n" not in md_cell("two\nlines")


def _numbers_ok(cell: str) -> bool:
    return bool(re.fullmatch(r"[+-]?\d+\.\d{3}( \[-?\d+\.\d{3}, -?\d+\.\d{3}\])?", cell))


def test_the_files_hold_no_html_entity_and_one_number_format(built):
    results, paths = built
    for name in ("md", "report"):
        text = paths[name].read_text()
        assert not re.search(r"&(lt|gt|amp|quot|#x?[0-9a-f]+);", text), name
    df = collect(results)
    headers, rows, _ = display_table(df)
    score_columns = [i for i, h in enumerate(headers) if "[95% CI]" in h
                     or h in ("Test recall (macro)", "F1 (macro)", "Accuracy")]
    assert len(score_columns) >= 5
    cells = [r[i] for r in rows for i in score_columns if r[i]]
    assert cells and all(_numbers_ok(c) for c in cells), [c for c in cells if not _numbers_ok(c)]
    md = paths["md"].read_text()
    assert not re.search(r"\d\.?\d*e[-+]\d", md), "no scientific notation"


@pytest.fixture()
def many_metrics(tmp_path):
    """Eight extra metrics, long names, a second null control and a failed cell."""
    rng = np.random.default_rng(0)
    names = ("alpha-metric", "beta-metric", "gamma-metric", "delta-metric", "epsilon-metric",
             "zeta-metric", "eta-metric", "theta-metric")
    cells = []
    for model in ("tiny-cnn", "wide-net"):
        for k, explainer in enumerate(("gradcam", "smoothgrad-squared", "integrated-gradients", "random")):
            extra = {m: (rng.uniform(0, 1, 8).tolist(), j % 2 == 0, m.split("-")[0].capitalize())
                     for j, m in enumerate(names)}
            cells.append(FakeCell("ds", model, explainer, per_image=(0.3 + 0.05 * k + rng.normal(0, 0.02, 8)).tolist(),
                                  metrics=extra))
    cells.append(FakeCell("ds", "tiny-cnn", "rise", status="failed", error="RuntimeError: <boom> & more"))
    write_run(tmp_path, "run-m", cells)
    return tmp_path


def test_headline_metrics_are_the_primary_then_one_per_family(many_metrics):
    df = collect(many_metrics)
    families = {"aopc": "faithfulness", "beta-metric": "localisation", "gamma-metric": "localisation",
                "eta-metric": "randomisation"}
    df.attrs["metrics"] = [{**c, "family": families.get(c["id"], "faithfulness")} for c in df.attrs["metrics"]]
    assert [c.id for c in headline_metrics(df, 3)] == ["aopc", "beta-metric", "eta-metric"]
    assert [c.id for c in headline_metrics(df, 5)][3:] == ["alpha-metric", "gamma-metric"]


def test_terminal_summary_is_plain_and_fits_120_columns(many_metrics):
    board = build(many_metrics, formats=("md", "csv"), figures=False)
    text = board.summary()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120, max(lines, key=len)
    assert not re.search(r"&(lt|gt|amp|quot|#x?[0-9a-f]+);", text) and "<" not in text.replace("<0.001", "")
    header = next(line for line in lines if line.startswith("Model "))
    assert "Explainer" in header and "AOPC ↑" in header and "Gain vs random" in header and "passes/map" in header
    assert 1 <= sum(h in header for h in ("Alpha", "Beta", "Gamma", "Delta", "Epsilon", "Zeta", "Eta", "Theta")) <= 3
    assert "random (null)" in text and "Test recall (macro): " in text
    assert "more metric(s) in the full tables" in text and "1 failed cell(s)" in text
    row = next(line for line in lines if line.startswith("tiny-cnn") and " gradcam " in line)
    assert re.search(r"\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\]", row)
    # the last lines say where the full tables are
    assert lines[-5:] == ["Full tables (every metric, settings, flags, paired comparisons, provenance):",
                          f"  {board.paths['md']}", f"  {board.paths['csv']}",
                          "Report (per class, classification, comparisons of every metric, figures):",
                          f"  {board.paths['report']}"]


def test_a_long_name_costs_metric_columns_not_the_width(many_metrics):
    df = collect(many_metrics)
    long = "a-model-name-long-enough-to-leave-no-room-x"
    df["model"] = df["model"].replace("wide-net", long)
    text = summary_text(df)
    assert max(len(line) for line in text.splitlines()) <= 120
    assert "more metric(s) in the full tables" in text
    assert long not in text and long[:20] in text  # cut in the terminal, whole in the files


def test_only_the_published_folder_is_protected(tmp_path, monkeypatch):
    from bench.config.loading import SCHEMA as CONFIG_SCHEMA

    assert str(PUBLISHED_DIR) == CONFIG_SCHEMA["run"]["out"][1]  # the default results folder
    monkeypatch.chdir(tmp_path)
    assert is_published_folder("results") and is_published_folder(tmp_path / "results")
    assert output_dir("results") == Path("results") / "local"
    assert output_dir("results", publish=True) == Path("results")
    assert output_dir(tmp_path / "elsewhere") == tmp_path / "elsewhere"  # --out DIR: its top, as before
    write_run(tmp_path / "results", "r", [FakeCell("d", "m", "gradcam", per_image=GRADCAM),
                                          FakeCell("d", "m", "random", per_image=RANDOM)])
    local = build("results", formats=("md",), figures=False)
    assert local.local and not local.published and set(local.paths.values()) == {
        Path("results/local/leaderboard.md"), Path("results/local/report.md")}
    assert not (tmp_path / "results" / "leaderboard.md").exists()
    assert "bench leaderboard --publish" in local.summary()
    published = build("results", formats=("md",), figures=False, publish=True)
    assert published.published and published.paths["md"] == Path("results/leaderboard.md")
    assert (tmp_path / "results" / "leaderboard.md").exists()
