"""ROAD's noisy linear imputation (Rong et al. 2022, "A Consistent and Efficient Evaluation
Strategy for Attribution Methods", ICML; arXiv 2202.00449).

Every masked pixel becomes the weighted average of its eight neighbours (weight 1/6 for
the four direct ones, 1/12 for the four diagonal ones; neighbours outside the image are
left out and the weights of the others renormalised), masked neighbours being unknowns
too. That is one sparse linear system per image and mask,

    s_i v_i - sum_{j in N(i), j masked} w_ij v_j = sum_{j in N(i), j kept} w_ij x_j,
    s_i = sum_{j in N(i), j inside the image} w_ij,

solved for all channels at once with ``scipy.sparse.linalg.splu`` (one factorisation,
C right-hand sides; the matrix is symmetric, so the minimum-degree ordering on A^T + A,
about twice as fast as the default COLAMD here). Then ``noise * N(0, 1)`` is added to the imputed pixels; the noise
field of an image is drawn once from ``np.random.default_rng(seed)`` (shape (H, W, C)),
so the same pixel gets the same noise whatever the mask, the step or the batch
(common random numbers across explainers). The system is the discrete Laplace equation
with the kept pixels as boundary: it has a unique solution whenever something is kept.
When the mask covers the whole image nothing is kept and every constant solves it: the
image's per-channel mean is taken (the last point of a curve, k = L).

Mask-local: only pixels inside the mask change. But unlike noise or a fill, the value of
a pixel perturbed at step k is solved again at every later step (its neighbours change),
so consecutive steps differ over the whole mask, not only the new region: it is declared
``step_local=False`` (:class:`bench.PerturbationSpec`), and the curve engine does not
stream its steps as local ones (``auto`` runs full passes; incremental inference, when
asked for, stays exact, it compares pixels, but gains little).

Cost, measured on the 2-core AVX-512 CPU at 299x299 on a 9x9 grid
(``tests/benchmarks/test_bench_road.py``): one solve takes ~2 ms with one region masked,
~0.14 s with half the image, ~0.3 s with 80 of 81 regions; over a whole curve (82 steps,
batches of 64, two solver threads) about 0.09 s (MoRF) to 0.12 s (random order) per image
and step, i.e. ~8-10 s per image and curve: about 0.4-0.55x the cost of a VGG16 forward
pass and 0.7-0.95x a DenseNet201 one on the same CPU (design figures: 4.5 and 8 images/s),
and far more than a forward pass on a GPU, where ROAD is the curve's cost. Imputations
are memoised by (seed, image content, mask): the same image and mask inside one call (or
in the last :attr:`NoisyLinearImputation.cache_size` ones) are solved once, and the systems
of one call are solved in parallel threads (SuperLU releases the GIL).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .fill import check_inputs, digest, finite_number

#: (dy, dx) -> weight, as the reference implementation (road_evaluation, NoisyLinearImputer)
NEIGHBOUR_WEIGHTS: tuple[tuple[tuple[int, int], float], ...] = (
    ((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
    ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6),
)

def linear_system(mask: np.ndarray, image: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
    """(A sparse (n, n) CSC, b (n, C), flat indices (n,) of the masked pixels) for one image.

    mask: bool (H, W), True = impute; image: float (H, W, C).
    """
    from scipy import sparse

    h, w = mask.shape
    flat_mask = mask.reshape(-1)
    flat = image.reshape(h * w, -1).astype(np.float64)
    idx = np.flatnonzero(flat_mask)
    n = len(idx)
    var_of = np.full(h * w, -1, dtype=np.int64)
    var_of[idx] = np.arange(n)
    r, c = np.divmod(idx, w)
    diag = np.zeros(n)
    b = np.zeros((n, flat.shape[1]))
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for (dy, dx), weight in NEIGHBOUR_WEIGHTS:
        rr, cc = r + dy, c + dx
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        eq = np.flatnonzero(inside)
        nb = rr[inside] * w + cc[inside]
        diag[eq] += weight
        unknown = flat_mask[nb]
        known_eq = eq[~unknown]
        b[known_eq] += weight * flat[nb[~unknown]]
        rows.append(eq[unknown])
        cols.append(var_of[nb[unknown]])
        vals.append(np.full(int(unknown.sum()), -weight))
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(diag)
    a = sparse.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    return a, b, idx


def impute(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """float64 (n, C): the noise-free imputed values of the masked pixels (row-major order)."""
    from scipy.sparse.linalg import splu

    m = np.asarray(mask, dtype=bool)
    x = np.asarray(image)
    n = int(m.sum())
    if n == 0:
        return np.zeros((0, x.shape[-1]))
    if n == m.size:  # nothing kept: every constant solves the system; take the image's mean
        return np.broadcast_to(x.reshape(-1, x.shape[-1]).astype(np.float64).mean(axis=0), (n, x.shape[-1])).copy()
    a, b, _ = linear_system(m, x)
    return splu(a, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True}).solve(b)


class NoisyLinearImputation:
    """``perturb(images, masks, seeds)``: ROAD's noisy linear imputation of the masked pixels.

    Parameters
    ----------
    noise:
        Standard deviation of the Gaussian noise added to the imputed pixels, in [0, 1]
        image units (default 0.01, the reference implementation's).
    """

    name = "road"
    mask_local = True
    #: the imputed value of a pixel depends on the whole mask: step k changes more than r_k
    step_local = False
    #: imputations kept across calls (an LRU keyed by (seed, image content, mask))
    cache_size = 16
    #: threads solving the systems of one call (0 = one per CPU, at most 4); the result
    #: does not depend on it
    threads = 0

    def __init__(self, *, noise: float = 0.01):
        self.noise = noise

    def get_params(self) -> dict[str, Any]:
        return {"noise": self.noise}

    def validate(self) -> None:
        finite_number(self.noise, "noise")

    def noise_field(self, seed: int, shape: tuple[int, ...]) -> np.ndarray:
        """float64 standard-normal field of ``shape`` for ``seed`` (unscaled)."""
        cache: OrderedDict[tuple[Any, ...], np.ndarray] = self.__dict__.setdefault("_fields", OrderedDict())
        key = (int(seed), tuple(shape))
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return hit
        field = np.random.default_rng(int(seed)).standard_normal(shape)
        field.flags.writeable = False
        cache[key] = field
        while len(cache) > 4:
            cache.popitem(last=False)
        return field

    def perturb(self, images: np.ndarray, masks: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        self.validate()
        x, m, s = check_inputs("NoisyLinearImputation", images, masks, seeds)
        out = x.copy()
        noise = float(self.noise)
        cache: OrderedDict[tuple[Any, ...], np.ndarray] = self.__dict__.setdefault("_imputed", OrderedDict())
        rows = [i for i in range(len(x)) if m[i].any()]
        keys = {i: (int(s[i]), noise, digest(x[i]), digest(np.packbits(m[i])), m[i].shape) for i in rows}
        found: dict[tuple[Any, ...], np.ndarray] = {}
        todo: dict[tuple[Any, ...], int] = {}  # key -> first row needing it (solved once per call)
        for i in rows:
            key = keys[i]
            if key in found or key in todo:
                continue
            hit = cache.get(key)
            if hit is not None:
                cache.move_to_end(key)
                found[key] = hit
            else:
                todo[key] = i

        items = list(todo.items())
        # the noise fields are drawn here, not in the worker threads (the LRU is not thread-safe)
        fields = {int(s[i]): self.noise_field(int(s[i]), x.shape[1:]) for _, i in items} if noise else {}

        def solve(i: int) -> np.ndarray:
            values = impute(x[i], m[i])
            if noise:
                values = values + noise * fields[int(s[i])][m[i]]
            return values.astype(np.float32)

        workers = min(self.threads or min(os.cpu_count() or 1, 4), len(items))
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:  # SuperLU releases the GIL
                solved = list(pool.map(solve, [i for _, i in items]))
        else:
            solved = [solve(i) for _, i in items]
        self.__dict__["solves"] = self.__dict__.get("solves", 0) + len(items)
        for (key, _), values in zip(items, solved, strict=True):
            values.flags.writeable = False
            found[key] = cache[key] = values
        while len(cache) > self.cache_size:
            cache.popitem(last=False)
        for i in rows:
            out[i][m[i]] = found[keys[i]]
        return out
