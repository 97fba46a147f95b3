"""The random explainer: the floor every leaderboard needs.

A uniform [0, 1) map per image from a generator seeded by ``(seed, image id)``
(:func:`bench.engine.regions.derive_seed`), so the same image id always gets the same
map, whatever its batch or position; the model is never called.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.engine.regions import derive_seed


class RandomExplainer:
    """Seeded uniform random heatmaps.

    Parameters
    ----------
    seed:
        Base seed; the map of an image is drawn from ``derive_seed(seed, id)``.
    size:
        ``(h, w)`` or an int: the size of the map. ``None`` (default) = 9x9, the
        default region grid: region scores are then i.i.d. uniform, so the MoRF
        order is a uniformly random permutation, and a map costs 81 floats (an
        image-sized map of 540 images at 299 px would be ~190 MB of heatmaps to
        cache). Use your grid's size with another grid, or ``"image"`` for one
        value per pixel (region means of i.i.d. pixels: exchangeable up to the
        +-1 px differences in region size of ``array_split``).
    """

    default_size: tuple[int, int] = (9, 9)

    def __init__(self, *, seed: int = 0, size: int | tuple[int, int] | str | None = None):
        self.seed = seed
        self.size = size

    def get_params(self) -> dict[str, Any]:
        return {"seed": self.seed, "size": self.size}

    def passes_per_map(self) -> float:
        """Forward-pass equivalents per map: none (the model is never called)."""
        return 0.0

    def _map_size(self, images: np.ndarray) -> tuple[int, int]:
        if self.size is None:
            return self.default_size
        if isinstance(self.size, str):
            if self.size.lower() != "image":
                raise ValueError(f"RandomExplainer size must be (h, w), an int or 'image', got {self.size!r}")
            return int(images.shape[1]), int(images.shape[2])
        if isinstance(self.size, int | np.integer):
            h = w = int(self.size)
        else:
            h, w = (int(s) for s in self.size)
        if h < 1 or w < 1:
            raise ValueError(f"RandomExplainer size must be positive, got {self.size!r}")
        return h, w

    def explain(
        self, model: Any, images: np.ndarray, targets: np.ndarray, *, ids: Any = None
    ) -> np.ndarray:
        """float32 (N, h, w) uniform maps; ``ids`` default to ``0..N-1``."""
        n = len(images)
        ids_arr = np.arange(n) if ids is None else np.asarray(ids)
        if len(ids_arr) != n:
            raise ValueError(f"RandomExplainer got {len(ids_arr)} ids for {n} images")
        h, w = self._map_size(np.asarray(images))
        out = np.empty((n, h, w), dtype=np.float32)
        for i, image_id in enumerate(ids_arr):
            rng = np.random.default_rng(derive_seed(self.seed, image_id, "random-explainer"))
            out[i] = rng.random((h, w), dtype=np.float32)
        return out
