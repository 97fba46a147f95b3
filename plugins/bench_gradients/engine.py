"""The batched gradient engine every method of the gradient family shares.

One ``tf.function`` per (Keras model, image shape) maps a batch of inputs
(B, H, W, 3) and targets (B,) to ``d y^t / d x`` (B, H, W, 3), with ``y^t`` the
pre-softmax logit of the row's target class (``model.logits_keras``), each row
differentiated on its own (inference mode: no batch statistics). The signature has
a free batch dimension, so a short last chunk does not retrace.

:func:`accumulate` streams the (image, sample) rows of a method (IG's
interpolation steps, SmoothGrad's noisy copies) through that function in chunks
of ``batch_size`` rows, built on the fly in NumPy, and keeps per image only the
weighted sum of the gradients (and, when asked, the sum of their squares):
memory is one chunk plus two (N, H, W, 3) accumulators, whatever the number of
samples. Rows are ordered image-major, so an image's samples may span chunks
and a chunk may hold several images; the sums do not depend on the split.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.engine.regions import check_ids, derive_seed
from bench.engine.tracing import graph_function, traced, traces

#: the channel reductions an explainer may be asked for
REDUCTIONS: tuple[str, ...] = ("sum", "abs-sum", "max-abs")

#: purpose string of the SmoothGrad-family noise stream (shared by SmoothGrad,
#: SmoothGrad^2 and VarGrad, so they see the same noisy copies of an image)
NOISE_PURPOSE = "gradients.noise"


class ParameterError(ValueError):
    """A bad explainer parameter; ``param`` names it (the plan reports the config key)."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


