"""VGG16 and DenseNet201 transfer models exactly as the reference study.

``input [0, 1] -> preprocess (inside the model) -> frozen backbone (include_top=False)
-> MaxPooling2D(4) -> Flatten -> Dense(64, relu) -> Dense(classes) logits -> Softmax``.

The backbone is built with ``input_tensor=`` the preprocessing output, so its
layers are inlined into one flat functional graph: the feature map (the
backbone's last layer, 9x9 at 299) and the logits come from one graph and
Grad-CAM's gradients work (no "graph disconnected").

``weights``:

* ``"imagenet"``: the Keras applications notop file, found in the Keras cache and
  checked by MD5 (see :mod:`bench_keras_models.weights`);
* ``"none"`` (or ``None``): a seeded random backbone, frozen, and the study's head exactly;
* ``"scratch"``: nothing pretrained, said plainly (the offline demo): the backbone keeps a
  seeded random initialisation, frozen below ``train_from`` (the whole backbone when
  ``train_from`` is None), and everything above it, head included, is trained from a seeded
  initialisation on the dataset. Random features are not normalised the way ImageNet
  features are, so the head normalises the flattened features first (``head_norm``: per
  image, a parameter-free ``LayerNormalization``, then per feature a
  ``BatchNormalization``), and the ImageNet input normalisation, meaningless without
  ImageNet weights, is preceded by a per-image standardisation (``standardize``: the
  exposure jitter of radiographs then does not swamp the random features; it is a
  per-image statistic, so the incremental MoRF engine cannot skip unchanged pixels
  behind it); both are on by default for scratch, off for the study;
* a path: ``*.weights.h5`` or ``*.keras`` = weights of the *whole* model (backbone
  and head, e.g. a trained model saved by bench); any other ``*.h5``/``*.hdf5`` =
  a notop *backbone* weights file in the Keras applications layout (loaded into
  the backbone; the head stays freshly initialised).

``feature_layer`` (None: the backbone's output, as the study) names the layer the
Grad-CAM family explains, e.g. ``block5_conv3`` for VGG16 (the last convolution, the
layer of the Grad-CAM paper: 4x4 at 64 px where the backbone's output is 2x2).

``train_from`` (None: the backbone is frozen whole, as the study) names the first backbone
layer that is trained: the trainer caches the features below it (``feature_extractor``)
and trains the layers from it upwards with the head (``head``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, ClassVar

import keras
import numpy as np

from bench.errors import ConfigError, WeightsError, did_you_mean
from bench.models import KerasModel, ModelError

from .weights import IMAGENET_NOTOP, md5_of, resolve_imagenet

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="bench_keras_models")
class CaffePreprocess(keras.layers.Layer):
    """VGG16's ``preprocess_input`` ("caffe") on [0, 1] RGB: *255, RGB->BGR, minus ImageNet means."""

    def call(self, inputs: Any) -> Any:
        x = keras.ops.cast(inputs, "float32") * 255.0
        x = keras.ops.flip(x, axis=-1)
        return x - keras.ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype="float32")

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


@keras.saving.register_keras_serializable(package="bench_keras_models")
class TorchPreprocess(keras.layers.Layer):
    """DenseNet's ``preprocess_input`` ("torch") on [0, 1] RGB: minus mean, / std."""

    def call(self, inputs: Any) -> Any:
        x = keras.ops.cast(inputs, "float32")
        mean = keras.ops.convert_to_tensor(_TORCH_MEAN, dtype="float32")
        std = keras.ops.convert_to_tensor(_TORCH_STD, dtype="float32")
        return (x - mean) / std

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


@keras.saving.register_keras_serializable(package="bench_keras_models")
class PerImageStandardization(keras.layers.Layer):
    """(x - mean(x)) / max(std(x), 1e-3) per image, over height, width and channels."""

    def call(self, inputs: Any) -> Any:
        x = keras.ops.cast(inputs, "float32")
        mean = keras.ops.mean(x, axis=(1, 2, 3), keepdims=True)
        std = keras.ops.std(x, axis=(1, 2, 3), keepdims=True)
        return (x - mean) / keras.ops.maximum(std, 1e-3)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


#: Seed of the backbone's initialisation when weights="none" or "scratch" (runs are reproducible).
RANDOM_BACKBONE_SEED = 0
#: The weights value of a model trained here from a seeded initialisation (nothing pretrained).
SCRATCH = "scratch"


