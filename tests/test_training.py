"""The trainer: epoch selection, features computed once, caching, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

import bench
from bench import training
from bench.data import DatasetSplits, Split
from bench.errors import ConfigError
from bench.pipeline.store import Cache
from bench.training import TrainingConfig, TrainingError, select_epoch, train

keras = pytest.importorskip("keras")

CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
DISEASES = ("COVID", "Lung_Opacity", "Viral Pneumonia")


def _split(n: int, size: int, seed: int) -> Split:
    """Class c: a bright quadrant c on dark noise (learnable in a few epochs)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    images = rng.integers(0, 60, (n, size, size), dtype=np.uint8)
    h = size // 2
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 2)
        images[i, r * h : (r + 1) * h, q * h : (q + 1) * h] += 150
    return Split(images=images, labels=labels, ids=np.array([f"s{seed}-{i}" for i in range(n)]))


def make_splits(n_train=48, n_val=16, n_test=16, size=32) -> DatasetSplits:
    return DatasetSplits(
        name="synthetic-test",
        class_names=CLASSES,
        train=_split(n_train, size, 0),
        val=_split(n_val, size, 1),
        test=_split(n_test, size, 2),
        fingerprint=f"synthetic-{n_train}-{n_val}-{n_test}-{size}",
        metadata={"positive_classes": list(DISEASES)},
    )


def cnn(**kw):
    return bench.create("model", "simple-cnn", input_shape=(32, 32, 3), num_classes=4, **kw)


def vgg(**kw):
    return bench.create(
        "model", "vgg16", weights="none", input_shape=(32, 32, 3), num_classes=4, pool_size=1, **kw
    )


def _weights(model) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.keras.weights]


# ---- selection ------------------------------------------------------------------
def _h(**cols):
    n = len(next(iter(cols.values())))
    return [{k: v[i] for k, v in cols.items()} for i in range(n)]


def test_select_epoch_rules_and_ties():
    hist = _h(
        disease_recall=[0.5, 0.8, 0.7, 0.8, float("nan")],
        val_loss=[0.9, 0.4, 0.3, 0.3, 0.2],
        val_accuracy=[0.1, 0.9, 0.9, 0.5, 0.2],
        macro_recall=[0.1, 0.2, 0.3, 0.2, 0.1],
    )
    assert select_epoch(hist, "disease_recall") == 2  # tie with epoch 4 -> earlier; NaN never wins
    assert select_epoch(hist, "val_loss") == 5
    assert select_epoch(hist, "val_accuracy") == 2
    assert select_epoch(hist, "macro_recall") == 3
    assert select_epoch(hist, "last") == 5
    with pytest.raises(ConfigError, match="disease_recall"):
        select_epoch(hist, "disease_recal")
    with pytest.raises(ConfigError, match="did you mean 'val_loss'"):
        TrainingConfig(selection="val_los")
    with pytest.raises(ConfigError, match="epochs"):
        TrainingConfig(epochs=0)


