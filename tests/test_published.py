"""Published numbers are what the code printed: the README's demo table is the committed leaderboard.

The README shows a compact table of ``bench run --all``; ``results/leaderboard.csv``
is the full one, written by the same run. Both are regenerated at the commit that
publishes them. This test fails when one is refreshed without the other.
Regenerate the README's table with ``python tests/test_published.py``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CSV = ROOT / "results" / "leaderboard.csv"
BEGIN, END = "<!-- demo-table: generated from results/leaderboard.csv -->", "<!-- /demo-table -->"

HEADER = (
    "| model | weights | explainer | settings | test recall | F1 | AOPC [95% CI] "
    "| gain over random [95% CI] | ABPC [95% CI] | n | flags |"
)


def _num(value: float, digits: int = 3, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return "+0.000" if signed and text == "-0.000" else ("0.000" if text == "-0.000" else text)


def _ci(lo: float, hi: float) -> str:
    if any(isinstance(v, float) and math.isnan(v) for v in (lo, hi)):
        return ""
    return f" [{_num(lo)}, {_num(hi)}]"


def demo_table(frame: pd.DataFrame) -> str:
    """The README's compact rendering of the leaderboard CSV (three decimals)."""
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for _, r in frame.iterrows():
        gain = "" if r["explainer"] == r["baseline"] else (
            _num(r["gain_over_baseline"], signed=True) + _ci(r["gain_ci_low"], r["gain_ci_high"])
        )
        constant = r.get("constant_heatmaps")
        flags = (
            f"{int(constant)}/{int(r['n_images'])} constant heatmaps"
            if isinstance(constant, (int, float)) and not math.isnan(constant) and constant > 0 else ""
        )
        cells = [
            r["model"], r["weights"], r["explainer"], r["settings"],
            _num(r["recall_macro"]), _num(r["f1_macro"]),
            _num(r["aopc"]) + _ci(r["aopc_ci_low"], r["aopc_ci_high"]),
            gain,
            _num(r["abpc"]) + _ci(r["abpc_ci_low"], r["abpc_ci_high"]),
            str(int(r["n_images"])), flags,
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
        "commit (bench run --all, then python tests/test_published.py)"
    )


def test_demo_table_renders_known_values():
    frame = pd.DataFrame([{
        "model": "m", "weights": "none", "explainer": "gradcam", "settings": "abc123",
        "recall_macro": 0.88333, "f1_macro": 0.87871, "aopc": 0.46371, "aopc_ci_low": 0.32993,
        "aopc_ci_high": 0.59210, "gain_over_baseline": -0.00001, "gain_ci_low": -0.0206,
        "gain_ci_high": 0.0613, "baseline": "random", "abpc": 0.048, "abpc_ci_low": -0.0117,
        "abpc_ci_high": 0.1218, "n_images": 20, "constant_heatmaps": 3,
    }])
    row = demo_table(frame).splitlines()[2]
    assert row == ("| m | none | gradcam | abc123 | 0.883 | 0.879 | 0.464 [0.330, 0.592] "
                   "| +0.000 [-0.021, 0.061] | 0.048 [-0.012, 0.122] | 20 | 3/20 constant heatmaps |")


if __name__ == "__main__":
    print(BEGIN)
    print(demo_table(committed_frame()))
    print(END)
