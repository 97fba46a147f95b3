"""CLI commands: list, config, data describe/show, python -m bench; where run and leaderboard write."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from bench.cli import main


def test_list_and_unknown_kind(capsys):
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert "vgg16" in out and "densenet201" in out and "simple-cnn" in out
    assert main(["list", "explainer", "--json"]) == 0
    names = {row["name"] for row in json.loads(capsys.readouterr().out)}
    assert {"gradcam", "random"} <= names


def test_config_prints_the_resolved_preset(capsys):
    assert main(["config", "--preset", "covid-radiography"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["dataset"]["params"]["per_class"] == 1345 and cfg["aopc"]["grid"] == 9


def test_data_describe_json_is_the_stable_format(capsys):
    args = ["data", "describe", "--dataset", "synthetic-cxr", "--param", "image_size=32",
            "--param", "per_class=10", "--json"]
    assert main(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) >= {"dataset", "fingerprint", "classes", "splits", "masks"}
    assert info["classes"] == ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    assert info["splits"]["train"] == {c: 8 for c in info["classes"]}
    assert info["splits"]["val"] == info["splits"]["test"] == {c: 1 for c in info["classes"]}
    assert info["masks"] == {"lesion": 0.75, "lung": 1.0}  # name -> fraction of images with one
    assert info["positive_classes"] == ["COVID", "Lung_Opacity", "Viral Pneumonia"]
    assert main(args[:-1]) == 0  # the table form
    assert "fingerprint" in capsys.readouterr().out


def test_data_show_writes_a_png(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["data", "show", "synthetic-cxr", "--param", "image_size=32", "--param", "per_class=4",
                 "--out", str(out), "--per-class", "2"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_errors_are_clear(capsys, tmp_path):
    assert main(["data", "describe", "--dataset", "covid-radiography", "--data", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["data", "describe", "--dataset", "synthetic-cx"]) == 2
    assert "did you mean 'synthetic-cxr'" in capsys.readouterr().err


def test_python_dash_m_bench():
    out = subprocess.run([sys.executable, "-m", "bench", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("bench ")


# ---------------------------------------------------------------------------------------
# a run never dirties the checkout; publishing is explicit
# ---------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "leaderboard.html", "leaderboard.tex",
             "report.md", "figures/curves__old-0123ab.png")
ENTITY = re.compile(r"&(lt|gt|amp|quot|#x?[0-9a-f]+);")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _a_checkout(tmp_path: Path) -> Path:
    """A stand-in checkout: the repository's .gitignore, a README and a published results/ folder."""
    (tmp_path / ".gitignore").write_text((ROOT / ".gitignore").read_text())
    (tmp_path / "README.md").write_text("readme\n")
    for name in PUBLISHED:
        path = tmp_path / "results" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"published at the last release\n")
    return tmp_path


def _ignored(folder: Path, paths: list[str]) -> set[str]:
    """The ``paths`` the folder's .gitignore ignores (git check-ignore in a scratch repository)."""
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    out = subprocess.run(["git", "-C", str(folder), "check-ignore", "--stdin"], input="\n".join(paths),
                         capture_output=True, text=True)
    return set(out.stdout.split())


def test_run_and_results_alias():
    from bench.cli import build_parser

    assert build_parser().parse_args(["run", "--results", "elsewhere"]).out == "elsewhere"
    assert build_parser().parse_args(["run", "--out", "elsewhere"]).out == "elsewhere"
    assert build_parser().parse_args(["leaderboard", "--publish"]).publish


def test_bench_run_writes_only_ignored_files_and_publish_writes_the_tracked_ones(tmp_path, monkeypatch, capsys):
    from bench import pipeline

    checkout = _a_checkout(tmp_path)
    monkeypatch.chdir(checkout)
    before = _snapshot(checkout)
    pipeline.clear_memo()
    assert main(["run", "--preset", "tiny", "--quiet"]) == 0
    out = capsys.readouterr().out
    after = _snapshot(checkout)
    changed = sorted(p for p in after if before.get(p) != after[p])
    assert changed and all(p.split("/")[1] in ("runs", "cache", "local") for p in changed), changed
    assert all(after[p] == before[p] for p in before), "a published file changed"
    assert {"results/local/leaderboard.md", "results/local/report.md"} <= set(changed)
    if shutil.which("git"):
        assert _ignored(checkout, changed) == set(changed), "every file a run writes is ignored by git"
    # what a person reads: the compact table, plain text, within 120 columns, then where the files are
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 120 and not ENTITY.search(out)
    assert any(line.startswith("Model ") and "AOPC ↑" in line and "passes/map" in line for line in lines)
    assert "results/local/leaderboard.md" in out and lines[-1].endswith("from the same runs.")
    assert "bench leaderboard --publish" in out

    # rebuilding without --publish: still only the local copy
    assert main(["leaderboard", "--no-figures"]) == 0
    capsys.readouterr()
    assert all(_snapshot(checkout)[p] == before[p] for p in before)
    # --publish rewrites the tracked files from the runs (and removes the stale figure)
    assert main(["leaderboard", "--publish"]) == 0
    published = capsys.readouterr().out
    assert "Published:" in published and max(len(line) for line in published.splitlines()) <= 120
    now = _snapshot(checkout)
    for name in PUBLISHED[:-1]:
        assert now[f"results/{name}"] != before[f"results/{name}"], name
    assert "results/figures/curves__old-0123ab.png" not in now  # a figure the runs no longer back
    md = (checkout / "results" / "leaderboard.md").read_text()
    assert "| synthetic-cxr | simple-cnn" in md and not ENTITY.search(md)
    assert now["README.md"] == before["README.md"]
