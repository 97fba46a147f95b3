"""The random explainer: the floor every leaderboard needs.

A uniform [0, 1) map per image from a generator seeded by ``(seed, image id)``
(:func:`bench.regions.derive_seed`), so the same image id always gets the same
map, whatever its batch or position; the model is never called.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.regions import derive_seed


class RandomExplainer:
    """Seeded uniform random heatmaps.

    Parameters
    ----------
    seed:
        Base seed; the map of an image is drawn from ``derive_seed(seed, id)``.
    size:
        ``(h, w)`` or an int of the map; ``None`` (default) = the image size, one
        value per pixel, which works with any region grid. Set it to the grid
        (e.g. ``9``) for i.i.d. region scores (an exactly uniform region order);
        at the image size the region means of i.i.d. pixels are exchangeable up
        to the +-1 px differences in region size of ``array_split``.
    """

    def __init__(self, *, seed: int = 0, size: int | tuple[int, int] | None = None):
        self.seed = seed
        self.size = size

    def get_params(self) -> dict[str, Any]:
        return {"seed": self.seed, "size": self.size}

    def _map_size(self, images: np.ndarray) -> tuple[int, int]:
        if self.size is None:
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
