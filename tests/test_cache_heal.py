"""A corrupt cache entry heals: named once on stderr, set aside, recomputed (issue 10, item 4)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _tiny_config import tiny as _config

import bench
from bench import pipeline as runner
from bench.data import DatasetSplits
from bench.pipeline import keys
from bench.pipeline.store import Cache, CorruptFileError, read_json, read_npz, write_npz


def _run(out: Path) -> dict:
    runner.clear_memo()  # as a fresh process would be
    result = bench.run(_config(out), quiet=True, leaderboard=False)
    assert result.ok, [c.error for c in result.failed]
    (record,) = result.cells
    cell = record.to_dict()
    model = read_json(result.run_dir / "models" / f"{cell['dataset']}__{cell['model']}.json")
    return {"cell": cell, "model": model}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """One finished run; each test heals a damaged copy of its results folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv(keys.DIGEST_MEMO_ENV, "off")
    out = tmp_path_factory.mktemp("seeded") / "out"
    first = _run(out)
    yield out, first
    mp.undo()


@pytest.fixture
def results(seeded, tmp_path, monkeypatch):
    monkeypatch.setenv(keys.DIGEST_MEMO_ENV, "off")
    out, first = seeded
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    return copy, first


def _only(folder: Path, pattern: str) -> Path:
    (path,) = sorted(folder.glob(pattern))
    return path


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_bit(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x10
    path.write_bytes(bytes(data))


def _first_array_byte(path: Path) -> int:
    """Offset of a byte inside the first member's compressed data (not a header)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.infolist()[0]
    header = 30 + len(info.filename.encode()) + len(info.extra)
    return info.header_offset + header + info.compress_size // 2


def _assert_healed(path: Path, out: Path, stderr: str) -> None:
    assert stderr.count(str(path)) == 1, stderr  # named once
    assert "corrupt" in stderr
    aside = list((out / "cache" / Cache.CORRUPT).rglob(f"{path.name}.corrupt-*"))
    assert len(aside) == 1, aside  # set aside, not deleted
    assert path.exists()  # recomputed in place


@pytest.mark.parametrize(
    ("stage", "pattern"),
    [("heatmaps", "*.npz"), ("curves", "*.npz"), ("evaluation", "*.npz")],
)
def test_truncated_npz_heals(results, capsys, stage, pattern):
    out, first = results
    path = _only(out / "cache" / stage, pattern)
    _truncate(path)
    capsys.readouterr()
    again = _run(out)
    _assert_healed(path, out, capsys.readouterr().err)
    assert again["cell"]["keys"] == first["cell"]["keys"]
    read_npz(path)  # whole again


def test_bit_flipped_npz_member_heals(results, capsys):
    out, _ = results
    path = _only(out / "cache" / "heatmaps", "*.npz")
    data = bytearray(path.read_bytes())
    data[_first_array_byte(path)] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=str(path)):
        read_npz(path)
    capsys.readouterr()
    _run(out)
    _assert_healed(path, out, capsys.readouterr().err)


@pytest.mark.parametrize("stage", ["curves", "models", "evaluation", "heatmaps"])
def test_bit_flipped_json_heals(results, capsys, stage):
    out, _ = results
    path = _only(out / "cache" / stage, "*.json")
    _flip_bit(path)
    capsys.readouterr()
    _run(out)
    _assert_healed(path, out, capsys.readouterr().err)


def test_json_changed_into_other_valid_json_is_caught(results, capsys):
    """A flipped digit keeps the JSON valid: its checksum still catches it."""
    out, _ = results
    path = _only(out / "cache" / "curves", "*.json")
    entry = json.loads(path.read_text())
    entry["value"]["aopc"] = entry["value"]["aopc"] + 0.5
    path.write_text(json.dumps(entry))
    capsys.readouterr()
    again = _run(out)
    _assert_healed(path, out, capsys.readouterr().err)
    assert read_json(path)["value"]["aopc"] == pytest.approx(again["cell"]["metrics"]["aopc"]["value"], abs=1e-12)


def test_truncated_model_file_retrains(results, capsys):
    out, _ = results
    path = _only(out / "cache" / "models", "*.keras")
    _truncate(path)
    capsys.readouterr()
    again = _run(out)
    _assert_healed(path, out, capsys.readouterr().err)
    assert again["model"]["training"]["from_cache"] is False


def test_truncated_dataset_file_heals_and_the_grid_runs(results, capsys):
    out, first = results
    path = _only(out / "cache" / "datasets", "*.npz")
    _truncate(path)
    with pytest.raises(CorruptFileError, match=str(path)):
        DatasetSplits.load_file(path)
    capsys.readouterr()
    again = _run(out)
    _assert_healed(path, out, capsys.readouterr().err)
    assert again["cell"]["keys"] == first["cell"]["keys"]
    DatasetSplits.load_file(path)


# ---------------------------------------------------------------------------------------
# the store on its own
# ---------------------------------------------------------------------------------------
def test_cache_reads_damage_as_a_miss_and_sets_it_aside(tmp_path, capsys):
    cache = Cache(tmp_path)
    cache.put_npz("s", "k", a=np.arange(1000), b=np.ones(3))
    cache.put_json("s", "k", {"x": [1, 2.5, None, float("nan")], "y": "z"})
    assert cache.get_json("s", "k")["y"] == "z"
    assert cache.get_npz("s", "k", required=("a", "b"))["a"].sum() == 499500
    assert cache.get_npz("s", "k", required=("nope",)) is None  # incomplete = corrupt
    assert "arrays missing: nope" in capsys.readouterr().err
    cache.put_npz("s", "k", a=np.arange(3))
    _truncate(tmp_path / "s" / "k.json")
    assert cache.get_json("s", "k") is None
    err = capsys.readouterr().err
    assert str(tmp_path / "s" / "k.json") in err and "set aside" in err
    assert not (tmp_path / "s" / "k.json").exists()
    assert cache.get_json("s", "k") is None and capsys.readouterr().err == ""  # said once


def test_plain_readers_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": ')
    with pytest.raises(CorruptFileError, match="bad.json"):
        read_json(bad)
    npz = tmp_path / "x.npz"
    write_npz(npz, a=np.arange(100))
    _truncate(npz)
    with pytest.raises(CorruptFileError, match="x.npz") as info:
        read_npz(npz)
    assert isinstance(info.value, ValueError)  # callers that skip unreadable files still do
