"""Faithfulness correlation (Bhatt et al. 2020, "Evaluating and Aggregating Feature-based Model
Explanations", IJCAI), on the region grid.

For each image, ``n_subsets`` random subsets S_j of ``k`` regions of the cell's grid are
drawn (``k = max(1, round(subset_fraction * L))``; subsets from
``derive_seed(seed, id, "faithfulness-correlation")``, so every explainer of a cell is
scored on the same subsets). Then

    FC(x) = Pearson_j( sum_{p in S_j} h(p),  f(x) - f(x_{S_j}) )

with ``h`` the heatmap (signed, as returned) resized to the image bilinearly, summed over
the subset's pixels (region mean times region area), ``f`` the model's probability of the
explained class and ``x_{S_j}`` the image with the subset's pixels perturbed by the
perturbation plugin ``perturbation`` (its parameters ``perturbation_params``; seeded by
``derive_seed(seed, id)``, the seed the curve engine gives the image). Higher is better
(the heatmap's relevance predicts the damage). Zero variance on either side (a constant
map: every subset sums the same) gives 0, no association.

Cost: n_subsets + 1 forward passes per image, streamed in batches of ``batch_size``
(image, subset) rows through one traced model call; no heatmap is recomputed. The
probabilities do not depend on the heatmap, so they are computed once for every explainer
cell of a model: memoised per Keras model (weakly; a :class:`bench.engine.memo.ModelMemo`, at
most :data:`PROBS_MEMO_SIZE` tables per model, the least recently used dropped first) under
a digest of everything they depend on (the model's layers and current weights, the images,
targets, ids, grid, subsets, the perturbation and its parameters, the seed and the batch
size; :func:`probabilities_key`).
"""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from bench.engine.memo import ModelMemo

#: The most probability tables kept per model (each (N, n_subsets + 1) floats).
PROBS_MEMO_SIZE = 16

#: Keras model (weakly) -> {probabilities_key: read-only (N, n_subsets + 1) probabilities}, at most
#: PROBS_MEMO_SIZE per model, the least recently used dropped first
_PROBS: ModelMemo[np.ndarray] = ModelMemo(per_model=PROBS_MEMO_SIZE)


def array_digest(*arrays: Any) -> str:
    """blake2b of the arrays' dtypes, shapes and bytes, in order (no copy of a contiguous array)."""
    h = hashlib.blake2b(digest_size=16)
    for value in arrays:
        a = np.ascontiguousarray(value)
        h.update(f"{a.dtype.str}{a.shape}|".encode())
        h.update(memoryview(a.reshape(-1).view(np.uint8)))
    return h.hexdigest()


def weights_digest(keras_model: Any) -> str:
    """:func:`array_digest` of every variable of ``keras_model``: it changes whenever a weight does."""
    return array_digest(*(np.asarray(v.numpy()) for v in keras_model.weights))


def clear_memo() -> None:
    """Forget every memoised probability table (the next call runs the model again)."""
    _PROBS.clear()


def memoised_tables(keras_model: Any) -> int:
    """How many probability tables are memoised for ``keras_model`` (for tests and tools)."""
    return len(_PROBS.entries(keras_model))


