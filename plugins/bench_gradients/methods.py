"""The gradient family: Saliency, Gradient x Input, Integrated Gradients, SmoothGrad,
SmoothGrad^2 and VarGrad, batched.

Every method differentiates the pre-softmax logit ``y^c`` of the target class with
respect to the float32 [0, 1] image the harness feeds (preprocessing is inside the
model), through :mod:`bench_gradients.engine`: one ``tf.function`` trace per model
and image shape, rows (images x steps / noisy copies) streamed in chunks of
``batch_size``, no per-image loop around a model call.

``attributions(model, images, targets, ids=None)`` returns the raw signed
(N, H, W, C) attributions; ``explain`` reduces them over channels (``reduce``:
``"sum"`` signed, ``"abs-sum"`` or ``"max-abs"``) to float32 (N, H, W) heatmaps
at image resolution. ``passes_per_map()`` is the number of forward+backward
passes one map costs.

SmoothGrad-family noise is seeded by image id: copy ``j`` of image ``id`` is
``x + sigma * range * z`` with ``z ~ N(0, 1)`` drawn from
``np.random.default_rng([derive_seed(seed, id, "gradients.noise"), j])``, so a map
does not depend on the batch size, on the image's position, or on which chunk
computes a copy; SmoothGrad, SmoothGrad^2 and VarGrad with the same ``seed``, ``n``,
``sigma`` and ``noise_range`` see the same noisy copies. Noisy images are not clipped.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .engine import (
    REDUCTIONS,
    ParameterError,
    accumulate,
    check_choice,
    check_float,
    check_inputs,
    check_int,
    gradient_function,
    noise_sample,
    noise_seed,
    reduce_channels,
)

IG_METHODS: tuple[str, ...] = ("riemann_right", "riemann_left", "riemann_middle", "trapezoid")
BASELINES: dict[str, float] = {"black": 0.0, "white": 1.0}
NOISE_RANGES: tuple[str, ...] = ("image", "input")


class GradientMethod:
    """Shared plumbing: parameters, validation, ``explain`` = reduce(``attributions``)."""

    #: constructor parameters, in order (``get_params`` returns exactly these)
    param_names: ClassVar[tuple[str, ...]] = ("reduce", "batch_size")

    reduce: str
    batch_size: int

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def validate(self) -> None:
        """Check the stored parameters (cheap; the plan calls this): ``ParameterError`` if bad."""
        check_choice(self.reduce, "reduce", REDUCTIONS)
        check_int(self.batch_size, "batch_size")

    def passes_per_map(self) -> int:
        """Forward+backward passes of the model per heatmap."""
        return 1

    def attribute(self, model: Any, x: np.ndarray, t: np.ndarray, ids: np.ndarray, fn: Any) -> np.ndarray:
        """The method itself: raw attributions (N, H, W, C) of checked inputs, ``fn`` the gradient."""
        raise NotImplementedError

    def attributions(
        self, model: Any, images: np.ndarray, targets: np.ndarray, *, ids: Any = None
    ) -> np.ndarray:
        """Raw signed attributions float32 (N, H, W, C) of ``targets`` (before the channel reduction)."""
        self.validate()
        bm, x, t, ids_arr = check_inputs(model, images, targets, ids, who=type(self).__name__)
        if len(x) == 0:
            return np.zeros(x.shape, np.float32)
        fn = gradient_function(bm, tuple(x.shape[1:]))
        return np.asarray(self.attribute(bm, x, t, ids_arr, fn), dtype=np.float32)

    def explain(
        self, model: Any, images: np.ndarray, targets: np.ndarray, *, ids: Any = None
    ) -> np.ndarray:
        """float32 (N, H, W) heatmaps: :meth:`attributions` reduced over channels by ``reduce``."""
        a = self.attributions(model, images, targets, ids=ids)
        if len(a) == 0:
            return np.zeros(a.shape[:3], np.float32)
        return reduce_channels(a, self.reduce)


def _plain_gradients(x: np.ndarray, t: np.ndarray, fn: Any, batch_size: int) -> np.ndarray:
    s1, _ = accumulate(fn, t, x.shape[1:], 1, lambda img, smp: x[img], batch_size=batch_size)
    return s1


class Saliency(GradientMethod):
    """Saliency (Simonyan et al. 2014): ``max_c |d y / d x_c|``; raw attributions = the gradient.

    Parameters
    ----------
    reduce:
        Channel reduction: ``"max-abs"`` (default, the paper), ``"abs-sum"`` or ``"sum"``.
    batch_size:
        Images per model call (default 16).
    """


    def __init__(self, *, reduce: str = "max-abs", batch_size: int = 16):
        self.reduce = reduce
        self.batch_size = batch_size

    def attribute(self, model: Any, x: np.ndarray, t: np.ndarray, ids: np.ndarray, fn: Any) -> np.ndarray:
        return _plain_gradients(x, t, fn, int(self.batch_size))


class GradientInput(GradientMethod):
    """Gradient x Input: ``x * d y / d x``, reduced over channels (signed sum by default).

    Parameters
    ----------
    reduce:
        ``"sum"`` (default, signed: negative evidence ranks last), ``"abs-sum"`` or ``"max-abs"``.
    batch_size:
        Images per model call (default 16).
    """


    def __init__(self, *, reduce: str = "sum", batch_size: int = 16):
        self.reduce = reduce
        self.batch_size = batch_size

    def attribute(self, model: Any, x: np.ndarray, t: np.ndarray, ids: np.ndarray, fn: Any) -> np.ndarray:
        return x * _plain_gradients(x, t, fn, int(self.batch_size))


class IntegratedGradients(GradientMethod):
    """Integrated Gradients (Sundararajan et al. 2017).

    ``IG(x) = (x - x') * sum_k w_k d y / d x (x' + alpha_k (x - x'))``, the path integral
    of the gradient from the baseline ``x'`` to ``x`` by a quadrature rule; raw
    attributions sum to about ``y(x) - y(x')`` (completeness).

    Parameters
    ----------
    steps:
        Number of intervals ``m`` (default 32). Riemann rules cost ``m`` gradient passes
        per map, the trapezoid rule ``m + 1``.
    baseline:
        ``"black"`` (zeros, default), ``"white"`` (ones) or a number: a constant image.
    method:
        ``"riemann_right"`` (default, the paper: alpha = k/m, k = 1..m), ``"riemann_left"``
        (k = 0..m-1), ``"riemann_middle"`` ((k - 1/2)/m) or ``"trapezoid"`` (k = 0..m, end
        points weighted 1/2).
    reduce:
        ``"sum"`` (default, signed), ``"abs-sum"`` or ``"max-abs"``.
    batch_size:
        (image, step) pairs per model call (default 16); every image's steps are
        streamed through in chunks of this size.
    """

    param_names = ("steps", "baseline", "method", "reduce", "batch_size")

    def __init__(
        self,
        *,
        steps: int = 32,
        baseline: str | float = "black",
        method: str = "riemann_right",
        reduce: str = "sum",
        batch_size: int = 16,
    ):
        self.steps = steps
        self.baseline = baseline
        self.method = method
        self.reduce = reduce
        self.batch_size = batch_size

    def validate(self) -> None:
        super().validate()
        check_int(self.steps, "steps")
        check_choice(self.method, "method", IG_METHODS)
        self.baseline_value()

    def baseline_value(self) -> float:
        """The constant pixel value of the baseline image."""
        b = self.baseline
        if isinstance(b, str):
            if b not in BASELINES:
                raise ParameterError(
                    "baseline", f"baseline must be 'black', 'white' or a number, got {b!r}"
                )
            return BASELINES[b]
        return check_float(b, "baseline")

    def alphas_and_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """The quadrature nodes (in [0, 1]) and weights (summing to 1) of ``method``."""
        m = int(self.steps)
        k = np.arange(m + (self.method == "trapezoid"), dtype=np.float64)
        if self.method == "riemann_right":
            alphas, weights = (k + 1) / m, np.full(m, 1.0 / m)
        elif self.method == "riemann_left":
            alphas, weights = k / m, np.full(m, 1.0 / m)
        elif self.method == "riemann_middle":
            alphas, weights = (k + 0.5) / m, np.full(m, 1.0 / m)
        else:
            alphas, weights = k / m, np.full(m + 1, 1.0 / m)
            weights[[0, -1]] = 0.5 / m
        return alphas, weights

    def passes_per_map(self) -> int:
        return int(self.steps) + (self.method == "trapezoid")

    def attribute(self, model: Any, x: np.ndarray, t: np.ndarray, ids: np.ndarray, fn: Any) -> np.ndarray:
        alphas, weights = self.alphas_and_weights()
        base = np.float32(self.baseline_value())
        delta = x - base
        a32 = alphas.astype(np.float32).reshape(-1, 1, 1, 1)

        def rows(img: np.ndarray, smp: np.ndarray) -> np.ndarray:
            return base + a32[smp] * delta[img]

        s1, _ = accumulate(
            fn, t, x.shape[1:], len(alphas), rows, batch_size=int(self.batch_size), weights=weights
        )
        return delta * s1


class NoisyGradients(GradientMethod):
    """Gradients over ``n`` noisy copies ``x + N(0, (sigma * range)^2)``, seeded by image id."""

    param_names = ("n", "sigma", "noise_range", "seed", "reduce", "batch_size")

    n: int
    sigma: float
    noise_range: str
    seed: int

    def validate(self) -> None:
        super().validate()
        check_int(self.n, "n")
        check_float(self.sigma, "sigma", minimum=0.0)
        check_choice(self.noise_range, "noise_range", NOISE_RANGES)
        check_int(self.seed, "seed", minimum=0)

    def passes_per_map(self) -> int:
        return int(self.n)

    def noise_scale(self, x: np.ndarray) -> np.ndarray:
        """(N,) standard deviation of the noise per image: ``sigma`` x the range."""
        if self.noise_range == "input" or len(x) == 0:
            return np.full(len(x), float(self.sigma), np.float32)
        flat = x.reshape(len(x), -1)
        return (float(self.sigma) * (flat.max(axis=1) - flat.min(axis=1))).astype(np.float32)

    def moments(
        self, x: np.ndarray, t: np.ndarray, ids: np.ndarray, fn: Any, squares: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(E[g], E[g^2] or None) over the noisy copies, float64 (N, H, W, C)."""
        n = int(self.n)
        shape = tuple(x.shape[1:])
        seeds = [noise_seed(int(self.seed), i) for i in ids]
        scale = self.noise_scale(x)

        def rows(img: np.ndarray, smp: np.ndarray) -> np.ndarray:
            out = np.empty((len(img), *shape), np.float32)
            for r, (i, j) in enumerate(zip(img.tolist(), smp.tolist(), strict=True)):
                np.multiply(noise_sample(seeds[i], j, shape), scale[i], out=out[r])
                out[r] += x[i]
            return out

        s1, s2 = accumulate(fn, t, shape, n, rows, batch_size=int(self.batch_size), squares=squares)
        return s1 / n, None if s2 is None else s2 / n


class SmoothGrad(NoisyGradients):
    """SmoothGrad (Smilkov et al. 2017): the mean gradient over ``n`` noisy copies, then
    Saliency's reduction (``max_c |.|``).

    Parameters
    ----------
    n:
        Noisy copies per image (default 50): ``n`` gradient passes per map.
    sigma:
        Noise standard deviation relative to the range (default 0.15, the paper's 10-20%).
    noise_range:
        ``"image"`` (default, the paper): the range is the image's own ``max - min`` over
        all pixels and channels; ``"input"``: the [0, 1] input range (noise sd = sigma).
    seed:
        Base seed of the per-id noise stream.
    reduce:
        ``"max-abs"`` (default), ``"abs-sum"`` or ``"sum"``.
    batch_size:
        (image, copy) pairs per model call (default 16).
    """


    def __init__(
        self,
        *,
        n: int = 50,
        sigma: float = 0.15,
        noise_range: str = "image",
        seed: int = 0,
        reduce: str = "max-abs",
        batch_size: int = 16,
    ):
        self.n = n
        self.sigma = sigma
        self.noise_range = noise_range
        self.seed = seed
        self.reduce = reduce
        self.batch_size = batch_size

    def attribute(self, model: Any, x: np.ndarray, t: np.ndarray, ids: np.ndarray, fn: Any) -> np.ndarray:
        mean, _ = self.moments(x, t, ids, fn, squares=False)
        return mean


class SmoothGradSquared(NoisyGradients):
    """SmoothGrad^2 (Hooker et al. 2019): the mean of squared gradients over ``n`` noisy
    copies, ``E[g^2]`` (non-negative), summed over channels by default.

    Parameters as :class:`SmoothGrad`; ``reduce`` defaults to ``"sum"`` (``"max-abs"``
    takes the channel maximum).
    """


    def __init__(
        self,
        *,
        n: int = 50,
        sigma: float = 0.15,
        noise_range: str = "image",
        seed: int = 0,
        reduce: str = "sum",
        batch_size: int = 16,
    ):
        self.n = n
        self.sigma = sigma
        self.noise_range = noise_range
        self.seed = seed
        self.reduce = reduce
        self.batch_size = batch_size

    def attribute(self, model: Any, x: np.ndarray, t: np.ndarray, ids: np.ndarray, fn: Any) -> np.ndarray:
        _, mean_sq = self.moments(x, t, ids, fn, squares=True)
        return mean_sq


class VarGrad(NoisyGradients):
    """VarGrad (Adebayo et al. 2018): the variance of the gradient over ``n`` noisy copies,
    ``E[g^2] - E[g]^2`` (population variance, non-negative), summed over channels by default.

    Parameters as :class:`SmoothGrad`; ``reduce`` defaults to ``"sum"`` (``"max-abs"``
    takes the channel maximum). ``n = 1`` gives zero maps.
    """


    def __init__(
        self,
        *,
        n: int = 50,
        sigma: float = 0.15,
        noise_range: str = "image",
        seed: int = 0,
        reduce: str = "sum",
        batch_size: int = 16,
    ):
        self.n = n
        self.sigma = sigma
        self.noise_range = noise_range
        self.seed = seed
        self.reduce = reduce
        self.batch_size = batch_size

    def attribute(self, model: Any, x: np.ndarray, t: np.ndarray, ids: np.ndarray, fn: Any) -> np.ndarray:
        mean, mean_sq = self.moments(x, t, ids, fn, squares=True)
        assert mean_sq is not None
        return np.maximum(mean_sq - mean * mean, 0.0)
