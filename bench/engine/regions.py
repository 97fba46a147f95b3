"""The region grid, region scores and perturbation orders.

The image is split into ``rows x cols`` regions with :func:`numpy.array_split`
semantics on rows and columns: the first ``size % parts`` blocks are one pixel
larger (at 299 px and 9 parts: 34, 34, 33, 33, 33, 33, 33, 33, 33). Region
index = ``row * cols + col``.

A heatmap is mapped onto the grid by :func:`region_scores`: when its shape
equals the grid's, each value *is* the region's score; otherwise the heatmap
is resized bilinearly (half-pixel centres, edges clamped: the convention of
``tf.image.resize``/PIL/OpenCV without antialiasing) to the image size and
averaged over each region. Both steps are linear, so they are computed exactly
as one small matrix product per image (``A_r @ W_r @ heatmap @ W_c.T @ A_c.T``)
and the image-sized map is never materialised.

Orders (:func:`region_order`): ``"morf"`` (most relevant first, descending
score), ``"lerf"`` (ascending), ``"random"``. Ties are broken by a permutation
seeded from ``(seed, image id)``, so the order of an image never depends on
its position in a batch or on the other images.

Only numpy; TensorFlow is never imported here.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.errors import ComponentOutputError, ConfigError

ORDERS: tuple[str, ...] = ("morf", "lerf", "random")

Grid = int | tuple[int, int] | Sequence[int]


# ---- seeds ---------------------------------------------------------------------------------
def id_key(image_id: Any) -> str:
    """The canonical string form of an image id (``3``, ``np.int64(3)`` and ``"3"`` agree)."""
    if isinstance(image_id, bytes | np.bytes_):
        return bytes(image_id).decode("utf-8", "replace")
    if isinstance(image_id, np.generic):
        image_id = image_id.item()
    return str(image_id)


def derive_seed(seed: int, image_id: Any, purpose: str = "") -> int:
    """A 63-bit seed from ``(seed, image id, purpose)``: a hash, stable across runs and machines.

    ``purpose`` separates independent streams (the tie-break permutation, the
    perturbation noise, a seeded explainer) that share a ``(seed, id)``.
    """
    blob = f"{int(seed)}\x1f{id_key(image_id)}\x1f{purpose}".encode()
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little") >> 1


def derive_seeds(seed: int, ids: Sequence[Any] | np.ndarray, purpose: str = "") -> np.ndarray:
    """:func:`derive_seed` for every id, int64 (N,)."""
    return np.array([derive_seed(seed, i, purpose) for i in ids], dtype=np.int64)


def default_ids(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


def check_ids(ids: Any, n: int, *, where: str = "ids") -> np.ndarray:
    """``ids`` as a 1-D array of length ``n`` (default ``0..n-1``)."""
    if ids is None:
        return default_ids(n)
    arr = np.asarray(ids)
    if arr.ndim != 1 or len(arr) != n:
        raise ConfigError(f"{where} must have one id per image ({n}), got shape {arr.shape}")
    return arr


# ---- the grid ------------------------------------------------------------------------------
def grid_shape(grid: Grid) -> tuple[int, int]:
    """``9`` -> ``(9, 9)``; ``(rows, cols)`` validated."""
    if isinstance(grid, int | np.integer) and not isinstance(grid, bool):
        rows = cols = int(grid)
    else:
        try:
            rows, cols = (int(g) for g in grid)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ConfigError(f"grid must be an int or (rows, cols), got {grid!r}") from None
    if rows < 1 or cols < 1:
        raise ConfigError(f"grid must be positive, got {(rows, cols)}")
    return rows, cols


def split_bounds(size: int, parts: int) -> np.ndarray:
    """Block boundaries (parts + 1,) of ``numpy.array_split(range(size), parts)``."""
    if parts > size:
        raise ConfigError(f"cannot split {size} pixels into {parts} regions (grid larger than image)")
    base, extra = divmod(size, parts)
    sizes = np.full(parts, base, dtype=np.int64)
    sizes[:extra] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


def region_boxes(image_shape: Sequence[int], grid: Grid) -> np.ndarray:
    """int (L, 4) boxes ``(y0, y1, x0, x1)`` (half-open), in region-index order."""
    rows, cols = grid_shape(grid)
    h, w = int(image_shape[0]), int(image_shape[1])
    yb, xb = split_bounds(h, rows), split_bounds(w, cols)
    boxes = np.empty((rows * cols, 4), dtype=np.int64)
    for r in range(rows):
        for c in range(cols):
            boxes[r * cols + c] = (yb[r], yb[r + 1], xb[c], xb[c + 1])
    return boxes


def region_labels(image_shape: Sequence[int], grid: Grid) -> np.ndarray:
    """int32 (H, W): the region index of every pixel."""
    rows, cols = grid_shape(grid)
    h, w = int(image_shape[0]), int(image_shape[1])
    row_of = np.repeat(np.arange(rows), np.diff(split_bounds(h, rows)))
    col_of = np.repeat(np.arange(cols), np.diff(split_bounds(w, cols)))
    return (row_of[:, None] * cols + col_of[None, :]).astype(np.int32)


def region_masks(image_shape: Sequence[int], grid: Grid) -> np.ndarray:
    """bool (L, H, W): one mask per region (use :func:`region_labels` when memory matters)."""
    labels = region_labels(image_shape, grid)
    n_regions = int(np.prod(grid_shape(grid)))
    return labels[None, :, :] == np.arange(n_regions, dtype=np.int32)[:, None, None]


def union_mask(order: np.ndarray, k: int, image_shape: Sequence[int], grid: Grid) -> np.ndarray:
    """bool (H, W): the union of the first ``k`` regions of ``order`` (L,)."""
    labels = region_labels(image_shape, grid)
    rank = np.empty(len(order), dtype=np.int32)
    rank[np.asarray(order)] = np.arange(len(order), dtype=np.int32)
    return rank[labels] < k


# ---- region scores -------------------------------------------------------------------------
def bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """float64 (out, in): 1-D bilinear resize, half-pixel centres, edges clamped, no antialias.

    ``resized = M_rows @ image @ M_cols.T`` equals ``tf.image.resize(..., "bilinear")``.
    """
    m = np.zeros((out_size, in_size), dtype=np.float64)
    if in_size == out_size:
        np.fill_diagonal(m, 1.0)
        return m
    scale = in_size / out_size
    src = (np.arange(out_size) + 0.5) * scale - 0.5
    src = np.clip(src, 0.0, in_size - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    rows = np.arange(out_size)
    np.add.at(m, (rows, lo), 1.0 - frac)
    np.add.at(m, (rows, hi), frac)
    return m


@functools.lru_cache(maxsize=64)
def _shared_bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    m = bilinear_matrix(out_size, in_size)
    m.flags.writeable = False  # shared between callers: read-only
    return m


def resize_bilinear(maps: Any, size: Sequence[int]) -> np.ndarray:
    """float64 (..., H, W): ``maps`` (h, w) or (..., h, w) resized bilinearly to ``size`` = (H, W).

    ``M_rows @ map @ M_cols.T`` with :func:`bilinear_matrix` (half-pixel centres, edges
    clamped, no antialias: ``tf.image.resize(..., "bilinear")``), in float64; the matrices
    are cached per (out, in) size. Maps already of ``size`` come back as they are (in float64).
    """
    h = np.asarray(maps, dtype=np.float64)
    if h.ndim < 2:
        raise ValueError(f"resize_bilinear: expected maps (h, w) or (..., h, w), got shape {h.shape}")
    rows, cols = int(size[0]), int(size[1])
    if h.shape[-2:] == (rows, cols):
        return h
    return _shared_bilinear_matrix(rows, h.shape[-2]) @ h @ _shared_bilinear_matrix(cols, h.shape[-1]).T


def _block_mean_matrix(size: int, parts: int) -> np.ndarray:
    bounds = split_bounds(size, parts)
    a = np.zeros((parts, size), dtype=np.float64)
    for p in range(parts):
        a[p, bounds[p] : bounds[p + 1]] = 1.0 / (bounds[p + 1] - bounds[p])
    return a


def region_score_operators(
    heatmap_shape: Sequence[int], image_shape: Sequence[int], grid: Grid
) -> tuple[np.ndarray, np.ndarray] | None:
    """(P_rows (rows, h), P_cols (cols, w)) with scores = P_rows @ heatmap @ P_cols.T.

    ``None`` when the heatmap already has the grid's shape (scores = the heatmap).
    """
    rows, cols = grid_shape(grid)
    hh, hw = int(heatmap_shape[0]), int(heatmap_shape[1])
    if (hh, hw) == (rows, cols):
        return None
    h, w = int(image_shape[0]), int(image_shape[1])
    p_rows = _block_mean_matrix(h, rows) @ bilinear_matrix(h, hh)
    p_cols = _block_mean_matrix(w, cols) @ bilinear_matrix(w, hw)
    return p_rows, p_cols


def check_heatmaps(heatmaps: Any, n: int | None = None, *, name: str = "heatmaps") -> np.ndarray:
    """float32 (N, h, w), finite; a clear :class:`ComponentOutputError` otherwise."""
    hm = np.asarray(heatmaps)
    if hm.ndim == 4 and hm.shape[-1] == 1:
        hm = hm[..., 0]
    if hm.ndim != 3:
        raise ComponentOutputError(f"{name}: expected heatmaps (N, h, w), got shape {hm.shape}")
    if n is not None and len(hm) != n:
        raise ComponentOutputError(f"{name}: expected {n} heatmaps, got {len(hm)}")
    if not (np.issubdtype(hm.dtype, np.floating) or np.issubdtype(hm.dtype, np.integer)):
        raise ComponentOutputError(f"{name}: expected float32 heatmaps, got dtype {hm.dtype}")
    if hm.shape[1] < 1 or hm.shape[2] < 1:
        raise ComponentOutputError(f"{name}: empty heatmaps of shape {hm.shape}")
    hm = hm.astype(np.float32, copy=False)
    bad = ~np.isfinite(hm)
    if bad.any():
        first = int(np.argmax(bad.reshape(len(hm), -1).any(axis=1)))
        raise ComponentOutputError(
            f"{name}: heatmaps contain NaN or inf ({int(bad.sum())} values; first at image {first})"
        )
    return hm


def region_scores(heatmaps: np.ndarray, image_shape: Sequence[int], grid: Grid = 9) -> np.ndarray:
    """float64 (N, L): the score of every region, L = rows * cols, index = row * cols + col.

    A heatmap of the grid's shape gives its values; any other shape is resized
    bilinearly to ``image_shape`` and averaged per region (computed exactly,
    without building the image-sized map).
    """
    hm = check_heatmaps(heatmaps)
    rows, cols = grid_shape(grid)
    ops = region_score_operators(hm.shape[1:], image_shape, (rows, cols))
    if ops is None:
        return hm.reshape(len(hm), rows * cols).astype(np.float64)
    p_rows, p_cols = ops
    scores = np.einsum("rh,nhw,cw->nrc", p_rows, hm.astype(np.float64), p_cols, optimize=True)
    return scores.reshape(len(hm), rows * cols)


# ---- orders --------------------------------------------------------------------------------
def tie_break_permutation(seed: int, image_id: Any, n_regions: int) -> np.ndarray:
    """The seeded permutation that breaks ties (and is the ``random`` order) for one image."""
    rng = np.random.default_rng(derive_seed(seed, image_id, "region-order"))
    return rng.permutation(n_regions)


def region_order(
    scores: np.ndarray,
    order: str = "morf",
    *,
    seed: int = 0,
    ids: Sequence[Any] | np.ndarray | None = None,
) -> np.ndarray:
    """int64 (N, L): region indices in perturbation order.

    ``morf``: descending score; ``lerf``: ascending; ``random``: the seeded
    permutation itself. Equal scores keep the relative order of the seeded
    permutation for ``(seed, id)``, so ties are broken at random but
    reproducibly, independently of batching.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, L), got shape {scores.shape}")
    name = str(order).lower()
    if name not in ORDERS:
        from bench.errors import did_you_mean

        raise ConfigError(f"unknown order {order!r}{did_you_mean(name, ORDERS)}; orders: {', '.join(ORDERS)}")
    n, n_regions = scores.shape
    ids_arr = check_ids(ids, n)
    out = np.empty((n, n_regions), dtype=np.int64)
    for i in range(n):
        perm = tie_break_permutation(seed, ids_arr[i], n_regions)
        if name == "random":
            out[i] = perm
            continue
        key = scores[i, perm]
        if name == "morf":
            key = -key
        out[i] = perm[np.argsort(key, kind="stable")]
    return out


def rank_of_regions(order: np.ndarray) -> np.ndarray:
    """The inverse of ``order`` (N, L): ``rank[i, region]`` = its position in the order."""
    order = np.asarray(order)
    rank = np.empty_like(order)
    rows = np.arange(order.shape[0])[:, None]
    rank[rows, order] = np.arange(order.shape[1])[None, :]
    return rank


def count_ties(scores: np.ndarray) -> np.ndarray:
    """int (N,): how many regions share their score with another region of the same image."""
    scores = np.asarray(scores)
    s = np.sort(scores, axis=1)
    eq = s[:, 1:] == s[:, :-1]
    tied = np.zeros_like(s, dtype=bool)
    tied[:, 1:] |= eq
    tied[:, :-1] |= eq
    return tied.sum(axis=1)