class FaithfulnessCorrelation:
    """``compute(data)`` -> ``faithfulness-correlation`` (N,), ``forward-passes`` (N,).

    Parameters
    ----------
    n_subsets:
        Random region subsets per image (default 32).
    subset_fraction:
        The share of the grid's regions in a subset (default 0.25: 20 of a 9x9 grid's 81).
    perturbation:
        The registered perturbation that removes a subset (default ``"mean"``, the image's
        mean: Bhatt et al. replace features by a baseline value), its own: the metric's values
        do not change with the cell's perturbation, and one result serves every perturbation cell.
    perturbation_params:
        Its parameters (default none).
    seed:
        Seeds the subsets and the perturbation (default 0).
    batch_size:
        (image, subset) rows per model call (default 64).
    """

    def __init__(self, *, n_subsets: int = 32, subset_fraction: float = 0.25, perturbation: str = "mean",
                 perturbation_params: Mapping[str, Any] | None = None, seed: int = 0, batch_size: int = 64):
        self.n_subsets = n_subsets
        self.subset_fraction = subset_fraction
        self.perturbation = perturbation
        self.perturbation_params = perturbation_params
        self.seed = seed
        self.batch_size = batch_size

    def get_params(self) -> dict[str, Any]:
        return {
            "n_subsets": self.n_subsets, "subset_fraction": self.subset_fraction,
            "perturbation": self.perturbation,
            "perturbation_params": dict(self.perturbation_params) if self.perturbation_params else None,
            "seed": self.seed, "batch_size": self.batch_size,
        }

    def validate(self) -> None:
        for name, minimum in (("n_subsets", 2), ("seed", 0), ("batch_size", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
        f = self.subset_fraction
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not (0.0 < float(f) <= 1.0):
            raise ValueError(f"subset_fraction must be a number in (0, 1], got {f!r}")
        if not isinstance(self.perturbation, str) or not self.perturbation:
            raise ValueError(f"perturbation must be the name of a registered perturbation, got {self.perturbation!r}")
        if self.perturbation_params is not None and not isinstance(self.perturbation_params, Mapping):
            raise ValueError(f"perturbation_params must be a table of parameters, got {self.perturbation_params!r}")
        import bench

        bench.registry().get("perturbation", self.perturbation)  # an unknown name: "did you mean"

    def subset_size(self, n_regions: int) -> int:
        return int(min(n_regions, max(1, round(float(self.subset_fraction) * n_regions))))

    def subsets(self, image_id: Any, n_regions: int) -> np.ndarray:
        """bool (n_subsets, L): the regions of each subset of image ``image_id``."""
        from bench.engine.regions import derive_seed

        rng = np.random.default_rng(derive_seed(int(self.seed), image_id, "faithfulness-correlation"))
        k = self.subset_size(n_regions)
        picks = np.argsort(rng.random((int(self.n_subsets), n_regions)), axis=1)[:, :k]
        member = np.zeros((int(self.n_subsets), n_regions), bool)
        np.put_along_axis(member, picks, True, axis=1)
        return member

    def probabilities_key(self, data: Any, pert: Any) -> tuple[Any, ...]:
        """Everything the probabilities of ``data`` depend on (beside the Keras model object itself)."""
        from bench.engine.regions import id_key
        from bench.engine.tracing import structure

        keras_model = data.model.keras
        get_params = getattr(pert, "get_params", None)
        params = get_params() if callable(get_params) else dict(self.perturbation_params or {})
        return (
            structure(keras_model), weights_digest(keras_model),
            array_digest(np.asarray(data.images), np.asarray(data.targets, dtype=np.int64)),
            tuple(id_key(i) for i in np.asarray(data.ids).tolist()), tuple(int(g) for g in data.grid),
            int(self.n_subsets), float(self.subset_fraction), int(self.seed), int(self.batch_size),
            f"{type(pert).__module__}:{type(pert).__qualname__}", repr(sorted(params.items())),
        )

    def probabilities(self, data: Any, member: np.ndarray, pert: Any) -> np.ndarray:
        """float64 (N, n_subsets + 1): f(x) then f(x_{S_j}), memoised (see the module's docstring).

        A read-only array: the same one serves every explainer cell of the model. The forward
        passes this call ran (0 when it was memoised) are kept for :meth:`forward_passes`.
        """
        keras_model = data.model.keras
        key = self.probabilities_key(data, pert)
        probs = _PROBS.get(keras_model, key)
        self._passes = 0.0
        if probs is None:
            probs = self._forward(data, member, pert)
            self._passes = float(probs.size)
            probs.setflags(write=False)
            _PROBS.put(keras_model, key, probs)
        return probs

    def _forward(self, data: Any, member: np.ndarray, pert: Any) -> np.ndarray:
        """The model on every (image, subset) row, image-major, in batches of ``batch_size``."""
        from bench.data import to_model_input
        from bench.engine.forward import FullForward
        from bench.engine.regions import derive_seeds, region_labels

        images = data.images
        n, h, w = len(images), images.shape[1], images.shape[2]
        targets = np.asarray(data.targets, dtype=np.int64)
        s = int(self.n_subsets)
        labels = region_labels((h, w), tuple(data.grid))
        seeds = derive_seeds(int(self.seed), np.asarray(data.ids))
        fwd = FullForward()
        bs = int(self.batch_size)
        fwd.prepare(data.model, batch_size=bs, image_shape=(h, w, 3))
        probs = np.empty(n * (s + 1))
        rows = np.arange(n * (s + 1))  # (image, subset) rows, image-major; subset 0 = the original
        for start in range(0, len(rows), bs):
            chunk = rows[start:start + bs]
            img, j = chunk // (s + 1), chunk % (s + 1)
            x = to_model_input(images[img])
            masks = np.zeros((len(chunk), h, w), bool)
            changed = j > 0
            if changed.any():
                masks[changed] = member[img[changed], j[changed] - 1][:, labels]
                x = np.asarray(pert.perturb(x, masks, seeds[img]), dtype=np.float32)
            p = fwd.predict(x)
            probs[chunk] = p[np.arange(len(chunk)), targets[img]]
        return probs.reshape(n, s + 1)

    def compute(self, data: Any) -> dict[str, np.ndarray]:
        from bench_sanity.similarity import pearson_rows

        import bench
        from bench.engine.regions import region_boxes, region_scores

        self.validate()
        if data.grid is None:
            raise ValueError("faithfulness-correlation needs the cell's region grid (data.grid)")
        images = data.images
        n = len(data)
        h, w = images.shape[1], images.shape[2]
        grid = tuple(data.grid)
        n_regions = grid[0] * grid[1]
        ids = np.asarray(data.ids)
        s = int(self.n_subsets)
        boxes = region_boxes((h, w), grid)
        area = ((boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])).astype(np.float64)
        mass = region_scores(np.asarray(data.heatmaps, np.float32), (h, w), grid) * area  # (N, L)
        member = np.stack([self.subsets(i, n_regions) for i in ids]) if n else np.zeros((0, s, n_regions), bool)
        relevance = np.einsum("nsl,nl->ns", member.astype(np.float64), mass)
        pert = bench.create("perturbation", self.perturbation, **dict(self.perturbation_params or {}))
        probs = self.probabilities(data, member, pert)
        drops = probs[:, :1] - probs[:, 1:]
        return {
            "faithfulness-correlation": pearson_rows(relevance, drops) if n else np.zeros(0),
            "forward-passes": np.full(n, s + 1.0),
        }

    def forward_passes(self) -> float | None:
        """What the last ``compute`` ran: n_subsets + 1 forward passes per image, 0 where another cell
        of the model computed the same probabilities (the ``forward-passes`` column keeps what the
        measure costs, n_subsets + 1 per image, whoever paid it)."""
        return self.__dict__.get("_passes")

    def planned_passes(self, *, n_images: int, passes_per_map: float | None = None) -> float | None:
        """Before a run: n_subsets + 1 forward passes per image (whatever the explainer; the
        probabilities are computed once per model and images, so later cells of a model pay less)."""
        return float(n_images * (int(self.n_subsets) + 1))
