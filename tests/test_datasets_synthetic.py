"""synthetic-cxr: determinism, balance, masks, the shortcut marker, the contract."""

from __future__ import annotations

import re

import numpy as np
import pytest
from bench_datasets import synthetic
from bench_datasets.synthetic import CLASS_NAMES, MARKER_TEXT, SyntheticCXR, image_id, render
from scipy import ndimage

from bench.data import DatasetSplits, to_model_input
from bench.errors import ConfigError

SIZE = 48


@pytest.fixture(scope="module")
def small() -> DatasetSplits:
    return SyntheticCXR(image_size=SIZE, per_class=10, seed=3).load()


def _all(d: DatasetSplits, attr: str) -> np.ndarray:
    """Concatenated over the splits: a Split field, or ``"masks:<name>"`` for a mask."""
    if attr.startswith("masks:"):
        return np.concatenate([s.masks[attr[6:]] for s in d.splits().values()])
    return np.concatenate([getattr(s, attr) for s in d.splits().values()])


def test_same_parameters_give_bit_identical_data(small):
    again = SyntheticCXR(image_size=SIZE, per_class=10, seed=3).load()
    for name, s in small.splits().items():
        t = again.splits()[name]
        for attr in ("images", "labels", "ids"):
            np.testing.assert_array_equal(getattr(s, attr), getattr(t, attr), err_msg=f"{name}.{attr}")
        assert list(s.masks) == list(t.masks) == ["lesion", "lung"]
        for mask_name in s.masks:
            np.testing.assert_array_equal(s.masks[mask_name], t.masks[mask_name], err_msg=f"{name}.{mask_name}")
    assert again.fingerprint == small.fingerprint
    other = SyntheticCXR(image_size=SIZE, per_class=10, seed=4).load()
    assert not np.array_equal(other.train.images, small.train.images)
    assert other.fingerprint != small.fingerprint


def test_an_image_does_not_depend_on_per_class_or_split(small):
    bigger = SyntheticCXR(image_size=SIZE, per_class=14, seed=3, split=(0.5, 0.25, 0.25)).load()
    ids, images = _all(small, "ids"), _all(small, "images")
    big = dict(zip(_all(bigger, "ids").tolist(), _all(bigger, "images"), strict=True))
    for i, img in zip(ids.tolist(), images, strict=True):
        np.testing.assert_array_equal(big[i], img, err_msg=i)


def test_class_balance_split_counts_and_ids(small):
    assert small.name == "synthetic-cxr"
    assert small.class_names == ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
    assert small.positive_classes == ("COVID", "Lung_Opacity", "Viral Pneumonia")
    assert small.counts() == {
        "train": {c: 8 for c in CLASS_NAMES},
        "val": {c: 1 for c in CLASS_NAMES},
        "test": {c: 1 for c in CLASS_NAMES},
    }
    ids = _all(small, "ids").tolist()
    assert len(set(ids)) == len(ids) == 40
    assert all(re.fullmatch(r"synthetic-(COVID|Lung_Opacity|Normal|Viral_Pneumonia)-\d{5}", i) for i in ids)
    labels = _all(small, "labels")
    for i, label in zip(ids, labels, strict=True):
        assert i.startswith(image_id(CLASS_NAMES[label], 0)[:-5])
    assert small.metadata["files"]["val"] == small.val.ids.tolist()
    assert small.metadata["generator"]["per_class"] == 10


def test_images_are_uint8_and_model_input_is_built_per_batch(small):
    s = small.train
    assert s.images.dtype == np.uint8 and s.images.shape == (32, SIZE, SIZE)
    assert s.labels.dtype == np.int64
    assert 20 < s.images.mean() < 200 and s.images.std() > 20  # an image, not a flat field
    sl, x = next(s.batches(5))
    assert x.dtype == np.float32 and x.shape == (5, SIZE, SIZE, 3) and 0.0 <= x.min() <= x.max() <= 1.0
    np.testing.assert_allclose(x[..., 0], s.images[sl] / 255.0, atol=1e-6)


def test_masks_lesions_inside_the_lungs(small):
    lung, lesion, labels = _all(small, "masks:lung"), _all(small, "masks:lesion"), _all(small, "labels")
    assert lung.dtype == np.bool_ and lesion.dtype == np.bool_
    area = lung.mean(axis=(1, 2))
    assert ((area > 0.15) & (area < 0.6)).all(), area
    assert not (lesion & ~lung).any(), "a lesion pixel outside the lung mask"
    normal = labels == CLASS_NAMES.index("Normal")
    assert not lesion[normal].any()
    assert lesion[~normal].any(axis=(1, 2)).all(), "every diseased image carries a lesion"
    # both lungs: the lung mask has two large connected components
    for m in lung[:8]:
        _, n = ndimage.label(m)
        assert n >= 2


