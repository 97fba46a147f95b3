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
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from bench_gradcam.featuremap import FeatureMapExplainer

from bench.engine.tracing import graph_function


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

    def passes_per_map(self) -> float:
        """Forward-pass equivalents per map: one full forward pass (the feature map); the K
        ablated passes run only the layers after the feature layer (the head) and are not counted."""
        return 1.0

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
        y = np.asarray(logits, dtype=np.float64)[np.arange(len(images)), targets][:, None]
        safe = np.where(y != 0, y, 1.0)
        weights = np.where(y != 0, (y - ablated) / safe, 0.0)
        return self._weighted_map(features, channels, weights)
