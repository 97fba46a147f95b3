"""Localisation measures: one heatmap against one ground-truth mask, per image, at image resolution.

Every measure reads a heatmap (h, w) and a bool mask (H, W). The heatmap is first
brought to the mask's resolution by :func:`at_image_resolution`: bilinear, with the
harness's own operator (:func:`bench.engine.regions.resize_bilinear`, half-pixel centres,
edges clamped, no antialias: ``tf.image.resize(..., "bilinear")``, the resize the
harness applies before it scores regions), computed in float64 and rounded to float32
(the heatmaps' precision) so that equal heatmap values stay exactly equal. The
measure then applies its own transform (signed, positive part) at image resolution.
The pointing game is the exception (:func:`maxima_at_image_resolution`): it finds the
maximum on the heatmap's own grid, because a bilinear resize moves a coarse map's maximum.

An empty mask (a Normal image has no lesion) gives NaN: the harness leaves it out of
the statistics and counts it (``n_excluded``). Each measure has a ``chance`` value,
what a constant heatmap scores on that image (the fraction of a tie that hits), so a
value can be read against its chance level.

Ties are shared, never broken at random: the pointing game counts the fraction of the
maximal pixels that hit, top-k sets take a fractional share of the pixels tied at the
k-th value, and the ROC AUC gives tied pixels half credit (as ``sklearn.metrics.roc_auc_score``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from scipy import ndimage

from bench.engine.regions import resize_bilinear
from bench.plugin.names import name_problem

#: Zhang et al. (2018) count a hit within 15 px of the object at 224 px: 15/224 of the image size.
DEFAULT_TOLERANCE = 15 / 224


# ---- resolution -------------------------------------------------------------------------
def at_image_resolution(heatmap: Any, shape: Sequence[int]) -> np.ndarray:
    """float32 (H, W): ``heatmap`` (h, w) resized bilinearly to ``shape`` the way the harness resizes.

    :func:`bench.engine.regions.resize_bilinear` (``M_rows @ heatmap @ M_cols.T``, in float64),
    rounded to float32 so that values equal in the heatmap stay equal (ties stay ties).
    """
    return resize_bilinear(heatmap, shape).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _nearest_index(out_size: int, in_size: int) -> np.ndarray:
    idx = np.minimum(((np.arange(out_size) + 0.5) * in_size / out_size).astype(np.int64), in_size - 1)
    idx.flags.writeable = False
    return idx


def maxima_at_image_resolution(heatmap: Any, shape: Sequence[int]) -> np.ndarray:
    """float32 (H, W): 1 on the pixels covered by the heatmap's maximal cell(s), 0 elsewhere.

    The pointing game reads only where the maximum is, and a bilinear resize moves the
    maximum of a coarse map: clamped edges keep a border cell's peak while an interior
    cell's peak is averaged with its neighbours, so the resized maxima of i.i.d. 9x9 maps
    land in a corner cell about 2.7x as often as chance and in the centre cells 0.1-0.4x
    (2000 maps onto 64 px). The maximum
    is therefore found on the heatmap's own grid (exact ties kept) and each maximal cell
    covers the pixels whose centre falls in it (nearest-neighbour, half-pixel centres).
    A map of the image's size is its own grid.
    """
    h = np.asarray(heatmap)
    top = (h == h.max()).astype(np.float32)
    rows, cols = int(shape[0]), int(shape[1])
    if h.shape == (rows, cols):
        return top
    return top[_nearest_index(rows, h.shape[0])][:, _nearest_index(cols, h.shape[1])]


def tolerance_pixels(tolerance: float, shape: Sequence[int]) -> float:
    """The pointing game's tolerance in pixels: ``tolerance`` x sqrt(H W) (the side of a square image)."""
    return float(tolerance) * math.sqrt(float(shape[0]) * float(shape[1]))


# ---- per-image measures (heatmap already at the mask's resolution) -----------------------
def _near(mask: np.ndarray, tol_px: float) -> np.ndarray:
    """Pixels whose centre lies within ``tol_px`` (Euclidean) of a mask pixel's centre."""
    if tol_px <= 0:
        return mask
    return ndimage.distance_transform_edt(~mask) <= tol_px


