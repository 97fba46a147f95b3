"""weights="scratch": models trained here from a seeded start, said plainly; the demo's models.

Behaviour only (names, shapes, what is frozen, what is cached): never a trained model's score.
"""

from __future__ import annotations

import numpy as np
import pytest

import bench
from bench.config.loading import load_config
from bench.data import DatasetSplits, Split
from bench.pipeline.plan import make_plan, model_params
from bench.pipeline.store import Cache
from bench.training import TrainingConfig, train

keras = pytest.importorskip("keras")

SMALL = {"input_shape": (32, 32, 3), "num_classes": 4, "pool_size": 1}
CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")


def _split(n: int, seed: int) -> Split:
    """Class c: a bright quadrant c on dark noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    images = rng.integers(0, 60, (n, 32, 32), dtype=np.uint8)
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 2)
        images[i, r * 16 : (r + 1) * 16, q * 16 : (q + 1) * 16] += 150
    return Split(images=images, labels=labels, ids=np.array([f"s{seed}-{i}" for i in range(n)]))


def make_splits(n_train: int = 16, n_val: int = 8, n_test: int = 8) -> DatasetSplits:
    return DatasetSplits(
        name="quadrants", class_names=CLASSES, train=_split(n_train, 0), val=_split(n_val, 1),
        test=_split(n_test, 2), fingerprint=f"quadrants-{n_train}-{n_val}-{n_test}",
        metadata={"positive_classes": ["COVID", "Lung_Opacity", "Viral Pneumonia"]},
    )


def vgg(**kw):
    return bench.create("model", "vgg16", **{**SMALL, "weights": "scratch", **kw})


def _layer_weights(model, name: str) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.keras.get_layer(name).weights]


def test_scratch_says_so_and_adds_its_normalisations():
    m = vgg()
    info = m.weights_info()
    assert info["weights"] == "scratch" and info["source"] == "scratch"
    assert info["md5"] is None and info["path"] is None
    params = m.get_params()
    assert params["weights"] == "scratch" and params["head_norm"] is True and params["standardize"] is True
    names = [layer.name for layer in m.keras.layers]
    assert {"standardize", "head_image_norm", "head_norm"} <= set(names)
    assert m.frozen_backbone is True
    # only the head trains: the backbone stays at its seeded initialisation
    trainable = {w.path.split("/")[0] for w in m.keras.trainable_weights}
    assert trainable == {"head_norm", "head_dense", "logits"}
    # the trainer's split views equal the whole model
    x = np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(m.head(m.feature_extractor(x))), m.predict_proba(x), atol=1e-5)


def test_the_study_model_is_untouched_by_the_scratch_options():
    from bench_keras_models.transfer import DenseNet201Transfer, VGG16Transfer

    for cls in (VGG16Transfer, DenseNet201Transfer):
        params = cls().get_params()  # nothing built
        assert params["weights"] == "imagenet"
        assert params["head_norm"] is False and params["standardize"] is False
        assert params["feature_layer"] is None and params["train_from"] is None
    none = bench.create("model", "vgg16", weights="none", **SMALL)
    names = [layer.name for layer in none.keras.layers]
    assert "standardize" not in names and "head_norm" not in names
    assert none.feature_layer == "block5_pool"  # the backbone's output, as the study
    # the options can be set apart from the weights
    both = bench.create("model", "vgg16", weights="none", head_norm=True, standardize=True, **SMALL)
    assert {"standardize", "head_norm"} <= {layer.name for layer in both.keras.layers}


def test_the_scratch_backbone_is_the_same_in_every_build():
    def first_kernel():
        keras.utils.set_random_seed(np.random.SeedSequence().entropy % 2**31)  # disturb global state
        return _layer_weights(vgg(), "block1_conv1")[0]

    np.testing.assert_array_equal(first_kernel(), first_kernel())


def test_simple_cnn_scratch_is_the_seeded_start_under_its_name():
    def built(weights):
        keras.utils.set_random_seed(1)
        model = bench.create("model", "simple-cnn", weights=weights, input_shape=(32, 32, 3), num_classes=4)
        model.keras  # noqa: B018
        return model

    a, b = built("scratch"), built("none")
    assert a.weights_info()["weights"] == "scratch" and a.weights_info()["source"] == "scratch"
    assert b.weights_info()["weights"] == "none"
    assert [layer.name for layer in a.keras.layers] == [layer.name for layer in b.keras.layers]
    for x, y in zip(a.keras.get_weights(), b.keras.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)


def test_demo_models_are_scratch_offline_and_explain_at_least_4x4(monkeypatch):
    """The demo preset: every model says scratch, none looks for ImageNet weights, and the
    layer the Grad-CAM family explains is at least 4x4 at the demo's image size."""
    from bench_keras_models import transfer

    def no_imagenet(*args, **kwargs):
        raise AssertionError("the demo looked for ImageNet weights")

    monkeypatch.setattr(transfer, "resolve_imagenet", no_imagenet)
    cfg = load_config()
    assert cfg["preset"] == "demo"
    plan = make_plan(cfg)
    size = int(cfg["dataset"]["params"]["image_size"])
    assert set(plan.models) >= {"simple-cnn", "vgg16", "densenet201"}
    for name in plan.models:
        model = bench.create("model", name, **model_params(plan, name, (size, size), 4))
        assert model.weights_info()["weights"] == "scratch", name
        fmap = model.keras.get_layer(model.feature_layer).output
        assert min(int(d) for d in fmap.shape[1:3]) >= 4, (name, model.feature_layer, fmap.shape)


