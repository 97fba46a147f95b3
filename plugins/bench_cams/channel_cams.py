"""The CAMs that weigh each channel by a forward pass: Score-CAM and Ablation-CAM.

Both compute the feature map ``A`` (N, h, w, K) once per image, then score each
(image, channel) pair with one forward pass (Score-CAM: of the whole model on a
masked image; Ablation-CAM: of the part of the model after the feature layer on a
feature map with that channel zeroed). The pairs of all images of a call are
flattened and streamed ``batch_size`` at a time through ``tf.function``s traced once
per model and image size (Score-CAM's masked images go through the same traced
forward pass as the images themselves), so memory is bounded by the batch however
many channels (1,920 for DenseNet201) there are, and no Python loop runs per image.
``L = ReLU(sum_k w_k A^k)`` over the scored channels, at the feature map's resolution.

Cost (``passes_per_map``, in forward-pass equivalents): Score-CAM runs the whole model on
each masked image, so a scored channel costs a pass. Ablation-CAM runs, per scored channel,
only the layers after the feature layer (the suffix), so a channel costs the suffix's share
of the model's multiply-adds (:func:`suffix_share`, counted on the traced graphs by
:func:`multiply_adds`): a dense head after a backbone's output costs almost nothing per
channel, a backbone's last block (DenseNet201 explained at ``pool4_relu``) a good part of a pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from bench_gradcam.featuremap import FeatureMapExplainer, feature_source

from bench.engine.memo import ModelMemo
from bench.engine.tracing import graph_function

#: Keras model (weakly) -> {(feature layer, image shape): :func:`suffix_share`'s answer (numbers only)}
_SUFFIX_COSTS: ModelMemo[dict[str, Any]] = ModelMemo(per_model=16)
#: ops that call a function or run control flow: :func:`multiply_adds` cannot see into them
OPAQUE_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall", "While", "StatelessWhile",
                        "If", "StatelessIf", "Case", "StatelessCase"})


def _dims(tensor: Any) -> list[int] | None:
    """The static shape of ``tensor`` as ints, None where any dimension is unknown."""
    shape = tensor.shape
    if shape.rank is None:
        return None
    dims = shape.as_list()
    return None if any(d is None for d in dims) else [int(d) for d in dims]


def _op_multiply_adds(op: Any) -> float | None:
    """Multiply-adds of one op of a traced graph (0 for an op that does none we count), None
    where its shapes are unknown or its kind cannot be counted."""
    kind = op.type
    if kind in OPAQUE_OPS:
        return None
    if kind in ("Conv2D", "Conv3D", "DepthwiseConv2dNative", "Conv2DBackpropInput"):
        # Conv2DBackpropInput (a transposed convolution): (input_sizes, filter, out_backprop)
        data = op.inputs[2] if kind == "Conv2DBackpropInput" else op.outputs[0]
        out, kernel = _dims(data), _dims(op.inputs[1])
        if out is None or kernel is None:
            return None
        per_output = np.prod(kernel[:2]) if kind == "DepthwiseConv2dNative" else np.prod(kernel[:-1])
        return float(np.prod(out)) * float(per_output)
    if kind == "MatMul" or kind.startswith("BatchMatMul"):
        a, out = _dims(op.inputs[0]), _dims(op.outputs[0])
        if a is None or out is None:
            return None
        flip = op.get_attr("transpose_a") if kind == "MatMul" else op.get_attr("adj_x")
        return float(np.prod(out)) * float(a[-2] if flip else a[-1])
    if kind == "Einsum":
        equation = op.get_attr("equation")
        equation = equation.decode() if isinstance(equation, bytes) else str(equation)
        terms = equation.replace(" ", "").split("->")[0].split(",")
        if "." in equation or len(terms) != len(op.inputs):
            return None
        sizes: dict[str, int] = {}
        for term, t in zip(terms, op.inputs, strict=True):
            dims = _dims(t)
            if dims is None or len(dims) != len(term):
                return None
            sizes.update(zip(term, dims, strict=True))
        return float(np.prod(list(sizes.values()))) if len(terms) > 1 else 0.0
    return 0.0


def multiply_adds(graph: Any) -> float | None:
    """Multiply-adds of one run of a traced ``tf.Graph`` whose shapes are all known (traced at
    batch 1): its convolutions (plain, depthwise, transposed, 3-D), matrix products and
    einsums; the element-wise ops, poolings and copies (a small share of a network's work) are
    not counted. None where it cannot count: an unknown shape, or an op that calls a function or
    runs control flow (:data:`OPAQUE_OPS`), whose work it cannot see."""
    total = 0.0
    for op in graph.get_operations():
        macs = _op_multiply_adds(op)
        if macs is None:
            return None
        total += macs
    return total


def suffix_share(source: Any, image_shape: tuple[int, ...], feature_shape: tuple[int, ...]) -> dict[str, Any]:
    """What one pass of the layers after the feature layer costs, as a share of a forward pass.

    ``source``: a bench model (``features_and_logits``, ``logits_from_features``); both are traced
    at batch 1 (images ``image_shape``, feature maps ``feature_shape``) and their multiply-adds
    counted (:func:`multiply_adds`). Returns ``{"suffix_share", "suffix_multiply_adds",
    "model_multiply_adds", "measured", "reason"}``: where the count fails, ``suffix_share`` is 1.0
    (a suffix pass counted as a full pass, an upper bound), ``measured`` False and ``reason`` why.
    """
    import tensorflow as tf

    def count(fn: Any, shape: tuple[int, ...]) -> float | None:
        spec = tf.TensorSpec((1, *(int(d) for d in shape)), tf.float32)
        return multiply_adds(graph_function(fn).get_concrete_function(spec).graph)

    info: dict[str, Any] = {"suffix_share": 1.0, "suffix_multiply_adds": None, "model_multiply_adds": None,
                            "measured": False, "reason": ""}
    try:
        model_macs = count(lambda x: source.features_and_logits(x), image_shape)
        suffix_macs = count(lambda a: source.logits_from_features(a, training=False), feature_shape)
    except Exception as exc:  # noqa: BLE001 - a cost estimate never fails the maps
        info["reason"] = f"the graphs could not be traced for counting ({type(exc).__name__}: {exc})"
        return info
    info.update(suffix_multiply_adds=suffix_macs, model_multiply_adds=model_macs)
    if model_macs is None or suffix_macs is None:
        info["reason"] = "the multiply-adds could not be counted (an unknown shape or an opaque op)"
    elif model_macs <= 0:
        info["reason"] = "the model does no multiply-adds that are counted"
    else:
        info.update(suffix_share=min(1.0, suffix_macs / model_macs), measured=True,
                    reason="the suffix's share of the model's multiply-adds")
    return info


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


class ChannelCAM(FeatureMapExplainer):
    """Shared parts: the feature pass, choosing the channels, streaming (image, channel) pairs,
    the weighted sum."""

    #: None: every channel; an int: per image, the channels of highest spatial variance
    max_channels: int | None = None

    def select_channels(self, features: Any) -> np.ndarray:
        """int (N, K'): per image, every channel, or the ``max_channels`` of highest spatial
        variance (descending; ties by index)."""
        a = np.asarray(features)
        n, k = a.shape[0], a.shape[-1]
        if self.max_channels is None or self.max_channels >= k:
            return np.broadcast_to(np.arange(k), (n, k)).copy()
        var = a.reshape(n, -1, k).var(axis=1)
        return np.argsort(-var, axis=1, kind="stable")[:, : int(self.max_channels)]

    layer: str | None
    relu: bool
    batch_size: int

    def _forward(self, model: Any, image_shape: tuple[int, ...]) -> Any:
        """The traced ``images -> (A (N, h, w, K), logits (N, C))``: the model's only trace."""

        def build(source: Any) -> Any:
            return graph_function(
                lambda x: source.features_and_logits(x),
                input_signature=self._image_signature(image_shape)[:1],
            )

        return self._traced(model, image_shape, build, tag="features")

    def _features(self, model: Any, images: np.ndarray) -> tuple[Any, Any]:
        import tensorflow as tf

        return self._forward(model, tuple(images.shape[1:]))(tf.constant(images))

    @staticmethod
    def _pair_signature(*leading: Any) -> list[Any]:
        """``leading`` TensorSpecs, then a batch of pairs: image indices and channels (int32)."""
        import tensorflow as tf

        index = tf.TensorSpec((None,), tf.int32)
        return [*leading, index, index]

    def _stream(self, fn: Any, channels: np.ndarray, *args: Any) -> np.ndarray:
        """``fn(*args, image_index, channel)`` over every (image i, channel ``channels[i, j]``)
        pair, ``batch_size`` pairs per call; the scores as (N, K') float64."""
        import tensorflow as tf

        n, k = channels.shape
        out = np.empty(n * k, dtype=np.float64)
        for start, img, ch in _pair_batches(channels, _positive_int(self.batch_size, "batch_size")):
            out[start : start + len(img)] = np.asarray(fn(*args, tf.constant(img), tf.constant(ch)))
        return out.reshape(n, k)

    def _weighted_map(self, features: Any, channels: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``sum_j weights[i, j] A_i^{channels[i, j]}`` (and the ReLU), float32 (N, h, w)."""
        a = np.asarray(features, dtype=np.float64)
        picked = np.take_along_axis(a, channels[:, None, None, :], axis=3)
        maps = np.einsum("nhwk,nk->nhw", picked, weights)
        return (np.maximum(maps, 0.0) if self.relu else maps).astype(np.float32)


def _pair_batches(channels: np.ndarray, batch_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(start, image indices, channels) of the flattened (N * K') pairs, ``batch_size`` at a time."""
    n, k = channels.shape
    flat = channels.reshape(-1).astype(np.int32)
    for start in range(0, n * k, batch_size):
        stop = min(start + batch_size, n * k)
        yield start, (np.arange(start, stop) // k).astype(np.int32), flat[start:stop]


class ScoreCAM(ChannelCAM):
    """Score-CAM (Wang et al., CVPR-W 2020, arXiv 1910.01279), Algorithm 1.

    Each channel ``A^k`` is upsampled bilinearly to the image size and min-max normalised
    to [0, 1] (``M^k``; a constant channel gives ``M^k = 0``); the masked image is
    ``x_b + (x - x_b) * M^k`` (``x * M^k`` for the default all-zero baseline ``x_b``). Its
    weight is the increase in confidence, ``s_k = p_c(masked) - p_c(x_b)`` (CIC, ``p_c`` the
    target class's softmax probability), then ``w = softmax_k(s)`` over the scored channels
    (Algorithm 1) or ``w = s``; ``L = ReLU(sum_k w_k A^k)``.

    Parameters
    ----------
    layer, relu:
        As for Grad-CAM.
    softmax:
        Softmax of the scores over the channels (default, as in Algorithm 1); ``False``
        uses the CIC scores themselves.
    max_channels:
        ``None`` (default): every channel. An int keeps, per image, the channels whose
        activations vary most over the positions (Faster Score-CAM); the others get no weight.
    baseline:
        The constant pixel value of the baseline image ``x_b`` (default 0.0, black).
    batch_size:
        Masked images per forward pass (default 32): bounds the memory.
    """

    label = "Score-CAM"

    def __init__(
        self,
        *,
        layer: str | None = None,
        relu: bool = True,
        softmax: bool = True,
        max_channels: int | None = None,
        baseline: float = 0.0,
        batch_size: int = 32,
    ):
        self.layer = layer
        self.relu = relu
        self.softmax = softmax
        self.max_channels = max_channels
        self.baseline = baseline
        self.batch_size = batch_size

    def get_params(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "relu": self.relu,
            "softmax": self.softmax,
            "max_channels": self.max_channels,
            "baseline": self.baseline,
            "batch_size": self.batch_size,
        }

    def passes_per_map(self) -> float | None:
        """Forward-pass equivalents per map: 1 (features) + the scored channels (one full pass
        each) + the baseline image's share, as the last ``explain`` call measured; before any
        call, ``1 + max_channels`` when that is set, else unknown (None)."""
        measured = self.__dict__.get("_passes_per_map")
        if measured is not None:
            return float(measured)
        return None if self.max_channels is None else 1.0 + float(self.max_channels)

    def validate(self) -> None:
        _positive_int(self.batch_size, "Score-CAM batch_size")
        if self.max_channels is not None:
            _positive_int(self.max_channels, "Score-CAM max_channels")
        if isinstance(self.baseline, bool) or not isinstance(self.baseline, int | float):
            raise ValueError(f"Score-CAM baseline must be a number, got {self.baseline!r}")

    def _mask_function(self, model: Any, image_shape: tuple[int, ...]) -> Any:
        """The traced ``(x, A as (N, K, h, w), image index, channel) -> masked images``."""
        import tensorflow as tf

        height, width = int(image_shape[0]), int(image_shape[1])
        base = float(self.baseline)

        def build(source: Any) -> Any:
            def masked_images(x: Any, by_channel: Any, img: Any, ch: Any) -> Any:
                a = tf.gather_nd(by_channel, tf.stack([img, ch], axis=1))[..., None]  # (B, h, w, 1)
                up = tf.image.resize(a, (height, width), method="bilinear")
                lo = tf.reduce_min(up, axis=(1, 2, 3), keepdims=True)
                span = tf.reduce_max(up, axis=(1, 2, 3), keepdims=True) - lo
                mask = tf.where(span > 0, (up - lo) / tf.where(span > 0, span, 1.0), 0.0)
                return base + (tf.gather(x, img) - base) * mask

            spec = self._pair_signature(
                tf.TensorSpec((None, *image_shape), tf.float32), tf.TensorSpec((None,) * 4, tf.float32)
            )
            return graph_function(masked_images, input_signature=spec)

        return self._traced(model, image_shape, build, tag="masks")

    def _explain(self, model: Any, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        self.validate()
        shape = tuple(images.shape[1:])
        # the baseline image rides along with the feature pass (no separate trace)
        x_b = np.full((1, *shape), float(self.baseline), dtype=np.float32)
        features, logits = self._features(model, np.concatenate([images, x_b]))
        p_base = np.asarray(tf.nn.softmax(logits[-1]), dtype=np.float64)
        features = features[:-1]
        channels = self.select_channels(features)
        # what a map cost: the feature pass, one full pass per scored channel, the baseline's share
        self.__dict__["_passes_per_map"] = 1.0 + channels.shape[1] + 1.0 / max(len(images), 1)
        by_channel = tf.transpose(features, (0, 3, 1, 2))  # (N, K, h, w)
        masks, forward = self._mask_function(model, shape), self._forward(model, shape)
        x, t = tf.constant(images), tf.constant(targets)

        def masked_probs(img: Any, ch: Any) -> Any:
            _, logits = forward(masks(x, by_channel, img, ch))
            return tf.gather(tf.nn.softmax(logits), tf.gather(t, img), axis=1, batch_dims=1)

        scores = self._stream(masked_probs, channels)
        scores = scores - p_base[targets][:, None]
        if self.softmax:
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores /= scores.sum(axis=1, keepdims=True)
        return self._weighted_map(features, channels, scores)


class AblationCAM(ChannelCAM):
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020).

    ``w_k = (y^c - y^c_k) / y^c``, with ``y^c`` the target's pre-softmax logit and ``y^c_k``
    the logit recomputed from the feature map with channel ``k`` set to zero (0 where
    ``y^c = 0``); ``L = ReLU(sum_k w_k A^k)``. Needs the part of the model after the
    feature layer (``model.logits_from_features``): a model whose head also reads
    tensors from before the feature layer (a skip connection around it) raises an error.

    Cost (:meth:`passes_per_map`): one forward pass per image (the feature map and ``y^c``), then
    one pass of the suffix per ablated channel, each counted at the suffix's share of the model's
    multiply-adds (:func:`suffix_share`); :attr:`cost_info_` says what the last call counted.

    Parameters
    ----------
    layer, relu:
        As for Grad-CAM.
    max_channels:
        ``None`` (default, the paper): every channel is ablated. An int ablates, per image, only
        the channels whose activations vary most over the positions (the selection of Faster
        Score-CAM); the others get no weight. A budget for a deep suffix: DenseNet201
        explained at ``pool4_relu`` has 1,792 channels, each ablation a pass through its
        conv5 block.
    batch_size:
        Ablated feature maps per head pass (default 128): bounds the memory.
    """

    label = "Ablation-CAM"

    def __init__(self, *, layer: str | None = None, relu: bool = True, max_channels: int | None = None,
                 batch_size: int = 128):
        self.layer = layer
        self.relu = relu
        self.max_channels = max_channels
        self.batch_size = batch_size

    def get_params(self) -> dict[str, Any]:
        return {"layer": self.layer, "relu": self.relu, "max_channels": self.max_channels,
                "batch_size": self.batch_size}

    def passes_per_map(self) -> float | None:
        """Forward-pass equivalents per map, as the last ``explain`` call ran them: 1 (the forward
        pass giving the feature map and ``y^c``) + ``K' * s``, ``K'`` the ablated channels per image
        and ``s`` the share of a forward pass that one pass of the layers after the feature layer
        costs (its multiply-adds over the model's; 1 where they cannot be counted: an upper
        bound). Before any call: unknown (None); both ``K'`` and ``s`` depend on the model."""
        measured = self.__dict__.get("_passes_per_map")
        return None if measured is None else float(measured)

    @property
    def cost_info_(self) -> dict[str, Any] | None:
        """What the last call's :meth:`passes_per_map` counted: ``channels`` (``K'``), ``images``,
        ``suffix_passes`` (suffix passes run, one per (image, channel)), ``suffix_batches`` (the
        calls they took) and :func:`suffix_share`'s ``suffix_share``, ``suffix_multiply_adds``,
        ``model_multiply_adds``, ``measured``, ``reason``; None before any call."""
        info = self.__dict__.get("_cost_info")
        return None if info is None else dict(info)

    def validate(self) -> None:
        _positive_int(self.batch_size, "Ablation-CAM batch_size")
        if self.max_channels is not None:
            _positive_int(self.max_channels, "Ablation-CAM max_channels")

    def _ablated_function(self, model: Any, image_shape: tuple[int, ...]) -> Any:
        import tensorflow as tf

        def build(source: Any) -> Any:
            if not hasattr(source, "logits_from_features"):
                raise ValueError(
                    f"Ablation-CAM needs model.logits_from_features(features) (the layers after the "
                    f"feature layer); model {getattr(model, 'name', '?')!r} "
                    f"({type(source.get()).__name__}) has none"
                )

            def ablated_scores(features: Any, t: Any, img: Any, ch: Any) -> Any:
                keep = 1.0 - tf.one_hot(ch, tf.shape(features)[-1], dtype=features.dtype)
                ablated = tf.gather(features, img) * keep[:, None, None, :]
                logits = source.logits_from_features(ablated, training=False)
                return tf.gather(logits, tf.gather(t, img), axis=1, batch_dims=1)

            spec = self._pair_signature(
                tf.TensorSpec((None,) * 4, tf.float32), tf.TensorSpec((None,), tf.int32)
            )
            return graph_function(ablated_scores, input_signature=spec)

        return self._traced(model, image_shape, build, tag="ablated")

    def _explain(self, model: Any, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        self.validate()
        shape = tuple(images.shape[1:])
        fn = self._ablated_function(model, shape)
        features, logits = self._features(model, images)
        channels = self.select_channels(features)
        ablated = self._stream(fn, channels, features, tf.constant(targets))
        self._count_cost(model, shape, tuple(features.shape[1:]), channels)
        y = np.asarray(logits, dtype=np.float64)[np.arange(len(images)), targets][:, None]
        safe = np.where(y != 0, y, 1.0)
        weights = np.where(y != 0, (y - ablated) / safe, 0.0)
        return self._weighted_map(features, channels, weights)

    def _count_cost(self, model: Any, image_shape: tuple[int, ...], feature_shape: tuple[int, ...],
                    channels: np.ndarray) -> None:
        """Record what the call ran: N forward passes, N * K' suffix passes at their share of a pass."""
        # the share depends on the model, layer and image size only: measured once, memoised weakly
        # in the Keras model (the entry holds numbers only, never the model)
        key = (self._layer_name(model), tuple(int(d) for d in image_shape))
        entry = _SUFFIX_COSTS.get_or_build(
            model.keras, key, lambda: suffix_share(feature_source(model, self.layer), image_shape, feature_shape))
        n, k = channels.shape
        batch = _positive_int(self.batch_size, "batch_size")
        self.__dict__["_cost_info"] = {**entry, "channels": int(k), "images": int(n),
                                       "suffix_passes": int(n * k), "suffix_batches": -(-n * k // batch)}
        self.__dict__["_passes_per_map"] = 1.0 + k * float(entry["suffix_share"]) if n else 1.0
