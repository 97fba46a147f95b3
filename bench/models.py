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

from bench.engine.tracing import graph_function
from bench.errors import BenchError, did_you_mean


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

    #: True when the model has a frozen backbone with ``feature_extractor`` and
    #: ``head`` (the trainer then trains the head on cached features).
    frozen_backbone: bool = False

    def __init__(self, keras_model: Any, *, feature_layer: str | None = None, name: str | None = None):
        self._keras = keras_model
        self._feature_layer = feature_layer
        self._name = name
        self._graph: Any = None
        self._logits_model: Any = None
        self._predict_fn: Any = None

    @classmethod
    def from_file(
        cls, path: Any, *, feature_layer: str | None = None, name: str | None = None
    ) -> KerasModel:
        """A bench model from a saved ``.keras`` file, loaded with ``safe_mode=True``.

        Custom layers (the built-in preprocessing layers included) must be registered
        with ``keras.saving.register_keras_serializable``, i.e. their module imported.
        """
        from pathlib import Path

        import keras

        p = Path(path)
        if p.suffix != ".keras":
            raise ModelError(f"{p}: expected a '.keras' model file")
        if not p.is_file():
            raise ModelError(f"model file {p} does not exist")
        try:
            model = keras.saving.load_model(p, safe_mode=True, compile=False)
        except Exception as exc:  # noqa: BLE001 - re-raised with the file named
            raise ModelError(f"cannot load model file {p}: {exc}") from exc
        return cls(model, feature_layer=feature_layer, name=name)

    def _build_keras(self) -> Any:
        """Subclasses building their graph lazily override this."""
        raise ModelError(f"{type(self).__name__} has no Keras model")

    def save(self, path: Any) -> None:
        """Save the Keras model as a ``.keras`` file, atomically."""
        import os
        import tempfile
        from pathlib import Path

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.stem}.", suffix=".keras")
        os.close(fd)
        try:
            self.keras.save(tmp)
            os.replace(tmp, p)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    # ---- bench component -------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        return {"name": self.name, "feature_layer": self.feature_layer}

    @property
    def name(self) -> str:
        return self._name or self.keras.name

    @property
    def keras(self) -> Any:
        if self._keras is None:
            import tensorflow as tf

            # build eagerly even when first touched inside a tf.function trace
            # (weights loaded in a trace would be lost)
            with tf.init_scope():
                self._keras = self._build_keras()
        return self._keras

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Declared by a lazily built subclass (``self._input_shape``) or read off the graph."""
        declared = getattr(self, "_input_shape", None)
        if declared is not None:
            return tuple(declared)  # type: ignore[return-value]
        shape = self.keras.inputs[0].shape
        return tuple(int(d) for d in shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        declared = getattr(self, "_num_classes", None)
        if declared is not None:
            return int(declared)
        return int(self.keras.outputs[0].shape[-1])

    @property
    def feature_layer(self) -> str:
        if self._feature_layer is None:
            self._feature_layer = self._default_feature_layer()
        return self._feature_layer

    # ---- graph surgery ---------------------------------------------------------------
    def _default_feature_layer(self) -> str:
        candidate = None
        for layer in self.keras.layers:
            try:
                out = layer.output
            except (AttributeError, ValueError):
                continue
            if len(getattr(out, "shape", ())) == 4:
                candidate = layer.name
        if candidate is None:
            raise ModelError(f"model {self.name!r} has no 4-D feature map layer for feature_layer")
        return candidate

    def _locate_feature_layer(self) -> tuple[Any | None, str]:
        """(nested sub-model holding the feature layer or None, layer name).

        ``feature_layer`` is a top-level layer name, a layer inside a nested
        sub-model (``"vgg16/block5_pool"`` or just ``"block5_pool"`` when unique).
        """
        import keras

        model = self.keras
        name = self.feature_layer
        top = {layer.name: layer for layer in model.layers}
        if "/" in name:
            sub_name, _, inner = name.partition("/")
            sub = top.get(sub_name)
            if not isinstance(sub, keras.Model):
                raise ModelError(
                    f"feature_layer {name!r}: model {self.name!r} has no nested sub-model "
                    f"{sub_name!r}{did_you_mean(sub_name, top)}"
                )
            if "/" in inner:
                raise ModelError(
                    f"feature_layer {name!r}: only one level of nesting is supported; "
                    "flatten the model (build the backbone with input_tensor=...)"
                )
            inner_names = [layer.name for layer in sub.layers]
            if inner not in inner_names:
                raise ModelError(
                    f"feature_layer {name!r}: sub-model {sub_name!r} has no layer {inner!r}"
                    f"{did_you_mean(inner, inner_names)}"
                )
            return sub, inner
        if name in top:
            if isinstance(top[name], keras.Model):
                # a nested backbone named as a whole: its output is its last layer's
                return top[name], top[name].layers[-1].name
            return None, name
        holders = [
            layer
            for layer in model.layers
            if isinstance(layer, keras.Model) and name in [lyr.name for lyr in layer.layers]
        ]
        if len(holders) == 1:
            return holders[0], name
        if len(holders) > 1:
            options = ", ".join(f"'{h.name}/{name}'" for h in holders)
            raise ModelError(
                f"feature_layer {name!r} of model {self.name!r} is ambiguous; use one of {options}"
            )
        raise ModelError(
            f"model {self.name!r} has no layer {name!r}{did_you_mean(name, top)}; "
            f"top-level layers: {', '.join(top)}"
        )

    @staticmethod
    def _check_4d(tensor: Any, name: str, model_name: str) -> None:
        if len(tensor.shape) != 4:
            raise ModelError(
                f"feature_layer {name!r} of model {model_name!r} outputs shape "
                f"{tuple(tensor.shape)}, expected a 4-D feature map (N, h, w, C)"
            )

    def _feature_tensor(self) -> Any:
        sub, name = self._locate_feature_layer()
        if sub is not None:
            raise ModelError(
                f"feature_layer {name!r} lives in nested sub-model {sub.name!r}; "
                "use features_and_logits()"
            )
        out = self.keras.get_layer(name).output
        self._check_4d(out, name, self.name)
        return out

    def _nested_graph(self, sub: Any, name: str, pre_softmax: Any) -> Any:
        """Split the outer graph around the nested sub-model so gradients flow.

        Taking ``sub.get_layer(name).output`` into an outer model fails with
        "graph disconnected" (that tensor lives in the sub-model's own graph), so the
        call is run as outer-prefix -> sub-model (features, output) -> outer-suffix.
        """
        import keras

        model = self.keras
        nodes = [
            node
            for depth_nodes in model._nodes_by_depth.values()
            for node in depth_nodes
            if node.operation is sub
        ]
        if len(nodes) != 1:
            raise ModelError(
                f"nested sub-model {sub.name!r} of model {self.name!r} is called {len(nodes)} "
                "times; feature_layer inside it is only supported when it is called once"
            )
        node = nodes[0]
        if len(node.input_tensors) != 1 or len(node.output_tensors) != 1:
            raise ModelError(
                f"nested sub-model {sub.name!r} of model {self.name!r} must have one input and "
                "one output for feature_layer inside it"
            )
        inner_out = sub.get_layer(name).output
        self._check_4d(inner_out, f"{sub.name}/{name}", self.name)
        try:
            prefix = keras.Model(self._single_input(), node.input_tensors[0])
            inner = keras.Model(sub.inputs, [inner_out, sub.outputs[0]])
            suffix = keras.Model(node.output_tensors[0], pre_softmax)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise ModelError(
                f"cannot split model {self.name!r} around nested sub-model {sub.name!r} "
                f"(the head must depend only on the sub-model's output): {exc}. Build the "
                "backbone flat instead (keras.applications.X(input_tensor=...))"
            ) from exc
        return _NestedGraph(prefix, inner, suffix)

    def _pre_softmax(self) -> tuple[Any, Any]:
        """(tensor feeding the final softmax, function mapping it to logits)."""
        last = self.keras.layers[-1]
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
        inputs = self.keras.inputs
        if len(inputs) != 1:
            raise ModelError(f"model {self.name!r} must take one image input, it takes {len(inputs)}")
        return inputs[0]

    def _build(self) -> None:
        if self._graph is not None:
            return
        import keras

        pre, to_logits = self._pre_softmax()
        sub, name = self._locate_feature_layer()
        if sub is None:
            self._graph = keras.Model(self._single_input(), [self._feature_tensor(), pre])
        else:
            self._graph = self._nested_graph(sub, name, pre)
        self._to_logits = to_logits

    # ---- calls -----------------------------------------------------------------------
    def features_and_logits(self, images: Any, training: bool = False) -> tuple[Any, Any]:
        """(feature map, logits) for a batch, from one differentiable graph."""
        self._build()
        features, pre = self._graph(images, training=training)
        return features, self._to_logits(pre)

    def logits_from_features(self, features: Any, training: bool = False) -> Any:
        """Logits for a batch of (possibly modified) ``feature_layer`` outputs: the graph after it.

        Raises ModelError when the head does not depend on the feature map alone (a
        skip connection around the feature layer).
        """
        if getattr(self, "_head_graph", None) is None:
            self._head_graph = self._build_head()
        return self._to_logits(self._head_graph(features, training=training))

    def _build_head(self) -> Any:
        import keras

        self._build()
        sub, name = self._locate_feature_layer()
        try:
            if sub is None:
                return keras.Model(self._feature_tensor(), self._pre_softmax()[0])
            suffix = self._graph.suffix
            if name == sub.layers[-1].name:
                return suffix
            rest = keras.Model(sub.get_layer(name).output, sub.outputs[0])
            return lambda f, training=False: suffix(rest(f, training=training), training=training)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise ModelError(
                f"model {self.name!r}: the layers after feature_layer {self.feature_layer!r} do not "
                f"depend on its output alone, so the logits cannot be recomputed from a modified "
                f"feature map ({exc})"
            ) from exc

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

        from bench.data import to_model_input

        if self._predict_fn is None:
            self.keras  # noqa: B018 - build outside the trace
            self._predict_fn = graph_function(lambda x: self.keras(x, training=False), reduce_retracing=True)
        out = []
        for start in range(0, len(images), batch_size):
            x = to_model_input(images[start : start + batch_size])
            out.append(np.asarray(self._predict_fn(tf.constant(x))))
        if not out:
            return np.zeros((0, self.num_classes), np.float32)
        return np.concatenate(out).astype(np.float32)


class _NestedGraph:
    """prefix -> nested sub-model (features, output) -> suffix, called as one graph."""

    def __init__(self, prefix: Any, inner: Any, suffix: Any):
        self.prefix, self.inner, self.suffix = prefix, inner, suffix

    def __call__(self, images: Any, training: bool = False) -> tuple[Any, Any]:
        features, out = self.inner(self.prefix(images, training=training), training=training)
        return features, self.suffix(out, training=training)


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