def _parse_weights(weights: Any) -> str | Path | None:
    """"imagenet" | "scratch" | None (no weights) | a Path; raises ConfigError otherwise."""
    if weights is None:
        return None
    if isinstance(weights, Path):
        return weights
    if isinstance(weights, str):
        low = weights.strip().lower()
        if low in ("none", "random", ""):
            return None
        if low == "imagenet":
            return "imagenet"
        if low == SCRATCH:
            return SCRATCH
        return Path(os.path.expanduser(weights))
    raise ConfigError(f"weights must be 'imagenet', 'none', 'scratch' or a path, got {weights!r}")


def is_full_model_weights(path: Path) -> bool:
    return path.name.endswith(".weights.h5") or path.suffix == ".keras"


def weights_folder_message(path: Path, model_name: str, alternatives: str) -> str:
    """The error for ``--weights <a folder>``: a file is expected; the candidates inside it."""
    try:
        inside = sorted(
            p.name for p in path.iterdir()
            if p.is_file() and (p.suffix in (".h5", ".hdf5", ".keras"))
        )
    except OSError:
        inside = []
    listing = (
        f"; weights files in it: {', '.join(inside[:10])}{' ...' if len(inside) > 10 else ''}"
        if inside else "; it holds no .h5/.hdf5/.keras file"
    )
    return (
        f"weights {path} for model {model_name!r} is a folder, not a weights file: give the file "
        f"itself (*.weights.h5 or *.keras for the whole model, a notop *.h5 for the backbone)"
        f"{listing} ({alternatives})"
    )


def _check_file(path: Path, model_name: str) -> None:
    if path.is_dir():
        raise WeightsError(
            weights_folder_message(path, model_name, "or --weights imagenet, --weights none")
        )
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} for model {model_name!r} does not exist "
            "(give --weights PATH to an existing file, --weights imagenet or --weights none)"
        )


def _positive_int(value: Any, key: str, model_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"model {model_name!r}: {key} must be a positive integer, got {value!r}")
    return int(value)


def layer_names_file(cls: type) -> Path | None:
    """Where the layer names of ``cls``'s backbone are remembered for this Keras version
    (``$XDG_CACHE_HOME/bench/layer-names/``; None where ``$BENCH_DIGEST_MEMO`` is ``off``, the
    switch for bench's per-user files)."""
    if os.environ.get("BENCH_DIGEST_MEMO", "").strip().lower() in ("0", "off", "none", "false"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    name = f"{cls.backbone_name or cls.__name__}-keras-{keras.__version__}-{_backbone_code(cls)}.json"
    return Path(base) / "bench" / "layer-names" / name


def _backbone_code(cls: type) -> str:
    """A digest of the code that builds ``cls``'s backbone (an edited ``_backbone`` names new layers)."""
    import hashlib
    import inspect

    try:
        source = inspect.getsource(cls._backbone)
    except (OSError, TypeError):  # no source (a frozen build): the compiled code instead
        source = repr(cls._backbone.__code__.co_code)
    return hashlib.sha256(source.encode()).hexdigest()[:12]


@functools.cache
def _layer_names(cls: type) -> tuple[str, ...]:
    """The layer names of ``cls``'s backbone: built once per Keras version (32x32, random
    weights, then dropped: 3 s for DenseNet201, paid by plan validation of ``feature_layer`` /
    ``train_from``) and remembered on disk (:func:`layer_names_file`); an unreadable file is
    rebuilt."""
    import json

    path = layer_names_file(cls)
    if path is not None and path.is_file():
        try:
            names = json.loads(path.read_text())
            if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
                return tuple(names)
        except (OSError, ValueError):
            pass
    inputs = keras.Input(shape=(32, 32, 3))
    backbone = cls._backbone(cls.__new__(cls), inputs)
    # the input layer's name comes from Keras's global name counter (input_layer, input_layer_1...)
    names = tuple(layer.name for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer))
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(list(names)))
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only home: built again next time
    return names