def test_disease_patterns_sit_where_the_study_says():
    """COVID: bilateral, lower-zone; Viral Pneumonia: bilateral, perihilar (central)."""
    S = 96
    for i in range(6):
        _, lung, les, _ = render(0, CLASS_NAMES.index("COVID"), i, S)
        rows, cols = np.nonzero(les)
        assert les[:, : S // 2].any() and les[:, S // 2 :].any()  # both sides
        lrows = np.nonzero(lung)[0]
        assert rows.mean() > (lrows.min() + lrows.max()) / 2  # lower zones
        _, lung, les, _ = render(0, CLASS_NAMES.index("Viral Pneumonia"), i, S)
        assert les[:, : S // 2].any() and les[:, S // 2 :].any()
        cols = np.nonzero(les)[1]
        lung_cols = np.nonzero(lung)[1]
        # perihilar: closer to the midline than the lung fields on average
        assert np.abs(cols - S / 2).mean() < np.abs(lung_cols - S / 2).mean()


@pytest.mark.parametrize("class_name", ["COVID", "Lung_Opacity", "Viral Pneumonia", "Normal"])
def test_lesion_mask_covers_the_class_signal(class_name):
    """The image with and without the lesion differ only on the lesion mask (plus the blur)."""
    S = 128
    c = CLASS_NAMES.index(class_name)
    for index in range(4):
        with_, _, les, _ = render(5, c, index, S)
        without, _, les2, _ = render(5, c, index, S, lesion=False)
        np.testing.assert_array_equal(les, les2)
        diff = with_.astype(int) != without.astype(int)
        assert not (diff & ~ndimage.binary_dilation(les, iterations=3)).any()
        if class_name == "Normal":
            assert not diff.any()
        else:
            assert diff.sum() > 0.3 * les.sum(), "the lesion must change most of its pixels"


def test_shortcut_marker_is_class_specific_and_outside_the_lungs():
    d = SyntheticCXR(image_size=64, per_class=12, seed=1, shortcut=1.0).load()
    boxes = d.metadata["marker_boxes"]
    ids = _all(d, "ids").tolist()
    assert set(boxes) == set(ids)
    assert d.metadata["marker_text"] == MARKER_TEXT
    lung = _all(d, "masks:lung")
    for k, i in enumerate(ids):
        r0, c0, r1, c1 = boxes[i]
        assert not lung[k, r0:r1, c0:c1].any(), "the marker overlaps the lungs"
        assert c0 > 32 and r1 < 16  # top right
    # a classifier that only looks at the top-right corner is perfect at shortcut=1
    assert _corner_accuracy(d) == 1.0
    # ... and the markers are the only thing that changed
    plain = SyntheticCXR(image_size=64, per_class=12, seed=1, shortcut=0.0).load()
    assert plain.metadata["marker_boxes"] == {}
    changed = _all(d, "images") != _all(plain, "images")
    inside = np.zeros_like(changed)
    for k, i in enumerate(ids):
        r0, c0, r1, c1 = boxes[i]
        inside[k, r0:r1, c0:c1] = True
    assert changed.any() and not (changed & ~inside).any()


def _corner_accuracy(d: DatasetSplits) -> float:
    """Read the tag (bright pixels of the recorded box) and compare it with each class's
    glyphs: nothing else of the image is used."""
    templates = {c: synthetic._text_bitmap(MARKER_TEXT[name]) for c, name in enumerate(CLASS_NAMES)}
    hits = 0
    boxes = d.metadata["marker_boxes"]
    for img, label, i in zip(_all(d, "images"), _all(d, "labels"), _all(d, "ids").tolist(), strict=True):
        r0, c0, r1, c1 = boxes[i]
        crop = img[r0:r1, c0:c1] >= 200
        guess = [c for c, t in templates.items() if t.shape == crop.shape and (t == crop).all()]
        hits += guess == [label]
    return hits / len(boxes)


def test_shortcut_probability_is_respected():
    d = SyntheticCXR(image_size=32, per_class=40, seed=2, shortcut=0.5).load()
    frac = len(d.metadata["marker_boxes"]) / 160
    assert 0.35 < frac < 0.65


def test_fingerprint_is_cheap_and_tracks_every_parameter(monkeypatch):
    base = dict(image_size=299, per_class=250, split=(0.8, 0.1, 0.1), seed=0, shortcut=0.0)

    def boom(*args, **kwargs):
        raise AssertionError("fingerprint() must not draw images")

    monkeypatch.setattr(synthetic, "render", boom)
    fp = SyntheticCXR(**base).fingerprint()
    assert fp == SyntheticCXR(**base).fingerprint()
    for key, value in [("image_size", 128), ("per_class", 10), ("split", (0.7, 0.15, 0.15)), ("seed", 1), ("shortcut", 0.5)]:
        assert SyntheticCXR(**{**base, key: value}).fingerprint() != fp, key


def test_fingerprint_matches_the_loaded_data(small):
    assert small.fingerprint == SyntheticCXR(image_size=SIZE, per_class=10, seed=3).fingerprint()


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"image_size": 8}, "image_size"),
        ({"image_size": 64.5}, "image_size"),
        ({"per_class": 0}, "per_class"),
        ({"seed": -1}, "seed"),
        ({"shortcut": 1.5}, "shortcut"),
        ({"shortcut": "yes"}, "shortcut"),
        ({"split": (0.5, 0.5)}, "split"),
        ({"split": (0.9, 0.2, 0.1)}, "split"),
    ],
)
def test_bad_parameters_name_the_culprit(kwargs, key):
    ds = SyntheticCXR(**kwargs)  # no work, no validation in __init__
    with pytest.raises(ConfigError, match=rf"synthetic-cxr.*'{key}'"):
        ds.load()


