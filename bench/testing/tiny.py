"""Tiny, fast stand-ins for tests: a small softmax CNN and random images."""

from __future__ import annotations

from typing import Any

import numpy as np


def tiny_images(n: int = 4, size: int = 32, *, seed: int = 0) -> np.ndarray:
    """float32 (n, size, size, 3) images in [0, 1] (gray, channel replicated)."""
    rng = np.random.default_rng(seed)
    gray = rng.random((n, size, size, 1), dtype=np.float32)
    return np.repeat(gray, 3, axis=-1)


def tiny_model(size: int = 32, num_classes: int = 4, *, seed: int = 0) -> Any:
    """A bench model: Conv(8) -> Conv(16, name="features") -> GAP -> Dense(softmax)."""
    import keras

    from bench.models import KerasModel

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="features")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return KerasModel(keras.Model(inputs, outputs, name="tiny"), feature_layer="features")
