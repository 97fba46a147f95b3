"""Max-sensitivity (Yeh et al. 2019, "On the (In)fidelity and Sensitivity of Explanations", NeurIPS).

    SENS_max(x) = max_{j = 1..n} || E(x + delta_j) - E(x) ||_F / || E(x) ||_F,
    delta_j ~ U(-r, r)^(H x W x 3), drawn from derive_seed(seed, id, "max-sensitivity/j").

``E`` is the cell's explainer (with its parameters) for the explained class, which stays
the explained class of ``x`` on every perturbed copy; a seeded explainer gets the image's
own id on the copies too, and one that reads dataset masks (an oracle) the image's own
masks, so only the input changes. The perturbed images are not clipped
(``clip=True`` clips them to [0, 1]). The ratio does not change when ``E`` is scaled, so no
normalisation is needed (transform: none). Lower is better (the explanation is stable
under imperceptible noise). A map with ``E(x) = 0``: 0 when every ``E(x + delta)`` is zero
too, else NaN (left out of the statistics, counted).

Cost: n + 1 heatmaps per image, computed in batches of ``batch_size`` (image, sample) pairs
through the harness's explain loop; memory is bounded by the batch.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np


class MaxSensitivity:
    """``compute(data)`` -> ``max-sensitivity`` (N,), ``mean-sensitivity`` (N,), ``heatmaps`` (N,).

    Parameters
    ----------
    radius:
        r, the half-width of the uniform noise in [0, 1] image units (default 0.02, about
        5 grey levels of 255).
    n_samples:
        n, the perturbed copies per image (default 10).
    seed:
        Seeds the noise (default 0).
    clip:
        Clip the perturbed images to [0, 1] (default False).
    batch_size:
        (image, sample) pairs per explainer call (default 32).
    """

    def __init__(self, *, radius: float = 0.02, n_samples: int = 10, seed: int = 0, clip: bool = False,
                 batch_size: int = 32):
        self.radius = radius
        self.n_samples = n_samples
        self.seed = seed
        self.clip = clip
        self.batch_size = batch_size

    def get_params(self) -> dict[str, Any]:
        return {"radius": self.radius, "n_samples": self.n_samples, "seed": self.seed, "clip": self.clip,
                "batch_size": self.batch_size}

    def validate(self) -> None:
        r = self.radius
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not (np.isfinite(float(r)) and float(r) > 0):
            raise ValueError(f"radius must be a finite number > 0, got {r!r}")
        for name, minimum in (("n_samples", 1), ("seed", 0), ("batch_size", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
        if not isinstance(self.clip, bool | np.bool_):
            raise ValueError(f"clip must be true or false, got {self.clip!r}")

    def noise(self, image_id: Any, j: int, shape: tuple[int, ...]) -> np.ndarray:
        """float32 delta_j of image ``image_id``: U(-radius, radius) of ``shape``."""
        from bench.engine.regions import derive_seed

        rng = np.random.default_rng(derive_seed(int(self.seed), image_id, f"max-sensitivity/{int(j)}"))
        r = float(self.radius)
        return rng.uniform(-r, r, size=shape).astype(np.float32)

    def compute(self, data: Any) -> dict[str, np.ndarray]:
        from bench_sanity.randomisation import explain_images, heatmap_passes

        from bench.data import to_model_input

        self.validate()
        model = data.model
        ids = np.asarray(data.ids)
        targets = np.asarray(data.targets, dtype=np.int64)
        images = data.images
        n, ns, bs = len(data), int(self.n_samples), int(self.batch_size)
        base = explain_images(data, model, images, targets, ids, bs)
        base64 = base.astype(np.float64).reshape(n, -1)
        base_norm = np.sqrt((base64 * base64).sum(axis=1))
        worst = np.zeros(n)
        total = np.zeros(n)
        rows = np.arange(n * ns)  # (image, sample) pairs, image-major
        for start in range(0, len(rows), bs):
            chunk = rows[start:start + bs]
            img, j = chunk // ns, chunk % ns
            x = to_model_input(images[img])
            x = x + np.stack([self.noise(ids[i], jj, x.shape[1:]) for i, jj in zip(img, j, strict=True)])
            if self.clip:
                np.clip(x, 0.0, 1.0, out=x)
            maps = explain_images(data, model, x, targets[img], ids[img], len(chunk), rows=img)
            diff = maps.astype(np.float64).reshape(len(chunk), -1) - base64[img]
            dist = np.sqrt((diff * diff).sum(axis=1))
            np.maximum.at(worst, img, dist)
            np.add.at(total, img, dist)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio_max = np.where(base_norm > 0, worst / base_norm, np.where(worst == 0, 0.0, np.nan))
            ratio_mean = np.where(base_norm > 0, total / ns / base_norm, np.where(total == 0, 0.0, np.nan))
        self._passes = heatmap_passes(data.explainer, n * (ns + 1))
        return {
            "max-sensitivity": ratio_max,
            "mean-sensitivity": ratio_mean,
            "heatmaps": np.full(n, ns + 1.0),
        }

    def forward_passes(self) -> float | None:
        """What the last ``compute`` cost: n_samples + 1 heatmaps per image at the explainer's passes per map."""
        return self.__dict__.get("_passes")

    def planned_passes(self, *, n_images: int, passes_per_map: float | None) -> float | None:
        """Before a run: n_samples + 1 heatmaps per image at the explainer's passes per map."""
        return None if passes_per_map is None else float(n_images * (int(self.n_samples) + 1) * passes_per_map)
