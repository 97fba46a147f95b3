"""Additive Gaussian noise inside the perturbed regions (the reference study: sigma 0.1).

``x^(k) = x + noise * mask_k``: the noise field of an image is drawn once from
``np.random.default_rng(seed)`` (shape (H, W, C) of the image), so every step,
every explainer and every batch size sees the same noise on the same pixel.
Equal in distribution to the study's sequential definition
``x^(k) = x^(k-1) + N(0, sigma) on r_k`` and paired across explainers.
"""

from __future__ import annotations

import numbers
from collections import OrderedDict
from typing import Any

import numpy as np


class GaussianNoise:
    """``perturb(images, masks, seeds)``: add N(0, sigma) noise where ``masks`` is True.

    Parameters
    ----------
    sigma:
        Standard deviation of the noise, in [0, 1] image units (default 0.1).
    clip:
        Clip the result to [0, 1] (default False, as the study).
    """

    #: the registered name, used in results when the object is passed directly
    name = "gaussian-noise"
    mask_local = True
    #: a pixel once perturbed keeps its value: step k changes only region r_k
    step_local = True
    #: noise fields kept (an LRU): the engine asks for the same image for many steps
    cache_size = 32

    def __init__(self, *, sigma: float = 0.1, clip: bool = False):
        self.sigma = sigma
        self.clip = clip

    def get_params(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "clip": self.clip}

    def validate(self) -> None:
        """Check the parameters (the harness calls this at plan time): ValueError if bad."""
        sigma = self.sigma
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not (
            np.isfinite(float(sigma)) and float(sigma) >= 0
        ):
            raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
        if not isinstance(self.clip, bool | np.bool_):
            raise ValueError(f"clip must be true or false, got {self.clip!r}")

    def noise_field(self, seed: int, shape: tuple[int, ...]) -> np.ndarray:
        """float32 noise of ``shape`` for ``seed`` (memoised, read-only)."""
        self.validate()
        sigma = float(self.sigma)
        cache: OrderedDict[tuple[int, tuple[int, ...], float], np.ndarray] = self.__dict__.setdefault(
            "_fields", OrderedDict()
        )
        key = (int(seed), tuple(shape), sigma)
        field = cache.get(key)
        if field is not None:
            cache.move_to_end(key)
            return field
        rng = np.random.default_rng(int(seed))
        field = rng.standard_normal(shape, dtype=np.float32)
        field *= np.float32(sigma)
        field.flags.writeable = False
        cache[key] = field
        while len(cache) > self.cache_size:
            cache.popitem(last=False)
        return field

    def perturb(self, images: np.ndarray, masks: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)
        m = np.asarray(masks, dtype=bool)
        s = np.asarray(seeds).reshape(-1)
        if x.ndim != 4:
            raise ValueError(f"GaussianNoise expects images (B, H, W, C), got shape {x.shape}")
        if m.shape != x.shape[:3]:
            raise ValueError(f"GaussianNoise expects masks (B, H, W) = {x.shape[:3]}, got {m.shape}")
        if len(s) != len(x):
            raise ValueError(f"GaussianNoise expects one seed per image ({len(x)}), got {len(s)}")
        out = np.empty_like(x)
        if len(s) == 0:
            return out
        # rows sharing a seed are usually contiguous (the engine streams image-major):
        # out = mask * field + x, slice by slice, without boolean indexing or big temporaries
        m8 = m.view(np.uint8)
        change = np.flatnonzero(s[1:] != s[:-1]) + 1
        starts = np.concatenate([[0], change])
        stops = np.concatenate([change, [len(s)]])
        for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
            field = self.noise_field(int(s[a]), x.shape[1:])
            np.multiply(m8[a:b, :, :, None], field[None], out=out[a:b])
        out += x
        if self.clip:
            np.clip(out, 0.0, 1.0, out=out)
        return out
