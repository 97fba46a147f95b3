"""Masks as a mapping on a split: name -> bool (N, H, W), saved, loaded, subset, validated."""

from __future__ import annotations

import numpy as np
import pytest
from _dataset_files import random_split, write_legacy_dataset

from bench.data import DatasetSplits, Split
from bench.pipeline.store import CorruptFileError

SIZE = 6


def _split(n: int, *, seed: int = 0, masks: tuple[str, ...] = ("roi", "organ.left")) -> Split:
    return random_split(n, SIZE, seed=seed, masks=masks)


def _splits(**kw) -> DatasetSplits:
    return DatasetSplits(
        name="toy", class_names=("neg", "pos"), train=_split(5, seed=1, **kw),
        val=_split(2, seed=2, **kw), test=_split(3, seed=3, **kw), fingerprint="fp",
        metadata={"positive_classes": ["pos"]},
    )


def test_masks_are_a_plain_dict_in_the_given_order():
    s = _split(3, masks=("zeta", "alpha"))
    assert type(s.masks) is dict and list(s.masks) == ["zeta", "alpha"]
    assert Split(images=s.images, labels=s.labels, ids=s.ids).masks == {}


def test_round_trip_keeps_every_mask_and_its_order(tmp_path):
    ds = _splits(masks=("zeta", "alpha", "a-b_c.d"))
    ds.save(tmp_path / "d.npz")
    back = DatasetSplits.load_file(tmp_path / "d.npz")
    assert back.mask_names == ("zeta", "alpha", "a-b_c.d")
    for name, s in ds.splits().items():
        t = back.splits()[name]
        assert list(t.masks) == list(s.masks)
        for mask_name, m in s.masks.items():
            assert t.masks[mask_name].dtype == np.bool_
            np.testing.assert_array_equal(t.masks[mask_name], m, err_msg=f"{name}/{mask_name}")
    assert back.positive_classes == ("pos",) and back.describe() == ds.describe()


def test_an_old_dataset_file_is_still_read(tmp_path):
    """Files written before masks were a mapping: '<split>/lung_masks', 'disease_classes' in meta."""
    expected = write_legacy_dataset(tmp_path / "old.npz", SIZE)

    back = DatasetSplits.load_file(tmp_path / "old.npz")
    assert set(back.mask_names) == {"lung", "lesion"}
    for split_name, masks in expected.items():
        for mask_name, m in masks.items():
            np.testing.assert_array_equal(back.splits()[split_name].masks[mask_name], m)
    assert back.positive_classes == ("b",) and back.positive_class_indices == (1,)
    assert back.metadata["note"] == 1


def test_subset_keeps_masks_aligned():
    s = _split(6)
    for index in (np.array([4, 0, 2]), np.array([True, False, True, False, False, True]), np.arange(0)):
        sub = s.subset(index)
        assert list(sub.masks) == list(s.masks)
        for name, m in s.masks.items():
            np.testing.assert_array_equal(sub.masks[name], m[index])
        np.testing.assert_array_equal(sub.ids, s.ids[index])


@pytest.mark.parametrize("bad", ["Lung", "lung mask", "", "../x", "a__b", "<b>"])
def test_bad_mask_names_are_refused(bad):
    s = _split(2)
    with pytest.raises(ValueError, match="mask name"):
        Split(images=s.images, labels=s.labels, ids=s.ids, masks={bad: np.zeros((2, SIZE, SIZE), bool)})


@pytest.mark.parametrize(
    "array, got",
    [
        (np.zeros((2, SIZE, SIZE), np.uint8), "uint8"),
        (np.zeros((2, SIZE, SIZE + 1), bool), r"\(2, 6, 7\)"),
        (np.zeros((3, SIZE, SIZE), bool), r"\(3, 6, 6\)"),
        (np.zeros((2, SIZE), bool), r"\(2, 6\)"),
        ([[[True]]], "list"),
    ],
)
def test_wrong_mask_shape_or_dtype_names_the_mask(array, got):
    s = _split(2)
    with pytest.raises(ValueError, match=rf"Split\.masks\['organ'\] must be a bool array.*got .*{got}"):
        Split(images=s.images, labels=s.labels, ids=s.ids, masks={"organ": array})


def test_masks_must_be_a_mapping():
    s = _split(2)
    with pytest.raises(TypeError, match="mapping"):
        Split(images=s.images, labels=s.labels, ids=s.ids, masks=[np.zeros((2, SIZE, SIZE), bool)])  # type: ignore[arg-type]


def test_describe_lists_masks_with_the_fraction_of_images_having_one():
    ds = _splits(masks=("roi",))
    for s in ds.splits().values():
        s.masks["roi"][:] = False
    ds.train.masks["roi"][0, 1, 1] = True  # 1 of 10 images
    ds.test.masks["roi"][2] = True  # 2 of 10
    assert ds.describe()["masks"] == {"roi": pytest.approx(0.2)}
    assert ds.mask_coverage() == {"roi": pytest.approx(0.2)}


def test_a_mask_only_some_splits_carry_counts_as_empty_elsewhere():
    ds = DatasetSplits(
        name="partial", class_names=("neg", "pos"), train=_split(4, masks=("roi",)),
        val=_split(2, seed=2, masks=()), test=_split(4, seed=3, masks=()), fingerprint="f",
    )
    ds.train.masks["roi"][:] = True
    assert ds.mask_names == ("roi",) and ds.describe()["masks"] == {"roi": pytest.approx(0.4)}


@pytest.mark.parametrize("positive, match", [(["nope"], "not among its classes"), ("pos", "list of class names")])
def test_positive_classes_are_checked(positive, match):
    s = _split(2)
    with pytest.raises(ValueError, match=match):
        DatasetSplits(name="toy", class_names=("neg", "pos"), train=s, val=s, test=s, fingerprint="f",
                      metadata={"positive_classes": positive})


def test_a_bad_mask_in_a_file_names_the_file(tmp_path):
    ds = _splits(masks=("roi",))
    ds.save(tmp_path / "d.npz")
    with np.load(tmp_path / "d.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["val/masks/roi"] = arrays["val/masks/roi"][:1]  # one image short
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CorruptFileError, match=r"bad\.npz.*masks\['roi'\]"):
        DatasetSplits.load_file(tmp_path / "bad.npz")
