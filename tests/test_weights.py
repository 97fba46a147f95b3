"""Weights logic with local files made in the test: never the network, never a deleted file."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import bench
from bench.errors import WeightsError

keras = pytest.importorskip("keras")

SMALL = {"input_shape": (32, 32, 3), "num_classes": 3, "pool_size": 1}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


@pytest.fixture(scope="module")
def notop_file(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A VGG16 notop weights file in the Keras applications (legacy HDF5) layout."""
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    keras.utils.set_random_seed(123)
    backbone = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path_factory.mktemp("weights") / "my_vgg16_notop.h5"
    with h5py.File(path, "w") as f:
        save_weights_to_hdf5_group(f, backbone)
    return path, np.asarray(backbone.get_layer("block1_conv1").kernel)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach the network fails the test."""
    import socket

    from bench_keras_models import weights as w

    def boom(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", boom)
    monkeypatch.setattr(w, "_download", boom)
    return w


def _kernel(model) -> np.ndarray:
    return np.asarray(model.keras.get_layer("block1_conv1").kernel)


def test_backbone_file_path_loads(notop_file, no_network):
    path, kernel = notop_file
    m = bench.create("model", "vgg16", weights=str(path), **SMALL)
    np.testing.assert_array_equal(_kernel(m), kernel)
    info = m.weights_info()
    assert info["source"] == "file" and info["kind"] == "backbone-notop"
    assert info["md5"] == _md5(path) and info["path"] == str(path.resolve())


def test_full_model_weights_path_loads(tmp_path, no_network):
    keras.utils.set_random_seed(7)
    a = bench.create("model", "vgg16", weights="none", **SMALL)
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    p = tmp_path / "trained.weights.h5"
    a.keras.save_weights(p)
    b = bench.create("model", "vgg16", weights=p, **SMALL)
    np.testing.assert_allclose(b.predict_proba(x), a.predict_proba(x), atol=1e-6)
    assert b.weights_info()["kind"] == "full-model"


def test_missing_or_unfit_path_names_the_file(tmp_path, notop_file):
    m = bench.create("model", "vgg16", weights=str(tmp_path / "nope.h5"), **SMALL)
    with pytest.raises(WeightsError, match="nope.h5.*does not exist"):
        m.keras  # noqa: B018
    # a file that is not a weights file
    bad = tmp_path / "corrupt.h5"
    bad.write_bytes(b"not an HDF5 file")
    m = bench.create("model", "vgg16", weights=str(bad), **SMALL)
    with pytest.raises(WeightsError, match="corrupt.h5"):
        m.keras  # noqa: B018
    # a VGG16 backbone file does not fit simple-cnn
    path, _ = notop_file
    m = bench.create("model", "simple-cnn", weights=str(path), input_shape=(32, 32, 3))
    with pytest.raises(WeightsError, match="my_vgg16_notop.h5"):
        m.keras  # noqa: B018


def _install(notop_file, keras_home: Path) -> Path:
    from bench_keras_models.weights import IMAGENET_NOTOP

    dest = keras_home / "models" / IMAGENET_NOTOP["vgg16"].fname
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(notop_file[0].read_bytes())
    return dest


def test_cached_imagenet_file_with_right_md5_loads_offline(
    notop_file, tmp_path, monkeypatch, no_network
):
    w = no_network
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    dest = _install(notop_file, tmp_path / "kh")
    real = w.IMAGENET_NOTOP["vgg16"]
    monkeypatch.setitem(
        w.IMAGENET_NOTOP, "vgg16", w.WeightsFile(real.fname, _md5(dest), real.origin)
    )
    m = bench.create("model", "vgg16", weights="imagenet", **SMALL)
    np.testing.assert_array_equal(_kernel(m), notop_file[1])
    info = m.weights_info()
    assert info == {
        "weights": "imagenet", "source": "imagenet", "kind": "backbone-notop", "path": str(dest),
        "md5": _md5(dest), "expected_md5": _md5(dest),
    }


def test_wrong_md5_gives_clear_error_and_keeps_the_file(
    notop_file, tmp_path, monkeypatch, no_network
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    dest = _install(notop_file, tmp_path / "kh")
    before = dest.read_bytes()
    m = bench.create("model", "vgg16", weights="imagenet", **SMALL)
    with pytest.raises(WeightsError) as info:
        m.keras  # noqa: B018
    msg = str(info.value)
    assert str(dest) in msg and _md5(dest) in msg
    assert "6d6bbae143d832006294945121d1f1fc" in msg  # the expected MD5
    assert "--weights PATH" in msg and "--weights none" in msg
    assert dest.exists() and dest.read_bytes() == before


@pytest.mark.parametrize("how", ["offline-env", "unreachable"])
def test_missing_file_offline_fails_fast_with_instructions(tmp_path, monkeypatch, how):
    from bench_keras_models import weights as w

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.setattr(w, "fallback_home", lambda: tmp_path / "fallback")
    if how == "offline-env":
        monkeypatch.setenv(w.OFFLINE_ENV, "1")
        monkeypatch.setattr(w, "host_reachable", lambda *a, **k: pytest.fail("probed"))
    else:
        monkeypatch.delenv(w.OFFLINE_ENV, raising=False)
        monkeypatch.setattr(w, "host_reachable", lambda *a, **k: False)
    monkeypatch.setattr(w, "_download", lambda *a, **k: pytest.fail("download attempted"))
    m = bench.create("model", "densenet201", weights="imagenet", **SMALL)
    t0 = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        m.keras  # noqa: B018
    assert time.perf_counter() - t0 < 60  # (graph building included) no network hang
    msg = str(info.value)
    assert "densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5" in msg
    assert "c13680b51ded0fb44dff2d8f86ac8bb1" in msg
    assert str(tmp_path / "kh" / "models") in msg
    assert "--weights PATH" in msg and "--weights none" in msg
    assert not (tmp_path / "kh" / "models").exists() or not any((tmp_path / "kh" / "models").iterdir())


def test_reachability_probe_is_bounded(monkeypatch):
    """An unresolvable host answers False within the probe timeout, never hangs."""
    import socket

    from bench_keras_models import weights as w

    def slow(*args, **kwargs):
        time.sleep(10)
        raise OSError("unreachable")

    monkeypatch.setattr(socket, "create_connection", slow)
    t0 = time.perf_counter()
    assert w.host_reachable("https://storage.googleapis.com/x", timeout=0.2) is False
    assert time.perf_counter() - t0 < 2


def test_fallback_cache_dir_is_searched(notop_file, tmp_path, monkeypatch, no_network):
    w = no_network
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_home"))
    monkeypatch.setattr(w, "fallback_home", lambda: tmp_path / "tmp_keras")
    dest = _install(notop_file, tmp_path / "tmp_keras")
    real = w.IMAGENET_NOTOP["vgg16"]
    monkeypatch.setitem(
        w.IMAGENET_NOTOP, "vgg16", w.WeightsFile(real.fname, _md5(dest), real.origin)
    )
    path, md5 = w.resolve_imagenet("vgg16")
    assert path == dest and md5 == _md5(dest)
