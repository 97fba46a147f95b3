"""Every config error at plan time (exit 2 at ``--dry-run``, naming its key), and the small fixes of
issue 10 item 9: data describe without --data, dataset params that belong to another dataset,
``per_class = "all"``, stale ``running`` manifests, SIGTERM, ``--weights <folder>``, ``bench config --set``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import bench
from bench import pipeline as runner
from bench.cli import main
from bench.config.loading import load_config
from bench.errors import ConfigError, DataError, WeightsError
from bench.pipeline.runs import load_manifests
from bench.pipeline.store import read_json, write_json

COVID_FOLDERS = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# item 8: every config error at plan time
# ---------------------------------------------------------------------------------------
CONFIG_ERRORS = [
    (["--set", "training.selection=foo"], "training.selection"),
    (["--set", "training.learning_rate=-1"], "training.learning_rate"),
    (["--set", "training.learning_rate=nan"], "training.learning_rate"),
    (["--set", "perturbations.params.gaussian-noise.sigma=-1"], "perturbations.params.gaussian-noise.sigma"),
    (["--set", "aopc.grid=100"], "aopc.grid"),  # the demo's images are 64 px
    (["--set", "aopc.grid=[3, 65]"], "aopc.grid"),
    (["--seed", "-1"], "run.seed"),
    (["--set", "models.params.vgg16.pool_size=abc"], "models.params.vgg16.pool_size"),
    (["--set", "models.params.densenet201.pool_size=abc"], "models.params.densenet201.pool_size"),
    (["--set", "models.params.vgg16.pool_size=4"], "models.params.vgg16.pool_size"),  # 2x2 features at 64 px
    (["--set", "aopc.baseline=nosuch"], "aopc.baseline"),  # the deprecated alias of leaderboard.control
    (["--set", "leaderboard.control=nosuch"], "leaderboard.control"),
    (["--set", "leaderboard.control=gradcam"], "leaderboard.control"),  # a method, not a control
    (["--set", "dataset.params.image_size=abc"], "dataset.params.image_size"),
    # perturbations that only metrics use (ROAD's curves, insertion's blur) are checked like the grid's
    (["--set", "perturbations.params.road.noise=-1"], "perturbations.params.road.noise"),
    (["--set", "perturbations.params.blur.nosuch=1"], "perturbations.params.blur"),
    (["--set", "perturbations.params.blur.sigma=-2"], "perturbations.params.blur.sigma"),
]


@pytest.mark.parametrize(("flags", "key"), CONFIG_ERRORS, ids=[k for _, k in CONFIG_ERRORS])
def test_config_error_exits_2_at_dry_run_naming_its_key(flags, key, tmp_path, capsys):
    code = main(["run", "--dry-run", "--out", str(tmp_path / "results"), *flags])
    err = _err(capsys)
    assert code == 2, err
    assert key in err
    assert "Traceback" not in err
    assert not (tmp_path / "results").exists()


def test_a_perturbation_only_metrics_use_names_them_and_is_left_alone_when_unused(capsys):
    assert main(["run", "--dry-run", "--set", "perturbations.params.road.noise=-1"]) == 2
    assert "(used by the metric(s) 'road-abpc', 'road-aopc', 'road-lerf-aopc')" in _err(capsys)
    # no metric reads ROAD curves: its params are not checked against a component that never runs
    assert main(["run", "--dry-run", "--json", "--metric", "aopc", "--set", "perturbations.params.road.noise=-1"]) == 0
    capsys.readouterr()


def test_control_error_lists_the_selected_explainers(capsys):
    assert main(["run", "--dry-run", "--explainer", "gradcam", "--set", "leaderboard.control=gradcm"]) == 2
    err = _err(capsys)
    assert "leaderboard.control" in err and "did you mean 'gradcam'" in err and "selected explainers: gradcam" in err
    # the deprecated alias names itself
    assert main(["run", "--dry-run", "--explainer", "gradcam", "--set", "aopc.baseline=gradcm"]) == 2
    assert "aopc.baseline = 'gradcm'" in _err(capsys)


@pytest.mark.parametrize(
    "flags",
    [
        ["--set", 'aopc.baseline=""'],  # the deprecated alias, unset
        ["--explainer", "gradcam", "--explainer", "random", "--set", 'leaderboard.control=""'],  # the only null control
        ["--explainer", "gradcam"],  # the preset's control (random) not selected: a preference, no gain column
        ["--explainer", "gradcam"],  # no null control selected: no gain column
        ["--set", "aopc.grid=64"],  # as large as the images, no larger
        ["--seed", "4294967295"],
    ],
)
def test_valid_values_still_pass_the_plan(flags, capsys):
    assert main(["run", "--dry-run", "--json", *flags]) == 0, _err(capsys)
    json.loads(capsys.readouterr().out)


def test_seed_above_the_trainers_range_names_run_seed(capsys):
    assert main(["run", "--dry-run", "--seed", str(2**32)]) == 2
    assert "run.seed" in _err(capsys)


def test_plan_builds_no_keras_graph(monkeypatch):
    """Constructors only store and ``validate()`` is cheap: planning every model builds nothing."""
    import keras

    def no_graph(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a Keras graph was built at plan time")

    monkeypatch.setattr(keras, "Input", no_graph)
    monkeypatch.setattr(keras.applications, "VGG16", no_graph)
    monkeypatch.setattr(keras.applications, "DenseNet201", no_graph)
    plan = runner.make_plan(load_config(overrides={"models": {"names": ["all"]}}))
    assert {"vgg16", "densenet201", "simple-cnn"} <= set(plan.models)


class _ValidatingPlugin:
    """A third-party perturbation with a ``validate()`` method, and a dataset without ``image_shape``."""

    class Fade:
        def __init__(self, *, strength: float = 0.5, mode: str = "linear"):
            self.strength = strength
            self.mode = mode

        def get_params(self) -> dict[str, Any]:
            return {"strength": self.strength, "mode": self.mode}

        def validate(self) -> None:
            if not 0 <= self.strength <= 1:
                raise ValueError(f"strength must be in [0, 1], got {self.strength!r}")
            if self.mode not in ("linear", "step"):
                err = ValueError("unknown mode")
                err.param = "mode"  # type: ignore[attr-defined] - names the culprit explicitly
                raise err

        def perturb(self, images: np.ndarray, masks: np.ndarray, seeds: np.ndarray) -> np.ndarray:
            return np.where(masks[..., None], images * (1 - self.strength), images).astype(np.float32)

    class Shapeless:
        """synthetic-cxr without its ``image_shape()``: the size is known only once loaded."""

        def __init__(self, *, image_size: int = 32, per_class: int = 5):
            from bench_datasets.synthetic import SyntheticCXR

            self.inner = SyntheticCXR(image_size=image_size, per_class=per_class)

        def get_params(self) -> dict[str, Any]:
            return self.inner.get_params()

        def fingerprint(self) -> str:
            return self.inner.fingerprint()

        def load(self) -> Any:
            return self.inner.load()

    @bench.hookimpl
    def bench_register_perturbations(self) -> list[Any]:
        return [bench.PerturbationSpec(name="t-fade", factory=self.Fade)]

    @bench.hookimpl
    def bench_register_datasets(self) -> list[Any]:
        return [bench.DatasetSpec(name="t-shapeless", factory=self.Shapeless)]


@pytest.fixture
def validating_plugin():
    bench.register_plugin(_ValidatingPlugin(), name="validating-test-plugin")
    yield _ValidatingPlugin
    bench.unregister_plugin("validating-test-plugin")


def test_plugins_validate_their_own_parameters_at_plan_time(validating_plugin):
    base = {"preset": "demo", "perturbations": {"names": ["t-fade"]}, "models": {"names": ["simple-cnn"]}}
    runner.make_plan(load_config(base))  # the defaults are fine
    for params, key in [
        ({"strength": 2.0}, "perturbations.params.t-fade.strength"),  # found in the message
        ({"mode": "cubic"}, "perturbations.params.t-fade.mode"),  # named by exc.param
    ]:
        cfg = load_config({**base, "perturbations": {"names": ["t-fade"], "params": {"t-fade": params}}})
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            runner.make_plan(cfg)


def test_grid_unknown_at_plan_time_is_checked_when_the_dataset_loads(validating_plugin, tmp_path):
    out = tmp_path / "results"
    cfg = {
        "preset": "demo",
        "run": {"out": str(out)},
        "dataset": {"name": "t-shapeless"},
        "models": {"names": ["simple-cnn"]},
        "explainers": {"names": ["random"]},
        "perturbations": {"names": ["gaussian-noise"]},
        "aopc": {"grid": 40},
    }
    runner.make_plan(load_config(cfg))  # 32 px images, but the plan cannot know it
    stale = _fake_run(out, "stale", {"pid": _dead_pid(), "host": socket.gethostname(), "start": None})
    runner.clear_memo()
    with pytest.raises(ConfigError, match=r"aopc\.grid.*32x32"):
        bench.run(cfg, quiet=True, leaderboard=False)
    (run_dir,) = [p for p in (out / "runs").iterdir() if p.name != "stale"]
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "error" and "aopc.grid" in manifest["error"]
    assert not (run_dir / "cells").exists()  # before any cell
    assert manifest["process"]["pid"] == os.getpid()
    assert read_json(stale)["status"] == "interrupted"  # the next run saw its process gone


# ---------------------------------------------------------------------------------------
# item 9: the smaller ones
# ---------------------------------------------------------------------------------------
def _covid_db(root: Path, per_class: int = 3, size: tuple[int, int] = (40, 36)) -> Path:
    rng = np.random.default_rng(0)
    for cls in COVID_FOLDERS:
        folder = root / cls / "images"
        folder.mkdir(parents=True)
        for i in range(1, per_class + 1):
            pixels = rng.integers(0, 256, size=size, dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{cls}-{i}.png")
    return root


def test_data_describe_without_data_is_a_clean_error(capsys):
    assert main(["data", "describe", "--dataset", "covid-radiography"]) == 2
    err = _err(capsys)
    assert "--data" in err and "Traceback" not in err
    assert main(["data", "describe", "--dataset", "synthetic-cxr", "--param", "image_size=abc"]) == 2
    assert "image_size" in _err(capsys)


def test_another_dataset_drops_the_presets_dataset_params(tmp_path, capsys):
    cfg = load_config(overrides={"dataset": {"name": "covid-radiography"}})
    assert cfg["dataset"]["params"] == {}
    assert load_config(overrides={"dataset": {"name": "synthetic-cxr"}})["dataset"]["params"]["image_size"] == 64
    # params given with the new dataset are kept
    cfg = load_config(overrides={"dataset": {"name": "covid-radiography", "params": {"per_class": 2}}})
    assert cfg["dataset"]["params"] == {"per_class": 2}
    # ... and switching back finds the preset's own params for its dataset again
    cfg = load_config({"preset": "demo", "dataset": {"name": "covid-radiography", "params": {"per_class": 2}}},
                      overrides={"dataset": {"name": "synthetic-cxr"}})
    assert cfg["dataset"]["params"]["image_size"] == 64 and cfg["dataset"]["params"]["per_class"] == 300

    db = _covid_db(tmp_path / "db")
    code = main(["run", "--dataset", "covid-radiography", "--data", str(db), "--model", "simple-cnn",
                 "--set", "aopc.grid=6", "--dry-run", "--json"])
    assert code == 0, _err(capsys)
    assert json.loads(capsys.readouterr().out)["config"]["dataset"]["params"] == {}
    # the images' size is read from one header at plan time: 40x36 < 50
    code = main(["run", "--dataset", "covid-radiography", "--data", str(db), "--model", "simple-cnn",
                 "--set", "aopc.grid=50", "--dry-run"])
    assert code == 2 and "aopc.grid" in _err(capsys)


def test_per_class_all_is_every_image_and_the_advice_can_be_typed(tmp_path, capsys):
    from bench_datasets.covid_radiography import CovidRadiography

    db = _covid_db(tmp_path / "db", per_class=10)
    with pytest.raises(DataError) as err:
        CovidRadiography(root=str(db), per_class=20).load()
    advice = str(err.value)
    assert 'per_class = "all"' in advice and "--set dataset.params.per_class=all" in advice
    assert main(["config", "--preset", "covid-radiography", "--set", "dataset.params.per_class=all"]) == 0
    assert json.loads(capsys.readouterr().out)["dataset"]["params"]["per_class"] == "all"
    splits = CovidRadiography(root=str(db), per_class="all").load()
    assert sum(len(s) for s in splits.splits().values()) == 40
    with pytest.raises(ConfigError, match="per_class"):
        CovidRadiography(root=str(db), per_class="most").validate()


def test_weights_folder_says_it_is_a_folder(tmp_path, capsys):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "trained.weights.h5").write_bytes(b"")
    (folder / "notes.txt").write_text("x")
    assert main(["run", "--dry-run", "--model", "vgg16", "--weights", str(folder)]) == 2
    err = _err(capsys)
    assert "is a folder" in err and "trained.weights.h5" in err and "notes.txt" not in err
    assert "does not exist" not in err
    cnn = bench.create("model", "simple-cnn", weights=str(tmp_path), input_shape=(32, 32, 3))
    with pytest.raises(WeightsError, match="is a folder"):
        cnn.validate()


def test_config_command_takes_set(capsys):
    assert main(["config", "--set", "aopc.grid=3", "--set", "training.epochs=2"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["aopc"]["grid"] == 3 and cfg["training"]["epochs"] == 2
    assert main(["config", "--set", "aopc.gird=3"]) == 2
    assert "did you mean 'aopc.grid'" in _err(capsys)
    assert main(["config", "--set", "training.selection=foo"]) == 2
    assert "training.selection" in _err(capsys)


def _fake_run(results: Path, run_id: str, process: dict[str, Any] | None) -> Path:
    path = results / "runs" / run_id / "manifest.json"
    write_json(path, {"run_id": run_id, "status": "running", "process": process, "cells": []})
    return path


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_running_manifest_of_a_dead_process_is_marked_interrupted(tmp_path):
    results = tmp_path / "results"
    host = socket.gethostname()
    dead = _fake_run(results, "dead", {"pid": _dead_pid(), "host": host, "start": None})
    alive = _fake_run(results, "alive", {"pid": os.getpid(), "host": host, "start": None})
    elsewhere = _fake_run(results, "elsewhere", {"pid": _dead_pid(), "host": host + "-other", "start": None})
    unknown = _fake_run(results, "unknown", None)  # written before pids were recorded
    manifests = load_manifests(results)
    assert manifests["dead"]["status"] == "interrupted"
    assert read_json(dead)["status"] == "interrupted" and "interrupted_note" in read_json(dead)
    for path in (alive, elsewhere, unknown):
        assert read_json(path)["status"] == "running"


def _spawn_long_run(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """``bench run`` of a config whose training takes minutes; returns once its manifest exists."""
    out = tmp_path / "results"
    config = tmp_path / "long.toml"
    config.write_text(
        'preset = "demo"\n'
        f'[run]\nout = "{out.as_posix()}"\n'
        "[dataset]\nparams = { image_size = 32, per_class = 40 }\n"
        '[models]\nnames = ["simple-cnn"]\n'
        "[training]\nepochs = 100000\nbatch_size = 4\n"
        '[explainers]\nnames = ["random"]\n'
        '[perturbations]\nnames = ["gaussian-noise"]\n'
        "[aopc]\ngrid = 3\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "--config", str(config), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        manifests = list((out / "runs").glob("*/manifest.json"))
        if manifests and proc.poll() is None:
            time.sleep(2.0)  # into the dataset / training
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            return proc, manifests[0]
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"the run did not start: {proc.stderr.read().decode() if proc.stderr else ''}")


def test_sigkilled_run_is_marked_interrupted_by_the_next_leaderboard(tmp_path, capsys):
    proc, manifest = _spawn_long_run(tmp_path)
    try:
        assert read_json(manifest)["status"] == "running"
        assert read_json(manifest)["process"]["pid"] == proc.pid
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert read_json(manifest)["status"] == "running"  # nobody could write it
    main(["leaderboard", "--results", str(tmp_path / "results"), "--no-figures"])
    capsys.readouterr()
    assert read_json(manifest)["status"] == "interrupted"


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    proc, manifest = _spawn_long_run(tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert code == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    record = read_json(manifest)
    assert record["status"] == "interrupted" and record["signal"] == "SIGTERM"
    assert record["finished"] is not None
