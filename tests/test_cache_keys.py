"""Cache keys are content keys: a file, a plugin's code or a dataset changed behind an
unchanged name gets new keys, so its stages are recomputed (issue 10, item 3)."""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _tiny_config import tiny
from bench_datasets.covid_radiography import CLASS_NAMES, CovidRadiography
from PIL import Image

import bench
from bench import pipeline as runner
from bench.pipeline import keys
from bench.pipeline.store import read_json, read_npz


@pytest.fixture(autouse=True)
def _digest_memo(tmp_path, monkeypatch):
    """Each test has its own file-digest memo (never the user's cache dir)."""
    monkeypatch.setenv(keys.DIGEST_MEMO_ENV, str(tmp_path / "digest-memo.json"))


def _run(cfg: dict) -> dict:
    runner.clear_memo()  # as a fresh process would be
    result = bench.run(cfg, quiet=True, leaderboard=False)
    assert result.ok, [c.error for c in result.failed]
    (record,) = result.cells
    cell = record.to_dict()
    model_json = result.run_dir / "models" / f"{cell['dataset']}__{cell['model']}.json"
    return {"cell": cell, "model": read_json(model_json), "run_dir": result.run_dir}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


# ---------------------------------------------------------------------------------------
# weights file swapped at the same path
# ---------------------------------------------------------------------------------------
def _weights_files(folder: Path) -> tuple[Path, Path]:
    """Two different full-model weights files for simple-cnn at 32 px, 4 classes."""
    model = bench.create("model", "simple-cnn", input_shape=[32, 32, 3], num_classes=4, weights="none")
    kmodel = model.keras
    a, b = folder / "a.weights.h5", folder / "b.weights.h5"
    kmodel.save_weights(a)
    rng = np.random.default_rng(7)
    kmodel.set_weights([w + rng.normal(0, 0.5, w.shape).astype(w.dtype) for w in kmodel.get_weights()])
    kmodel.save_weights(b)
    return a, b


def test_weights_file_replaced_at_the_same_path_recomputes(tmp_path):
    a, b = _weights_files(tmp_path)
    assert _md5(a) != _md5(b)
    used = tmp_path / "u.weights.h5"
    cfg = tiny(tmp_path / "out", models={"params": {"simple-cnn": {"weights": str(used)}}})

    used.write_bytes(a.read_bytes())
    first = _run(cfg)
    used.write_bytes(b.read_bytes())
    second = _run(cfg)

    assert second["cell"]["keys"]["model"] != first["cell"]["keys"]["model"]
    assert second["cell"]["keys"]["heatmaps"] != first["cell"]["keys"]["heatmaps"]
    assert second["model"]["training"]["from_cache"] is False  # trained again, from B
    assert second["model"]["weights_md5"] == _md5(b) and first["model"]["weights_md5"] == _md5(a)

    # and back to A: the first run's results are served again
    used.write_bytes(a.read_bytes())
    third = _run(cfg)
    assert third["cell"]["keys"] == first["cell"]["keys"]
    assert third["model"]["training"]["from_cache"] is True


def test_param_files_hashes_contents_not_names(tmp_path):
    f = tmp_path / "w.h5"
    f.write_bytes(b"one")
    before = keys.param_files({"weights": str(f), "other": "none", "nested": {"p": f}})
    assert set(before) == {"weights", "nested.p"}
    f.write_bytes(b"two")
    assert keys.param_files({"weights": str(f)})["weights"] != before["weights"]
    assert keys.param_files({"root": str(tmp_path), "n": 3}) == {}  # folders: their owner's fingerprint


# ---------------------------------------------------------------------------------------
# a plugin edited without a version bump
# ---------------------------------------------------------------------------------------
PLUGIN_SOURCE = '''
import numpy as np

import bench

SCALE = {scale}


class Probe:
    def get_params(self):
        return {{}}

    def explain(self, model, images, targets):
        n, h, w, _ = images.shape
        yy, xx = np.mgrid[0:h, 0:w]
        return np.repeat((SCALE * (yy + xx)).astype(np.float32)[None], n, axis=0)


@bench.hookimpl
def bench_register_explainers():
    return [bench.ExplainerSpec(name="edit-probe", factory="bench_edit_probe:Probe", version="1.0")]
'''


