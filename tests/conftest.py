"""Shared test setup: quiet TensorFlow, deterministic seeds, isolated Keras home."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
os.environ.setdefault("BENCH_OFFLINE", "1")  # no test may probe the network
os.environ.setdefault("BENCH_DIGEST_MEMO", "off")  # never write the user's ~/.cache from a test

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_keras_home(tmp_path_factory, monkeypatch):
    """Never touch (or download into) the user's ~/.keras from a test."""
    home = tmp_path_factory.getbasetemp() / "keras_home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("KERAS_HOME", str(home))
    yield


@pytest.fixture()
def extraction_calls(monkeypatch):
    """The sizes of the splits ``bench.training.extract_features`` ran the backbone on, in order."""
    from bench import training

    calls: list[int] = []
    real = training.extract_features

    def counting(extractor, split, **kw):
        calls.append(len(split))
        return real(extractor, split, **kw)

    monkeypatch.setattr(training, "extract_features", counting)
    return calls
