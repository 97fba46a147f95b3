"""A small CNN trained end to end, for fast demos and tests.

``input [0, 1] -> per-image standardisation -> [Conv3x3(f, relu) -> MaxPool(2)] x (n-1)
-> Conv3x3(f_last, relu) "features" -> GlobalMaxPooling -> Dense(classes) "logits" -> Softmax``.

Standardising each image (zero mean, unit variance) removes the exposure jitter of
radiographs, and global *max* pooling lets a channel fire on a small lesion anywhere
in the lungs: on synthetic-cxr at 64 px this learns in a few epochs where the plain
average-pooled CNN stays at chance (``standardize=False, pooling="avg"`` gives that one).
Grad-CAM uses ``features`` (input size / 2^(n-1)).

``weights``: ``"none"`` (the default) or ``"scratch"`` (the same seeded initialisation,
trained end to end here; the name says so in the results) or a path to a saved model.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

import keras

from bench.errors import ConfigError, WeightsError
from bench.models import KerasModel

from .transfer import SCRATCH, PerImageStandardization, weights_folder_message
from .weights import md5_of


def _check_weights_file(path: Path) -> None:
    if path.is_dir():
        raise WeightsError(weights_folder_message(path, "simple-cnn", "or --weights none"))
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} for model 'simple-cnn' does not exist "
            "(give --weights PATH to an existing file or --weights none)"
        )


class SimpleCNN(KerasModel):
    """A few conv blocks; every layer trainable."""

    frozen_backbone: bool = False

    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int] = (299, 299, 3),
        num_classes: int = 4,
        weights: str | Path | None = "none",
        filters: tuple[int, ...] = (16, 32, 64, 64),
        dropout: float = 0.0,
        standardize: bool = True,
        pooling: str = "max",
    ):
        self._input_shape = tuple(int(d) for d in input_shape)
        self._num_classes = int(num_classes)
        self.weights = weights
        self.filters = tuple(int(f) for f in filters)
        self.dropout = dropout
        self.standardize = standardize
        self.pooling = pooling
        super().__init__(None, feature_layer="features", name="simple-cnn")
        self._weights_info: dict[str, Any] | None = None

    def get_params(self) -> dict[str, Any]:
        w = self.weights
        return {
            "input_shape": list(self._input_shape),
            "num_classes": self._num_classes,
            "weights": str(w) if isinstance(w, Path) else w,
            "filters": list(self.filters),
            "dropout": self.dropout,
            "standardize": self.standardize,
            "pooling": self.pooling,
        }

    def _weights_path(self) -> Path | None:
        w = self.weights
        if w is None or (isinstance(w, str) and w.strip().lower() in ("none", "random", "", SCRATCH)):
            return None
        if isinstance(w, str) and w.strip().lower() == "imagenet":
            raise ConfigError(
                "model 'simple-cnn' has no ImageNet weights; use weights='none', 'scratch' or a path"
            )
        if not isinstance(w, str | Path):
            raise ConfigError(f"simple-cnn: weights must be 'none', 'scratch' or a path, got {w!r}")
        return Path(os.path.expanduser(str(w)))

    def validate(self) -> None:
        """Check every parameter without building the Keras graph (the plan calls this)."""
        shape = self._input_shape
        if len(shape) != 3 or shape[-1] != 3:
            raise ConfigError(f"model 'simple-cnn': input_shape must be (H, W, 3), got {shape}")
        if not self.filters:
            raise ConfigError("model 'simple-cnn': filters must not be empty")
        if any(f < 1 for f in self.filters):
            raise ConfigError(f"model 'simple-cnn': filters must be positive, got {list(self.filters)}")
        if self._num_classes < 2:
            raise ConfigError("model 'simple-cnn': num_classes must be >= 2")
        if self.pooling not in ("max", "avg"):
            raise ConfigError(f"model 'simple-cnn': pooling must be 'max' or 'avg', got {self.pooling!r}")
        d = self.dropout
        if isinstance(d, bool) or not isinstance(d, numbers.Real) or not 0 <= d < 1:
            raise ConfigError(f"model 'simple-cnn': dropout must be a number in [0, 1), got {d!r}")
        if not isinstance(self.standardize, bool):
            raise ConfigError(f"model 'simple-cnn': standardize must be true or false, got {self.standardize!r}")
        side = min(shape[:2]) // 2 ** (len(self.filters) - 1)
        if side < 1:
            raise ConfigError(
                f"model 'simple-cnn': input_shape {shape} is too small for {len(self.filters)} conv "
                f"blocks (each but the last halves the size): use fewer filters or larger images"
            )
        path = self._weights_path()
        if path is not None:
            _check_weights_file(path)

    def _build_keras(self) -> keras.Model:
        self.validate()
        shape = self._input_shape
        path = self._weights_path()
        inputs = keras.Input(shape=shape, name="image", dtype="float32")
        x = PerImageStandardization(name="standardize")(inputs) if self.standardize else inputs
        for i, f in enumerate(self.filters[:-1]):
            x = keras.layers.Conv2D(f, 3, padding="same", activation="relu", name=f"conv{i + 1}")(x)
            x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
        x = keras.layers.Conv2D(
            self.filters[-1], 3, padding="same", activation="relu", name="features"
        )(x)
        if self.pooling == "max":
            x = keras.layers.GlobalMaxPooling2D(name="gmp")(x)
        else:
            x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
        if self.dropout:
            x = keras.layers.Dropout(self.dropout, name="dropout")(x)
        x = keras.layers.Dense(self._num_classes, name="logits")(x)
        probs = keras.layers.Softmax(name="probabilities")(x)
        model = keras.Model(inputs, probs, name="simple_cnn")
        info: dict[str, Any] = {"source": "none", "kind": None, "path": None, "md5": None}
        if isinstance(self.weights, str) and self.weights.strip().lower() == SCRATCH:
            info = {"source": SCRATCH, "kind": "seeded-random-init", "path": None, "md5": None}
        if path is not None:
            _check_weights_file(path)
            try:
                model.load_weights(str(path))
            except Exception as exc:  # noqa: BLE001
                raise WeightsError(
                    f"cannot load weights file {path} into model 'simple-cnn' "
                    f"(input {shape}, {self._num_classes} classes, filters {self.filters}): {exc}"
                ) from exc
            info = {"source": "file", "kind": "full-model", "path": str(path.resolve()),
                    "md5": md5_of(path)}
        self._weights_info = info
        return model

    def weights_info(self) -> dict[str, Any]:
        """``weights`` (as given), ``source``, ``kind``, ``path`` and ``md5`` of the file loaded."""
        self.keras  # noqa: B018
        w = self.weights
        return {"weights": "none" if w is None else str(w), **(self._weights_info or {})}
