"""bench.publish.dataset_figure.write_dataset_grid: the PNG behind `bench data show`."""

from __future__ import annotations

import numpy as np
import pytest
from bench_datasets.synthetic import SyntheticCXR
from PIL import Image

from bench.data import DatasetSplits, Split
from bench.errors import ConfigError
from bench.publish.dataset_figure import MASK_COLOURS, mask_colours, write_dataset_grid


@pytest.fixture(scope="module")
def synthetic_small() -> DatasetSplits:
    return SyntheticCXR(image_size=48, per_class=5, seed=0).load()


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])


def _count_colour(png: np.ndarray, hex_colour: str, tol: int = 40) -> int:
    return int((np.abs(png[..., :3].astype(int) - _rgb(hex_colour)).max(axis=-1) < tol).sum())


def test_grid_has_rows_per_class_and_both_mask_outlines(synthetic_small, tmp_path):
    out = write_dataset_grid(synthetic_small, tmp_path / "sub" / "grid.png", per_class=3)
    assert out == tmp_path / "sub" / "grid.png" and out.exists()
    with Image.open(out) as im:
        assert im.format == "PNG"
        png = np.asarray(im.convert("RGB"))
    h, w, _ = png.shape
    assert h > w * 0.8  # 4 rows of 3 images: taller than a single row
    colours = mask_colours(synthetic_small.mask_names)  # by order: lesion, lung
    assert _count_colour(png, colours["lung"]) > 100
    assert _count_colour(png, colours["lesion"]) > 20
    assert not list((tmp_path / "sub").glob("*.tmp"))  # atomic write left nothing behind


def test_per_class_and_split_change_the_picture(synthetic_small, tmp_path):
    narrow = write_dataset_grid(synthetic_small, tmp_path / "a.png", per_class=2)
    wide = write_dataset_grid(synthetic_small, tmp_path / "b.png", per_class=5, split="train")
    with Image.open(narrow) as a, Image.open(wide) as b:
        assert b.size[0] > a.size[0]
    # the test split has 1 image per class: the other cells stay blank, no error
    write_dataset_grid(synthetic_small, tmp_path / "c.png", per_class=3, split="test")


def test_dataset_without_masks_and_an_absent_class(tmp_path):
    rng = np.random.default_rng(0)

    def split(labels):
        n = len(labels)
        return Split(
            images=rng.integers(0, 256, (n, 20, 20), dtype=np.uint8),
            labels=np.array(labels, dtype=np.int64),
            ids=np.array([f"img-{i}" for i in range(n)]),
        )

    d = DatasetSplits(
        name="plain",
        class_names=("a", "b", "c"),
        train=split([0, 0, 1]),
        val=split([0]),
        test=split([1]),
        fingerprint="f",
    )
    out = write_dataset_grid(d, tmp_path / "plain.png", per_class=2)
    with Image.open(out) as im:
        png = np.asarray(im.convert("RGB"))
    assert all(_count_colour(png, c, tol=20) == 0 for c in MASK_COLOURS)


@pytest.mark.parametrize(
    "kwargs, match", [({"split": "dev"}, "unknown split 'dev'"), ({"per_class": 0}, "per_class")]
)
def test_bad_arguments(synthetic_small, tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        write_dataset_grid(synthetic_small, tmp_path / "x.png", **kwargs)