def pointing_game(heatmap: np.ndarray, mask: np.ndarray, tol_px: float) -> tuple[float, float]:
    """(hit, chance): the fraction of the maximal pixels within ``tol_px`` of the mask; NaN if empty.

    ``chance`` is the fraction of all pixels within the tolerance: what a constant map scores.
    """
    if not mask.any():
        return math.nan, math.nan
    near = _near(mask, tol_px)
    top = heatmap == heatmap.max()
    return float(near[top].mean()), float(near.mean())


def relevance_mass(heatmap: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(share, chance): the share of the positive relevance inside the mask (Arras et al. 2022).

    NaN when the mask is empty or the map has no positive relevance (nothing to share out).
    """
    if not mask.any():
        return math.nan, math.nan
    pos = np.maximum(heatmap.astype(np.float64), 0.0)
    total = pos.sum()
    chance = float(mask.mean())
    if total <= 0:
        return math.nan, chance
    return float(pos[mask].sum() / total), chance


def topk_hits(heatmap: np.ndarray, mask: np.ndarray, k: int) -> float:
    """How many of the ``k`` highest pixels lie in the mask, pixels tied at the k-th value shared out.

    The tied pixels at the threshold enter the top-k set with equal weight (the expected
    count under a uniformly random tie-break), so the result may be fractional.
    """
    v = heatmap.reshape(-1)
    m = mask.reshape(-1)
    k = int(min(max(k, 0), v.size))
    if k == 0:
        return 0.0
    t = np.partition(v, v.size - k)[v.size - k]  # the k-th largest value
    above = v > t
    tied = v == t
    need = k - int(above.sum())
    return float((above & m).sum()) + need * float((tied & m).sum()) / float(tied.sum())


def relevance_rank(heatmap: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(accuracy, chance): of the K = |mask| highest pixels, the fraction in the mask (Arras et al. 2022)."""
    k = int(mask.sum())
    if k == 0:
        return math.nan, math.nan
    return topk_hits(heatmap, mask, k) / k, float(mask.mean())


def bounding_box(mask: np.ndarray) -> np.ndarray:
    """bool (H, W): the smallest axis-aligned box holding every mask pixel (empty for an empty mask)."""
    box = np.zeros_like(mask, dtype=bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size:
        box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
    return box


def energy_pointing_game(heatmap: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(share, chance): the share of the positive relevance inside the mask's bounding box (Wang et al. 2020).

    NaN when the mask is empty or the map has no positive relevance.
    """
    if not mask.any():
        return math.nan, math.nan
    box = bounding_box(mask)
    pos = np.maximum(heatmap.astype(np.float64), 0.0)
    total = pos.sum()
    chance = float(box.mean())
    if total <= 0:
        return math.nan, chance
    return float(pos[box].sum() / total), chance


def roc_auc(heatmap: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(auc, 0.5): the ROC AUC of the heatmap's values as a pixel classifier of the mask.

    The Mann-Whitney form, P(a mask pixel outranks an outside one) with ties counting one
    half, equal to ``sklearn.metrics.roc_auc_score(mask.ravel(), heatmap.ravel())``: the
    outside values sorted once, each mask value's count of lower and equal ones by binary
    search (exact integer counts). NaN when the mask is empty or covers the whole image.
    """
    m = mask.reshape(-1)
    v = heatmap.reshape(-1)
    pos = int(m.sum())
    neg = m.size - pos
    if pos == 0 or neg == 0:
        return math.nan, math.nan
    outside = np.sort(v[~m])
    inside = v[m]
    below = np.searchsorted(outside, inside, side="left")
    tied = np.searchsorted(outside, inside, side="right") - below
    auc = (float(below.sum()) + 0.5 * float(tied.sum())) / (float(pos) * float(neg))
    return auc, 0.5


def topk_iou(heatmap: np.ndarray, mask: np.ndarray, k: int | None = None) -> tuple[float, float]:
    """(iou, chance): IoU of the k highest pixels (``None``: k = |mask|) with the mask.

    The top-k set is fractional where pixels tie at the k-th value (:func:`topk_hits`):
    ``IoU = hits / (k + |mask| - hits)``.
    """
    size = int(mask.sum())
    if size == 0:
        return math.nan, math.nan
    k = size if k is None else int(k)
    hits = topk_hits(heatmap, mask, k)
    chance_hits = k * size / mask.size
    return hits / (k + size - hits), chance_hits / (k + size - chance_hits)


# ---- the components ---------------------------------------------------------------------
def _param_error(param: str, message: str) -> ValueError:
    err = ValueError(message)
    err.param = param  # type: ignore[attr-defined]  # the harness names the config key from it
    return err


class MaskMetric:
    """Base of the localisation metrics: a per-image measure of a heatmap against ``data.mask(mask)``.

    A subclass names its headline :attr:`column` and its per-image :meth:`measure` (a function
    of the heatmap at image resolution and the bool mask, returning ``(value, chance)``);
    a measure without parameters is declared in one line
    (``column, measure = "<name>", staticmethod(<function>)``).

    Parameters
    ----------
    mask:
        The name of the dataset mask to localise against (default: :attr:`declared_masks`).
        The registered specs declare it a mask parameter (``MetricSpec.mask_params``), so a
        run hands the metric the mask it names: ``[metrics.params.pointing-game] mask = "lung"``
        (a dataset without that mask leaves the metric out of its cells, with the reason).
    """

    #: The headline column (the metric's name).
    column: ClassVar[str] = ""
    #: The masks the registered spec declares by default (its ``MetricInputs.masks``): the default ``mask``.
    declared_masks: ClassVar[tuple[str, ...]] = ("lesion",)
    #: How a heatmap is brought to the mask's resolution before :meth:`measure` reads it.
    resize = staticmethod(at_image_resolution)

    def __init__(self, *, mask: str = "lesion"):
        self.mask = mask

    def get_params(self) -> dict[str, Any]:
        return {"mask": self.mask}

    def validate(self) -> None:
        problem = name_problem(self.mask)
        if problem is not None:
            raise _param_error("mask", f"{type(self).__name__}: mask={self.mask!r} is not a mask name: {problem}")

    def measure(self, heatmap: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
        raise NotImplementedError

    def compute(self, data: Any) -> dict[str, np.ndarray]:
        self.validate()
        maps = data.heatmaps
        masks = data.mask(self.mask)
        n = len(masks)
        values = np.full(n, np.nan)
        chance = np.full(n, np.nan)
        shape = masks.shape[1:]
        for i in range(n):
            values[i], chance[i] = self.measure(self.resize(maps[i], shape), np.asarray(masks[i], bool))
        return {self.column: values, "chance": chance}


class PointingGame(MaskMetric):
    """Pointing game (Zhang et al. 2018): does the heatmap's maximum fall on the mask?

    A hit when the maximum lies within ``tolerance`` x sqrt(H W) pixels of a mask pixel
    (15/224: 15 px at 224 px); with several maximal pixels, the fraction of them that hit
    (a constant map scores the chance level, not a hit everywhere). Signed heatmap.
    """

    column = "pointing-game"
    resize = staticmethod(maxima_at_image_resolution)  # the maximal cells, not a bilinear resize

    def __init__(self, *, mask: str = "lesion", tolerance: float = DEFAULT_TOLERANCE):
        super().__init__(mask=mask)
        self.tolerance = tolerance

    def get_params(self) -> dict[str, Any]:
        return {"mask": self.mask, "tolerance": self.tolerance}

    def validate(self) -> None:
        super().validate()
        t = self.tolerance
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= float(t) < 1:
            raise _param_error("tolerance", f"PointingGame: tolerance must be a fraction of the image size in [0, 1), got {t!r}")

    def measure(self, heatmap: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
        return pointing_game(heatmap, mask, tolerance_pixels(self.tolerance, mask.shape))


class RelevanceMass(MaskMetric):
    """Relevance mass accuracy (Arras et al. 2022): the share of the positive relevance inside the mask."""

    column, measure = "relevance-mass", staticmethod(relevance_mass)


class RelevanceRank(MaskMetric):
    """Relevance rank accuracy (Arras et al. 2022): the share of the |mask| highest pixels inside the mask."""

    column, measure = "relevance-rank", staticmethod(relevance_rank)


class EnergyPointingGame(MaskMetric):
    """Energy-based pointing game (Wang et al. 2020, Score-CAM): positive relevance in the mask's bounding box."""

    column, measure = "energy-pointing-game", staticmethod(energy_pointing_game)


class PixelAUC(MaskMetric):
    """ROC AUC of the heatmap as a pixel classifier of the mask (ties count one half)."""

    column, measure = "pixel-auc", staticmethod(roc_auc)


class TopKIoU(MaskMetric):
    """IoU of the heatmap's k highest pixels with the mask.

    ``fraction``: ``None`` (default) takes k = the mask's size (the IoU of a perfect map
    is then 1); a number in (0, 1] takes k = round(fraction x H x W) (at least 1).
    """

    column = "topk-iou"

    def __init__(self, *, mask: str = "lesion", fraction: float | None = None):
        super().__init__(mask=mask)
        self.fraction = fraction

    def get_params(self) -> dict[str, Any]:
        return {"mask": self.mask, "fraction": self.fraction}

    def validate(self) -> None:
        super().validate()
        f = self.fraction
        if f is not None and (isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < float(f) <= 1):
            raise _param_error("fraction", f"TopKIoU: fraction must be None (k = the mask's size) or in (0, 1], got {f!r}")

    def measure(self, heatmap: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
        k = None if self.fraction is None else max(1, round(float(self.fraction) * mask.size))
        return topk_iou(heatmap, mask, k)


class LungRelevance(RelevanceMass):
    """The share of the positive relevance inside the lung mask, on images of every class.

    The shortcut detector (DeGrave et al. 2021): a model that reads a marker outside the
    body moves its explanations out of the lungs, below the chance level (the lungs' area share).
    """

    column = "lung-relevance"
    declared_masks = ("lung",)

    def __init__(self, *, mask: str = "lung"):
        super().__init__(mask=mask)


class MaskedAOPC(MaskMetric):
    """MoRF AOPC on the images whose mask is non-empty; NaN on the others (left out and counted).

    ``sum_{k=1..L} (f(x^(0)) - f(x^(k))) / (L+1)`` per image (:func:`bench.engine.curves.aopc_from_curves`),
    the study's AOPC, kept only where the image has a ground-truth region. The oracle controls
    (the mask as the heatmap, and its inverse) are defined only there: on an image whose mask is
    empty (a Normal image has no lesion) their map is constant, its order the seeded tie-break, so
    the plain AOPC mixes those images' random orders into the oracles' scores and shrinks the
    gaps that tell whether the metric can rank methods at all. Reads only the MoRF curves and
    the mask: no extra forward pass.
    """

    column = "masked-aopc"

    def compute(self, data: Any) -> dict[str, np.ndarray]:
        from bench.engine.curves import aopc_from_curves

        self.validate()
        masks = np.asarray(data.mask(self.mask))
        values = aopc_from_curves(data.curve("morf"))
        present = masks.reshape(len(masks), -1).any(axis=1)
        return {self.column: np.where(present, values, np.nan)}


#: The measures on the lesion mask, in the order they are registered.
MEASURES: tuple[type[MaskMetric], ...] = (
    PointingGame, RelevanceMass, RelevanceRank, EnergyPointingGame, PixelAUC, TopKIoU,
)


def for_mask(cls: type[MaskMetric], mask: str) -> type[MaskMetric]:
    """``cls`` measuring against ``mask`` by default (its declared mask); ``cls`` itself if it already does.

    The parameter still chooses another mask (``mask_params``): the subclass only moves the default.
    """
    if cls.declared_masks == (mask,):
        return cls
    name = f"{cls.__name__}For_{''.join(ch if ch.isalnum() else '_' for ch in mask)}"
    return type(name, (cls,), {
        "__init__": functools.partialmethod(cls.__init__, mask=mask),
        "declared_masks": (mask,),
        "__module__": cls.__module__,
        "__qualname__": name,
        "__doc__": f"{cls.__name__} against the dataset mask {mask!r}.\n\n{cls.__doc__ or ''}",
    })
