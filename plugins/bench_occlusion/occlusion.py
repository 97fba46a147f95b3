"""Occlusion (Zeiler & Fergus 2014, arXiv 1311.2901), batched.

Each window of the image is replaced by a fill value and the model re-run; the
relevance of the window is the drop of the target's score, ``f(x) - f(x with the
window filled)`` (signed: a window whose removal raises the score gets a negative
relevance). ``f`` is the target class's softmax probability (``score="probability"``,
default) or its pre-softmax logit (``score="logit"``).

Windows: the region grid by default (``grid=9``, the study's 9x9 blocks with
:func:`bench.engine.regions.region_boxes`' ``array_split`` bounds); the map is then
(N, rows, cols), one value per region, which the harness reads as the region scores
as they are. With ``patch`` (pixels) set, square (or ``(ph, pw)``) windows slide by
``stride`` (default: the patch, no overlap) and a last window is added flush with
the bottom/right edge where the stride does not reach it, so every pixel is
covered; the map is then (N, H, W), each pixel the mean drop of the windows that
cover it.

Strategies (``strategy``): every occluded row differs from its original image in one
window only, so ``"incremental"`` computes the rows on the incremental engine
(:func:`bench.engine.incremental.occlusion_outputs`): one full pass per image, then
per row only the activations the window reaches, exactly (equal to full passes within
float rounding). ``"full"`` streams all (image, window) rows through one ``tf.function``
per model and image shape (:mod:`bench_occlusion.engine`), ``batch_size`` rows per
pass, built on the fly: no per-image loop around a model call, memory one chunk.
``"auto"`` (default) is incremental where the engine can walk the model and predicts a
gain, full passes otherwise; what ran and why is in :attr:`Occlusion.strategy_info_`
after each call. The logit score runs incrementally on a logits view of the model (cut
before its softmax), the probability on the model itself.

Cost: ``L + 1`` model evaluations per map (L windows and the original image; 82 on the
9x9 grid): ``L + 1`` forward passes with full passes; incrementally one full pass plus
L rows that each cost ``1 / predicted_gain`` of a pass (the engine's box-count estimate),
which :meth:`Occlusion.passes_per_map` reports after a call.
"""

from __future__ import annotations

import logging
import numbers
from typing import Any

import numpy as np
from bench_gradients.engine import (
    ParameterError,
    check_choice,
    check_float,
    check_inputs,
    check_int,
)

from bench.engine.regions import check_ids, grid_shape, region_boxes
from bench.engine.tracing import traced

from .engine import SCORES, score_function, stream

log = logging.getLogger(__name__)

#: how Occlusion computes the occluded rows (see the module's docstring)
STRATEGIES: tuple[str, ...] = ("auto", "incremental", "full")

#: the most bytes of model outputs one incremental call returns (images are chunked to fit)
OUTPUT_BUDGET_BYTES = 64 * 2**20


