"""``DatasetSplits.load_split``: one split of a saved file, the same as ``load_file``'s, read alone."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from _dataset_files import random_split, write_legacy_dataset

from bench.data import SPLIT_NAMES, DatasetSplits, Split
from bench.pipeline.store import CorruptFileError

SIZE = 6


def _split(n: int, seed: int, masks: tuple[str, ...]) -> Split:
    return random_split(n, SIZE, seed=seed, masks=masks)


def current_file(path: Path, masks: tuple[str, ...] = ("zeta", "alpha", "a-b_c.d")) -> DatasetSplits:
    """A file as :meth:`DatasetSplits.save` writes it (masks in a non-sorted order)."""
    ds = DatasetSplits(
        name="toy", class_names=("neg", "pos"), train=_split(5, 1, masks), val=_split(2, 2, masks),
        test=_split(4, 3, masks), fingerprint="fp", metadata={"positive_classes": ["pos"]},
    )
    ds.save(path)
    return ds


def assert_same_split(got: Split, want: Split) -> None:
    assert isinstance(got, Split)
    for field in ("images", "labels", "ids"):
        a, b = getattr(got, field), getattr(want, field)
        assert a.dtype == b.dtype, field
        np.testing.assert_array_equal(a, b, err_msg=field)
    assert list(got.masks) == list(want.masks)  # the same masks in the same order
    for name, m in want.masks.items():
        assert got.masks[name].dtype == np.bool_
        np.testing.assert_array_equal(got.masks[name], m, err_msg=name)


@pytest.mark.parametrize("name", SPLIT_NAMES)
def test_one_split_is_what_load_file_gives_current_layout(tmp_path, name):
    path = tmp_path / "d.npz"
    ds = current_file(path)
    got = DatasetSplits.load_split(path, name)
    assert_same_split(got, DatasetSplits.load_file(path).splits()[name])
    assert_same_split(got, ds.splits()[name])
    assert list(got.masks) == ["zeta", "alpha", "a-b_c.d"]


@pytest.mark.parametrize("name", SPLIT_NAMES)
def test_one_split_is_what_load_file_gives_legacy_layout(tmp_path, name):
    path = tmp_path / "old.npz"
    masks = write_legacy_dataset(path, SIZE)  # schema 1: '<split>/<name>_masks', no mask order
    got = DatasetSplits.load_split(path, name)
    assert_same_split(got, DatasetSplits.load_file(path).splits()[name])
    assert list(got.masks) == ["lesion", "lung"]  # no order stored: by name, as load_file
    for mask_name, m in masks[name].items():
        np.testing.assert_array_equal(got.masks[mask_name], m)


def test_a_split_without_masks(tmp_path):
    path = tmp_path / "plain.npz"
    current_file(path, masks=())
    got = DatasetSplits.load_split(path, "test")
    assert got.masks == {}
    assert_same_split(got, DatasetSplits.load_file(path).test)


def _flip_a_byte_of(path: Path, payload: bytes) -> None:
    """Flip one byte in the middle of ``payload``'s (stored, uncompressed) bytes in ``path``."""
    blob = bytearray(path.read_bytes())
    at = blob.find(payload)
    assert at >= 0 and blob.find(payload, at + 1) < 0
    blob[at + len(payload) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


def test_the_train_members_are_not_read(tmp_path):
    """A bit flip in the training images fails load_file (CRC-32) but not the test split alone."""
    path = tmp_path / "d.npz"
    ds = current_file(path)
    want = DatasetSplits.load_file(path).test
    _flip_a_byte_of(path, ds.train.images.tobytes())
    with pytest.raises(CorruptFileError, match="d.npz"):
        DatasetSplits.load_file(path)
    assert_same_split(DatasetSplits.load_split(path, "test"), want)
    assert_same_split(DatasetSplits.load_split(path, "val"), ds.val)
    with pytest.raises(CorruptFileError, match="d.npz"):  # the damaged split itself is checked
        DatasetSplits.load_split(path, "train")


def test_a_file_without_train_members_still_gives_its_test_split(tmp_path):
    path = tmp_path / "d.npz"
    ds = current_file(path)
    stripped = tmp_path / "no-train.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(stripped, "w") as dst:
        for info in src.infolist():
            if not info.filename.startswith("train/"):
                dst.writestr(info, src.read(info))
    with pytest.raises(CorruptFileError, match="no-train.npz"):
        DatasetSplits.load_file(stripped)
    assert_same_split(DatasetSplits.load_split(stripped, "test"), ds.test)
    with pytest.raises(CorruptFileError, match=r"no-train\.npz.*no split 'train'.*holds 'val', 'test'"):
        DatasetSplits.load_split(stripped, "train")


def test_an_unknown_split_names_the_file_and_the_splits_it_holds(tmp_path):
    path = tmp_path / "d.npz"
    current_file(path)
    with pytest.raises(ValueError, match=r"d\.npz: no split 'tset' \(did you mean 'test'\?\); "
                                         r"it holds 'train', 'val', 'test'") as info:
        DatasetSplits.load_split(path, "tset")
    assert not isinstance(info.value, CorruptFileError)
    with pytest.raises(ValueError, match="no split 'holdout'"):
        DatasetSplits.load_split(path, "holdout")


def test_damage_in_the_split_read_is_named(tmp_path):
    path = tmp_path / "d.npz"
    ds = current_file(path)
    _flip_a_byte_of(path, ds.test.images.tobytes())
    with pytest.raises(CorruptFileError, match=r"d\.npz is corrupt"):
        DatasetSplits.load_split(path, "test")

    missing = tmp_path / "no-labels.npz"
    current_file(path)
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(missing, "w") as dst:
        for info in src.infolist():
            if info.filename != "test/labels.npy":
                dst.writestr(info, src.read(info))
    with pytest.raises(CorruptFileError, match=r"no-labels\.npz.*not a complete dataset file.*test/labels"):
        DatasetSplits.load_split(missing, "test")

    truncated = tmp_path / "cut.npz"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptFileError, match=r"cut\.npz"):
        DatasetSplits.load_split(truncated, "test")