class TransferModel(KerasModel):
    """Frozen Keras-applications backbone + the study's head. Subclasses set the backbone.

    ``feature_layer``, ``train_from`` and ``head_norm``: see the module doc (their defaults
    are the study's model exactly).
    """

    backbone_name: ClassVar[str] = ""
    frozen_backbone: bool = True

    def __init__(
        self,
        *,
        weights: str | Path | None = "imagenet",
        input_shape: tuple[int, int, int] = (299, 299, 3),
        num_classes: int = 4,
        dense_units: int = 64,
        pool_size: int = 4,
        feature_layer: str | None = None,
        train_from: str | None = None,
        head_norm: bool | None = None,
        standardize: bool | None = None,
    ):
        self.weights = weights
        self._input_shape = tuple(int(d) for d in input_shape)
        self._num_classes = int(num_classes)
        self.dense_units = dense_units
        self.pool_size = pool_size
        self.explained_layer = feature_layer
        self.train_from = train_from
        self.head_norm = head_norm
        self.standardize = standardize
        super().__init__(None, feature_layer=None, name=self.backbone_name)
        self._feature_extractor: Any = None
        self._head: Any = None
        self._weights_info: dict[str, Any] | None = None

    # ---- parameters ------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        w = self.weights
        return {
            "weights": str(w) if isinstance(w, Path) else w,
            "input_shape": list(self._input_shape),
            "num_classes": self._num_classes,
            "dense_units": self.dense_units,
            "pool_size": self.pool_size,
            "feature_layer": self.explained_layer,
            "train_from": self.train_from,
            "head_norm": self.resolved_head_norm(),
            "standardize": self.resolved_standardize(),
        }

    def _is_scratch(self) -> bool:
        try:
            return _parse_weights(self.weights) == SCRATCH
        except ConfigError:
            return False

    def resolved_head_norm(self) -> bool:
        """``head_norm`` resolved: None -> on for scratch weights, off otherwise."""
        return self._is_scratch() if self.head_norm is None else bool(self.head_norm)

    def resolved_standardize(self) -> bool:
        """``standardize`` resolved: None -> on for scratch weights, off otherwise."""
        return self._is_scratch() if self.standardize is None else bool(self.standardize)

    @property
    def feature_layer(self) -> str:
        if self._feature_layer is None:
            self.keras  # noqa: B018 - building sets it
        return self._feature_layer  # type: ignore[return-value]

    # ---- the graph -------------------------------------------------------------------
    def _preprocess_layer(self) -> keras.layers.Layer:
        raise NotImplementedError

    def _backbone(self, input_tensor: Any) -> keras.Model:
        raise NotImplementedError

    @classmethod
    def feature_size(cls, size: int) -> int:
        """The backbone's output side for an input side ``size`` (no graph is built)."""
        return size // 32

    @classmethod
    def backbone_layer_names(cls) -> tuple[str, ...]:
        """The backbone's layer names in graph order (a small backbone built once per process)."""
        return _layer_names(cls)

    def validate(self) -> None:
        """Check every parameter without building the model's Keras graph (the plan calls this).

        Raises ConfigError for a bad value, WeightsError for a weights path that is
        not a file; ImageNet weights are looked up only when the model is built.
        ``feature_layer`` and ``train_from`` are checked against the backbone's layer
        names (:meth:`backbone_layer_names`).
        """
        self._validate()
        weights = _parse_weights(self.weights)
        if isinstance(weights, Path):
            _check_file(weights, self.backbone_name)
        pool = _positive_int(self.pool_size, "pool_size", self.backbone_name)
        _positive_int(self.dense_units, "dense_units", self.backbone_name)
        for key, flag in (("head_norm", self.head_norm), ("standardize", self.standardize)):
            if flag is not None and not isinstance(flag, bool):
                raise ConfigError(
                    f"model {self.backbone_name!r}: {key} must be true, false or unset, "
                    f"got {flag!r}"
                )
        for key, value in (("feature_layer", self.explained_layer), ("train_from", self.train_from)):
            if value is None:
                continue
            names = self.backbone_layer_names()
            if not isinstance(value, str) or value not in names:
                raise ConfigError(
                    f"model {self.backbone_name!r}: {key} {value!r} is not a layer of the "
                    f"{self.backbone_name} backbone{did_you_mean(str(value), names)} "
                    f"(its last layers: {', '.join(names[-4:])})"
                )
        fh, fw = (self.feature_size(int(d)) for d in self._input_shape[:2])
        if min(fh, fw) < pool:
            raise ConfigError(
                f"model {self.backbone_name!r}: input_shape {self._input_shape} is too small for "
                f"pool_size={pool}: the backbone outputs {fh}x{fw} (VGG16 and DenseNet201 divide "
                f"the size by 32: use at least {32 * pool}x{32 * pool}, or pool_size <= "
                f"{max(min(fh, fw), 1)})"
            )

    def _validate(self) -> None:
        shape = self._input_shape
        if len(shape) != 3 or shape[-1] != 3:
            raise ConfigError(
                f"model {self.backbone_name!r}: input_shape must be (H, W, 3), got {shape}"
            )
        if min(shape[:2]) < 32:
            raise ConfigError(
                f"model {self.backbone_name!r}: input_shape {shape} too small (at least 32x32)"
            )
        if self._num_classes < 2:
            raise ConfigError(f"model {self.backbone_name!r}: num_classes must be >= 2")

    def _build_keras(self) -> keras.Model:
        self.validate()
        weights = _parse_weights(self.weights)
        # fail before building the graph
        imagenet = resolve_imagenet(self.backbone_name) if weights == "imagenet" else None
        if isinstance(weights, Path):
            _check_file(weights, self.backbone_name)
        inputs = keras.Input(shape=self._input_shape, name="image", dtype="float32")
        x = PerImageStandardization(name="standardize")(inputs) if self.resolved_standardize() else inputs
        x = self._preprocess_layer()(x)
        if weights is None or weights == SCRATCH:
            # a random backbone must be the same random backbone in every run: without a
            # seed, Keras draws it from whatever state the global generator is in
            keras.utils.set_random_seed(RANDOM_BACKBONE_SEED)
        backbone = self._backbone(x)
        backbone.trainable = False
        features = backbone.outputs[0]
        self._feature_layer = self.explained_layer or backbone.layers[-1].name
        explained = backbone.get_layer(self._feature_layer).output
        if len(explained.shape) != 4:
            raise ConfigError(
                f"model {self.backbone_name!r}: feature_layer {self._feature_layer!r} outputs "
                f"{tuple(explained.shape)}, not a 4-D feature map"
            )
        pool = keras.layers.MaxPooling2D(pool_size=self.pool_size, name="head_pool")
        norms = [
            # each image's feature vector to zero mean, unit variance (no parameters), then each
            # feature over the training set; momentum 0.9: the moving statistics settle within
            # an epoch of a small head's training
            keras.layers.LayerNormalization(center=False, scale=False, name="head_image_norm"),
            keras.layers.BatchNormalization(momentum=0.9, name="head_norm"),
        ] if self.resolved_head_norm() else []
        flatten = keras.layers.Flatten(name="head_flatten")
        dense = keras.layers.Dense(self.dense_units, activation="relu", name="head_dense")
        logits = keras.layers.Dense(self._num_classes, name="logits")
        softmax = keras.layers.Softmax(name="probabilities")
        fh, fw = (int(d) for d in features.shape[1:3])
        if min(fh, fw) < self.pool_size:
            raise ConfigError(
                f"model {self.backbone_name!r}: input_shape {self._input_shape} is too small: the "
                f"backbone outputs {fh}x{fw}, smaller than pool_size={self.pool_size} (VGG16 and "
                f"DenseNet201 divide the size by 32: use at least {32 * self.pool_size}x"
                f"{32 * self.pool_size})"
            )

        def head_on(t: Any) -> Any:
            t = flatten(t)
            for norm in norms:
                t = norm(t)
            return softmax(logits(dense(t)))

        pooled = pool(features)
        probs = head_on(pooled)
        model = keras.Model(inputs, probs, name=self.backbone_name)
        # trainer views, sharing layers (and so weights) with the model
        if self.train_from is None:
            self._feature_extractor = keras.Model(
                inputs, pooled, name=f"{self.backbone_name}_features"
            )
            head_in = keras.Input(shape=tuple(pooled.shape[1:]), name="pooled_features")
            self._head = keras.Model(head_in, head_on(head_in), name=f"{self.backbone_name}_head")
        else:
            self._split_at(backbone, inputs, probs)
        self._load_weights(weights, backbone, model, imagenet)
        return model

    def _split_at(self, backbone: Any, inputs: Any, probs: Any) -> None:
        """feature_extractor = images -> the input of ``train_from``; head = the rest, trainable."""
        cut = backbone.get_layer(self.train_from).input
        if isinstance(cut, list | tuple):
            raise ConfigError(
                f"model {self.backbone_name!r}: train_from {self.train_from!r} takes "
                f"{len(cut)} inputs; choose a layer with one input (the start of a block)"
            )
        try:
            head = keras.Model(cut, probs, name=f"{self.backbone_name}_head")
        except Exception as exc:  # noqa: BLE001 - re-raised with the layer named
            raise ConfigError(
                f"model {self.backbone_name!r}: train_from {self.train_from!r} does not cut the "
                f"graph in two (a connection bypasses it: {exc}); choose the first layer of a "
                "block, e.g. block5_conv1 (VGG16) or pool4_bn (DenseNet201)"
            ) from exc
        for layer in head.layers:
            layer.trainable = True
        self._feature_extractor = keras.Model(inputs, cut, name=f"{self.backbone_name}_features")
        self._head = head

    def _load_weights(
        self, weights: str | Path | None, backbone: Any, model: Any,
        imagenet: tuple[Path, str] | None,
    ) -> None:
        info: dict[str, Any] = {"source": "none", "kind": None, "path": None, "md5": None}
        if weights == SCRATCH:
            info = {
                "source": SCRATCH,
                "kind": "seeded-random-init",
                "path": None,
                "md5": None,
                "seed": RANDOM_BACKBONE_SEED,
                "frozen": f"below {self.train_from}" if self.train_from else "whole backbone",
            }
        elif weights == "imagenet" and imagenet is not None:
            path, md5 = imagenet
            try:
                backbone.load_weights(str(path))
            except Exception as exc:  # noqa: BLE001
                raise WeightsError(f"cannot load ImageNet weights {path}: {exc}") from exc
            info = {
                "source": "imagenet",
                "kind": "backbone-notop",
                "path": str(path),
                "md5": md5,
                "expected_md5": IMAGENET_NOTOP[self.backbone_name].md5,
            }
        elif isinstance(weights, Path):
            _check_file(weights, self.backbone_name)
            full = is_full_model_weights(weights)
            target = model if full else backbone
            try:
                target.load_weights(str(weights))
            except Exception as exc:  # noqa: BLE001
                what = "full-model" if full else "notop backbone"
                raise WeightsError(
                    f"cannot load {what} weights file {weights} into model "
                    f"{self.backbone_name!r} (input {self._input_shape}, "
                    f"{self._num_classes} classes): {exc}"
                ) from exc
            info = {
                "source": "file",
                "kind": "full-model" if full else "backbone-notop",
                "path": str(weights.resolve()),
                "md5": md5_of(weights),
            }
        self._weights_info = info

    # ---- trainer interface -----------------------------------------------------------
    @property
    def feature_extractor(self) -> keras.Model:
        """images [0, 1] -> pooled backbone features (after MaxPooling2D(pool_size))."""
        self.keras  # noqa: B018
        return self._feature_extractor

    @property
    def head(self) -> keras.Model:
        """pooled features -> probabilities; shares its layers with :attr:`keras`."""
        self.keras  # noqa: B018
        return self._head

    def weights_info(self) -> dict[str, Any]:
        """Which weights were loaded (manifest, leaderboard).

        ``weights``: the parameter as given ("imagenet", "none" or the path); ``source``:
        imagenet | file | none; ``kind``: backbone-notop | full-model | None; ``path``,
        ``md5`` of the file loaded (and ``expected_md5`` for ImageNet).
        """
        self.keras  # noqa: B018
        w = self.weights
        return {"weights": "none" if w is None else str(w), **(self._weights_info or {})}


