"""Complexity measures of a heatmap on its own (no mask, no model), per image, at image resolution.

Heatmaps of different explainers come at different sizes (a 2x2 Grad-CAM map, a
64x64 gradient map), and both measures depend on the number of values, so each map
is first resized to the image's resolution the way the harness resizes heatmaps:
bilinear, :func:`bench.engine.regions.resize_bilinear` (half-pixel centres, edges clamped,
no antialias, as ``tf.image.resize(..., "bilinear")``), in float64. The resolution is
read off ``data.images`` (the metric declares the images for that alone).

- :func:`gini` (sparseness, Chalasani et al. 2020): the Gini index of the absolute
  values; 1 = all relevance on one pixel, 0 = uniform. An all-zero map counts as uniform: 0.
- :func:`entropy` (complexity, Bhatt et al. 2020): the Shannon entropy of the fractional
  contributions ``p_i = |h_i| / sum |h|``, in nats, and normalised by its maximum
  ``log(H W)`` into [0, 1]; an all-zero map counts as uniform: log(H W), normalised 1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bench.engine.regions import resize_bilinear


def gini(values: Any) -> float:
    """The Gini index of ``|values|``: ``sum_i (2i - n - 1) x_(i) / (n sum x)``, x ascending, i = 1..n.

    0 for a uniform (or all-zero) map, ``1 - 1/n`` for a single non-zero value.
    """
    x = np.sort(np.abs(np.asarray(values, dtype=np.float64)).reshape(-1))
    n = x.size
    total = x.sum()
    if n == 0 or total <= 0:
        return 0.0
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(((2 * i - n - 1) * x).sum() / (n * total))


def entropy(values: Any) -> float:
    """Shannon entropy (nats) of ``p = |values| / sum |values|`` (0 log 0 = 0); an all-zero map: log(n)."""
    x = np.abs(np.asarray(values, dtype=np.float64)).reshape(-1)
    total = x.sum()
    if x.size == 0:
        return math.nan
    if total <= 0:
        return math.log(x.size)
    p = x[x > 0] / total
    return float(-(p * np.log(p)).sum())


def _resolution(data: Any) -> tuple[int, int]:
    images = data.images
    return int(images.shape[1]), int(images.shape[2])


class Sparseness:
    """Sparseness (Chalasani et al. 2020): the Gini index of the absolute heatmap at image resolution.

    Higher = relevance concentrated on fewer pixels (a simpler explanation).
    """

    def get_params(self) -> dict[str, Any]:
        return {}

    def compute(self, data: Any) -> dict[str, np.ndarray]:
        shape = _resolution(data)
        maps = data.heatmaps
        return {"sparseness": np.array([gini(resize_bilinear(m, shape)) for m in maps], dtype=np.float64)}


class EntropyComplexity:
    """Complexity (Bhatt et al. 2020): entropy of the absolute heatmap's fractional contributions.

    Headline: normalised by log(H W) into [0, 1] (comparable across image sizes); the
    ``nats`` column holds the entropy itself. Lower = a simpler explanation.
    """

    def get_params(self) -> dict[str, Any]:
        return {}

    def compute(self, data: Any) -> dict[str, np.ndarray]:
        shape = _resolution(data)
        nats = np.array([entropy(resize_bilinear(m, shape)) for m in data.heatmaps], dtype=np.float64)
        return {"entropy-complexity": nats / math.log(shape[0] * shape[1]), "nats": nats}