def _pair(value: Any, param: str) -> tuple[int, int]:
    """An int or (h, w) of ints >= 1 as (h, w)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    try:
        h, w = value
    except (TypeError, ValueError):
        raise ParameterError(param, f"{param} must be an integer or (height, width), got {value!r}") from None
    return check_int(h, param), check_int(w, param)


def sliding_positions(size: int, patch: int, stride: int) -> np.ndarray:
    """Start offsets of windows of ``patch`` pixels every ``stride`` pixels, the last flush with
    the edge (so every pixel is covered)."""
    if patch > size:
        raise ParameterError("patch", f"patch {patch} is larger than the image ({size} pixels)")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] + patch < size:
        starts.append(size - patch)
    return np.asarray(starts, dtype=np.int64)


def logits_network(model: Any, image_shape: tuple[int, ...]) -> Any:
    """A functional ``keras.Model`` images -> the target logits of bench ``model`` (its
    ``logits_keras`` view applied to a fresh input), built once per Keras model and shape.

    The incremental engine walks it like the model itself (the view's sub-model is inlined).
    """
    shape = tuple(int(d) for d in image_shape)

    def build() -> Any:
        import keras

        view = model.logits_keras
        inputs = keras.Input(shape)
        return keras.Model(inputs, view(inputs), name=f"{getattr(model.keras, 'name', 'model')}_logits")

    return traced(model.keras, ("bench_occlusion.logits_network", shape), build)


class Occlusion:
    """Occlusion: the drop of the target's score when a window is filled.

    Parameters
    ----------
    grid:
        The windows are the regions of this grid (int or (rows, cols); default 9, the
        study's 9x9 grid); the map has the grid's shape. Ignored when ``patch`` is set.
    patch:
        ``None`` (default: the grid) or the window size in pixels (int or (h, w)); the
        map is then a pixel map, overlapping windows averaged.
    stride:
        The step between windows in pixels (int or (h, w)); ``None`` = the patch.
    fill:
        The value the window's pixels (all channels) take in the [0, 1] input: a number
        (default 0.0, black) or ``"mean"``, the image's own mean over all pixels and channels.
    score:
        ``"probability"`` (default, the target's softmax probability) or ``"logit"``.
    batch_size:
        Occluded images per forward pass (default 32).
    strategy:
        ``"auto"`` (default), ``"incremental"`` or ``"full"``: how the occluded rows are
        computed (the module's docstring); the maps are the same within float rounding.

    After a call, ``strategy_info_`` says which strategy ran and why (``used``, ``reason``,
    the engine's ``predicted_gain`` where it was asked).
    """

    def __init__(
        self,
        *,
        grid: int | tuple[int, int] = 9,
        patch: int | tuple[int, int] | None = None,
        stride: int | tuple[int, int] | None = None,
        fill: float | str = 0.0,
        score: str = "probability",
        batch_size: int = 32,
        strategy: str = "auto",
    ):
        self.grid = grid
        self.patch = patch
        self.stride = stride
        self.fill = fill
        self.score = score
        self.batch_size = batch_size
        self.strategy = strategy

    def get_params(self) -> dict[str, Any]:
        return {
            "grid": self.grid, "patch": self.patch, "stride": self.stride, "fill": self.fill,
            "score": self.score, "batch_size": self.batch_size, "strategy": self.strategy,
        }

    def __repr__(self) -> str:
        return "Occlusion(" + ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()) + ")"

    def validate(self) -> None:
        """Check the stored parameters (cheap; the plan calls this): ``ParameterError`` if bad."""
        if self.patch is None:
            if self.stride is not None:
                raise ParameterError("stride", "stride needs patch (the grid's regions do not slide)")
            try:
                grid_shape(self.grid)
            except Exception as exc:  # noqa: BLE001 - re-raised naming the parameter
                raise ParameterError("grid", str(exc)) from None
        else:
            _pair(self.patch, "patch")
            if self.stride is not None:
                _pair(self.stride, "stride")
        if isinstance(self.fill, str):
            if self.fill != "mean":
                raise ParameterError("fill", f"fill must be a number or 'mean', got {self.fill!r}")
        else:
            check_float(self.fill, "fill")
        check_choice(self.score, "score", SCORES)
        check_int(self.batch_size, "batch_size")
        check_choice(self.strategy, "strategy", STRATEGIES)

    # ---- windows -------------------------------------------------------------------------
    def windows(self, image_shape: tuple[int, ...]) -> np.ndarray:
        """int (L, 4) window boxes ``(y0, y1, x0, x1)`` (half-open) for an image of ``image_shape``."""
        self.validate()
        h, w = int(image_shape[0]), int(image_shape[1])
        if self.patch is None:
            try:
                return region_boxes((h, w), self.grid)
            except Exception as exc:  # noqa: BLE001 - re-raised naming the parameter
                raise ParameterError("grid", str(exc)) from None
        ph, pw = _pair(self.patch, "patch")
        sh, sw = _pair(self.stride if self.stride is not None else self.patch, "stride")
        ys, xs = sliding_positions(h, ph, sh), sliding_positions(w, pw, sw)
        return np.array([(y, y + ph, x, x + pw) for y in ys for x in xs], dtype=np.int64)

    def passes_per_map(self, image_shape: tuple[int, ...] | None = None) -> float:
        """Forward-pass equivalents per map.

        Full passes: L windows + the original image (82 on the 9x9 grid). After a call (and
        ``image_shape`` not given), what that call cost: ``L + 1`` where it ran full passes,
        ``1 + L / predicted_gain`` where it ran incrementally (one full pass, then L rows at
        the engine's box-count estimate of their share of a pass).

        On the grid the full-pass count does not depend on the image; with ``patch`` it
        does, and ``image_shape`` (H, W[, C]) must be given before any call.
        """
        measured = self.__dict__.get("_passes_per_map")
        if image_shape is None and measured is not None:
            return float(measured)
        if self.patch is None:
            self.validate()
            rows, cols = grid_shape(self.grid)
            return rows * cols + 1
        if image_shape is None:
            raise ValueError(
                "Occlusion with patch/stride: the number of windows depends on the image size; "
                "call passes_per_map(image_shape=(H, W))"
            )
        return len(self.windows(image_shape)) + 1

    def fill_values(self, x: np.ndarray) -> np.ndarray:
        """float32 (N,): the fill value of each image."""
        if isinstance(self.fill, str):
            return x.reshape(len(x), -1).mean(axis=1, dtype=np.float64).astype(np.float32)
        return np.full(len(x), float(self.fill), np.float32)

    # ---- the method ----------------------------------------------------------------------
    def drops(
        self, model: Any, images: np.ndarray, targets: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(float64 drops (N, L), window boxes (L, 4)): ``f(x) - f(x with window l filled)``."""
        self.validate()
        bm, x, t, _ = check_inputs(model, images, targets, None, who="Occlusion")
        boxes = self.windows(x.shape[1:3])
        n_windows = len(boxes)
        if len(x) == 0:
            return np.zeros((0, n_windows)), boxes
        fills = self.fill_values(x)
        self.__dict__["_passes_per_map"] = float(n_windows + 1)
        if self.strategy == "full":
            self.strategy_info_ = {"requested": "full", "used": "full", "reason": "requested"}
        else:
            scores_inc = self._incremental_scores(bm, x, t, boxes, fills)
            if scores_inc is not None:
                return scores_inc[:, :1] - scores_inc[:, 1:], boxes
        fn = score_function(bm, tuple(x.shape[1:]))

        def rows(img: np.ndarray, smp: np.ndarray) -> tuple[np.ndarray, None]:
            out = x[img]  # a copy (fancy indexing); sample 0 is the image itself
            for r in np.flatnonzero(smp):
                y0, y1, x0, x1 = boxes[smp[r] - 1]
                out[r, y0:y1, x0:x1, :] = fills[img[r]]
            return out, None

        scores = np.empty((len(x), n_windows + 1), dtype=np.float64)
        for img, smp, s, _ in stream(
            fn, t, n_windows + 1, rows, batch_size=int(self.batch_size), score=self.score
        ):
            scores[img, smp] = s
        return scores[:, :1] - scores[:, 1:], boxes

    def _incremental_scores(
        self, bm: Any, x: np.ndarray, t: np.ndarray, boxes: np.ndarray, fills: np.ndarray
    ) -> np.ndarray | None:
        """float64 (N, L + 1) scores (the original, then each window) from the incremental
        engine, or None where ``"auto"`` chose full passes (``strategy_info_`` says why)."""
        from bench.engine.incremental import occlusion_outputs

        net = bm if self.score == "probability" else logits_network(bm, tuple(x.shape[1:]))
        n, n_windows = len(x), len(boxes)
        per_image = n_windows * max(int(bm.num_classes), 1) * 4
        chunk = max(1, OUTPUT_BUDGET_BYTES // max(per_image, 1))
        scores = np.empty((n, n_windows + 1), dtype=np.float64)
        info: dict[str, Any] = {}
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            out = occlusion_outputs(
                net, x[s:e], boxes, fill=fills[s:e], batch_size=int(self.batch_size),
                strategy=self.strategy, run_full=False,
            )
            info = dict(out.info)
            if out.occluded is None:  # "auto" chose full passes: the explainer's own path
                self.strategy_info_ = info
                log.info("Occlusion: full passes (%s)", info.get("reason"))
                return None
            rows = np.arange(e - s)
            tt = t[s:e]
            scores[s:e, 0] = out.base[rows, tt]
            scores[s:e, 1:] = out.occluded[rows, :, tt]
        self.strategy_info_ = info
        gain = info.get("predicted_gain")
        if gain:
            self.__dict__["_passes_per_map"] = 1.0 + n_windows / float(gain)
        return scores

    def explain(
        self, model: Any, images: np.ndarray, targets: np.ndarray, *, ids: Any = None
    ) -> np.ndarray:
        """float32 maps of ``targets``: (N, rows, cols) on the grid, (N, H, W) with ``patch``.

        ``ids`` is accepted for uniformity and unused (the method is deterministic).
        """
        x = np.asarray(images)
        check_ids(ids, len(x))
        drops, boxes = self.drops(model, images, targets)
        n = len(drops)
        if self.patch is None:
            rows, cols = grid_shape(self.grid)
            return drops.reshape(n, rows, cols).astype(np.float32)
        h, w = int(x.shape[1]), int(x.shape[2])
        total = np.zeros((n, h, w), dtype=np.float64)
        count = np.zeros((h, w), dtype=np.float64)
        for k, (y0, y1, x0, x1) in enumerate(boxes):
            total[:, y0:y1, x0:x1] += drops[:, k, None, None]
            count[y0:y1, x0:x1] += 1.0
        return (total / count).astype(np.float32)