class VGG16Transfer(TransferModel):
    """VGG16 (caffe preprocessing inside) + MaxPool(4) -> Flatten -> Dense(64) -> Dense(classes)."""

    backbone_name: ClassVar[str] = "vgg16"

    def _preprocess_layer(self) -> keras.layers.Layer:
        return CaffePreprocess(name="preprocess")

    def _backbone(self, input_tensor: Any) -> keras.Model:
        return keras.applications.VGG16(include_top=False, weights=None, input_tensor=input_tensor)


class DenseNet201Transfer(TransferModel):
    """DenseNet201 (torch preprocessing inside) + MaxPool(4) -> Flatten -> Dense(64) -> Dense(classes)."""

    backbone_name: ClassVar[str] = "densenet201"

    @classmethod
    def feature_size(cls, size: int) -> int:
        # conv 7x7/2 (padded 3) and max-pool 3x3/2 (padded 1) round up; 3 transitions halve
        after_stem = -(-size // 2)
        after_pool = -(-after_stem // 2)
        return after_pool // 8

    def _preprocess_layer(self) -> keras.layers.Layer:
        return TorchPreprocess(name="preprocess")

    def _backbone(self, input_tensor: Any) -> keras.Model:
        return keras.applications.DenseNet201(
            include_top=False, weights=None, input_tensor=input_tensor
        )


__all__ = [
    "SCRATCH",
    "CaffePreprocess",
    "DenseNet201Transfer",
    "ModelError",
    "PerImageStandardization",
    "TorchPreprocess",
    "TransferModel",
    "VGG16Transfer",
]
