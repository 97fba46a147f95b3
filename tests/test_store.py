"""Atomic writes, content keys, NPZ without pickle, dataset round trip."""

from __future__ import annotations

import os

import numpy as np
import pytest

from bench.data import DatasetSplits, Split, to_model_input
from bench.pipeline.store import (
    Cache,
    atomic_write_text,
    content_key,
    read_json,
    read_npz,
    write_json,
    write_npz,
)


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})

    def boom(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "half")
    monkeypatch.undo()
    assert read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind


def test_content_key_is_stable_and_sensitive():
    a = content_key("heatmaps", {"b": 1, "a": [1, 2]}, np.int64(3))
    assert a == content_key("heatmaps", {"a": [1, 2], "b": 1}, 3)
    assert a != content_key("heatmaps", {"a": [1, 2], "b": 2}, 3)


def test_npz_refuses_object_arrays(tmp_path):
    write_npz(tmp_path / "x.npz", ids=np.array(["a", "b"]), v=np.arange(3))
    out = read_npz(tmp_path / "x.npz")
    assert out["ids"].tolist() == ["a", "b"]
    write_npz(tmp_path / "bad.npz", obj=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError):  # allow_pickle=False
        read_npz(tmp_path / "bad.npz")


def test_cache_paths(tmp_path):
    cache = Cache(tmp_path)
    assert cache.get_json("s", "k") is None
    cache.put_json("s", "k", {"x": 1})
    assert cache.get_json("s", "k") == {"x": 1}
    cache.put_npz("s", "k", a=np.ones(2))
    assert cache.get_npz("s", "k")["a"].tolist() == [1.0, 1.0]


def _split(n, size=8, offset=0):
    rng = np.random.default_rng(offset)
    lung = rng.random((n, size, size)) > 0.5
    return Split(
        images=rng.integers(0, 255, (n, size, size), dtype=np.uint8),
        labels=np.arange(n) % 2,
        ids=np.array([f"img-{offset + i}" for i in range(n)]),
        masks={"lung": lung},
    )


def test_dataset_splits_round_trip_and_describe(tmp_path):
    ds = DatasetSplits(
        name="toy", class_names=("a", "b"), train=_split(4), val=_split(2, offset=10),
        test=_split(2, offset=20), fingerprint="abc", metadata={"k": [1], "positive_classes": ["b"]},
    )
    ds.save(tmp_path / "d.npz")
    back = DatasetSplits.load_file(tmp_path / "d.npz")
    assert back.describe() == ds.describe()
    assert back.describe()["splits"]["train"] == {"a": 2, "b": 2}
    assert set(back.describe()["masks"]) == {"lung"}
    np.testing.assert_array_equal(back.train.masks["lung"], ds.train.masks["lung"])
    np.testing.assert_array_equal(back.test.images, ds.test.images)
    assert back.positive_class_indices == (1,)


def test_split_validation():
    with pytest.raises(ValueError, match="uint8"):
        Split(images=np.zeros((2, 4, 4), np.float32), labels=np.zeros(2, int), ids=np.array(["a", "b"]))
    with pytest.raises(ValueError, match="labels"):
        Split(images=np.zeros((2, 4, 4), np.uint8), labels=np.zeros(3, int), ids=np.array(["a", "b"]))


def test_to_model_input():
    x = to_model_input(np.array([[[0, 255]]], dtype=np.uint8))
    assert x.shape == (1, 1, 2, 3) and x.dtype == np.float32
    assert x[0, 0, 1].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="channels"):
        to_model_input(np.zeros((1, 2, 2, 2), np.float32))


def test_atomic_write_gives_normal_permissions(tmp_path):
    import stat

    target = tmp_path / "published.md"
    atomic_write_text(target, "x")
    mode = stat.S_IMODE(target.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_share_file_links_atomically_and_falls_back(tmp_path, monkeypatch):
    from bench.pipeline.store import share_file

    source = tmp_path / "cache" / "entry.npz"
    write_npz(source, ids=np.arange(3), heatmaps=np.ones((3, 2, 2), np.float32))
    target = tmp_path / "run" / "heatmaps" / "cell.npz"
    write_npz(target, ids=np.arange(1), heatmaps=np.zeros((1, 1, 1), np.float32))  # replaced
    assert share_file(source, target)
    assert os.stat(source).st_ino == os.stat(target).st_ino
    np.testing.assert_array_equal(read_npz(target)["heatmaps"], np.ones((3, 2, 2), np.float32))
    # replacing the source atomically (a healed cache entry) leaves the run's file as it was
    write_npz(source, ids=np.arange(2), heatmaps=np.zeros((2, 2, 2), np.float32))
    assert read_npz(target)["heatmaps"].shape == (3, 2, 2)
    assert not share_file(tmp_path / "missing.npz", target)

    def no_links(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    assert not share_file(source, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["cell.npz"]  # no temp file left


def test_a_runs_heatmaps_are_the_cache_entry_not_a_copy(tmp_path, monkeypatch):
    """The run's heatmaps file is a hard link to the heatmaps cache entry (the same arrays, no
    second copy); where linking fails, a copy with the same arrays is written."""
    from _tiny_config import tiny

    import bench
    from bench.pipeline.record import CellRecord

    def run_and_files(out):
        result = bench.run(tiny(out), quiet=True, leaderboard=False)
        run_dir = out / "runs" / result.run_id
        (cell_file,) = (run_dir / "cells").glob("*.json")
        cell = CellRecord.from_dict(read_json(cell_file))
        return run_dir / cell.heatmaps_file, out / "cache" / "heatmaps" / f"{cell.keys['heatmaps']}.npz"

    run_file, cache_file = run_and_files(tmp_path / "a")
    assert os.stat(run_file).st_ino == os.stat(cache_file).st_ino
    linked = read_npz(run_file)
    assert set(linked) == {"ids", "heatmaps"} and linked["heatmaps"].dtype == np.float32

    monkeypatch.setattr(os, "link", lambda src, dst: (_ for _ in ()).throw(OSError("no links here")))
    run_file, cache_file = run_and_files(tmp_path / "a")  # a second, cached run: a copy this time
    assert os.stat(run_file).st_ino != os.stat(cache_file).st_ino
    copied = read_npz(run_file)
    for name in ("ids", "heatmaps"):
        np.testing.assert_array_equal(copied[name], linked[name])
