"""Shared machinery of the explainers that work on a model's feature layer (the CAM family).

* :func:`feature_source`: the bench model whose ``features_and_logits`` yields the wanted
  layer (nested backbones included: a sub-model named as a whole means its output).
* :class:`FeatureMapExplainer`: input checks, and one ``tf.function`` per (Keras model,
  layer, image size, parameters) from the shared trace memo (:mod:`bench.engine.tracing`):
  a fixed signature with free batch dimensions, so a model is traced once however many
  batches (and explainer instances) explain it.
* :class:`GradientCAM`: features ``A``, the pre-softmax class score ``y^c`` and
  ``dy^c/dA`` from one ``GradientTape`` per batch; a subclass only says how they
  combine into a map (:meth:`GradientCAM.combine`).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from bench.engine.tracing import graph_function, traced

#: How many traced functions an explainer lists as used (models x image sizes x functions).
TRACE_CACHE_SIZE = 8

#: the name of the CAM functions in the shared trace memo (:mod:`bench.engine.tracing`)
TRACE_NAME = "bench_gradcam.featuremap"


class SourceRef:
    """Stands for the bench model a traced CAM function reads, held weakly.

    A traced function must not hold its model strongly (the shared trace memo would keep
    it alive for ever), yet its Python body runs again whenever TensorFlow traces it (the
    first call; every call under ``tf.config.run_functions_eagerly``). The explainer points
    the reference at the bench model of the call in progress before each call
    (:meth:`point_to`), and attribute access goes to that model: ``source.features_and_logits``.
    """

    __slots__ = ("_ref", "label")

    def __init__(self, *, label: str = "feature-map explainer"):
        self._ref: Any = None
        self.label = label

    def point_to(self, source: Any) -> None:
        self._ref = weakref.ref(source)

    def get(self) -> Any:
        source = None if self._ref is None else self._ref()
        if source is None:
            raise RuntimeError(
                f"{self.label}: the traced function ran outside an explain() call (its model is gone)"
            )
        return source

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


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

        One trace per (Keras model, class, layer, image size, ``tag``, parameters), shared by
        every instance with the same parameters and by every wrapper of the same ``keras.Model``
        (:func:`bench.engine.tracing.traced`); ``tag`` tells an explainer's functions apart.
        ``source`` is a :class:`SourceRef`: it stands for the bench model of the call in progress
        (:func:`feature_source`), held weakly, so the memo never keeps a model alive; the
        instance keeps that source alive until its :meth:`explain` call returns.
        """
        keras_model = model.keras
        layer = self._layer_name(model)
        key = (TRACE_NAME, type(self), layer, tuple(int(d) for d in image_shape), tag,
               repr(sorted(self.get_params().items())))

        source = feature_source(model, self.layer)

        def make() -> tuple[Any, SourceRef]:
            ref = SourceRef(label=f"{self.label} on {getattr(model, 'name', '?')!r}")
            ref.point_to(source)
            return build(ref), ref

        fn, ref = traced(keras_model, key, make)
        ref.point_to(source)
        # the source lives (so the weak reference holds) until this thread's explain() returns
        in_use: dict[int, dict[Any, Any]] = self.__dict__.setdefault("_sources_in_use", {})
        in_use.setdefault(threading.get_ident(), {})[key] = source
        used: OrderedDict[tuple[Any, ...], tuple[Any, Any]] = self.__dict__.setdefault("_fn_cache", OrderedDict())
        used[key] = (weakref.ref(keras_model), fn)  # what this instance used (weakly in the model)
        used.move_to_end(key)
        while len(used) > TRACE_CACHE_SIZE:
            used.popitem(last=False)
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
        try:
            return np.asarray(self._explain(bm, x, t), dtype=np.float32)
        finally:
            self.__dict__.get("_sources_in_use", {}).pop(threading.get_ident(), None)


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

            return graph_function(cam, input_signature=self._image_signature(image_shape))

        return self._traced(model, image_shape, build)

    def _explain(self, model: Any, images: np.ndarray, targets: np.ndarray) -> Any:
        import tensorflow as tf

        fn = self._gradient_function(model, tuple(images.shape[1:]))
        return fn(tf.constant(images), tf.constant(targets))
