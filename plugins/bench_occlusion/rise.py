"""RISE (Petsiuk, Das & Saenko, BMVC 2018, arXiv 1806.07421), batched and seeded by image id.

``S = 1 / (n_masks * p) * sum_i P(c | x * M_i) M_i``: the target's softmax probability
on the masked image weighs each mask.

The masks (the paper's recipe, as in its reference code): a binary ``cell x cell``
grid whose cells are kept (1) with probability ``p``, upsampled bilinearly to
``((cell + 1) * ceil(H / cell), (cell + 1) * ceil(W / cell))`` (half-pixel centres,
edges clamped: :func:`bench.engine.regions.bilinear_matrix`, which is what the reference
code's ``skimage.transform.resize(order=1, mode="reflect")`` computes), then cropped
to (H, W) at a random shift ``(dy, dx)``, ``0 <= dy < ceil(H / cell)``,
``0 <= dx < ceil(W / cell)``. The masked image is ``x * M`` (black where masked).

Seeding: image ``id``'s masks come from one generator,
``np.random.default_rng(derive_seed(seed, id, "rise.masks"))``, drawn in this order:
``grids = rng.random((n_masks, cell, cell)) < p``, ``dy = rng.integers(0, ceil(H/cell),
n_masks)``, ``dx = rng.integers(0, ceil(W/cell), n_masks)``; so a map depends on
neither the batch size nor the image's position among the others.

Cost: ``n_masks`` forward passes per map. The (image, mask) rows are streamed
``batch_size`` at a time (each chunk's masks are upsampled on the fly; only the
``cell x cell`` grids of a call are held), through one ``tf.function`` per model and
image shape shared with Occlusion: memory is one chunk plus an (N, H, W) sum,
whatever ``n_masks`` is.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from bench_gradients.engine import ParameterError, check_float, check_inputs, check_int

from bench.engine.regions import bilinear_matrix, derive_seed

from .engine import runs, score_function, stream

#: purpose string of the mask stream (:func:`bench.engine.regions.derive_seed`)
MASK_PURPOSE = "rise.masks"


def mask_draws(
    seed: int, image_id: Any, n_masks: int, cell: int, p: float, image_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bool grids (n_masks, cell, cell), dy (n_masks,), dx (n_masks,)) of one image."""
    rng = np.random.default_rng(derive_seed(int(seed), image_id, MASK_PURPOSE))
    grids = rng.random((n_masks, cell, cell)) < p
    dy = rng.integers(0, math.ceil(int(image_shape[0]) / cell), n_masks)
    dx = rng.integers(0, math.ceil(int(image_shape[1]) / cell), n_masks)
    return grids, dy, dx


class MaskUpsampler:
    """Grids (B, cell, cell) and shifts (B,) -> float64 masks (B, H, W), by two matrix products."""

    def __init__(self, cell: int, image_shape: tuple[int, ...]):
        self.h, self.w = int(image_shape[0]), int(image_shape[1])
        self.rows = bilinear_matrix((cell + 1) * math.ceil(self.h / cell), cell)
        self.cols = bilinear_matrix((cell + 1) * math.ceil(self.w / cell), cell)

    def __call__(self, grids: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
        r = self.rows[np.asarray(dy)[:, None] + np.arange(self.h)]  # (B, H, cell)
        c = self.cols[np.asarray(dx)[:, None] + np.arange(self.w)]  # (B, W, cell)
        return r @ grids.astype(np.float64) @ c.transpose(0, 2, 1)


class RISE:
    """RISE: random masks weighted by the target's probability on the masked image.

    Parameters
    ----------
    n_masks:
        Masks per image (default 1000, fewer than the paper's thousands to keep the cost
        down; more give smoother maps): ``n_masks`` forward passes per map.
    cell:
        Size of the low-resolution binary grid (default 7, the paper's ``s``).
    p:
        Probability that a grid cell is kept (default 0.5, the paper's ``p1``).
    seed:
        Base seed of the per-id mask stream.
    batch_size:
        Masked images per forward pass (default 32): bounds the memory.
    """

    def __init__(
        self, *, n_masks: int = 1000, cell: int = 7, p: float = 0.5, seed: int = 0, batch_size: int = 32
    ):
        self.n_masks = n_masks
        self.cell = cell
        self.p = p
        self.seed = seed
        self.batch_size = batch_size

    def get_params(self) -> dict[str, Any]:
        return {
            "n_masks": self.n_masks, "cell": self.cell, "p": self.p, "seed": self.seed,
            "batch_size": self.batch_size,
        }

    def __repr__(self) -> str:
        return "RISE(" + ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()) + ")"

    def validate(self) -> None:
        """Check the stored parameters (cheap; the plan calls this): ``ParameterError`` if bad."""
        check_int(self.n_masks, "n_masks")
        check_int(self.cell, "cell")
        p = check_float(self.p, "p")
        if not 0.0 < p <= 1.0:
            raise ParameterError("p", f"p must be in (0, 1], got {self.p!r}")
        check_int(self.seed, "seed", minimum=0)
        check_int(self.batch_size, "batch_size")

    def passes_per_map(self) -> int:
        """Forward passes per map: one per mask."""
        self.validate()
        return int(self.n_masks)

    def masks_of(self, image_id: Any, image_shape: tuple[int, ...]) -> np.ndarray:
        """float64 (n_masks, H, W): the masks of image ``image_id`` (for inspection and tests;
        ``explain`` never holds them all)."""
        self.validate()
        grids, dy, dx = mask_draws(self.seed, image_id, int(self.n_masks), int(self.cell), float(self.p), image_shape)
        return MaskUpsampler(int(self.cell), image_shape)(grids, dy, dx)

    def explain(
        self, model: Any, images: np.ndarray, targets: np.ndarray, *, ids: Any = None
    ) -> np.ndarray:
        """float32 (N, H, W) saliency maps of ``targets``; ``ids`` (default ``0..N-1``) seed the masks."""
        self.validate()
        bm, x, t, ids_arr = check_inputs(model, images, targets, ids, who="RISE")
        n, h, w = x.shape[0], x.shape[1], x.shape[2]
        if n == 0:
            return np.zeros((0, h, w), np.float32)
        n_masks, cell, p = int(self.n_masks), int(self.cell), float(self.p)
        draws = [mask_draws(self.seed, i, n_masks, cell, p, x.shape[1:]) for i in ids_arr]
        grids = np.stack([d[0] for d in draws])  # (N, n_masks, cell, cell) bool: small
        dy = np.stack([d[1] for d in draws])
        dx = np.stack([d[2] for d in draws])
        upsample = MaskUpsampler(cell, x.shape[1:])
        fn = score_function(bm, tuple(x.shape[1:]))

        def rows(img: np.ndarray, smp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            m = upsample(grids[img, smp], dy[img, smp], dx[img, smp])
            return x[img] * m[..., None].astype(np.float32), m

        total = np.zeros((n, h, w), dtype=np.float64)
        for img, _, probs, m in stream(
            fn, t, n_masks, rows, batch_size=int(self.batch_size), score="probability"
        ):
            for i, run in runs(img):
                total[i] += np.tensordot(probs[run], m[run], axes=1)
        return (total / (n_masks * p)).astype(np.float32)
