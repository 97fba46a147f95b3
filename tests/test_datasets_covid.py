"""covid-radiography: fake databases in every public layout, written to temp dirs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bench_datasets.covid_radiography import (
    CLASS_NAMES,
    CovidRadiography,
    class_of_folder,
    find_layout,
    to_gray_uint8,
)
from bench_datasets.splitting import check_fractions, split_counts, stratified_split
from PIL import Image

from bench.data import DatasetSplits
from bench.errors import ConfigError, DataError

SIZE = 24


def _image(rng: np.random.Generator, mode: str, size: int = SIZE) -> Image.Image:
    gray = rng.integers(0, 256, (size, size), dtype=np.uint8)
    if mode == "L":
        return Image.fromarray(gray)
    if mode == "RGB":
        return Image.fromarray(np.stack([gray] * 3, axis=-1))
    if mode == "RGBA":
        return Image.fromarray(np.dstack([gray, gray, gray, np.full_like(gray, 255)]))
    if mode == "I;16":
        return Image.fromarray(gray.astype(np.uint16) * 257)
    raise AssertionError(mode)


def make_db(
    root: Path,
    *,
    counts: dict[str, int] | None = None,
    folders: dict[str, str] | None = None,
    flat: bool = False,
    masks: bool = True,
    mask_size: int = 16,
    modes: tuple[str, ...] = ("L", "RGB", "RGBA", "I;16"),
    seed: int = 0,
) -> Path:
    """A fake database under ``root``; returns the database folder."""
    rng = np.random.default_rng(seed)
    counts = counts or {c: 6 for c in CLASS_NAMES}
    folders = folders or {c: c for c in CLASS_NAMES}
    for cls, n in counts.items():
        folder = root / folders[cls]
        img_dir = folder if flat else folder / "images"
        img_dir.mkdir(parents=True, exist_ok=True)
        if masks and not flat:
            (folder / "masks").mkdir(exist_ok=True)
        for i in range(1, n + 1):
            name = f"{folders[cls]}-{i}.png"
            _image(rng, modes[i % len(modes)]).save(img_dir / name)
            if masks and not flat:
                m = np.zeros((mask_size, mask_size), dtype=np.uint8)
                m[2 : mask_size // 2, 1 : mask_size - 1] = 255
                Image.fromarray(m).save(folder / "masks" / name)
    return root


# ---------------------------------------------------------------------------------------
# the split rule
# ---------------------------------------------------------------------------------------
def test_split_counts_of_the_study():
    assert split_counts(1345, (0.8, 0.1, 0.1)) == (1076, 134, 135)
    totals = np.array(split_counts(1345, (0.8, 0.1, 0.1))) * 4
    assert totals.tolist() == [4304, 536, 540]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 10, 11, 99, 1345, 3616, 10192])
@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.1), (0.7, 0.15, 0.15), (0.6, 0.4, 0.0), (1.0, 0.0, 0.0)])
def test_split_counts_sum_and_are_close_to_the_fractions(n, fractions):
    counts = split_counts(n, fractions)
    assert sum(counts) == n
    for c, f in zip(counts, fractions, strict=True):
        assert abs(c - n * f) < 1.0
        if f == 0:
            assert c == 0


def test_stratified_split_is_seeded_disjoint_and_stratified():
    labels = np.repeat(np.arange(4), 1345)
    a = stratified_split(labels, (0.8, 0.1, 0.1), np.random.SeedSequence(3))
    b = stratified_split(labels, (0.8, 0.1, 0.1), np.random.SeedSequence(3))
    c = stratified_split(labels, (0.8, 0.1, 0.1), np.random.SeedSequence(4))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["test"], c["test"])
    union = np.concatenate(list(a.values()))
    assert len(union) == len(np.unique(union)) == len(labels)
    for name, expected in zip(("train", "val", "test"), (1076, 134, 135), strict=True):
        assert np.bincount(labels[a[name]]).tolist() == [expected] * 4


@pytest.mark.parametrize("bad", [(0.8, 0.1), (0.8, 0.3, 0.1), (0.0, 0.5, 0.5), (-0.1, 0.6, 0.5), "abc"])
def test_bad_fractions_are_refused(bad):
    with pytest.raises(ConfigError, match="split"):
        check_fractions(bad, where="x")


# ---------------------------------------------------------------------------------------
# layouts
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, expected",
    [
        ("COVID", "COVID"),
        ("covid-19", "COVID"),
        ("COVID_19", "COVID"),
        ("Lung Opacity", "Lung_Opacity"),
        ("lung_opacity", "Lung_Opacity"),
        ("NORMAL", "Normal"),
        ("Viral_Pneumonia", "Viral Pneumonia"),
        ("viral pneumonia", "Viral Pneumonia"),
        ("images", None),
        ("Pneumonia", None),
    ],
)
def test_class_folder_aliases(name, expected):
    assert class_of_folder(name) == expected


def test_current_release_layout_nested_twice(tmp_path):
    top = tmp_path / "download" / "archive" / "COVID-19_Radiography_Dataset"
    make_db(top, counts={c: 10 for c in CLASS_NAMES})
    (top / "README.md.txt").write_text("readme")
    (top / "COVID.metadata.xlsx").write_bytes(b"not read")
    d = CovidRadiography(root=str(tmp_path), per_class=10).load()
    assert isinstance(d, DatasetSplits)
    assert d.class_names == CLASS_NAMES
    assert d.counts() == {
        "train": {c: 8 for c in CLASS_NAMES},
        "val": {c: 1 for c in CLASS_NAMES},
        "test": {c: 1 for c in CLASS_NAMES},
    }
    assert d.image_shape == (SIZE, SIZE)
    assert d.metadata["layout"].startswith("images/masks")
    # ids are relative paths, unique across splits, and listed per split in the metadata
    ids = np.concatenate([s.ids for s in d.splits().values()])
    assert len(set(ids.tolist())) == 40
    assert all(i.split("/")[1] == "images" for i in ids)
    assert d.metadata["files"]["test"] == d.test.ids.tolist()
    # lung masks (16x16 on disk) resized to the image size and binary
    assert list(d.train.masks) == ["lung"] and d.train.masks["lung"].shape == d.train.images.shape
    assert d.train.masks["lung"].any(axis=(1, 2)).all()
    assert d.describe()["masks"] == {"lung": 1.0}
    assert d.positive_classes == ("COVID", "Lung_Opacity", "Viral Pneumonia")


def test_every_mode_becomes_the_same_gray(tmp_path):
    rng = np.random.default_rng(5)
    gray = rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    variants = {
        "L": Image.fromarray(gray),
        "RGB": Image.fromarray(np.stack([gray] * 3, axis=-1)),
        "RGBA": Image.fromarray(np.dstack([gray, gray, gray, np.full_like(gray, 255)])),
        "I;16": Image.fromarray(gray.astype(np.uint16) * 257),
        "P": Image.fromarray(gray).convert("P"),
    }
    for mode, img in variants.items():
        path = tmp_path / f"{mode.replace(';', '')}.png"
        img.save(path)
        with Image.open(path) as reopened:
            reopened.load()
            out = to_gray_uint8(reopened)
        assert out.dtype == np.uint8 and out.shape == (SIZE, SIZE), mode
        if mode != "P":  # a palette may quantise
            np.testing.assert_array_equal(out, gray, err_msg=mode)


def test_mixed_modes_load_and_are_recorded(tmp_path):
    make_db(tmp_path, counts={c: 8 for c in CLASS_NAMES})
    d = CovidRadiography(root=str(tmp_path), per_class=8).load()
    modes = d.metadata["source_modes"]
    assert sum(modes.values()) == 32
    assert {"L", "RGB", "RGBA"} <= set(modes)
    assert any(m.startswith("I") for m in modes)  # the 16-bit files
    for s in d.splits().values():
        assert s.images.dtype == np.uint8 and s.images.ndim == 3


def test_flat_2021_layout_with_aliases_and_spaces(tmp_path):
    folders = {"COVID": "COVID-19", "Lung_Opacity": "Lung Opacity", "Normal": "NORMAL", "Viral Pneumonia": "Viral_Pneumonia"}
    make_db(tmp_path / "COVID-19 Radiography Database", folders=folders, flat=True, counts={c: 5 for c in CLASS_NAMES})
    d = CovidRadiography(root=str(tmp_path), per_class=5).load()
    assert d.counts()["train"] == {c: 4 for c in CLASS_NAMES}
    assert d.train.masks == {}
    assert d.describe()["masks"] == {}
    assert d.metadata["layout"].startswith("flat")
    assert "Lung Opacity/Lung Opacity-1.png" in np.concatenate([s.ids for s in d.splits().values()]).tolist()


def test_top_folder_found_three_levels_down_but_not_four(tmp_path):
    make_db(tmp_path / "a" / "b" / "c", counts={c: 3 for c in CLASS_NAMES})
    assert find_layout(tmp_path).top == tmp_path / "a" / "b" / "c"
    make_db(tmp_path / "v" / "w" / "x" / "y" / "z", counts={c: 3 for c in CLASS_NAMES})
    assert find_layout(tmp_path / "v" / "w").top.name == "z"
    with pytest.raises(DataError, match="no class folders"):
        find_layout(tmp_path / "v")


def test_macos_junk_is_ignored(tmp_path):
    make_db(tmp_path / "db", counts={c: 3 for c in CLASS_NAMES})
    junk = tmp_path / "__MACOSX" / "db"
    make_db(junk, counts={c: 1 for c in CLASS_NAMES})
    (tmp_path / "db" / "COVID" / "images" / "._COVID-1.png").write_bytes(b"\x00\x05\x16\x07")
    d = CovidRadiography(root=str(tmp_path), per_class=3).load()
    assert sum(len(s) for s in d.splits().values()) == 12


def test_three_class_release_is_named(tmp_path):
    folders = {"COVID": "COVID-19", "Normal": "NORMAL", "Viral Pneumonia": "Viral Pneumonia"}
    make_db(tmp_path / "COVID-19 Radiography Database", folders=folders,
            counts={c: 3 for c in folders}, flat=True)
    with pytest.raises(DataError, match=r"3-class release.*Lung_Opacity class is missing"):
        CovidRadiography(root=str(tmp_path), per_class=3).load()


def test_missing_path_and_empty_folder_show_the_expected_tree(tmp_path):
    with pytest.raises(DataError, match=r"does not exist(.|\n)*COVID/images/COVID-1.png"):
        CovidRadiography(root=str(tmp_path / "nope")).fingerprint()
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match=r"no class folders(.|\n)*'other'(.|\n)*Viral Pneumonia/images"):
        CovidRadiography(root=str(tmp_path)).load()
    make_db(tmp_path / "db", counts={c: 1 for c in CLASS_NAMES})
    with pytest.raises(DataError, match="looks like one class folder"):
        CovidRadiography(root=str(tmp_path / "db" / "Normal")).load()
    archive = tmp_path / "archive.zip"
    archive.write_bytes(b"PK")
    with pytest.raises(DataError, match="unzip"):
        CovidRadiography(root=str(archive)).load()


def test_missing_class_folder_is_named(tmp_path):
    make_db(tmp_path, counts={"COVID": 3, "Normal": 3, "Lung_Opacity": 3})
    with pytest.raises(DataError, match="'Viral Pneumonia'"):
        CovidRadiography(root=str(tmp_path), per_class=3).load()


def test_too_few_images_for_per_class(tmp_path):
    make_db(tmp_path, counts={"COVID": 6, "Lung_Opacity": 6, "Normal": 6, "Viral Pneumonia": 4})
    with pytest.raises(DataError, match=r"'Viral Pneumonia' has 4 images.*per_class=5.*at most 4"):
        CovidRadiography(root=str(tmp_path), per_class=5).load()
    d = CovidRadiography(root=str(tmp_path), per_class=None).load()
    assert sum(d.counts()["train"].values()) + sum(d.counts()["val"].values()) + sum(d.counts()["test"].values()) == 22


# ---------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------
def test_seeded_choice_from_larger_classes(tmp_path):
    make_db(tmp_path, counts={"COVID": 12, "Lung_Opacity": 15, "Normal": 20, "Viral Pneumonia": 10})
    a = CovidRadiography(root=str(tmp_path), per_class=10, seed=1).load()
    b = CovidRadiography(root=str(tmp_path), per_class=10, seed=1).load()
    c = CovidRadiography(root=str(tmp_path), per_class=10, seed=2).load()
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(a.splits()[name].ids, b.splits()[name].ids)
        np.testing.assert_array_equal(a.splits()[name].images, b.splits()[name].images)
    ids_a = set(np.concatenate([s.ids for s in a.splits().values()]).tolist())
    ids_c = set(np.concatenate([s.ids for s in c.splits().values()]).tolist())
    assert ids_a != ids_c
    # the smallest class is taken whole, whatever the seed
    vp = {i for i in ids_a if i.startswith("Viral Pneumonia/")}
    assert vp == {i for i in ids_c if i.startswith("Viral Pneumonia/")} and len(vp) == 10
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.metadata["available_per_class"] == {"COVID": 12, "Lung_Opacity": 15, "Normal": 20, "Viral Pneumonia": 10}


def test_fingerprint_is_cheap_and_tracks_files(tmp_path, monkeypatch):
    make_db(tmp_path, counts={c: 4 for c in CLASS_NAMES})
    ds = CovidRadiography(root=str(tmp_path), per_class=4)
    import PIL.Image

    def no_decoding(*args, **kwargs):
        raise AssertionError("fingerprint() must not open images")

    with monkeypatch.context() as m:
        m.setattr(PIL.Image, "open", no_decoding)
        fp = ds.fingerprint()
    assert fp == ds.fingerprint() == ds.load().fingerprint
    # another file changes it; so does a parameter
    _image(np.random.default_rng(0), "L").save(tmp_path / "Normal" / "images" / "Normal-99.png")
    assert ds.fingerprint() != fp
    assert CovidRadiography(root=str(tmp_path), per_class=3).fingerprint() != ds.fingerprint()


# ---------------------------------------------------------------------------------------
# bad files, masks, sizes
# ---------------------------------------------------------------------------------------
def test_corrupt_files_fail_listing_them_or_are_skipped_and_recorded(tmp_path):
    make_db(tmp_path, counts={c: 6 for c in CLASS_NAMES})
    (tmp_path / "COVID" / "images" / "COVID-2.png").write_bytes(b"this is not a png")
    good = (tmp_path / "Normal" / "images" / "Normal-3.png").read_bytes()
    (tmp_path / "Normal" / "images" / "Normal-3.png").write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(DataError) as info:
        CovidRadiography(root=str(tmp_path), per_class=6).load()
    msg = str(info.value)
    assert "2 corrupt" in msg and "COVID-2.png" in msg and "Normal-3.png" in msg and "skip_corrupt" in msg

    # with spare files the counts stay exact and the skipped files are recorded
    d = CovidRadiography(root=str(tmp_path), per_class=5, skip_corrupt=True, seed=0).load()
    ids = np.concatenate([s.ids for s in d.splits().values()]).tolist()
    skipped = {s["file"] for s in d.metadata["skipped_corrupt"]}
    assert skipped <= {"COVID/images/COVID-2.png", "Normal/images/Normal-3.png"}
    assert not skipped & set(ids)
    assert d.counts()["train"] == {c: 4 for c in CLASS_NAMES}

    # without spares the class just loses the file (recorded, never silent)
    d = CovidRadiography(root=str(tmp_path), per_class=6, skip_corrupt=True).load()
    assert {s["file"] for s in d.metadata["skipped_corrupt"]} == {"COVID/images/COVID-2.png", "Normal/images/Normal-3.png"}
    total = {c: sum(d.counts()[s][c] for s in ("train", "val", "test")) for c in CLASS_NAMES}
    assert total == {"COVID": 5, "Lung_Opacity": 6, "Normal": 5, "Viral Pneumonia": 6}


def test_missing_masks_are_allowed_and_recorded(tmp_path):
    make_db(tmp_path, counts={c: 5 for c in CLASS_NAMES})
    (tmp_path / "COVID" / "masks" / "COVID-1.png").unlink()
    d = CovidRadiography(root=str(tmp_path), per_class=5).load()
    assert d.metadata["missing_lung_masks"] == ["COVID/images/COVID-1.png"]
    for s in d.splits().values():
        for i, image_id in enumerate(s.ids):
            assert s.masks["lung"][i].any() == (image_id != "COVID/images/COVID-1.png")


def test_mask_binarised_whatever_its_scale(tmp_path):
    make_db(tmp_path, counts={c: 2 for c in CLASS_NAMES}, mask_size=SIZE)
    m = np.zeros((SIZE, SIZE), dtype=np.uint8)
    m[5:10, 5:10] = 1  # a 0/1 mask
    Image.fromarray(m).save(tmp_path / "Normal" / "masks" / "Normal-1.png")
    d = CovidRadiography(root=str(tmp_path), per_class=2, split=(0.5, 0.5, 0.0)).load()
    where = {i: (s, k) for s in d.splits().values() for k, i in enumerate(s.ids)}
    s, k = where["Normal/images/Normal-1.png"]
    np.testing.assert_array_equal(s.masks["lung"][k], m.astype(bool))


def test_native_sizes_must_agree_unless_resized(tmp_path):
    make_db(tmp_path, counts={c: 3 for c in CLASS_NAMES})
    _image(np.random.default_rng(1), "L", size=40).save(tmp_path / "Lung_Opacity" / "images" / "Lung_Opacity-2.png")
    with pytest.raises(DataError, match=r"(?s)image_size.*Lung_Opacity-2.png: 40x40"):
        CovidRadiography(root=str(tmp_path), per_class=3).load()
    d = CovidRadiography(root=str(tmp_path), per_class=3, image_size=32).load()
    assert d.image_shape == (32, 32)
    assert d.train.masks["lung"].shape == d.train.images.shape


def test_parameters_are_stored_and_validated(tmp_path):
    ds = CovidRadiography(root="x", per_class=7, seed=3)
    assert ds.get_params() == {
        "root": "x", "per_class": 7, "split": (0.8, 0.1, 0.1), "seed": 3, "image_size": None, "skip_corrupt": False,
    }
    for kwargs, match in [
        ({"root": ""}, "--data"),
        ({"root": str(tmp_path), "per_class": 0}, "per_class"),
        ({"root": str(tmp_path), "image_size": 4}, "image_size"),
        ({"root": str(tmp_path), "seed": -1}, "seed"),
        ({"root": str(tmp_path), "skip_corrupt": "yes"}, "skip_corrupt"),
    ]:
        with pytest.raises(ConfigError, match=match):
            CovidRadiography(**kwargs).fingerprint()


def test_registered_and_created_through_the_registry(tmp_path):
    from bench import create, registry

    assert "covid-radiography" in registry().names("dataset")
    make_db(tmp_path, counts={c: 2 for c in CLASS_NAMES}, masks=False, flat=True)
    ds = create("dataset", "covid-radiography", root=str(tmp_path), per_class=2)
    assert isinstance(ds, CovidRadiography)
    d = ds.load()
    assert d.name == "covid-radiography" and sum(len(s) for s in d.splits().values()) == 8


def test_corrupt_mask_is_reported_with_its_image(tmp_path):
    make_db(tmp_path, counts={c: 3 for c in CLASS_NAMES})
    (tmp_path / "Lung_Opacity" / "masks" / "Lung_Opacity-2.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"Lung_Opacity-2.png: its mask .*Lung_Opacity-2.png"):
        CovidRadiography(root=str(tmp_path), per_class=3).load()
    d = CovidRadiography(root=str(tmp_path), per_class=3, skip_corrupt=True).load()
    assert [s["file"] for s in d.metadata["skipped_corrupt"]] == ["Lung_Opacity/images/Lung_Opacity-2.png"]
