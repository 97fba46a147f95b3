"""Row-wise similarity of two stacks of heatmaps (N, h, w): Spearman, Pearson, SSIM.

Every function compares row i of ``a`` with row i of ``b`` and returns float64 (N,),
vectorised over the rows (no per-image Python loop).

Zero variance: a map with zero variance (a constant map) has no order. Two constant maps
count as **unchanged** (correlation 1), so an explainer that ignores the model or the
class, such as a constant one, scores 1 on the sanity checks and is caught; a constant map
against a non-constant one counts as no association (0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Relative tolerance under which a map's spread counts as zero.
ZERO_VARIANCE_RTOL = 1e-12


def _rows(a: Any) -> np.ndarray:
    x = np.asarray(a, dtype=np.float64)
    return x.reshape(len(x), -1)


def _constant(x: np.ndarray) -> np.ndarray:
    spread = x.max(axis=1) - x.min(axis=1)
    scale = np.maximum(np.abs(x).max(axis=1), 1.0)
    return spread <= ZERO_VARIANCE_RTOL * scale


def pearson_rows(a: Any, b: Any) -> np.ndarray:
    """Pearson correlation of each pair of rows; both constant -> 1, one constant -> 0."""
    x, y = _rows(a), _rows(b)
    if x.shape != y.shape:
        raise ValueError(f"pearson_rows: shapes differ, {x.shape} and {y.shape}")
    cx, cy = _constant(x), _constant(y)
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=1) / den
    r = np.clip(np.where(np.isfinite(r), r, 0.0), -1.0, 1.0)
    r[cx != cy] = 0.0
    r[cx & cy] = 1.0
    return r


def spearman_rows(a: Any, b: Any) -> np.ndarray:
    """Spearman rank correlation of each pair of rows (ties get their average rank)."""
    from scipy.stats import rankdata

    x, y = _rows(a), _rows(b)
    if x.shape != y.shape:
        raise ValueError(f"spearman_rows: shapes differ, {x.shape} and {y.shape}")
    cx, cy = _constant(x), _constant(y)
    r = pearson_rows(rankdata(x, axis=1), rankdata(y, axis=1))
    r[cx != cy] = 0.0
    r[cx & cy] = 1.0
    return r


def max_normalised(maps: Any) -> np.ndarray:
    """|h| / max |h| per map, float64 (N, h, w) in [0, 1]; an all-zero map stays zero."""
    x = np.abs(np.asarray(maps, dtype=np.float64))
    top = x.reshape(len(x), -1).max(axis=1) if x.size else np.zeros(len(x))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = x / np.where(top > 0, top, 1.0)[:, None, None]
    return out


def ssim_window(h: int, w: int, win_size: int = 7) -> int:
    """The SSIM window used on (h, w) maps: ``win_size``, shrunk to the largest odd size that fits."""
    win = min(int(win_size), int(h), int(w))
    if win % 2 == 0:
        win -= 1
    return max(win, 1)


def ssim_rows(a: Any, b: Any, *, data_range: float = 1.0, win_size: int = 7) -> np.ndarray:
    """Mean structural similarity (Wang et al. 2004) of each pair of maps (N, h, w).

    The same computation as ``skimage.metrics.structural_similarity`` with its defaults
    (a uniform ``win_size`` x ``win_size`` window, sample covariances, K1 = 0.01, K2 = 0.03,
    the mean over the pixels whose window lies inside the map), vectorised over the rows;
    the window shrinks to the largest odd size that fits maps smaller than 7 pixels
    (:func:`ssim_window`). Two identical maps give 1, constant ones included.
    """
    from scipy.ndimage import uniform_filter

    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 3:
        raise ValueError(f"ssim_rows needs two (N, h, w) stacks of one shape, got {x.shape} and {y.shape}")
    n, h, w = x.shape
    if n == 0:
        return np.zeros(0)
    win = ssim_window(h, w, win_size)
    size = (1, win, win)
    np_ = win * win
    cov_norm = np_ / (np_ - 1) if np_ > 1 else 1.0
    ux, uy = uniform_filter(x, size=size), uniform_filter(y, size=size)
    uxx, uyy, uxy = uniform_filter(x * x, size=size), uniform_filter(y * y, size=size), uniform_filter(x * y, size=size)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (0.01 * float(data_range)) ** 2
    c2 = (0.03 * float(data_range)) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return s[:, pad:h - pad, pad:w - pad].mean(axis=(1, 2))
