"""``KerasModel``: the model interface of bench around any Keras classifier.

Wraps a ``keras.Model`` whose output is class probabilities from a final
softmax (a ``Softmax`` layer, ``Activation("softmax")``, or a ``Dense`` with
softmax activation, whose pre-activation gives the logits). The built-in model
plugins return the same interface, so explainers and the AOPC engine accept
either.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import BenchError, did_you_mean


class ModelError(BenchError):
    """A model cannot be wrapped: no final softmax, unknown feature layer, ..."""


def _is_softmax_activation(layer: Any) -> bool:
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", None) == "softmax"


class KerasModel:
    """A bench model around a Keras classifier.

    Parameters
    ----------
    keras_model:
        A functional (or sequential) ``keras.Model`` mapping float32 [0, 1]
        images (N, H, W, 3) to class probabilities.
    feature_layer:
        Name of the layer whose output Grad-CAM-like explainers use (a 4-D
        feature map). ``None``: the last 4-D layer output before the head.
    name:
        A display name (default: the Keras model's name).
    """

    def __init__(self, keras_model: Any, *, feature_layer: str | None = None, name: str | None = None):
        self._keras = keras_model
        self._feature_layer = feature_layer
        self._name = name
        self._graph: Any = None
        self._logits_model: Any = None
        self._predict_fn: Any = None

    # ---- bench component -------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        return {"name": self.name, "feature_layer": self.feature_layer}

    @property
    def name(self) -> str:
        return self._name or self._keras.name

    @property
    def keras(self) -> Any:
        return self._keras

    @property
    def input_shape(self) -> tuple[int, int, int]:
        shape = self._keras.inputs[0].shape
        return tuple(int(d) for d in shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return int(self._keras.outputs[0].shape[-1])

    @property
    def feature_layer(self) -> str:
        if self._feature_layer is None:
            self._feature_layer = self._default_feature_layer()
        return self._feature_layer

    # ---- graph surgery ---------------------------------------------------------------
    def _default_feature_layer(self) -> str:
        candidate = None
        for layer in self._keras.layers:
            try:
                out = layer.output
            except (AttributeError, ValueError):
                continue
            if len(getattr(out, "shape", ())) == 4:
                candidate = layer.name
        if candidate is None:
            raise ModelError(f"model {self.name!r} has no 4-D feature map layer for feature_layer")
        return candidate

    def _feature_tensor(self) -> Any:
        names = [layer.name for layer in self._keras.layers]
        name = self.feature_layer
        if name not in names:
            raise ModelError(
                f"model {self.name!r} has no layer {name!r}{did_you_mean(name, names)}; "
                f"top-level layers: {', '.join(names)}"
            )
        out = self._keras.get_layer(name).output
        if len(out.shape) != 4:
            raise ModelError(
                f"feature_layer {name!r} of model {self.name!r} outputs shape {tuple(out.shape)}, "
                "expected a 4-D feature map (N, h, w, C)"
            )
        return out

    def _pre_softmax(self) -> tuple[Any, Any]:
        """(tensor feeding the final softmax, function mapping it to logits)."""
        last = self._keras.layers[-1]
        cls = type(last).__name__
        if cls == "Softmax" or (cls == "Activation" and _is_softmax_activation(last)):
            return last.input, lambda t: t
        if cls == "Dense" and _is_softmax_activation(last):
            def to_logits(t: Any) -> Any:
                import keras

                y = keras.ops.matmul(t, last.kernel)
                return y + last.bias if last.use_bias else y

            return last.input, to_logits
        raise ModelError(
            f"model {self.name!r} must end in a softmax (a Softmax layer, Activation('softmax') "
            f"or a Dense with softmax activation) so its logits can be recovered; its last layer "
            f"is {cls} {last.name!r}"
        )

    def _single_input(self) -> Any:
        inputs = self._keras.inputs
        if len(inputs) != 1:
            raise ModelError(f"model {self.name!r} must take one image input, it takes {len(inputs)}")
        return inputs[0]

    def _build(self) -> None:
        if self._graph is not None:
            return
        import keras

        pre, to_logits = self._pre_softmax()
        self._graph = keras.Model(self._single_input(), [self._feature_tensor(), pre])
        self._to_logits = to_logits

    # ---- calls -----------------------------------------------------------------------
    def features_and_logits(self, images: Any, training: bool = False) -> tuple[Any, Any]:
        """(feature map, logits) for a batch, from one differentiable graph."""
        self._build()
        features, pre = self._graph(images, training=training)
        return features, self._to_logits(pre)

    @property
    def logits_keras(self) -> Any:
        if self._logits_model is None:
            import keras

            pre, to_logits = self._pre_softmax()
            self._logits_model = keras.Model(self._single_input(), pre)
            self._logits_fn = to_logits
        return _LogitsView(self._logits_model, self._logits_fn)

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Class probabilities for float32 [0, 1] images or uint8 images, in batches."""
        import tensorflow as tf

        from .data import to_model_input

        if self._predict_fn is None:
            self._predict_fn = tf.function(lambda x: self._keras(x, training=False), reduce_retracing=True)
        out = []
        for start in range(0, len(images), batch_size):
            x = to_model_input(images[start : start + batch_size])
            out.append(np.asarray(self._predict_fn(tf.constant(x))))
        if not out:
            return np.zeros((0, self.num_classes), np.float32)
        return np.concatenate(out).astype(np.float32)


class _LogitsView:
    """Callable returning logits; ``keras`` is the underlying pre-softmax model."""

    def __init__(self, model: Any, fn: Any):
        self.keras = model
        self._fn = fn

    def __call__(self, images: Any, training: bool = False) -> Any:
        return self._fn(self.keras(images, training=training))


def as_bench_model(model: Any) -> Any:
    """A bench model for a bench model or a plain Keras classifier."""
    if hasattr(model, "features_and_logits") and hasattr(model, "keras"):
        return model
    try:
        import keras
    except ImportError as exc:  # pragma: no cover
        raise ModelError("keras is required") from exc
    if isinstance(model, keras.Model):
        return KerasModel(model)
    raise ModelError(
        f"expected a bench model or a keras.Model, got {type(model).__name__}"
    )
