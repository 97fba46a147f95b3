"""Shared machinery of the explainers that work on a model's feature layer (the CAM family).

* :func:`feature_source`: the bench model whose ``features_and_logits`` yields the wanted
  layer (nested backbones included: a sub-model named as a whole means its output).
* :class:`FeatureMapExplainer`: input checks, and one ``tf.function`` per (Keras model,
  layer, image size, parameters): a fixed signature with free batch dimensions, so a
  model is traced once however many batches it explains.
* :class:`GradientCAM`: features ``A``, the pre-softmax class score ``y^c`` and
  ``dy^c/dA`` from one ``GradientTape`` per batch; a subclass only says how they
  combine into a map (:meth:`GradientCAM.combine`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

#: How many traced functions an explainer keeps (models x image sizes x functions).
TRACE_CACHE_SIZE = 8


def feature_source(model: Any, layer: str | None) -> Any:
    """The bench model whose ``features_and_logits`` gives ``layer`` (``None``: the model's own).

    A layer name that is a nested sub-model (a backbone called as one layer) means that
    sub-model's output: its last inner layer, taken as ``"sub/inner"`` so features and
    logits come from one differentiable graph.
    """
    import keras

    from bench.models import KerasModel

    name = layer or model.feature_layer
    top = None
    if "/" not in name:
        try:
            top = model.keras.get_layer(name)
        except ValueError:
            top = None
    if isinstance(top, keras.Model) and top.layers:
        name = f"{top.name}/{top.layers[-1].name}"
    elif layer is None or layer == model.feature_layer:
        return model
    return KerasModel(model.keras, feature_layer=name, name=getattr(model, "name", None))


class FeatureMapExplainer:
    """Base of the explainers over ``layer`` (default: the model's ``feature_layer``).

    Subclasses store their keyword parameters (``layer`` among them), implement
    ``get_params()`` and ``_explain(bm, x, t)`` (a bench model, float32 images, int32
    targets, both checked) returning (N, h, w) maps; they get their traced functions
    from :meth:`_traced`.
    """

    #: The method's name in error messages.
    label: ClassVar[str] = "feature-map explainer"
    layer: str | None = None

    def get_params(self) -> dict[str, Any]:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def _layer_name(self, model: Any) -> str:
        return str(self.layer or model.feature_layer)

    def _traced(
        self, model: Any, image_shape: tuple[int, ...], build: Callable[[Any], Any], tag: str = ""
    ) -> Any:
        """``build(source)`` (a ``tf.function``) for this model, layer, image size and parameters.

        Keyed by the Keras model (not the wrapper), so plain ``keras.Model``s wrapped afresh
        on every call still trace once; ``tag`` tells an explainer's functions apart.
        """
        cache: OrderedDict[tuple[Any, ...], tuple[Any, Any]] = self.__dict__.setdefault(
            "_fn_cache", OrderedDict()
        )
        keras_model = model.keras
        key = (
            id(keras_model),
            self._layer_name(model),
            tuple(image_shape),
            tag,
            repr(sorted(self.get_params().items())),
        )
        hit = cache.get(key)
        if hit is not None and hit[0] is keras_model:
            cache.move_to_end(key)
            return hit[1]
        fn = build(feature_source(model, self.layer))
        cache[key] = (keras_model, fn)
        while len(cache) > TRACE_CACHE_SIZE:
            cache.popitem(last=False)
        return fn

    @staticmethod
    def _image_signature(image_shape: tuple[int, ...]) -> list[Any]:
        """(images (None, *image_shape) float32, targets (None,) int32)."""
        import tensorflow as tf

        return [
            tf.TensorSpec((None, *image_shape), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        ]

    def _check(self, model: Any, images: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(images, dtype=np.float32)
        t = np.asarray(targets).astype(np.int32).reshape(-1)
        if x.ndim != 4 or len(t) != len(x):
            raise ValueError(
                f"{self.label} expects images (N, H, W, 3) and targets (N,), got {x.shape} and {t.shape}"
            )
        num_classes = int(model.num_classes)
        if len(t) and (t.min() < 0 or t.max() >= num_classes):
            raise ValueError(
                f"{self.label} targets must be in [0, {num_classes}), got [{t.min()}, {t.max()}]"
            )
        return x, t

    def _explain(self, model: Any, images: np.ndarray, targets: np.ndarray) -> Any:
        raise NotImplementedError

    # -- the contract --------------------------------------------------------------------------
    def explain(self, model: Any, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """float32 (N, h, w) maps of ``targets`` for float32 [0, 1] ``images`` (N, H, W, 3)."""
        from bench.models import as_bench_model

        bm = as_bench_model(model)
        x, t = self._check(bm, images, targets)
        return np.asarray(self._explain(bm, x, t), dtype=np.float32)


class GradientCAM(FeatureMapExplainer):
    """A CAM computed from ``A``, ``y^c`` and ``dy^c/dA`` (one tape per batch, traced once).

    Parameters
    ----------
    layer:
        Name of the feature layer; ``None`` (default) uses ``model.feature_layer``.
        Another name must be a top-level layer of ``model.keras`` with a 4-D output, a
        nested sub-model (its output) or ``"sub/inner"``.
    relu:
        Apply the final ReLU of the definition (default). ``False`` returns the signed
        map (negative evidence included).
    """

    def __init__(self, *, layer: str | None = None, relu: bool = True):
        self.layer = layer
        self.relu = relu

    def get_params(self) -> dict[str, Any]:
        return {"layer": self.layer, "relu": self.relu}

    def passes_per_map(self) -> float:
        """Forward-pass equivalents per map: one forward + backward pass of the model."""
        return 1.0

    def combine(self, features: Any, grads: Any, scores: Any) -> Any:
        """The signed map (B, h, w) from ``A`` (B, h, w, K), ``dy^c/dA`` and ``y^c`` (B,)."""
        raise NotImplementedError

    def _gradient_function(self, model: Any, image_shape: tuple[int, ...]) -> Any:
        import tensorflow as tf

        relu = bool(self.relu)
        label, layer = self.label, self._layer_name(model)
        model_name = getattr(model, "name", "?")

        def build(source: Any) -> Any:
            def cam(x: Any, t: Any) -> Any:
                with tf.GradientTape() as tape:
                    features, logits = source.features_and_logits(x)
                    y = tf.gather(logits, t, axis=1, batch_dims=1)
                grads = tape.gradient(y, features)
                if grads is None:
                    raise ValueError(
                        f"{label}: the logits of model {model_name!r} do not depend on "
                        f"feature layer {layer!r}"
                    )
                maps = self.combine(features, grads, y)
                return tf.nn.relu(maps) if relu else maps

            return tf.function(cam, input_signature=self._image_signature(image_shape))

        return self._traced(model, image_shape, build)

    def _explain(self, model: Any, images: np.ndarray, targets: np.ndarray) -> Any:
        import tensorflow as tf

        fn = self._gradient_function(model, tuple(images.shape[1:]))
        return fn(tf.constant(images), tf.constant(targets))
