"""Published numbers are what the code printed: the README's demo table is the committed leaderboard.

The README shows a compact table of ``bench run --all``; ``results/leaderboard.csv``
is the full one, rebuilt from the same runs by ``bench leaderboard --publish`` (a run
alone writes only ``results/local/``, ignored by git). Both are regenerated at the commit
that publishes them. This test fails when one is refreshed without the other.
Regenerate the README's table with ``python tests/test_published.py``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from bench.publish.text import format_ci, format_cost, format_number

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CSV = ROOT / "results" / "leaderboard.csv"
BEGIN, END = "<!-- demo-table: generated from results/leaderboard.csv -->", "<!-- /demo-table -->"

#: The README shows the study's VGG16 (trained here from scratch); every row is in results/leaderboard.md.
MODEL = "vgg16"
#: (header, metric column) of the README's metric columns, beside AOPC and its gain.
METRICS = (
    ("ABPC ↑", "abpc"),
    ("relevance mass ↑", "relevance-mass"),
    ("pixel AUC ↑", "pixel-auc"),
    ("model randomisation ρ ↓", "model-randomisation"),
)
HEADER = (
    "| explainer | role | rank [95% CI] | AOPC ↑ [95% CI] | gain over random [95% CI] | "
    + " | ".join(h for h, _ in METRICS)
    + " | passes/map | n | flags |"
)


def _num(value: float, signed: bool = False) -> str:
    """The one number format of every table (:func:`bench.publish.text.format_number`)."""
    return format_number(value, signed=signed)


def _ci(lo: float, hi: float) -> str:
    text = format_ci(lo, hi)
    return f" {text}" if text else ""


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)


def demo_table(frame: pd.DataFrame, model: str = MODEL) -> str:
    """The README's compact rendering of one model's rows of the leaderboard CSV (three decimals)."""
    lines = [HEADER, "|" + "---|" * (HEADER.count(" | ") + 1)]
    for _, r in frame[frame["model"] == model].iterrows():
        gain = "" if r["explainer"] == r["baseline"] else (
            _num(r["gain_over_baseline"], signed=True) + _ci(r["gain_ci_low"], r["gain_ci_high"])
        )
        constant = r.get("constant_heatmaps")
        flags = f"{int(constant)}/{int(r['n_images'])} constant maps" if _finite(constant) and constant > 0 else ""
        passes = r.get("passes_per_map")
        rank = r.get("rank")
        ranked = (f"{rank:g} [{r['rank_low']:g}, {r['rank_high']:g}]" if _finite(rank) else "")
        cells = [
            r["explainer"], r["role"], ranked,
            _num(r["aopc"]) + _ci(r["aopc_ci_low"], r["aopc_ci_high"]),
            gain,
            *(_num(r.get(col, math.nan)) for _, col in METRICS),
            format_cost(passes), str(int(r["n_images"])), flags,  # 3 significant digits, as printed
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def committed_frame() -> pd.DataFrame:
    return pd.read_csv(CSV, dtype={"settings": str, "explainer_params": str})


def readme_table() -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(re.escape(BEGIN) + r"\n(.*?)\n" + re.escape(END), text, flags=re.S)
    assert found, f"README.md has no demo table between {BEGIN!r} and {END!r}"
    return found.group(1).strip()


@pytest.mark.skipif(not CSV.exists(), reason="no committed leaderboard in this checkout")
def test_readme_demo_table_is_the_committed_leaderboard():
    assert readme_table() == demo_table(committed_frame()), (
        "README.md's demo table differs from results/leaderboard.csv: regenerate both at one "
        "commit (bench run --all, bench leaderboard --publish, then python tests/test_published.py)"
    )


def test_demo_table_renders_known_values():
    frame = pd.DataFrame([{
        "model": "vgg16", "explainer": "gradcam", "role": "method", "rank": 2.5, "rank_low": 1.0, "rank_high": 6.0,
        "aopc": 0.46371, "aopc_ci_low": 0.32993, "aopc_ci_high": 0.59210,
        "gain_over_baseline": -0.00001, "gain_ci_low": -0.0206, "gain_ci_high": 0.0613, "baseline": "random",
        "abpc": 0.048, "relevance-mass": 0.02822, "pixel-auc": 0.5634, "model-randomisation": -0.0549,
        "passes_per_map": 1.0, "n_images": 20, "constant_heatmaps": 3,
    }, {"model": "simple-cnn", "explainer": "gradcam"}])
    lines = demo_table(frame).splitlines()
    assert len(lines) == 3  # header, rule, the one vgg16 row
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    assert lines[2] == ("| gradcam | method | 2.5 [1, 6] | 0.464 [0.330, 0.592] | +0.000 [-0.021, 0.061] | 0.048 | 0.028 "
                        "| 0.563 | -0.055 | 1 | 20 | 3/20 constant maps |")


if __name__ == "__main__":
    print(BEGIN)
    print(demo_table(committed_frame()))
    print(END)