@pytest.fixture
def edit_probe(tmp_path, monkeypatch):
    """A single-file plugin on sys.path, registered in-process."""
    folder = tmp_path / "plugin"
    folder.mkdir()
    source = folder / "bench_edit_probe.py"
    source.write_text(textwrap.dedent(PLUGIN_SOURCE.format(scale=1.0)))
    monkeypatch.syspath_prepend(str(folder))
    module = importlib.import_module("bench_edit_probe")
    bench.register_plugin(module, name="edit-probe-plugin")
    yield source
    bench.unregister_plugin("edit-probe-plugin")
    sys.modules.pop("bench_edit_probe", None)


def test_edited_plugin_recomputes_its_stage_only(tmp_path, edit_probe):
    cfg = tiny(tmp_path / "out", explainers={"names": ["edit-probe"]})
    first = _run(cfg)
    again = _run(cfg)
    assert again["cell"]["keys"] == first["cell"]["keys"]  # unchanged code: reused

    edit_probe.write_text(textwrap.dedent(PLUGIN_SOURCE.format(scale=-1.0)))  # same version "1.0"
    importlib.reload(sys.modules["bench_edit_probe"])
    edited = _run(cfg)

    assert edited["cell"]["keys"]["model"] == first["cell"]["keys"]["model"]  # other stages kept
    assert edited["model"]["training"]["from_cache"] is True
    assert edited["cell"]["keys"]["heatmaps"] != first["cell"]["keys"]["heatmaps"]
    h1 = read_npz(first["run_dir"] / first["cell"]["heatmaps_file"])["heatmaps"]
    h2 = read_npz(edited["run_dir"] / edited["cell"]["heatmaps_file"])["heatmaps"]
    assert not np.allclose(h1, h2)  # the edited code ran


