"""Fill perturbations: the masked pixels take a value computed from the original image.

* :class:`Blur` (``blur``): the pixel of the Gaussian-blurred original (Petsiuk et al. 2018's
  insertion/deletion baseline);
* :class:`MeanFill` (``mean``): the original image's mean, per channel;
* :class:`BlackFill` (``black``): 0.

``x^(k) = where(mask_k, fill(x^(0)), x^(0))``: the fill is computed from the *original*
image, never from ``x^(k-1)``, so a pixel once perturbed keeps its value at every later
step and the pixels that change between two steps are exactly the new region's. All three
are **mask-local**: only pixels inside ``masks`` change. The blur reads pixels outside the
mask to compute a masked pixel's value, but it writes none of them, and that is what
mask-locality means to the engine (incremental inference compares the pixels themselves).
None of them draws a random number: ``seeds`` are accepted and ignored (trivially
deterministic).
"""

from __future__ import annotations

import hashlib
import numbers
from collections import OrderedDict
from typing import Any

import numpy as np


def check_inputs(name: str, images: Any, masks: Any, seeds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float32 (B, H, W, C), bool (B, H, W), (B,) seeds), or a ValueError naming ``name``."""
    x = np.asarray(images, dtype=np.float32)
    m = np.asarray(masks, dtype=bool)
    s = np.asarray(seeds).reshape(-1)
    if x.ndim != 4:
        raise ValueError(f"{name} expects images (B, H, W, C), got shape {x.shape}")
    if m.shape != x.shape[:3]:
        raise ValueError(f"{name} expects masks (B, H, W) = {x.shape[:3]}, got {m.shape}")
    if len(s) != len(x):
        raise ValueError(f"{name} expects one seed per image ({len(x)}), got {len(s)}")
    return x, m, s


def digest(array: np.ndarray) -> bytes:
    """A 16-byte content hash of an array (its dtype, shape and bytes)."""
    a = np.ascontiguousarray(array)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.digest()


def finite_number(value: Any, what: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(float(value)):
        raise ValueError(f"{what} must be a finite number >= {minimum:g}, got {value!r}")
    if float(value) < minimum:
        raise ValueError(f"{what} must be a finite number >= {minimum:g}, got {value!r}")
    return float(value)


class _Fill:
    """Base: ``out = where(mask, fill(image), image)``, fills memoised per image content."""

    name = "fill"
    mask_local = True
    #: a pixel once perturbed keeps its value: step k changes only region r_k
    step_local = True
    #: fill images kept (an LRU keyed by the image's content): the engine asks for the same
    #: image at every step of its curve
    cache_size = 16

    def get_params(self) -> dict[str, Any]:
        return {}

    def validate(self) -> None:
        """Nothing to check by default."""

    def fill(self, image: np.ndarray) -> np.ndarray:
        """float32 (H, W, C) or (C,): the value each masked pixel of ``image`` takes."""
        raise NotImplementedError

    def _cached_fill(self, image: np.ndarray) -> np.ndarray:
        cache: OrderedDict[tuple[Any, ...], np.ndarray] = self.__dict__.setdefault("_fills", OrderedDict())
        key = (digest(image), repr(sorted(self.get_params().items())))
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return hit
        value = np.asarray(self.fill(image), dtype=np.float32)
        value.flags.writeable = False
        cache[key] = value
        while len(cache) > self.cache_size:
            cache.popitem(last=False)
        return value

    def perturb(self, images: np.ndarray, masks: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        self.validate()
        x, m, _ = check_inputs(type(self).__name__, images, masks, seeds)
        out = x.copy()
        for i in range(len(x)):
            if not m[i].any():
                continue
            value = self._cached_fill(x[i])
            if value.ndim == 1:
                out[i][m[i]] = value
            else:
                out[i][m[i]] = value[m[i]]
        return out


class BlackFill(_Fill):
    """``perturb(images, masks, seeds)``: masked pixels set to 0 (black)."""

    name = "black"

    def fill(self, image: np.ndarray) -> np.ndarray:
        return np.zeros(image.shape[-1], np.float32)


class MeanFill(_Fill):
    """``perturb(images, masks, seeds)``: masked pixels set to the original image's mean, per channel."""

    name = "mean"

    def fill(self, image: np.ndarray) -> np.ndarray:
        return image.astype(np.float64).mean(axis=(0, 1)).astype(np.float32)


class Blur(_Fill):
    """``perturb(images, masks, seeds)``: masked pixels replaced by the Gaussian-blurred original's.

    The blur is ``scipy.ndimage.gaussian_filter`` of each channel of the original image
    with standard deviation ``sigma`` pixels (``mode="reflect"``, kernel truncated at 4
    sigma), computed once per image and memoised.

    Parameters
    ----------
    sigma:
        The blur's standard deviation in pixels (default 5.0: Petsiuk et al.'s insertion
        baseline, an 11-pixel kernel with sigma 5 on 224-pixel images). 0 leaves the image as it is.
    """

    name = "blur"

    def __init__(self, *, sigma: float = 5.0):
        self.sigma = sigma

    def get_params(self) -> dict[str, Any]:
        return {"sigma": self.sigma}

    def validate(self) -> None:
        finite_number(self.sigma, "sigma")

    def fill(self, image: np.ndarray) -> np.ndarray:
        from scipy.ndimage import gaussian_filter

        sigma = float(self.sigma)
        if sigma == 0.0:
            return image.copy()
        return gaussian_filter(image.astype(np.float32), sigma=(sigma, sigma, 0.0), mode="reflect", truncate=4.0)
