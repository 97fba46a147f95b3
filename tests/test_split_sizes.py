"""A dataset's optional ``split_sizes()``: the images of each split, said without loading.

The built-in datasets' answers are checked against what ``load()`` returns; ``bench run
--dry-run`` counts the training passes from them before the dataset is in the cache, and a
dataset whose answer raises or is garbage leaves the training unknown without failing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _tiny_config import tiny
from bench_datasets.covid_radiography import CLASS_NAMES, CovidRadiography
from bench_datasets.synthetic import SyntheticCXR
from PIL import Image

import bench
from bench.cli import main
from bench.config.loading import load_config
from bench.data import SPLIT_NAMES
from bench.errors import DataError
from bench.pipeline import make_plan
from bench.pipeline.estimate import BACKWARD_PASSES, estimate_plan


def _loaded_sizes(splits: Any) -> dict[str, int]:
    return {name: len(getattr(splits, name)) for name in SPLIT_NAMES}


def _training(sizes: dict[str, int], epochs: int) -> float:
    """simple-cnn trains end to end: epochs x (train forward + backward + val), then the test split."""
    return float(epochs * (sizes["train"] * (1 + BACKWARD_PASSES) + sizes["val"]) + sizes["test"])


# ---------------------------------------------------------------------------------------
# the built-in datasets say what loading gives
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_class, split", [
    (5, (0.8, 0.1, 0.1)), (7, (0.6, 0.2, 0.2)), (3, (1.0, 0.0, 0.0)), (11, (0.7, 0.15, 0.15)),
])
def test_synthetic_split_sizes_equal_the_loaded_splits(per_class, split):
    data = SyntheticCXR(image_size=16, per_class=per_class, split=split, seed=3)
    sizes = data.split_sizes()
    assert sizes == _loaded_sizes(data.load())
    assert sum(sizes.values()) == 4 * per_class


def _db(root: Path, counts: dict[str, int], *, flat: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        folder = root / "archive" / cls / ("" if flat else "images")
        folder.mkdir(parents=True)
        for i in range(1, n + 1):
            Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(folder / f"{cls}-{i}.png")
    (root / "archive" / "COVID" / ("" if flat else "images") / "notes.txt").write_text("not an image")
    return root


COUNTS = dict(zip(CLASS_NAMES, (7, 5, 9, 6), strict=True))


@pytest.mark.parametrize("per_class, split, flat", [
    (5, (0.8, 0.1, 0.1), False), ("all", (0.6, 0.2, 0.2), True), (4, (0.5, 0.25, 0.25), False),
])
def test_covid_split_sizes_equal_the_loaded_splits(tmp_path, per_class, split, flat):
    root = _db(tmp_path / "db", COUNTS, flat=flat)
    data = CovidRadiography(root=str(root), per_class=per_class, split=split, seed=1)
    sizes = data.split_sizes()
    assert sizes == _loaded_sizes(data.load())
    assert sum(sizes.values()) == (sum(COUNTS.values()) if per_class == "all" else 4 * per_class)


def test_covid_split_sizes_fail_where_loading_would(tmp_path):
    root = _db(tmp_path / "db", COUNTS)
    with pytest.raises(DataError, match="per_class=6"):
        CovidRadiography(root=str(root), per_class=6).split_sizes()  # Lung_Opacity has 5
    with pytest.raises(DataError, match="does not exist"):
        CovidRadiography(root=str(tmp_path / "missing")).split_sizes()


def test_covid_split_sizes_decode_nothing(tmp_path, monkeypatch):
    root = _db(tmp_path / "db", COUNTS)
    import bench_datasets.covid_radiography as covid

    def no(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("split_sizes() opened an image or hashed a file")

    monkeypatch.setattr(covid, "_decode", no)
    monkeypatch.setattr(covid, "content_listing", no)
    monkeypatch.setattr(Image, "open", no)
    assert CovidRadiography(root=str(root), per_class=5).split_sizes() == {"train": 16, "val": 0, "test": 4}


# ---------------------------------------------------------------------------------------
# the dry run counts the training before anything is cached
# ---------------------------------------------------------------------------------------
def test_a_fresh_dry_run_counts_the_training_from_split_sizes(tmp_path, capsys):
    out = tmp_path / "r"
    cfg = load_config(None, overrides=tiny(out))
    est = estimate_plan(make_plan(cfg))
    params = cfg["dataset"]["params"]
    sizes = SyntheticCXR(**params).split_sizes()
    assert sizes == {"train": 64, "val": 8, "test": 8}  # 4 classes x 20 images, split 80/10/10
    model = est.models["simple-cnn"]
    assert model.train_passes == _training(sizes, cfg["training"]["epochs"]) and not model.train_cached
    assert "training simple-cnn" not in est.unknown
    assert not est.cache_probed and not (out / "cache" / "datasets").exists()  # nothing loaded or written
    # the command says the number too
    code = main(["run", "--dry-run", "--json", "--out", str(out), "--set", 'models.names=["simple-cnn"]',
                 "--set", f"dataset.params.per_class={params['per_class']}",
                 "--set", f"dataset.params.image_size={params['image_size']}"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    epochs = report["config"]["training"]["epochs"]
    (row,) = report["estimate"]["models"]
    assert row["train_passes"] == _training(sizes, epochs)
    assert "training simple-cnn" not in report["estimate"]["unknown"]


def test_a_dataset_read_from_a_folder_is_counted_too(tmp_path):
    root = _db(tmp_path / "db", COUNTS)
    cfg = load_config(None, overrides={
        **{k: v for k, v in tiny(tmp_path / "r").items() if k != "dataset"},
        "dataset": {"name": "covid-radiography", "data": str(root), "params": {"per_class": 5, "image_size": 32}},
    })
    est = estimate_plan(make_plan(cfg))
    assert est.models["simple-cnn"].train_passes == _training({"train": 16, "val": 0, "test": 4},
                                                              cfg["training"]["epochs"])
    assert not est.cache_probed  # its key would mean hashing its files


ANSWERS: dict[str, Any] = {
    "raises": RuntimeError("cannot tell"),
    "none": None,
    "a-list": [64, 8, 8],
    "missing-key": {"train": 64, "val": 8},
    "extra-key": {"train": 64, "val": 8, "test": 8, "holdout": 2},
    "negative": {"train": 64, "val": -1, "test": 8},
    "float": {"train": 64.0, "val": 8, "test": 8},
    "bool": {"train": True, "val": 8, "test": 8},
    "string": {"train": "64", "val": 8, "test": 8},
}


class GarbageSizes:
    """synthetic-cxr whose ``split_sizes()`` gives ``ANSWERS[answer]`` (raised if an exception)."""

    def __init__(self, *, answer: str = "raises", image_size: int = 32, per_class: int = 20):
        self.answer = answer
        self.inner = SyntheticCXR(image_size=image_size, per_class=per_class)

    def get_params(self) -> dict[str, Any]:
        return {"answer": self.answer, **self.inner.get_params()}

    def fingerprint(self) -> str:
        return self.inner.fingerprint()

    def image_shape(self) -> tuple[int, int]:
        return self.inner.image_shape()

    def load(self) -> Any:
        return self.inner.load()

    def split_sizes(self) -> Any:
        value = ANSWERS[self.answer]
        if isinstance(value, Exception):
            raise value
        return value


class GarbagePlugin:
    @bench.hookimpl
    def bench_register_datasets(self) -> list[Any]:
        return [bench.DatasetSpec(name="t-garbage-sizes", factory=GarbageSizes)]


@pytest.fixture
def garbage_plugin():
    bench.register_plugin(GarbagePlugin(), name="split-sizes-test-plugin")
    yield
    bench.unregister_plugin("split-sizes-test-plugin")


@pytest.mark.parametrize("answer", sorted(ANSWERS))
def test_a_split_sizes_that_raises_or_is_garbage_leaves_the_training_unknown(garbage_plugin, tmp_path, capsys,
                                                                             answer):
    out = tmp_path / "r"
    cfg = tiny(out)
    cfg["dataset"] = {"name": "t-garbage-sizes", "params": {"answer": answer}}
    plan = make_plan(load_config(None, overrides=cfg))
    est = estimate_plan(plan)
    assert est.models["simple-cnn"].train_passes is None and "training simple-cnn" in est.unknown
    assert est.models["simple-cnn"].images == 3  # the cells are still counted, bounded by the cap
    garbage = answer not in ("raises", "none")
    assert bool(est.problems) == garbage  # a wrong answer is named; an exception or None is just unknown
    if garbage:
        assert "t-garbage-sizes" in est.problems[0] and "split_sizes()" in est.problems[0]
    code = main(["run", "--dry-run", "--out", str(out), "--dataset", "t-garbage-sizes",
                 "--set", f'dataset.params={{ answer = "{answer}" }}', "--set", 'models.names=["simple-cnn"]'])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "training simple-cnn" in captured.out
    assert ("split_sizes()" in captured.err) == garbage
