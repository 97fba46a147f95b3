"""Metrics over perturbation curves ``f(x^(k))``, k = 0..L: ``score(curves (N, L+1)) -> (N,)``."""

from __future__ import annotations

from typing import Any

import numpy as np


def _curves(curves: Any, name: str) -> np.ndarray:
    c = np.asarray(curves, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] < 2:
        raise ValueError(f"{name}: curves must be (N, L+1) with L >= 1, got shape {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError(f"{name}: curves contain NaN or inf")
    return c


class AOPC:
    """Area over the perturbation curve, per image: ``sum_{k=1..L} (f_0 - f_k) / (L+1)``.

    Higher = the heatmap's top regions matter more to the model (MoRF).
    """

    def get_params(self) -> dict[str, Any]:
        return {}

    def score(self, curves: np.ndarray) -> np.ndarray:
        from bench.aopc import aopc_from_curves

        return aopc_from_curves(_curves(curves, "aopc"))


class DeletionAUC:
    """Area under the deletion curve, per image: the mean of ``f(x^(k))`` over k = 0..L.

    Lower = more faithful (the probability falls faster). Uses the rectangle
    rule over the L+1 points, each step of width 1/(L+1), like AOPC, so that
    ``AOPC = f_0 - DeletionAUC`` exactly.
    """

    def get_params(self) -> dict[str, Any]:
        return {}

    def score(self, curves: np.ndarray) -> np.ndarray:
        return _curves(curves, "deletion-auc").mean(axis=1)
