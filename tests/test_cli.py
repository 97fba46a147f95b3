"""CLI commands other than run: list, config, data describe/show, python -m bench."""

from __future__ import annotations

import json
import subprocess
import sys

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