def test_train_from_trains_the_upper_block_on_cached_features(tmp_path, extraction_calls):
    splits = make_splits(n_train=16, n_val=8, n_test=8)
    calls = extraction_calls
    cache = Cache(tmp_path / "cache")
    model = vgg(train_from="block5_conv1")
    assert tuple(model.feature_extractor.output.shape[1:]) == (2, 2, 512)  # block4_pool at 32 px
    assert model.weights_info()["frozen"] == "below block5_conv1"
    frozen_before = _layer_weights(model, "block4_conv3")
    upper_before = _layer_weights(model, "block5_conv1")
    report = train(model, splits, TrainingConfig(epochs=2, batch_size=8), cache=cache, key="upper",
                   progress=False)
    assert report.mode == "features" and sorted(calls) == sorted([16, 8, 8])  # once per split
    for a, b in zip(frozen_before, _layer_weights(model, "block4_conv3"), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b)
               for a, b in zip(upper_before, _layer_weights(model, "block5_conv1"), strict=True))
    np.testing.assert_allclose(report.test_probabilities, model.predict_proba(splits.test.images),
                               atol=1e-5)
    # the whole-backbone-frozen model on the same backbone caches its own features (other key)
    calls.clear()
    train(vgg(), splits, TrainingConfig(epochs=1, batch_size=8), cache=cache, key="head-only",
          progress=False)
    assert sorted(calls) == sorted([16, 8, 8])
    assert len(list((tmp_path / "cache" / "features").glob("*.npz"))) == 6


def test_retraining_the_same_model_object_gives_the_same_weights():
    """The trainer resets batch normalisation too (the scratch head's), not just kernels."""
    splits = make_splits(n_train=16, n_val=8, n_test=8)
    cfg = TrainingConfig(epochs=2, batch_size=8, seed=5)
    model = vgg()
    train(model, splits, cfg, progress=False)
    first = [np.asarray(w) for w in model.head.get_weights()]
    train(model, splits, cfg, progress=False)
    for a, b in zip(first, model.head.get_weights(), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_cache_hit_sets_only_the_trained_part_when_the_frozen_part_is_the_same(tmp_path, monkeypatch):
    splits = make_splits(n_train=16, n_val=8, n_test=8)
    cache = Cache(tmp_path)
    cfg = TrainingConfig(epochs=2, batch_size=8)
    trained = vgg()
    train(trained, splits, cfg, cache=cache, key="k", progress=False)
    assert (tmp_path / "models" / "k-trained.npz").exists()
    expected = trained.predict_proba(splits.test.images)

    # the same seeded backbone rebuilt: the trained part's weights alone, no .keras load
    loads: list[str] = []
    real_load = keras.Model.load_weights

    def counting_load(self, *args, **kwargs):
        loads.append(str(args[0]))
        return real_load(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "load_weights", counting_load)
    fresh = vgg()
    hit = train(fresh, splits, cfg, cache=cache, key="k", progress=False)
    assert hit.from_cache is True and loads == []
    np.testing.assert_allclose(fresh.predict_proba(splits.test.images), expected, atol=1e-6)

    # a frozen part that differs: the whole stored model is loaded instead
    other = vgg()
    kernel = other.keras.get_layer("block1_conv1").kernel
    kernel.assign(np.asarray(kernel) + 0.5)
    hit = train(other, splits, cfg, cache=cache, key="k", progress=False)
    assert hit.from_cache is True and len(loads) == 1 and loads[0].endswith("k.keras")
    np.testing.assert_allclose(other.predict_proba(splits.test.images), expected, atol=1e-6)


def test_bad_scratch_options_fail_at_validate_naming_the_layer():
    with pytest.raises(bench.ConfigError, match="feature_layer 'block5_conv'.*did you mean 'block5_conv3'"):
        vgg(feature_layer="block5_conv").validate()
    with pytest.raises(bench.ConfigError, match="train_from 'block9'"):
        vgg(train_from="block9").validate()
    with pytest.raises(bench.ConfigError, match="head_norm"):
        vgg(head_norm="yes").validate()
    with pytest.raises(bench.ConfigError, match="standardize"):
        vgg(standardize=1).validate()
    # inside a dense block a connection bypasses the layer: it cannot split the graph
    dense = bench.create("model", "densenet201", **{**SMALL, "weights": "scratch"},
                         train_from="conv5_block2_1_bn")
    with pytest.raises(bench.ConfigError, match="train_from 'conv5_block2_1_bn' does not cut"):
        dense.keras  # noqa: B018
