"""The forward-pass seam of the AOPC engine.

The engine (:mod:`bench.engine.curves`) never calls the model itself: it hands every
batch of perturbed images to a :class:`ForwardStrategy`, together with what an
incremental strategy needs to reuse work (which image each row belongs to,
which step it is, and the box of the region that changed since the previous
step). :class:`FullForward` runs the whole model on every row; an incremental
strategy (Krypton-style reuse of the previous step's activations) can plug in
behind the same protocol without touching the engine.

Rows arrive image-major, steps increasing (image 0 steps 0..L, image 1 steps
0..L, ...), a batch may span several images and an image may span batches; a
strategy whose ``lockstep_images`` attribute (read after ``prepare``) is ``g > 1``
gets the images in groups of ``g`` instead, each batch the same block of
consecutive steps of every image of its group (image-major inside the batch:
see :func:`bench.engine.curves.batch_schedule`). Either way, each image's steps
arrive in increasing order.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from bench.engine.tracing import graph_function, traced


@dataclass(frozen=True)
class ForwardBatch:
    """One batch of (image, step) pairs, already perturbed.

    images: float32 (B, H, W, 3), ``x^(k)`` of each pair.
    image_index: int (B,), the row of each pair's image in the evaluation set.
    step: int (B,), k (0 = the original image).
    changed_box: int (B, 4), ``(y0, y1, x0, x1)`` of region ``r_k`` (the pixels
        that differ from ``x^(k-1)`` for a mask-local perturbation); zeros at k = 0.
    targets: int (B,), the explained class of each pair.
    """

    images: np.ndarray
    image_index: np.ndarray
    step: np.ndarray
    changed_box: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


@runtime_checkable
class ForwardStrategy(Protocol):
    """How the engine turns a :class:`ForwardBatch` into class probabilities."""

    name: str
    # optional, so not a protocol member: ``lockstep_images`` (int, read after :meth:`prepare`;
    # absent or 1: image-major rows), how many images the engine interleaves per batch

    def prepare(
        self,
        model: Any,
        *,
        batch_size: int,
        image_shape: tuple[int, int, int],
        mask_local: bool,
    ) -> None:
        """Called once per evaluation before the first batch (build/trace here)."""
        ...

    def forward(self, batch: ForwardBatch) -> np.ndarray:
        """float32 (B, C): class probabilities for every row of the batch."""
        ...

    def get_params(self) -> dict[str, Any]: ...


class FullForward:
    """A full batched model call per batch, wrapped in one ``tf.function``.

    The input signature has a free batch dimension, so the last (partial)
    batch reuses the same trace: no retracing and no padded, wasted passes.
    ``pad_batches=True`` pads every batch to ``batch_size`` instead (a fully
    static shape, for backends or ``jit_compile`` that want one). Traces are
    memoised per Keras model (see :func:`traced_call`).
    """

    name = "full"

    def __init__(self, *, jit_compile: bool = False, pad_batches: bool = False):
        self.jit_compile = jit_compile
        self.pad_batches = pad_batches
        self._fn: Any = None
        self._batch_size = 0

    def get_params(self) -> dict[str, Any]:
        return {"jit_compile": self.jit_compile, "pad_batches": self.pad_batches}

    def prepare(
        self,
        model: Any,
        *,
        batch_size: int,
        image_shape: tuple[int, int, int],
        mask_local: bool = True,
    ) -> None:
        self._batch_size = int(batch_size)
        h, w, c = (int(d) for d in image_shape)
        batch_dim = self._batch_size if self.pad_batches else None
        self._fn = traced_call(model.keras, (batch_dim, h, w, c), jit_compile=self.jit_compile)

    def forward(self, batch: ForwardBatch) -> np.ndarray:
        return self.predict(batch.images)

    def warm(self) -> None:
        """Trace the model call now (a no-op once traced), so that a timed call excludes tracing."""
        if self._fn is None:
            raise RuntimeError("FullForward.prepare() must be called before warm()")
        self._fn.get_concrete_function()

    def predict(self, images: np.ndarray) -> np.ndarray:
        """float32 (B, C) for float32 (B, H, W, 3) images (B <= batch_size when padding)."""
        import tensorflow as tf

        if self._fn is None:
            raise RuntimeError("FullForward.prepare() must be called before forward()")
        x = np.ascontiguousarray(images, dtype=np.float32)
        n = len(x)
        if self.pad_batches and n < self._batch_size:
            pad = np.zeros((self._batch_size - n, *x.shape[1:]), dtype=np.float32)
            x = np.concatenate([x, pad])
        out = self._fn(tf.constant(x))
        return np.asarray(out, dtype=np.float32)[:n]


def traced_call(keras_model: Any, input_shape: tuple[Any, ...], *, jit_compile: bool = False) -> Any:
    """``tf.function(lambda x: keras_model(x, training=False))`` for one input signature.

    Memoised per Keras model (weakly: the memo never keeps a model alive;
    :func:`bench.engine.tracing.traced`), so repeated evaluations of the same model (every
    explainer, order and perturbation of a run) trace once.
    """
    import tensorflow as tf

    def build() -> Any:
        model_ref = weakref.ref(keras_model)

        def call(x: Any) -> Any:
            return model_ref()(x, training=False)  # type: ignore[misc]

        spec = tf.TensorSpec(tuple(input_shape), tf.float32)
        return graph_function(call, input_signature=[spec], jit_compile=jit_compile or None)

    return traced(keras_model, ("bench.engine.forward.traced_call", tuple(input_shape), bool(jit_compile)), build)
