"""Trainer performance, as ratios against a baseline measured in the same run.

Run: ``pytest tests/benchmarks/test_bench_training.py --benchmark-only -s``.

* ``test_feature_cached_training_vs_plain_fit``: ``bench.training.train`` on a frozen
  VGG16 (features computed once, head trained on them) vs plain ``model.fit`` on the
  images for the same epochs, same data, same batch size, with validation each epoch.
  Ratio = plain seconds / cached seconds; it approaches the number of epochs as the
  backbone dominates.
* ``test_feature_extraction_throughput``: images/s of ``extract_features`` (uint8 split
  in, batches built on the fly) vs the raw ``model(x)`` images/s (warm ``tf.function``,
  float32 batches already in memory) of the same model. Ratio near 1 (the extractor
  skips the head, so slightly above 1 is possible).

Sizes are small (VGG16 at 64 px, ``pool_size=2``) to run in CI time; the ratios, not
the absolute times, are the result. Fastest round of each side is used.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from _readme import readme_row

import bench
from bench.data import DatasetSplits, Split
from bench.training import TrainingConfig, extract_features, train

SIZE = 64
EPOCHS = 5
BATCH = 32


def _split(n: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    return Split(
        images=rng.integers(0, 256, (n, SIZE, SIZE), dtype=np.uint8),
        labels=np.arange(n) % 4,
        ids=np.array([f"{seed}-{i}" for i in range(n)]),
    )


def _splits(n_train: int = 128, n_val: int = 32, n_test: int = 8) -> DatasetSplits:
    return DatasetSplits(
        name="bench-synthetic",
        class_names=("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"),
        train=_split(n_train, 0),
        val=_split(n_val, 1),
        test=_split(n_test, 2),
        fingerprint=f"bench-{n_train}-{n_val}-{n_test}-{SIZE}",
        metadata={"positive_classes": ["COVID", "Lung_Opacity", "Viral Pneumonia"]},
    )


def _vgg():
    m = bench.create(
        "model", "vgg16", weights="none", input_shape=(SIZE, SIZE, 3), num_classes=4, pool_size=2
    )
    m.keras  # noqa: B018 - build outside the timings
    return m


def _plain_fit(splits: DatasetSplits) -> float:
    """The study's way: model.fit on the images, every epoch through the backbone."""
    import keras

    from bench.data import to_model_input

    model = _vgg()
    km = model.keras
    km.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
               metrics=["accuracy"])
    x = to_model_input(splits.train.images)
    y = np.eye(4, dtype=np.float32)[splits.train.labels]
    xv = to_model_input(splits.val.images)
    yv = np.eye(4, dtype=np.float32)[splits.val.labels]
    t0 = time.perf_counter()
    km.fit(x, y, epochs=EPOCHS, batch_size=BATCH, validation_data=(xv, yv), verbose=0,
           shuffle=True)
    return time.perf_counter() - t0


@pytest.mark.benchmark(group="training")
def test_feature_cached_training_vs_plain_fit(benchmark):
    splits = _splits()
    config = TrainingConfig(epochs=EPOCHS, batch_size=BATCH)
    plain = [_plain_fit(splits)]
    cached: list[float] = []
    reports = []

    def run() -> None:
        model = _vgg()
        t0 = time.perf_counter()
        reports.append(train(model, splits, config, progress=False))
        cached.append(time.perf_counter() - t0)

    # two rounds of each side; the fastest (warm) round of each is compared
    benchmark.pedantic(run, rounds=2, iterations=1)
    plain.append(_plain_fit(splits))
    ratio = min(plain) / min(cached)
    rep = reports[-1]
    benchmark.extra_info.update({
        "epochs": EPOCHS,
        "images": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "input": SIZE,
        "plain_fit_s": min(plain),
        "cached_train_s": min(cached),
        "features_s": rep.features_seconds,
        "ratio_plain_over_cached": ratio,
    })
    readme_row(benchmark, f"feature-cached head training vs `model.fit` on images, VGG16 {SIZE} px", ratio,
               detail=f"{EPOCHS} epochs, {len(splits.train)}+{len(splits.val)} images")
    print(
        f"\nVGG16@{SIZE}px, {EPOCHS} epochs, {len(splits.train)}+{len(splits.val)} images: "
        f"plain model.fit {min(plain):.2f}s, feature-cached train {min(cached):.2f}s "
        f"(features {rep.features_seconds:.2f}s) -> speed-up x{ratio:.2f}"
    )
    assert rep.mode == "features"


@pytest.mark.benchmark(group="training")
def test_feature_extraction_throughput(benchmark):
    import tensorflow as tf

    n = 96
    split = _split(n, 3)
    model = _vgg()
    raw_fn = tf.function(lambda x: model.keras(x, training=False), reduce_retracing=True)
    xs = tf.constant(np.random.default_rng(0).random((BATCH, SIZE, SIZE, 3), dtype=np.float32))
    raw_fn(xs)
    extract_features(model.feature_extractor, split.subset(np.arange(BATCH)), batch_size=BATCH)

    raw_times: list[float] = []

    def raw_round() -> None:
        t0 = time.perf_counter()
        for _ in range(n // BATCH):
            np.asarray(raw_fn(xs))
        raw_times.append(time.perf_counter() - t0)

    ext_times: list[float] = []

    def ext_round() -> None:
        t0 = time.perf_counter()
        extract_features(model.feature_extractor, split, batch_size=BATCH)
        ext_times.append(time.perf_counter() - t0)

    benchmark.pedantic(ext_round, setup=raw_round, rounds=3, iterations=1)
    raw_ips = (n // BATCH) * BATCH / min(raw_times)
    ext_ips = n / min(ext_times)
    ratio = ext_ips / raw_ips
    benchmark.extra_info.update({
        "images": n, "input": SIZE, "batch": BATCH,
        "raw_images_per_s": raw_ips, "extract_images_per_s": ext_ips,
        "ratio_extract_over_raw": ratio,
    })
    readme_row(benchmark, f"backbone feature extraction vs raw `model(x)`, VGG16 {SIZE} px", ratio, unit="",
               goal="about 1", detail=f"{n} images, batch {BATCH}")
    print(
        f"\nVGG16@{SIZE}px batch {BATCH}: raw model(x) {raw_ips:.1f} img/s, "
        f"extract_features {ext_ips:.1f} img/s -> ratio {ratio:.2f}"
    )