def test_code_digest_follows_the_package_files(tmp_path, monkeypatch):
    pkg = tmp_path / "bench_digest_pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "impl.py").write_text("class F:\n    pass\n")
    (pkg / "helpers.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ref = "bench_digest_pkg.sub.impl:F"
    before = keys.code_digest(ref)
    assert keys.code_digest(ref) == before
    (pkg / "helpers.py").write_text("X = 2\n")  # a sibling module of the factory's package
    assert keys.code_digest(ref) != before
    assert "bench_digest_pkg" not in sys.modules  # a lazy factory is hashed without importing it


def test_every_stage_key_holds_bench_and_stage_versions(monkeypatch):
    key = keys.stage_key("heatmaps", 2, "x")
    assert keys.stage_key("heatmaps", 3, "x") != key
    monkeypatch.setattr(bench, "__version__", "999.0")
    assert keys.stage_key("heatmaps", 2, "x") != key


def test_every_stage_key_holds_benchs_own_code(monkeypatch):
    """An edited checkout of bench (the engine every stage runs through) recomputes."""
    digest = keys.bench_code_digest()
    assert digest == keys.code_digest(bench.pipeline.Stages) != "unknown"  # the bench package's files
    key = keys.stage_key("curves", 2, "x")
    monkeypatch.setattr(keys, "bench_code_digest", lambda: "edited")
    assert keys.stage_key("curves", 2, "x") != key


# ---------------------------------------------------------------------------------------
# a dataset file replaced with the same size and mtime
# ---------------------------------------------------------------------------------------
def _png(seed: int, size: int = 16) -> bytes:
    """An uncompressed PNG: every image of one size has the same byte size."""
    gray = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def _database(root: Path, n: int = 3) -> Path:
    for ci, cls in enumerate(CLASS_NAMES):
        for sub in ("images", "masks"):
            (root / cls / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / cls / "images" / f"{cls}-{i}.png").write_bytes(_png(100 * ci + i))
            (root / cls / "masks" / f"{cls}-{i}.png").write_bytes(_png(1000 + 100 * ci + i))
    return root


def _replace_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    st = path.stat()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


@pytest.mark.parametrize("sub", ["images", "masks"])
def test_dataset_file_replaced_with_same_size_and_mtime_is_seen(tmp_path, sub):
    root = _database(tmp_path / "db")
    ds = CovidRadiography(root=str(root), per_class=3, image_size=16)
    before = ds.fingerprint()
    assert ds.fingerprint() == before
    _replace_keeping_size_and_mtime(root / "Normal" / sub / "Normal-1.png", _png(4242))
    assert ds.fingerprint() != before


def test_file_digests_are_hashed_once_and_remembered(tmp_path, monkeypatch):
    monkeypatch.setattr(keys, "RACY_WINDOW_NS", 0)
    files = [tmp_path / f"f{i}" for i in range(3)]
    for i, f in enumerate(files):
        f.write_bytes(bytes([i]) * 100)
    first = keys.file_digests(files)
    assert (tmp_path / "digest-memo.json").exists()

    hashed: list[str] = []
    monkeypatch.setattr(keys, "hash_file", lambda p: hashed.append(p) or "x")
    fresh = keys.DigestMemo(tmp_path / "digest-memo.json")  # a new process reads the memo file
    assert keys.file_digests(files, memo=fresh) == first and hashed == []
    _replace_keeping_size_and_mtime(files[1], bytes([9]) * 100)
    assert keys.file_digests(files, memo=fresh)[1] == "x" and len(hashed) == 1


def test_code_digests_are_frozen_within_a_run_and_live_outside(tmp_path, monkeypatch):
    """Within frozen_code_digests (a run) a package's digest is read once: an edit made while a
    run runs does not change its keys (the process runs the code it imported); outside, at once."""
    pkg = tmp_path / "frozenpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("class F:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ref = "frozenpkg:F"
    walks = []
    real = keys.package_sources
    monkeypatch.setattr(keys, "package_sources", lambda module: walks.append(module) or real(module))
    before = keys.code_digest(ref)
    with keys.frozen_code_digests():
        assert keys.code_digest(ref) == before
        (pkg / "__init__.py").write_text("class F:\n    x = 1\n")
        with keys.frozen_code_digests():  # nested: the same memo
            assert keys.code_digest(ref) == before
        assert keys.code_digest(ref) == before
    assert len(walks) == 2  # the call before, then once inside: later calls read the memo
    assert keys.code_digest(ref) != before  # outside: the edit shows


def test_overlapping_runs_share_the_frozen_memo_until_the_last_ends():
    """Two runs in threads of one process: the first to end must not unfreeze the other."""
    import threading

    entered, release_first, first_done = threading.Event(), threading.Event(), threading.Event()
    states = []

    def first():
        with keys.frozen_code_digests():
            entered.set()
            release_first.wait(5)
        first_done.set()

    t = threading.Thread(target=first)
    t.start()
    entered.wait(5)
    with keys.frozen_code_digests():
        release_first.set()
        first_done.wait(5)
        states.append(keys._FROZEN_DIGESTS is not None)  # the first run ended: still frozen here
    t.join(5)
    assert states == [True]
    assert keys._FROZEN_DIGESTS is None and keys._FROZEN_USERS == 0


def test_bench_run_freezes_code_digests(monkeypatch, tmp_path):
    from _tiny_config import tiny

    import bench

    seen = []
    real = keys.code_digest

    def spy(factory):
        seen.append(keys._FROZEN_DIGESTS is not None)
        return real(factory)

    monkeypatch.setattr(keys, "code_digest", spy)
    bench.run(tiny(tmp_path / "out"), quiet=True, leaderboard=False)
    assert seen and all(seen)
    assert keys._FROZEN_DIGESTS is None  # released after the run


def test_a_run_in_another_results_folder_writes_its_own_cache(tmp_path):
    """The in-process memo of datasets and models is per results folder: a second folder gets its
    own cache entries (as a fresh process would write them), not a silent reuse of the first's."""
    from _tiny_config import tiny

    import bench

    for name in ("a", "b"):
        assert bench.run(tiny(tmp_path / name), quiet=True, leaderboard=False).ok
    for sub in ("datasets", "models"):
        first = sorted(p.name for p in (tmp_path / "a" / "cache" / sub).iterdir())
        assert first and first == sorted(p.name for p in (tmp_path / "b" / "cache" / sub).iterdir()), sub