def test_epoch_metrics_disease_recall_is_macro_over_diseases():
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    pred = np.array([0, 1, 1, 1, 2, 0, 0, 0])  # recalls: 0.5, 1.0, 0.5, 0.0
    probs = np.eye(4, dtype=np.float32)[pred] * 0.9 + 0.025
    m = training.epoch_metrics(probs, labels, list(CLASSES), [0, 1, 3])
    assert m["val_recall"] == {"COVID": 0.5, "Lung_Opacity": 1.0, "Normal": 0.5, "Viral Pneumonia": 0.0}
    assert m["disease_recall"] == pytest.approx(0.5)
    assert m["macro_recall"] == pytest.approx(0.5)
    assert m["val_accuracy"] == pytest.approx(4 / 8)
    assert m["val_loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(8), labels])), rel=1e-5)


def test_training_keeps_the_best_disease_recall_epoch(monkeypatch):
    """A scripted history: epoch 2 is best (tied with 4); its weights are the ones kept."""
    splits = make_splits()
    config = TrainingConfig(epochs=4, batch_size=16, seed=3)
    scripted = iter([0.2, 0.7, 0.5, 0.7])
    real = training.epoch_metrics

    def fake(*args, **kwargs):
        out = real(*args, **kwargs)
        out["disease_recall"] = next(scripted)
        return out

    monkeypatch.setattr(training, "epoch_metrics", fake)
    model = cnn()
    report = train(model, splits, config, progress=False)
    assert report.best_epoch == 2
    assert [h["disease_recall"] for h in report.history] == [0.2, 0.7, 0.5, 0.7]
    monkeypatch.setattr(training, "epoch_metrics", real)
    # the same recipe stopped after 2 epochs gives exactly the kept weights
    two = cnn()
    train(two, splits, TrainingConfig(epochs=2, batch_size=16, seed=3, selection="last"),
          progress=False)
    for a, b in zip(_weights(model), _weights(two), strict=True):
        np.testing.assert_array_equal(a, b)
    # and they differ from the last epoch's
    last = cnn()
    train(last, splits, config.__class__(epochs=4, batch_size=16, seed=3, selection="last"),
          progress=False)
    assert any(not np.array_equal(a, b) for a, b in zip(_weights(model), _weights(last), strict=True))


def test_report_contents_and_json(tmp_path):
    splits = make_splits()
    report = train(cnn(), splits, TrainingConfig(epochs=2, batch_size=16), progress=True)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["selection"] == "disease_recall" and d["mode"] == "images"
    assert 1 <= d["best_epoch"] <= 2 and d["from_cache"] is False
    assert d["positive_classes"] == list(DISEASES)
    assert d["config"]["epochs"] == 2
    for row in d["history"]:
        assert {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_recall",
                "disease_recall", "macro_recall"} <= set(row)
        assert set(row["val_recall"]) == set(CLASSES)
        assert np.isfinite(row["loss"]) and 0 <= row["val_accuracy"] <= 1
    assert d["seconds"] > 0 and d["features_seconds"] == 0


def test_same_seed_same_weights_different_seed_different():
    splits = make_splits()
    cfg = TrainingConfig(epochs=2, batch_size=16, seed=11)
    a, b, c = cnn(), cnn(), cnn()
    a.keras  # noqa: B018 - built (and initialised) long before training: still the same
    keras.utils.set_random_seed(999)
    train(a, splits, cfg, progress=False)
    train(b, splits, cfg, progress=False)
    train(c, splits, TrainingConfig(epochs=2, batch_size=16, seed=12), progress=False)
    for x, y in zip(_weights(a), _weights(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(_weights(a), _weights(c), strict=True))


def test_frozen_backbone_features_computed_once_and_cached(tmp_path, extraction_calls):
    splits = make_splits(n_train=24, n_val=8, n_test=8)
    calls = extraction_calls
    cache = Cache(tmp_path / "cache")
    model = vgg()
    backbone_before = [np.asarray(w) for w in model.feature_extractor.weights]
    cfg = TrainingConfig(epochs=3, batch_size=8)
    report = train(model, splits, cfg, cache=cache, key="vgg-a", progress=False)
    # once per split, not once per epoch
    assert sorted(calls) == sorted([24, 8, 8])
    assert report.mode == "features" and report.features_seconds > 0
    assert len(list((tmp_path / "cache" / "features").glob("*.npz"))) == 3
    # the backbone stayed frozen
    for a, b in zip(backbone_before, model.feature_extractor.weights, strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    # test probabilities from the cached features equal the full model's
    np.testing.assert_allclose(
        report.test_probabilities, model.predict_proba(splits.test.images), atol=1e-5
    )

    # another training config on the same backbone and data: features come from disk
    calls.clear()
    other = train(model, splits, TrainingConfig(epochs=2, batch_size=8), cache=cache,
                  key="vgg-b", progress=False)
    assert calls == [] and other.from_cache is False

    # same key again, fresh model object with the same backbone weights: the trained model
    # is loaded, nothing recomputed
    calls.clear()
    again = vgg()
    again.keras.set_weights(model.keras.get_weights())
    again.head.set_weights([np.zeros_like(w) for w in again.head.get_weights()])
    hit = train(again, splits, TrainingConfig(epochs=2, batch_size=8), cache=cache,
                key="vgg-b", progress=False)
    assert calls == [] and hit.from_cache is True
    assert hit.history == other.history and hit.best_epoch == other.best_epoch
    np.testing.assert_allclose(
        again.predict_proba(splits.test.images), model.predict_proba(splits.test.images), atol=1e-6
    )
    assert (tmp_path / "cache" / "models" / "vgg-b.keras").exists()
    assert (tmp_path / "cache" / "models" / "vgg-b.json").exists()
    # the stored file is a standalone model loadable in safe mode
    from bench.models import KerasModel

    standalone = KerasModel.from_file(tmp_path / "cache" / "models" / "vgg-b.keras")
    np.testing.assert_allclose(
        standalone.predict_proba(splits.test.images), model.predict_proba(splits.test.images),
        atol=1e-5,
    )


def test_cache_hit_with_changed_inputs_retrains(tmp_path):
    splits = make_splits()
    cache = Cache(tmp_path)
    first = train(cnn(), splits, TrainingConfig(epochs=1, batch_size=16), cache=cache, key="k",
                  progress=False)
    again = train(cnn(), splits, TrainingConfig(epochs=1, batch_size=16), cache=cache, key="k",
                  progress=False)
    assert again.from_cache is True and again.fingerprint == first.fingerprint
    changed = train(cnn(), splits, TrainingConfig(epochs=2, batch_size=16), cache=cache,
                    key="k", progress=False)
    assert changed.from_cache is False and len(changed.history) == 2


def test_training_errors_name_the_problem():
    splits = make_splits()
    empty_val = DatasetSplits(
        name="no-val", class_names=CLASSES, train=splits.train, val=splits.val.subset(np.arange(0)),
        test=splits.test, fingerprint="x", metadata={"positive_classes": list(DISEASES)},
    )
    with pytest.raises(TrainingError, match="'no-val' has an empty val split"):
        train(cnn(), empty_val, TrainingConfig(epochs=1), progress=False)
    wrong = bench.create("model", "simple-cnn", input_shape=(32, 32, 3), num_classes=3)
    with pytest.raises(TrainingError, match="3 classes"):
        train(wrong, splits, TrainingConfig(epochs=1), progress=False)