def test_constructor_discipline_and_registry():
    from bench import create, registry

    params = {
        "image_size": 32, "per_class": 3, "split": (0.6, 0.2, 0.2), "seed": 9, "shortcut": 0.25,
        "lesion_contrast": 1.0,
    }
    ds = SyntheticCXR(**params)
    assert ds.get_params() == params
    with pytest.raises(TypeError):
        SyntheticCXR(32)  # keyword-only
    assert "synthetic-cxr" in registry().names("dataset")
    made = create("dataset", "synthetic-cxr", **params)
    assert isinstance(made, SyntheticCXR) and made.get_params() == params


def test_describe_and_npz_round_trip(small, tmp_path):
    desc = small.describe()
    assert desc["dataset"] == "synthetic-cxr"
    assert desc["splits"]["test"] == {c: 1 for c in CLASS_NAMES}
    assert desc["masks"]["lung"] == 1.0  # every image has a lung mask
    assert list(desc["masks"]) == ["lesion", "lung"]
    assert desc["masks"]["lesion"] == pytest.approx(0.75)  # every diseased image, no Normal one
    assert desc["image_size"] == [SIZE, SIZE]
    path = tmp_path / "d.npz"
    small.save(path)
    back = DatasetSplits.load_file(path)
    assert back.fingerprint == small.fingerprint and back.metadata == small.metadata
    assert list(back.test.masks) == ["lesion", "lung"]
    np.testing.assert_array_equal(back.test.masks["lesion"], small.test.masks["lesion"])
    np.testing.assert_array_equal(back.train.images, small.train.images)


def test_model_input_from_the_whole_set_is_not_needed(small):
    # to_model_input works on any slice: the harness never holds the set as float32
    x = to_model_input(small.val.images[:2])
    assert x.shape == (2, SIZE, SIZE, 3)


def test_lesion_contrast_scales_only_the_lesion_pixels():
    """The difficulty knob: same anatomy and masks, lesion intensity scaled inside the lesion mask."""
    from bench_datasets.synthetic import render

    base, lung, lesion, _ = render(3, 0, 5, 64)  # a COVID image
    easy, lung2, lesion2, _ = render(3, 0, 5, 64, lesion_contrast=2.0)
    plain, _, _, _ = render(3, 0, 5, 64, lesion=False)
    assert np.array_equal(lesion, lesion2) and np.array_equal(lung, lung2) and lesion.any()
    gain = easy.astype(int) - plain.astype(int)
    gain_base = base.astype(int) - plain.astype(int)
    assert gain[lesion].mean() > 1.5 * gain_base[lesion].mean() > 0
    assert np.abs(gain[~lesion]).mean() < 1.0  # outside the lesion only blur spill-over


@pytest.mark.parametrize("bad", [0, -1.0, 11.0, "x", True])
def test_lesion_contrast_is_validated(bad):
    with pytest.raises(ConfigError, match="lesion_contrast"):
        SyntheticCXR(image_size=32, per_class=2, lesion_contrast=bad).fingerprint()
