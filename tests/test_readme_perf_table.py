"""The README's performance table is generated from one benchmark run's JSON report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "benchmarks"))
import readme_table  # noqa: E402
from _readme import readme_row  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class _FakeBenchmark:
    def __init__(self) -> None:
        self.extra_info: dict = {}


def _report(*benches: _FakeBenchmark) -> dict:
    return {
        "datetime": "2026-12-01T14:00:00",
        "machine_info": {"python_version": "3.13.5", "cpu": {"brand_raw": "Some CPU", "count": 2}},
        "benchmarks": [{"fullname": f"tests/benchmarks/x.py::t{i}", "extra_info": b.extra_info}
                       for i, b in enumerate(benches)],
    }


def test_rows_come_from_the_benchmarks_in_run_order_and_replace_only_the_block(tmp_path):
    a, b, c = _FakeBenchmark(), _FakeBenchmark(), _FakeBenchmark()
    readme_row(a, "incremental vs full, VGG16 299", 5.2149, goal=">= 8x", detail="4 images x 82 steps")
    readme_row(a, "auto vs the faster strategy", 0.987, unit="")
    c.extra_info["other"] = 1  # a benchmark without README rows adds none
    readme_row(b, "bench vs Quantus", 12.0, goal=">= 5x")
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{readme_table.START}\nold | table\n{readme_table.END}\n\nafter\n")
    report = tmp_path / "bench.json"
    report.write_text(json.dumps(_report(a, c, b)))

    assert readme_table.main([str(report), str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "old | table" not in text
    lines = [ln for ln in text.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert lines[0] == "| what | measured | goal | detail |"
    assert lines[1:] == [
        "| incremental vs full, VGG16 299 | 5.21x | >= 8x | 4 images x 82 steps |",
        "| auto vs the faster strategy | 0.99 |  |  |",
        "| bench vs Quantus | 12.00x | >= 5x |  |",
    ]
    assert "Measured 2026-12-01 on Some CPU, 2 cores, Python 3.13.5." in text
    # regenerating from the same report is the identity
    assert readme_table.main([str(report), str(readme)]) == 0
    assert readme.read_text() == text


def test_bad_inputs_are_named_and_leave_the_readme_alone(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    report = tmp_path / "bench.json"
    bench = _FakeBenchmark()
    readme_row(bench, "x", 1.0)
    report.write_text(json.dumps(_report(bench)))
    assert readme_table.main([str(report), str(readme)]) == 1
    assert "markers" in capsys.readouterr().err and readme.read_text() == "no markers here\n"

    report.write_text(json.dumps(_report(_FakeBenchmark())))
    readme.write_text(f"{readme_table.START}\n{readme_table.END}\n")
    assert readme_table.main([str(report), str(readme)]) == 1
    assert "no README rows" in capsys.readouterr().err

    report.write_text("{not json")
    assert readme_table.main([str(report), str(readme)]) == 1
    assert str(report) in capsys.readouterr().err

    with pytest.raises(readme_table.TableError, match="pytest-benchmark"):
        readme_table.rows_of({"nothing": 1})


def test_the_readme_holds_the_generated_block_once():
    text = (ROOT / "README.md").read_text()
    assert text.count(readme_table.START) == 1 and text.count(readme_table.END) == 1
    block = text.split(readme_table.START, 1)[1].split(readme_table.END, 1)[0]
    assert "| what | measured | goal | detail |" in block and "Measured " in block