# ---- parameter checks ----------------------------------------------------------------------
def check_int(value: Any, param: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ParameterError(param, f"{param} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(value: Any, param: str, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(float(value)):
        raise ParameterError(param, f"{param} must be a finite number, got {value!r}")
    if minimum is not None and float(value) < minimum:
        raise ParameterError(param, f"{param} must be >= {minimum}, got {value!r}")
    return float(value)


def check_choice(value: Any, param: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ParameterError(param, f"{param} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


# ---- channel reduction ---------------------------------------------------------------------
def reduce_channels(attributions: np.ndarray, how: str) -> np.ndarray:
    """(N, H, W, C) -> float32 (N, H, W): signed ``sum``, ``abs-sum`` or ``max-abs`` over C."""
    a = np.asarray(attributions)
    if how not in REDUCTIONS:
        raise ParameterError("reduce", f"reduce must be one of {', '.join(REDUCTIONS)}, got {how!r}")
    # channel by channel: NumPy reduces a short last axis far slower than it adds planes
    planes = [a[..., c] for c in range(a.shape[-1])]
    if how != "sum":
        planes = [np.abs(p) for p in planes]
    op = np.maximum if how == "max-abs" else np.add
    out = planes[0].astype(np.float32, copy=True)
    for p in planes[1:]:
        op(out, p, out=out, casting="unsafe")
    return out


# ---- inputs --------------------------------------------------------------------------------
def check_inputs(
    model: Any, images: Any, targets: Any, ids: Any, *, who: str
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """(bench model, float32 images (N, H, W, 3), int32 targets (N,), ids (N,)) or a clear error."""
    from bench.models import as_bench_model

    bm = as_bench_model(model)
    x = np.asarray(images, dtype=np.float32)
    t = np.asarray(targets)
    if x.ndim != 4 or t.ndim != 1 or len(t) != len(x):
        raise ValueError(f"{who} expects images (N, H, W, C) and targets (N,), got {x.shape} and {t.shape}")
    if len(t) and not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"{who} targets must be integers, got dtype {t.dtype}")
    t = t.astype(np.int32)
    num_classes = int(bm.num_classes)
    if len(t) and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"{who} targets must be in [0, {num_classes}), got [{t.min()}, {t.max()}]")
    return bm, x, t, check_ids(ids, len(x))


# ---- the compiled gradient -----------------------------------------------------------------
#: the name of the gradient function in the shared trace memo (:mod:`bench.engine.tracing`)
TRACE_NAME = "bench_gradients.gradient"


def compiled_functions(keras_model: Any) -> dict[tuple[int, ...], Any]:
    """The compiled gradient functions of ``keras_model`` by image shape (for tests and tools)."""
    return {key[1]: fn for key, fn in traces(keras_model, TRACE_NAME).items()}


def gradient_function(model: Any, image_shape: tuple[int, ...]) -> Any:
    """``fn(x (B, H, W, C) float32, t (B,) int32) -> (d y^t / d x, y^t)`` for a bench model.

    Traced once per Keras model and image shape (:func:`bench.engine.tracing.traced`, keyed
    by the Keras model, not the bench wrapper, so a plain ``keras.Model`` wrapped afresh on
    every call, or six explainers of the family on one model, share one trace). The
    function holds the logits sub-model, not the model, so the memo never keeps it alive.
    """
    shape = tuple(int(d) for d in image_shape)

    def build() -> Any:
        import tensorflow as tf

        logits = model.logits_keras  # built here, outside any trace

        def grad(x: Any, t: Any) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(x)
                z = logits(x, training=False)
                y = tf.gather(z, t, axis=1, batch_dims=1)
            g = tape.gradient(y, x)
            return tf.cast(g, tf.float32), tf.cast(y, tf.float32)

        spec = [tf.TensorSpec((None, *shape), tf.float32), tf.TensorSpec((None,), tf.int32)]
        return graph_function(grad, input_signature=spec)

    return traced(model.keras, (TRACE_NAME, shape), build)


def accumulate(
    fn: Any,
    targets: np.ndarray,
    image_shape: tuple[int, ...],
    n_samples: int,
    make_rows: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    batch_size: int,
    weights: np.ndarray | None = None,
    squares: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-image sums over samples of ``w_j * grad`` (and of ``grad**2``), float64 (N, H, W, C).

    make_rows(image_index (B,), sample_index (B,)) -> float32 inputs (B, H, W, C);
    weights: (n_samples,) per-sample weights of the first sum (default 1).
    """
    import tensorflow as tf

    n = len(targets)
    s1 = np.zeros((n, *image_shape), dtype=np.float64)
    s2 = np.zeros_like(s1) if squares else None
    w = None if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1, *([1] * len(image_shape)))
    total = n * n_samples
    for a in range(0, total, batch_size):
        rows = np.arange(a, min(a + batch_size, total))
        img, smp = rows // n_samples, rows % n_samples
        inputs = np.ascontiguousarray(make_rows(img, smp), dtype=np.float32)
        g, _ = fn(tf.constant(inputs), tf.constant(targets[img]))
        g = np.asarray(g)
        gw = g if w is None else g * w[smp]
        if n_samples == 1:  # one row per image: nothing to sum within the chunk
            s1[img] += gw
            if s2 is not None:
                s2[img] += np.square(g, dtype=np.float64)
            continue
        starts = np.flatnonzero(np.r_[True, img[1:] != img[:-1]])
        owners = img[starts]
        s1[owners] += np.add.reduceat(gw, starts, axis=0, dtype=np.float64)
        if s2 is not None:
            s2[owners] += np.add.reduceat(np.square(g, dtype=np.float64), starts, axis=0)
    return s1, s2


# ---- SmoothGrad-family noise ---------------------------------------------------------------
def noise_seed(seed: int, image_id: Any) -> int:
    """The 63-bit seed of an image's noise stream: ``derive_seed(seed, id, NOISE_PURPOSE)``."""
    return derive_seed(int(seed), image_id, NOISE_PURPOSE)


def noise_sample(base_seed: int, sample: int, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-normal float32 noise of noisy copy ``sample`` of an image (unscaled).

    Drawn from ``np.random.default_rng([base_seed, sample])``: each copy has its
    own stream, so a copy is the same whichever chunk computes it.
    """
    rng = np.random.default_rng([int(base_seed), int(sample)])
    return rng.standard_normal(shape, dtype=np.float32)
