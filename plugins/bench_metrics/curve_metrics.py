"""Metrics over perturbation curves ``f(x^(k))``, k = 0..L (curves (N, L+1) of one order).

Each reads the curves its spec declares (``data.curve("morf")``) and returns its
per-image headline column (N,). A curve with a non-finite point gives a
non-finite value, which the harness leaves out of the statistics (and counts).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _curves(curves: Any, name: str) -> np.ndarray:
    c = np.asarray(curves, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] < 2:
        raise ValueError(f"{name}: curves must be (N, L+1) with L >= 1, got shape {c.shape}")
    return c


def aopc_per_image(curves: Any) -> np.ndarray:
    """``sum_{k=1..L} (f_0 - f_k) / (L+1)`` per image (N,), from curves (N, L+1)."""
    c = _curves(curves, "aopc")
    return (c[:, :1] - c[:, 1:]).sum(axis=1) / c.shape[1]


def abpc_per_image(morf_curves: Any, lerf_curves: Any) -> np.ndarray:
    """``sum_{k=1..L} (f_LeRF^(k) - f_MoRF^(k)) / (L+1)`` per image (N,): the area between the curves."""
    m, lr = _curves(morf_curves, "abpc"), _curves(lerf_curves, "abpc")
    if m.shape != lr.shape:
        raise ValueError(
            f"abpc needs MoRF and LeRF curves of the same shape (N, L+1), got {m.shape} and {lr.shape}"
        )
    return (lr[:, 1:] - m[:, 1:]).sum(axis=1) / m.shape[1]


def deletion_auc_per_image(curves: Any) -> np.ndarray:
    """The mean of ``f(x^(k))`` over k = 0..L per image (rectangle rule, width 1/(L+1))."""
    return _curves(curves, "deletion-auc").mean(axis=1)


class AOPC:
    """Area over the MoRF perturbation curve (the reference study's measure).

    Higher = perturbing the heatmap's most relevant regions first hurts the
    prediction more: the heatmap is more faithful.
    """

    order = "morf"
    column = "aopc"

    def get_params(self) -> dict[str, Any]:
        return {}

    def compute(self, data: Any) -> dict[str, np.ndarray]:
        return {self.column: aopc_per_image(data.curve(self.order))}


class LeRFAOPC(AOPC):
    """AOPC of the LeRF curve (least relevant regions first). Lower = more faithful."""

    order = "lerf"
    column = "lerf-aopc"


class ABPC:
    """Area between the LeRF and MoRF curves. Higher = more faithful."""

    def get_params(self) -> dict[str, Any]:
        return {}

    def compute(self, data: Any) -> dict[str, np.ndarray]:
        return {"abpc": abpc_per_image(data.curve("morf"), data.curve("lerf"))}


class DeletionAUC:
    """Area under the MoRF deletion curve, per image: the mean of ``f(x^(k))`` over k = 0..L.

    Lower = more faithful (the probability falls faster). The rectangle rule over
    the L+1 points, like AOPC, so that ``AOPC = f_0 - DeletionAUC`` exactly.
    """

    def get_params(self) -> dict[str, Any]:
        return {}

    def compute(self, data: Any) -> dict[str, np.ndarray]:
        return {"deletion-auc": deletion_auc_per_image(data.curve("morf"))}
