"""Grad-CAM (Selvaraju et al., arXiv 1610.02391), batched.

``L^c = ReLU(sum_k a_k^c A^k)``, ``a_k^c = mean_ij d y^c / d A^k_ij``, with
``A`` the feature map of the model's ``feature_layer`` (9x9 at 299 px for the
study's VGG16 / DenseNet201 models) and ``y^c`` the pre-softmax logit of the
target class. One ``GradientTape`` per batch inside one ``tf.function`` (a
fixed signature with a free batch dimension: traced once per model and image
size), no per-image loop. Returns the feature-map-sized map (N, h, w) float32;
the harness maps it onto the region grid.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np


class GradCAM:
    """Grad-CAM explainer.

    Parameters
    ----------
    layer:
        Name of the feature layer; ``None`` (default) uses ``model.feature_layer``.
        Another name must be a top-level layer of ``model.keras`` with a 4-D output.
    relu:
        Apply the ReLU of the definition (default). ``False`` returns the signed
        weighted sum (negative evidence included).
    """

    def __init__(self, *, layer: str | None = None, relu: bool = True):
        self.layer = layer
        self.relu = relu

    def get_params(self) -> dict[str, Any]:
        return {"layer": self.layer, "relu": self.relu}

    # -- internals ---------------------------------------------------------------------------
    def _source(self, model: Any) -> Any:
        """The bench model whose ``features_and_logits`` gives the wanted layer.

        A layer name that is a nested sub-model (a backbone called as one layer)
        means that sub-model's output: its last inner layer, taken as
        ``"sub/inner"`` so features and logits come from one differentiable graph.
        """
        import keras

        from bench.models import KerasModel

        layer = self.layer or model.feature_layer
        top = None
        if "/" not in layer:
            try:
                top = model.keras.get_layer(layer)
            except ValueError:
                top = None
        if isinstance(top, keras.Model) and top.layers:
            layer = f"{top.name}/{top.layers[-1].name}"
        elif self.layer is None or self.layer == model.feature_layer:
            return model
        return KerasModel(model.keras, feature_layer=layer, name=getattr(model, "name", None))

    def _function(self, model: Any, image_shape: tuple[int, ...]) -> Any:
        import tensorflow as tf

        cache: OrderedDict[tuple[Any, ...], tuple[Any, Any]] = self.__dict__.setdefault(
            "_fn_cache", OrderedDict()
        )
        # keyed by the Keras model (not the wrapper), so plain keras.Models wrapped
        # afresh on every call still trace once
        keras_model = model.keras
        key = (id(keras_model), str(self.layer or model.feature_layer), tuple(image_shape))
        hit = cache.get(key)
        if hit is not None and hit[0] is keras_model:
            cache.move_to_end(key)
            return hit[1]
        source = self._source(model)
        relu = bool(self.relu)

        def cam(x: Any, t: Any) -> Any:
            with tf.GradientTape() as tape:
                features, logits = source.features_and_logits(x)
                y = tf.gather(logits, t, axis=1, batch_dims=1)
            grads = tape.gradient(y, features)
            if grads is None:
                raise ValueError(
                    f"Grad-CAM: the logits of model {getattr(model, 'name', '?')!r} do not depend on "
                    f"feature layer {self.layer or model.feature_layer!r}"
                )
            weights = tf.reduce_mean(grads, axis=(1, 2))  # (B, C)
            maps = tf.einsum("bhwc,bc->bhw", features, weights)
            return tf.nn.relu(maps) if relu else maps

        spec = [
            tf.TensorSpec((None, *image_shape), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        ]
        fn = tf.function(cam, input_signature=spec)
        cache[key] = (keras_model, fn)
        while len(cache) > 4:
            cache.popitem(last=False)
        return fn

    # -- the contract --------------------------------------------------------------------------
    def explain(self, model: Any, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """float32 (N, h, w) Grad-CAM maps of ``targets`` for float32 [0, 1] ``images`` (N, H, W, 3)."""
        import tensorflow as tf

        from bench.models import as_bench_model

        bm = as_bench_model(model)
        x = np.asarray(images, dtype=np.float32)
        t = np.asarray(targets).astype(np.int32).reshape(-1)
        if x.ndim != 4 or len(t) != len(x):
            raise ValueError(
                f"Grad-CAM expects images (N, H, W, 3) and targets (N,), got {x.shape} and {t.shape}"
            )
        num_classes = int(bm.num_classes)
        if len(t) and (t.min() < 0 or t.max() >= num_classes):
            raise ValueError(f"Grad-CAM targets must be in [0, {num_classes}), got [{t.min()}, {t.max()}]")
        fn = self._function(bm, tuple(x.shape[1:]))
        out = fn(tf.constant(x), tf.constant(t))
        return np.asarray(out, dtype=np.float32)
