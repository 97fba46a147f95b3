"""The batched forward engine the perturbation family (Occlusion, RISE) shares.

One ``tf.function`` per (Keras model, image shape) maps a batch of images
(B, H, W, 3) and targets (B,) to the target class's pre-softmax logit and its
softmax probability, both (B,), from one forward pass (inference mode). Its
signature has a free batch dimension, so a short last chunk does not retrace;
Occlusion and RISE on one model share the trace.

:func:`stream` walks the (image, sample) rows of a method (Occlusion's occluded
copies, RISE's masked copies) image-major in chunks of ``batch_size`` rows, built
on the fly in NumPy by the method's ``make_rows``: memory is one chunk, whatever
the number of samples, and the model never sees more than ``batch_size`` rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from bench.engine.tracing import graph_function, traced, traces

#: the scores a perturbation explainer may read off the model
SCORES: tuple[str, ...] = ("probability", "logit")

#: the name of the score function in the shared trace memo (:mod:`bench.engine.tracing`)
TRACE_NAME = "bench_occlusion.scores"


def compiled_functions(keras_model: Any) -> dict[tuple[int, ...], Any]:
    """The compiled score functions of ``keras_model`` by image shape (for tests and tools)."""
    return {key[1]: fn for key, fn in traces(keras_model, TRACE_NAME).items()}


def score_function(model: Any, image_shape: tuple[int, ...]) -> Any:
    """``fn(x (B, H, W, C) float32, t (B,) int32) -> (probability_t (B,), logit_t (B,))``
    (in the order of :data:`SCORES`).

    Traced once per Keras model and image shape (:func:`bench.engine.tracing.traced`, keyed
    by the Keras model, so a plain ``keras.Model`` wrapped afresh on every call, or Occlusion
    and RISE on one model, share one trace). The probability is ``softmax(logits)_t``, the
    model's own output. The function holds the logits sub-model, not the model.
    """
    shape = tuple(int(d) for d in image_shape)

    def build() -> Any:
        import tensorflow as tf

        logits = model.logits_keras  # built here, outside any trace

        def scores(x: Any, t: Any) -> Any:
            z = tf.cast(logits(x, training=False), tf.float32)
            p = tf.nn.softmax(z, axis=-1)
            return tf.gather(p, t, axis=1, batch_dims=1), tf.gather(z, t, axis=1, batch_dims=1)

        spec = [tf.TensorSpec((None, *shape), tf.float32), tf.TensorSpec((None,), tf.int32)]
        return graph_function(scores, input_signature=spec)

    return traced(model.keras, (TRACE_NAME, shape), build)


def row_chunks(n_images: int, n_samples: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(image index (B,), sample index (B,)) of the image-major rows, ``batch_size`` at a time."""
    total = n_images * n_samples
    for start in range(0, total, batch_size):
        rows = np.arange(start, min(start + batch_size, total))
        yield rows // n_samples, rows % n_samples


def runs(img: np.ndarray) -> list[tuple[int, slice]]:
    """(image, slice of the chunk) for each run of equal image indices in a chunk (image-major)."""
    starts = np.flatnonzero(np.r_[True, img[1:] != img[:-1]])
    ends = np.r_[starts[1:], len(img)]
    return [(int(img[a]), slice(int(a), int(b))) for a, b in zip(starts, ends, strict=True)]


def stream(
    fn: Any,
    targets: np.ndarray,
    n_samples: int,
    make_rows: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, Any]],
    *,
    batch_size: int,
    score: str,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, Any]]:
    """Run every (image, sample) row through ``fn`` in chunks of ``batch_size``, image-major.

    make_rows(image index (B,), sample index (B,)) -> (float32 inputs (B, H, W, C), payload);
    yields (image index, sample index, the rows' ``score`` float64 (B,), payload) per chunk.
    """
    import tensorflow as tf

    which = SCORES.index(score)
    for img, smp in row_chunks(len(targets), n_samples, batch_size):
        inputs, payload = make_rows(img, smp)
        out = fn(tf.constant(np.ascontiguousarray(inputs, dtype=np.float32)), tf.constant(targets[img]))
        yield img, smp, np.asarray(out[which], dtype=np.float64), payload
